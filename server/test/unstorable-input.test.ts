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
