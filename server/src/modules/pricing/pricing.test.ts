import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { refusal } from '../../../test/refusal.ts';
import { MAX_FUTURE_USAGE_MS } from '../../shared/times.ts';
import { rulesInForce } from './rules.service.ts';

/** Saving prices and rules: what is refused so that nothing saved is silently ignored, ambiguous, or rewrites history. */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const PUT_RULE = `mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id name } }`;
const SET_PRICE = `mutation ($input: SetProviderPriceInput!) { setProviderPrice(input: $input) { ref effectiveFrom rates } }`;
const from = new Date('2026-01-01T00:00:00Z');

describe('putPriceRule', () => {
  it('refuses a rule that would tie with another of its price book, naming that rule', async () => {
    const merchant = await server.createMerchant();
    const rules = server.services.priceRules;
    await rules.put(merchant.id, { name: 'claude markup', type: 'MARKUP', provider: 'anthropic', config: { percent: '20' }, effectiveFrom: from });
    const clash = await refusal(rules.put(merchant.id, { name: 'claude markup 2', type: 'MARKUP', provider: 'Anthropic', config: { percent: '30' }, effectiveFrom: from }));
    expect(clash).toMatchObject({ code: 'CONFLICT', details: { conflictingRule: 'claude markup' } });
    expect(clash.message).toContain('"claude markup"');

    await rules.put(merchant.id, { name: 'everything', type: 'MARKUP', config: { percent: '10' }, effectiveFrom: from });
    expect(await refusal(rules.put(merchant.id, { name: 'everything else', type: 'MARKUP', config: { percent: '5' }, effectiveFrom: from }))).toMatchObject({ code: 'CONFLICT', details: { conflictingRule: 'everything' } });
    await server.services.meters.create(merchant.id, { key: 'tokens', name: 'Tokens', unit: 'token', source: 'TOTAL_TOKENS' });
    await rules.put(merchant.id, { name: 'tokens', type: 'FLAT', meterKey: 'tokens', config: { unitPrice: '0.001' }, effectiveFrom: from });
    expect(await refusal(rules.put(merchant.id, { name: 'token tiers', type: 'GRADUATED', meterKey: 'tokens', config: { tiers: [{ upTo: null, unitPrice: '0.002' }] }, effectiveFrom: from }))).toMatchObject({ code: 'CONFLICT' });
    expect((await rules.allVersions(merchant.id)).map((rule) => rule.name).sort()).toEqual(['claude markup', 'everything', 'tokens']);

    // Through GraphQL the refusal is a typed error too.
    const answer = await server.graphql(PUT_RULE, { input: { name: 'again', type: 'MARKUP', provider: 'anthropic', config: { percent: '1' } } }, merchant.secret);
    expect(answer.errors?.[0]).toMatchObject({ extensions: { code: 'CONFLICT', conflictingRule: 'claude markup' } });
  });

  it('allows the same target in another price book, a new version of the same rule, and after the other was archived', async () => {
    const merchant = await server.createMerchant();
    const rules = server.services.priceRules;
    await server.services.plans.put(merchant.id, { key: 'pro', name: 'Pro' });
    await rules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '20' }, effectiveFrom: from });
    await rules.put(merchant.id, { name: 'pro markup', type: 'MARKUP', planKey: 'pro', config: { percent: '10' }, effectiveFrom: from });
    await rules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '25' }, effectiveFrom: new Date('2026-02-01') });
    await rules.archive(merchant.id, 'markup', null, new Date('2026-03-01'));
    await rules.put(merchant.id, { name: 'new markup', type: 'MARKUP', config: { percent: '30' }, effectiveFrom: new Date('2026-03-01') });
    // Bringing the archived rule back from a later date would tie with its successor.
    expect(await refusal(rules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '40' }, effectiveFrom: new Date('2026-04-01') }))).toMatchObject({ code: 'CONFLICT', details: { conflictingRule: 'new markup' } });
  });

  it('refuses a rule that could never apply: a quantity rule without a meter, a markup with one', async () => {
    const merchant = await server.createMerchant();
    for (const input of [
      { name: 'flat', type: 'FLAT', config: { unitPrice: '0.01' } },
      { name: 'package', type: 'PACKAGE', config: { packageSize: 10, packagePrice: '1' } },
      { name: 'markup', type: 'MARKUP', meterKey: 'tokens', config: { percent: '10' } },
    ]) {
      const answer = await server.graphql(PUT_RULE, { input }, merchant.secret);
      expect(answer.errors?.[0], input.name).toMatchObject({ extensions: { code: 'VALIDATION', field: 'rule.meterKey' } });
    }
    expect(await server.services.priceRules.allVersions(merchant.id)).toEqual([]);
  });
});

