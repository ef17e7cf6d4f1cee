import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { applyPricingChanges, describeChanges, loadPricingConfig, planPricingConfig, type PricingConfig } from './config-apply.ts';
import { importModelsDevJson } from './models-dev.ts';

/**
 * Pricing inputs of an odd shape: each is refused or skipped with a reason, never an internal
 * error, and what is quoted back of the input stays short.
 */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

/** A list nested `depth` deep, as JSON text: JSON.parse reads it, a recursive walk does not. */
const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);

describe('models.dev import of odd shapes', () => {
  it('a rate or a tier type nested thousands deep is skipped with its reason, not an internal error', async () => {
    const file = JSON.stringify({
      openai: { models: { deep: { cost: { input: 'RATE', output: 1 } }, fine: { cost: { input: 1, output: 2 } } } },
      acme: { models: { tiered: { cost: { input: 1, output: 2, tiers: [{ input: 2, tier: { type: 'TYPE', size: 1000 } }] } } } },
    })
      .replace('"RATE"', nested(50_000))
      .replace('"TYPE"', nested(50_000));
    const { rows, skipped } = importModelsDevJson(file, { effectiveFrom: new Date('2026-01-01T00:00:00Z') });
    expect(rows.map((row) => `${row.provider}/${row.model}`)).toEqual(['openai/fine']);
    expect(skipped).toEqual([
      { path: '/openai/models/deep/cost/input', reason: 'must be a number (USD per million), got a list' },
      { path: '/acme/models/tiered/cost/tiers/0/tier/type', reason: 'a list tiers (by output, time of day…) are not supported' },
    ]);

    // Through the API too: the file is imported, the bad model skipped, and the answer is not an INTERNAL error.
    const merchant = await server.createMerchant();
    const result = await server.services.providerPrices.importModelsDev(merchant.id, file);
    expect(result).toMatchObject({ imported: 1, unchanged: 0 });
    expect(result.skipped).toHaveLength(2);
  });

  it('a long value is quoted short in the reason, not echoed whole', () => {
    const long = 'x'.repeat(100_000);
    const digits = `1${'0'.repeat(100_000)}`;
    const file = `{"acme":{"models":{"text":{"cost":{"input":"${long}","output":1}},"huge":{"cost":{"input":${digits},"output":1}}}}}`;
    const { skipped } = importModelsDevJson(file, { effectiveFrom: new Date('2026-01-01T00:00:00Z') });
    expect(skipped.map((skip) => skip.path)).toEqual(['/acme/models/text/cost/input', '/acme/models/huge/cost/input']);
    for (const skip of skipped) expect(skip.reason.length).toBeLessThan(200);
    expect(skipped[0]!.reason).toMatch(/^must be a number \(USD per million\), got "xxx+…$/);
    expect(skipped[1]!.reason).toMatch(/^10+… is too large$/);
  });
});

describe('models.dev files saved with a byte order mark', () => {
  it('are imported as without it, each number still read by the digits the file wrote', async () => {
    const text = '{"acme":{"models":{"m":{"cost":{"input":0.15,"output":1e-7}},"n":{"cost":{"input":1,"output":2.0000000000000000001}}}}}';
    const effectiveFrom = new Date('2026-01-01T00:00:00Z');
    const plain = importModelsDevJson(text, { effectiveFrom });
    expect(importModelsDevJson(`\uFEFF${text}`, { effectiveFrom })).toEqual(plain);
    expect(plain.rows.map((row) => [row.model, row.perMillionTokens?.output])).toEqual([['m', '0.0000001']]);
    expect(plain.skipped).toEqual([{ path: '/acme/models/n/cost/output', reason: '2.0000000000000000001 has more than 18 decimal places' }]);

    // As the CLI's `prices import` hands it the file's text.
    const merchant = await server.createMerchant();
    expect(await server.services.providerPrices.importModelsDev(merchant.id, `\uFEFF${text}`, effectiveFrom)).toMatchObject({ imported: 1, unchanged: 0, skipped: plain.skipped });
  });
});

describe('pricing config modules of odd shapes', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-odd-config-'));
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    writeFileSync(file, text);
    return file;
  };
  const METER = { key: 'output_tokens', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' };

  it('a module exporting the promise of its config is still planned by what it resolves to', async () => {
    const merchant = await server.createMerchant();
    const file = write('promised.config.mjs', `export default Promise.resolve(${JSON.stringify({ meters: [METER] })});\n`);
    const plan = await planPricingConfig(server.services, merchant.id, await loadPricingConfig(file));
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['create-meter output_tokens']);
  });

  it('a module exporting a Map, which has no lists to read, is refused, not planned as "No changes"', async () => {
    const file = write('map.config.mjs', `export default new Map([['meters', ${JSON.stringify([METER])}]]);\n`);
    const error = await loadPricingConfig(file).then(
      () => null,
      (caught: unknown) => caught,
    );
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'config' } });
  });
});

