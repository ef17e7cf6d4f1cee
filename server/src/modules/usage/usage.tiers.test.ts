import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import type { UsageResult } from './usage.service.ts';
import { blankUsage } from './usage.types.ts';

/**
 * Tiered prices count only the units their own rule priced (as Stripe and Lago do): a rule for one
 * model on a shared meter, or a plan's rule after a mid-month plan change, starts from its own
 * total, and a VOLUME re-pricing gives back only what that rule charged.
 */
const now = new Date('2026-06-15T12:00:00Z');
const SINCE = new Date('2026-01-01T00:00:00Z');
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

type RuleSpec = { name: string; type: 'FLAT' | 'GRADUATED' | 'VOLUME'; model?: string; planKey?: string; config: Record<string, unknown>; effectiveFrom?: Date };

async function setup(rules: RuleSpec[]) {
  const { services } = server;
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  await services.meters.create(merchant.id, { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
  if (rules.some((rule) => rule.planKey)) await services.plans.put(merchant.id, { key: 'pro', name: 'Pro' });
  for (const { name, type, model, planKey, config, effectiveFrom } of rules) {
    await services.priceRules.put(merchant.id, { name, type, meterKey: 'out', model: model ?? null, planKey: planKey ?? null, config, effectiveFrom: effectiveFrom ?? SINCE });
  }
  const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '1000'), kind: 'PAID', idempotencyKey: 'seed' });
  const event = (model: string, outputTokens: number, timestamp?: Date) => ({
    customer: customer.id, idempotencyKey: randomUUID(), usage: { provider: 'custom', model, outputTokens }, timestamp: timestamp ?? null,
  });
  /** Records the events as one batch; answers each one's charge. */
  const record = async (...events: ReturnType<typeof event>[]) =>
    (await services.usage.record(merchant.id, SYSTEM_ACTOR, events)).map((result: UsageResult) => (result.ok ? result.event.charge : result.error.message));
  const balance = async () => (await services.ledgerQueries.wallet(merchant.id, customer.id, 'USD')).balance;
  return { merchant, customer, event, record, balance };
}

const TIERS_2_1 = { tiers: [{ upTo: 100, unitPrice: '2' }, { upTo: null, unitPrice: '1' }] };
const VOLUME_1_05 = { tiers: [{ upTo: 100, unitPrice: '1' }, { upTo: null, unitPrice: '0.5' }] };
const nanos = (text: string) => parseDecimalNanos('x', text);

