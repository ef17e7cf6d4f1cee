import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { applyPricingChanges, describeChanges, loadPricingConfig, planPricingConfig, type Change, type PricingConfig } from './config-apply.ts';
import { rulesInForce, toPricingRule } from './rules.service.ts';
import { applyRule } from './rules.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const CONFIG: PricingConfig = {
  meters: [{ key: 'output_tokens', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' }],
  providerPrices: [{ provider: 'openai', model: 'gpt-5.4-mini', perMillionTokens: { input: '0.75', cachedInput: '0.075', output: '4.50' } }],
  priceRules: [
    { name: 'markup', type: 'MARKUP', config: { percent: '25' } },
    { name: 'output', type: 'GRADUATED', meterKey: 'output_tokens', config: { tiers: [{ upTo: '1000000', unitPrice: '0.000002' }, { upTo: null, unitPrice: '0.000001' }] } },
  ],
};

/** Plans the file and applies the plan, both at `now` (default: the clock's). */
const planAndApply = async (merchantId: string, config: PricingConfig, now?: Date) =>
  applyPricingChanges(server.services, merchantId, await planPricingConfig(server.services, merchantId, config, now), now);

describe('pricing as code', () => {
  it('shows a diff, applies it, and is a no-op the second time', async () => {
    const merchant = await server.createMerchant();
    const plan = await planPricingConfig(server.services, merchant.id, CONFIG);
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['create-meter output_tokens', 'add-price openai/gpt-5.4-mini', 'add-rule markup', 'add-rule output']);
    expect(describeChanges(plan)).toContain('+ rule "markup"');
    // Planning changed nothing.
    expect(await server.services.meters.list(merchant.id, true)).toEqual([]);

    await applyPricingChanges(server.services, merchant.id, plan);
    expect((await server.services.meters.list(merchant.id, false)).map((meter) => meter.key)).toEqual(['output_tokens']);
    expect((await server.services.priceRules.allVersions(merchant.id)).map((rule) => rule.name).sort()).toEqual(['markup', 'output']);

    const again = await planPricingConfig(server.services, merchant.id, CONFIG);
    expect(again).toEqual([]);
    expect(describeChanges(again)).toMatch(/No changes/);
  });

  it('a file naming providers by alias is applied under their ids, and applying it again changes nothing', async () => {
    const merchant = await server.createMerchant();
    const aliased: PricingConfig = {
      providerPrices: [{ provider: 'Claude', model: 'claude-sonnet-4-6', perMillionTokens: { input: '2', output: '20' } }],
      priceRules: [{ name: 'gemini markup', type: 'MARKUP', provider: 'gemini', config: { percent: '10' } }],
      plans: [{ key: 'pro', name: 'Pro', priceRules: [{ name: 'claude markup', type: 'MARKUP', provider: 'claude', config: { percent: '5' } }] }],
    };
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, aliased));
    expect((await server.services.providerPrices.list(merchant.id, { provider: 'claude' })).filter((price) => !price.ref.startsWith('list:'))).toMatchObject([{ provider: 'anthropic', model: 'claude-sonnet-4-6' }]);
    expect((await server.services.priceRules.allVersions(merchant.id)).map((rule) => rule.provider)).toEqual(['google']);
    expect((await server.services.priceRules.versions(merchant.id, 'pro')).map((rule) => rule.provider)).toEqual(['anthropic']);
    expect(await planPricingConfig(server.services, merchant.id, aliased)).toEqual([]);
  });

  it('a changed price becomes a new version; the old one stays in history', async () => {
    const merchant = await server.createMerchant();
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, CONFIG, new Date('2026-01-01')), new Date('2026-01-01'));
    const changed: PricingConfig = { ...CONFIG, priceRules: [{ name: 'markup', type: 'MARKUP', config: { percent: '30' } }] };
    const plan = await planPricingConfig(server.services, merchant.id, changed);
    expect(plan).toHaveLength(1);
    expect(describeChanges(plan)).toContain('~ rule "markup" (new version from now)');
    await applyPricingChanges(server.services, merchant.id, plan);
    const versions = (await server.services.priceRules.allVersions(merchant.id)).filter((rule) => rule.name === 'markup');
    expect(versions.map((rule) => (rule.config as { percent: string }).percent)).toEqual(['25', '30']);
    expect(versions[0]!.effectiveFrom < versions[1]!.effectiveFrom).toBe(true);
  });

  it('a rule archived with a version scheduled is applied again from now; the stopped version does not come back', async () => {
    const merchant = await server.createMerchant();
    const file: PricingConfig = { priceRules: [{ name: 'markup', type: 'MARKUP', config: { percent: '25' } }] };
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file));
    const scheduled = new Date(Date.now() + 30 * 24 * 3600_000);
    await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '40' }, effectiveFrom: scheduled });
    await server.services.priceRules.archive(merchant.id, 'markup');
    const plan = await planPricingConfig(server.services, merchant.id, file);
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['add-rule markup']);
    await applyPricingChanges(server.services, merchant.id, plan);
    // Still the file's rule after the stopped version's date, so the file still matches then.
    expect(await planPricingConfig(server.services, merchant.id, file, new Date(scheduled.getTime() + 1))).toEqual([]);
  });

  it('a rule with a version scheduled through the API is refused while planning, naming the entry and the date, not when applying', async () => {
    const merchant = await server.createMerchant();
    const markup = (percent: string) => ({ name: 'markup', type: 'MARKUP' as const, config: { percent } });
    await planAndApply(merchant.id, { priceRules: [markup('10')], plans: [{ key: 'pro', name: 'Pro', priceRules: [markup('5')] }] });
    const scheduled = new Date(Date.now() + 30 * 86_400_000);
    await server.services.priceRules.put(merchant.id, { ...markup('20'), effectiveFrom: scheduled });
    await server.services.priceRules.put(merchant.id, { ...markup('8'), planKey: 'pro', effectiveFrom: scheduled });
    const before = await server.services.prisma.priceRule.count({ where: { merchantId: merchant.id } });
    const cases: [PricingConfig, string][] = [
      // A changed rule could not be put from now, before the scheduled version.
      [{ priceRules: [markup('15')] }, 'priceRules.0'],
      // An unchanged one would not stay: the scheduled version replaces it on its date.
      [{ priceRules: [markup('10')] }, 'priceRules.0'],
      // Nor can the file's settings stand for the scheduled version: it has no date to give them.
      [{ priceRules: [markup('20')] }, 'priceRules.0'],
      [{ plans: [{ key: 'pro', name: 'Pro', priceRules: [markup('5')] }] }, 'plans.0.priceRules.0'],
    ];
    for (const [file, field] of cases) {
      const outcome = await planPricingConfig(server.services, merchant.id, file).then(
        (plan) => applyPricingChanges(server.services, merchant.id, plan).then(() => 'applied', (error: Error) => `apply failed: ${error.message}`),
        (error: Error & { details?: { field?: string } }) => `refused at ${error.details?.field}: ${error.message}`,
      );
      expect(outcome, field).toMatch(new RegExp(`^refused at ${field.replace(/\./g, '\\.')}: ${field.replace(/\./g, '\\.')}: rule "markup" has a version scheduled from ${scheduled.toISOString()}`));
      expect(outcome, field).toMatch(/archive the rule/);
    }
    expect(await server.services.prisma.priceRule.count({ where: { merchantId: merchant.id } })).toBe(before);
    // Archived (the scheduled version with it), the rule is the file's again.
    await server.services.priceRules.archive(merchant.id, 'markup');
    await planAndApply(merchant.id, { priceRules: [markup('15')] });
    expect(await planPricingConfig(server.services, merchant.id, { priceRules: [markup('15')] }, new Date(scheduled.getTime() + 1))).toEqual([]);
  });

  it('an archived meter listed in the file shows in the diff as restored, and is', async () => {
    const merchant = await server.createMerchant();
    const file: PricingConfig = { meters: [{ key: 'images', name: 'Images', unit: 'image', source: 'IMAGES' }] };
    await planAndApply(merchant.id, file);
    await server.services.meters.archive(merchant.id, 'images');
    const plan = await planPricingConfig(server.services, merchant.id, file);
    expect(describeChanges(plan)).toBe(
      '~ meter images\n    - {"aggregation":"SUM","archived":true,"name":"Images","source":"IMAGES","unit":"image"}\n    + {"aggregation":"SUM","name":"Images","source":"IMAGES","unit":"image"}',
    );
    await applyPricingChanges(server.services, merchant.id, plan);
    expect((await server.services.meters.active(merchant.id)).map((meter) => meter.key)).toEqual(['images']);
    expect(await planPricingConfig(server.services, merchant.id, file)).toEqual([]);
  });

  it('refuses an invalid file before changing anything, naming the field', async () => {
    const merchant = await server.createMerchant();
    const bad: PricingConfig = { ...CONFIG, priceRules: [{ name: 'broken', type: 'GRADUATED', config: { tiers: [] } }] };
    await expect(planPricingConfig(server.services, merchant.id, bad)).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'priceRules.0.config.tiers' } });
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, { meters: CONFIG.meters }));
    const sourceChange: PricingConfig = { meters: [{ key: 'output_tokens', name: 'x', unit: 'token', source: 'INPUT_TOKENS' }] };
    await expect(planPricingConfig(server.services, merchant.id, sourceChange)).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'meters.0.source' } });
  });
});

