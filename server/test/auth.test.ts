import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './server.ts';

/** Who may do what: every credential that should be refused is, with the right code. */
let server: TestServer;
let acme: { id: string; secret: string };
let globex: { id: string; secret: string };
let acmeCustomerId: string;
let otherAcmeCustomerId: string;

const CUSTOMER_QUERY = 'query ($id: ID!) { customer(id: $id) { id externalId } }';

async function createCustomer(secret: string, externalId: string): Promise<string> {
  const result = await server.graphql<{ createCustomer: { id: string } }>(
    'mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }',
    { input: { externalId } },
    secret,
  );
  expect(result.errors).toBeUndefined();
  return result.data!.createCustomer.id;
}

async function sessionFor(customerId: string, ttlSeconds = 600): Promise<string> {
  const result = await server.graphql<{ createCustomerSession: { token: string } }>(
    'mutation ($id: ID!, $ttl: Int) { createCustomerSession(customerId: $id, ttlSeconds: $ttl) { token expiresAt } }',
    { id: customerId, ttl: ttlSeconds },
    acme.secret,
  );
  expect(result.errors).toBeUndefined();
  return result.data!.createCustomerSession.token;
}

beforeAll(async () => {
  server = await startTestServer();
  acme = await server.createMerchant('Acme');
  globex = await server.createMerchant('Globex');
  acmeCustomerId = await createCustomer(acme.secret, 'acme-user-1');
  otherAcmeCustomerId = await createCustomer(acme.secret, 'acme-user-2');
});

afterAll(() => server?.close());

