import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalAttos } from '../../shared/money.ts';
import { blankUsage } from '../usage/usage.types.ts';
import { HISTORY_TTL_MS } from './plans.service.ts';

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const PLAN = 'id key name description archivedAt createdAt';
const PUT_PLAN = `mutation ($input: PutPlanInput!) { putPlan(input: $input) { ${PLAN} } }`;
const SET_PLAN = `mutation ($customerId: ID!, $planKey: String, $from: DateTime) { setCustomerPlan(customerId: $customerId, planKey: $planKey, effectiveFrom: $from) { id plan { key } } }`;
const PUT_RULE = `mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id name plan { key } effectiveFrom archivedAt } }`;

async function merchantWithCustomer() {
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  const gql = (query: string, variables?: Record<string, unknown>) => server.graphql<any>(query, variables, merchant.secret);
  const customer = await server.services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  const history = () => server.services.prisma.customerPlan.findMany({ where: { customerId: customer.id }, orderBy: { effectiveFrom: 'asc' } });
  return { merchant, gql, customer, history };
}

const errorOf = (result: { errors?: { extensions: Record<string, unknown> }[] }) => result.errors?.[0]?.extensions;

describe('plans', () => {
  it('putPlan creates a plan, is idempotent, and updates name and description', async () => {
    const { merchant, gql } = await merchantWithCustomer();
    const created = await gql(PUT_PLAN, { input: { key: 'pro', name: 'Pro', description: 'For teams' } });
    expect(created.errors).toBeUndefined();
    expect(created.data.putPlan).toMatchObject({ key: 'pro', name: 'Pro', description: 'For teams', archivedAt: null });
    const before = await server.services.plans.get(merchant.id, 'pro');

    const again = await gql(PUT_PLAN, { input: { key: 'pro', name: 'Pro', description: 'For teams' } });
    expect(again.data.putPlan.id).toBe(created.data.putPlan.id);
    // Nothing changed, so nothing was written.
    expect((await server.services.plans.get(merchant.id, 'pro')).updatedAt).toEqual(before.updatedAt);

    const renamed = await gql(PUT_PLAN, { input: { key: 'pro', name: 'Pro (2026)' } });
    expect(renamed.data.putPlan).toMatchObject({ id: created.data.putPlan.id, name: 'Pro (2026)', description: null });
    expect((await gql(`{ plans { key name } }`)).data.plans).toEqual([{ key: 'pro', name: 'Pro (2026)' }]);
    expect((await gql(`{ plan(key: "pro") { id } }`)).data.plan.id).toBe(created.data.putPlan.id);
  });

  it('refuses a bad key or name, naming the field', async () => {
    const { gql } = await merchantWithCustomer();
    for (const key of ['Pro', '', 'a'.repeat(65), 'has space', 'a.b', 'é']) {
      expect(errorOf(await gql(PUT_PLAN, { input: { key, name: 'x' } })), key).toMatchObject({ code: 'VALIDATION', field: 'key' });
    }
    expect(errorOf(await gql(PUT_PLAN, { input: { key: 'ok', name: '  ' } }))).toMatchObject({ code: 'VALIDATION', field: 'name' });
    for (const key of ['a', '7', 'team_2-x', 'a'.repeat(64)]) {
      expect((await gql(PUT_PLAN, { input: { key, name: 'x' } })).errors, key).toBeUndefined();
    }
    expect(errorOf(await gql(`{ plan(key: "missing") { id } }`))).toMatchObject({ code: 'NOT_FOUND' });
  });

  it("the plan histories cached for pricing are dropped once a merchant's go stale, though it sends no more usage", async () => {
    const quiet = await merchantWithCustomer();
    const busy = await merchantWithCustomer();
    const cached = (server.services.plans as unknown as { histories: Map<string, unknown> }).histories;
    await server.services.plans.planResolver(quiet.merchant.id, [quiet.customer.id]);
    expect(cached.has(quiet.merchant.id)).toBe(true);
    const start = Date.now();
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => start + HISTORY_TTL_MS);
    try {
      await server.services.plans.planResolver(busy.merchant.id, [busy.customer.id]);
    } finally {
      clock.mockRestore();
    }
    expect(cached.has(quiet.merchant.id)).toBe(false);
    expect(cached.has(busy.merchant.id)).toBe(true);
  });

  it('two archivePlan calls at once both answer the archive time that was stored', async () => {
    const { gql, merchant } = await merchantWithCustomer();
    await gql(PUT_PLAN, { input: { key: 'sunset', name: 'Sunset' } });
    // Each call of the clock a second later, so two stamps could not agree by chance.
    const plans = server.services.plans as unknown as { clock: () => Date };
    const clock = plans.clock;
    let tick = 0;
    plans.clock = () => new Date(Date.UTC(2026, 0, 1, 0, 0, tick++));
    try {
      const answers = await Promise.all([1, 2].map(() => server.services.plans.archive(merchant.id, 'sunset')));
      const stored = (await server.services.plans.get(merchant.id, 'sunset')).archivedAt;
      expect(answers.map((answer) => answer.archivedAt)).toEqual([stored, stored]);
    } finally {
      plans.clock = clock;
    }
  });

  it('an archived plan is hidden from plans, cannot be newly assigned, stays with its customers, and putPlan restores it', async () => {
    const { gql, customer, merchant } = await merchantWithCustomer();
    await gql(PUT_PLAN, { input: { key: 'legacy', name: 'Legacy' } });
    expect((await gql(SET_PLAN, { customerId: customer.id, planKey: 'legacy' })).data.setCustomerPlan.plan).toEqual({ key: 'legacy' });

    const archived = await gql(`mutation { archivePlan(key: "legacy") { key archivedAt } }`);
    expect(archived.data.archivePlan.archivedAt).not.toBeNull();
    expect((await gql(`mutation { archivePlan(key: "legacy") { archivedAt } }`)).data.archivePlan.archivedAt).toBe(archived.data.archivePlan.archivedAt);
    expect((await gql(`{ plans { key } }`)).data.plans).toEqual([]);
    expect((await gql(`{ plans(includeArchived: true) { key } }`)).data.plans).toEqual([{ key: 'legacy' }]);

    const other = await server.services.customers.create(merchant.id, { externalId: 'other' });
    expect(errorOf(await gql(SET_PLAN, { customerId: other.id, planKey: 'legacy' }))).toMatchObject({ code: 'VALIDATION', field: 'planKey' });
    expect(await server.services.prisma.customerPlan.count({ where: { customerId: other.id } })).toBe(0);
    // The customer already on it keeps it, and asking for it again changes nothing.
    expect((await gql(`query ($id: ID!) { customer(id: $id) { plan { key archivedAt } } }`, { id: customer.id })).data.customer.plan).toMatchObject({ key: 'legacy' });
    expect((await gql(SET_PLAN, { customerId: customer.id, planKey: 'legacy' })).data.setCustomerPlan.plan).toEqual({ key: 'legacy' });
    expect(await server.services.prisma.customerPlan.count({ where: { customerId: customer.id } })).toBe(1);

    await gql(PUT_PLAN, { input: { key: 'legacy', name: 'Legacy' } });
    expect((await gql(`{ plans { key archivedAt } }`)).data.plans).toEqual([{ key: 'legacy', archivedAt: null }]);
    expect((await gql(SET_PLAN, { customerId: other.id, planKey: 'legacy' })).errors).toBeUndefined();
  });

  it('setCustomerPlan appends to the history and never rewrites it', async () => {
    const { gql, customer, history } = await merchantWithCustomer();
    await gql(PUT_PLAN, { input: { key: 'pro', name: 'Pro' } });
    await gql(PUT_PLAN, { input: { key: 'team', name: 'Team' } });
    const march = '2026-03-01T00:00:00.000Z';

    expect((await gql(SET_PLAN, { customerId: customer.id, planKey: 'pro', from: march })).data.setCustomerPlan).toEqual({ id: customer.id, plan: { key: 'pro' } });
    // Not after the latest change: refused, with nothing written.
    for (const from of [march, '2026-02-01T00:00:00.000Z']) {
      const refused = await gql(SET_PLAN, { customerId: customer.id, planKey: 'team', from });
      expect(errorOf(refused), from).toMatchObject({ code: 'VALIDATION', field: 'effectiveFrom' });
      expect(refused.errors![0]!.message).toContain(march);
    }
    // The plan the customer is already on: nothing to record.
    await gql(SET_PLAN, { customerId: customer.id, planKey: 'pro' });
    expect(await history()).toHaveLength(1);

    // Back to the default price book, then a change scheduled for tomorrow.
    expect((await gql(SET_PLAN, { customerId: customer.id, planKey: null, from: '2026-04-01T00:00:00.000Z' })).data.setCustomerPlan.plan).toBeNull();
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString();
    expect((await gql(SET_PLAN, { customerId: customer.id, planKey: 'team', from: tomorrow })).data.setCustomerPlan.plan).toBeNull();
    const rows = await history();
    expect(rows.map((row) => [row.effectiveFrom.toISOString(), row.planId === null ? null : row.planId])).toEqual([
      [march, (await server.services.plans.get(customer.merchantId, 'pro')).id],
      ['2026-04-01T00:00:00.000Z', null],
      [tomorrow, (await server.services.plans.get(customer.merchantId, 'team')).id],
    ]);
    // What the usage pipeline reads: the plan in force at any time, from the history above.
    const planAt = await server.services.plans.planResolver(customer.merchantId, [customer.id]);
    expect(planAt(customer.id, new Date('2026-02-28T23:59:59Z'))).toBeNull();
    expect(planAt(customer.id, new Date(march))).toBe(rows[0]!.planId);
    expect(planAt(customer.id, new Date('2026-04-01T00:00:00Z'))).toBeNull();
    expect(planAt(customer.id, new Date(Date.now() + 2 * 86_400_000))).toBe(rows[2]!.planId);
  });

  it('a change back in time stops short of usage already priced: those events keep their book, and late ones at that moment are priced alike', async () => {
    const { merchant, gql, customer, history } = await merchantWithCustomer();
    const services = server.services;
    await services.meters.create(merchant.id, { key: 'calls', name: 'Calls', unit: 'call', source: 'REQUESTS' });
    await services.priceRules.put(merchant.id, { name: 'calls', type: 'FLAT', config: { unitPrice: '1.00' }, meterKey: 'calls', effectiveFrom: new Date('2026-01-01') });
    await gql(PUT_PLAN, { input: { key: 'pro', name: 'Pro' } });
    await services.priceRules.put(merchant.id, { name: 'calls', type: 'FLAT', config: { unitPrice: '0.50' }, meterKey: 'calls', planKey: 'pro', effectiveFrom: new Date('2026-01-01') });
    await services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, { customerId: customer.id, currency: 'USD', amountNanos: 100_000_000_000n, kind: 'PAID', idempotencyKey: 'seed' });
    const hourAgo = new Date(Date.now() - 3_600_000);
    const record = async () => {
      const [result] = await services.usage.record(merchant.id, { kind: 'system', apiKeyId: null }, [{ customer: customer.id, idempotencyKey: randomUUID(), usage: { ...blankUsage(), requests: 1 }, timestamp: hourAgo }]);
      return result!.ok ? result!.event.charge : result!.error.message;
    };
    expect(await record()).toBe('1.00');
    for (const from of [new Date(hourAgo.getTime() - 60_000), hourAgo]) {
      const refused = await gql(SET_PLAN, { customerId: customer.id, planKey: 'pro', from: from.toISOString() });
      expect(errorOf(refused), from.toISOString()).toMatchObject({ code: 'VALIDATION', field: 'effectiveFrom' });
      expect(refused.errors![0]!.message).toContain(hourAgo.toISOString());
    }
    expect(await history()).toEqual([]);
    expect(await record()).toBe('1.00');
    // Just after the last priced event is allowed: later late events get the plan.
    const after = new Date(hourAgo.getTime() + 1);
    expect(errorOf(await gql(SET_PLAN, { customerId: customer.id, planKey: 'pro', from: after.toISOString() }))).toBeUndefined();
    const [late] = await services.usage.record(merchant.id, { kind: 'system', apiKeyId: null }, [{ customer: customer.id, idempotencyKey: randomUUID(), usage: { ...blankUsage(), requests: 1 }, timestamp: after }]);
    expect(late!.ok && late!.event.charge).toBe('0.50');
  });

  it('changes "from now" made in the same millisecond, or while another waited on the lock, all land, in order', async () => {
    const { gql, customer, history } = await merchantWithCustomer();
    await gql(PUT_PLAN, { input: { key: 'pro', name: 'Pro' } });
    await gql(PUT_PLAN, { input: { key: 'team', name: 'Team' } });
    // A frozen clock: every call reads the same "now", as calls racing on other instances can.
    vi.useFakeTimers({ toFake: ['Date'], now: new Date('2030-01-01T00:00:00Z') });
    try {
      for (const planKey of ['pro', 'team', 'pro', 'team']) expect((await gql(SET_PLAN, { customerId: customer.id, planKey })).errors).toBeUndefined();
      expect(await history()).toHaveLength(4);
      // Concurrent: which waits for which is up to the lock, but none is refused.
      const calls = await Promise.all(['pro', 'team', null, 'pro'].map((planKey) => gql(SET_PLAN, { customerId: customer.id, planKey })));
      expect(calls.map((call) => call.errors)).toEqual([undefined, undefined, undefined, undefined]);
    } finally {
      vi.useRealTimers();
    }
    const rows = await history();
    expect(rows.length).toBeGreaterThan(4);
    expect(rows.every((row, i) => i === 0 || (row.effectiveFrom > rows[i - 1]!.effectiveFrom && row.planId !== rows[i - 1]!.planId))).toBe(true);
  });

  it('a page of customers shows the plan each is on now, read in one query for the page', async () => {
    const { merchant, gql, customer: onPro } = await merchantWithCustomer();
    await gql(PUT_PLAN, { input: { key: 'pro', name: 'Pro' } });
    await gql(PUT_PLAN, { input: { key: 'team', name: 'Team' } });
    const another = () => server.services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
    const [onTeam, backToDefault, scheduled, never] = [await another(), await another(), await another(), await another()];
    await gql(SET_PLAN, { customerId: onPro.id, planKey: 'pro', from: '2026-01-01T00:00:00Z' });
    await gql(SET_PLAN, { customerId: onPro.id, planKey: 'team', from: new Date(Date.now() + 86_400_000).toISOString() });
    await gql(SET_PLAN, { customerId: onTeam.id, planKey: 'team' });
    await gql(SET_PLAN, { customerId: backToDefault.id, planKey: 'pro', from: '2026-01-01T00:00:00Z' });
    await gql(SET_PLAN, { customerId: backToDefault.id, planKey: null, from: '2026-02-01T00:00:00Z' });
    await gql(SET_PLAN, { customerId: scheduled.id, planKey: 'pro', from: new Date(Date.now() + 86_400_000).toISOString() });

    const reads = vi.spyOn(server.services.prisma.customerPlan, 'findMany');
    try {
      const page = await gql('{ customers(first: 10) { edges { node { id plan { key } } } } }');
      const planOf = new Map(page.data.customers.edges.map(({ node }: any) => [node.id, node.plan?.key ?? null]));
      expect(Object.fromEntries(planOf)).toEqual({ [onPro.id]: 'pro', [onTeam.id]: 'team', [backToDefault.id]: null, [scheduled.id]: null, [never.id]: null });
      expect(reads).toHaveBeenCalledTimes(1);
    } finally {
      reads.mockRestore();
    }
  });

  it('unknown customers and plans are NOT_FOUND', async () => {
    const { gql, customer } = await merchantWithCustomer();
    expect(errorOf(await gql(SET_PLAN, { customerId: randomUUID(), planKey: null }))).toMatchObject({ code: 'NOT_FOUND' });
    expect(errorOf(await gql(SET_PLAN, { customerId: 'not-an-id', planKey: null }))).toMatchObject({ code: 'NOT_FOUND' });
    expect(errorOf(await gql(SET_PLAN, { customerId: customer.id, planKey: 'nope' }))).toMatchObject({ code: 'NOT_FOUND' });
    expect(errorOf(await gql(`mutation { archivePlan(key: "nope") { id } }`))).toMatchObject({ code: 'NOT_FOUND' });
  });

  it("a customer session token sees its own customer's plan, but not the plan's price rules", async () => {
    const { gql, customer, merchant } = await merchantWithCustomer();
    await gql(PUT_PLAN, { input: { key: 'pro', name: 'Pro' } });
    await gql(PUT_RULE, { input: { name: 'markup', type: 'MARKUP', planKey: 'pro', config: { percent: '10' } } });
    await gql(SET_PLAN, { customerId: customer.id, planKey: 'pro' });
    const { token } = await server.services.customerSessions.create(merchant.id, customer.id, 600);
    const own = await server.graphql<any>(`query ($id: ID!) { customer(id: $id) { plan { key name } } }`, { id: customer.id }, token);
    expect(own.errors).toBeUndefined();
    expect(own.data.customer.plan).toEqual({ key: 'pro', name: 'Pro' });
    const rules = await server.graphql(`query ($id: ID!) { customer(id: $id) { plan { priceRules { id } } } }`, { id: customer.id }, token);
    expect(errorOf(rules)).toMatchObject({ code: 'FORBIDDEN' });
    expect(errorOf(await server.graphql(`{ plans { key } }`, {}, token))).toMatchObject({ code: 'FORBIDDEN' });
    expect(errorOf(await server.graphql(SET_PLAN, { customerId: customer.id, planKey: null }, token))).toMatchObject({ code: 'FORBIDDEN' });
  });
});