describe('dated provider prices', () => {
  const model = { provider: 'openai', model: 'gpt-5.4-mini' };
  const rates = (output: string) => ({ perMillionTokens: { input: '0.75', output } });
  const outputOf = async (merchantId: string, at: string) => (await server.services.providerPrices.priceFor(merchantId, 'openai', 'gpt-5.4-mini', new Date(at)))?.perMillionTokens?.output;
  const storedRows = async (merchantId: string) =>
    (await server.services.providerPrices.rowsFor(merchantId)).map((row) => [row.effectiveFrom.toISOString(), row.perMillionTokens?.output]).sort(([a], [b]) => a!.localeCompare(b!));

  it('a scheduled price is added with its own date, and applying the file again changes nothing', async () => {
    const merchant = await server.createMerchant();
    const now = new Date('2026-06-01T00:00:00Z');
    const config: PricingConfig = { providerPrices: [{ ...model, ...rates('4.50') }, { ...model, ...rates('5.00'), effectiveFrom: '2099-01-01' }] };
    const plan = await planPricingConfig(server.services, merchant.id, config, now);
    expect(plan.map((change) => change.kind === 'add-price' && change.effectiveFrom)).toEqual([null, '2099-01-01T00:00:00.000Z']);
    expect(describeChanges(plan)).toContain('+ price openai/gpt-5.4-mini scheduled from 2099-01-01T00:00:00.000Z\n');
    await applyPricingChanges(server.services, merchant.id, plan, now);
    // Stored as the shortest decimal of each rate (see withCanonicalRates).
    expect(await storedRows(merchant.id)).toEqual([[now.toISOString(), '4.5'], ['2099-01-01T00:00:00.000Z', '5']]);

    expect(await planPricingConfig(server.services, merchant.id, config, now)).toEqual([]);
    expect(await planPricingConfig(server.services, merchant.id, config, new Date('2026-07-01T00:00:00Z'))).toEqual([]);
    // Once the scheduled price is in force, the file still matches.
    expect(await planPricingConfig(server.services, merchant.id, config, new Date('2099-02-01T00:00:00Z'))).toEqual([]);

    // A scheduled price changed in the file replaces the scheduled row: it has priced nothing yet.
    const rescheduled: PricingConfig = { providerPrices: [config.providerPrices![0]!, { ...model, ...rates('6.00'), effectiveFrom: '2099-01-01' }] };
    const change = await planPricingConfig(server.services, merchant.id, rescheduled, now);
    expect(describeChanges(change)).toMatch(/^~ price openai\/gpt-5.4-mini scheduled from 2099-01-01T00:00:00.000Z \(replaces the version scheduled then\)/);
    await applyPricingChanges(server.services, merchant.id, change, now);
    expect(await outputOf(merchant.id, '2099-01-02')).toBe('6');
    expect(await planPricingConfig(server.services, merchant.id, rescheduled, now)).toEqual([]);
  });

  it('model names in another case are the same model, as pricing matches them: one price, compared with what is stored', async () => {
    const merchant = await server.createMerchant();
    const now = new Date('2026-06-01T00:00:00Z');
    const upper = { provider: 'OpenAI', model: 'GPT-5.4-Mini' };
    // Two versions of one price in one file, told apart only by case: refused while planning, naming the second.
    await expect(planPricingConfig(server.services, merchant.id, { providerPrices: [{ ...model, ...rates('4.50') }, { ...upper, ...rates('9.00') }] }, now))
      .rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'providerPrices.1.effectiveFrom' } });
    await planAndApply(merchant.id, { providerPrices: [{ ...upper, ...rates('4.50') }] }, now);
    // The stored price, written in another case: nothing to do, and nothing written twice.
    expect(await planPricingConfig(server.services, merchant.id, { providerPrices: [{ ...model, ...rates('4.50') }] }, now)).toEqual([]);
    // A new rate replaces it, shown with the rate it replaces.
    const later = new Date('2026-07-01T00:00:00Z');
    const change = await planPricingConfig(server.services, merchant.id, { providerPrices: [{ ...model, ...rates('5.00') }] }, later);
    expect(describeChanges(change)).toMatch(/^~ price openai\/gpt-5.4-mini[^\n]*\n {4}- [^\n]*"output":"4.5"[^\n]*\n {4}\+ [^\n]*"output":"5.00"/);
    await applyPricingChanges(server.services, merchant.id, change, later);
    expect(await outputOf(merchant.id, '2026-06-15')).toBe('4.5');
    expect(await outputOf(merchant.id, '2026-07-15')).toBe('5');
  });

  it('a rule whose provider or model is stored in another case is the same rule: no new version', async () => {
    const merchant = await server.createMerchant();
    const now = new Date('2026-06-01T00:00:00Z');
    const rule = { name: 'mini', type: 'MARKUP' as const, config: { percent: '25' } };
    await planAndApply(merchant.id, { priceRules: [{ ...rule, provider: 'OpenAI', model: 'GPT-5.4-Mini' }] }, now);
    expect(await planPricingConfig(server.services, merchant.id, { priceRules: [{ ...rule, provider: 'openai', model: 'gpt-5.4-mini' }] }, now)).toEqual([]);
    expect(await planPricingConfig(server.services, merchant.id, { priceRules: [{ ...rule, provider: 'openai', model: 'gpt-5.4-nano' }] }, now)).toHaveLength(1);
  });

  it('of several past versions only the newest is put in force, from now, and the next apply changes nothing', async () => {
    const merchant = await server.createMerchant();
    const now = new Date('2026-06-01T00:00:00Z');
    const config: PricingConfig = { providerPrices: [{ ...model, ...rates('1.00'), effectiveFrom: '2026-01-01' }, { ...model, ...rates('3.00'), effectiveFrom: '2026-04-01' }] };
    const plan = await planPricingConfig(server.services, merchant.id, config, now);
    expect(plan).toHaveLength(1);
    expect(describeChanges(plan)).toBe('+ price openai/gpt-5.4-mini (dated 2026-04-01T00:00:00.000Z in the file; in force from now, history is never rewritten)\n    + {"currency":"USD","model":"gpt-5.4-mini","perMillionTokens":{"input":"0.75","output":"3.00"},"provider":"openai"}');
    await applyPricingChanges(server.services, merchant.id, plan, now);
    for (const later of [now, new Date('2026-06-02T00:00:00Z'), new Date('2026-09-01T00:00:00Z')]) {
      const again = await planPricingConfig(server.services, merchant.id, config, later);
      expect(again).toEqual([]);
      await applyPricingChanges(server.services, merchant.id, again, later);
    }
    expect(await storedRows(merchant.id)).toEqual([[now.toISOString(), '3']]);

    // A newer past version in the file becomes a new version from now; the earlier one stays in history.
    const newer: PricingConfig = { providerPrices: [...config.providerPrices!, { ...model, ...rates('2.00'), effectiveFrom: '2026-07-01' }] };
    const later = new Date('2026-08-01T00:00:00Z');
    const change = await planPricingConfig(server.services, merchant.id, newer, later);
    expect(describeChanges(change)).toMatch(/^~ price openai\/gpt-5.4-mini \(new version from now, not from its file date 2026-07-01T00:00:00.000Z; earlier events keep the old price\)/);
    await applyPricingChanges(server.services, merchant.id, change, later);
    expect(await storedRows(merchant.id)).toEqual([[now.toISOString(), '3'], [later.toISOString(), '2']]);
    expect(await outputOf(merchant.id, '2026-07-15')).toBe('3');
    expect(await planPricingConfig(server.services, merchant.id, newer, later)).toEqual([]);
  });

  it('a scheduled price moved to a later date in the file is cancelled at its old date, and applying again changes nothing', async () => {
    const merchant = await server.createMerchant();
    const now = new Date('2026-06-01T00:00:00Z');
    await planAndApply(merchant.id, { providerPrices: [{ ...model, ...rates('1') }, { ...model, ...rates('2'), effectiveFrom: '2099-01-01' }] }, now);
    const postponed: PricingConfig = { providerPrices: [{ ...model, ...rates('1') }, { ...model, ...rates('2'), effectiveFrom: '2099-06-01' }] };
    const plan = await planPricingConfig(server.services, merchant.id, postponed, now);
    expect(describeChanges(plan)).toBe([
      '- price openai/gpt-5.4-mini scheduled from 2099-01-01T00:00:00.000Z (cancelled: the file no longer lists it; it has priced nothing)',
      '    - {"currency":"USD","model":"gpt-5.4-mini","perMillionTokens":{"input":"0.75","output":"2"},"provider":"openai"}',
      '+ price openai/gpt-5.4-mini scheduled from 2099-06-01T00:00:00.000Z',
      '    + {"currency":"USD","model":"gpt-5.4-mini","perMillionTokens":{"input":"0.75","output":"2"},"provider":"openai"}',
    ].join('\n'));
    await applyPricingChanges(server.services, merchant.id, plan, now);
    expect(await planPricingConfig(server.services, merchant.id, postponed, now)).toEqual([]);
    expect(await outputOf(merchant.id, '2099-02-01')).toBe('1');
    expect(await outputOf(merchant.id, '2099-07-01')).toBe('2');
    expect(await storedRows(merchant.id)).toEqual([[now.toISOString(), '1'], ['2099-06-01T00:00:00.000Z', '2']]);
  });

  it('a scheduled price removed from the file is cancelled; a model the file does not list keeps its own', async () => {
    const merchant = await server.createMerchant();
    const now = new Date('2026-06-01T00:00:00Z');
    const other = { provider: 'anthropic', model: 'claude-x', perMillionTokens: { input: '3', output: '4' }, effectiveFrom: '2099-01-01' };
    await planAndApply(merchant.id, { providerPrices: [{ ...model, ...rates('1') }, { ...model, ...rates('9'), effectiveFrom: '2099-01-01' }, other] }, now);
    const withoutRise: PricingConfig = { providerPrices: [{ ...model, ...rates('1') }] };
    const plan = await planPricingConfig(server.services, merchant.id, withoutRise, now);
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['cancel-price openai/gpt-5.4-mini']);
    expect(describeChanges(plan)).toMatch(/^- price openai\/gpt-5.4-mini scheduled from 2099-01-01T00:00:00.000Z \(cancelled/);
    await applyPricingChanges(server.services, merchant.id, plan, now);
    expect(await outputOf(merchant.id, '2099-02-01')).toBe('1');
    expect((await server.services.providerPrices.priceFor(merchant.id, 'anthropic', 'claude-x', new Date('2099-02-01')))?.perMillionTokens?.output).toBe('4');
    expect(await planPricingConfig(server.services, merchant.id, withoutRise, now)).toEqual([]);
  });

  it('a scheduled price too close to its date to have priced nothing is not cancelled: refused while planning, or when applying if it came due since', async () => {
    const merchant = await server.createMerchant();
    const soon = new Date(Date.now() + 2 * 60_000);
    await server.services.providerPrices.add(merchant.id, { ...model, ...rates('7'), effectiveFrom: soon });
    const file: PricingConfig = { providerPrices: [{ ...model, ...rates('1') }] };
    const error = await planPricingConfig(server.services, merchant.id, file).then(() => null, (caught: unknown) => caught as Error);
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'providerPrices.0' } });
    expect(error?.message).toMatch(`providerPrices.0: openai/gpt-5.4-mini has a version stored from ${soon.toISOString()}, which this file does not list: it is too close to cancel`);
    // Planned an hour earlier, the row was further ahead; by the apply it may have priced usage.
    const plan = await planPricingConfig(server.services, merchant.id, file, new Date(Date.now() - 3600_000));
    expect(plan.map((change) => change.kind)).toEqual(['add-price', 'cancel-price']);
    await expect(applyPricingChanges(server.services, merchant.id, plan, new Date(Date.now() - 3600_000))).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'effectiveFrom' } });
    expect(await storedRows(merchant.id)).toEqual([[soon.toISOString(), '7']]);
    // Nor does the service delete a row due so soon, or one of another merchant.
    const [row] = await server.services.providerPrices.rowsFor(merchant.id);
    await expect(server.services.providerPrices.cancelScheduled(merchant.id, row!.ref)).rejects.toMatchObject({ code: 'CONFLICT' });
    const stranger = await server.createMerchant();
    await expect(server.services.providerPrices.cancelScheduled(stranger.id, row!.ref)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await storedRows(merchant.id)).toEqual([[soon.toISOString(), '7']]);
  });

  it('refuses two versions of one price on the same date, and a date that does not parse, naming the field', async () => {
    const merchant = await server.createMerchant();
    const cases: [PricingConfig, string][] = [
      [{ providerPrices: [{ ...model, ...rates('1.00'), effectiveFrom: '2099-01-01' }, { ...model, ...rates('2.00'), effectiveFrom: '2099-01-01T00:00:00Z' }] }, 'providerPrices.1.effectiveFrom'],
      [{ providerPrices: [{ ...model, ...rates('1.00') }, { ...model, ...rates('2.00') }] }, 'providerPrices.1.effectiveFrom'],
      [{ providerPrices: [{ ...model, ...rates('1.00'), effectiveFrom: 'next tuesday' }] }, 'providerPrices.0.effectiveFrom'],
    ];
    for (const [config, field] of cases) {
      await expect(planPricingConfig(server.services, merchant.id, config), field).rejects.toMatchObject({ code: 'VALIDATION', details: { field } });
    }
  });

  it('refuses a dated rule or plan instead of applying it from now', async () => {
    const merchant = await server.createMerchant();
    const dated = { name: 'markup', type: 'MARKUP' as const, config: { percent: '25' }, effectiveFrom: '2099-01-01' };
    await expect(planPricingConfig(server.services, merchant.id, { priceRules: [dated] })).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'priceRules.0.effectiveFrom' } });
    await expect(planPricingConfig(server.services, merchant.id, { plans: [{ key: 'pro', name: 'Pro', priceRules: [dated] }] })).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'plans.0.priceRules.0.effectiveFrom' } });
    await expect(planPricingConfig(server.services, merchant.id, { plans: [{ key: 'pro', name: 'Pro', effectiveFrom: '2099-01-01' } as never] })).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'plans.0.effectiveFrom' } });
  });
});

