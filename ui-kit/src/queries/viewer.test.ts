import { QueryClient } from '@tanstack/react-query';
import { describe, expect, it } from 'vitest';
import { jsonResponse, stubFetch } from '../../test/fetchStub.js';
import { createGraphQLClient } from '../client/graphqlClient.js';
import { viewerQueryOptions, type Viewer } from './viewer.js';

const endpoint = 'https://billing.test/graphql';
const newQueryClient = () => new QueryClient({ defaultOptions: { queries: { retry: false, staleTime: 60_000 } } });

const viewerOf = (id: string): Viewer => ({ kind: 'CUSTOMER', merchant: { id: 'mer_1', name: 'Acme AI' }, customer: { id, externalId: id, name: null, email: null } });
/** Answers each request with the viewer its token belongs to. */
const stubViewerByToken = () => stubFetch((request) => jsonResponse({ data: { viewer: viewerOf(request.headers.get('authorization') === 'Bearer tgcs_alice' ? 'alice' : 'bob') } }));

describe('viewerQueryOptions', () => {
  it('does not serve the previous customer its cached viewer when the token changes (sign out, sign in)', async () => {
    const requests = stubViewerByToken();
    let token = 'tgcs_alice';
    const client = createGraphQLClient({ endpoint, getToken: () => token });
    const queryClient = newQueryClient();

    expect((await queryClient.fetchQuery(viewerQueryOptions(client))).customer?.id).toBe('alice');
    token = 'tgcs_bob';
    expect((await queryClient.fetchQuery(viewerQueryOptions(client))).customer?.id).toBe('bob');
    expect(requests).toHaveLength(2);
  });

  it('keeps apart the data of two clients with different tokens on one QueryClient', async () => {
    stubViewerByToken();
    const alice = createGraphQLClient({ endpoint, getToken: () => 'tgcs_alice' });
    const bob = createGraphQLClient({ endpoint, getToken: () => 'tgcs_bob' });
    const queryClient = newQueryClient();

    await queryClient.fetchQuery(viewerQueryOptions(alice));
    expect((await queryClient.fetchQuery(viewerQueryOptions(bob))).customer?.id).toBe('bob');
  });

  it("refuses to refetch a query keyed for the previous token, so the new customer's data never lands under it", async () => {
    const requests = stubViewerByToken();
    let token = 'tgcs_alice';
    const client = createGraphQLClient({ endpoint, getToken: () => token });
    const queryClient = newQueryClient();
    const aliceOptions = viewerQueryOptions(client);
    await queryClient.fetchQuery(aliceOptions);

    // Bob signs in and the app refetches before anything computes a key for his token.
    token = 'tgcs_bob';
    await queryClient.refetchQueries({ queryKey: aliceOptions.queryKey });

    expect(requests).toHaveLength(1);
    expect(queryClient.getQueryState(aliceOptions.queryKey)?.error).toMatchObject({ code: 'TOKEN_CHANGED' });
    expect(queryClient.getQueryData(aliceOptions.queryKey)?.customer?.id).toBe('alice');
  });

  it('needs an explicit cacheScope for an async token getter: says so without one, files results under it with one', async () => {
    stubViewerByToken();
    const getToken = async () => 'tgcs_alice';
    const queryClient = newQueryClient();

    expect(() => viewerQueryOptions(createGraphQLClient({ endpoint, getToken }))).toThrow(/getToken is async.*Pass a cacheScope/);

    await queryClient.fetchQuery(viewerQueryOptions(createGraphQLClient({ endpoint, getToken, cacheScope: 'alice' })));
    expect(queryClient.getQueryData(['tollgate', 'alice', 'viewer'])).toEqual(viewerOf('alice'));
  });

  it('reports a throwing token getter as a TollgateError when keying the query', () => {
    const cause = new Error('no session storage');
    const client = createGraphQLClient({
      endpoint,
      getToken: () => {
        throw cause;
      },
    });
    expect(() => viewerQueryOptions(client)).toThrow(expect.objectContaining({ name: 'TollgateError', code: 'NETWORK', cause }));
  });
});
