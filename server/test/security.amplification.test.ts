import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { PrismaClient } from '../src/generated/prisma/client.ts';
import { CustomerService } from '../src/modules/customers/customers.service.ts';
import { InMemoryPubSub } from '../src/shared/pubsub.ts';
import { UNPAGINATED_LIST_SIZE } from '../src/graphql/limits.ts';
import { startTestServer, type TestServer } from './server.ts';

/** One small request made to cost far more than it was measured: aliased __typenames, over-long lookups. */
let server: TestServer;
let merchant: { id: string; secret: string; apiKeyId: string };

beforeAll(async () => {
  server = await startTestServer();
  merchant = await server.createMerchant();
});
afterAll(() => server?.close());

describe('the complexity limit and __typename', () => {
  it('counts each aliased __typename as a field, so aliases under a page cannot multiply the answer unmeasured', async () => {
    // 60 aliases on each of 100 rows: 6,000 keys in the answer, over the default limit of 5,000.
    const aliases = Array.from({ length: 60 }, (_, i) => `t${i}: __typename`).join(' ');
    const refused = await server.graphql(`{ customers(first: 100) { edges { node { ${aliases} } } } }`, {}, merchant.secret);
    expect(refused.status).toBe(400);
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_COMPLEX' });
    // Unaliased, as clients add it to every selection, it stays free.
    const typed = await server.graphql<{ customers: { __typename: string } }>(
      '{ __typename customers(first: 100) { __typename totalCount edges { __typename node { __typename id } } pageInfo { __typename hasNextPage } } }',
      {},
      merchant.secret,
    );
    expect(typed.errors).toBeUndefined();
    expect(typed.data?.customers.__typename).toBe('QueryCustomersConnection');
  });

  it('counts aliased __typenames at run time too: a list longer than it was measured stops at the limit', async () => {
    // Measured as 1 + 10 rows × 450 = 4,501, within the limit of 5,000; the shipped price list has more than 11 rows.
    const prices = await server.services.providerPrices.list(merchant.id, {});
    expect(prices.length).toBeGreaterThan(UNPAGINATED_LIST_SIZE + 1);
    const aliases = Array.from({ length: 450 }, (_, i) => `t${i}: __typename`).join(' ');
    const result = await server.graphql(`{ providerPrices { ${aliases} } }`, {}, merchant.secret);
    expect(result.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_COMPLEX' });
    expect(result.data ?? null).toBeNull();
    // The same aliases on fewer rows than measured are answered whole.
    const few = await server.graphql<{ providerPrices: Record<string, string>[] }>('{ providerPrices { ref t0: __typename t1: __typename } }', {}, merchant.secret);
    expect(few.errors).toBeUndefined();
    expect(few.data?.providerPrices).toHaveLength(prices.length);
    expect(few.data?.providerPrices[0]).toMatchObject({ t0: 'ProviderPrice', t1: 'ProviderPrice' });
  });
});

describe('a lookup by externalId', () => {
  it('does not send the database an externalId longer than any customer can have: NOT_FOUND at once', async () => {
    const findUnique = vi.fn(async () => null);
    const customers = new CustomerService({ customer: { findUnique } } as unknown as PrismaClient, new InMemoryPubSub());
    // A thousand aliases of `customer(externalId: $x)` with a 400 KB $x took ten seconds of database work.
    await expect(customers.getByExternalId(merchant.id, 'x'.repeat(400_000))).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(customers.getByExternalId(merchant.id, 'x'.repeat(256))).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(findUnique).not.toHaveBeenCalled();
    // The longest a customer may have is still looked up, and found.
    await expect(customers.getByExternalId(merchant.id, 'x'.repeat(255))).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(findUnique).toHaveBeenCalledTimes(1);
    const longest = await server.services.customers.create(merchant.id, { externalId: 'y'.repeat(255) });
    expect((await server.services.customers.getByExternalId(merchant.id, 'y'.repeat(255))).id).toBe(longest.id);
    await expect(server.services.customers.create(merchant.id, { externalId: 'y'.repeat(256) })).rejects.toMatchObject({ code: 'VALIDATION' });
  });
});