describe('tiers count the units of their own rule', () => {
  it("a GRADUATED rule for one model does not start from units another model's rule priced on the same meter", async () => {
    const t = await setup([
      { name: 'a tiers', type: 'GRADUATED', model: 'model-a', config: TIERS_2_1 },
      { name: 'b flat', type: 'FLAT', model: 'model-b', config: { unitPrice: '1' } },
    ]);
    expect(await t.record(t.event('model-b', 100))).toEqual(['100.00']);
    expect(await t.record(t.event('model-a', 10))).toEqual(['20.00']);
    expect(await t.balance()).toBe(nanos('1000') - nanos('120'));
  });

  it("a VOLUME rule for one model neither starts from nor refunds what another model's rule charged", async () => {
    const t = await setup([
      { name: 'a tiers', type: 'VOLUME', model: 'model-a', config: VOLUME_1_05 },
      { name: 'b flat', type: 'FLAT', model: 'model-b', config: { unitPrice: '1' } },
    ]);
    expect(await t.record(t.event('model-b', 100))).toEqual(['100.00']);
    expect(await t.record(t.event('model-a', 10))).toEqual(['10.00']);
    // Its own units reach the cheaper tier: 110 at 0.5 is 55, of which 10 was paid.
    expect(await t.record(t.event('model-a', 100))).toEqual(['45.00']);
    expect(await t.balance()).toBe(nanos('1000') - nanos('155'));
  });

  it("a plan's VOLUME rule after a mid-month plan change starts from its own units, not the default book's", async () => {
    // Both rules are named alike: the book tells their totals apart.
    const t = await setup([
      { name: 'out', type: 'FLAT', config: { unitPrice: '1' } },
      { name: 'out', type: 'VOLUME', planKey: 'pro', config: VOLUME_1_05 },
    ]);
    expect(await t.record(t.event('m', 100, new Date('2026-06-10T00:00:00Z')))).toEqual(['100.00']);
    await server.services.plans.assign(t.merchant.id, t.customer.id, 'pro', new Date('2026-06-12T00:00:00Z'));
    expect(await t.record(t.event('m', 10, new Date('2026-06-15T00:00:00Z')))).toEqual(['10.00']);
    expect(await t.balance()).toBe(nanos('1000') - nanos('110'));
  });

  it('two tiered rules on one meter each count only their own units, within a batch and across batches', async () => {
    const t = await setup([
      { name: 'a tiers', type: 'GRADUATED', model: 'model-a', config: TIERS_2_1 },
      { name: 'b tiers', type: 'GRADUATED', model: 'model-b', config: { tiers: [{ upTo: 50, unitPrice: '3' }, { upTo: null, unitPrice: '1' }] } },
    ]);
    // b: 50 × 3 + 10 × 1; a: 10 × 2; b: 10 × 1.
    expect(await t.record(t.event('model-b', 60), t.event('model-a', 10), t.event('model-b', 10))).toEqual(['160.00', '20.00', '10.00']);
    // a: 90 × 2 + 10 × 1 (its total 10 → 110); b: 70 → 75.
    expect(await t.record(t.event('model-a', 100), t.event('model-b', 5))).toEqual(['190.00', '5.00']);
    const totals = await server.services.prisma.usagePeriodTotal.findMany({ where: { customerId: t.customer.id }, orderBy: { ruleName: 'asc' } });
    expect(totals.map((row) => [row.meterKey, row.priceBook, row.ruleName, row.quantity.toFixed()])).toEqual([['out', '', 'a tiers', '110'], ['out', '', 'b tiers', '75']]);
    // Units no rule prices count in no total.
    expect(await t.record(t.event('model-c', 1000))).toEqual(['0.00']);
    expect(await server.services.prisma.usagePeriodTotal.count({ where: { customerId: t.customer.id } })).toBe(2);
  });

  it("a new version of a rule continues the rule's count within the period; the next period starts again", async () => {
    const t = await setup([{ name: 'a tiers', type: 'GRADUATED', model: 'model-a', config: TIERS_2_1 }]);
    expect(await t.record(t.event('model-a', 80, new Date('2026-06-05T00:00:00Z')))).toEqual(['160.00']);
    await server.services.priceRules.put(t.merchant.id, { name: 'a tiers', type: 'GRADUATED', meterKey: 'out', model: 'model-a', config: { tiers: [{ upTo: 100, unitPrice: '4' }, { upTo: null, unitPrice: '1' }] }, effectiveFrom: new Date('2026-06-10T00:00:00Z') });
    // From 80: 20 × 4 + 20 × 1, not 40 × 4 from zero.
    expect(await t.record(t.event('model-a', 40))).toEqual(['100.00']);
    // A late event of May counts in May, from zero, at May's version.
    expect(await t.record(t.event('model-a', 10, new Date('2026-05-20T00:00:00Z')))).toEqual(['20.00']);
  });

  it('a VOLUME credit is limited to what the same rule charged in the period, not what the meter was charged', async () => {
    const t = await setup([
      { name: 'a tiers', type: 'VOLUME', model: 'model-a', config: VOLUME_1_05 },
      { name: 'b flat', type: 'FLAT', model: 'model-b', config: { unitPrice: '1' } },
    ]);
    expect(await t.record(t.event('model-b', 100))).toEqual(['100.00']);
    // A total the rule did not charge for itself, as one carried over by the migration to per-rule totals.
    await server.services.prisma.usagePeriodTotal.create({
      data: { merchantId: t.merchant.id, customerId: t.customer.id, currency: 'USD', meterKey: 'out', periodStart: new Date('2026-06-01T00:00:00Z'), priceBook: '', ruleName: 'a tiers', quantity: 100 },
    });
    // 110 at 0.5 is 55, 45 less than 100 at 1: but 'a tiers' charged nothing this month, so nothing comes back.
    expect(await t.record(t.event('model-a', 10))).toEqual(['0.00']);
    expect(await t.balance()).toBe(nanos('1000') - nanos('100'));
  });
});

describe('quote (the gateway reservation) aggregates each meter as recording does', () => {
  it('a COUNT meter is quoted once per call and a MAX meter at the call’s peak, not per token', async () => {
    const { services } = server;
    const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
    await services.meters.create(merchant.id, { key: 'calls', name: 'Calls', unit: 'call', source: 'OUTPUT_TOKENS', aggregation: 'COUNT' });
    await services.meters.create(merchant.id, { key: 'peak', name: 'Peak', unit: 'token', source: 'INPUT_TOKENS', aggregation: 'MAX' });
    await services.priceRules.put(merchant.id, { name: 'per-call', type: 'FLAT', meterKey: 'calls', config: { unitPrice: '0.01' }, effectiveFrom: SINCE });
    await services.priceRules.put(merchant.id, { name: 'peak', type: 'FLAT', meterKey: 'peak', config: { unitPrice: '0.001' }, effectiveFrom: SINCE });
    const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
    await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '100'), kind: 'PAID', idempotencyKey: 'seed' });
    const usage = { provider: 'custom', model: 'm', inputTokens: 50, outputTokens: 4096 };
    const quoted = await services.usage.quote(merchant.id, blankUsage({ ...usage, requests: 1 }), customer.id);
    const [recorded] = await services.usage.record(merchant.id, SYSTEM_ACTOR, [{ customer: customer.id, idempotencyKey: 'first', usage }]);
    expect(recorded!.ok && recorded!.event.charge).toBe('0.06');
    expect(quoted.chargeAttos).toBe(60_000_000_000_000_000n);
  });
});
