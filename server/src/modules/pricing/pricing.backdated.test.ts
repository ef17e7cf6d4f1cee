import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { later, pricedUsageSetup, SINCE } from '../../../test/priced-usage.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { applyPricingChanges, describeChanges, planPricingConfig } from './config-apply.ts';
import { priceCouldCost, resolvePrice, type PriceWithRef } from './prices.service.ts';

/**
 * A price rule version, a rule archived at a given time, or a provider price, dated at or before
 * usage already priced, is refused: a late event stamped in between would be priced the new way
 * while its neighbours stay charged the old way. Dated after that usage, or "from now", each
 * still works, and so does a first version dated long before any usage.
 */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const BACKDATED = { code: 'VALIDATION', details: { field: 'effectiveFrom' } };

async function setup() {
  const { services } = server;
  const { merchant, customer, event, record } = await pricedUsageSetup(server);
  const rules = async () =>
    (await services.prisma.priceRule.findMany({ where: { merchantId: merchant.id }, orderBy: [{ name: 'asc' }, { effectiveFrom: 'asc' }] })).map((row) => [row.name, row.effectiveFrom.toISOString(), row.archivedAt?.toISOString() ?? null]);
  const prices = async () =>
    (await services.prisma.providerPrice.findMany({ where: { merchantId: merchant.id }, orderBy: [{ model: 'asc' }, { effectiveFrom: 'asc' }] })).map((row) => `${row.model}@${row.effectiveFrom.toISOString()}`);
  // An hour ago: long enough past that nothing here is "from now".
  const charged = new Date(Math.floor(Date.now() / 1000) * 1000 - 3_600_000);
  return { merchant, customer, event, record, rules, prices, charged };
}

const flat = (unitPrice: string, effectiveFrom?: Date, name = 'out') => ({ name, type: 'FLAT' as const, meterKey: 'out', config: { unitPrice }, ...(effectiveFrom ? { effectiveFrom } : {}) });