describe('archivePriceRule with a version scheduled', () => {
  const day = 24 * 3600_000;
  const ARCHIVE_RULE = `mutation ($name: String!) { archivePriceRule(name: $name) { name archivedAt } }`;
  const percentInForce = async (merchantId: string, at: Date) =>
    rulesInForce(await server.services.priceRules.allVersions(merchantId), at).map((rule) => `${rule.name} ${(rule.config as { percent: string }).percent}`);

  /** A rule in force since yesterday with a new version scheduled in 30 days, archived now: both stop. */
  async function archivedWithSchedule() {
    const merchant = await server.createMerchant();
    const rules = server.services.priceRules;
    const scheduled = new Date(Date.now() + 30 * day);
    await rules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '20' }, effectiveFrom: new Date(Date.now() - day) });
    await rules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '25' }, effectiveFrom: scheduled });
    expect((await server.graphql<any>(ARCHIVE_RULE, { name: 'markup' }, merchant.secret)).data.archivePriceRule.archivedAt).not.toBeNull();
    expect(await percentInForce(merchant.id, new Date(scheduled.getTime() + day))).toEqual([]);
    return { merchant, rules, scheduled };
  }

  it('the rule can be put again from now on; the stopped scheduled version neither blocks it nor comes back', async () => {
    const { merchant, rules, scheduled } = await archivedWithSchedule();
    const answer = await server.graphql<any>(PUT_RULE, { input: { name: 'markup', type: 'MARKUP', config: { percent: '30' } } }, merchant.secret);
    expect(answer.errors).toBeUndefined();
    expect(await percentInForce(merchant.id, new Date(Date.now() + day))).toEqual(['markup 30']);
    // Past the date the stopped version was scheduled for, the new one is still the one in force.
    expect(await percentInForce(merchant.id, new Date(scheduled.getTime() + day))).toEqual(['markup 30']);
    // A rule of another name for the same target would tie with it then too.
    const tie = await refusal(rules.put(merchant.id, { name: 'other', type: 'MARKUP', config: { percent: '5' }, effectiveFrom: new Date(scheduled.getTime() + 2 * day) }));
    expect(tie).toMatchObject({ code: 'CONFLICT', details: { conflictingRule: 'markup' } });
    // Archived again after that date, it is the new version that stops.
    await rules.archive(merchant.id, 'markup', null, new Date(scheduled.getTime() + 3 * day));
    expect(await percentInForce(merchant.id, new Date(scheduled.getTime() + 4 * day))).toEqual([]);
  });

  it('the rule can be put again from a date before the one the stopped version was scheduled for', async () => {
    const { merchant, rules, scheduled } = await archivedWithSchedule();
    const restart = new Date(Date.now() + 10 * day);
    await rules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '35' }, effectiveFrom: restart });
    expect(await percentInForce(merchant.id, new Date(Date.now() + 5 * day))).toEqual([]);
    expect(await percentInForce(merchant.id, new Date(restart.getTime() + 1))).toEqual(['markup 35']);
    expect(await percentInForce(merchant.id, new Date(scheduled.getTime() + day))).toEqual(['markup 35']);
    // History before the version that took effect is still never rewritten.
    expect(await refusal(rules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '1' }, effectiveFrom: new Date(Date.now() - 2 * day) }))).toMatchObject({ code: 'VALIDATION', details: { field: 'effectiveFrom' } });
  });
});

