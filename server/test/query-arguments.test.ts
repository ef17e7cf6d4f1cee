import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH } from '../src/shared/validation.ts';
import { startTestServer, type TestServer } from './server.ts';

/**
 * Arguments the database cannot take (an id that is not a UUID, a NUL in a filter, JSON nested
 * deeper than anything can walk) are refused as VALIDATION naming the field, never INTERNAL.
 */
let server: TestServer;
let merchant: { id: string; secret: string };
let customerId: string;

beforeAll(async () => {
  server = await startTestServer();
  merchant = await server.createMerchant();
  customerId = (await server.services.customers.create(merchant.id, { externalId: 'holder' })).id;
  const granted = await gql('mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }', {
    input: { customerId, amount: '5', kind: 'PAID', idempotencyKey: 'grant-1' },
  });
  expect(granted.errors).toBeUndefined();
});
afterAll(() => server?.close());

const gql = (query: string, variables: Record<string, unknown> = {}, token = merchant.secret) => server.graphql<any>(query, variables, token);

/** `{"a":{"a":…{"a":1}}}`, `levels` objects deep, as JSON text: JSON.stringify overflows on it too. */
const nested = (levels: number) => `${'{"a":'.repeat(levels - 1)}{"a":1}${'}'.repeat(levels - 1)}`;

/** POSTs an operation whose variable `$m` is the JSON text `json`. */
async function withDeepVariable(query: string, json: string, variables: Record<string, unknown> = {}) {
  const body = JSON.stringify({ query, variables: { ...variables, m: 'DEEP' } }).replace('"DEEP"', json);
  const response = await fetch(`${server.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` },
    body,
  });
  return (await response.json()) as { data?: any; errors?: { extensions: Record<string, unknown> }[] };
}

describe('query arguments the database cannot take', () => {
  it('a customerId that is not a UUID, in every connection that filters by one', async () => {
    const queries = [
      'query ($c: ID) { ledgerTransactions(customerId: $c) { totalCount } }',
      'query ($c: ID) { usageEvents(customerId: $c) { edges { node { id } } } }',
      'query ($c: ID) { gatewayRequests(customerId: $c) { edges { node { id } } } }',
    ];
    for (const query of queries) {
      for (const c of ['nope', '']) {
        const result = await gql(query, { c });
        expect(result.errors?.[0]?.extensions, `${query} ${c}`).toMatchObject({ code: 'VALIDATION', field: 'customerId' });
      }
      // An id in capitals names the same customer.
      expect((await gql(query, { c: customerId.toUpperCase() })).errors, query).toBeUndefined();
    }
    const upper = await gql('query ($c: ID) { ledgerTransactions(customerId: $c) { totalCount } }', { c: customerId.toUpperCase() });
    expect(upper.data.ledgerTransactions.totalCount).toBe(1);
  });

  it("a NUL in the transaction filter's idempotencyKey, from a secret key or a customer token", async () => {
    const audit = await gql('query ($k: String) { ledgerTransactions(filter: { idempotencyKey: $k }) { totalCount } }', { k: 'k\u0000' });
    expect(audit.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'filter.idempotencyKey' });

    const session = await gql('mutation ($id: ID!) { createCustomerSession(customerId: $id) { token } }', { id: customerId });
    const own = await gql(
      'query ($id: ID!, $k: String) { wallet(customerId: $id) { transactions(filter: { idempotencyKey: $k }) { totalCount } } }',
      { id: customerId, k: 'grant-1\u0000' },
      session.data.createCustomerSession.token,
    );
    expect(own.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'filter.idempotencyKey' });

    const found = await gql('query ($k: String) { ledgerTransactions(filter: { idempotencyKey: $k }) { totalCount } }', { k: 'grant-1' });
    expect(found.data.ledgerTransactions.totalCount).toBe(1);
  });

  it('metadata nested 20,000 levels deep, to createCustomer and grantCredits', async () => {
    const create = 'mutation ($m: JSONObject) { createCustomer(input: { externalId: "deep", metadata: $m }) { id } }';
    const grant = `mutation ($c: ID!, $m: JSONObject) {
      grantCredits(input: { customerId: $c, amount: "1", kind: PAID, idempotencyKey: "grant-deep", metadata: $m }) { replayed } }`;
    const deep = nested(20_000);
    expect((await withDeepVariable(create, deep)).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'metadata' });
    expect((await withDeepVariable(grant, deep, { c: customerId })).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'metadata' });
    // Just past the limit is refused too.
    expect((await withDeepVariable(create, nested(MAX_JSON_DEPTH + 1))).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'metadata' });
    expect((await withDeepVariable(grant, nested(MAX_JSON_DEPTH + 1), { c: customerId })).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'metadata' });
    expect(await server.services.prisma.customer.count({ where: { merchantId: merchant.id, externalId: 'deep' } })).toBe(0);
    expect((await gql('{ ledgerTransactions { totalCount } }')).data.ledgerTransactions.totalCount).toBe(1);

    // At the limit, stored.
    expect((await withDeepVariable(create, nested(MAX_JSON_DEPTH))).errors).toBeUndefined();
    expect((await withDeepVariable(grant, nested(MAX_JSON_DEPTH), { c: customerId })).errors).toBeUndefined();
  });
});
