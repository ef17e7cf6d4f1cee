/**
 * A server restarted with another TOLLGATE_MASTER_KEY than its data was written with: stored
 * provider keys can no longer be decrypted. The gateway refuses the calls that need one with a
 * message saying so and what to do (409 CONFLICT, reason PROVIDER_KEY_UNREADABLE) instead of
 * failing with 500 INTERNAL, and the server warns at start (it still starts: the key may have
 * been changed on purpose, and provider keys are set again through the running API).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../app.ts';
import { openRuntime, checkMasterKey } from '../../runtime.ts';
import { createLogger } from '../../shared/logger.ts';
import { startFakeProvider, type FakeProvider } from '../../../test/fake-provider.ts';
import { testConfig } from '../../../test/server.ts';

const KEY_A = randomBytes(32).toString('hex');
const KEY_B = randomBytes(32).toString('hex');
const PROVIDER_KEY = 'sk-openai-provider-key-0001';
const serverDir = fileURLToPath(new URL('../../..', import.meta.url));

let dataDir: string;
let fake: FakeProvider;
let tenant: { merchantId: string; secret: string; customerId: string };

/** A logger whose JSON lines are kept, to read what the start said. */
function capturingLogger() {
  const lines: { level: number; msg: string; [key: string]: unknown }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { logger, lines };
}

/** The server in this process on the data folder, under `masterKey`. */
async function boot(masterKey: string, logger = createLogger('silent')) {
  const config = testConfig({ TOLLGATE_MASTER_KEY: masterKey, TOLLGATE_DATA_DIR: dataDir, TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' });
  const runtime = await openRuntime(config, logger);
  const app = await createApp(runtime.services);
  const { url } = await app.listen(0, '127.0.0.1');
  return {
    url,
    services: runtime.services,
    async graphql(query: string, variables: Record<string, unknown>) {
      const response = await fetch(`${url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${tenant.secret}` },
        body: JSON.stringify({ query, variables }),
      });
      return (await response.json()) as { data?: any; errors?: unknown[] };
    },
    async close() {
      await app.close();
      await runtime.close();
    },
  };
}

const forward = (url: string) =>
  fetch(`${url}/v1/forward?u=${encodeURIComponent(`${fake.url}/v1/chat/completions`)}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tenant.secret}`, 'x-tollgate-customer': tenant.customerId, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
  });

const SET = 'mutation ($p: String!, $k: String!) { setProviderCredential(provider: $p, apiKey: $k) { id } }';

beforeAll(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), 'tollgate-master-key-'));
  fake = await startFakeProvider();
  // First life, under key A: a merchant with a stored OpenAI key and a customer with credit.
  const { logger, lines } = capturingLogger();
  const first = await boot(KEY_A, logger);
  try {
    // A fresh database has no provider keys: nothing to check, nothing said.
    expect(await checkMasterKey(first.services, logger)).toMatchObject({ checked: 0, unreadable: 0 });
    const { merchant, key } = await first.services.merchants.create({ name: 'Restarted' });
    tenant = { merchantId: merchant.id, secret: key.secret, customerId: '' };
    await first.services.gatewaySettings.putHost(merchant.id, { host: new URL(fake.url).host, provider: 'openai' });
    expect((await first.graphql(SET, { p: 'openai', k: PROVIDER_KEY })).errors).toBeUndefined();
    tenant.customerId = (await first.services.customers.create(merchant.id, { externalId: 'c' })).id;
    await first.services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, {
      customerId: tenant.customerId, currency: 'USD', amountNanos: 10n * 1_000_000_000n, kind: 'PAID', idempotencyKey: 'seed',
    });
    const call = await forward(first.url);
    expect(call.status).toBe(200);
    await call.arrayBuffer();
    expect(fake.requests.at(-1)!.headers.authorization).toBe(`Bearer ${PROVIDER_KEY}`);
    // Under the key it was stored with, the stored key reads: nothing said.
    expect(await checkMasterKey(first.services, logger)).toMatchObject({ checked: 1, unreadable: 0 });
    expect(lines.filter((line) => line.level >= 40)).toEqual([]);
    await first.services.gateway.drain();
  } finally {
    await first.close();
  }
}, 60_000);