describe('a price rule version dated at or before usage already priced', () => {
  it('is refused, naming that usage, and writes nothing: a late event in between is charged as its neighbours were', async () => {
    const t = await setup();
    // A fresh merchant setting up may date its first version long before any usage.
    await server.services.priceRules.put(t.merchant.id, flat('1', SINCE));
    expect(await t.record(t.event(1, t.charged))).toEqual(['1.00']);
    for (const effectiveFrom of [later(t.charged, -60_000), t.charged]) {
      const refused = server.services.priceRules.put(t.merchant.id, flat('2', effectiveFrom));
      await expect(refused).rejects.toMatchObject(BACKDATED);
      await expect(refused).rejects.toThrow(`must be after the merchant's latest usage already priced that this rule matches (${t.charged.toISOString()}): history is never rewritten`);
    }
    // A new rule's first version is refused alike: it would price that usage too.
    await expect(server.services.priceRules.put(t.merchant.id, flat('5', later(t.charged, -60_000), 'other'))).rejects.toMatchObject(BACKDATED);
    expect(await t.rules()).toEqual([['out', SINCE.toISOString(), null]]);
    expect(await t.record(t.event(1, later(t.charged, -30_000)))).toEqual(['1.00']);
  });

  it('is taken when dated after that usage, or from now', async () => {
    const t = await setup();
    await server.services.priceRules.put(t.merchant.id, flat('1', SINCE));
    expect(await t.record(t.event(1, t.charged))).toEqual(['1.00']);
    const next = await server.services.priceRules.put(t.merchant.id, flat('2', later(t.charged, 1)));
    expect(next.effectiveFrom).toEqual(later(t.charged, 1));
    expect(await t.record(t.event(1, t.charged), t.event(1, later(t.charged, 1)))).toEqual(['1.00', '2.00']);
    const fromNow = await server.services.priceRules.put(t.merchant.id, flat('3'));
    expect(fromNow.effectiveFrom.getTime()).toBeGreaterThan(t.charged.getTime());
  });

  it('refuses all of a putAll when one of its rules is backdated', async () => {
    const t = await setup();
    await server.services.priceRules.put(t.merchant.id, flat('1', SINCE));
    expect(await t.record(t.event(1, t.charged))).toEqual(['1.00']);
    const both = [flat('2', later(t.charged, 60_000)), flat('3', later(t.charged, -60_000), 'other')];
    await expect(server.services.priceRules.putAll(t.merchant.id, both)).rejects.toMatchObject(BACKDATED);
    expect(await t.rules()).toEqual([['out', SINCE.toISOString(), null]]);
  });

  it('is taken for a rule that matches none of that usage, unless the version it ends did', async () => {
    const t = await setup();
    const markup = (provider: string, effectiveFrom: Date) => ({ name: 'markup', type: 'MARKUP' as const, provider, config: { percent: '10' }, effectiveFrom });
    await server.services.priceRules.put(t.merchant.id, markup('custom', SINCE));
    expect(await t.record(t.event(1, t.charged, 'm', 'elsewhere'))).toEqual(['0.00']);
    // The usage is another provider's: a markup of "custom" priced none of it, before or after.
    await server.services.priceRules.put(t.merchant.id, markup('custom', later(t.charged, -120_000)));
    // Moving the rule to that provider would price it another way.
    await expect(server.services.priceRules.put(t.merchant.id, markup('elsewhere', later(t.charged, -60_000)))).rejects.toMatchObject(BACKDATED);
    expect(await server.services.priceRules.archive(t.merchant.id, 'markup', null, later(t.charged, -60_000))).toMatchObject({ archivedAt: later(t.charged, -60_000) });
  });

  it("is refused for a plan's rule too, whoever is on the plan (not narrowed by price book)", async () => {
    const t = await setup();
    await server.services.plans.put(t.merchant.id, { key: 'pro', name: 'Pro' });
    expect(await t.record(t.event(1, t.charged))).toEqual(['0.00']);
    await expect(server.services.priceRules.put(t.merchant.id, { ...flat('2', later(t.charged, -60_000)), planKey: 'pro' })).rejects.toMatchObject(BACKDATED);
    expect(await t.rules()).toEqual([]);
  });

  it('through GraphQL, after usage posted to /v1/usage, answers the error naming effectiveFrom', async () => {
    const t = await setup();
    await server.services.priceRules.put(t.merchant.id, flat('1', SINCE));
    const posted = await fetch(`${server.url}/v1/usage`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${t.merchant.secret}` },
      body: JSON.stringify({ ...t.event(1, t.charged), timestamp: t.charged.toISOString() }),
    });
    expect(posted.status).toBe(200);
    const put = (effectiveFrom: Date) =>
      server.graphql<any>(`mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { effectiveFrom } }`, { input: { ...flat('2'), effectiveFrom: effectiveFrom.toISOString() } }, t.merchant.secret);
    const refused = await put(later(t.charged, -60_000));
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'effectiveFrom' });
    expect(await t.rules()).toEqual([['out', SINCE.toISOString(), null]]);
    expect((await put(later(t.charged, 1))).data.putPriceRule.effectiveFrom).toBe(later(t.charged, 1).toISOString());
  });
});

describe('archiving a price rule at a time at or before usage already priced', () => {
  it('is refused and archives nothing; at a time after it, it stops the rule then, and archiving again answers the same', async () => {
    const t = await setup();
    await server.services.priceRules.put(t.merchant.id, flat('1', SINCE));
    expect(await t.record(t.event(1, t.charged))).toEqual(['1.00']);
    for (const at of [later(t.charged, -60_000), t.charged]) {
      await expect(server.services.priceRules.archive(t.merchant.id, 'out', null, at)).rejects.toMatchObject(BACKDATED);
    }
    expect(await t.rules()).toEqual([['out', SINCE.toISOString(), null]]);
    expect(await t.record(t.event(1, later(t.charged, -30_000)))).toEqual(['1.00']);

    const archived = await server.services.priceRules.archive(t.merchant.id, 'out', null, later(t.charged, 1));
    expect(archived.archivedAt).toEqual(later(t.charged, 1));
    expect(await t.record(t.event(1, t.charged), t.event(1, later(t.charged, 1)))).toEqual(['1.00', '0.00']);
    // Usage priced since does not make the same archive fail: it changes nothing.
    expect((await server.services.priceRules.archive(t.merchant.id, 'out', null, later(t.charged, 1))).archivedAt).toEqual(later(t.charged, 1));
    // Moving the stop earlier, over usage already priced, is refused.
    await expect(server.services.priceRules.archive(t.merchant.id, 'out', null, later(t.charged, -60_000))).rejects.toMatchObject(BACKDATED);
  });
});

describe('archiving a rule stored under a provider alias by an earlier version', () => {
  it("is checked against the provider's usage", async () => {
    const t = await setup();
    await server.services.prisma.priceRule.create({ data: { merchantId: t.merchant.id, name: 'old', type: 'MARKUP', provider: 'claude', config: { percent: '10' }, effectiveFrom: SINCE } });
    expect(await t.record(t.event(1, t.charged, 'claude-sonnet-9', 'anthropic'))).toEqual(['0.00']);
    await expect(server.services.priceRules.archive(t.merchant.id, 'old', null, later(t.charged, -60_000))).rejects.toMatchObject(BACKDATED);
  });
});

describe('a provider price dated at or before usage already priced', () => {
  const price = (output: string, effectiveFrom?: Date, model = 'm', provider = 'custom') => ({ provider, model, perMillionTokens: { input: '0', output }, ...(effectiveFrom ? { effectiveFrom } : {}) });

  it('is refused when that usage is of its model, and writes nothing: a late event in between is costed as its neighbours were', async () => {
    const t = await setup();
    await server.services.providerPrices.add(t.merchant.id, price('1', SINCE));
    // No rules: the cost passes through, so the charge is the cost.
    expect(await t.record(t.event(1_000_000, t.charged))).toEqual(['1.00']);
    for (const effectiveFrom of [later(t.charged, -60_000), t.charged]) {
      const refused = server.services.providerPrices.add(t.merchant.id, price('2', effectiveFrom));
      await expect(refused).rejects.toMatchObject(BACKDATED);
      await expect(refused).rejects.toThrow(`must be after the merchant's latest usage of m already priced (${t.charged.toISOString()}): history is never rewritten`);
    }
    // Writing the very row stored again still answers it.
    expect((await server.services.providerPrices.add(t.merchant.id, price('1', SINCE))).effectiveFrom).toEqual(SINCE);
    expect(await t.prices()).toEqual([`m@${SINCE.toISOString()}`]);
    expect(await t.record(t.event(1_000_000, later(t.charged, -30_000)))).toEqual(['1.00']);
  });

  it('is taken when dated after that usage or from now, and for a model that usage did not use', async () => {
    const t = await setup();
    await server.services.providerPrices.add(t.merchant.id, price('1', SINCE));
    expect(await t.record(t.event(1_000_000, t.charged))).toEqual(['1.00']);
    await server.services.providerPrices.add(t.merchant.id, price('2', later(t.charged, 1)));
    expect(await t.record(t.event(1_000_000, t.charged), t.event(1_000_000, later(t.charged, 1)))).toEqual(['1.00', '2.00']);
    expect((await server.services.providerPrices.add(t.merchant.id, price('3'))).effectiveFrom.getTime()).toBeGreaterThan(t.charged.getTime());
    // No event of model "n" has been priced: its first price may start before.
    await server.services.providerPrices.add(t.merchant.id, price('4', later(t.charged, -60_000), 'n'));
    expect(await t.record(t.event(1_000_000, later(t.charged, -30_000), 'n'))).toEqual(['4.00']);
  });

  it("is refused when that usage was of a cloud reselling the model, or of the model's dated snapshot", async () => {
    const t = await setup();
    expect(await t.record(t.event(1_000_000, t.charged, 'us.anthropic.claude-sonnet-9-20990101-v1:0', 'bedrock'))).toEqual(['0.00']);
    await expect(server.services.providerPrices.add(t.merchant.id, price('2', later(t.charged, -60_000), 'Claude-Sonnet-9', 'anthropic'))).rejects.toMatchObject(BACKDATED);
    expect(await t.prices()).toEqual([]);
  });

  it('refuses a whole models.dev import dated before it, and takes one from now', async () => {
    const t = await setup();
    expect(await t.record(t.event(1_000_000, t.charged))).toEqual(['0.00']);
    const file = JSON.stringify({ custom: { models: { m: { cost: { input: 0, output: 2 } }, n: { cost: { input: 0, output: 3 } } } } });
    await expect(server.services.providerPrices.importModelsDev(t.merchant.id, file, later(t.charged, -60_000))).rejects.toMatchObject(BACKDATED);
    expect(await t.prices()).toEqual([]);
    await server.services.providerPrices.importModelsDev(t.merchant.id, file);
    expect(await t.prices()).toHaveLength(2);
  });

  it('through GraphQL answers the error naming effectiveFrom', async () => {
    const t = await setup();
    expect(await t.record(t.event(1_000_000, t.charged))).toEqual(['0.00']);
    const set = (effectiveFrom: Date) =>
      server.graphql<any>(
        `mutation ($input: SetProviderPriceInput!) { setProviderPrice(input: $input) { effectiveFrom } }`,
        { input: { provider: 'custom', model: 'm', rates: { perMillionTokens: { input: '0', output: '2' } }, effectiveFrom: effectiveFrom.toISOString() } },
        t.merchant.secret,
      );
    expect((await set(later(t.charged, -60_000))).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'effectiveFrom' });
    expect(await t.prices()).toEqual([]);
    expect((await set(later(t.charged, 1))).data.setProviderPrice.effectiveFrom).toBe(later(t.charged, 1).toISOString());
  });
});