describe('price rules of a plan', () => {
  it('versions rules per price book: one name lives independently in the default book and in each plan', async () => {
    const { gql } = await merchantWithCustomer();
    await gql(PUT_PLAN, { input: { key: 'pro', name: 'Pro' } });
    await gql(PUT_PLAN, { input: { key: 'team', name: 'Team' } });
    const from = '2026-01-01T00:00:00.000Z';
    for (const [planKey, percent] of [[null, '25'], ['pro', '10'], ['team', '15']] as const) {
      const put = await gql(PUT_RULE, { input: { name: 'markup', type: 'MARKUP', planKey, config: { percent }, effectiveFrom: from } });
      expect(put.errors, String(planKey)).toBeUndefined();
      expect(put.data.putPriceRule.plan).toEqual(planKey ? { key: planKey } : null);
    }
    // The plan's own latest version is what a new one must follow.
    expect(errorOf(await gql(PUT_RULE, { input: { name: 'markup', type: 'MARKUP', planKey: 'pro', config: { percent: '9' }, effectiveFrom: from } }))).toMatchObject({ code: 'VALIDATION', field: 'effectiveFrom' });
    await gql(PUT_RULE, { input: { name: 'markup', type: 'MARKUP', planKey: 'pro', config: { percent: '12' }, effectiveFrom: '2026-02-01T00:00:00.000Z' } });

    const percents = (rules: { config: { percent: string } }[]) => rules.map((rule) => rule.config.percent);
    expect(percents((await gql(`{ priceRules { config } }`)).data.priceRules)).toEqual(['25']);
    expect(percents((await gql(`{ priceRules(planKey: "pro") { config } }`)).data.priceRules)).toEqual(['10', '12']);
    const team = (await gql(`{ plan(key: "team") { priceRules { config plan { key } } } }`)).data.plan.priceRules;
    expect(team).toEqual([{ config: { percent: '15' }, plan: { key: 'team' } }]);

    const archived = await gql(`mutation { archivePriceRule(name: "markup", planKey: "pro") { plan { key } config archivedAt } }`);
    expect(archived.data.archivePriceRule).toMatchObject({ plan: { key: 'pro' }, config: { percent: '12' } });
    expect(archived.data.archivePriceRule.archivedAt).not.toBeNull();
    const stillActive = [...(await gql(`{ priceRules { archivedAt } }`)).data.priceRules, ...(await gql(`{ priceRules(planKey: "team") { archivedAt } }`)).data.priceRules];
    expect(stillActive).toEqual([{ archivedAt: null }, { archivedAt: null }]);
    expect(errorOf(await gql(`mutation { archivePriceRule(name: "nope", planKey: "pro") { id } }`))).toMatchObject({ code: 'NOT_FOUND' });
  });

  it('a rule for an unknown plan is NOT_FOUND and nothing is written', async () => {
    const { gql, merchant } = await merchantWithCustomer();
    expect(errorOf(await gql(PUT_RULE, { input: { name: 'markup', type: 'MARKUP', planKey: 'ghost', config: { percent: '10' } } }))).toMatchObject({ code: 'NOT_FOUND' });
    expect(errorOf(await gql(`{ priceRules(planKey: "ghost") { id } }`))).toMatchObject({ code: 'NOT_FOUND' });
    expect(await server.services.prisma.priceRule.count({ where: { merchantId: merchant.id } })).toBe(0);
  });
});

