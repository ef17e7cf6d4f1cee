import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase, testDatabaseKind } from '../../../test/databases.ts';
import { startFakeProvider } from '../../../test/fake-provider.ts';
import { testConfig } from '../../../test/server.ts';
import { createApp } from '../../app.ts';
import { openRuntime } from '../../runtime.ts';
import { openDatabase, type DatabaseOptions } from '../../shared/db/database.ts';
import { createLogger } from '../../shared/logger.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';

/**
 * A gateway stream still running when the server stops is cut (once Apollo's grace period
 * ends), and must still be charged and logged before the database closes: the database is
 * opened again afterwards to look.
 */
const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function databaseThatOutlivesTheServer(): Promise<DatabaseOptions> {
  if (testDatabaseKind() === 'postgres') {
    const created = await createPostgresDatabase();
    cleanups.push(() => created.drop());
    return { kind: 'postgres', url: created.url };
  }
  const folder = mkdtempSync(path.join(tmpdir(), 'tollgate-shutdown-'));
  cleanups.push(() => rmSync(folder, { recursive: true, force: true }));
  return { kind: 'pglite', dataDir: path.join(folder, 'pglite') };
}

describe('stopping the server during a gateway stream', { timeout: 60_000 }, () => {
  it('charges and logs the cut stream before the database closes', async () => {
    const provider = await startFakeProvider();
    cleanups.push(() => provider.close());
    const options = await databaseThatOutlivesTheServer();
    const config = testConfig({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' });
    const runtime = await openRuntime(config, createLogger(config.logLevel), { db: await openDatabase(options) });
    const app = await createApp(runtime.services);
    const { url } = await app.listen(0, '127.0.0.1');
    const { services } = runtime;
    const { merchant, key } = await services.merchants.create({ name: 'Stopping' });
    await services.gatewaySettings.putHost(merchant.id, { host: new URL(provider.url).host, provider: 'openai-compatible' });
    const customer = await services.customers.create(merchant.id, { externalId: 'streaming' });
    await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: 5_000_000_000n, kind: 'PAID', idempotencyKey: 'seed' });

    // 18 events a second apart: still streaming when Apollo's 10 s grace period ends.
    const streamed = fetch(`${url}/v1/forward?u=${encodeURIComponent(`${provider.url}/v1/chat/completions`)}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key.secret}`, 'x-tollgate-customer': customer.id, 'content-type': 'application/json', 'x-fake-chunk-delay-ms': '1000' },
      body: JSON.stringify({ model: 'gpt-5.4-mini', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    }).then(
      async (response) => ({ status: response.status, body: await response.text().catch(() => 'cut') }),
      (error: unknown) => ({ status: 0, body: String(error) }),
    );
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await app.close();
    await runtime.close();
    expect((await streamed).status).toBe(200);

    const reopened = await openDatabase(options);
    try {
      const logs = await reopened.prisma.gatewayRequest.findMany({ where: { merchantId: merchant.id } });
      const events = await reopened.prisma.usageEvent.findMany({ where: { merchantId: merchant.id } });
      expect({ logged: logs.map((log) => [log.streamed, log.usageEventId !== null]), events: events.length }).toEqual({ logged: [[true, true]], events: 1 });
    } finally {
      await reopened.close();
    }
  });
});
