import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './server.ts';

/**
 * Input the database cannot take (the NUL character, a lone UTF-16 surrogate, a time outside
 * years 1-9999, a cursor naming no id) is refused as VALIDATION with its field, before any write.
 */
let server: TestServer;
let merchant: { id: string; secret: string };

beforeAll(async () => {
  server = await startTestServer();
  merchant = await server.createMerchant();
  await server.services.customers.create(merchant.id, { externalId: 'existing' });
});
afterAll(() => server?.close());

const gql = (query: string, variables: Record<string, unknown> = {}) => server.graphql<any>(query, variables, merchant.secret);
const codeOf = (result: { errors?: { extensions: { code: string } }[] }) => result.errors?.[0]?.extensions.code;
const cursor = (text: string) => Buffer.from(text).toString('base64url');

describe('input the database cannot store', () => {
  it('text with NUL or a lone surrogate, in any service field, names the field', async () => {
    const create = (input: Record<string, unknown>) => gql('mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }', { input });
    const refusals: [Promise<any>, string][] = [
      [create({ externalId: 'nul\u0000id' }), 'externalId'],
      [create({ externalId: 'ok-1', name: 'a\ud800b' }), 'name'],
      [create({ externalId: 'ok-2', metadata: { note: 'x\u0000' } }), 'metadata'],
      [create({ externalId: 'ok-3', metadata: { ['k\udc00']: 1 } }), 'metadata'],
      [gql('query ($s: String) { customers(filter: { search: $s }) { totalCount } }', { s: 'x\u0000' }), 'filter.search'],
      [gql('mutation ($n: String!) { createApiKey(name: $n) { secret } }', { n: 'key\u0000' }), 'name'],
      [gql('mutation ($n: String) { updateMerchant(name: $n) { id } }', { n: 'shop\u0000' }), 'name'],
    ];
    for (const [pending, field] of refusals) {
      const result = await pending;
      expect(result.errors?.[0]?.extensions, field).toMatchObject({ code: 'VALIDATION', field });
    }
    expect((await gql('{ customers { totalCount } }')).data.customers.totalCount).toBe(1);
    expect((await gql('{ merchant { name } }')).data.merchant.name).toBe('Test merchant');
  });

  it('metadata JSON would store other than sent (an own __proto__ key, a number beyond a double): VALIDATION, nothing written', async () => {
    // A merchant of its own, so that what this writes when it should not is no other test's concern.
    const owner = await server.createMerchant();
    // Raw bodies: JSON.stringify could not write 1e400.
    const create = async (metadata: string) => {
      const response = await fetch(`${server.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${owner.secret}` },
        body: `{"query":"mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { id metadata } }","variables":{"input":{"externalId":"altered","metadata":${metadata}}}}`,
      });
      return (await response.json()) as { data?: unknown; errors?: { message: string; extensions: Record<string, unknown> }[] };
    };
    for (const metadata of ['{"__proto__":{"x":1},"plan":"pro"}', '{"nested":{"__proto__":{}}}', '{"seats":1e400}', '{"seats":[-1e400]}']) {
      const result = await create(metadata);
      expect(result.errors?.[0]?.extensions, metadata).toMatchObject({ code: 'VALIDATION', field: 'metadata' });
    }
    expect(await server.services.customers.count(owner.id, {})).toBe(0);
    const { id } = await server.services.customers.create(owner.id, { externalId: 'kept', metadata: { plan: 'free' } });
    const updated = await server.graphql('mutation ($id: ID!, $m: JSONObject) { updateCustomer(id: $id, input: { metadata: $m }) { id } }', { id, m: JSON.parse('{"__proto__":{"x":1}}') }, owner.secret);
    expect(updated.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'metadata' });
    expect((await server.services.customers.get(owner.id, id)).metadata).toEqual({ plan: 'free' });
  });

  it('usage and grant metadata that would be stored other than sent: VALIDATION per event, nothing charged', async () => {
    const owner = await server.createMerchant();
    const customer = await server.services.customers.create(owner.id, { externalId: 'meta' });
    const post = async (metadata: string) => {
      const response = await fetch(`${server.url}/v1/usage/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${owner.secret}` },
        body: `{"events":[{"customer":"meta","idempotencyKey":"bad","usage":{"provider":"custom","model":"m","requests":1},"metadata":${metadata}},` +
          `{"customer":"meta","idempotencyKey":"good","usage":{"provider":"custom","model":"m","requests":1}}]}`,
      });
      return (await response.json()) as { results: { ok: boolean; error?: Record<string, unknown> }[] };
    };
    for (const metadata of ['{"seats":1e400}', '{"a":{"__proto__":{"x":1}}}']) {
      const { results } = await post(metadata);
      expect(results[0], metadata).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'metadata' } });
      expect(results[1]!.ok).toBe(true);
    }
    expect(await server.services.prisma.usageEvent.count({ where: { merchantId: owner.id, idempotencyKey: 'bad' } })).toBe(0);
    const grant = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${owner.secret}` },
      body: `{"query":"mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }","variables":{"input":{"customerId":"${customer.id}","amount":"1","kind":"PAID","idempotencyKey":"g","metadata":{"limit":1e400}}}}`,
    });
    expect(((await grant.json()) as any).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'metadata' });
    expect((await server.services.ledgerQueries.wallet(owner.id, customer.id, 'USD')).balance).toBe(0n);
  });

  it('times outside years 1-9999, as arguments or inside a cursor', async () => {
    const page = (variables: Record<string, unknown>) =>
      gql('query ($after: String, $since: DateTime) { customers(after: $after, filter: { createdAfter: $since }) { totalCount } }', variables);
    expect(codeOf(await page({ since: '-100000-01-01T00:00:00Z' }))).toBe('VALIDATION');
    expect(codeOf(await page({ since: '+10000-01-01T00:00:00Z' }))).toBe('VALIDATION');
    expect(codeOf(await page({ after: cursor('-100000-01-01T00:00:00.000Z|6f1c1a4e-3b1d-4a53-9d76-0b6f0f7f7a11') }))).toBe('VALIDATION');
    expect((await page({ since: '0001-01-01T00:00:00Z' })).data.customers.totalCount).toBe(1);
  });

  it('a cursor whose id is not one this API issued, and a negative page size', async () => {
    const result = await gql('query ($after: String) { customers(after: $after) { totalCount } }', { after: cursor('2026-01-01T00:00:00.000Z|not-a-uuid') });
    expect(result.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'after' });
    expect(codeOf(await gql('{ customers(first: -1) { totalCount } }'))).toBe('VALIDATION');
  });
});