describe('price rule configs of odd shapes', () => {
  it('a config nested thousands deep is refused for its depth, not for holding values JSON cannot', async () => {
    const merchant = await server.createMerchant();
    await server.services.meters.create(merchant.id, { key: 'tok', name: 'Tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
    let deep: unknown = [];
    for (let level = 0; level < 20_000; level++) deep = [deep];
    const error = await server.services.priceRules.put(merchant.id, { name: 'deep', type: 'GRADUATED', meterKey: 'tok', config: { tiers: deep as never } }).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'config' } });
    expect((error as Error).message).toMatch(/nest .* more than 64 levels deep/);
    expect(await server.services.priceRules.allVersions(merchant.id)).toEqual([]);
  });
});

describe('a plan whose scheduled price came due before it was applied', () => {
  const planned = new Date('2026-06-01T00:00:00Z');
  const due = '2026-06-01T00:10:00Z';
  const applied = new Date('2026-06-01T00:20:00Z');
  const price = (model: string, input: string, effectiveFrom?: string) => ({ provider: 'openai', model, perMillionTokens: { input }, ...(effectiveFrom ? { effectiveFrom } : {}) });
  const stored = async (merchantId: string) =>
    (await server.services.prisma.providerPrice.findMany({ where: { merchantId }, orderBy: { effectiveFrom: 'asc' } })).map((row) => [row.model, row.effectiveFrom.toISOString(), row.prices]);

  it('is refused as due, not as a price written since the plan (none was) nor as a clash of the file with itself, and nothing is written', async () => {
    const merchant = await server.createMerchant();
    await server.services.providerPrices.add(merchant.id, { ...price('kept', '1'), effectiveFrom: new Date('2026-01-01T00:00:00Z') });
    for (const file of [
      // A model with a price in force, which the file keeps, and a new one scheduled.
      { providerPrices: [price('kept', '1'), price('kept', '2', due)] },
      // A new model: its price of now and the one scheduled.
      { providerPrices: [price('new', '1'), price('new', '2', due)] },
    ] satisfies PricingConfig[]) {
      const before = await stored(merchant.id);
      const plan = await planPricingConfig(server.services, merchant.id, file, planned);
      expect(describeChanges(plan)).toMatch(/scheduled from 2026-06-01T00:10:00.000Z/);
      const error = await applyPricingChanges(server.services, merchant.id, plan, applied).then(
        () => null,
        (caught: unknown) => caught as Error,
      );
      expect(error).toMatchObject({ code: 'CONFLICT', details: { field: 'effectiveFrom' } });
      expect(error?.message).toMatch(/scheduled from 2026-06-01T00:10:00.000Z is due by now.*plan the file again/);
      expect(await stored(merchant.id)).toEqual(before);
      // Planned again, it puts the price due in force from now.
      await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file, applied), applied);
      expect(await planPricingConfig(server.services, merchant.id, file, applied)).toEqual([]);
    }
  });

  it('of a model the file only schedules, is still put in force from now', async () => {
    const merchant = await server.createMerchant();
    const plan = await planPricingConfig(server.services, merchant.id, { providerPrices: [price('later', '2', due)] }, planned);
    await applyPricingChanges(server.services, merchant.id, plan, applied);
    expect(await stored(merchant.id)).toEqual([['later', applied.toISOString(), { perMillionTokens: { input: '2' } }]]);
  });
});

