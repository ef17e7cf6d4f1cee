import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalAttos, parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { BatchPeriodCredits } from './usage.credits.ts';
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

async function setup(rules: RuleSpec[], credit = '1000') {
  const { services } = server;
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  await services.meters.create(merchant.id, { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
  if (rules.some((rule) => rule.planKey)) await services.plans.put(merchant.id, { key: 'pro', name: 'Pro' });
  for (const { name, type, model, planKey, config, effectiveFrom } of rules) {
    await services.priceRules.put(merchant.id, { name, type, meterKey: 'out', model: model ?? null, planKey: planKey ?? null, config, effectiveFrom: effectiveFrom ?? SINCE });
  }
  const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', credit), kind: 'PAID', idempotencyKey: 'seed' });
  const event = (model: string, outputTokens: number, timestamp?: Date) => ({
    customer: customer.id, idempotencyKey: randomUUID(), usage: { provider: 'custom', model, outputTokens }, timestamp: timestamp ?? null,
  });
  /** Records the events as one batch; answers each one's charge. */
  const record = async (...events: ReturnType<typeof event>[]) =>
    (await services.usage.record(merchant.id, SYSTEM_ACTOR, events)).map((result: UsageResult) => (result.ok ? result.event.charge : result.error.message));
  /** As record, answering each event's status, charge, shortfall and what of a credit settled shortfalls. */
  const recordViews = async (...events: ReturnType<typeof event>[]) =>
    (await services.usage.record(merchant.id, SYSTEM_ACTOR, events)).map((result: UsageResult) =>
      (result.ok ? { status: result.event.status, charge: result.event.charge, shortfall: result.event.shortfall, shortfallSettled: result.event.shortfallSettled } : result.error.message));
  const balance = async () => (await services.ledgerQueries.wallet(merchant.id, customer.id, 'USD')).balance;
  /** A new version of a rule on meter `out` from `effectiveFrom`. */
  const version = (name: string, type: RuleSpec['type'], config: Record<string, unknown>, effectiveFrom: Date) =>
    services.priceRules.put(merchant.id, { name, type, meterKey: 'out', config, effectiveFrom });
  return { merchant, customer, event, record, recordViews, balance, version };
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

const JUNE_5 = new Date('2026-06-05T00:00:00Z');
const JUNE_10 = new Date('2026-06-10T00:00:00Z');
const JUNE_12 = new Date('2026-06-12T00:00:00Z');
/** VOLUME_1_05 at twice the price. */
const VOLUME_2_1 = { tiers: [{ upTo: 100, unitPrice: '2' }, { upTo: null, unitPrice: '1' }] };
/** VOLUME_1_05 at half the price. */
const VOLUME_05_025 = { tiers: [{ upTo: 100, unitPrice: '0.5' }, { upTo: null, unitPrice: '0.25' }] };

/**
 * A new version of a VOLUME rule carries on from the rule's count and prices the month's units at
 * its own rates: an event is charged the version's price of the month's units after it, less what
 * the rule (every version of it) charged in the month so far. So the customer has always paid the
 * volume price of its month under the version in force, and what comes back is at most what was charged.
 */
describe('a new version of a VOLUME rule within the month', () => {
  it('that raises prices charges the new price of the month less what was charged, never a credit', async () => {
    const t = await setup([{ name: 'v', type: 'VOLUME', config: VOLUME_1_05 }]);
    expect(await t.record(t.event('m', 100, JUNE_5))).toEqual(['100.00']);
    await t.version('v', 'VOLUME', VOLUME_2_1, JUNE_10);
    // 110 units in the new version's second tier: 110 × 1 = 110.00, of which 100.00 was charged.
    // (Priced from the new version's price of the 100 earlier units, 200.00, it was −90.00.)
    expect(await t.record(t.event('m', 10))).toEqual(['10.00']);
    // In one batch each event counts the ones before it: 120 × 1 − 110, then 130 × 1 − 120.
    expect(await t.record(t.event('m', 10), t.event('m', 10))).toEqual(['10.00', '10.00']);
    expect(await t.balance()).toBe(nanos('1000') - nanos('130'));
    // A late event of May is priced by May's only version, from May's own (empty) count.
    expect(await t.record(t.event('m', 10, new Date('2026-05-20T00:00:00Z')))).toEqual(['10.00']);
  });

  it("re-prices the month's earlier units at the raised price when the total stays in its tier", async () => {
    const t = await setup([{ name: 'v', type: 'VOLUME', config: VOLUME_1_05 }]);
    expect(await t.record(t.event('m', 50, JUNE_5))).toEqual(['50.00']);
    await t.version('v', 'VOLUME', VOLUME_2_1, JUNE_10);
    // 60 units at 2 is 120.00; 50.00 was charged.
    expect(await t.record(t.event('m', 10))).toEqual(['70.00']);
    expect(await t.balance()).toBe(nanos('1000') - nanos('120'));
  });

  it('that lowers prices gives back what was charged above the new price of the month, never more', async () => {
    const t = await setup([{ name: 'v', type: 'VOLUME', config: VOLUME_1_05 }]);
    expect(await t.record(t.event('m', 100, JUNE_5))).toEqual(['100.00']);
    await t.version('v', 'VOLUME', VOLUME_05_025, JUNE_10);
    await t.version('v', 'VOLUME', { tiers: [{ upTo: null, unitPrice: '0' }] }, JUNE_12);
    // 110 × 0.25 = 27.50; 100.00 was charged. (From the new version's price of 100, 50.00: −22.50.)
    expect(await t.record(t.event('m', 10, new Date('2026-06-11T00:00:00Z')))).toEqual(['-72.50']);
    // Free from the 12th: everything charged comes back, and no more.
    expect(await t.record(t.event('m', 10))).toEqual(['-27.50']);
    expect(await t.balance()).toBe(nanos('1000'));
  });

  it('that changes the kind (FLAT to VOLUME) starts from what the FLAT version charged', async () => {
    const t = await setup([{ name: 'v', type: 'FLAT', config: { unitPrice: '1' } }]);
    expect(await t.record(t.event('m', 100, JUNE_5))).toEqual(['100.00']);
    await t.version('v', 'VOLUME', VOLUME_2_1, JUNE_10);
    // 110 × 1 − 100 (the new version prices the 100 earlier units at 200.00: −90.00 before).
    expect(await t.record(t.event('m', 10))).toEqual(['10.00']);
    expect(await t.balance()).toBe(nanos('1000') - nanos('110'));
  });

  it('counts what was priced, not what was paid: a shortfall stays owed once, and a give-back settles it first', async () => {
    const raised = await setup([{ name: 'v', type: 'VOLUME', config: VOLUME_1_05 }], '60');
    expect(await raised.recordViews(raised.event('m', 100, JUNE_5))).toEqual([{ status: 'PARTIALLY_CHARGED', charge: '60.00', shortfall: '40.00', shortfallSettled: '0.00' }]);
    await raised.version('v', 'VOLUME', VOLUME_2_1, JUNE_10);
    // Priced 110 − 100 = 10.00 (not 110 − 60: the 40.00 is already owed), and nothing is left to pay it.
    expect(await raised.recordViews(raised.event('m', 10))).toEqual([{ status: 'UNCHARGED', charge: '0.00', shortfall: '10.00', shortfallSettled: '0.00' }]);
    expect(await raised.balance()).toBe(0n);

    const lowered = await setup([{ name: 'v', type: 'VOLUME', config: VOLUME_1_05 }], '60');
    expect(await lowered.recordViews(lowered.event('m', 100, JUNE_5))).toEqual([{ status: 'PARTIALLY_CHARGED', charge: '60.00', shortfall: '40.00', shortfallSettled: '0.00' }]);
    await lowered.version('v', 'VOLUME', VOLUME_05_025, JUNE_10);
    // 110 × 0.25 − 100 = −72.50: 40.00 settles the shortfall, 32.50 comes back. Paid in all: 27.50, the month's price.
    expect(await lowered.recordViews(lowered.event('m', 10))).toEqual([{ status: 'CHARGED', charge: '-32.50', shortfall: '0.00', shortfallSettled: '40.00' }]);
    expect(await lowered.balance()).toBe(nanos('32.50'));
  });

  it('that moves the rule to another meter starts from what it charged for that meter alone', async () => {
    const t = await setup([{ name: 'v', type: 'VOLUME', config: VOLUME_1_05 }]);
    await server.services.meters.create(t.merchant.id, { key: 'in', name: 'Input tokens', unit: 'token', source: 'INPUT_TOKENS' });
    expect(await t.record(t.event('m', 100, JUNE_5))).toEqual(['100.00']);
    await server.services.priceRules.put(t.merchant.id, { name: 'v', type: 'VOLUME', meterKey: 'in', config: VOLUME_1_05, effectiveFrom: JUNE_10 });
    // The input meter's count starts at 10: 10 × 1, not 10 less the 100.00 charged for output tokens.
    const [result] = await server.services.usage.record(t.merchant.id, SYSTEM_ACTOR, [{ customer: t.customer.id, idempotencyKey: randomUUID(), usage: { provider: 'custom', model: 'm', inputTokens: 10 } }]);
    expect(result!.ok && result!.event.charge).toBe('10.00');
    expect(await t.balance()).toBe(nanos('1000') - nanos('110'));
  });

  it("reads the month's charges only when a line needs them, once per batch for all its periods", async () => {
    const reads = vi.spyOn(BatchPeriodCredits.prototype as unknown as { stored: (wanted: unknown[]) => Promise<unknown> }, 'stored');
    try {
      const t = await setup([{ name: 'v', type: 'VOLUME', config: VOLUME_1_05 }]);
      const MAY = new Date('2026-05-20T00:00:00Z');
      // One version all month, within a tier: nothing is read.
      expect(await t.record(t.event('m', 50, MAY), t.event('m', 40, MAY), t.event('m', 50, JUNE_5))).toEqual(['50.00', '40.00', '50.00']);
      expect(reads).not.toHaveBeenCalled();
      await t.version('v', 'VOLUME', VOLUME_2_1, JUNE_10);
      // June, which two versions priced, and May's move into its cheaper tier: one read for both.
      expect(await t.record(t.event('m', 10), t.event('m', 20, MAY), t.event('m', 10))).toEqual(['70.00', '-35.00', '20.00']);
      expect(reads).toHaveBeenCalledTimes(1);
      expect(reads.mock.calls[0]![0]).toHaveLength(2);
    } finally {
      reads.mockRestore();
    }
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

/**
 * The quote knows no period total (the gateway reads none), so it prices each tiered rule at the
 * most one event of its quantity can be charged whatever the total: a free allowance the customer
 * already used up is not quoted as free.
 */
describe('quote prices tiered rules at their most, whatever the period total', () => {
  const quoteOf = async (t: Awaited<ReturnType<typeof setup>>, outputTokens: number) =>
    (await server.services.usage.quote(t.merchant.id, blankUsage({ provider: 'custom', model: 'm', outputTokens, requests: 1 }), t.customer.id)).chargeAttos;
  const attos = (text: string) => parseDecimalAttos('x', text);

  it('GRADUATED: a free allowance then paid units, past the allowance', async () => {
    const t = await setup([{ name: 'g', type: 'GRADUATED', config: { tiers: [{ upTo: 1000, unitPrice: '0' }, { upTo: null, unitPrice: '0.01' }] } }]);
    expect(await t.record(t.event('m', 5000))).toEqual(['40.00']);
    const quoted = await quoteOf(t, 500);
    expect(await t.record(t.event('m', 500))).toEqual(['5.00']);
    expect(quoted).toBeGreaterThanOrEqual(attos('5.00'));
    expect(quoted).toBe(attos('5.00'));
  });

  it('VOLUME: dearer tiers above a free one re-price the allowance when the total leaves it', async () => {
    const t = await setup([{ name: 'v', type: 'VOLUME', config: { tiers: [{ upTo: 1000, unitPrice: '0' }, { upTo: null, unitPrice: '0.01', flatFee: '1' }] } }]);
    expect(await t.record(t.event('m', 1000))).toEqual(['0.00']);
    const quoted = await quoteOf(t, 1);
    // 1001 × 0.01 + 1.
    expect(await t.record(t.event('m', 1))).toEqual(['11.01']);
    expect(quoted).toBeGreaterThanOrEqual(attos('11.01'));
  });
});
