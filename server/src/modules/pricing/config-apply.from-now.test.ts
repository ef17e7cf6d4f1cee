import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { applyPricingChanges, planPricingConfig } from './config-apply.ts';

/** Pricing as code stays idempotent while usage is stamped ahead (its "from now" is moved past that usage). */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

async function merchantWithUsageAhead() {
  const { services } = server;
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  await services.meters.create(merchant.id, { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
  const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '1000'), kind: 'PAID', idempotencyKey: 'seed' });
  // A client whose clock runs two minutes ahead.
  const [result] = await services.usage.record(merchant.id, SYSTEM_ACTOR, [
    { customer: customer.id, idempotencyKey: randomUUID(), usage: { provider: 'custom', model: 'm', outputTokens: 1 }, timestamp: new Date(Date.now() + 120_000) },
  ]);
  expect(result!.ok).toBe(true);
  return merchant;
}

describe('applying the same pricing file again while usage is stamped ahead', () => {
  it('finds no changes for its rules', async () => {
    const merchant = await merchantWithUsageAhead();
    const file = { priceRules: [{ name: 'out', type: 'FLAT' as const, meterKey: 'out', config: { unitPrice: '2' } }] };
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file));
    expect(await planPricingConfig(server.services, merchant.id, file)).toEqual([]);
  });

  it('finds no changes for its provider prices', async () => {
    const merchant = await merchantWithUsageAhead();
    const file = { providerPrices: [{ provider: 'custom', model: 'm', perMillionTokens: { input: '0', output: '2' } }] };
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file));
    expect(await planPricingConfig(server.services, merchant.id, file)).toEqual([]);
  });
});

describe('changing a pricing file again and again while usage is stamped ahead', () => {
  const apply = async (merchantId: string, file: Parameters<typeof planPricingConfig>[2]) =>
    applyPricingChanges(server.services, merchantId, await planPricingConfig(server.services, merchantId, file));

  it('puts each new rule in force after the last, and the last file then plans no change', async () => {
    const merchant = await merchantWithUsageAhead();
    const file = (unitPrice: string) => ({ priceRules: [{ name: 'out', type: 'FLAT' as const, meterKey: 'out', config: { unitPrice } }] });
    for (const unitPrice of ['2', '3', '4']) await apply(merchant.id, file(unitPrice));
    expect(await planPricingConfig(server.services, merchant.id, file('4'))).toEqual([]);
    const versions = (await server.services.priceRules.book(merchant.id)).defaults.filter((rule) => rule.name === 'out');
    const newest = versions.reduce((last, rule) => (rule.effectiveFrom > last.effectiveFrom ? rule : last));
    expect(versions).toHaveLength(3);
    expect(newest.config).toMatchObject({ unitPrice: '4' });
  });

  it('puts each new provider price in force after the last, and the last file then plans no change', async () => {
    const merchant = await merchantWithUsageAhead();
    const file = (output: string) => ({ providerPrices: [{ provider: 'custom', model: 'm', perMillionTokens: { input: '0', output } }] });
    for (const output of ['2', '3', '4']) await apply(merchant.id, file(output));
    expect(await planPricingConfig(server.services, merchant.id, file('4'))).toEqual([]);
    const rows = await server.services.providerPrices.rowsFor(merchant.id);
    expect(rows.map((row) => row.perMillionTokens?.output).sort()).toEqual(['2', '3', '4']);
    const later = new Date(Date.now() + 10 * 60_000);
    expect((await server.services.providerPrices.priceFor(merchant.id, 'custom', 'm', later))?.perMillionTokens?.output).toBe('4');
  });

  it('follows prices added through the API "from now" meanwhile', async () => {
    const merchant = await merchantWithUsageAhead();
    const price = (output: string) => ({ provider: 'custom', model: 'm', perMillionTokens: { input: '0', output } });
    await server.services.providerPrices.add(merchant.id, price('2'));
    await server.services.providerPrices.add(merchant.id, price('3'));
    await apply(merchant.id, { providerPrices: [price('4')] });
    expect(await planPricingConfig(server.services, merchant.id, { providerPrices: [price('4')] })).toEqual([]);
    await server.services.providerPrices.add(merchant.id, price('5'));
    const later = new Date(Date.now() + 10 * 60_000);
    expect((await server.services.providerPrices.priceFor(merchant.id, 'custom', 'm', later))?.perMillionTokens?.output).toBe('5');
  });
});
