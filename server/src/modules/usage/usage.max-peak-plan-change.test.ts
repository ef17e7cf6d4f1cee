import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import type { UsageResult } from './usage.service.ts';

/**
 * A MAX meter (seats) is charged on increases of the customer's peak in the period. The peak is
 * the customer's, whichever book priced it: a mid-month plan change must not charge the same seats
 * again under the new plan, nor moving back under the old one. A SUM meter's tiers, by contrast,
 * count each book's own units (each unit is charged once, by the book in force when it was used).
 */
const START = new Date('2026-06-10T12:00:00Z');
const SINCE = new Date('2026-01-01T00:00:00Z');
const HOUR = 3_600_000;
let now = START;
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

const SET_PLAN = `mutation ($customerId: ID!, $planKey: String) { setCustomerPlan(customerId: $customerId, planKey: $planKey) { id } }`;

/** Plans "a" (seats at 10) and "b" (seats at 12), a customer on "a" holding 1,000 USD. */
async function setup() {
  now = START;
  const { services } = server;
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  await services.meters.create(merchant.id, { key: 'seats', name: 'Seats', unit: 'seat', source: 'QUANTITY', aggregation: 'MAX' });
  await services.meters.create(merchant.id, { key: 'tokens', name: 'Tokens', unit: 'token', source: 'QUANTITY' });
  for (const [key, seatPrice] of [['a', '10'], ['b', '12']] as const) {
    await services.plans.put(merchant.id, { key, name: key.toUpperCase() });
    await services.priceRules.put(merchant.id, { name: 'seats', type: 'FLAT', meterKey: 'seats', planKey: key, config: { unitPrice: seatPrice }, effectiveFrom: SINCE });
    // Ten free tokens a month, then 1 each.
    await services.priceRules.put(merchant.id, {
      name: 'tokens', type: 'GRADUATED', meterKey: 'tokens', planKey: key, config: { tiers: [{ upTo: 10, unitPrice: '0' }, { upTo: null, unitPrice: '1' }] }, effectiveFrom: SINCE,
    });
  }
  const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  await services.plans.assign(merchant.id, customer.id, 'a', SINCE);
  await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '1000'), kind: 'PAID', idempotencyKey: 'seed' });
  const event = (quantities: Record<string, number>, timestamp?: Date) => ({ customer: customer.id, idempotencyKey: randomUUID(), quantities, timestamp: timestamp ?? null });
  /** Records the events as one batch; answers each one's charge. */
  const record = async (...events: ReturnType<typeof event>[]) =>
    (await services.usage.record(merchant.id, SYSTEM_ACTOR, events)).map((result: UsageResult) => (result.ok ? result.event.charge : result.error.message));
  /** setCustomerPlan from now, an hour on. */
  const moveTo = async (planKey: string | null) => {
    now = new Date(now.getTime() + HOUR);
    const result = await server.graphql(SET_PLAN, { customerId: customer.id, planKey }, merchant.secret);
    expect(result.errors).toBeUndefined();
    now = new Date(now.getTime() + HOUR);
  };
  const balance = async () => (await services.ledgerQueries.wallet(merchant.id, customer.id, 'USD')).balance;
  return { merchant, customer, event, record, moveTo, balance };
}

const nanos = (text: string) => parseDecimalNanos('x', text);

describe("a MAX meter's peak spans the plans of the period", () => {
  it('charges the new plan only for seats above the peak of the month so far; moving back charges nothing; the next month starts afresh', async () => {
    const t = await setup();
    expect(await t.record(t.event({ seats: 5 }))).toEqual(['50.00']);

    await t.moveTo('b');
    // The same 5 seats, already paid for this month under "a".
    expect(await t.record(t.event({ seats: 5 }))).toEqual(['0.00']);
    // 2 seats above the month's peak, at "b"'s price.
    expect(await t.record(t.event({ seats: 7 }))).toEqual(['24.00']);

    await t.moveTo('a');
    // 7 seats were paid for this month (5 under "a", 2 under "b").
    expect(await t.record(t.event({ seats: 7 }), t.event({ seats: 6 }))).toEqual(['0.00', '0.00']);
    expect(await t.record(t.event({ seats: 8 }))).toEqual(['10.00']);

    // July starts from nothing, whatever June's peak was.
    now = new Date('2026-07-01T00:30:00Z');
    expect(await t.record(t.event({ seats: 5 }))).toEqual(['50.00']);
    expect(await t.balance()).toBe(nanos('1000') - nanos('50') - nanos('24') - nanos('10') - nanos('50'));
  });

  it('counts one peak across the books within one batch, late events included', async () => {
    const t = await setup();
    await t.moveTo('b');
    const onA = new Date(START.getTime() - HOUR);
    // In batch order: 5 under "a", then 7 under "b" (2 above the peak), then a late 6 under "a" (below it).
    expect(await t.record(t.event({ seats: 5 }, onA), t.event({ seats: 7 }), t.event({ seats: 6 }, onA))).toEqual(['50.00', '24.00', '0.00']);
    expect(await t.record(t.event({ seats: 9 }, onA))).toEqual(['20.00']);
    expect(await t.balance()).toBe(nanos('1000') - nanos('94'));
  });

  it("a new version of the new plan's VOLUME rule does not re-price seats the old plan charged", async () => {
    const t = await setup();
    // "b"'s seats become VOLUME (another kind: a version that re-prices from what the rule charged) from June 10.
    await server.services.priceRules.put(t.merchant.id, {
      name: 'seats', type: 'VOLUME', meterKey: 'seats', planKey: 'b', config: { tiers: [{ upTo: null, unitPrice: '12' }] }, effectiveFrom: START,
    });
    expect(await t.record(t.event({ seats: 5 }))).toEqual(['50.00']);
    await t.moveTo('b');
    // 7 seats at 12, less the 5 at 12 that "a" already charged for: not all 7.
    expect(await t.record(t.event({ seats: 7 }))).toEqual(['24.00']);
  });

  it("leaves SUM meters as they were: each plan's tiers count the units that plan priced", async () => {
    const t = await setup();
    expect(await t.record(t.event({ tokens: 12 }))).toEqual(['2.00']);
    await t.moveTo('b');
    // "b"'s ten free tokens are its own: units are charged once, by the plan in force when used.
    expect(await t.record(t.event({ tokens: 12 }))).toEqual(['2.00']);
    await t.moveTo('a');
    expect(await t.record(t.event({ tokens: 1 }))).toEqual(['1.00']);
  });
});
