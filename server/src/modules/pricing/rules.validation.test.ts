import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { AppError } from '../../shared/errors.ts';
import { applyPricingChanges, planPricingConfig } from './config-apply.ts';

/**
 * Bad price rules through the GraphQL API: each is refused with a VALIDATION error naming the
 * field (never INTERNAL), and nothing is written.
 */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const PUT_RULE = `mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id name meterKey provider model config } }`;
const ARCHIVE_RULE = `mutation ($name: String!) { archivePriceRule(name: $name) { id archivedAt } }`;

type Input = Record<string, unknown>;

async function merchantWithMeter() {
  const merchant = await server.createMerchant();
  await server.services.meters.create(merchant.id, { key: 'tok', name: 'Tokens', unit: 'token', source: 'TOTAL_TOKENS' });
  const put = (input: Input) => server.graphql<any>(PUT_RULE, { input }, merchant.secret);
  const stored = () => server.services.prisma.priceRule.findMany({ where: { merchantId: merchant.id } });
  /** Puts `input`, expects a VALIDATION error on `field`, and that nothing was written. */
  const refused = async (input: Input, field: string) => {
    const answer = await put(input);
    expect(answer.errors?.[0]?.extensions, JSON.stringify(input)).toMatchObject({ code: 'VALIDATION', field });
    expect(await stored()).toEqual([]);
    return answer.errors![0]!;
  };
  return { merchant, put, stored, refused };
}

const flat = (extra: Input = {}, config: Input = { unitPrice: '0.001' }): Input => ({ name: 'flat', type: 'FLAT', meterKey: 'tok', config, ...extra });
const markup = (config: Input, extra: Input = {}): Input => ({ name: 'markup', type: 'MARKUP', config, ...extra });

describe('putPriceRule refuses text PostgreSQL cannot store, and text too long to be a name', () => {
  it('NUL and lone surrogates in the name, provider, model, meterKey or config', async () => {
    const { refused } = await merchantWithMeter();
    await refused(markup({ percent: '1' }, { model: 'g\u0000' }), 'rule.model');
    await refused(markup({ percent: '1' }, { provider: 'op\ud800en' }), 'rule.provider');
    await refused(markup({ percent: '1' }, { model: 'x\udc00' }), 'rule.model');
    await refused(flat({ meterKey: 'tok\u0000' }), 'rule.meterKey');
    await refused(markup({ percent: '1' }, { name: 'mark\u0000up' }), 'name');
    await refused(markup({ percent: '1', note: 'x\udc00' }), 'config');
    await refused(markup({ percent: '1\u0000' }), 'config');
    await refused(flat({}, { ['unit\u0000Price']: '1' }), 'config');
    await refused(flat({}, { unitPrice: '1', tiers: [{ note: '\ud800' }] }), 'config');
  });

  it('a provider, model or meterKey longer than 255 characters', async () => {
    const { refused, put } = await merchantWithMeter();
    // ~9,000 bytes of UTF-8: more than a btree index row holds.
    await refused(markup({ percent: '1' }, { model: '模'.repeat(3000) }), 'rule.model');
    await refused(markup({ percent: '1' }, { provider: 'p'.repeat(256) }), 'rule.provider');
    await refused(flat({ meterKey: 't'.repeat(256) }), 'rule.meterKey');
    await refused(markup({ percent: '1' }, { name: 'n'.repeat(101) }), 'name');
    expect((await put(markup({ percent: '1' }, { model: '模'.repeat(255) }))).errors).toBeUndefined();
  });

  it('archivePriceRule with a name no rule can have is VALIDATION, not INTERNAL', async () => {
    const { merchant } = await merchantWithMeter();
    const answer = await server.graphql<any>(ARCHIVE_RULE, { name: 'a\u0000' }, merchant.secret);
    expect(answer.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'name' });
    expect((await server.graphql<any>(ARCHIVE_RULE, { name: 'x\ud800' }, merchant.secret)).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'name' });
    expect((await server.graphql<any>(ARCHIVE_RULE, { name: 'ghost' }, merchant.secret)).errors?.[0]?.extensions).toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('putPriceRule checks the type of every setting', () => {
  it('refuses settings of the wrong type, naming them, instead of failing with INTERNAL or storing them', async () => {
    const { refused } = await merchantWithMeter();
    const tiers = (value: unknown, type = 'GRADUATED'): Input => ({ name: 'tiers', type, meterKey: 'tok', config: { tiers: value } });
    await refused(tiers([null]), 'rule.tiers.0');
    await refused(tiers([null], 'VOLUME'), 'rule.tiers.0');
    await refused(tiers([{ upTo: 10, unitPrice: '1' }, null]), 'rule.tiers.1');
    await refused(tiers(['1']), 'rule.tiers.0');
    await refused(tiers([[]]), 'rule.tiers.0');
    await refused(tiers('1'), 'rule.tiers');
    await refused(tiers({ upTo: null, unitPrice: '1' }), 'rule.tiers');
    await refused(tiers([{ upTo: true, unitPrice: '1' }, { upTo: null, unitPrice: '1' }]), 'rule.tiers.0.upTo');
    await refused(tiers([{ upTo: 1.5, unitPrice: '1' }, { upTo: null, unitPrice: '1' }]), 'rule.tiers.0.upTo');
    // A whole number is an exact price (YAML writes `unitPrice: 2`); a fraction went through a float.
    await refused(tiers([{ upTo: null, unitPrice: 0.1 }]), 'rule.tiers.0.unitPrice');
    await refused(tiers([{ upTo: null, unitPrice: '1', flatFee: 2.5 }]), 'rule.tiers.0.flatFee');
    await refused(tiers([{ upTo: null, unitPrice: '1', flatFee: [] }]), 'rule.tiers.0.flatFee');
    await refused(flat({}, { unitPrice: { amount: '1' } }), 'rule.unitPrice');
    await refused(flat({}, { unitPrice: '1', perUnits: true }), 'rule.perUnits');
    await refused(flat({}, { unitPrice: '1', minimumCharge: 0.5 }), 'rule.minimumCharge');
    await refused(flat({}, { unitPrice: Number.MAX_SAFE_INTEGER + 2 }), 'rule.unitPrice');
    await refused(flat({}, { unitPrice: -1 }), 'rule.unitPrice');
    await refused({ name: 'pkg', type: 'PACKAGE', meterKey: 'tok', config: { packageSize: [10], packagePrice: '1' } }, 'rule.packageSize');
    await refused(markup({ percent: ['25'] }), 'rule.percent');
    await refused(markup({ percent: true }), 'rule.percent');
    await refused(markup({ percent: '1', feePerRequest: {} }), 'rule.feePerRequest');
  });

  it('takes whole-number prices in a rule\'s JSON config, as it takes a whole-number percent', async () => {
    const { put } = await merchantWithMeter();
    const answer = await put({ name: 'tiers', type: 'GRADUATED', meterKey: 'tok', config: { tiers: [{ upTo: 100, unitPrice: 2, flatFee: 10 }, { upTo: null, unitPrice: 1 }], minimumCharge: 1 } });
    expect(answer.errors).toBeUndefined();
    expect(answer.data.putPriceRule.config).toEqual({ tiers: [{ upTo: 100, unitPrice: 2, flatFee: 10 }, { upTo: null, unitPrice: 1 }], minimumCharge: 1 });
  });

  it('a service caller\'s config that JSON cannot hold is VALIDATION too', async () => {
    const { merchant, stored } = await merchantWithMeter();
    const error = await server.services.priceRules.put(merchant.id, { name: 'big', type: 'FLAT', meterKey: 'tok', config: { unitPrice: '1', perUnits: 10n } }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(AppError);
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'config' } });
    expect(await stored()).toEqual([]);
  });
});