describe('a pricing file dated before usage already priced', () => {
  it('is planned and applied from after that usage, never from its date, and applying it again changes nothing', async () => {
    const t = await setup();
    const fileDate = later(t.charged, -60_000);
    const file = (output: string, unitPrice: string) => ({
      providerPrices: [{ provider: 'custom', model: 'm', effectiveFrom: fileDate.toISOString(), perMillionTokens: { input: '0', output } }],
      priceRules: [{ name: 'out', type: 'FLAT' as const, meterKey: 'out', config: { unitPrice } }],
    });
    await applyPricingChanges(server.services, t.merchant.id, await planPricingConfig(server.services, t.merchant.id, file('1', '1')), SINCE);
    expect(await t.record(t.event(1, t.charged))).toEqual(['1.00']);
    const changes = await planPricingConfig(server.services, t.merchant.id, file('2', '2'));
    expect(describeChanges(changes)).toContain(`not from its file date ${fileDate.toISOString()}`);
    await applyPricingChanges(server.services, t.merchant.id, changes);
    expect((await t.prices()).map((row) => Date.parse(row.split('@')[1]!) > t.charged.getTime())).toEqual([false, true]);
    expect((await t.rules()).map(([, from]) => Date.parse(from!) > t.charged.getTime())).toEqual([false, true]);
    // The event in between is charged as its neighbour was.
    expect(await t.record(t.event(1, later(t.charged, -30_000)))).toEqual(['1.00']);
    expect(await planPricingConfig(server.services, t.merchant.id, file('2', '2'))).toEqual([]);
  });
});

