import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';

let server: TestServer;
let merchant: { id: string; secret: string };

beforeAll(async () => {
  server = await startTestServer();
  merchant = await server.createMerchant();
});
afterAll(() => server?.close());

const gql = (query: string, variables: Record<string, unknown> = {}) => server.graphql<any>(query, variables, merchant.secret);
const ARCHIVE = 'mutation ($key: String!) { archiveMeter(key: $key) { key archivedAt } }';
const CREATE = 'mutation ($input: CreateMeterInput!) { createMeter(input: $input) { key name unit } }';

describe('meters', () => {
  it('archiveMeter by a key no meter can have is NOT_FOUND, never INTERNAL', async () => {
    const created = await gql(CREATE, { input: { key: 'tokens', name: ' Tokens ', unit: 'token', source: 'TOTAL_TOKENS' } });
    expect(created.data.createMeter).toEqual({ key: 'tokens', name: 'Tokens', unit: 'token' });
    for (const key of ['tokens\u0000', 'tokens\ud800', ' tokens', 'Tokens', 'nope']) {
      expect((await gql(ARCHIVE, { key })).errors?.[0]?.extensions, JSON.stringify(key)).toMatchObject({ code: 'NOT_FOUND' });
    }
    // update (config files use it) the same way.
    await expect(server.services.meters.update(merchant.id, 'tokens\u0000', { name: 'x', unit: 'u' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect((await server.services.meters.list(merchant.id, false)).map((meter) => meter.key)).toEqual(['tokens']);
    expect((await gql(ARCHIVE, { key: 'tokens' })).data.archiveMeter.archivedAt).not.toBeNull();
  });

  it('createMeter refuses a bad key, name or unit naming the field', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ key: 'Bad Key', name: 'x', unit: 'u' }, 'key'],
      [{ key: 'k\u0000', name: 'x', unit: 'u' }, 'key'],
      [{ key: 'k1', name: 'x\u0000', unit: 'u' }, 'name'],
      [{ key: 'k2', name: 'x', unit: ' ' }, 'unit'],
      [{ key: 'k3', name: 'x', unit: 'u'.repeat(33) }, 'unit'],
    ];
    for (const [input, field] of cases) {
      const result = await gql(CREATE, { input: { source: 'REQUESTS', ...input } });
      expect(result.errors?.[0]?.extensions, JSON.stringify(input)).toMatchObject({ code: 'VALIDATION', field });
    }
  });
});
