import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeProvider, type FakeProvider } from '../../../test/fake-provider.ts';
import { freePort } from '../../../test/own-redis.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';

/**
 * REDIS_URL set and Redis unreachable (here: nothing listens on its port). Charges and debits
 * work meanwhile (their events are lost); the gateway must not wait for Redis to confirm the
 * balance cache's subscription, which it cannot until Redis is back: it reads the database instead.
 */
let server: TestServer;
let provider: FakeProvider;

beforeAll(async () => {
  server = await startTestServer({ REDIS_URL: `redis://127.0.0.1:${await freePort()}`, TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' });
  provider = await startFakeProvider();
});
afterAll(async () => {
  await server?.close();
  await provider?.close();
});

describe('the gateway with Redis down', () => {
  it('answers calls at once, reading balances from the database', async () => {
    const merchant = await server.createMerchant();
    await server.services.gatewaySettings.putHost(merchant.id, { host: new URL(provider.url).host, provider: 'openai-compatible' });
    const customer = await server.services.customers.create(merchant.id, { externalId: 'redis-down' });
    await server.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: 2_000_000_000n, kind: 'PAID', idempotencyKey: 'seed' });
    await server.services.ledger.debit(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountAttos: 1_000_000_000n * 1_000_000_000n, idempotencyKey: 'debit' });
    const call = async () => {
      const started = Date.now();
      const response = await fetch(`${server.url}/v1/forward?u=${encodeURIComponent(`${provider.url}/v1/chat/completions`)}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${merchant.secret}`, 'x-tollgate-customer': customer.id, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-5.4-mini', messages: [{ role: 'user', content: 'hi' }] }),
        signal: AbortSignal.timeout(10_000),
      }).catch((error: unknown) => ({ status: String(error) }));
      return { status: response.status, fast: Date.now() - started < 3000 };
    };
    expect(await call()).toEqual({ status: 200, fast: true });
    // With nothing cached (no event can reach the cache), the next call reads the wallet again: spent, it is refused.
    await server.services.gateway.drain();
    const { available } = await server.services.ledgerQueries.wallet(merchant.id, customer.id, 'USD');
    await server.services.ledger.debit(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountAttos: available * 1_000_000_000n, idempotencyKey: 'rest' });
    expect(await call()).toEqual({ status: 402, fast: true });
  });
});