describe('usage recorded while a pricing file is applied', () => {
  it('does not refuse the file: its changes take effect from the moment the apply read as now, as changes from now do', async () => {
    const t = await setup();
    await applyPricingChanges(server.services, t.merchant.id, await planPricingConfig(server.services, t.merchant.id, {
      providerPrices: [{ provider: 'custom', model: 'm', perMillionTokens: { input: '0', output: '1' } }],
      priceRules: [{ name: 'out', type: 'FLAT' as const, meterKey: 'out', config: { unitPrice: '1' } }],
    }), SINCE);
    const changes = await planPricingConfig(server.services, t.merchant.id, {
      providerPrices: [{ provider: 'custom', model: 'm', perMillionTokens: { input: '0', output: '2' } }],
      priceRules: [{ name: 'out', type: 'FLAT' as const, meterKey: 'out', config: { unitPrice: '2' } }],
    });
    // Ingest takes no lock the apply waits on: an event lands after the apply read "now" and
    // before it writes (stored here in the apply's own transaction, so the writes see it).
    const prices = server.services.providerPrices;
    const add = prices.add.bind(prices);
    const meanwhile = new Date(Date.now() + 2000);
    prices.add = async (merchantId, input, source, tx, movedNow) => {
      await tx!.client.$executeRaw`INSERT INTO usage_events (id, merchant_id, customer_id, idempotency_key, occurred_at, period_start, provider, model, status)
        VALUES (${randomUUID()}::uuid, ${t.merchant.id}::uuid, ${t.customer.id}::uuid, 'meanwhile', ${meanwhile}, ${new Date('2026-01-01')}, 'custom', 'm', 'CHARGED')`;
      return add(merchantId, input, source, tx, movedNow);
    };
    try {
      await applyPricingChanges(server.services, t.merchant.id, changes);
    } finally {
      prices.add = add;
    }
    expect(await planPricingConfig(server.services, t.merchant.id, {
      providerPrices: [{ provider: 'custom', model: 'm', perMillionTokens: { input: '0', output: '2' } }],
      priceRules: [{ name: 'out', type: 'FLAT' as const, meterKey: 'out', config: { unitPrice: '2' } }],
    }, new Date(meanwhile.getTime() + 1))).toEqual([]);
  });
});