describe('plans as code', () => {
  const PLANS: PricingConfig = {
    ...CONFIG,
    plans: [
      {
        key: 'pro',
        name: 'Pro',
        priceRules: [
          { name: 'markup', type: 'MARKUP', config: { percent: '10' } },
          { name: 'output', type: 'FLAT', meterKey: 'output_tokens', config: { unitPrice: '0.0000005' } },
        ],
      },
      { key: 'team', name: 'Team', description: 'Per-seat customers' },
    ],
  };
  const percents = (rules: { config: unknown }[]) => rules.map((rule) => (rule.config as { percent?: string }).percent);

  it('shows plans and their rules in the diff, applies them, and is a no-op the second time', async () => {
    const merchant = await server.createMerchant();
    const plan = await planPricingConfig(server.services, merchant.id, PLANS);
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual([
      'create-meter output_tokens', 'add-price openai/gpt-5.4-mini', 'add-rule markup', 'add-rule output',
      'create-plan pro', 'add-rule pro/markup', 'add-rule pro/output', 'create-plan team',
    ]);
    const text = describeChanges(plan);
    expect(text).toContain('+ plan pro\n    + {"name":"Pro"}');
    expect(text).toContain('+ plan team\n    + {"description":"Per-seat customers","name":"Team"}');
    expect(text).toContain('+ rule "pro/markup"\n    + {"config":{"percent":"10"},"type":"MARKUP"}');
    expect(await server.services.plans.list(merchant.id, true)).toEqual([]);

    await applyPricingChanges(server.services, merchant.id, plan);
    expect((await server.services.plans.list(merchant.id)).map((row) => [row.key, row.name, row.description])).toEqual([['pro', 'Pro', null], ['team', 'Team', 'Per-seat customers']]);
    const pro = await server.services.priceRules.versions(merchant.id, 'pro');
    expect(pro.map((rule) => rule.name)).toEqual(['markup', 'output']);
    expect(pro.every((rule) => rule.planId === pro[0]!.planId && rule.planId !== null)).toBe(true);
    expect(await server.services.priceRules.versions(merchant.id, 'team')).toEqual([]);
    // The default book's rules of the same names are its own.
    expect(percents(await server.services.priceRules.allVersions(merchant.id))).toEqual(['25', undefined]);

    const again = await planPricingConfig(server.services, merchant.id, PLANS);
    expect(again).toEqual([]);
    expect(describeChanges(again)).toMatch(/No changes/);
  });

  it("a changed plan rule becomes a new version from now and leaves the default book's rule alone; a renamed plan shows as ~ plan", async () => {
    const merchant = await server.createMerchant();
    const start = new Date('2026-01-01');
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, PLANS, start), start);
    const changed: PricingConfig = {
      ...PLANS,
      plans: [{ ...PLANS.plans![0]!, name: 'Pro 2026', priceRules: [{ name: 'markup', type: 'MARKUP', config: { percent: '12' } }, PLANS.plans![0]!.priceRules![1]!] }, PLANS.plans![1]!],
    };
    const plan = await planPricingConfig(server.services, merchant.id, changed);
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['update-plan pro', 'add-rule pro/markup']);
    expect(describeChanges(plan)).toBe([
      '~ plan pro\n    - {"name":"Pro"}\n    + {"name":"Pro 2026"}',
      '~ rule "pro/markup" (new version from now)\n    - {"config":{"percent":"10"},"type":"MARKUP"}\n    + {"config":{"percent":"12"},"type":"MARKUP"}',
    ].join('\n'));
    await applyPricingChanges(server.services, merchant.id, plan);

    const versions = (await server.services.priceRules.versions(merchant.id, 'pro')).filter((rule) => rule.name === 'markup');
    expect(percents(versions)).toEqual(['10', '12']);
    expect(versions[0]!.effectiveFrom).toEqual(start);
    expect(versions[1]!.effectiveFrom > start).toBe(true);
    expect(percents((await server.services.priceRules.allVersions(merchant.id)).filter((rule) => rule.name === 'markup'))).toEqual(['25']);
    expect((await server.services.plans.get(merchant.id, 'pro')).name).toBe('Pro 2026');
    expect(await planPricingConfig(server.services, merchant.id, changed)).toEqual([]);
  });

  it('a plan archived since the last apply is restored, and the diff says so first', async () => {
    const merchant = await server.createMerchant();
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, PLANS));
    await server.services.plans.archive(merchant.id, 'team');
    const plan = await planPricingConfig(server.services, merchant.id, PLANS);
    expect(describeChanges(plan)).toBe('~ plan team\n    - {"archived":true,"description":"Per-seat customers","name":"Team"}\n    + {"description":"Per-seat customers","name":"Team"}');
    await applyPricingChanges(server.services, merchant.id, plan);
    expect((await server.services.plans.get(merchant.id, 'team')).archivedAt).toBeNull();
  });

  it('refuses an invalid plan before changing anything, naming the field', async () => {
    const merchant = await server.createMerchant();
    const withPlans = (plans: PricingConfig['plans']): PricingConfig => ({ ...CONFIG, plans });
    const cases: [PricingConfig, string][] = [
      [withPlans([{ key: 'Pro', name: 'Pro' }]), 'plans.0.key'],
      [withPlans([{ key: 'pro', name: '' }]), 'plans.0.name'],
      [withPlans([{ key: 'pro', name: 'Pro' }, { key: 'pro', name: 'Again' }]), 'plans.1.key'],
      [withPlans([{ key: 'pro', name: 'Pro', priceRules: [{ name: '', type: 'MARKUP', config: { percent: '1' } }] }]), 'plans.0.priceRules.0.name'],
      [withPlans([{ key: 'pro', name: 'Pro', priceRules: [{ name: 'm', type: 'MARKUP', config: { percent: '1' } }, { name: 'm', type: 'MARKUP', config: { percent: '2' } }] }]), 'plans.0.priceRules.1.name'],
      [withPlans([{ key: 'pro', name: 'Pro', priceRules: [{ name: 'tiers', type: 'GRADUATED', config: { tiers: [] } }] }]), 'plans.0.priceRules.0.config.tiers'],
    ];
    for (const [config, field] of cases) {
      await expect(planPricingConfig(server.services, merchant.id, config), field).rejects.toMatchObject({ code: 'VALIDATION', details: { field } });
    }
    expect(await server.services.plans.list(merchant.id, true)).toEqual([]);
  });
});

