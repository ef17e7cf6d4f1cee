/**
 * The complexity limit held while a query runs (limitResolvedFields): a list that takes no page
 * size is measured as UNPAGINATED_LIST_SIZE rows beforehand, and one that returns more stops at
 * the limit instead of resolving past it. Subscriptions get the limit per event.
 */
import { createClient, type Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { UNPAGINATED_LIST_SIZE } from '../src/graphql/limits.ts';
import { customerTopic } from '../src/modules/customers/customers.service.ts';
import { startTestServer, waitForSubscribers, type TestServer } from './server.ts';

/** Small enough that the shipped price list alone (dozens of rows) exceeds it, as measured rows it does not. */
const LIMIT = 30;

let server: TestServer;
let merchant: { id: string; secret: string };
beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_MAX_QUERY_COMPLEXITY: String(LIMIT) });
  merchant = await server.createMerchant();
});
afterAll(async () => {
  await server?.close();
});

describe('the complexity limit at run time', () => {
  it('a list longer than it was measured stops at the limit: QUERY_TOO_COMPLEX, never more fields than the limit', async () => {
    // Measured as 1 + 10 rows × 1: within the limit, so it runs.
    expect(1 + UNPAGINATED_LIST_SIZE).toBeLessThanOrEqual(LIMIT);
    const result = await server.graphql<{ providerPrices: ({ ref: string } | null)[] | null }>('{ providerPrices { ref } }', {}, merchant.secret);
    expect(result.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_COMPLEX' });
    expect(result.errors?.[0]?.message).toBe(`The query resolves more than the limit of ${LIMIT} fields: ask for fewer rows or fields`);
    // The field that went past the limit is the (LIMIT - 1)th price's ref: the list field and LIMIT - 1 refs before it.
    expect(result.errors?.[0]?.path).toEqual(['providerPrices', LIMIT - 1, 'ref']);
    expect(result.data ?? null).toBeNull(); // a non-null list with a failed row, as GraphQL nulls it
    // The whole list is longer than that: it was cut, not merely short.
    expect((await server.services.providerPrices.list(merchant.id, {})).length).toBeGreaterThan(LIMIT);
  });

  it('a query within the limit is answered whole, and the next request has a budget of its own', async () => {
    for (let n = 0; n < 3; n++) {
      const result = await server.graphql<{ plans: unknown[]; meters: unknown[] }>('{ plans { id } meters { key } }', {}, merchant.secret);
      expect(result.errors).toBeUndefined();
      expect(result.data).toEqual({ plans: [], meters: [] });
    }
  });

  it('a subscription gets the limit for each event, not for all of them together', async () => {
    const customerId = (await server.services.customers.create(merchant.id, { externalId: 'budgeted' })).id;
    const client: Client = createClient({
      url: `${server.url.replace('http', 'ws')}/graphql`, webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${merchant.secret}` }, retryAttempts: 0,
    });
    try {
      // Five fields an event: ten events resolve fifty, past the limit were they counted together.
      const iterator = client.iterate({ query: 'subscription ($id: ID!) { customerUpdated(id: $id) { id name externalId email } }', variables: { id: customerId } });
      const first = iterator.next();
      await waitForSubscribers(server, customerTopic(customerId), 1);
      const names: string[] = [];
      let next = first;
      for (let n = 0; n < 10; n++) {
        await server.services.customers.update(merchant.id, customerId, { name: `name-${n}` });
        const event = (await next).value as { data?: { customerUpdated: { name: string } }; errors?: unknown };
        expect(event.errors).toBeUndefined();
        names.push(event.data!.customerUpdated.name);
        next = iterator.next();
      }
      expect(names).toEqual(Array.from({ length: 10 }, (_, n) => `name-${n}`));
      void next.catch(() => undefined);
      await iterator.return?.();
    } finally {
      await client.dispose();
    }
  });
});