describe('the scope of usage a change is checked against', () => {
  it('a provider price: every event resolvePrice would cost by the row, and no other', () => {
    const row = (provider: string, model: string): PriceWithRef => ({ provider, model, currency: 'USD', effectiveFrom: SINCE, perMillionTokens: { input: '1', output: '1' }, ref: `${provider}/${model}` }) as PriceWithRef;
    const rows = [row('anthropic', 'Claude-Sonnet-9'), row('google', 'gemini-9-flash'), row('openai', 'gpt-9')];
    const events = [['bedrock', 'eu.anthropic.claude-sonnet-9-20990101-v1:0'], ['vertex', 'google/gemini-9-flash-001'], ['vertex', 'publishers/google/models/gemini-9-flash'],
      ['azure-openai', 'GPT-9'], ['openai', 'gpt-9-2099-01-01'], ['openrouter', 'openai/gpt-9'], ['openai', 'gpt-9o-mini'], ['acme', 'gpt-9']] as const;
    let matched = 0;
    for (const [provider, model] of events) {
      const found = resolvePrice(rows, provider, model, new Date());
      for (const candidate of rows) expect(priceCouldCost(candidate, { provider, model }), `${candidate.model} for ${provider}/${model}`).toBe(candidate === found);
      matched += found ? 1 : 0;
    }
    expect(matched).toBe(4);
    expect(priceCouldCost(row('openai', 'gpt-9'), { provider: 'openai', model: null })).toBe(false);
  });

  it('a price for another model whose name is part of the one used is taken (acme/gpt-4 over openai/gpt-4o-mini usage only)', async () => {
    const t = await setup();
    expect(await t.record(t.event(1, t.charged, 'gpt-4o-mini', 'openai'))).toHaveLength(1);
    await expect(server.services.providerPrices.add(t.merchant.id, { provider: 'acme', model: 'gpt-4', perMillionTokens: { input: '1', output: '1' }, effectiveFrom: later(t.charged, -60_000) }))
      .resolves.toMatchObject({ provider: 'acme', model: 'gpt-4' });
  });

  it("a rule for one provider is taken over usage of another whose id contains it (openai over azure-openai usage only)", async () => {
    const t = await setup();
    expect(await t.record(t.event(1, t.charged, 'gpt-4o', 'azure-openai'))).toHaveLength(1);
    await expect(server.services.priceRules.put(t.merchant.id, { name: 'openai-markup', type: 'MARKUP', provider: 'openai', config: { percent: '10' }, effectiveFrom: later(t.charged, -60_000) }))
      .resolves.toMatchObject({ provider: 'openai' });
    await expect(server.services.priceRules.put(t.merchant.id, { name: 'azure-markup', type: 'MARKUP', provider: 'azure-openai', config: { percent: '10' }, effectiveFrom: later(t.charged, -60_000) }))
      .rejects.toMatchObject(BACKDATED);
  });
});