describe('rules that would tie, and all-or-nothing applies', () => {
  const WITH_PLAN: PricingConfig = {
    ...CONFIG,
    plans: [{ key: 'pro', name: 'Pro', priceRules: [{ name: 'markup', type: 'MARKUP', config: { percent: '10' } }] }],
  };
  /** What the database holds for the merchant, read past the services' caches. */
  const stored = async (merchantId: string) => {
    const { prisma } = server.services;
    const where = { merchantId };
    return { meters: await prisma.meter.count({ where }), prices: await prisma.providerPrice.count({ where }), plans: await prisma.plan.count({ where }), rules: await prisma.priceRule.count({ where }) };
  };
  const NOTHING = { meters: 0, prices: 0, plans: 0, rules: 0 };

  it('the plan refuses two rules of one price book that would tie, naming the field and the other rule, and nothing is written', async () => {
    const merchant = await server.createMerchant();
    const again = { name: 'markup again', type: 'MARKUP' as const, config: { percent: '30' } };
    const cases: [PricingConfig, string, string, RegExp][] = [
      [{ ...CONFIG, priceRules: [...CONFIG.priceRules!, again] }, 'priceRules.2', 'markup', /^priceRules\.2: rule "markup again" would tie with rule "markup" \(priceRules\.0\) in this price book: both price the provider cost of every event/],
      // The same target however the file spells it: providers and models match case-insensitively.
      [{ ...CONFIG, priceRules: [{ name: 'a', type: 'MARKUP', provider: 'OpenAI', config: { percent: '1' } }, { name: 'b', type: 'MARKUP', provider: ' openai', config: { percent: '2' } }] }, 'priceRules.1', 'a', /\(priceRules\.0\)/],
      // In a plan's book; a quantity rule of any kind competes for its meter.
      [{ ...WITH_PLAN, plans: [{ key: 'pro', name: 'Pro', priceRules: [{ name: 'flat', type: 'FLAT', meterKey: 'output_tokens', config: { unitPrice: '1' } }, CONFIG.priceRules![1]!] }] }, 'plans.0.priceRules.1', 'flat', /\(plans\.0\.priceRules\.0\)/],
    ];
    for (const [config, field, conflictingRule, message] of cases) {
      const error = await planPricingConfig(server.services, merchant.id, config).then(
        () => new Error('expected a VALIDATION error'),
        (caught: unknown) => caught as Error,
      );
      expect(error, field).toMatchObject({ code: 'VALIDATION', details: { field, conflictingRule } });
      expect(error.message).toMatch(message);
    }
    // Rules of the same target in different books do not tie: a plan's rule overrides the default one.
    expect(await planPricingConfig(server.services, merchant.id, WITH_PLAN)).toHaveLength(6);
    expect(await stored(merchant.id)).toEqual(NOTHING);
  });

  it('the plan refuses a rule that would tie with a stored rule the file does not list', async () => {
    const merchant = await server.createMerchant();
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, CONFIG));
    const before = await stored(merchant.id);
    const renamed: PricingConfig = { ...CONFIG, priceRules: [{ name: 'margin', type: 'MARKUP', config: { percent: '25' } }] };
    const error = await planPricingConfig(server.services, merchant.id, renamed).then(
      () => new Error('expected a VALIDATION error'),
      (caught: unknown) => caught as Error,
    );
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'priceRules.0', conflictingRule: 'markup' } });
    expect(error.message).toContain('the stored rule "markup", which this file does not list, in this price book');
    expect(error.message).toContain('or archive "markup" first');
    expect(await stored(merchant.id)).toEqual(before);
    // Once the old rule is archived, the new one takes its place.
    await server.services.priceRules.archive(merchant.id, 'markup');
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, renamed));
    expect(await planPricingConfig(server.services, merchant.id, renamed)).toEqual([]);
  });

  it('rules may trade targets in one file: only the result has to be free of ties', async () => {
    const merchant = await server.createMerchant();
    const start = new Date('2026-01-01');
    const flat = (name: string, meterKey: string) => ({ name, type: 'FLAT' as const, meterKey, config: { unitPrice: '1' } });
    const meters: PricingConfig['meters'] = [
      { key: 'input', name: 'Input tokens', unit: 'token', source: 'INPUT_TOKENS' },
      { key: 'output', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' },
    ];
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, { meters, priceRules: [flat('a', 'input'), flat('b', 'output')] }, start), start);
    const swapped: PricingConfig = { meters, priceRules: [flat('a', 'output'), flat('b', 'input')] };
    const plan = await planPricingConfig(server.services, merchant.id, swapped);
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['add-rule a', 'add-rule b']);
    await applyPricingChanges(server.services, merchant.id, plan);
    expect(await planPricingConfig(server.services, merchant.id, swapped)).toEqual([]);
  });

  it('a rule tie that appears between plan and apply refuses the apply, and none of the earlier changes is written', async () => {
    const merchant = await server.createMerchant();
    const now = new Date('2026-06-01T00:00:00Z');
    const plan = await planPricingConfig(server.services, merchant.id, WITH_PLAN, now);
    // Meters, prices and plans are written before the rules, which come last.
    expect(plan.map((change) => change.kind)).toEqual(['create-meter', 'add-price', 'add-rule', 'add-rule', 'create-plan', 'add-rule']);
    // Meanwhile someone adds a default rule that ties with the file's "markup".
    await server.services.priceRules.put(merchant.id, { name: 'margin', type: 'MARKUP', config: { percent: '20' }, effectiveFrom: new Date('2026-05-01T00:00:00Z') });
    const before = await stored(merchant.id);
    expect(before).toEqual({ ...NOTHING, rules: 1 });

    await expect(applyPricingChanges(server.services, merchant.id, plan, now)).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'name', conflictingRule: 'margin' } });
    expect(await stored(merchant.id)).toEqual(before);
    // Nor do the services' caches show any of it.
    expect(await server.services.meters.active(merchant.id)).toEqual([]);
    expect(await server.services.providerPrices.rowsFor(merchant.id)).toEqual([]);
    expect(await server.services.plans.list(merchant.id, true)).toEqual([]);
    expect((await server.services.priceRules.allVersions(merchant.id)).map((rule) => rule.name)).toEqual(['margin']);

    // Planned again, the file is refused up front; with the other rule archived it applies whole.
    await expect(planPricingConfig(server.services, merchant.id, WITH_PLAN, now)).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'priceRules.0', conflictingRule: 'margin' } });
    await server.services.priceRules.archive(merchant.id, 'margin', null, new Date('2026-05-15T00:00:00Z'));
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, WITH_PLAN, now), now);
    expect(await stored(merchant.id)).toEqual({ meters: 1, prices: 1, plans: 1, rules: 4 });
    expect((await server.services.meters.active(merchant.id)).map((meter) => meter.key)).toEqual(['output_tokens']);
  });

  it('a price written between plan and apply that clashes with the file refuses the apply, and the meter before it is not written', async () => {
    const merchant = await server.createMerchant();
    const now = new Date('2026-06-01T00:00:00Z');
    const plan = await planPricingConfig(server.services, merchant.id, CONFIG, now);
    expect(plan.map((change) => change.kind)).toEqual(['create-meter', 'add-price', 'add-rule', 'add-rule']);
    // Meanwhile another price for the same model is stored from the instant the apply will use.
    await server.services.providerPrices.add(merchant.id, { provider: 'openai', model: 'gpt-5.4-mini', perMillionTokens: { input: '1', output: '9' }, effectiveFrom: now });
    const before = await stored(merchant.id);

    await expect(applyPricingChanges(server.services, merchant.id, plan, now)).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'effectiveFrom', models: ['openai/gpt-5.4-mini'] } });
    expect(await stored(merchant.id)).toEqual(before);
    expect(await server.services.meters.list(merchant.id, true)).toEqual([]);
    expect((await server.services.providerPrices.rowsFor(merchant.id)).map((row) => row.perMillionTokens?.output)).toEqual(['9']);
  });
});

