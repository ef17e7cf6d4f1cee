import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { applyPricingChanges, planPricingConfig, type PricingConfig } from './config-apply.ts';

/**
 * Edges of provider prices and pricing as code: prices equal however they are written, and writers
 * side by side. The races only overlap on PostgreSQL; PGlite runs one transaction at a time, where
 * they must come out the same.
 */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

describe('pricing as code', () => {
  it('a file listing a price\'s context tiers in another order plans no change', async () => {
    const merchant = await server.createMerchant();
    const tiers = [
      { aboveInputTokens: 200_000, perMillionTokens: { input: '2', output: '8' } },
      { aboveInputTokens: 500_000, perMillionTokens: { input: '3', output: '9' } },
    ];
    const file = (contextTiers: typeof tiers): PricingConfig => ({ providerPrices: [{ provider: 'openai', model: 'gpt-x', perMillionTokens: { input: '1', output: '4' }, contextTiers }] });
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file(tiers)));
    expect(await planPricingConfig(server.services, merchant.id, file(tiers))).toEqual([]);
    const reordered = file([...tiers].reverse());
    expect(await planPricingConfig(server.services, merchant.id, reordered)).toEqual([]);
    // Applying it changes nothing, and it is still planned as no change afterwards: apply is idempotent.
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, reordered));
    expect(await planPricingConfig(server.services, merchant.id, reordered)).toEqual([]);
    expect(await server.services.prisma.providerPrice.count({ where: { merchantId: merchant.id } })).toBe(1);
  });

  it('of two applies racing from the same prices, one is written and the other refused: neither replaces the other unseen', async () => {
    const file = (input: string): PricingConfig => ({ providerPrices: [{ provider: 'custom', model: 'm', perMillionTokens: { input } }] });
    for (let round = 0; round < 4; round++) {
      const merchant = await server.createMerchant();
      await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file('1')));
      // Both planned against price 1, then applied side by side, each at its own "now" (two machines' clocks).
      const plans = await Promise.all([file('2'), file('3')].map((config) => planPricingConfig(server.services, merchant.id, config)));
      const start = Date.now();
      const outcomes = await Promise.all(
        plans.map((plan, index) =>
          applyPricingChanges(server.services, merchant.id, plan, new Date(start + 5 * index)).then(() => 'applied', (error: { code?: string }) => error.code ?? String(error)),
        ),
      );
      expect(outcomes.sort()).toEqual(['CONFLICT', 'applied']);
      // The refused apply wrote nothing: price 1, then the one apply's price.
      expect(await server.services.prisma.providerPrice.count({ where: { merchantId: merchant.id } })).toBe(2);
    }
  });

  it('a price set through the API while a file is applied is never replaced unseen: the apply is refused, or the API price comes after it', async () => {
    const file = (input: string): PricingConfig => ({ providerPrices: [{ provider: 'custom', model: 'm', perMillionTokens: { input } }] });
    for (let round = 0; round < 6; round++) {
      const merchant = await server.createMerchant();
      await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file('1')));
      const plan = await planPricingConfig(server.services, merchant.id, file('3'));
      const [set, applied] = await Promise.all([
        server.services.providerPrices.add(merchant.id, { provider: 'custom', model: 'm', perMillionTokens: { input: '2' } }).then(() => 'written', (error: { code?: string }) => error.code ?? String(error)),
        applyPricingChanges(server.services, merchant.id, plan, new Date(Date.now() + 50)).then(() => 'applied', (error: { code?: string }) => error.code ?? String(error)),
      ]);
      expect(set).toBe('written');
      const rows = await server.services.prisma.providerPrice.findMany({ where: { merchantId: merchant.id }, orderBy: { effectiveFrom: 'asc' } });
      const history = rows.map((row) => (row.prices as { perMillionTokens: { input: string } }).perMillionTokens.input);
      // The file's diff showed price 1 replaced: written over price 2, it would have hidden it (1, 2, 3).
      expect(['applied', 'CONFLICT']).toContain(applied);
      expect(history).toEqual(applied === 'applied' ? ['1', '3', '2'] : ['1', '2']);
    }
  });
});

describe('provider prices', () => {
  it('image prices keyed in another case are the same price: the same one again at its time is a no-op, and "from now" writes nothing', async () => {
    const merchant = await server.createMerchant();
    const prices = server.services.providerPrices;
    const from = new Date('2025-01-01T00:00:00Z');
    const stored = await prices.add(merchant.id, { provider: 'openai', model: 'img-x', perImageBy: { '1024x1024/HD': '0.08', standard: '0.04' }, effectiveFrom: from });
    // Images are matched to these keys trimmed and case-insensitively (and keys that would match alike are refused): nothing changed.
    const again = await prices.add(merchant.id, { provider: 'openai', model: 'img-x', perImageBy: { '1024X1024/hd': '0.080', ' Standard': '0.04' }, effectiveFrom: from });
    expect(again.id).toBe(stored.id);
    await prices.add(merchant.id, { provider: 'openai', model: 'img-x', perImageBy: { '1024x1024/hd': '0.08', STANDARD: '0.04' } });
    expect(await server.services.prisma.providerPrice.count({ where: { merchantId: merchant.id } })).toBe(1);
    // A different rate is still a different price.
    await expect(prices.add(merchant.id, { provider: 'openai', model: 'img-x', perImageBy: { '1024x1024/hd': '0.09', standard: '0.04' }, effectiveFrom: from })).rejects.toMatchObject({ code: 'CONFLICT' });
  });
});
