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
    // 600 s from when the server made it, somewhere between sending and the answer (a token's
    // expiry is in whole seconds, so up to a second earlier).
    const expectMaximum = (expiresAt: Date, sent: number, answered: number) => {
      expect(expiresAt.getTime()).toBeGreaterThanOrEqual(sent + 599_000);
      expect(expiresAt.getTime()).toBeLessThanOrEqual(answered + 600_000);
    };
    for (const variables of [{ id: customerId }, { id: customerId, ttl: null }]) {
      const sent = Date.now();
      const result = await server.graphql<{ createCustomerSession: { token: string; expiresAt: string } }>(CREATE_SESSION, variables, merchant.secret);
      expect(result.errors, JSON.stringify(variables)).toBeUndefined();
      expectMaximum(new Date(result.data!.createCustomerSession.expiresAt), sent, Date.now());
    }
    const sent = Date.now();
    const { claims } = await server.services.customerSessions.create(merchant.id, customerId);
    expectMaximum(claims.expiresAt, sent, Date.now());
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

describe('the secret key that minted a customer session token', () => {
  const viewerKind = async (token: string) => {
    const result = await server.graphql<{ viewer: { kind: string } }>('{ viewer { kind } }', {}, token);
    return result.data?.viewer.kind ?? result.errors?.[0]?.extensions.code;
  };
  const mint = async (secret: string) => {
    const result = await server.graphql<{ createCustomerSession: { token: string } }>(CREATE_SESSION, { id: customerId, ttl: 600 }, secret);
    expect(result.errors).toBeUndefined();
    return result.data!.createCustomerSession.token;
  };

  it('revoked ends the tokens it minted, and only those: a leaked key must not leave sessions behind', async () => {
    const leaked = await server.services.apiKeys.create(merchant.id, { name: 'leaked', mode: 'test' });
    const fromLeaked = await mint(leaked.secret);
    const fromOther = await mint(merchant.secret);
    expect(await viewerKind(fromLeaked)).toBe('CUSTOMER');
    const revoked = await server.graphql('mutation ($id: ID!) { revokeApiKey(id: $id) { id } }', { id: leaked.apiKey.id }, merchant.secret);
    expect(revoked.errors).toBeUndefined();
    const refused = await server.graphql('{ viewer { kind } }', {}, fromLeaked);
    expect(refused.status).toBe(401);
    expect(refused.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED');
    expect(refused.errors?.[0]?.message).toContain('revoked');
    expect(await viewerKind(fromOther)).toBe('CUSTOMER');
    // Tokens the server mints itself name no key and are not affected.
    expect(await viewerKind((await server.services.customerSessions.create(merchant.id, customerId, 600)).token)).toBe('CUSTOMER');
  });

  it("rotated lasts as long as the key does: through the grace period, not after it", async () => {
    const rotated = await server.services.apiKeys.create(merchant.id, { name: 'rotated', mode: 'test' });
    const token = await mint(rotated.secret);
    await server.services.apiKeys.rotate(merchant.id, rotated.apiKey.id, 3600);
    expect(await viewerKind(token)).toBe('CUSTOMER');
    // The grace period ends (moved into the past rather than waited for).
    await server.services.prisma.apiKey.update({ where: { id: rotated.apiKey.id }, data: { revokedAt: new Date(Date.now() - 1000) } });
    expect(await viewerKind(token)).toBe('UNAUTHENTICATED');
  });

  it("cannot be swapped: the key named in a token is covered by its signature", async () => {
    const token = await mint(merchant.secret);
    const [payload, signature] = token.slice('tgcs_'.length).split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8')) as Record<string, unknown>;
    expect(typeof claims.k).toBe('string');
    delete claims.k;
    const stripped = `tgcs_${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}`;
    expect(await viewerKind(stripped)).toBe('UNAUTHENTICATED');
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