describe('tenant isolation', () => {
  it("merchant B can never see, price under, or assign merchant A's plan", async () => {
    const a = await merchantWithCustomer();
    const b = await merchantWithCustomer();
    const aPlan = (await a.gql(PUT_PLAN, { input: { key: 'pro', name: 'A Pro' } })).data.putPlan;
    await a.gql(PUT_RULE, { input: { name: 'markup', type: 'MARKUP', planKey: 'pro', config: { percent: '900' } } });
    await a.gql(SET_PLAN, { customerId: a.customer.id, planKey: 'pro' });

    expect((await b.gql(`{ plans(includeArchived: true) { id } }`)).data.plans).toEqual([]);
    const refused: [string, Record<string, unknown>][] = [
      [`{ plan(key: "pro") { id } }`, {}],
      [`{ priceRules(planKey: "pro") { id } }`, {}],
      [PUT_RULE, { input: { name: 'markup', type: 'MARKUP', planKey: 'pro', config: { percent: '1' } } }],
      [`mutation { archivePriceRule(name: "markup", planKey: "pro") { id } }`, {}],
      [`mutation { archivePlan(key: "pro") { id } }`, {}],
      [SET_PLAN, { customerId: b.customer.id, planKey: 'pro' }],
      [SET_PLAN, { customerId: a.customer.id, planKey: null }],
      [`query ($id: ID!) { customer(id: $id) { plan { id } } }`, { id: a.customer.id }],
    ];
    for (const [query, variables] of refused) expect(errorOf(await b.gql(query, variables)), query).toMatchObject({ code: 'NOT_FOUND' });
    expect(await server.services.prisma.customerPlan.count({ where: { merchantId: b.merchant.id } })).toBe(0);

    // B's own "pro" is its own plan, with its own (no) rules: A's 900% markup never prices B's usage.
    const bPlan = (await b.gql(PUT_PLAN, { input: { key: 'pro', name: 'B Pro' } })).data.putPlan;
    expect(bPlan.id).not.toBe(aPlan.id);
    expect((await b.gql(SET_PLAN, { customerId: b.customer.id, planKey: 'pro' })).data.setCustomerPlan.plan).toEqual({ key: 'pro' });
    expect((await b.gql(`{ plan(key: "pro") { name priceRules { id } } }`)).data.plan).toEqual({ name: 'B Pro', priceRules: [] });
    expect((await a.gql(`{ plan(key: "pro") { name priceRules { id } } }`)).data.plan).toMatchObject({ name: 'A Pro', priceRules: [{}] });
    await server.services.providerPrices.add(b.merchant.id, { provider: 'acme', model: 'm1', perMillionTokens: { input: '1.00', output: '2.00' }, effectiveFrom: new Date('2026-01-01') });
    const usage = blankUsage({ provider: 'acme', model: 'm1', inputTokens: 1000, outputTokens: 500, requests: 1 });
    expect((await server.services.usage.quote(b.merchant.id, usage, b.customer.id)).chargeAttos).toBe(parseDecimalAttos('x', '0.002'));

    // The database refuses it too: a rule or an assignment can only point at its own merchant's plan.
    await expect(server.services.prisma.priceRule.create({ data: { merchantId: b.merchant.id, planId: aPlan.id, name: 'sneaky', type: 'MARKUP', config: { percent: '1' }, effectiveFrom: new Date() } })).rejects.toMatchObject({ code: 'P2003' });
    await expect(server.services.prisma.customerPlan.create({ data: { merchantId: b.merchant.id, customerId: b.customer.id, planId: aPlan.id, effectiveFrom: new Date(Date.now() + 60_000) } })).rejects.toMatchObject({ code: 'P2003' });
  });
});