describe('putPriceRule refuses settings its kind does not take', () => {
  it('a misspelt key is refused, naming it and the keys the kind takes, instead of being stored and ignored', async () => {
    const { refused, put } = await merchantWithMeter();
    const perUnit = await refused(flat({}, { unitPrice: '1', perUnit: 1000 }), 'rule.perUnit');
    expect(perUnit.message).toContain('unitPrice, perUnits, minimumCharge');
    await refused(markup({ percent: '10', fee: '0.01' }), 'rule.fee');
    await refused(markup({ percent: '10', unitPrice: '1' }), 'rule.unitPrice');
    await refused({ name: 'pkg', type: 'PACKAGE', meterKey: 'tok', config: { packageSize: 10, packagePrice: '1', perUnits: 2 } }, 'rule.perUnits');
    const tier = await refused({ name: 't', type: 'GRADUATED', meterKey: 'tok', config: { tiers: [{ upTo: null, unitPrice: '1', flatfee: '5' }] } }, 'rule.tiers.0.flatfee');
    expect(tier.message).toContain('upTo, unitPrice, flatFee');
    // Named like a target field: it would be hidden when the rule is read, so it is refused too.
    await refused(flat({}, { unitPrice: '1', meter: 'other' }), 'rule.meter');
    await refused(markup({ percent: '10', provider: 'openai' }), 'rule.provider');
    // VOLUME keeps its own message for minimumCharge.
    const volume = await refused({ name: 'v', type: 'VOLUME', meterKey: 'tok', config: { tiers: [{ upTo: null, unitPrice: '1' }], minimumCharge: '1' } }, 'rule.minimumCharge');
    expect(volume.message).toContain('cannot be used with VOLUME tiers');
    // The real key is taken.
    const ok = await put(flat({}, { unitPrice: '1', perUnits: 1000 }));
    expect(ok.errors).toBeUndefined();
    expect(ok.data.putPriceRule.config).toEqual({ unitPrice: '1', perUnits: 1000 });
  });
});

