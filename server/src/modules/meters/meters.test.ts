import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testServerWithMerchant, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { blankUsage } from '../usage/usage.types.ts';
import { meterQuantity } from './meters.service.ts';

let server: TestServer;
let merchant: { id: string; secret: string };
const { start, close, gql } = testServerWithMerchant();

beforeAll(async () => ({ server, merchant } = await start()));
afterAll(close);

const ARCHIVE = 'mutation ($key: String!) { archiveMeter(key: $key) { key archivedAt } }';
const CREATE = 'mutation ($input: CreateMeterInput!) { createMeter(input: $input) { key name unit } }';
const UNARCHIVE = 'mutation ($key: String!) { unarchiveMeter(key: $key) { id key archivedAt } }';
const PUT_RULE = 'mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { name } }';
const RECORD = 'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { event { charge } } }';

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

  it('unarchiveMeter brings an archived meter back at once: ingest counts it and its rules price it again', async () => {
    const owner = await server.createMerchant();
    const as = (query: string, variables: Record<string, unknown>) => server.graphql<any>(query, variables, owner.secret);
    const customer = await server.services.customers.create(owner.id, { externalId: 'restorer' });
    await server.services.ledger.grantCredits(owner.id, { kind: 'system', apiKeyId: null }, {
      customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '10.00'), kind: 'PAID', idempotencyKey: 'seed',
    });
    let call = 0;
    const chargeOfACall = async () =>
      (await as(RECORD, { input: { customer: 'restorer', idempotencyKey: `call-${++call}`, usage: { provider: 'custom', model: 'm', requests: 1 } } })).data.recordUsage.event.charge;
    await as(CREATE, { input: { key: 'calls', name: 'Calls', unit: 'call', source: 'REQUESTS' } });
    expect((await as(PUT_RULE, { input: { name: 'per call', type: 'FLAT', meterKey: 'calls', config: { unitPrice: '0.01' } } })).errors).toBeUndefined();
    expect(await chargeOfACall()).toBe('0.01');

    const archived = (await as(ARCHIVE, { key: 'calls' })).data.archiveMeter;
    expect(archived.archivedAt).not.toBeNull();
    expect(await chargeOfACall()).toBe('0.00');
    // The key stays taken, and no rule may name the meter while it is archived.
    expect((await as(CREATE, { input: { key: 'calls', name: 'Calls', unit: 'call', source: 'REQUESTS' } })).errors?.[0]?.extensions).toMatchObject({ code: 'CONFLICT', field: 'key' });
    expect((await as(PUT_RULE, { input: { name: 'per call 2', type: 'FLAT', meterKey: 'calls', provider: 'custom', config: { unitPrice: '0.02' } } })).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'rule.meterKey' });

    const restored = await as(UNARCHIVE, { key: 'calls' });
    expect(restored.errors).toBeUndefined();
    expect(restored.data.unarchiveMeter).toMatchObject({ key: 'calls', archivedAt: null });
    // On this instance at once, though the active meters were just read (and cached) without it.
    expect(await chargeOfACall()).toBe('0.01');
    expect((await as(PUT_RULE, { input: { name: 'per call 2', type: 'FLAT', meterKey: 'calls', provider: 'custom', config: { unitPrice: '0.02' } } })).errors).toBeUndefined();
    // Idempotent: an active meter is answered as it is.
    expect((await as(UNARCHIVE, { key: 'calls' })).data.unarchiveMeter).toEqual(restored.data.unarchiveMeter);
  });

  it('unarchiveMeter finds only the merchant\'s own meters, and only for its secret key', async () => {
    const owner = await server.createMerchant();
    const other = await server.createMerchant();
    await server.services.meters.create(owner.id, { key: 'images', name: 'Images', unit: 'image', source: 'IMAGES' });
    await server.services.meters.archive(owner.id, 'images');
    const fromOther = await server.graphql<any>(UNARCHIVE, { key: 'images' }, other.secret);
    expect(fromOther.errors?.[0]?.extensions).toMatchObject({ code: 'NOT_FOUND' });
    for (const key of ['images\u0000', 'Images', 'nope']) {
      expect((await server.graphql<any>(UNARCHIVE, { key }, owner.secret)).errors?.[0]?.extensions, JSON.stringify(key)).toMatchObject({ code: 'NOT_FOUND' });
    }
    const customer = await server.services.customers.create(owner.id, { externalId: 'viewer' });
    const { token } = await server.services.customerSessions.create(owner.id, customer.id, 600);
    expect((await server.graphql<any>(UNARCHIVE, { key: 'images' }, token)).errors?.[0]?.extensions).toMatchObject({ code: 'FORBIDDEN' });
    expect((await server.graphql<any>(ARCHIVE, { key: 'images' }, token)).errors?.[0]?.extensions).toMatchObject({ code: 'FORBIDDEN' });
    expect((await server.services.meters.list(owner.id, true)).map((meter) => meter.archivedAt === null)).toEqual([false]);
  });

  it('meters the input apart by cache (uncached, cache reads, cache writes) and the reasoning within the output', async () => {
    const owner = await server.createMerchant();
    const as = (query: string, variables: Record<string, unknown>) => server.graphql<any>(query, variables, owner.secret);
    const prices: [string, string, string][] = [
      ['uncached', 'UNCACHED_INPUT_TOKENS', '0.000003'], ['cached', 'CACHED_INPUT_TOKENS', '0.0000003'],
      ['writes', 'CACHE_WRITE_TOKENS', '0.00000375'], ['reasoning', 'REASONING_TOKENS', '0.00001'],
    ];
    for (const [key, source, unitPrice] of prices) {
      expect((await as(CREATE, { input: { key, name: key, unit: 'token', source } })).errors).toBeUndefined();
      expect((await as(PUT_RULE, { input: { name: key, type: 'FLAT', meterKey: key, config: { unitPrice } } })).errors).toBeUndefined();
    }
    const customer = await server.services.customers.create(owner.id, { externalId: 'cache-user' });
    await server.services.ledger.grantCredits(owner.id, { kind: 'system', apiKeyId: null }, {
      customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '1.00'), kind: 'PAID', idempotencyKey: 'seed',
    });
    const usage = { provider: 'custom', model: 'm', inputTokens: 24762, cachedInputTokens: 21504, cacheWriteTokens: 3072, outputTokens: 503, reasoningTokens: 100 };
    const recorded = await as(RECORD, { input: { customer: 'cache-user', idempotencyKey: 'cache-call', usage } });
    expect(recorded.errors).toBeUndefined();
    // 186 uncached × 0.000003 + 21,504 read × 0.0000003 + 3,072 written × 0.00000375 + 100 reasoning × 0.00001
    expect(recorded.data.recordUsage.event.charge).toBe('0.0195292');
    const quantity = (source: 'UNCACHED_INPUT_TOKENS', fields: Record<string, number>) => meterQuantity(source, blankUsage(fields));
    // Cache counts a provider reports above the input leave none uncached, never a negative count.
    expect(quantity('UNCACHED_INPUT_TOKENS', { inputTokens: 10, cachedInputTokens: 8, cacheWriteTokens: 5 })).toBe(0n);
  });
});
