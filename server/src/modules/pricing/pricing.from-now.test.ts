import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { later, pricedUsageSetup, SINCE } from '../../../test/priced-usage.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { applyPricingChanges, planPricingConfig } from './config-apply.ts';

/**
 * Usage may be stamped up to 5 minutes ahead of the clock, so a price rule version, an archived
 * rule or a provider price "from now" can find usage already priced at or after now. Each takes
 * effect a millisecond after the merchant's latest such usage, so no charged event is priced
 * another way afterwards (a late event at the same moment is charged alike). Rules and provider
 * prices read the wall clock, so this server keeps the real one.
 */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

async function setup() {
  const { services } = server;
  const { merchant, customer, event, record } = await pricedUsageSetup(server);
  const versions = async () => (await services.prisma.priceRule.findMany({ where: { merchantId: merchant.id }, orderBy: { effectiveFrom: 'asc' } })).map((row) => [row.effectiveFrom.toISOString(), row.archivedAt?.toISOString() ?? null]);
  const prices = async () => (await services.prisma.providerPrice.findMany({ where: { merchantId: merchant.id }, orderBy: { effectiveFrom: 'asc' } })).map((row) => row.effectiveFrom.toISOString());
  return { merchant, customer, event, record, versions, prices };
}

describe('a price rule version "from now" while usage up to 5 minutes ahead is already priced', () => {
  it('takes effect just after that usage: an event charged under the old version keeps it, and a late one at its moment is charged alike', async () => {
    const t = await setup();
    await server.services.priceRules.put(t.merchant.id, { name: 'out', type: 'FLAT', meterKey: 'out', config: { unitPrice: '1' }, effectiveFrom: SINCE });
    const ahead = later(new Date(), 120_000);
    expect(await t.record(t.event(1, ahead))).toEqual(['1.00']);
    const version = await server.services.priceRules.put(t.merchant.id, { name: 'out', type: 'FLAT', meterKey: 'out', config: { unitPrice: '2' } });
    expect(await t.record(t.event(1, ahead), t.event(1, later(ahead, 1)))).toEqual(['1.00', '2.00']);
    expect(version.effectiveFrom).toEqual(later(ahead, 1));
    // Another version "from now" in the same window follows it rather than being refused.
    const next = await server.services.priceRules.put(t.merchant.id, { name: 'out', type: 'FLAT', meterKey: 'out', config: { unitPrice: '3' } });
    expect(next.effectiveFrom).toEqual(later(ahead, 2));
    expect(await t.record(t.event(1, later(ahead, 2)))).toEqual(['3.00']);
  });

  it('a rule archived "from now" stops just after that usage', async () => {
    const t = await setup();
    await server.services.priceRules.put(t.merchant.id, { name: 'out', type: 'FLAT', meterKey: 'out', config: { unitPrice: '1' }, effectiveFrom: SINCE });
    const ahead = later(new Date(), 120_000);
    expect(await t.record(t.event(1, ahead))).toEqual(['1.00']);
    const archived = await server.services.priceRules.archive(t.merchant.id, 'out');
    // No rule after it: the event has no known cost, so it is free.
    expect(await t.record(t.event(1, ahead), t.event(1, later(ahead, 1)))).toEqual(['1.00', '0.00']);
    expect(archived.archivedAt).toEqual(later(ahead, 1));
  });

  it('a pricing file applied "from now" puts its rule versions just after that usage', async () => {
    const t = await setup();
    const file = (unitPrice: string) => ({ priceRules: [{ name: 'out', type: 'FLAT' as const, meterKey: 'out', config: { unitPrice } }] });
    await applyPricingChanges(server.services, t.merchant.id, await planPricingConfig(server.services, t.merchant.id, file('1')));
    const ahead = later(new Date(), 120_000);
    expect(await t.record(t.event(1, ahead))).toEqual(['1.00']);
    await applyPricingChanges(server.services, t.merchant.id, await planPricingConfig(server.services, t.merchant.id, file('2')));
    expect(await t.record(t.event(1, ahead), t.event(1, later(ahead, 1)))).toEqual(['1.00', '2.00']);
    expect((await t.versions()).at(-1)).toEqual([later(ahead, 1).toISOString(), null]);
  });
});

