import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalAttos, parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import type { StoredChargeLine } from './usage.pricing.ts';
import { blankUsage } from './usage.types.ts';

/**
 * Usage priced under customers' plans, end to end: the plan in force at each event's time wins
 * for what its rules cover, the default book prices the rest, and the ledger moves by exactly that.
 */
const now = new Date('2026-06-15T12:00:00Z');
const SINCE = new Date('2026-01-01T00:00:00Z');
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

const RECORD = `mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { chargeError { code } event { id status cost charge margin } } }`;
/** 1,000 input and 500 output tokens at $1 / $2 per million: a cost of exactly $0.002. */
const USAGE = { provider: 'acme', model: 'm1', inputTokens: 1000, outputTokens: 500 };
/** Default book: 25% markup ($0.0025) + $0.001 a request + $0.00002 an output token ($0.01). */
const DEFAULT_CHARGE = '0.0135';
/** Plan "pro": 10% markup ($0.0022) + the default's $0.001 a request + $0.00001 an output token ($0.005). */
const PRO_CHARGE = '0.0082';

async function setup() {
  const { services } = server;
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  await services.providerPrices.add(merchant.id, { provider: 'acme', model: 'm1', perMillionTokens: { input: '1.00', output: '2.00' }, effectiveFrom: SINCE });
  await services.meters.create(merchant.id, { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
  await services.meters.create(merchant.id, { key: 'requests', name: 'Requests', unit: 'request', source: 'REQUESTS' });
  const rule = (name: string, type: 'MARKUP' | 'FLAT', config: Record<string, unknown>, meterKey: string | null, planKey: string | null = null) =>
    services.priceRules.put(merchant.id, { name, type, config, meterKey, planKey, effectiveFrom: SINCE });
  const defaults = {
    markup: await rule('markup', 'MARKUP', { percent: '25' }, null),
    requests: await rule('requests', 'FLAT', { unitPrice: '0.001' }, 'requests'),
    output: await rule('output', 'FLAT', { unitPrice: '0.00002' }, 'out'),
  };
  const pro = await services.plans.put(merchant.id, { key: 'pro', name: 'Pro' });
  const proRules = {
    markup: await rule('markup', 'MARKUP', { percent: '10' }, null, 'pro'),
    output: await rule('output', 'FLAT', { unitPrice: '0.00001' }, 'out', 'pro'),
  };
  const customer = async () => {
    const created = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
    await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: created.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '10.00'), kind: 'PAID', idempotencyKey: `seed-${created.id}` });
    return created;
  };
  const record = async (customerId: string, timestamp?: Date) => {
    const result = await server.graphql<any>(RECORD, { input: { customer: customerId, idempotencyKey: randomUUID(), usage: USAGE, ...(timestamp ? { timestamp: timestamp.toISOString() } : {}) } }, merchant.secret);
    expect(result.errors).toBeUndefined();
    return result.data.recordUsage.event as { id: string; status: string; cost: string; charge: string; margin: string };
  };
  const balance = async (customerId: string) => (await services.ledgerQueries.wallet(merchant.id, customerId, 'USD')).balance;
  const stored = (eventId: string) => services.prisma.usageEvent.findUniqueOrThrow({ where: { id: eventId } });
  return { merchant, pro, defaults, proRules, customer, record, balance, stored };
}

const nanos = (text: string) => parseDecimalNanos('x', text);

