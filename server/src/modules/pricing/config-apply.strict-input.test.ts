import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliSettings, outputOf, runCli } from '../../../test/cli-process.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { loadConfig } from '../../config.ts';
import { openRuntime } from '../../runtime.ts';
import { createLogger } from '../../shared/logger.ts';
import { applyPricingChanges, loadPricingConfig, planPricingConfig, type PricingConfig } from './config-apply.ts';

/** Pricing as code and the CLI, as a careless integrator uses them: what a bug hunt found. */

const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-hunt-'));
const write = (name: string, text: string) => {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
};
const refusal = (promise: Promise<unknown>) => promise.then(() => null, (caught: unknown) => caught as Error & { code?: string; details?: Record<string, unknown> });

describe('pricing files: numbers are read as the file wrote them', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server?.close());

  it('a JSON number a double does not hold (1e-400 read as 0, 1.0000000000000001 as 1) is refused, naming where it is, not applied as another price', async () => {
    const tiny = write('tiny.json', '{ "providerPrices": [ { "provider": "openai", "model": "m", "perMillionTokens": { "input": 1e-400, "output": "2" } } ] }');
    const error = await refusal(loadPricingConfig(tiny));
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'providerPrices.0.perMillionTokens.input', file: tiny } });
    expect(error!.message).toBe(`${tiny}: providerPrices.0.perMillionTokens.input: 1e-400 is a number JSON reads as 0, not as written: write it as a decimal string, e.g. "0.15"`);
    const rounded = write('rounded.json', '{ "priceRules": [ { "name": "m", "type": "MARKUP", "config": { "percent": "10", "feePerRequest": 1.0000000000000001 } } ] }');
    expect(await refusal(loadPricingConfig(rounded))).toMatchObject({ code: 'VALIDATION', details: { field: 'priceRules.0.config.feePerRequest' } });
    // Numbers a double holds are read as before: whole ones taken, fractions refused by the price's own check.
    const whole = write('whole.json', '{ "providerPrices": [ { "provider": "openai", "model": "m", "perMillionTokens": { "input": 2, "output": 1e1 } } ] }');
    expect((await loadPricingConfig(whole)).providerPrices?.[0]?.perMillionTokens).toEqual({ input: 2, output: 10 });
  });

  it('a YAML number in exponent notation is not read through a float: 1e-400 is not a price of 0, and a name keeps its text', async () => {
    const merchant = await server.createMerchant();
    const tiny = write('tiny.yaml', 'providerPrices:\n  - { provider: openai, model: m, perMillionTokens: { input: 1e-400, output: 2 } }\n');
    const error = await refusal(loadPricingConfig(tiny).then((config) => planPricingConfig(server.services, merchant.id, config)));
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'providerPrices.0.perMillionTokens.input' } });
    const rounded = write('rounded.yaml', 'priceRules:\n  - { name: m, type: MARKUP, config: { percent: 10, feePerRequest: 2.0000000000000001e0 } }\n');
    expect(await refusal(loadPricingConfig(rounded).then((config) => planPricingConfig(server.services, merchant.id, config)))).toMatchObject({
      code: 'VALIDATION', details: { field: 'priceRules.0.config.feePerRequest' },
    });
    // A whole number written so is still that number; other text is kept as written, not as a float made of it.
    const read = await loadPricingConfig(write('exact.yaml', [
      'providerPrices:',
      '  - { provider: openai, model: 1e-7, perMillionTokens: { input: 1, output: 2 }, contextTiers: [ { aboveInputTokens: 2e5, perMillionTokens: { input: 1.5e+1 } } ] }',
      '',
    ].join('\n')));
    expect(read.providerPrices).toEqual([{ provider: 'openai', model: '1e-7', perMillionTokens: { input: 1, output: 2 }, contextTiers: [{ aboveInputTokens: 200000, perMillionTokens: { input: 15 } }] }]);
    expect((await planPricingConfig(server.services, merchant.id, read)).map((change) => `${change.kind} ${change.key}`)).toEqual(['add-price openai/1e-7']);
  });

  it('a scheduled price too close to its date to replace is refused while planning, naming the entry, not shown in a diff that applying always refuses', async () => {
    const merchant = await server.createMerchant();
    const soon = new Date(Date.now() + 3 * 60_000).toISOString();
    const file = (input: string): PricingConfig => ({
      providerPrices: [
        { provider: 'openai', model: 'x', perMillionTokens: { input: '1' } },
        { provider: 'openai', model: 'x', perMillionTokens: { input }, effectiveFrom: soon },
      ],
    });
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file('3')));
    const error = await refusal(planPricingConfig(server.services, merchant.id, file('4')));
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'providerPrices.1' } });
    expect(error!.message).toMatch(/openai\/x has a version stored from .* with other rates: it is too close to replace/);
    // Its own rates are still no change.
    expect(await planPricingConfig(server.services, merchant.id, file('3'))).toEqual([]);
  });

  it('a JSON file saved with a byte order mark is read, as a YAML one is', async () => {
    const file = write('bom.json', '\uFEFF{ "meters": [ { "key": "out", "name": "Out", "unit": "token", "source": "OUTPUT_TOKENS" } ] }');
    expect((await loadPricingConfig(file)).meters?.map((meter) => meter.key)).toEqual(['out']);
  });
});

