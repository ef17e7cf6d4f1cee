import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './server.ts';

/** Customer session tokens: the default lifetime within the server's maximum, and only whole tokens accepted. */
let server: TestServer;
let merchant: { id: string; secret: string };
let customerId: string;

const CREATE_SESSION = 'mutation ($id: ID!, $ttl: Int) { createCustomerSession(customerId: $id, ttlSeconds: $ttl) { token expiresAt } }';

beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_CUSTOMER_SESSION_MAX_TTL: '600' });
  merchant = await server.createMerchant();
  customerId = (await server.services.customers.create(merchant.id, { externalId: 'session-user' })).id;
});
afterAll(() => server?.close());

describe('createCustomerSession', () => {
  it('without ttlSeconds lasts the server maximum when that is under an hour', async () => {
    const before = Date.now();
    for (const variables of [{ id: customerId }, { id: customerId, ttl: null }]) {
      const result = await server.graphql<{ createCustomerSession: { token: string; expiresAt: string } }>(CREATE_SESSION, variables, merchant.secret);
      expect(result.errors, JSON.stringify(variables)).toBeUndefined();
      const lifetime = new Date(result.data!.createCustomerSession.expiresAt).getTime() - before;
      expect(lifetime).toBeGreaterThan(590_000);
      expect(lifetime).toBeLessThanOrEqual(601_000);
    }
    const { claims } = await server.services.customerSessions.create(merchant.id, customerId);
    expect(claims.expiresAt.getTime() - before).toBeLessThanOrEqual(601_000);
    // A lifetime asked for is still held to the maximum.
    const tooLong = await server.graphql(CREATE_SESSION, { id: customerId, ttl: 601 }, merchant.secret);
    expect(tooLong.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'ttlSeconds' });
  });
});

describe('a customer session token', () => {
  it('with anything appended or inserted after its signature is UNAUTHENTICATED', async () => {
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    expect((await server.graphql('{ viewer { kind } }', {}, token)).errors).toBeUndefined();
    for (const altered of [`${token}.tampered`, `${token}.`, `${token}..`, token.replace('.', '..')]) {
      const result = await server.graphql('{ viewer { kind } }', {}, altered);
      expect(result.status, altered).toBe(401);
      expect(result.errors?.[0]?.extensions.code, altered).toBe('UNAUTHENTICATED');
      expect(() => server.services.customerSessions.verify(altered), altered).toThrow(/invalid/);
    }
  });
});

describe("what a customer session token may read of the merchant's side", () => {
  it("not the merchant's settings nor the customer's metadata; the names it shows, yes", async () => {
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    const refused = [
      ...['incompleteStreamPolicy', 'gatewayCallerProviderKeys', 'gatewayReserveMaxCost'].flatMap((field) => [`{ merchant { ${field} } }`, `{ viewer { merchant { ${field} } } }`]),
      `{ customer(id: "${customerId}") { metadata } }`,
      '{ viewer { customer { metadata } } }',
    ];
    for (const query of refused) {
      const result = await server.graphql(query, {}, token);
      expect(result.errors?.[0]?.extensions.code, query).toBe('FORBIDDEN');
      // The secret key still reads them (it has no customer of its own).
      if (!query.includes('viewer { customer')) expect((await server.graphql(query, {}, merchant.secret)).errors, query).toBeUndefined();
    }
    const shown = await server.graphql<any>('{ viewer { merchant { id name } customer { id externalId name email } } }', {}, token);
    expect(shown.errors).toBeUndefined();
    expect(shown.data.viewer.customer.id).toBe(customerId);
  });
});
