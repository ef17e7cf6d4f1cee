import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { createServices, type Services } from '../../services.ts';
import { createLogger } from '../../shared/logger.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { InMemoryPubSub } from '../../shared/pubsub.ts';
import { MAX_FUTURE_USAGE_MS } from '../../shared/times.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import type { UsageResult } from '../usage/usage.service.ts';
import { CANCELLABLE_AHEAD_MS } from './plans.service.ts';

/**
 * cancelScheduledPlanChange: a plan change not yet in force, and that nothing can have been priced
 * under, can be removed, so a mistaken date or a pending downgrade no longer blocks the next change.
 * The server's clock is set by each test (`now`); the plan caches' lifetimes run on real time.
 */
const START = new Date('2026-03-15T12:00:00.000Z');
let now = START;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const later = (ms: number) => new Date(now.getTime() + ms);

let server: TestServer;
/** Other instances on the same database: `peer` shares this server's PubSub (as instances share Redis); `deaf` gets none of its messages. */
let peer: Services;
let deaf: Services;
/** An instance whose clock runs 10 minutes ahead of the server's. */
let skewed: Services;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
  const instance = (pubsub: Services['pubsub'], clock: () => Date) =>
    createServices({ config: server.config, db: server.services.db, pubsub, logger: createLogger('silent'), clock });
  peer = instance(server.services.pubsub, () => now);
  deaf = instance(new InMemoryPubSub(), () => now);
  skewed = instance(server.services.pubsub, () => later(10 * MINUTE));
});
afterAll(async () => {
  for (const services of [peer, deaf, skewed]) await services?.stop();
  await server?.close();
});

const CANCEL = `mutation ($customerId: ID!) { cancelScheduledPlanChange(customerId: $customerId) { id plan { key } } }`;
const SET_PLAN = `mutation ($customerId: ID!, $planKey: String, $from: DateTime) { setCustomerPlan(customerId: $customerId, planKey: $planKey, effectiveFrom: $from) { id plan { key } } }`;
const errorOf = (result: { errors?: { message: string; extensions: Record<string, unknown> }[] }) => result.errors?.[0]?.extensions;
/** Waits for the other instances to take what was published (an in-memory PubSub delivers on the next ticks). */
const delivered = () => new Promise((resolve) => setTimeout(resolve, 20));

/** A merchant whose default book prices a call at 1.00, plan "pro" at 2.00 and plan "team" at 3.00, and a customer with credit. */
async function setup() {
  now = START;
  const { services } = server;
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  const gql = (query: string, variables?: Record<string, unknown>) => server.graphql<any>(query, variables, merchant.secret);
  const since = new Date('2026-01-01T00:00:00Z');
  await services.meters.create(merchant.id, { key: 'calls', name: 'Calls', unit: 'call', source: 'REQUESTS' });
  await services.priceRules.put(merchant.id, { name: 'calls', type: 'FLAT', meterKey: 'calls', config: { unitPrice: '1.00' }, effectiveFrom: since });
  for (const [key, unitPrice] of [['pro', '2.00'], ['team', '3.00']] as const) {
    await services.plans.put(merchant.id, { key, name: key });
    await services.priceRules.put(merchant.id, { name: 'calls', type: 'FLAT', meterKey: 'calls', planKey: key, config: { unitPrice }, effectiveFrom: since });
  }
  const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '10000'), kind: 'PAID', idempotencyKey: 'seed' });
  /** Records one call through `on` (this server by default), stamped `at` (default: that instance's now); answers its charge. */
  const record = async (at: Date | null = null, on: Services = services) => {
    const [result] = await on.usage.record(merchant.id, SYSTEM_ACTOR, [{ customer: customer.id, idempotencyKey: randomUUID(), usage: { provider: 'custom', model: 'm', requests: 1 }, timestamp: at }]);
    const answer: UsageResult = result!;
    return answer.ok ? answer.event.charge : answer.error.code;
  };
  const history = async () =>
    (await services.prisma.customerPlan.findMany({ where: { customerId: customer.id }, orderBy: { effectiveFrom: 'asc' }, include: { plan: true } })).map((row) => [row.effectiveFrom.toISOString(), row.plan?.key ?? null]);
  const cancel = (customerId = customer.id) => gql(CANCEL, { customerId });
  const setPlan = (planKey: string | null, from?: Date) => gql(SET_PLAN, { customerId: customer.id, planKey, from: from?.toISOString() });
  return { merchant, customer, gql, record, history, cancel, setPlan };
}

