import { runInNewContext } from 'node:vm';
import { describe, expect, it, vi } from 'vitest';
import { jsonResponse, stubFetch } from '../../test/fetchStub.js';
import { cacheScopeOf } from './cacheScope.js';
import { createGraphQLClient } from './graphqlClient.js';
import { TollgateError } from './TollgateError.js';

const endpoint = 'https://billing.test/graphql';

describe('createGraphQLClient', () => {
  it('POSTs the query and variables as JSON with the bearer token', async () => {
    const requests = stubFetch(() => jsonResponse({ data: { customer: { id: 'cus_1' } } }));
    const client = createGraphQLClient({ endpoint, getToken: () => 'cs_test_123' });

    const data = await client.request<{ customer: { id: string } }>('query C($id: ID!) { customer(id: $id) { id } }', { id: 'cus_1' });

    expect(data).toEqual({ customer: { id: 'cus_1' } });
    expect(requests).toHaveLength(1);
    const [request] = requests;
    expect(request?.url).toBe(endpoint);
    expect(request?.method).toBe('POST');
    expect(request?.headers.get('authorization')).toBe('Bearer cs_test_123');
    expect(request?.headers.get('content-type')).toBe('application/json');
    expect(request?.body).toEqual({ query: 'query C($id: ID!) { customer(id: $id) { id } }', variables: { id: 'cus_1' } });
  });

  it('awaits an async token getter on every request', async () => {
    const requests = stubFetch(() => jsonResponse({ data: { ok: true } }));
    let token = 'first';
    const client = createGraphQLClient({ endpoint, getToken: async () => token });

    await client.request('{ ok }');
    token = 'second';
    await client.request('{ ok }');

    expect(requests.map((r) => r.headers.get('authorization'))).toEqual(['Bearer first', 'Bearer second']);
  });

  it('sends no authorization header when there is no token', async () => {
    const requests = stubFetch(() => jsonResponse({ data: { ok: true } }));
    await createGraphQLClient({ endpoint, getToken: () => null }).request('{ ok }');
    expect(requests[0]?.headers.has('authorization')).toBe(false);
  });

  it('keeps decimal amounts as the exact strings the server sent', async () => {
    stubFetch(() => jsonResponse({ data: { balance: { amount: '0.10000000000000000001' } } }));
    const data = await createGraphQLClient({ endpoint, getToken: () => 't' }).request<{ balance: { amount: string } }>('{ balance { amount } }');
    expect(data.balance.amount).toBe('0.10000000000000000001');
  });

  it('throws a TollgateError with the code of the first GraphQL error on a 200 response', async () => {
    const errors = [
      { message: 'amount: must be positive', path: ['grant'], extensions: { code: 'VALIDATION', field: 'amount' } },
      { message: 'second', extensions: { code: 'INTERNAL' } },
    ];
    stubFetch(() => jsonResponse({ data: null, errors }));
    const client = createGraphQLClient({ endpoint, getToken: () => 't' });

    const error = await client.request('mutation { grant }').catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TollgateError);
    expect(error).toMatchObject({ name: 'TollgateError', code: 'VALIDATION', message: 'amount: must be positive', status: 200, errors });
  });

  it('throws a TollgateError with the server code and HTTP status on a non-2xx response', async () => {
    stubFetch(() => jsonResponse({ errors: [{ message: 'Authentication required', extensions: { code: 'UNAUTHENTICATED' } }] }, 401));

    const error = await createGraphQLClient({ endpoint, getToken: () => 'expired' })
      .request('{ viewer { kind } }')
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TollgateError);
    expect(error).toMatchObject({ code: 'UNAUTHENTICATED', message: 'Authentication required', status: 401 });
  });

  it('throws HTTP_ERROR for a non-2xx response that is not GraphQL', async () => {
    stubFetch(() => new Response('<html>Bad gateway</html>', { status: 502, statusText: 'Bad Gateway', headers: { 'content-type': 'text/html' } }));

    const error = await createGraphQLClient({ endpoint, getToken: () => 't' })
      .request('{ ok }')
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TollgateError);
    expect(error).toMatchObject({ code: 'HTTP_ERROR', status: 502, errors: [] });
  });

  it("keeps the message of a refusal the server answers outside GraphQL, in its HTTP routes' JSON shape", async () => {
    // What Tollgate answers an endpoint URL missing its /graphql path.
    stubFetch(() => jsonResponse({ error: { code: 'NOT_FOUND', message: 'No route for POST /', requestId: 'req_1' } }, 404));

    const error = await createGraphQLClient({ endpoint: 'https://billing.test/', getToken: () => 't' })
      .request('{ ok }')
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TollgateError);
    expect(error).toMatchObject({ code: 'HTTP_ERROR', status: 404, errors: [], message: 'Tollgate answered 404: No route for POST /' });
  });

  it('throws UNKNOWN when an error carries no code', async () => {
    stubFetch(() => jsonResponse({ errors: [{ message: 'Something odd' }] }));
    const error = await createGraphQLClient({ endpoint, getToken: () => 't' })
      .request('{ ok }')
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'UNKNOWN', message: 'Something odd', status: 200 });
  });

  it('throws BAD_RESPONSE for a 2xx response without data', async () => {
    stubFetch(() => jsonResponse({}));
    const error = await createGraphQLClient({ endpoint, getToken: () => 't' })
      .request('{ ok }')
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'BAD_RESPONSE', status: 200 });
  });

  it('wraps a failed fetch in a NETWORK TollgateError', async () => {
    const cause = new TypeError('fetch failed');
    stubFetch(() => Promise.reject(cause));

    const error = await createGraphQLClient({ endpoint, getToken: () => 't' })
      .request('{ ok }')
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TollgateError);
    expect(error).toMatchObject({ code: 'NETWORK', status: 0, cause });
  });

  it('rethrows an abort as is, so cancellation is not reported as a failure', async () => {
    const controller = new AbortController();
    const abort = new DOMException('The operation was aborted.', 'AbortError');
    stubFetch(() => {
      controller.abort();
      return Promise.reject(abort);
    });

    const error = await createGraphQLClient({ endpoint, getToken: () => 't' })
      .request('{ ok }', undefined, { signal: controller.signal })
      .catch((e: unknown) => e);

    expect(error).toBe(abort);
  });

  it('wraps a failing token getter in a NETWORK TollgateError and sends nothing', async () => {
    const requests = stubFetch(() => jsonResponse({ data: { ok: true } }));
    const cause = new TypeError('Failed to fetch');

    const error = await createGraphQLClient({ endpoint, getToken: () => Promise.reject(cause) })
      .request('{ ok }')
      .catch((e: unknown) => e);

    expect(requests).toHaveLength(0);
    expect(error).toBeInstanceOf(TollgateError);
    expect(error).toMatchObject({ code: 'NETWORK', status: 0, cause });
  });

  it('refuses to send a secret key from a browser, and sends it server-side, where there is no window', async () => {
    const requests = stubFetch(() => jsonResponse({ data: { ok: true } }));
    const client = (key: string) => createGraphQLClient({ endpoint, getToken: () => key });

    for (const key of ['sk_test_abcdef0123456789', 'sk_live_abcdef0123456789']) {
      const error = await client(key)
        .request('{ ok }')
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TollgateError);
      expect(error).toMatchObject({ code: 'FORBIDDEN', status: 0, message: expect.stringContaining('createCustomerSession') });
    }
    expect(requests).toHaveLength(0);

    vi.stubGlobal('window', undefined);
    await client('sk_live_abcdef0123456789').request('{ ok }');
    expect(requests.map((r) => r.headers.get('authorization'))).toEqual(['Bearer sk_live_abcdef0123456789']);
  });

  it('refuses to send a secret key from a Web Worker too, which has no window', async () => {
    const requests = stubFetch(() => jsonResponse({ data: { ok: true } }));
    vi.stubGlobal('window', undefined);
    // A worker's global scope: `self`, with importScripts.
    vi.stubGlobal('self', { importScripts: () => undefined });
    const error = await createGraphQLClient({ endpoint, getToken: () => 'sk_live_abcdef0123456789' })
      .request('{ ok }')
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'FORBIDDEN', status: 0 });
    expect(requests).toHaveLength(0);
  });
  it('refuses a secret key behind whitespace (the server reads past it) or a Bearer prefix of its own, sending nothing', async () => {
    const requests = stubFetch(() => jsonResponse({ data: { ok: true } }));

    for (const token of [' sk_live_abcdef0123456789', '\tsk_test_abcdef0123456789', 'Bearer sk_live_abcdef0123456789', 'bearer  sk_test_abcdef0123456789']) {
      const error = await createGraphQLClient({ endpoint, getToken: () => token })
        .request('{ ok }')
        .catch((e: unknown) => e);
      expect(error, JSON.stringify(token)).toBeInstanceOf(TollgateError);
      expect(error, JSON.stringify(token)).toMatchObject({ code: 'FORBIDDEN', status: 0 });
    }
    expect(requests).toHaveLength(0);
  });

  it('rethrows an abort that lands while the body is read, rather than calling the response bad', async () => {
    const controller = new AbortController();
    const abort = new DOMException('The operation was aborted.', 'AbortError');
    stubFetch(() => {
      const body = new ReadableStream<Uint8Array>({
        start(stream) {
          stream.enqueue(new TextEncoder().encode('{"data":{"vie'));
        },
        pull(stream) {
          controller.abort();
          stream.error(abort);
        },
      });
      return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } });
    });

    const error = await createGraphQLClient({ endpoint, getToken: () => 't' })
      .request('{ ok }', undefined, { signal: controller.signal })
      .catch((e: unknown) => e);

    expect(error).toBe(abort);
  });

  it('reports a connection dropped in the middle of the body as NETWORK, as when it drops before', async () => {
    const cause = new TypeError('terminated');
    stubFetch(() => {
      const body = new ReadableStream<Uint8Array>({
        start(stream) {
          stream.enqueue(new TextEncoder().encode('{"data":{"vie'));
        },
        pull(stream) {
          stream.error(cause);
        },
      });
      return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } });
    });

    const error = await createGraphQLClient({ endpoint, getToken: () => 't' })
      .request('{ ok }')
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TollgateError);
    expect(error).toMatchObject({ code: 'NETWORK', status: 200, cause });
  });
});

