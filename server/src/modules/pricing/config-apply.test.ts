import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { applyPricingChanges, describeChanges, loadPricingConfig, planPricingConfig, type Change, type PricingConfig } from './config-apply.ts';

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

  it('refuses an invalid file before changing anything, naming the field', async () => {
    const merchant = await server.createMerchant();
    const bad: PricingConfig = { ...CONFIG, priceRules: [{ name: 'broken', type: 'GRADUATED', config: { tiers: [] } }] };
    await expect(planPricingConfig(server.services, merchant.id, bad)).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'rule.tiers' } });
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, { meters: CONFIG.meters }));
    const sourceChange: PricingConfig = { meters: [{ key: 'output_tokens', name: 'x', unit: 'token', source: 'INPUT_TOKENS' }] };
    await expect(planPricingConfig(server.services, merchant.id, sourceChange)).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'meters.0.source' } });
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

  it('the example as JSON and as YAML plans identically, and one applied leaves nothing for the other', async () => {
    const merchant = await server.createMerchant();
    const json = await loadPricingConfig(path.join(EXAMPLES, 'tollgate.config.json'));
    const yaml = await loadPricingConfig(path.join(EXAMPLES, 'tollgate.config.yaml'));
    const now = new Date('2026-06-01T00:00:00Z');
    const fromJson = await planPricingConfig(server.services, merchant.id, json, now);
    const fromYaml = await planPricingConfig(server.services, merchant.id, yaml, now);
    expect(fromJson).toHaveLength(7);
    expect(diff(fromYaml)).toEqual(diff(fromJson));
    expect(describeChanges(fromYaml)).toBe(describeChanges(fromJson));
    await applyPricingChanges(server.services, merchant.id, fromYaml, now);
    expect(await planPricingConfig(server.services, merchant.id, json, now)).toEqual([]);
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
});
