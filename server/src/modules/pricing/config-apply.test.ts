import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { applyPricingChanges, describeChanges, planPricingConfig, type PricingConfig } from './config-apply.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const CONFIG: PricingConfig = {
  meters: [{ key: 'output_tokens', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' }],
  providerPrices: [{ provider: 'openai', model: 'gpt-5.4-mini', perMillionTokens: { input: '0.75', cachedInput: '0.075', output: '4.50' } }],
  priceRules: [
    { name: 'markup', type: 'MARKUP', config: { percent: '25' } },
    { name: 'output', type: 'GRADUATED', meterKey: 'output_tokens', config: { tiers: [{ upTo: '1000000', unitPrice: '0.000002' }, { upTo: null, unitPrice: '0.000001' }] } },
  ],
};

describe('pricing as code', () => {
  it('shows a diff, applies it, and is a no-op the second time', async () => {
    const merchant = await server.createMerchant();
    const plan = await planPricingConfig(server.services, merchant.id, CONFIG);
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['create-meter output_tokens', 'add-price openai/gpt-5.4-mini', 'add-rule markup', 'add-rule output']);
    expect(describeChanges(plan)).toContain('+ rule "markup"');
    // Planning changed nothing.
    expect(await server.services.meters.list(merchant.id, true)).toEqual([]);

    await applyPricingChanges(server.services, merchant.id, plan);
    expect((await server.services.meters.list(merchant.id, false)).map((meter) => meter.key)).toEqual(['output_tokens']);
    expect((await server.services.priceRules.allVersions(merchant.id)).map((rule) => rule.name).sort()).toEqual(['markup', 'output']);

    const again = await planPricingConfig(server.services, merchant.id, CONFIG);
    expect(again).toEqual([]);
    expect(describeChanges(again)).toMatch(/No changes/);
  });

  it('a changed price becomes a new version; the old one stays in history', async () => {
    const merchant = await server.createMerchant();
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, CONFIG, new Date('2026-01-01')), new Date('2026-01-01'));
    const changed: PricingConfig = { ...CONFIG, priceRules: [{ name: 'markup', type: 'MARKUP', config: { percent: '30' } }] };
    const plan = await planPricingConfig(server.services, merchant.id, changed);
    expect(plan).toHaveLength(1);
    expect(describeChanges(plan)).toContain('~ rule "markup" (new version from now)');
    await applyPricingChanges(server.services, merchant.id, plan);
    const versions = (await server.services.priceRules.allVersions(merchant.id)).filter((rule) => rule.name === 'markup');
    expect(versions.map((rule) => (rule.config as { percent: string }).percent)).toEqual(['25', '30']);
    expect(versions[0]!.effectiveFrom < versions[1]!.effectiveFrom).toBe(true);
  });

  it('refuses an invalid file before changing anything, naming the field', async () => {
    const merchant = await server.createMerchant();
    const bad: PricingConfig = { ...CONFIG, priceRules: [{ name: 'broken', type: 'GRADUATED', config: { tiers: [] } }] };
    await expect(planPricingConfig(server.services, merchant.id, bad)).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'rule.tiers' } });
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, { meters: CONFIG.meters }));
    const sourceChange: PricingConfig = { meters: [{ key: 'output_tokens', name: 'x', unit: 'token', source: 'INPUT_TOKENS' }] };
    await expect(planPricingConfig(server.services, merchant.id, sourceChange)).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'meters.0.source' } });
  });
});