/**
 * What the diff shows as "-" is what the apply replaces: a meter, plan or rule written through the
 * API after the plan was made (while the CLI asked to confirm, say) refuses the apply, nothing
 * written, instead of being overwritten, taken over or restored unseen. Planned and applied on the
 * clock, as the CLI does, so that the API's writes fall between the two.
 */
describe('changes written between plan and apply', () => {
  const MARKUP_30: PricingConfig = { ...CONFIG, priceRules: [{ name: 'markup', type: 'MARKUP', config: { percent: '30' } }, CONFIG.priceRules![1]!] };
  const percentInForce = async (merchantId: string, name: string) => {
    const [rule] = rulesInForce((await server.services.priceRules.book(merchantId)).defaults, new Date()).filter((row) => row.name === name);
    return rule ? (rule.config as { percent: string }).percent : null;
  };

  it('a rule version put through the API refuses the apply; the meter change before it is not written; planned again, it applies', async () => {
    const merchant = await server.createMerchant();
    await planAndApply(merchant.id, CONFIG);
    const renamed = { ...MARKUP_30, meters: [{ ...CONFIG.meters![0]!, name: 'Output' }] };
    const plan = await planPricingConfig(server.services, merchant.id, renamed);
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['update-meter output_tokens', 'add-rule markup']);
    expect(describeChanges(plan)).toMatch(/- .*"percent":"25"/);
    await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '40' } });

    await expect(applyPricingChanges(server.services, merchant.id, plan)).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'priceRules' } });
    expect(await percentInForce(merchant.id, 'markup')).toBe('40');
    expect((await server.services.meters.list(merchant.id, true)).map((meter) => meter.name)).toEqual(['Output tokens']);

    const again = await planPricingConfig(server.services, merchant.id, renamed);
    expect(describeChanges(again)).toMatch(/- .*"percent":"40"/);
    await applyPricingChanges(server.services, merchant.id, again);
    expect(await percentInForce(merchant.id, 'markup')).toBe('30');
    expect((await server.services.meters.list(merchant.id, true)).map((meter) => meter.name)).toEqual(['Output']);
  });

  it('a rule archived through the API is not put back: the apply is refused', async () => {
    const merchant = await server.createMerchant();
    await planAndApply(merchant.id, CONFIG);
    const plan = await planPricingConfig(server.services, merchant.id, MARKUP_30);
    await server.services.priceRules.archive(merchant.id, 'markup');

    await expect(applyPricingChanges(server.services, merchant.id, plan)).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'priceRules' } });
    expect(await percentInForce(merchant.id, 'markup')).toBeNull();
  });

  it('a rule the file adds, created through the API meanwhile, is not given a new version unseen', async () => {
    const merchant = await server.createMerchant();
    await planAndApply(merchant.id, CONFIG);
    const targeted = { name: 'mini', type: 'MARKUP' as const, model: 'gpt-5.4-mini', config: { percent: '5' } };
    const plan = await planPricingConfig(server.services, merchant.id, { ...CONFIG, priceRules: [...CONFIG.priceRules!, targeted] });
    expect(describeChanges(plan)).toContain('+ rule "mini"');
    await server.services.priceRules.put(merchant.id, { ...targeted, config: { percent: '7' } });

    await expect(applyPricingChanges(server.services, merchant.id, plan)).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'priceRules' } });
    expect(await percentInForce(merchant.id, 'mini')).toBe('7');
  });

  it('a plan created through the API is not taken over, and one archived is not restored', async () => {
    const merchant = await server.createMerchant();
    const withPlans: PricingConfig = { plans: [{ key: 'pro', name: 'Pro' }, { key: 'team', name: 'Team' }] };
    await planAndApply(merchant.id, { plans: [{ key: 'pro', name: 'Pro' }] });
    const plan = await planPricingConfig(server.services, merchant.id, withPlans);
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['create-plan team']);
    await server.services.plans.put(merchant.id, { key: 'team', name: 'Team (sales)', description: null });

    await expect(applyPricingChanges(server.services, merchant.id, plan)).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'plans' } });
    expect((await server.services.plans.get(merchant.id, 'team')).name).toBe('Team (sales)');

    const renamed = await planPricingConfig(server.services, merchant.id, { plans: [{ key: 'pro', name: 'Pro plan' }] });
    expect(renamed.map((change) => `${change.kind} ${change.key}`)).toEqual(['update-plan pro']);
    await server.services.plans.archive(merchant.id, 'pro');
    await expect(applyPricingChanges(server.services, merchant.id, renamed)).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'plans' } });
    const pro = await server.services.plans.get(merchant.id, 'pro');
    expect([pro.name, pro.archivedAt !== null]).toEqual(['Pro', true]);
  });

  it('a meter archived through the API is not restored by a plan that showed it active', async () => {
    const merchant = await server.createMerchant();
    await planAndApply(merchant.id, { meters: CONFIG.meters });
    const plan = await planPricingConfig(server.services, merchant.id, { meters: [{ ...CONFIG.meters![0]!, unit: 'tokens' }] });
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['update-meter output_tokens']);
    await server.services.meters.archive(merchant.id, 'output_tokens');

    await expect(applyPricingChanges(server.services, merchant.id, plan)).rejects.toMatchObject({ code: 'CONFLICT', details: { field: 'meters' } });
    const [meter] = await server.services.meters.list(merchant.id, true);
    expect([meter!.unit, meter!.archivedAt !== null]).toEqual(['token', true]);
  });
});