describe('putPriceRule refuses rules that could never apply', () => {
  it('trims the meterKey, which is matched exactly, and refuses one no meter could have', async () => {
    const { put, refused } = await merchantWithMeter();
    await refused(flat({ meterKey: 'Tok' }), 'rule.meterKey');
    await refused(flat({ meterKey: 'tok tok' }), 'rule.meterKey');
    await refused(flat({ meterKey: '   ' }), 'rule.meterKey');
    const padded = await put(flat({ meterKey: ' tok ' }));
    expect(padded.errors).toBeUndefined();
    expect(padded.data.putPriceRule.meterKey).toBe('tok');
  });

  it('refuses a meterKey naming no meter of the merchant, or an archived one', async () => {
    const { merchant, put, refused } = await merchantWithMeter();
    const error = await refused(flat({ meterKey: 'ghost' }), 'rule.meterKey');
    expect(error.message).toContain('"ghost"');
    // Another merchant's meter is not this one's.
    const other = await server.createMerchant();
    await server.services.meters.create(other.id, { key: 'theirs', name: 'Theirs', unit: 'unit', source: 'REQUESTS' });
    await refused(flat({ meterKey: 'theirs' }), 'rule.meterKey');
    // Ingest counts only active meters, so a rule for an archived one would price nothing.
    await server.services.meters.create(merchant.id, { key: 'old', name: 'Old', unit: 'unit', source: 'REQUESTS' });
    await server.services.meters.archive(merchant.id, 'old');
    expect((await refused(flat({ name: 'old', meterKey: 'old' }), 'rule.meterKey')).message).toContain('meter "old" is archived');
    await expect(server.services.priceRules.putAll(merchant.id, [{ name: 'old', type: 'FLAT', meterKey: 'old', config: { unitPrice: '0.001' } }])).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'rule.meterKey' } });
    // Restored (as a pricing config's meters restore it), it may be priced again.
    await server.services.meters.update(merchant.id, 'old', { name: 'Old', unit: 'unit' });
    expect((await put(flat({ name: 'old', meterKey: 'old' }))).errors).toBeUndefined();
  });

  it('refuses a blank provider or model: null (omitted) is what matches any', async () => {
    const { put, refused } = await merchantWithMeter();
    await refused(markup({ percent: '1' }, { provider: '  ' }), 'rule.provider');
    await refused(markup({ percent: '1' }, { provider: '' }), 'rule.provider');
    await refused(markup({ percent: '1' }, { model: ' ' }), 'rule.model');
    const trimmed = await put(markup({ percent: '1' }, { provider: ' claude ', model: ' claude-haiku-4-5 ' }));
    expect(trimmed.data.putPriceRule).toMatchObject({ provider: 'anthropic', model: 'claude-haiku-4-5' });
  });
});

describe('MARKUP percent', () => {
  it('is exact: a JSON number with a fraction is refused, asking for a string; whole numbers and strings are taken', async () => {
    const { merchant, put, refused, stored } = await merchantWithMeter();
    // Sent as the JSON text a client would write; parsed, it is 33.333333333333336.
    const raw = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` },
      body: `{"query": ${JSON.stringify(PUT_RULE)}, "variables": {"input": {"name": "markup", "type": "MARKUP", "config": {"percent": 33.333333333333333333}}}}`,
    });
    const error = ((await raw.json()) as { errors: { message: string; extensions: Record<string, unknown> }[] }).errors[0]!;
    expect(error.extensions).toMatchObject({ code: 'VALIDATION', field: 'rule.percent' });
    expect(error.message).toMatch(/string/);
    expect(await stored()).toEqual([]);
    await refused(markup({ percent: 12.5 }), 'rule.percent');
    await refused(markup({ percent: 1e300 }), 'rule.percent');
    const exact = await put(markup({ percent: '33.333333333333333333' }));
    expect(exact.data.putPriceRule.config).toEqual({ percent: '33.333333333333333333' });
    // YAML configs write whole percents bare: those are exact.
    const whole = await put(markup({ percent: 30 }, { name: 'whole', provider: 'openai' }));
    expect(whole.errors).toBeUndefined();
  });

  it('is at most 1,000,000 percent', async () => {
    const { put, refused } = await merchantWithMeter();
    await refused(markup({ percent: '1000000.000000000000000001' }), 'rule.percent');
    await refused(markup({ percent: '999999999999' }), 'rule.percent');
    await refused(markup({ percent: 2_000_000 }), 'rule.percent');
    expect((await put(markup({ percent: '1000000' }))).errors).toBeUndefined();
  });
});

describe('a pricing config with a rule for an archived meter', () => {
  it('applies when the file lists the meter (restoring it in the same transaction)', async () => {
    const merchant = await server.createMerchant();
    const meter = { key: 'old', name: 'Old', unit: 'unit', source: 'REQUESTS' as const };
    await server.services.meters.create(merchant.id, meter);
    await server.services.meters.archive(merchant.id, 'old');
    const config = { meters: [meter], priceRules: [{ name: 'old', type: 'FLAT' as const, meterKey: 'old', config: { unitPrice: '0.001' } }] };
    const plan = await planPricingConfig(server.services, merchant.id, config);
    expect(plan.map((change) => change.kind)).toEqual(['update-meter', 'add-rule']);
    await applyPricingChanges(server.services, merchant.id, plan);
    expect((await server.services.meters.active(merchant.id)).map((active) => active.key)).toEqual(['old']);
    expect((await server.services.priceRules.allVersions(merchant.id)).map((rule) => rule.meterKey)).toEqual(['old']);
  });
});
