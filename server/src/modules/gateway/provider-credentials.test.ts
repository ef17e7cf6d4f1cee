import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';

let server: TestServer;
let merchant: { id: string; secret: string };
const SECRET = 'sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789wxyz';

beforeAll(async () => {
  server = await startTestServer();
  merchant = await server.createMerchant();
});
afterAll(() => server?.close());

const SET = 'mutation ($provider: String!, $apiKey: String!) { setProviderCredential(provider: $provider, apiKey: $apiKey) { id provider last4 active } }';

describe('provider credentials', () => {
  it('are stored encrypted, shown only by their last four, and decrypted for the gateway', async () => {
    const set = await server.graphql<any>(SET, { provider: 'openai', apiKey: SECRET }, merchant.secret);
    expect(set.errors).toBeUndefined();
    expect(set.data.setProviderCredential).toMatchObject({ provider: 'openai', last4: 'wxyz', active: true });
    expect(JSON.stringify(set)).not.toContain('ABCDEFGH');

    const row = await server.services.prisma.providerCredential.findUniqueOrThrow({ where: { id: set.data.setProviderCredential.id } });
    expect(row.encryptedKey).not.toContain('ABCDEFGH');
    expect(row.encryptedKey).toMatch(/^v1\./);
    expect(await server.services.providerCredentials.keyFor(merchant.id, 'openai')).toBe(SECRET);

    const listed = await server.graphql<any>('{ providerCredentials { provider last4 } }', {}, merchant.secret);
    expect(listed.data.providerCredentials).toEqual([{ provider: 'openai', last4: 'wxyz' }]);
  });

  it('setting a new key replaces the old one; revoking leaves none', async () => {
    await server.graphql(SET, { provider: 'anthropic', apiKey: 'sk-ant-first-key-0001' }, merchant.secret);
    const second = await server.graphql<any>(SET, { provider: 'anthropic', apiKey: 'sk-ant-second-key-0002' }, merchant.secret);
    expect(await server.services.providerCredentials.keyFor(merchant.id, 'anthropic')).toBe('sk-ant-second-key-0002');
    const all = await server.graphql<any>('{ providerCredentials(includeRevoked: true) { provider last4 active } }', {}, merchant.secret);
    expect(all.data.providerCredentials.filter((c: any) => c.provider === 'anthropic')).toEqual([
      { provider: 'anthropic', last4: '0002', active: true },
      { provider: 'anthropic', last4: '0001', active: false },
    ]);
    await server.graphql('mutation ($id: ID!) { revokeProviderCredential(id: $id) { active } }', { id: second.data.setProviderCredential.id }, merchant.secret);
    expect(await server.services.providerCredentials.keyFor(merchant.id, 'anthropic')).toBeNull();
  });

  it('may name the provider by an alias: the key is kept for, and injected into, that provider', async () => {
    const owner = await server.createMerchant('Aliases');
    const set = await server.graphql<any>(SET, { provider: 'claude', apiKey: SECRET }, owner.secret);
    expect(set.data.setProviderCredential.provider).toBe('anthropic');
    expect(await server.services.providerCredentials.keyFor(owner.id, 'anthropic')).toBe(SECRET);
    const host = await server.services.gatewaySettings.putHost(owner.id, { host: 'llm.internal.example.com', provider: 'Gemini' });
    expect(host.provider).toBe('google');
  });

  it('refuse unknown providers, bad keys, other merchants and customer tokens', async () => {
    const unknown = await server.graphql(SET, { provider: 'acme-ai', apiKey: SECRET }, merchant.secret);
    expect(unknown.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'provider' });
    const spaced = await server.graphql(SET, { provider: 'openai', apiKey: 'has a space in it' }, merchant.secret);
    expect(spaced.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'apiKey' });

    const other = await server.createMerchant('Other');
    const theirs = await server.graphql<any>('{ providerCredentials { id } }', {}, other.secret);
    expect(theirs.data.providerCredentials).toEqual([]);
    const mine = (await server.services.providerCredentials.list(merchant.id, false))[0]!;
    const revoke = await server.graphql('mutation ($id: ID!) { revokeProviderCredential(id: $id) { id } }', { id: mine.id }, other.secret);
    expect(revoke.errors?.[0]?.extensions.code).toBe('NOT_FOUND');
    expect(await server.services.providerCredentials.keyFor(merchant.id, mine.provider)).not.toBeNull();

    const customer = await server.services.customers.create(merchant.id, { externalId: 'c' });
    const { token } = await server.services.customerSessions.create(merchant.id, customer.id, 600);
    const denied = await server.graphql('{ providerCredentials { id } }', {}, token);
    expect(denied.errors?.[0]?.extensions.code).toBe('FORBIDDEN');
  });
});