describe('pricing as code in YAML', () => {
  const EXAMPLES = fileURLToPath(new URL('../../../../examples/pricing-as-code/', import.meta.url));
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-config-'));
  const write = (name: string, text: string) => {
    const file = path.join(dir, name);
    writeFileSync(file, text);
    return file;
  };
  /** What a plan would show: the diff, without the raw file values it came from. */
  const diff = (plan: Change[]) => plan.map(({ kind, key, ...rest }) => ({ kind, key, from: 'from' in rest ? rest.from : null, to: 'to' in rest ? rest.to : null }));

  it('applies a YAML file; applying it again has no changes', async () => {
    const merchant = await server.createMerchant();
    const file = write('tollgate.config.yml', [
      'meters:',
      '  - { key: output_tokens, name: Output tokens, unit: token, source: OUTPUT_TOKENS }',
      'priceRules:',
      '  - { name: markup, type: MARKUP, config: { percent: 25 } }',
      '  - name: output',
      '    type: GRADUATED',
      '    meterKey: output_tokens',
      '    config:',
      '      tiers:',
      '        - { upTo: 1000000, unitPrice: 0.000002 }',
      '        - { upTo: null, unitPrice: 0.000001 }',
      '',
    ].join('\n'));
    const config = await loadPricingConfig(file);
    // Unquoted decimals arrive as their exact text, never as floats.
    expect(config.priceRules?.[1]?.config).toEqual({ tiers: [{ upTo: 1000000, unitPrice: '0.000002' }, { upTo: null, unitPrice: '0.000001' }] });
    const plan = await planPricingConfig(server.services, merchant.id, config);
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['create-meter output_tokens', 'add-rule markup', 'add-rule output']);
    await applyPricingChanges(server.services, merchant.id, plan);

    const again = await planPricingConfig(server.services, merchant.id, await loadPricingConfig(file));
    expect(again).toEqual([]);
    // Written the JSON way (quoted), the same settings are still no change.
    const quoted = await planPricingConfig(server.services, merchant.id, { ...CONFIG, providerPrices: [] });
    expect(quoted).toEqual([]);
  });

  it('takes whole-number prices written bare (unitPrice: 2), and applying the file again has no changes', async () => {
    const merchant = await server.createMerchant();
    const file = write('whole.yaml', [
      'meters:',
      '  - { key: output_tokens, name: Output tokens, unit: token, source: OUTPUT_TOKENS }',
      '  - { key: images, name: Images, unit: image, source: IMAGES }',
      'providerPrices:',
      '  - { provider: openai, model: gpt-whole, perMillionTokens: { input: 2, output: 8 }, perImage: 1 }',
      'priceRules:',
      '  - { name: markup, type: MARKUP, config: { percent: 30, feePerRequest: 1 } }',
      '  - { name: images, type: FLAT, meterKey: images, config: { unitPrice: 2, minimumCharge: 1 } }',
      '  - { name: packs, type: PACKAGE, meterKey: output_tokens, model: pack-model, config: { packageSize: 1000, packagePrice: 5 } }',
      '  - name: output',
      '    type: GRADUATED',
      '    meterKey: output_tokens',
      '    config:',
      '      tiers:',
      '        - { upTo: 100, unitPrice: 2, flatFee: 10 }',
      '        - { upTo: null, unitPrice: 1 }',
      '',
    ].join('\n'));
    const plan = await planPricingConfig(server.services, merchant.id, await loadPricingConfig(file));
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual(['create-meter output_tokens', 'create-meter images', 'add-price openai/gpt-whole', 'add-rule markup', 'add-rule images', 'add-rule packs', 'add-rule output']);
    await applyPricingChanges(server.services, merchant.id, plan);
    expect(describeChanges(await planPricingConfig(server.services, merchant.id, await loadPricingConfig(file)))).toMatch(/No changes/);
    // The same prices quoted are the same prices.
    const quoted = write('quoted.yaml', readFileSync(file, 'utf8').replace(/(unitPrice|minimumCharge|packagePrice|flatFee|feePerRequest|input|output|perImage): (\d+)/g, '$1: "$2"'));
    expect(await planPricingConfig(server.services, merchant.id, await loadPricingConfig(quoted))).toEqual([]);
    // And they price as their decimal: 3 images at $2.
    const rule = (await server.services.priceRules.allVersions(merchant.id)).find((candidate) => candidate.name === 'images')!;
    expect(applyRule(toPricingRule(rule), { quantity: 3 }).chargeAttos).toBe(6n * 10n ** 18n);
  });

  it('the example as JSON and as YAML plans identically, and one applied leaves nothing for the other', async () => {
    const merchant = await server.createMerchant();
    const json = await loadPricingConfig(path.join(EXAMPLES, 'tollgate.config.json'));
    const yaml = await loadPricingConfig(path.join(EXAMPLES, 'tollgate.config.yaml'));
    const now = new Date('2026-06-01T00:00:00Z');
    const fromJson = await planPricingConfig(server.services, merchant.id, json, now);
    const fromYaml = await planPricingConfig(server.services, merchant.id, yaml, now);
    expect(fromJson).toHaveLength(9);
    expect(diff(fromYaml)).toEqual(diff(fromJson));
    expect(describeChanges(fromYaml)).toBe(describeChanges(fromJson));
    await applyPricingChanges(server.services, merchant.id, fromYaml, now);
    expect(await planPricingConfig(server.services, merchant.id, json, now)).toEqual([]);
  });

  it('a TypeScript config declares plans like JSON does', async () => {
    const merchant = await server.createMerchant();
    const json = await loadPricingConfig(path.join(EXAMPLES, 'tollgate.config.json'));
    const file = write('tollgate.config.ts', `const config = ${JSON.stringify(json, null, 2)};\nexport default config;\n`);
    const fromTs = await loadPricingConfig(file);
    expect(fromTs.plans?.map((plan) => plan.key)).toEqual(['pro']);
    const now = new Date('2026-06-01T00:00:00Z');
    expect(diff(await planPricingConfig(server.services, merchant.id, fromTs, now))).toEqual(diff(await planPricingConfig(server.services, merchant.id, json, now)));
  });

  it('a YAML syntax error names the file, line and column', async () => {
    const file = write('broken.yaml', 'meters:\n  - key: output_tokens\n    name: [Output tokens\npriceRules: []\n');
    const error = await loadPricingConfig(file).then(
      () => null,
      (caught: unknown) => caught as Error & { code: string; details: Record<string, unknown> },
    );
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'config', file, line: 4 } });
    expect(error!.message).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:4:\\d+: invalid YAML: `));
    expect(error!.message).not.toMatch(/\n\s+at /); // no stack trace
    const duplicate = write('duplicate.yaml', 'meters: []\nmeters: []\n');
    await expect(loadPricingConfig(duplicate)).rejects.toThrow(`${duplicate}:2:1: invalid YAML: Map keys must be unique`);
    await expect(loadPricingConfig(write('list.yaml', '- a\n- b\n'))).rejects.toThrow('must hold a pricing config object');
  });

  it('a JSON syntax error names the file, line and column too', async () => {
    const file = write('broken.json', '{\n  "meters": [],\n  "priceRules": [ { name: "x" } ]\n}\n');
    const error = await loadPricingConfig(file).then(
      () => null,
      (caught: unknown) => caught as Error & { code: string; details: Record<string, unknown> },
    );
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'config', file, line: 3, column: 21 } });
    expect(error!.message.startsWith(`${file}:3:21: invalid JSON: `)).toBe(true);
  });

  it('a JSON key given twice in one object is refused, naming the file, line, column and key, as in YAML', async () => {
    const refused = (file: string) => loadPricingConfig(file).then(() => null, (caught: unknown) => caught as Error & { code: string; details: Record<string, unknown> });
    const setting = write('setting.json', '{\n  "priceRules": [\n    { "name": "m", "type": "MARKUP", "config": { "percent": "10",\n      "percent": "20" } }\n  ]\n}\n');
    const error = await refused(setting);
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'config', file: setting, line: 4, column: 7 } });
    expect(error!.message).toBe(`${setting}:4:7: invalid JSON: keys must be unique, and "percent" is given twice in the object at priceRules.0.config`);
    // Compared as JSON reads them: an escaped key is the same key.
    const escaped = write('escaped.json', '{ "meters": [], "\\u006deters": [] }');
    expect((await refused(escaped))!.message).toBe(`${escaped}:1:17: invalid JSON: keys must be unique, and "meters" is given twice in the top-level object`);
    // The same key in different objects, or as a value, is no duplicate.
    const fine = write('fine.json', JSON.stringify({ priceRules: [{ name: 'name', type: 'MARKUP', config: { percent: '1' } }, { name: 'b', type: 'MARKUP', provider: 'x', config: { percent: '2' } }] }));
    expect((await loadPricingConfig(fine)).priceRules).toHaveLength(2);
  });
});

describe('a file is checked and normalized while planning', () => {
  /** What the database holds for the merchant, read past the services' caches. */
  const stored = async (merchantId: string) => {
    const { prisma } = server.services;
    const where = { merchantId };
    return { meters: await prisma.meter.count({ where }), prices: await prisma.providerPrice.count({ where }), plans: await prisma.plan.count({ where }), rules: await prisma.priceRule.count({ where }) };
  };
  const NOTHING = { meters: 0, prices: 0, plans: 0, rules: 0 };
  const refusal = (promise: Promise<unknown>) => promise.then(() => new Error('expected a VALIDATION error'), (caught: unknown) => caught as Error);

  it('names written with spaces around, and providers by alias, are compared as stored: applying twice changes nothing', async () => {
    const merchant = await server.createMerchant();
    const spaced: PricingConfig = {
      meters: [{ key: 'tokens', name: 'Tokens ', unit: ' token', source: 'TOTAL_TOKENS' }],
      providerPrices: [
        { provider: ' OpenAI ', model: 'gpt-x ', perMillionTokens: { input: '1', output: '2' } },
        { provider: 'claude', model: ' claude-x', perMillionTokens: { input: '3', output: '4' }, effectiveFrom: '2099-01-01' },
      ],
      priceRules: [
        { name: 'markup ', type: 'MARKUP', provider: 'Claude ', model: ' claude-x ', config: { percent: '10' } },
        { name: ' tokens', type: 'FLAT', meterKey: ' tokens ', config: { unitPrice: '0.001' } },
      ],
      plans: [{ key: 'pro', name: ' Pro ', description: ' For teams ', priceRules: [{ name: ' pro markup ', type: 'MARKUP', config: { percent: '5' } }] }],
    };
    const now = new Date('2026-06-01T00:00:00Z');
    const plan = await planPricingConfig(server.services, merchant.id, spaced, now);
    expect(plan.map((change) => `${change.kind} ${change.key}`)).toEqual([
      'create-meter tokens', 'add-price openai/gpt-x', 'add-price anthropic/claude-x', 'add-rule markup', 'add-rule tokens', 'create-plan pro', 'add-rule pro/pro markup',
    ]);
    await applyPricingChanges(server.services, merchant.id, plan, now);
    for (const later of [now, new Date('2026-07-01T00:00:00Z')]) expect(await planPricingConfig(server.services, merchant.id, spaced, later)).toEqual([]);

    expect((await server.services.meters.list(merchant.id, true)).map((meter) => [meter.name, meter.unit])).toEqual([['Tokens', 'token']]);
    expect((await server.services.providerPrices.rowsFor(merchant.id)).map((row) => `${row.provider}/${row.model}`).sort()).toEqual(['anthropic/claude-x', 'openai/gpt-x']);
    expect((await server.services.priceRules.allVersions(merchant.id)).map((rule) => [rule.name, rule.provider, rule.model, rule.meterKey])).toEqual([
      ['markup', 'anthropic', 'claude-x', null],
      ['tokens', null, null, 'tokens'],
    ]);
    expect((await server.services.plans.get(merchant.id, 'pro'))).toMatchObject({ name: 'Pro', description: 'For teams' });
  });

  it('the same decimal written another way is no change, in prices and in rule settings; another value is one', async () => {
    const merchant = await server.createMerchant();
    const now = new Date('2026-06-01T00:00:00Z');
    const meters: PricingConfig['meters'] = [{ key: 'tokens', name: 'Tokens', unit: 'token', source: 'TOTAL_TOKENS' }];
    const file = (rate: string, percent: string, fee: string, tierPrice: string, upTo: string | number): PricingConfig => ({
      meters,
      providerPrices: [
        { provider: 'openai', model: 'gpt-x', perMillionTokens: { input: rate, output: '4.50' } },
        { provider: 'openai', model: 'gpt-x', perMillionTokens: { input: rate, output: '5' }, effectiveFrom: '2099-01-01' },
      ],
      priceRules: [
        { name: 'markup', type: 'MARKUP', config: { percent, feePerRequest: fee } },
        { name: 'tokens', type: 'GRADUATED', meterKey: 'tokens', config: { tiers: [{ upTo, unitPrice: tierPrice, flatFee: '1.0' }, { upTo: null, unitPrice: '0.000001' }] } },
      ],
      plans: [{ key: 'pro', name: 'Pro', priceRules: [{ name: 'markup', type: 'MARKUP', config: { percent } }] }],
    });
    await planAndApply(merchant.id, file('0.10', '10', '0.0010', '0.000002', 1000), now);
    const before = await server.services.prisma.providerPrice.count({ where: { merchantId: merchant.id } });
    expect(await planPricingConfig(server.services, merchant.id, file('0.1', '10.0', '0.001', '0.0000020', '1000'), now)).toEqual([]);
    expect(await planPricingConfig(server.services, merchant.id, file('00.100', '010.00', '0.00100', '0.000002', '1000.0'), now)).toEqual([]);
    // Written the other way in the file than it is stored: still the same.
    const other = file('0.10', '10', '0.0010', '0.000002', 1000);
    other.providerPrices = other.providerPrices!.map((price) => ({ ...price, perMillionTokens: { input: '0.1', output: price.effectiveFrom ? '5.00' : '4.5' } }));
    expect(await planPricingConfig(server.services, merchant.id, other, now)).toEqual([]);
    // A different value is a change, however it is written.
    const changed = await planPricingConfig(server.services, merchant.id, file('0.11', '10.5', '0.001', '0.000003', 1000), now);
    expect(changed.map((change) => `${change.kind} ${change.key}`)).toEqual(['add-price openai/gpt-x', 'add-price openai/gpt-x', 'add-rule markup', 'add-rule tokens', 'add-rule pro/markup']);
    expect(await server.services.prisma.providerPrice.count({ where: { merchantId: merchant.id } })).toBe(before);
  });

  it('dates are read strictly, as the DateTime scalar reads them, and must be in the years 1 to 9999', async () => {
    const merchant = await server.createMerchant();
    const now = new Date('2026-06-01T00:00:00Z');
    const dated = (effectiveFrom: unknown): PricingConfig => ({ providerPrices: [{ provider: 'openai', model: 'gpt-x', perMillionTokens: { input: '1', output: '2' }, effectiveFrom: effectiveFrom as string }] });
    const cases: [unknown, RegExp][] = [
      ['+010000-01-01', /years 1 to 9999/],
      ['0000-12-31', /years 1 to 9999/],
      ['2099-02-30', /must be a date/], // would roll over to March 2nd
      ['2099-01-01T00:00', /must be a date/], // no zone: would be read in the zone of whoever applies it
      ['1', /must be a date/],
      [20990101, /must be a date/],
      [new Date(Number.NaN), /must be a date/],
    ];
    for (const [effectiveFrom, message] of cases) {
      const error = await refusal(planPricingConfig(server.services, merchant.id, dated(effectiveFrom), now));
      expect(error, String(effectiveFrom)).toMatchObject({ code: 'VALIDATION', details: { field: 'providerPrices.0.effectiveFrom' } });
      expect(error.message).toMatch(message);
    }
    const withZone = await planPricingConfig(server.services, merchant.id, dated('2099-01-01T00:00:00+02:00'), now);
    expect(withZone.map((change) => change.kind === 'add-price' && change.effectiveFrom)).toEqual(['2098-12-31T22:00:00.000Z']);
    // A .ts config may give a Date.
    const asDate = await planPricingConfig(server.services, merchant.id, dated(new Date('2099-01-01T00:00:00Z')), now);
    expect(asDate.map((change) => change.kind === 'add-price' && change.effectiveFrom)).toEqual(['2099-01-01T00:00:00.000Z']);
    expect(await stored(merchant.id)).toEqual(NOTHING);
  });

  /** Each file is refused while planning with VALIDATION on `field`, its message starting with the field. */
  async function expectRefusedWhilePlanning(merchantId: string, cases: [unknown, string, RegExp][]) {
    for (const [config, field, message] of cases) {
      const error = await refusal(planPricingConfig(server.services, merchantId, config as PricingConfig));
      expect(error, field).toMatchObject({ code: 'VALIDATION', details: { field } });
      expect(error.message, field).toMatch(new RegExp(`^${field.replace(/\./g, '\\.')}: `));
      expect(error.message, field).toMatch(message);
    }
  }

  it('a malformed file is refused while planning, before any diff, naming the entry, and nothing is written', async () => {
    const merchant = await server.createMerchant();
    const meter = { key: 'tokens', name: 'Tokens', unit: 'token', source: 'TOTAL_TOKENS' };
    const markup = (name: string) => ({ name, type: 'MARKUP', provider: name, config: { percent: '1' } });
    const price = { provider: 'openai', model: 'gpt-x', perMillionTokens: { input: '1', output: '2' } };
    const cases: [unknown, string, RegExp][] = [
      [[], 'config', /must be an object/],
      [{ priceRule: [] }, 'priceRule', /not a field of a pricing config/],
      [{ meters: 'x' }, 'meters', /must be a list/],
      [{ priceRules: {} }, 'priceRules', /must be a list/],
      [{ providerPrices: 1 }, 'providerPrices', /must be a list/],
      [{ plans: [{ key: 'pro', name: 'Pro', priceRules: 'x' }] }, 'plans.0.priceRules', /must be a list/],
      [{ meters: ['tokens'] }, 'meters.0', /must be an object/],
      [{ meters: [{ ...meter, source: 'TOKENS' }] }, 'meters.0.source', /must be one of INPUT_TOKENS, /],
      [{ meters: [{ ...meter, aggregation: 'AVG' }] }, 'meters.0.aggregation', /must be one of SUM, COUNT, MAX/],
      [{ meters: [{ ...meter, key: 'Tokens' }] }, 'meters.0.key', /must start with a letter/],
      [{ meters: [{ ...meter, key: 7 }] }, 'meters.0.key', /must start with a letter/],
      [{ meters: [{ ...meter, name: 'x'.repeat(256) }] }, 'meters.0.name', /at most 255/],
      [{ meters: [{ ...meter, unit: 'u'.repeat(33) }] }, 'meters.0.unit', /at most 32/],
      [{ meters: [{ ...meter, name: 7 }] }, 'meters.0.name', /must be text/],
      [{ meters: [{ ...meter, name: 'To\u0000kens' }] }, 'meters.0.name', /NUL/],
      [{ meters: [meter, { ...meter, name: 'Again' }] }, 'meters.1.key', /declared twice/],
      [{ meters: [{ ...meter, aggregate: 'MAX' }] }, 'meters.0.aggregate', /not a field here/],
      [{ priceRules: [{ ...markup('a'), name: 42 }] }, 'priceRules.0.name', /must be text/],
      [{ priceRules: [markup('a'), markup('b'), markup('c'), { ...markup('d'), provider: 7 }] }, 'priceRules.3.provider', /must be text/],
      [{ priceRules: [{ ...markup('a'), provider: ' ' }] }, 'priceRules.0.provider', /must not be empty/],
      [{ priceRules: [{ ...markup('a'), type: 'MARKUPP' }] }, 'priceRules.0.type', /must be one of FLAT, MARKUP/],
      [{ priceRules: [{ ...markup('a'), config: undefined }] }, 'priceRules.0.config', /must be an object/],
      [{ priceRules: [{ ...markup('a'), config: ['x'] }] }, 'priceRules.0.config', /must be an object/],
      [{ priceRules: [{ ...markup('a'), config: { percent: '1', note: 'a\u0000' } }] }, 'priceRules.0.config.note', /NUL/],
      [{ priceRules: [{ ...markup('a'), name: 'm\ud800' }] }, 'priceRules.0.name', /surrogate/],
      [{ priceRules: [{ ...markup('a'), name: 'm'.repeat(101) }] }, 'priceRules.0.name', /at most 100/],
      [{ priceRules: [{ ...markup('a'), meter: 'tokens' }] }, 'priceRules.0.meter', /not a field here/],
      [{ providerPrices: [{ ...price, provider: 7 }] }, 'providerPrices.0.provider', /must be text/],
      [{ providerPrices: [{ ...price, model: undefined }] }, 'providerPrices.0.model', /is required/],
      [{ providerPrices: [{ ...price, model: 'gpt\u0000' }] }, 'providerPrices.0.model', /NUL/],
      [{ providerPrices: [{ ...price, perImageBy: { ['hd\u0000']: '0.1' } }] }, 'providerPrices.0.perImageBy', /NUL/],
      [{ plans: [{ key: 'pro', name: 7 }] }, 'plans.0.name', /must be text/],
      [{ plans: [{ key: 'pro', name: 'Pro', description: 'a\u0000' }] }, 'plans.0.description', /NUL/],
      [{ plans: [{ key: 'pro', name: 'Pro', priceRules: [{ ...markup('a'), provider: 7 }] }] }, 'plans.0.priceRules.0.provider', /must be text/],
    ];
    await expectRefusedWhilePlanning(merchant.id, cases);
    expect(await stored(merchant.id)).toEqual(NOTHING);
  });

  it('a rule setting, a price rate or a currency the services would refuse is refused while planning, named by its entry, and nothing is written', async () => {
    const merchant = await server.createMerchant();
    const markup = (config: Record<string, unknown>) => ({ name: 'm', type: 'MARKUP', config });
    const flat = (extra: Record<string, unknown>) => ({ name: 'f', type: 'FLAT', meterKey: 'tokens', config: { unitPrice: '0.01' }, ...extra });
    const meters = [{ key: 'tokens', name: 'Tokens', unit: 'token', source: 'TOTAL_TOKENS' }];
    const price = { provider: 'openai', model: 'gpt-x', perMillionTokens: { input: '1', output: '2' } };
    const cases: [unknown, string, RegExp][] = [
      [{ priceRules: [markup({ percent: 'lots' })] }, 'priceRules.0.config.percent', /decimal/],
      [{ priceRules: [markup({ percent: '1', perUnit: '2' })] }, 'priceRules.0.config.perUnit', /not a setting of a MARKUP rule/],
      [{ priceRules: [markup({ percent: 33.3 })] }, 'priceRules.0.config.percent', /lost digits/],
      // A whole number is exact; a fraction written as a number went through a float.
      [{ meters, priceRules: [flat({ config: { unitPrice: 0.1 } })] }, 'priceRules.0.config.unitPrice', /decimal string such as "0.15", not a JSON number: 0.1 may already have lost digits/],
      [{ meters, priceRules: [flat({ config: { unitPrice: '1', minimumCharge: 0.5 } })] }, 'priceRules.0.config.minimumCharge', /lost digits/],
      [{ meters, priceRules: [flat({ config: { unitPrice: -2 } })] }, 'priceRules.0.config.unitPrice', /negative/],
      [{ providerPrices: [{ ...price, perMillionTokens: { input: 0.75 } }] }, 'providerPrices.0.perMillionTokens.input', /lost digits/],
      [{ meters, priceRules: [flat({ config: { tiers: [] } })] }, 'priceRules.0.config.tiers', /not a setting of a FLAT rule/],
      [{ meters, priceRules: [flat({ type: 'GRADUATED', config: { tiers: [{ upTo: null, unitPrice: '1', fee: '1' }] } })] }, 'priceRules.0.config.tiers.0.fee', /not a setting of a tier/],
      [{ priceRules: [{ ...markup({ percent: '1' }), meterKey: 'tokens' }] }, 'priceRules.0.meterKey', /must not be set on a MARKUP rule/],
      [{ priceRules: [flat({ meterKey: undefined })] }, 'priceRules.0.meterKey', /is required for a FLAT rule/],
      [{ priceRules: [flat({ model: 'm'.repeat(300) })] }, 'priceRules.0.model', /at most/],
      // A meter neither stored nor declared in the file: the rule would price nothing.
      [{ meters, priceRules: [flat({ meterKey: 'tokenz' })] }, 'priceRules.0.meterKey', /no active meter has the key "tokenz"/],
      [{ meters, plans: [{ key: 'pro', name: 'Pro', priceRules: [markup({ percent: '1' }), flat({ meterKey: 'images' })] }] }, 'plans.0.priceRules.1.meterKey', /no active meter has the key "images"/],
      [{ plans: [{ key: 'pro', name: 'Pro', priceRules: [markup({ percent: '-1' })] }] }, 'plans.0.priceRules.0.config.percent', /negative/],
      [{ providerPrices: [price, { ...price, model: 'gpt-y', currency: 'EUR' }] }, 'providerPrices.1.currency', /only USD/],
      [{ providerPrices: [{ ...price, perMillionTokens: { input: 'one' } }] }, 'providerPrices.0.perMillionTokens.input', /decimal/],
      [{ providerPrices: [{ ...price, perMillionTokens: undefined }] }, 'providerPrices.0', /sets no rate/],
      [{ providerPrices: [{ ...price, perMilionTokens: { input: '1' } }] }, 'providerPrices.0.perMilionTokens', /not/],
    ];
    await expectRefusedWhilePlanning(merchant.id, cases);
    expect(await stored(merchant.id)).toEqual(NOTHING);

    // An archived meter is not known, unless the file declares it (which restores it).
    await server.services.meters.create(merchant.id, { key: 'gone', name: 'Gone', unit: 'u', source: 'REQUESTS' });
    await server.services.meters.archive(merchant.id, 'gone');
    await expectRefusedWhilePlanning(merchant.id, [[{ priceRules: [flat({ meterKey: 'gone' })] }, 'priceRules.0.meterKey', /no active meter has the key "gone"/]]);
    // A stored meter, or one the file declares, is known.
    await server.services.meters.create(merchant.id, { key: 'stored', name: 'Stored', unit: 'u', source: 'REQUESTS' });
    const known: PricingConfig = { meters: meters as PricingConfig['meters'], priceRules: [flat({ name: 'a' }), flat({ name: 'b', meterKey: 'stored', model: 'x' })] as PricingConfig['priceRules'] };
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, known));
    expect((await server.services.priceRules.allVersions(merchant.id)).map((rule) => rule.meterKey).sort()).toEqual(['stored', 'tokens']);
  });
});