describe('setProviderPrice', () => {
  const rates = (input: string) => ({ perMillionTokens: { input, output: '2.00' } });

  it('never replaces a price that may have costed events: a different one at its time is a CONFLICT, the same one a no-op', async () => {
    const merchant = await server.createMerchant();
    const set = (input: string, effectiveFrom: string) =>
      server.graphql<any>(SET_PRICE, { input: { provider: 'acme', model: 'm1', rates: rates(input), effectiveFrom } }, merchant.secret);
    const first = await set('1.00', '2026-01-01T00:00:00.000Z');
    expect(first.errors).toBeUndefined();
    const changed = await set('1.50', '2026-01-01T00:00:00.000Z');
    expect(changed.errors?.[0]).toMatchObject({ extensions: { code: 'CONFLICT', field: 'effectiveFrom' } });
    expect(changed.errors?.[0]?.message).toMatch(/acme\/m1 already takes effect at 2026-01-01T00:00:00.000Z.*later effectiveFrom/);
    const same = await set('1.00', '2026-01-01T00:00:00.000Z');
    expect(same.data.setProviderPrice.ref).toBe(first.data.setProviderPrice.ref);
    expect((await set('1.50', '2026-02-01T00:00:00.000Z')).errors).toBeUndefined();
    const stored = await server.services.prisma.providerPrice.findMany({ where: { merchantId: merchant.id }, orderBy: { effectiveFrom: 'asc' } });
    // Stored as the shortest decimal of each rate.
    expect(stored.map((row) => [row.effectiveFrom.toISOString(), (row.prices as { perMillionTokens: { input: string } }).perMillionTokens.input])).toEqual([
      ['2026-01-01T00:00:00.000Z', '1'],
      ['2026-02-01T00:00:00.000Z', '1.5'],
    ]);
  });

  it('the same price in another decimal spelling is the same price: stored and compared by value, whole numbers as decimal strings', async () => {
    const merchant = await server.createMerchant();
    const set = (rates: Record<string, unknown>) =>
      server.graphql<any>(SET_PRICE, { input: { provider: 'acme', model: 'm1', rates, effectiveFrom: from.toISOString() } }, merchant.secret);
    const first = await set({ perMillionTokens: { input: '2.50', output: 10 }, contextTiers: [{ aboveInputTokens: 1000, perMillionTokens: { input: '5.0' } }], perRequest: '0.0010' });
    expect(first.errors).toBeUndefined();
    const canonical = { perMillionTokens: { input: '2.5', output: '10' }, contextTiers: [{ aboveInputTokens: 1000, perMillionTokens: { input: '5' } }], perRequest: '0.001' };
    expect(first.data.setProviderPrice.rates).toEqual(canonical);
    for (const again of [
      { perMillionTokens: { input: '2.5', output: '10.00' }, contextTiers: [{ aboveInputTokens: 1000, perMillionTokens: { input: 5 } }], perRequest: '0.001' },
      { perMillionTokens: { input: ' 2.50', output: '010' }, contextTiers: [{ aboveInputTokens: 1000, perMillionTokens: { input: '5' } }], perRequest: '0.0010000' },
    ]) {
      const same = await set(again);
      expect(same.errors).toBeUndefined();
      expect(same.data.setProviderPrice).toEqual({ ...first.data.setProviderPrice, rates: canonical });
    }
    expect((await set({ perMillionTokens: { input: '2.51', output: '10' } })).errors?.[0]).toMatchObject({ extensions: { code: 'CONFLICT' } });
    const stored = await server.services.prisma.providerPrice.findMany({ where: { merchantId: merchant.id } });
    expect(stored.map((row) => row.prices)).toEqual([canonical]);
    const listed = await server.graphql<any>('query { providerPrices(provider: "acme") { rates } }', {}, merchant.secret);
    expect(listed.data.providerPrices).toEqual([{ rates: canonical }]);
  });

  it('a row stored before rates were canonical compares by value, and is listed in canonical form', async () => {
    const merchant = await server.createMerchant();
    const prices = server.services.providerPrices;
    // As earlier versions stored them: the text as written, whole numbers as JSON numbers.
    await server.services.prisma.providerPrice.create({
      data: { merchantId: merchant.id, provider: 'openai', model: 'gpt-x', effectiveFrom: from, source: 'manual', prices: { perMillionTokens: { input: '2.50', output: 10 } } },
    });
    const same = await prices.add(merchant.id, { provider: 'openai', model: 'gpt-x', perMillionTokens: { input: '2.5', output: '10' }, effectiveFrom: from });
    expect(same.prices).toEqual({ perMillionTokens: { input: '2.50', output: 10 } });
    // A models.dev file with the same price imports over it as a no-op, instead of being refused whole.
    const file = JSON.stringify({ openai: { models: { 'gpt-x': { cost: { input: 2.5, output: 10 } }, 'gpt-y': { cost: { input: 1, output: 2 } } } } });
    expect(await prices.importModelsDev(merchant.id, file, from)).toMatchObject({ imported: 1, unchanged: 1, skipped: [] });
    expect(await refusal(prices.add(merchant.id, { provider: 'openai', model: 'gpt-x', perMillionTokens: { input: '2.6', output: '10' }, effectiveFrom: from }))).toMatchObject({ code: 'CONFLICT' });
    const listed = await server.graphql<any>('query { providerPrices(provider: "openai", model: "gpt-x") { ref rates } }', {}, merchant.secret);
    expect(listed.data.providerPrices).toEqual([
      { ref: same.id, rates: { perMillionTokens: { input: '2.5', output: '10' } } },
    ]);
    // setProviderPrice answers the stored row in the form listing gives it.
    const answer = await server.graphql<any>(SET_PRICE, { input: { provider: 'openai', model: 'gpt-x', rates: { perMillionTokens: { input: '2.5', output: '10' } }, effectiveFrom: from.toISOString() } }, merchant.secret);
    expect(answer.data.setProviderPrice).toEqual({ ref: same.id, effectiveFrom: from.toISOString(), rates: { perMillionTokens: { input: '2.5', output: '10' } } });
  });

  it('a price scheduled further ahead than any event can be timestamped has costed nothing yet, and is replaced', async () => {
    const merchant = await server.createMerchant();
    const prices = server.services.providerPrices;
    const later = new Date(Date.now() + 24 * 3600_000);
    await prices.add(merchant.id, { provider: 'acme', model: 'm1', ...rates('1.00'), effectiveFrom: later });
    await prices.add(merchant.id, { provider: 'acme', model: 'm1', ...rates('1.25'), effectiveFrom: later });
    const stored = await server.services.prisma.providerPrice.findMany({ where: { merchantId: merchant.id } });
    expect(stored.map((row) => (row.prices as { perMillionTokens: { input: string } }).perMillionTokens.input)).toEqual(['1.25']);
    // One within reach of an event's timestamp may already have costed it.
    const soon = new Date(Date.now() + MAX_FUTURE_USAGE_MS / 2);
    await prices.add(merchant.id, { provider: 'acme', model: 'm2', ...rates('1.00'), effectiveFrom: soon });
    expect(await refusal(prices.add(merchant.id, { provider: 'acme', model: 'm2', ...rates('1.25'), effectiveFrom: soon }))).toMatchObject({ code: 'CONFLICT' });
  });

  it('a models.dev import that would change prices in force is refused whole; the same file again changes nothing', async () => {
    const merchant = await server.createMerchant();
    const prices = server.services.providerPrices;
    const file = (input: number) => JSON.stringify({ openai: { models: { 'gpt-x': { cost: { input, output: 2 } }, 'gpt-y': { cost: { input: 1, output: 2 } } } }, togetherai: { models: { 'llama-z': { cost: { input: 0.5, output: 0.5 } } } } });
    expect(await prices.importModelsDev(merchant.id, file(1), from)).toMatchObject({ imported: 3, unchanged: 0, skipped: [] });
    expect(await prices.importModelsDev(merchant.id, file(1), from)).toMatchObject({ imported: 0, unchanged: 3 });
    expect(await refusal(prices.importModelsDev(merchant.id, file(3), from))).toMatchObject({ code: 'CONFLICT', details: { models: ['openai/gpt-x'] } });
    const stored = await server.services.prisma.providerPrice.findMany({ where: { merchantId: merchant.id }, orderBy: { model: 'asc' } });
    expect(stored.map((row) => `${row.provider}/${row.model}`)).toEqual(['openai/gpt-x', 'openai/gpt-y', 'together/llama-z']);
    expect((stored[0]!.prices as { perMillionTokens: { input: string } }).perMillionTokens.input).toBe('1');
    // Imported under the id usage reports: Together's calls are priced by it.
    expect(await prices.priceFor(merchant.id, 'together', 'llama-z', new Date('2026-06-01'))).toMatchObject({ provider: 'together', model: 'llama-z' });
  });

  it('providerPrices filters by provider and model trimmed and case-insensitively, a provider by id or alias, as pricing matches them', async () => {
    const merchant = await server.createMerchant();
    await server.services.providerPrices.add(merchant.id, { provider: 'Acme', model: 'M1', perMillionTokens: { input: '1', output: '2' }, effectiveFrom: from });
    await server.services.providerPrices.add(merchant.id, { provider: 'gemini', model: 'Gemini-X', perMillionTokens: { input: '1', output: '2' }, effectiveFrom: from });
    // The row prices acme/m1 events…
    expect((await server.services.providerPrices.priceFor(merchant.id, 'acme', 'm1', new Date('2026-06-01')))?.model).toBe('M1');
    const list = async (args: string) => ((await server.graphql<any>(`query { providerPrices${args} { provider model } }`, {}, merchant.secret)).data.providerPrices as { provider: string; model: string }[]);
    // …and is listed under the same names.
    for (const args of ['(provider: "acme")', '(provider: " ACME ", model: "m1")', '(model: "m1 ")', '(provider: "Acme", model: "M1")']) {
      expect(await list(args), args).toEqual([{ provider: 'Acme', model: 'M1' }]);
    }
    expect(await list('(provider: "Gemini", model: "gemini-x")')).toEqual([{ provider: 'google', model: 'Gemini-X' }]);
    expect(await list('(provider: "acme", model: "m2")')).toEqual([]);
    // The list prices too: the shipped gpt-4o rows, whatever the case asked.
    expect((await list('(provider: "OpenAI", model: "GPT-4o")')).map((row) => row.model)).toEqual(['gpt-4o']);
  });

  it('importModelsDevPrices over GraphQL: imports what it can, lists what it skipped and why, refuses a file that is no price table, and only for a secret key', async () => {
    const merchant = await server.createMerchant();
    const IMPORT = 'mutation ($json: String!, $from: DateTime) { importModelsDevPrices(json: $json, effectiveFrom: $from) { imported skipped } }';
    const file = JSON.stringify({ mistral: { models: { 'mistral-large': { cost: { input: 2, output: 6 } }, broken: { cost: { input: 'two' } } } } });
    const imported = await server.graphql<any>(IMPORT, { json: file, from: from.toISOString() }, merchant.secret);
    expect(imported.errors).toBeUndefined();
    expect(imported.data.importModelsDevPrices.imported).toBe(1);
    expect(imported.data.importModelsDevPrices.skipped.entries).toEqual([{ path: expect.stringContaining('broken'), reason: expect.any(String) }]);
    const listed = await server.graphql<any>('query { providerPrices(provider: "mistral", model: "mistral-large") { ref effectiveFrom rates } }', {}, merchant.secret);
    expect(listed.data.providerPrices).toEqual([expect.objectContaining({ effectiveFrom: from.toISOString(), rates: expect.objectContaining({ perMillionTokens: { input: '2', output: '6' } }) })]);
    const notATable = await server.graphql<any>(IMPORT, { json: '[1, 2, 3]' }, merchant.secret);
    expect(notATable.errors?.[0]?.extensions.code).toBe('VALIDATION');
    const customer = await server.services.customers.create(merchant.id, { externalId: 'importer' });
    const { token } = await server.services.customerSessions.create(merchant.id, customer.id, 600);
    expect((await server.graphql<any>(IMPORT, { json: file }, token)).errors?.[0]?.extensions.code).toBe('FORBIDDEN');
  });
});