/** The operator CLI, run as a real process against its own database (as test/cli.test.ts runs it). */
describe('the CLI, as a careless integrator runs it', { timeout: 240_000 }, () => {
  let env: Record<string, string>;
  let dropDatabase: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    ({ env, drop: dropDatabase } = await cliSettings());
  });
  afterAll(() => dropDatabase?.());

  const cli = (extraEnv: Record<string, string>, ...args: string[]) => runCli({ ...env, ...extraEnv }, ...args);
  const storedPrices = async (merchantId: string) => {
    const runtime = await openRuntime(loadConfig({ ...env, TOLLGATE_MASTER_KEY: '1'.repeat(64) }), createLogger('silent'));
    try {
      return (await runtime.services.prisma.providerPrice.findMany({ where: { merchantId } })).map((row) => `${row.model} ${row.effectiveFrom.toISOString()}`).sort();
    } finally {
      await runtime.close();
    }
  };
  const TABLE = JSON.stringify({ openai: { models: { 'hunt-model': { cost: { input: 1, output: 2 } } } } });

  it('prices import refuses --dry-run, which it does not take, rather than importing for real; apply refuses --effective-from', async () => {
    const created = await cli({}, 'merchant', 'create', '--name', 'Dry Co');
    const merchantId = /merchant ([0-9a-f-]{36})/.exec(created.stdout)![1]!;
    const file = write('dry-api.json', TABLE);
    const dry = await cli({}, 'prices', 'import', file, '--merchant', merchantId, '--dry-run');
    expect(dry.code).toBe(1);
    expect(dry.stdout).toBe('');
    expect(dry.stderr).toMatch(/^--dry-run is not an option of "prices import" \(it takes --merchant, --effective-from\)/);
    const config = write('dated.json', JSON.stringify({ meters: [{ key: 'out', name: 'Out', unit: 'token', source: 'OUTPUT_TOKENS' }] }));
    const dated = await cli({}, 'apply', config, '--merchant', merchantId, '--yes', '--effective-from', '2099-01-01T00:00:00Z');
    expect(dated.code).toBe(1);
    expect(dated.stderr).toMatch(/^--effective-from is not an option of "apply" \(it takes --merchant, --dry-run, --yes\)/);
    expect(await storedPrices(merchantId)).toEqual([]);
  });

  it('prices import reads a relative path from where the command was run (INIT_CWD under npm run), as apply does', async () => {
    const created = await cli({}, 'merchant', 'create', '--name', 'Relative Co');
    const merchantId = /merchant ([0-9a-f-]{36})/.exec(created.stdout)![1]!;
    write('relative-api.json', TABLE);
    const imported = await cli({ INIT_CWD: dir }, 'prices', 'import', 'relative-api.json', '--merchant', merchantId, '--effective-from', '2099-01-01T00:00:00Z');
    expect(imported.stderr).toBe('');
    expect(imported.code).toBe(0);
    expect(imported.stdout).toContain('imported 1 price(s) in force from 2099-01-01T00:00:00.000Z');
  });

  it('npm run tollgate from a folder of the repository reads a relative path from that folder, though npm runs the CLI from the server workspace', async () => {
    const created = await cli({}, 'merchant', 'create', '--name', 'Example Co');
    const merchantId = /merchant ([0-9a-f-]{36})/.exec(created.stdout)![1]!;
    const example = fileURLToPath(new URL('../../../../examples/pricing-as-code/', import.meta.url));
    const { TOLLGATE_CWD: _typed, INIT_CWD: _init, ...inherited } = process.env;
    const planned = await outputOf(spawn('npm', ['run', '-s', 'tollgate', '--', 'apply', 'tollgate.config.yaml', '--merchant', merchantId, '--dry-run'], { cwd: example, env: { ...inherited, ...env } }));
    // The root script runs npm again from the root, which set INIT_CWD to the root: ENOENT /…/main/tollgate.config.yaml.
    expect(planned.stderr).not.toContain('ENOENT');
    expect(planned.code).toBe(0);
    expect(planned.stdout).toContain('+ meter input_tokens');
  });

  it('--effective-from is read as the DateTime scalar reads it: February 30th and a time without its zone are refused, not moved', async () => {
    const created = await cli({}, 'merchant', 'create', '--name', 'Dates Co');
    const merchantId = /merchant ([0-9a-f-]{36})/.exec(created.stdout)![1]!;
    const file = write('dates-api.json', TABLE);
    for (const time of ['2099-02-30T00:00:00Z', '2099-07-01T00:00:00']) {
      const refused = await cli({ TZ: 'America/New_York' }, 'prices', 'import', file, '--merchant', merchantId, '--effective-from', time);
      expect(refused.code, time).toBe(1);
      expect(refused.stderr.trim(), time).toBe('--effective-from must be an ISO 8601 time, e.g. 2026-07-01T00:00:00Z');
    }
    expect(await storedPrices(merchantId)).toEqual([]);
  });
});