describe('secret keys', () => {
  it('answers with the merchant the key belongs to', async () => {
    const result = await server.graphql<{ viewer: { kind: string; merchant: { id: string; name: string } } }>(
      '{ viewer { kind merchant { id name } } }',
      {},
      acme.secret,
    );
    expect(result.errors).toBeUndefined();
    expect(result.data!.viewer).toEqual({ kind: 'MERCHANT', merchant: { id: acme.id, name: 'Acme' } });
  });

  it('refuses a request with no credential: UNAUTHENTICATED', async () => {
    const result = await server.graphql(CUSTOMER_QUERY, { id: acmeCustomerId });
    expect(result.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED');
    expect(result.data).toBeNull();
  });

  it('refuses an unknown key with HTTP 401 UNAUTHENTICATED', async () => {
    const forged = `sk_test_${'A'.repeat(43)}`;
    const result = await server.graphql(CUSTOMER_QUERY, { id: acmeCustomerId }, forged);
    expect(result.status).toBe(401);
    expect(result.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED');
  });

  it('refuses a malformed credential', async () => {
    const result = await server.graphql('{ viewer { kind } }', {}, 'not-a-key');
    expect(result.status).toBe(401);
    expect(result.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED');
  });

  it('refuses a revoked key, and only that key', async () => {
    const created = await server.graphql<{ createApiKey: { secret: string; apiKey: { id: string } } }>(
      'mutation { createApiKey(name: "temp") { secret apiKey { id prefix last4 active } } }',
      {},
      acme.secret,
    );
    const temp = created.data!.createApiKey;
    expect((await server.graphql('{ viewer { kind } }', {}, temp.secret)).errors).toBeUndefined();

    const revoked = await server.graphql<{ revokeApiKey: { active: boolean } }>(
      'mutation ($id: ID!) { revokeApiKey(id: $id) { active revokedAt } }',
      { id: temp.apiKey.id },
      acme.secret,
    );
    expect(revoked.data!.revokeApiKey.active).toBe(false);

    const refused = await server.graphql('{ viewer { kind } }', {}, temp.secret);
    expect(refused.status).toBe(401);
    expect(refused.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED');
    expect((await server.graphql('{ viewer { kind } }', {}, acme.secret)).errors).toBeUndefined();
  });

  it("does not let one merchant's key reach another merchant's customer: NOT_FOUND", async () => {
    const result = await server.graphql(CUSTOMER_QUERY, { id: acmeCustomerId }, globex.secret);
    expect(result.errors?.[0]?.extensions.code).toBe('NOT_FOUND');
    expect(result.data).toBeNull();

    const update = await server.graphql(
      'mutation ($id: ID!) { updateCustomer(id: $id, input: { name: "hijacked" }) { id } }',
      { id: acmeCustomerId },
      globex.secret,
    );
    expect(update.errors?.[0]?.extensions.code).toBe('NOT_FOUND');
    const unchanged = await server.services.customers.get(acme.id, acmeCustomerId);
    expect(unchanged.name).toBeNull();

    const list = await server.graphql<{ customers: { totalCount: number } }>('{ customers { totalCount } }', {}, globex.secret);
    expect(list.data!.customers.totalCount).toBe(0);
  });

  it('cannot mint a session for another merchant\'s customer', async () => {
    const result = await server.graphql(
      'mutation ($id: ID!) { createCustomerSession(customerId: $id) { token } }',
      { id: acmeCustomerId },
      globex.secret,
    );
    expect(result.errors?.[0]?.extensions.code).toBe('NOT_FOUND');
  });
});

describe('API key management', () => {
  it('shows a key once, then lists only its prefix and last four, stored as a hash', async () => {
    const created = await server.graphql<{ createApiKey: { secret: string; apiKey: { id: string; prefix: string; last4: string; mode: string } } }>(
      'mutation { createApiKey(name: "ci", mode: LIVE) { secret apiKey { id prefix last4 mode } } }',
      {},
      acme.secret,
    );
    const { secret, apiKey } = created.data!.createApiKey;
    expect(secret).toMatch(/^sk_live_[A-Za-z0-9_-]{43}$/);
    expect(apiKey.mode).toBe('LIVE');
    expect(secret.startsWith(apiKey.prefix)).toBe(true);
    expect(secret.endsWith(apiKey.last4)).toBe(true);

    const listed = await server.graphql<{ apiKeys: Record<string, unknown>[] }>(
      '{ apiKeys { id name prefix last4 active } }',
      {},
      acme.secret,
    );
    expect(JSON.stringify(listed.data)).not.toContain(secret);
    expect(listed.data!.apiKeys.map((key) => key.id)).toContain(apiKey.id);

    const row = await server.services.prisma.apiKey.findUniqueOrThrow({ where: { id: apiKey.id } });
    expect(Object.values(row).map(String)).not.toContain(secret);
    expect(row.hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('rotates a key: the new one works at once, the old one until its grace period ends', async () => {
    const created = await server.services.apiKeys.create(acme.id, { name: 'rotating', mode: 'test' });
    const rotated = await server.graphql<{ rotateApiKey: { secret: string; apiKey: { rotatedFromId: string } } }>(
      'mutation ($id: ID!) { rotateApiKey(id: $id, expireOldKeyInSeconds: 3600) { secret apiKey { rotatedFromId name } } }',
      { id: created.apiKey.id },
      acme.secret,
    );
    expect(rotated.errors).toBeUndefined();
    expect(rotated.data!.rotateApiKey.apiKey.rotatedFromId).toBe(created.apiKey.id);
    expect((await server.graphql('{ viewer { kind } }', {}, rotated.data!.rotateApiKey.secret)).errors).toBeUndefined();
    expect((await server.graphql('{ viewer { kind } }', {}, created.secret)).errors).toBeUndefined();

    const immediate = await server.services.apiKeys.create(acme.id, { name: 'rotating now', mode: 'test' });
    await server.graphql('mutation ($id: ID!) { rotateApiKey(id: $id) { secret } }', { id: immediate.apiKey.id }, acme.secret);
    expect((await server.graphql('{ viewer { kind } }', {}, immediate.secret)).status).toBe(401);
  });

  it('will not rotate a key again during its grace period: that would keep it alive longer', async () => {
    const created = await server.services.apiKeys.create(acme.id, { name: 'rotating twice', mode: 'test' });
    const rotate = (seconds: number) =>
      server.graphql('mutation ($id: ID!, $s: Int) { rotateApiKey(id: $id, expireOldKeyInSeconds: $s) { secret } }', { id: created.apiKey.id, s: seconds }, acme.secret);
    expect((await rotate(60)).errors).toBeUndefined();
    const [firstEnd] = (await server.services.apiKeys.list(acme.id, { includeRevoked: true })).filter((key) => key.id === created.apiKey.id).map((key) => key.revokedAt);
    // Twice at once, or later: refused, and the old key's end stays where it was.
    const again = await Promise.all([rotate(7 * 24 * 3600), rotate(7 * 24 * 3600)]);
    expect(again.map((result) => result.errors?.[0]?.extensions.code)).toEqual(['VALIDATION', 'VALIDATION']);
    const keys = await server.services.apiKeys.list(acme.id, { includeRevoked: true });
    expect(keys.find((key) => key.id === created.apiKey.id)!.revokedAt).toEqual(firstEnd);
    expect(keys.filter((key) => key.rotatedFromId === created.apiKey.id)).toHaveLength(1);
  });

  it('will not manage another merchant\'s keys', async () => {
    const acmeKeys = await server.services.apiKeys.list(acme.id, { includeRevoked: false });
    const result = await server.graphql('mutation ($id: ID!) { revokeApiKey(id: $id) { id } }', { id: acmeKeys[0]!.id }, globex.secret);
    expect(result.errors?.[0]?.extensions.code).toBe('NOT_FOUND');
    expect((await server.graphql('{ viewer { kind } }', {}, acme.secret)).errors).toBeUndefined();
  });
});

describe('customer session tokens', () => {
  it('read their own customer', async () => {
    const token = await sessionFor(acmeCustomerId);
    const own = await server.graphql<{ customer: { id: string; externalId: string } }>(CUSTOMER_QUERY, { id: acmeCustomerId }, token);
    expect(own.errors).toBeUndefined();
    expect(own.data!.customer).toEqual({ id: acmeCustomerId, externalId: 'acme-user-1' });

    const viewer = await server.graphql<{ viewer: { kind: string; customer: { id: string } } }>('{ viewer { kind customer { id } } }', {}, token);
    expect(viewer.data!.viewer).toEqual({ kind: 'CUSTOMER', customer: { id: acmeCustomerId } });
  });

  it('are refused for another customer: FORBIDDEN', async () => {
    const token = await sessionFor(acmeCustomerId);
    const result = await server.graphql(CUSTOMER_QUERY, { id: otherAcmeCustomerId }, token);
    expect(result.errors?.[0]?.extensions.code).toBe('FORBIDDEN');
    expect(result.data).toBeNull();
  });

  it('cannot list customers, look customers up by externalId, or use merchant mutations: FORBIDDEN', async () => {
    const token = await sessionFor(acmeCustomerId);
    for (const [query, variables] of [
      ['{ customers { totalCount } }', {}],
      ['{ customer(externalId: "acme-user-2") { id } }', {}],
      ['{ apiKeys { id } }', {}],
      ['mutation { createApiKey(name: "x") { secret } }', {}],
      ['mutation ($id: ID!) { archiveCustomer(id: $id) { id } }', { id: acmeCustomerId }],
      ['mutation ($id: ID!) { createCustomerSession(customerId: $id) { token } }', { id: otherAcmeCustomerId }],
    ] as const) {
      const result = await server.graphql(query, variables, token);
      expect(result.errors?.[0]?.extensions.code, query).toBe('FORBIDDEN');
    }
  });

  it('are refused when tampered with or expired', async () => {
    const token = await sessionFor(acmeCustomerId);
    const [payload, signature] = token.slice('tgcs_'.length).split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString());
    const forgedPayload = Buffer.from(JSON.stringify({ ...claims, c: otherAcmeCustomerId })).toString('base64url');
    const forged = `tgcs_${forgedPayload}.${signature}`;
    const tampered = await server.graphql(CUSTOMER_QUERY, { id: otherAcmeCustomerId }, forged);
    expect(tampered.status).toBe(401);
    expect(tampered.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED');

    const expiredClaims = server.services.customerSessions.verify(token);
    const expired = server.services.customerSessions.verify.bind(server.services.customerSessions);
    expect(() => expired(token, new Date(expiredClaims.expiresAt.getTime() + 1000))).toThrow(/expired/);
  });

  it('signed by another server (another master key) are refused', async () => {
    const other = await startTestServer();
    try {
      const merchant = await other.createMerchant();
      const customer = await other.services.customers.create(merchant.id, { externalId: 'x' });
      const { token } = await other.services.customerSessions.create(merchant.id, customer.id, 600);
      const result = await server.graphql('{ viewer { kind } }', {}, token);
      expect(result.status).toBe(401);
    } finally {
      await other.close();
    }
  });

  it('cannot be minted for an archived customer, or with a TTL out of range', async () => {
    const archivedId = await createCustomer(acme.secret, 'to-archive');
    await server.services.customers.archive(acme.id, archivedId);
    const archived = await server.graphql('mutation ($id: ID!) { createCustomerSession(customerId: $id) { token } }', { id: archivedId }, acme.secret);
    // As every other start refused to an archived customer: FORBIDDEN, with the reason to branch on.
    expect(archived.errors?.[0]?.extensions).toMatchObject({ code: 'FORBIDDEN', reason: 'CUSTOMER_ARCHIVED', customerId: archivedId });

    const tooLong = await server.graphql(
      'mutation ($id: ID!) { createCustomerSession(customerId: $id, ttlSeconds: 999999) { token } }',
      { id: acmeCustomerId },
      acme.secret,
    );
    expect(tooLong.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'ttlSeconds' });
  });
});