describe('cancelScheduledPlanChange', () => {
  it('cancels a far-future typo, and a pending downgrade, after which the customer can be put on another plan at once', async () => {
    const t = await setup();
    expect(errorOf(await t.setPlan('pro', new Date('2026-02-01T00:00:00Z')))).toBeUndefined();
    expect(errorOf(await t.setPlan('team', new Date('9999-12-31T00:00:00Z')))).toBeUndefined();
    // The typo locks the plan: every later change is refused.
    expect(errorOf(await t.setPlan(null))).toMatchObject({ code: 'VALIDATION', field: 'effectiveFrom' });

    const cancelled = await t.cancel();
    expect(cancelled.errors).toBeUndefined();
    expect(cancelled.data.cancelScheduledPlanChange).toEqual({ id: t.customer.id, plan: { key: 'pro' } });
    expect(await t.history()).toEqual([['2026-02-01T00:00:00.000Z', 'pro']]);
    // A change now is taken at once, and so is a new scheduled one.
    expect((await t.setPlan('team')).data.setCustomerPlan.plan).toEqual({ key: 'team' });

    // A pending downgrade (two changes scheduled: both go) no longer blocks an immediate upgrade.
    now = later(MINUTE);
    await t.setPlan(null, later(86_400_000));
    await t.setPlan('pro', later(2 * 86_400_000));
    expect(errorOf(await t.setPlan('pro'))).toMatchObject({ code: 'VALIDATION', field: 'effectiveFrom' });
    expect((await t.cancel()).data.cancelScheduledPlanChange.plan).toEqual({ key: 'team' });
    expect((await t.setPlan('pro')).data.setCustomerPlan.plan).toEqual({ key: 'pro' });
    expect(await t.history()).toEqual([
      ['2026-02-01T00:00:00.000Z', 'pro'],
      [START.toISOString(), 'team'],
      [now.toISOString(), 'pro'],
    ]);
    expect(await t.record()).toBe('2.00');
  });

  it('Customer.scheduledPlanChanges lists what is scheduled, soonest first, to the merchant and to the customer itself; a change in force or cancelled is gone from it', async () => {
    const t = await setup();
    const SCHEDULED = `query ($id: ID!) { customer(id: $id) { plan { key } scheduledPlanChanges { plan { key } effectiveFrom } } }`;
    const scheduled = async () => (await t.gql(SCHEDULED, { id: t.customer.id })).data.customer;
    expect(await scheduled()).toEqual({ plan: null, scheduledPlanChanges: [] });

    await t.setPlan('pro', later(10 * MINUTE));
    await t.setPlan(null, later(20 * MINUTE));
    await t.setPlan('team', new Date('9999-12-31T00:00:00Z'));
    expect(await scheduled()).toEqual({
      plan: null,
      scheduledPlanChanges: [
        { plan: { key: 'pro' }, effectiveFrom: later(10 * MINUTE).toISOString() },
        { plan: null, effectiveFrom: later(20 * MINUTE).toISOString() },
        { plan: { key: 'team' }, effectiveFrom: '9999-12-31T00:00:00.000Z' },
      ],
    });
    // The customer sees its own schedule (as it sees its plan): a downgrade ahead is something to show it.
    const session = await t.gql(`mutation ($id: ID!) { createCustomerSession(customerId: $id) { token } }`, { id: t.customer.id });
    const own = await server.graphql<any>('{ viewer { customer { scheduledPlanChanges { plan { key } } } } }', {}, session.data.createCustomerSession.token);
    expect(own.errors).toBeUndefined();
    expect(own.data.viewer.customer.scheduledPlanChanges.map((change: { plan: { key: string } | null }) => change.plan?.key ?? null)).toEqual(['pro', null, 'team']);

    // Once the first is in force, it is the plan, no longer scheduled.
    now = later(12 * MINUTE);
    expect(await scheduled()).toMatchObject({ plan: { key: 'pro' }, scheduledPlanChanges: [{ plan: null }, { plan: { key: 'team' } }] });
    // A page of customers reads its schedules in one query per merchant: each customer sees its own.
    const other = await server.services.customers.create(t.merchant.id, { externalId: `other-${randomUUID().slice(0, 8)}` });
    await t.gql(SET_PLAN, { customerId: other.id, planKey: 'team', from: later(HOUR).toISOString() });
    const page = await t.gql(`{ customers(first: 10) { edges { node { id scheduledPlanChanges { plan { key } } } } } }`);
    type Node = { id: string; scheduledPlanChanges: { plan: { key: string } | null }[] };
    expect(new Map(page.data.customers.edges.map(({ node }: { node: Node }) => [node.id, node.scheduledPlanChanges.map((change) => change.plan?.key ?? null)])))
      .toEqual(new Map([[t.customer.id, [null, 'team']], [other.id, ['team']]]));
    // Cancelled, nothing is scheduled.
    expect((await t.cancel()).errors).toBeUndefined();
    expect(await scheduled()).toEqual({ plan: { key: 'pro' }, scheduledPlanChanges: [] });
  });

  it('refuses a change due within the minutes usage may be stamped ahead, naming why, and removes nothing', async () => {
    const t = await setup();
    await t.setPlan('pro', later(3 * MINUTE));
    await t.setPlan('team', new Date('9999-12-31T00:00:00Z'));
    const refused = await t.cancel();
    expect(errorOf(refused)).toMatchObject({ code: 'CONFLICT', field: 'effectiveFrom', reason: 'PLAN_CHANGE_TAKING_EFFECT', effectiveFrom: later(3 * MINUTE).toISOString() });
    expect(refused.errors![0]!.message).toMatch(/"pro" from 2026-03-15T12:03:00.000Z takes effect within the 5 minutes ahead that usage may be timestamped/);
    // All or nothing: the far one stays too, until the near one is in force and the call is made again.
    expect(await t.history()).toEqual([[later(3 * MINUTE).toISOString(), 'pro'], ['9999-12-31T00:00:00.000Z', 'team']]);
    now = later(3 * MINUTE);
    expect((await t.cancel()).data.cancelScheduledPlanChange.plan).toEqual({ key: 'pro' });
    expect(await t.history()).toEqual([[now.toISOString(), 'pro']]);

    // The bound: past the ahead window (and a few seconds for other instances' caches), not within it.
    expect(CANCELLABLE_AHEAD_MS).toBeGreaterThan(MAX_FUTURE_USAGE_MS);
    await t.setPlan('team', later(CANCELLABLE_AHEAD_MS));
    expect(errorOf(await t.cancel())).toMatchObject({ code: 'CONFLICT', reason: 'PLAN_CHANGE_TAKING_EFFECT' });
    const next = await setup();
    await next.setPlan('team', later(CANCELLABLE_AHEAD_MS + 1));
    expect(errorOf(await next.cancel())).toBeUndefined();
    expect(await next.history()).toEqual([]);
  });

  it('refuses a change "from now" moved past usage stamped ahead: that usage is at its door', async () => {
    const t = await setup();
    expect(await t.record(later(2 * MINUTE))).toBe('1.00');
    await t.setPlan('pro');
    expect(await t.history()).toEqual([[later(2 * MINUTE + 1).toISOString(), 'pro']]);
    expect(errorOf(await t.cancel())).toMatchObject({ code: 'CONFLICT', field: 'effectiveFrom', reason: 'PLAN_CHANGE_TAKING_EFFECT' });
    expect(await t.history()).toHaveLength(1);
  });

  it('refuses a change that has already priced usage (stamped by an instance whose clock runs ahead), naming that usage', async () => {
    const t = await setup();
    const from = later(8 * MINUTE);
    await t.setPlan('pro', from);
    await t.setPlan('team', new Date('9999-12-31T00:00:00Z'));
    // The skewed instance's "now" is 10 minutes ahead: the scheduled "pro" is in force there.
    expect(await t.record(null, skewed)).toBe('2.00');
    const refused = await t.cancel();
    expect(errorOf(refused)).toMatchObject({
      code: 'CONFLICT', field: 'effectiveFrom', reason: 'PLAN_CHANGE_PRICED_USAGE', effectiveFrom: from.toISOString(), pricedAt: later(10 * MINUTE).toISOString(),
    });
    expect(refused.errors![0]!.message).toMatch(/has already priced usage \(the latest at 2026-03-15T12:10:00.000Z\)/);
    expect(await t.history()).toEqual([[from.toISOString(), 'pro'], ['9999-12-31T00:00:00.000Z', 'team']]);
  });

  it('is idempotent: with nothing scheduled it answers the customer unchanged', async () => {
    const t = await setup();
    expect((await t.cancel()).data.cancelScheduledPlanChange).toEqual({ id: t.customer.id, plan: null });
    await t.setPlan('pro', new Date('2026-02-01T00:00:00Z'));
    await t.setPlan('team', later(86_400_000));
    for (let i = 0; i < 2; i++) {
      const again = await t.cancel();
      expect(again.errors).toBeUndefined();
      expect(again.data.cancelScheduledPlanChange).toEqual({ id: t.customer.id, plan: { key: 'pro' } });
      expect(await t.history()).toEqual([['2026-02-01T00:00:00.000Z', 'pro']]);
    }
  });

  it("is NOT_FOUND for another merchant's customer (which keeps its schedule) or an unknown one, and FORBIDDEN to a customer session token", async () => {
    const a = await setup();
    const b = await setup();
    await a.setPlan('pro', new Date('9999-12-31T00:00:00Z'));
    for (const customerId of [a.customer.id, randomUUID(), 'not-an-id']) {
      expect(errorOf(await b.cancel(customerId)), customerId).toMatchObject({ code: 'NOT_FOUND' });
    }
    expect(await a.history()).toEqual([['9999-12-31T00:00:00.000Z', 'pro']]);
    const { token } = await server.services.customerSessions.create(a.merchant.id, a.customer.id, 600);
    expect(errorOf(await server.graphql(CANCEL, { customerId: a.customer.id }, token))).toMatchObject({ code: 'FORBIDDEN' });
    expect(await a.history()).toHaveLength(1);
  });

  it('usage after the cancel is priced by the plan in force, on this instance and on others, though each had cached the cancelled change', async () => {
    const t = await setup();
    await t.setPlan('pro', new Date('2026-02-01T00:00:00Z'));
    const from = later(10 * MINUTE);
    await t.setPlan('team', from);
    // Every instance prices once, caching the history with the scheduled "team" in it.
    for (const on of [server.services, peer, deaf]) expect(await t.record(null, on)).toBe('2.00');
    for (const on of [server.services, peer, deaf]) expect((await on.plans.planResolver(t.merchant.id, [t.customer.id]))(t.customer.id, from)).not.toBe(null);
    const teamId = (await server.services.plans.get(t.merchant.id, 'team')).id;
    expect((await deaf.plans.planResolver(t.merchant.id, [t.customer.id]))(t.customer.id, from)).toBe(teamId);

    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() });
    try {
      expect((await t.cancel()).data.cancelScheduledPlanChange.plan).toEqual({ key: 'pro' });
      await delivered();
      // An instance that missed the message still prices from its cached history, for a few
      // seconds: the cancelled change is too far ahead for any usage it may be stamped with.
      expect(await t.record(later(MAX_FUTURE_USAGE_MS), deaf)).toBe('2.00');

      // On the server's clock, ten minutes on; on the caches', not a second: usage at and after
      // the cancelled change's moment is priced by "pro" here and on the instance told of it.
      now = later(11 * MINUTE);
      expect(await t.record(from)).toBe('2.00');
      expect(await t.record(null, peer)).toBe('2.00');
      // The instance that missed the message sees it once its cache has lapsed.
      vi.setSystemTime(Date.now() + 6_000);
      expect(await t.record(later(MAX_FUTURE_USAGE_MS), deaf)).toBe('2.00');
    } finally {
      vi.useRealTimers();
    }
    expect(await t.history()).toEqual([['2026-02-01T00:00:00.000Z', 'pro']]);
  });

  it('is safe against setCustomerPlan and usage recorded at the same moment, from two instances', async () => {
    const t = await setup();
    await t.setPlan('pro', new Date('2026-02-01T00:00:00Z'));
    const day = 86_400_000;
    const outcomes = new Set<string>();
    const outcome = (promise: Promise<unknown>) => promise.then(() => 'ok', (error: { code?: string }) => error.code ?? String(error));
    for (let round = 0; round < 8; round++) {
      const services = [server.services, peer];
      const results = await Promise.all([
        outcome(services[round % 2]!.plans.cancelScheduled(t.merchant.id, t.customer.id)),
        outcome(services[(round + 1) % 2]!.plans.assign(t.merchant.id, t.customer.id, 'team', new Date(now.getTime() + (round + 1) * day))),
        outcome(services[round % 2]!.plans.assign(t.merchant.id, t.customer.id, null, new Date(now.getTime() + (round + 1) * day + 1))),
        t.record(null, services[round % 2]),
        t.record(later(4 * MINUTE), services[(round + 1) % 2]),
      ]);
      // The cancel always goes through (what is scheduled is a day or more ahead, with nothing priced under it), and so do the calls.
      expect([results[0], results[3], results[4]], `round ${round}`).toEqual(['ok', '2.00', '2.00']);
      for (const result of results) outcomes.add(result);
    }
    // A change is only ever refused as not after the latest one (it waited on the lock behind the other, or behind a schedule the cancel had not removed yet).
    expect([...outcomes].filter((result) => !['ok', 'VALIDATION', '2.00'].includes(result))).toEqual([]);
    const history = await t.history();
    expect(history.every((row, i) => i === 0 || row[0]! > history[i - 1]![0]!)).toBe(true);
    // Whatever order the lock gave, what is scheduled now can be cancelled, and nothing was ever priced under it.
    expect((await t.cancel()).data.cancelScheduledPlanChange.plan).toEqual({ key: 'pro' });
    expect(await t.history()).toEqual([['2026-02-01T00:00:00.000Z', 'pro']]);
    const charges = await server.services.prisma.usageEvent.findMany({ where: { customerId: t.customer.id }, select: { chargeAttos: true } });
    expect(charges).toHaveLength(16);
    expect(new Set(charges.map((row) => row.chargeAttos.toString()))).toEqual(new Set([(2n * 10n ** 18n).toString()]));
  });
});