afterAll(async () => {
  await fake?.close();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('restarted with another TOLLGATE_MASTER_KEY', () => {
  it('the gateway refuses calls needing the unreadable key with 409 naming it, never 500, and calls no provider', async () => {
    const { logger, lines } = capturingLogger();
    const second = await boot(KEY_B, logger);
    try {
      const check = await checkMasterKey(second.services, logger);
      expect(check).toMatchObject({ checked: 1, unreadable: 1, examples: [{ merchantId: tenant.merchantId, provider: 'openai', last4: '0001' }] });
      const warning = lines.find((line) => line.level === 40)!;
      expect(warning.msg).toMatch(/TOLLGATE_MASTER_KEY does not match this database/);
      expect(warning.msg).toMatch(/setProviderCredential/);
      expect(JSON.stringify(lines)).not.toContain(PROVIDER_KEY);

      fake.reset();
      for (let attempt = 0; attempt < 2; attempt++) {
        const refused = await forward(second.url);
        expect(refused.status).toBe(409);
        const body = (await refused.json()) as { error: Record<string, string> };
        expect(body.error).toMatchObject({ code: 'CONFLICT', reason: 'PROVIDER_KEY_UNREADABLE', provider: 'openai' });
        expect(body.error.message).toMatch(/openai API key cannot be decrypted with this server's TOLLGATE_MASTER_KEY.*setProviderCredential/);
      }
      expect(fake.requests).toHaveLength(0);
      await expect(second.services.providerCredentials.keyFor(tenant.merchantId, 'openai')).rejects.toMatchObject({
        code: 'CONFLICT',
        details: { reason: 'PROVIDER_KEY_UNREADABLE', provider: 'openai' },
      });

      // Setting the key again (sealed under the new master key) makes calls work at once.
      expect((await second.graphql(SET, { p: 'openai', k: 'sk-openai-provider-key-0002' })).errors).toBeUndefined();
      const call = await forward(second.url);
      expect(call.status).toBe(200);
      await call.arrayBuffer();
      expect(fake.requests.at(-1)!.headers.authorization).toBe('Bearer sk-openai-provider-key-0002');
      await second.services.gateway.drain();
    } finally {
      await second.close();
    }
  });

  it('the server process warns at start, and starts', async () => {
    // A third master key: the key set again above (under B) is unreadable too.
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: serverDir,
      env: {
        ...process.env,
        PORT: '0',
        HOST: '127.0.0.1',
        NODE_ENV: 'test',
        LOG_LEVEL: 'warn',
        TOLLGATE_SEED_DEMO: 'false',
        TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true',
        TOLLGATE_DATA_DIR: dataDir,
        TOLLGATE_MASTER_KEY: randomBytes(32).toString('hex'),
        DATABASE_URL: '',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      // Started (the banner), then warned (right after it).
      let deadline = Date.now() + 60_000;
      for (const [expected, what] of [[/GraphQL API:/, 'start'], [/does not match this database/, 'warn']] as const) {
        while (!expected.test(output)) {
          if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}:\n${output}`);
          if (Date.now() > deadline) throw new Error(`server did not ${what} in time:\n${output}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        deadline = Date.now() + 10_000;
      }
      const url = /GraphQL API:\s+(http:\/\/\S+)\/graphql/.exec(output)![1]!;
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      const warning = output.split('\n').find((line) => line.includes('does not match this database'))!;
      expect(JSON.parse(warning)).toMatchObject({ level: 40, checked: 1, unreadable: 1 });
      const refused = await forward(url);
      expect(refused.status).toBe(409);
      expect(((await refused.json()) as { error: { reason: string } }).error.reason).toBe('PROVIDER_KEY_UNREADABLE');
    } finally {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
    }
  }, 90_000);
});