describe("a merchant's price row beside the list's", () => {
  it("a merchant's undated row does not cost a snapshot the list prices by its own name; a row of the merchant's for that name does", async () => {
    const merchant = await server.createMerchant();
    const at = new Date('2026-06-01T00:00:00Z');
    // The merchant keeps gpt-4o's list rates, adding a cache-write rate OpenAI does not charge.
    await server.services.providerPrices.add(merchant.id, { provider: 'openai', model: 'gpt-4o', perMillionTokens: { input: '2.50', cachedInput: '1.25', cacheWrite: '2.50', output: '10' }, effectiveFrom: new Date('2026-01-01T00:00:00Z') });
    const input = async (provider: string, model: string) => {
      const price = await server.services.providerPrices.priceFor(merchant.id, provider, model, at);
      return [price?.ref.startsWith('list:') ? 'list' : 'own', price?.perMillionTokens?.input];
    };
    // The 2024-05-13 snapshot is still served at $5 / $15: the list names it.
    expect(await input('openai', 'gpt-4o-2024-05-13')).toEqual(['list', '5']);
    expect(await input('azure-openai', 'gpt-4o-2024-05-13')).toEqual(['list', '5']);
    // Other snapshots are gpt-4o, which the merchant's row prices.
    expect(await input('openai', 'gpt-4o-2024-08-06')).toEqual(['own', '2.5']);
    expect(await input('openai', 'gpt-4o')).toEqual(['own', '2.5']);
    // A row of the merchant's for the snapshot's own name wins over the list's.
    await server.services.providerPrices.add(merchant.id, { provider: 'openai', model: 'gpt-4o-2024-05-13', perMillionTokens: { input: '4', output: '12' }, effectiveFrom: new Date('2026-01-01T00:00:00Z') });
    expect(await input('openai', 'gpt-4o-2024-05-13')).toEqual(['own', '4']);
  });
});

describe('a pricing file whose rule settings name a target', () => {
  it('is refused while planning, naming the setting in the file, not shown in a diff that applying refuses', async () => {
    const merchant = await server.createMerchant();
    for (const key of ['provider', 'model', 'meter', 'id', 'kind']) {
      const file = {
        meters: [{ key: 'tok', name: 'Tokens', unit: 'token', source: 'OUTPUT_TOKENS' }],
        // The target written inside the settings instead of beside them.
        priceRules: [{ name: 'openai tokens', type: 'FLAT', meterKey: 'tok', config: { unitPrice: '1', [key]: key === 'kind' ? 'FLAT' : 'openai' } }],
      } as PricingConfig;
      const error = await planPricingConfig(server.services, merchant.id, file).then(
        () => null,
        (caught: unknown) => caught as Error,
      );
      expect(error, key).toMatchObject({ code: 'VALIDATION', details: { field: `priceRules.0.config.${key}` } });
      expect(error?.message, key).toMatch(`priceRules.0.config.${key}: is not a setting of a FLAT rule`);
    }
    expect(await server.services.meters.list(merchant.id, true)).toEqual([]);
  });

  it('settings beyond the size a rule stores are refused while planning, naming the entry, as the service refuses them', async () => {
    const merchant = await server.createMerchant();
    // 1,000 tiers: over the 16 KiB of JSON a rule's settings may take.
    const tiers = [...Array.from({ length: 999 }, (_, index) => ({ upTo: String(index + 1), unitPrice: '0.000001' })), { upTo: null, unitPrice: '0.0000005' }];
    const file = {
      meters: [{ key: 'tok', name: 'Tokens', unit: 'token', source: 'OUTPUT_TOKENS' }],
      priceRules: [{ name: 'many tiers', type: 'GRADUATED', meterKey: 'tok', config: { tiers } }],
    } as PricingConfig;
    await expect(planPricingConfig(server.services, merchant.id, file)).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'priceRules.0.config' } });
    await expect(server.services.priceRules.put(merchant.id, { name: 'many tiers', type: 'GRADUATED', meterKey: 'tok', config: { tiers } })).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'config' } });
  });
});