describe('GraphQLClient.cacheScope', () => {
  it('follows the token getToken returns now, as a fingerprint that does not reveal it', () => {
    let token = 'tgcs_alice';
    const client = createGraphQLClient({ endpoint, getToken: () => token });

    const alice = client.cacheScope;
    token = 'tgcs_bob';

    expect(alice).toBe(cacheScopeOf(endpoint, 'tgcs_alice'));
    expect(client.cacheScope).toBe(cacheScopeOf(endpoint, 'tgcs_bob'));
    expect(client.cacheScope).not.toBe(alice);
    expect(alice).not.toContain('alice');
  });

  it("knows a getter is async when its promise was made in another realm (an iframe's), rather than scoping by the promise's text", () => {
    const foreignPromise = (token: string) => runInNewContext('Promise.resolve(token)', { token }) as Promise<string>;
    expect(foreignPromise('x')).not.toBeInstanceOf(Promise);

    const client = createGraphQLClient({ endpoint, getToken: () => foreignPromise('tgcs_alice') });

    expect(() => client.cacheScope).toThrow(/getToken is async.*Pass a cacheScope/);
  });

  it('makes a request refuse a token that changed since the caller took the scope', async () => {
    const requests = stubFetch(() => jsonResponse({ data: { ok: true } }));
    let token = 'tgcs_alice';
    const client = createGraphQLClient({ endpoint, getToken: () => token });
    const cacheScope = client.cacheScope;

    await client.request('{ ok }', undefined, { cacheScope });
    token = 'tgcs_bob';
    const error = await client.request('{ ok }', undefined, { cacheScope }).catch((e: unknown) => e);

    expect(requests).toHaveLength(1);
    expect(error).toBeInstanceOf(TollgateError);
    expect(error).toMatchObject({ code: 'TOKEN_CHANGED', status: 0 });
  });
});
