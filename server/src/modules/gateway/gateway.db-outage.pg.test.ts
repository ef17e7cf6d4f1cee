import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { startFakeProvider, type FakeProvider } from '../../../test/fake-provider.ts';
import { testConfig } from '../../../test/server.ts';
import { TcpRelay } from '../../../test/tcp-relay.ts';
import { createApp, type App } from '../../app.ts';
import { openRuntime } from '../../runtime.ts';
import { openDatabase } from '../../shared/db/database.ts';
import { createLogger } from '../../shared/logger.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';

/**
 * PostgreSQL out of reach for longer than the settlement's limited retries last (a restart or a
 * failover): the server reaches it through a TCP proxy that the test cuts (open connections
 * destroyed, new ones refused) and restores. A call the provider served meanwhile is charged
 * and logged once the database is back.
 */
let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
let proxy: TcpRelay;
let provider: FakeProvider;
let runtime: Awaited<ReturnType<typeof openRuntime>>;
let app: App;
let url: string;

beforeAll(async () => {
  database = await createPostgresDatabase();
  const direct = new URL(database.url);
  proxy = new TcpRelay({ host: direct.hostname, port: Number(direct.port || 5432) });
  const proxied = new URL(database.url);
  proxied.hostname = '127.0.0.1';
  proxied.port = String(await proxy.listen());
  provider = await startFakeProvider();
  const config = testConfig({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' });
  runtime = await openRuntime(config, createLogger(config.logLevel), { db: await openDatabase({ kind: 'postgres', url: proxied.toString(), connectTimeoutMs: 2000 }) });
  app = await createApp(runtime.services);
  ({ url } = await app.listen(0, '127.0.0.1'));
}, 60_000);

afterAll(async () => {
  proxy?.restore();
  await app?.close();
  await runtime?.close();
  await proxy?.close();
  await provider?.close();
  await database?.drop();
});

describe('a database outage longer than the limited retries', () => {
  it('charges and logs, once it is back, a call served while it was away', { timeout: 60_000 }, async () => {
    const { services } = runtime;
    const { merchant, key } = await services.merchants.create({ name: 'Outage' });
    await services.gatewaySettings.putHost(merchant.id, { host: new URL(provider.url).host, provider: 'openai-compatible' });
    const customer = await services.customers.create(merchant.id, { externalId: 'outage' });
    await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: 5_000_000_000n, kind: 'PAID', idempotencyKey: 'seed' });
    const call = (headers: Record<string, string> = {}) =>
      fetch(`${url}/v1/forward?u=${encodeURIComponent(`${provider.url}/v1/chat/completions`)}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.secret}`, 'x-tollgate-customer': customer.id, 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ model: 'gpt-5.4-mini', messages: [{ role: 'user', content: 'hi' }] }),
      });

    expect((await call()).status).toBe(200);
    await services.gateway.drain();
    // Admitted (from the gateway's caches), then the database goes away while the provider answers.
    const during = call({ 'x-fake-delay-ms': '1000' });
    await new Promise((resolve) => setTimeout(resolve, 300));
    proxy.cut();
    expect((await during).status).toBe(200);
    // Longer than the six attempts a failing charge had (about 6 s).
    await new Promise((resolve) => setTimeout(resolve, 8000));
    proxy.restore();
    await services.gateway.drain();

    const logs = await services.prisma.gatewayRequest.findMany({ where: { merchantId: merchant.id } });
    const events = await services.prisma.usageEvent.findMany({ where: { merchantId: merchant.id } });
    expect({ logs: logs.map((log) => log.usageEventId !== null), events: events.length }).toEqual({ logs: [true, true], events: 2 });
  });
});