describe('usage priced under a plan', () => {
  it("charges a customer on a plan by the plan's rules, and the default book for what the plan does not cover", async () => {
    const t = await setup();
    const onPro = await t.customer();
    const onDefault = await t.customer();
    await server.services.plans.assign(t.merchant.id, onPro.id, 'pro');

    const proEvent = await t.record(onPro.id);
    expect(proEvent).toMatchObject({ status: 'CHARGED', cost: '0.002', charge: PRO_CHARGE, margin: '0.0062' });
    expect(await t.balance(onPro.id)).toBe(nanos('10.00') - nanos(PRO_CHARGE));
    const defaultEvent = await t.record(onDefault.id);
    expect(defaultEvent).toMatchObject({ status: 'CHARGED', cost: '0.002', charge: DEFAULT_CHARGE });
    expect(await t.balance(onDefault.id)).toBe(nanos('10.00') - nanos(DEFAULT_CHARGE));

    // The event records the rules that priced it: the plan's where it won, the default book's elsewhere.
    const row = await t.stored(proEvent.id);
    expect(row.priceRuleId).toBe(t.proRules.markup.id);
    // Each line names the rule version ([ruleId, chargeAttos] or, for a meter, with its quantity).
    const lines = (row.metadata as { pricing: StoredChargeLine[] }).pricing;
    expect([...lines].sort((a, b) => String(a[0]).localeCompare(String(b[0])))).toEqual([
      [t.proRules.markup.id, parseDecimalAttos('x', '0.0022').toString()],
      [t.proRules.output.id, parseDecimalAttos('x', '0.005').toString(), '500'],
      [t.defaults.requests.id, parseDecimalAttos('x', '0.001').toString(), '1'],
    ].sort((a, b) => String(a[0]).localeCompare(String(b[0]))));
    expect([t.proRules.markup.planId, t.proRules.output.planId, t.defaults.requests.planId]).toEqual([t.pro.id, t.pro.id, null]);
    expect((await t.stored(defaultEvent.id)).priceRuleId).toBe(t.defaults.markup.id);
  });

  it('prices a late event by the plan the customer was on at its time', async () => {
    const t = await setup();
    const customer = await t.customer();
    await server.services.plans.assign(t.merchant.id, customer.id, 'pro'); // from now
    const late = await t.record(customer.id, new Date('2026-06-10T00:00:00Z'));
    expect(late.charge).toBe(DEFAULT_CHARGE);
    const current = await t.record(customer.id);
    expect(current.charge).toBe(PRO_CHARGE);
    expect(await t.balance(customer.id)).toBe(nanos('10.00') - nanos(DEFAULT_CHARGE) - nanos(PRO_CHARGE));
  });

  it('follows a history of plan changes, back to the default book included, within one batch', async () => {
    const t = await setup();
    const customer = await t.customer();
    await server.services.plans.assign(t.merchant.id, customer.id, 'pro', new Date('2026-06-01T00:00:00Z'));
    await server.services.plans.assign(t.merchant.id, customer.id, null, new Date('2026-06-12T00:00:00Z'));
    const at = ['2026-05-20', '2026-06-05', '2026-06-13'].map((day) => new Date(`${day}T00:00:00Z`));
    const results = await server.services.usage.record(t.merchant.id, SYSTEM_ACTOR, at.map((timestamp) => ({ customer: customer.id, idempotencyKey: randomUUID(), usage: USAGE, timestamp })));
    expect(results.map((result) => (result.ok ? result.event.charge : result.error.message))).toEqual([DEFAULT_CHARGE, PRO_CHARGE, DEFAULT_CHARGE]);
    expect(await t.balance(customer.id)).toBe(nanos('10.00') - 2n * nanos(DEFAULT_CHARGE) - nanos(PRO_CHARGE));
  });

  it('an archived plan keeps pricing the customers already on it', async () => {
    const t = await setup();
    const customer = await t.customer();
    await server.services.plans.assign(t.merchant.id, customer.id, 'pro');
    await server.services.plans.archive(t.merchant.id, 'pro');
    expect((await t.record(customer.id)).charge).toBe(PRO_CHARGE);
  });

  it("a new version of a plan's rule prices from its effectiveFrom; the default book's rule of the same name is untouched", async () => {
    const t = await setup();
    const customer = await t.customer();
    await server.services.plans.assign(t.merchant.id, customer.id, 'pro', SINCE);
    await server.services.priceRules.put(t.merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '50' }, planKey: 'pro', effectiveFrom: new Date('2026-06-01T00:00:00Z') });
    // 0.002 × 1.5 + 0.001 + 0.005; in May the 10% version still applies.
    expect((await t.record(customer.id)).charge).toBe('0.009');
    expect((await t.record(customer.id, new Date('2026-05-15T00:00:00Z'))).charge).toBe(PRO_CHARGE);
    const other = await t.customer();
    expect((await t.record(other.id)).charge).toBe(DEFAULT_CHARGE);
  });

  it("quotes by the customer's plan when given the customer, by the default book otherwise", async () => {
    const t = await setup();
    const customer = await t.customer();
    await server.services.plans.assign(t.merchant.id, customer.id, 'pro');
    const usage = blankUsage({ ...USAGE, requests: 1 });
    expect((await server.services.usage.quote(t.merchant.id, usage, customer.id)).chargeAttos).toBe(parseDecimalAttos('x', PRO_CHARGE));
    expect((await server.services.usage.quote(t.merchant.id, usage)).chargeAttos).toBe(parseDecimalAttos('x', DEFAULT_CHARGE));
  });
});
