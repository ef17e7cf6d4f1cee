import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import type { UsageResult } from '../usage/usage.service.ts';

/**
 * Usage may be stamped up to 5 minutes ahead of the clock, so even a plan change "from now" can
 * find usage already priced at or after now. No charged event changes plan: a change with an
 * effectiveFrom at or before such usage is refused; one "from now" takes effect a millisecond
 * after it (see PlanService.assign).
 */
const now = new Date('2026-03-01T00:02:00Z');
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());
const SINCE = new Date('2024-01-01T00:00:00Z');

async function setup() {
  const { services } = server;
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  await services.meters.create(merchant.id, { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
  await services.priceRules.put(merchant.id, { name: 'out', type: 'FLAT', meterKey: 'out', config: { unitPrice: '1' }, effectiveFrom: SINCE });
  await services.plans.put(merchant.id, { key: 'pro', name: 'Pro' });
  await services.priceRules.put(merchant.id, { name: 'out', type: 'FLAT', meterKey: 'out', planKey: 'pro', config: { unitPrice: '2' }, effectiveFrom: SINCE });
  const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '1000'), kind: 'PAID', idempotencyKey: 'seed' });
  const event = (outputTokens: number, timestamp: Date | null, key = randomUUID()) => ({ customer: customer.id, idempotencyKey: key, usage: { provider: 'custom', model: 'm', outputTokens }, timestamp });
  const record = async (...events: ReturnType<typeof event>[]) =>
    (await services.usage.record(merchant.id, SYSTEM_ACTOR, events)).map((r: UsageResult) => (r.ok ? r.event.charge : r.error.code));
  const history = async () =>
    (await services.prisma.customerPlan.findMany({ where: { customerId: customer.id }, orderBy: { effectiveFrom: 'asc' }, include: { plan: true } })).map((row) => [row.effectiveFrom.toISOString(), row.plan?.key ?? null]);
  return { merchant, customer, event, record, history };
}

describe('a plan change "from now" while usage up to 5 minutes ahead is already priced', () => {
  it('takes effect just after that usage, so no charged event changes plan; the same change with effectiveFrom = now is refused', async () => {
    const t = await setup();
    const ahead = new Date(now.getTime() + 120_000);
    expect(await t.record(t.event(1, ahead))).toEqual(['1.00']);
    await expect(server.services.plans.assign(t.merchant.id, t.customer.id, 'pro', now)).rejects.toMatchObject({ code: 'VALIDATION' });
    const implicit = await server.services.plans.assign(t.merchant.id, t.customer.id, 'pro').then(() => 'accepted', (e: { code?: string }) => e.code);
    const sameInstant = await t.record(t.event(1, ahead));
    const justAfter = await t.record(t.event(1, new Date(ahead.getTime() + 1)));
    expect({ implicit, sameInstant, justAfter }).toEqual({ implicit: 'accepted', sameInstant: ['1.00'], justAfter: ['2.00'] });
    expect(await t.history()).toEqual([[new Date(ahead.getTime() + 1).toISOString(), 'pro']]);
  });

  it('a second change "from now" in the same window follows the first a millisecond later, and is not refused', async () => {
    const t = await setup();
    const ahead = new Date(now.getTime() + 60_000);
    expect(await t.record(t.event(1, ahead))).toEqual(['1.00']);
    await server.services.plans.assign(t.merchant.id, t.customer.id, 'pro');
    await server.services.plans.assign(t.merchant.id, t.customer.id, null);
    expect(await t.history()).toEqual([
      [new Date(ahead.getTime() + 1).toISOString(), 'pro'],
      [new Date(ahead.getTime() + 2).toISOString(), null],
    ]);
    // Usage at or before now only (the common case): "from now" is now.
    const other = await setup();
    expect(await other.record(other.event(1, new Date(now.getTime() - 60_000)), other.event(1, now))).toEqual(['1.00', '1.00']);
    await server.services.plans.assign(other.merchant.id, other.customer.id, 'pro');
    expect(await other.history()).toEqual([[new Date(now.getTime() + 1).toISOString(), 'pro']]);
  });
});