describe('a provider price "from now" while usage up to 5 minutes ahead is already priced', () => {
  const price = (output: string, effectiveFrom?: Date) => ({ provider: 'custom', model: 'm', perMillionTokens: { input: '0', output }, ...(effectiveFrom ? { effectiveFrom } : {}) });

  it('takes effect just after that usage: an event costed at the old price keeps it, and a late one at its moment is costed alike', async () => {
    const t = await setup();
    await server.services.providerPrices.add(t.merchant.id, price('1', SINCE));
    const ahead = later(new Date(), 120_000);
    // No rules: the cost passes through, so the charge is the cost.
    expect(await t.record(t.event(1_000_000, ahead))).toEqual(['1.00']);
    const row = await server.services.providerPrices.add(t.merchant.id, price('2'));
    expect(await t.record(t.event(1_000_000, ahead), t.event(1_000_000, later(ahead, 1)))).toEqual(['1.00', '2.00']);
    expect(row.effectiveFrom).toEqual(later(ahead, 1));
    // Another price "from now" in the same window is a new version just after it, not a clash.
    const next = await server.services.providerPrices.add(t.merchant.id, price('3'));
    expect(next.effectiveFrom).toEqual(later(ahead, 2));
    expect(await t.record(t.event(1_000_000, later(ahead, 2)))).toEqual(['3.00']);
  });

  it('follows a price "from now" of an instance whose clock runs ahead, rather than going in before it', async () => {
    const t = await setup();
    // Written by an instance 400 ms ahead: it takes effect at that instance's "now".
    const skewed = await server.services.providerPrices.add(t.merchant.id, price('1', later(new Date(), 400)));
    const row = await server.services.providerPrices.add(t.merchant.id, price('2'));
    expect(row.effectiveFrom).toEqual(later(skewed.effectiveFrom, 1));
    expect((await server.services.providerPrices.priceFor(t.merchant.id, 'custom', 'm', later(new Date(), 60_000)))?.perMillionTokens?.output).toBe('2');
  });

  it('a models.dev import "from now" adds its prices just after that usage, and another import follows it', async () => {
    const t = await setup();
    await server.services.providerPrices.add(t.merchant.id, price('1', SINCE));
    const ahead = later(new Date(), 120_000);
    expect(await t.record(t.event(1_000_000, ahead))).toEqual(['1.00']);
    const file = (output: number) => JSON.stringify({ custom: { models: { m: { cost: { input: 0, output } } } } });
    await server.services.providerPrices.importModelsDev(t.merchant.id, file(2));
    expect(await t.record(t.event(1_000_000, ahead), t.event(1_000_000, later(ahead, 1)))).toEqual(['1.00', '2.00']);
    expect(await t.prices()).toEqual([SINCE.toISOString(), later(ahead, 1).toISOString()]);
    await server.services.providerPrices.importModelsDev(t.merchant.id, file(3));
    expect((await t.prices()).at(-1)).toEqual(later(ahead, 2).toISOString());
    expect(await t.record(t.event(1_000_000, later(ahead, 2)))).toEqual(['3.00']);
  });

  it('the same price again "from now" (a daily import, say) writes no row and answers the one in force; a changed price is a new version', async () => {
    const t = await setup();
    const file = (output: number) => JSON.stringify({ custom: { models: { m: { cost: { input: 0, output } } } } });
    await server.services.providerPrices.importModelsDev(t.merchant.id, file(2));
    const first = await t.prices();
    expect(first).toHaveLength(1);
    expect(await server.services.providerPrices.importModelsDev(t.merchant.id, file(2))).toMatchObject({ imported: 0, unchanged: 1 });
    const same = await server.services.providerPrices.add(t.merchant.id, price('2.00'));
    expect(await t.prices()).toEqual(first);
    expect(same.effectiveFrom.toISOString()).toBe(first[0]);
    await server.services.providerPrices.importModelsDev(t.merchant.id, file(3));
    expect(await t.prices()).toHaveLength(2);
    // Back to the first price: a change from the one now in force, so a version of its own.
    await server.services.providerPrices.add(t.merchant.id, price('2'));
    expect(await t.prices()).toHaveLength(3);
  });

  it('a pricing file applied "from now" adds its prices just after that usage', async () => {
    const t = await setup();
    await server.services.providerPrices.add(t.merchant.id, price('1', SINCE));
    const ahead = later(new Date(), 120_000);
    expect(await t.record(t.event(1_000_000, ahead))).toEqual(['1.00']);
    const file = { providerPrices: [{ provider: 'custom', model: 'm', perMillionTokens: { input: '0', output: '2' } }] };
    await applyPricingChanges(server.services, t.merchant.id, await planPricingConfig(server.services, t.merchant.id, file));
    expect(await t.record(t.event(1_000_000, ahead), t.event(1_000_000, later(ahead, 1)))).toEqual(['1.00', '2.00']);
    expect(await t.prices()).toEqual([SINCE.toISOString(), later(ahead, 1).toISOString()]);
  });
});
