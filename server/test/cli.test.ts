import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.ts';
import { openRuntime } from '../src/runtime.ts';
import { createLogger } from '../src/shared/logger.ts';
import { cliSettings, runCli, type ProcessOutput } from './cli-process.ts';
import { testDatabaseKind } from './databases.ts';

/** The operator CLI, run as a real process against the database the server would use. */
let env: Record<string, string>;
let dropDatabase: (() => Promise<void>) | undefined;

function cli(...args: string[]): Promise<ProcessOutput> {
  return cliWith({}, ...args);
}

/** The CLI with some variables set (or emptied) on top of the test's. */
function cliWith(extraEnv: Record<string, string>, ...args: string[]): Promise<ProcessOutput> {
  return runCli({ ...env, ...extraEnv }, ...args);
}

beforeAll(async () => {
  ({ env, drop: dropDatabase } = await cliSettings());
});
afterAll(() => dropDatabase?.());

// Each CLI run is a fresh process opening the database (PGlite takes seconds to start).
describe('tollgate CLI', { timeout: 180_000 }, () => {
  it('creates a merchant whose printed key authenticates, then lists and revokes keys', async () => {
    const created = await cli('merchant', 'create', '--name', 'Bootstrap Inc');
    expect(created.code, created.stderr).toBe(0);
    const merchantId = /merchant ([0-9a-f-]{36})/.exec(created.stdout)?.[1];
    const secret = /(sk_test_[A-Za-z0-9_-]{43})/.exec(created.stdout)?.[1];
    expect(merchantId).toBeDefined();
    expect(secret).toBeDefined();

    const listed = await cli('merchant', 'list');
    expect(listed.stdout).toContain(`${merchantId}  Bootstrap Inc`);

    const liveKey = await cli('key', 'create', '--merchant', merchantId!, '--live', '--name', 'prod');
    const liveSecret = /(sk_live_[A-Za-z0-9_-]{43})/.exec(liveKey.stdout)?.[1];
    const liveKeyId = /key ([0-9a-f-]{36})/.exec(liveKey.stdout)?.[1];
    expect(liveSecret).toBeDefined();

    const revoked = await cli('key', 'revoke', '--merchant', merchantId!, '--key', liveKeyId!);
    expect(revoked.code, revoked.stderr).toBe(0);

    // The CLI has exited; open the same database the way the server does and check the keys.
    const config = loadConfig({ ...env, TOLLGATE_MASTER_KEY: '1'.repeat(64) });
    const runtime = await openRuntime(config, createLogger('silent'));
    try {
      expect(await runtime.services.apiKeys.authenticate(secret!)).toMatchObject({ merchantId, mode: 'test' });
      expect(await runtime.services.apiKeys.authenticate(liveSecret!)).toBeNull();
    } finally {
      await runtime.close();
    }
  });

  it('applies pricing as code: a dry run changes nothing, --yes applies, a second run has nothing to do', async () => {
    const created = await cli('merchant', 'create', '--name', 'Config Co');
    const merchantId = /merchant ([0-9a-f-]{36})/.exec(created.stdout)![1]!;
    const file = fileURLToPath(new URL('../../examples/pricing-as-code/tollgate.config.json', import.meta.url));
    const dry = await cli('apply', file, '--merchant', merchantId, '--dry-run');
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('+ meter output_tokens');
    expect(dry.stdout).toContain('+ rule "AI markup"');
    expect(dry.stdout).toContain('+ plan pro');
    expect(dry.stdout).toContain('+ rule "pro/AI markup"');
    const refused = await cli('apply', file, '--merchant', merchantId);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toContain('Nothing applied');
    const applied = await cli('apply', file, '--merchant', merchantId, '--yes');
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stdout).toContain('Applied 9 change(s).');
    const again = await cli('apply', file, '--merchant', merchantId, '--yes');
    expect(again.stdout).toContain('No changes');
    // The YAML example declares the same pricing.
    const yaml = await cli('apply', file.replace(/\.json$/, '.yaml'), '--merchant', merchantId, '--dry-run');
    expect(yaml.code, yaml.stderr).toBe(0);
    expect(yaml.stdout).toContain('No changes');
  });

  it('names what the file no longer lists, which applying leaves pricing, rather than saying the merchant matches the file', async () => {
    const created = await cli('merchant', 'create', '--name', 'Shrinking Co');
    const merchantId = /merchant ([0-9a-f-]{36})/.exec(created.stdout)![1]!;
    const folder = mkdtempSync(path.join(tmpdir(), 'tollgate-cli-unlisted-'));
    const markup = (name: string, provider?: string) => ({ name, type: 'MARKUP', ...(provider ? { provider } : {}), config: { percent: '5' } });
    writeFileSync(path.join(folder, 'before.json'), JSON.stringify({ priceRules: [markup('markup'), markup('promo', 'openai')] }));
    writeFileSync(path.join(folder, 'after.json'), JSON.stringify({ priceRules: [markup('markup')] }));
    const applied = await cli('apply', path.join(folder, 'before.json'), '--merchant', merchantId, '--yes');
    expect(applied.code, applied.stderr).toBe(0);
    const shrunk = await cli('apply', path.join(folder, 'after.json'), '--merchant', merchantId, '--dry-run');
    expect(shrunk.code, shrunk.stderr).toBe(0);
    expect(shrunk.stdout.trim()).toBe('No changes: what the file lists is already in force.\nNot in the file, left as they are (archive one to stop it):\n  rule "promo"');
  });

  it('refuses a malformed config file before showing a diff, naming the entry, without a stack trace', async () => {
    const created = await cli('merchant', 'create', '--name', 'Malformed Co');
    const merchantId = /merchant ([0-9a-f-]{36})/.exec(created.stdout)![1]!;
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'tollgate-cli-config-')), 'tollgate.config.yaml');
    writeFileSync(file, 'meters:\n  - { key: input_tokens, name: Input tokens, unit: token, source: INPUT_TOKENS }\n  - { key: tokens, name: Tokens, unit: token, source: TOKENS }\n');
    const refused = await cli('apply', file, '--merchant', merchantId, '--yes');
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr.trim()).toBe('meters.1.source: must be one of INPUT_TOKENS, CACHED_INPUT_TOKENS, OUTPUT_TOKENS, TOTAL_TOKENS, REQUESTS, IMAGES, AUDIO_SECONDS, CHARACTERS, QUANTITY, UNCACHED_INPUT_TOKENS, CACHE_WRITE_TOKENS, REASONING_TOKENS');
  });

  it('imports a models.dev file too large for one GraphQL request, at the time given, and refuses a time that is not ISO 8601', async () => {
    const created = await cli('merchant', 'create', '--name', 'Price Table Co');
    const merchantId = /merchant ([0-9a-f-]{36})/.exec(created.stdout)![1]!;
    // The sample's OpenAI models, copied under new names until the file outgrows the 1 MiB request limit.
    const sample = JSON.parse(readFileSync(new URL('../src/modules/pricing/models-dev.sample.json', import.meta.url), 'utf8'));
    const [name, model] = Object.entries(sample.openai.models as Record<string, Record<string, unknown>>).find(([, entry]) => entry.cost)!;
    const bulk = structuredClone(sample);
    for (let i = 0; i < 3000; i++) bulk.openai.models[`${name}-copy-${i}`] = { ...model, id: `${name}-copy-${i}` };
    const text = JSON.stringify(bulk, null, 2);
    expect(Buffer.byteLength(text)).toBeGreaterThan(1024 * 1024);
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'tollgate-cli-prices-')), 'api.json');
    writeFileSync(file, text);

    const badTime = await cli('prices', 'import', file, '--merchant', merchantId, '--effective-from', 'next week');
    expect(badTime.code).toBe(1);
    expect(badTime.stderr.trim()).toBe('--effective-from must be an ISO 8601 time, e.g. 2026-07-01T00:00:00Z');

    const imported = await cli('prices', 'import', file, '--merchant', merchantId, '--effective-from', '2026-07-01T00:00:00Z');
    expect(imported.code, imported.stderr).toBe(0);
    const count = Number(/imported (\d+) price\(s\) in force from 2026-07-01T00:00:00.000Z/.exec(imported.stdout)?.[1]);
    expect(count).toBeGreaterThan(3000);
    const runtime = await openRuntime(loadConfig({ ...env, TOLLGATE_MASTER_KEY: '1'.repeat(64) }), createLogger('silent'));
    try {
      const stored = await runtime.services.prisma.providerPrice.findMany({ where: { merchantId, model: { startsWith: `${name}-copy-` } } });
      expect(stored).toHaveLength(3000);
      expect(new Set(stored.map((row) => row.effectiveFrom.toISOString()))).toEqual(new Set(['2026-07-01T00:00:00.000Z']));
      expect(await runtime.services.prisma.providerPrice.count({ where: { merchantId } })).toBe(count);
    } finally {
      await runtime.close();
    }
    // Again: the same prices at the same time are already there; nothing changes.
    const again = await cli('prices', 'import', file, '--merchant', merchantId, '--effective-from', '2026-07-01T00:00:00Z');
    expect(again.code, again.stderr).toBe(0);
  });

  it('lists a key in its rotation grace period as active until then, and a revoked key as revoked', async () => {
    const created = await cli('merchant', 'create', '--name', 'Rotating Co');
    const merchantId = /merchant ([0-9a-f-]{36})/.exec(created.stdout)![1]!;
    const rotating = /key ([0-9a-f-]{36})/.exec((await cli('key', 'create', '--merchant', merchantId, '--name', 'rotating')).stdout)![1]!;
    const revokedId = /key ([0-9a-f-]{36})/.exec((await cli('key', 'create', '--merchant', merchantId, '--name', 'gone')).stdout)![1]!;
    const runtime = await openRuntime(loadConfig({ ...env, TOLLGATE_MASTER_KEY: '1'.repeat(64) }), createLogger('silent'));
    let graceEnds: Date;
    try {
      await runtime.services.apiKeys.rotate(merchantId, rotating, 3600);
      graceEnds = (await runtime.services.apiKeys.get(merchantId, rotating)).revokedAt!;
      await runtime.services.apiKeys.revoke(merchantId, revokedId);
    } finally {
      await runtime.close();
    }
    const listed = await cli('key', 'list', '--merchant', merchantId);
    expect(listed.code, listed.stderr).toBe(0);
    const lineOf = (id: string) => listed.stdout.split('\n').find((line) => line.startsWith(id));
    expect(lineOf(rotating)).toMatch(new RegExp(`  rotating  active until ${graceEnds.toISOString()}$`));
    expect(lineOf(revokedId)).toMatch(/ {2}gone {2}revoked \S+Z$/);
  });

  it('answers a merchant id that names no merchant with "was not found", for every command taking one', async () => {
    const unknown = '6f1c1a4e-3b1d-4a53-9d76-0b6f0f7f7a11';
    const listed = await cli('key', 'list', '--merchant', unknown);
    expect(listed.code).toBe(1);
    expect(listed.stdout).toBe('');
    expect(listed.stderr.trim()).toBe(`Merchant ${unknown} was not found`);
    // Text that is not a UUID at all: the same answer, not the database's complaint about it.
    const file = fileURLToPath(new URL('../../examples/pricing-as-code/tollgate.config.json', import.meta.url));
    for (const args of [['key', 'create'], ['key', 'list'], ['key', 'revoke', '--key', unknown], ['apply', file, '--dry-run']]) {
      const refused = await cli(...args, '--merchant', 'abc');
      expect(refused.code, args.join(' ')).toBe(1);
      expect(refused.stdout, args.join(' ')).toBe('');
      expect(refused.stderr.trim(), args.join(' ')).toBe('Merchant abc was not found');
    }
  });

  it('explains its usage and fails clearly on bad input', async () => {
    const help = await cli('help');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('merchant create --name');
    const missing = await cli('merchant', 'create');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('--name is required');
    const unknown = await cli('frobnicate');
    expect(unknown.code).toBe(2);
  });

  it('refuses an unknown command or a missing option before opening the database: nothing is created in an empty data folder', async () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'tollgate-cli-untouched-'));
    // An unreachable database, were it opened, would fail differently (or wait): these never reach it.
    const settings = { TOLLGATE_DATA_DIR: empty, DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/none' };
    const unknown = await cliWith(settings, 'bogus');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "bogus"');
    for (const [args, option] of [[['merchant', 'create'], 'name'], [['key', 'revoke', '--merchant', 'm'], 'key'], [['apply', 'pricing.json'], 'merchant']] as const) {
      const refused = await cliWith(settings, ...args);
      expect(refused.code, args.join(' ')).toBe(1);
      expect(refused.stderr, args.join(' ')).toContain(`--${option} is required`);
    }
    expect(readdirSync(empty)).toEqual([]);
  });

  it('exits 0 when help is asked for, however it is asked, and 2 when no command is given', async () => {
    for (const args of [['help'], ['--help'], ['-h'], ['merchant', 'list', '--help']]) {
      const help = await cli(...args);
      expect(help.code, args.join(' ')).toBe(0);
      expect(help.stdout, args.join(' ')).toContain('usage: npm run tollgate -- <command> [options]');
      expect(help.stderr, args.join(' ')).toBe('');
    }
    const none = await cli();
    expect(none.code).toBe(2);
    expect(none.stdout).toContain('usage: npm run tollgate -- <command> [options]');
  });

  it('reads an empty LOG_LEVEL as unset, and refuses an unknown one by name without a stack trace', async () => {
    const listed = await cliWith({ LOG_LEVEL: '' }, 'merchant', 'list');
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stderr).toBe('');
    const refused = await cliWith({ LOG_LEVEL: 'warning' }, 'merchant', 'list');
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr.trim()).toBe('LOG_LEVEL must be one of trace, debug, info, warn, error, fatal, silent, got "warning"');
  });

  // PGlite only: PostgreSQL is shared by any number of processes by design.
  if (testDatabaseKind() === 'pglite') it('refuses an embedded database the server holds open, and takes it over once the server is gone', async () => {
    const config = loadConfig({ ...env, TOLLGATE_MASTER_KEY: '1'.repeat(64) });
    const server = await openRuntime(config, createLogger('silent'));
    let refused: Awaited<ReturnType<typeof cli>>;
    try {
      const { merchant } = await server.services.merchants.create({ name: 'Busy Co' });
      refused = await cli('key', 'create', '--merchant', merchant.id);
      // The server holding it keeps working.
      await server.services.customers.create(merchant.id, { externalId: 'after-cli' });
    } finally {
      await server.close();
    }
    expect(refused.code).toBe(1);
    expect(refused.stdout).not.toContain('sk_test_');
    expect(refused.stderr).toMatch(/in use by another process \(pid \d+\): stop it first/);
    // A lock left by a process that is gone (a crash) does not keep the database shut.
    writeFileSync(`${config.dataDir}/pglite.lock`, '2147483646');
    const listed = await cli('merchant', 'list');
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain('Busy Co');
  });
});
