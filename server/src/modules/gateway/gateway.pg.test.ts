import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config.ts';
import { openRuntime } from '../../runtime.ts';
import { createLogger } from '../../shared/logger.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { startFakeProvider, type FakeProvider } from '../../../test/fake-provider.ts';
import { startServerProcess, type ServerProcess } from '../../../test/processes.ts';

/**
 * Two gateway instances on one PostgreSQL and Redis. Each keeps balances in memory; a change
 * made through the other instance must reach that memory through the ledger's events, so a
 * customer who has spent its credit elsewhere is refused before the provider is called.
 */
const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const masterKey = randomBytes(32).toString('hex');

let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
let instances: ServerProcess[] = [];
let runtime: Awaited<ReturnType<typeof openRuntime>>;
let provider: FakeProvider;

beforeAll(async () => {
  database = await createPostgresDatabase();
  provider = await startFakeProvider();
  const env = { DATABASE_URL: database.url, REDIS_URL: redisUrl, TOLLGATE_MASTER_KEY: masterKey, TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' };
  instances = await Promise.all([startServerProcess(env), startServerProcess(env)]);
  runtime = await openRuntime(loadConfig({ ...env, NODE_ENV: 'test' }), createLogger('silent'));
}, 120_000);

afterAll(async () => {
  await Promise.all(instances.map((instance) => instance.stop()));
  await runtime?.close();
  await provider?.close();
  await database?.drop();
});

describe('gateway across two server processes', () => {
  it('credit spent through instance B stops the next call on instance A, which had it cached', async () => {
    const [a, b] = instances as [ServerProcess, ServerProcess];
    const { merchant, key } = await runtime.services.merchants.create({ name: 'Two gateways' });
    await runtime.services.gatewaySettings.putHost(merchant.id, { host: new URL(provider.url).host, provider: 'openai-compatible' });
    const customer = await runtime.services.customers.create(merchant.id, { externalId: 'shared' });
    await runtime.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: 1_000_000_000n, kind: 'PAID', idempotencyKey: 'seed' });
    const call = (instance: ServerProcess) =>
      fetch(`${instance.url}/v1/forward?u=${encodeURIComponent(`${provider.url}/v1/chat/completions`)}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key.secret}`, 'x-tollgate-customer': 'shared', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-5.4-mini' }),
      });

    // A learns the balance (and subscribes to its changes) on a first call.
    expect((await call(a)).status).toBe(200);
    // The rest of the credit is spent through B's API.
    const spend = await fetch(`${b.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key.secret}` },
      body: JSON.stringify({
        query: 'query($c: ID!) { wallet(customerId: $c) { available { amount } } }',
        variables: { c: customer.id },
      }),
    });
    const available = ((await spend.json()) as any).data.wallet.available.amount as string;
    const debit = await fetch(`${b.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key.secret}` },
      body: JSON.stringify({
        query: 'mutation($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed } }',
        variables: { input: { customerId: customer.id, amount: available, idempotencyKey: 'spend-the-rest' } },
      }),
    });
    expect(((await debit.json()) as any).errors).toBeUndefined();

    // A hears of it over Redis (well within half a second): its next call is refused
    // without reaching the provider, though A's cached balance was positive a moment ago.
    await new Promise((resolve) => setTimeout(resolve, 500));
    provider.reset();
    const refused = await call(a);
    expect(refused.status).toBe(402);
    expect(((await refused.json()) as any).error.code).toBe('INSUFFICIENT_FUNDS');
    expect(provider.requests).toEqual([]);
  });
});

/** Configuration is cached per instance; a change made through another one must reach it at once (over Redis), not when the cache expires. */
describe('configuration changed through another instance', () => {
  const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

  it('a revoked secret key is refused by the gateway of an instance that had just let it through', async () => {
    const [a] = instances as [ServerProcess];
    const { merchant } = await runtime.services.merchants.create({ name: 'Revoked elsewhere' });
    await runtime.services.gatewaySettings.putHost(merchant.id, { host: new URL(provider.url).host, provider: 'openai-compatible' });
    const customer = await runtime.services.customers.create(merchant.id, { externalId: 'revoked' });
    await runtime.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: 1_000_000_000n, kind: 'PAID', idempotencyKey: 'seed' });
    const { apiKey, secret } = await runtime.services.apiKeys.create(merchant.id, { name: 'leaked', mode: 'live' });
    const call = () =>
      fetch(`${a.url}/v1/forward?u=${encodeURIComponent(`${provider.url}/v1/chat/completions`)}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${secret}`, 'x-tollgate-customer': 'revoked', 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-5.4-mini' }),
      });
    expect((await call()).status).toBe(200);

    await runtime.services.apiKeys.revoke(merchant.id, apiKey.id);
    await settle();
    provider.reset();
    const refused = await call();
    expect(refused.status).toBe(401);
    expect(provider.requests).toEqual([]);
  });

  it('a new price prices the next event on an instance that had the old one cached', async () => {
    const [a] = instances as [ServerProcess];
    const { merchant, key } = await runtime.services.merchants.create({ name: 'Repriced elsewhere' });
    const customer = await runtime.services.customers.create(merchant.id, { externalId: 'repriced' });
    await runtime.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: 10_000_000_000n, kind: 'PAID', idempotencyKey: 'seed' });
    await runtime.services.meters.create(merchant.id, { key: 'searches', name: 'Searches', unit: 'search', source: 'QUANTITY' });
    await runtime.services.priceRules.put(merchant.id, { name: 'searches', type: 'FLAT', meterKey: 'searches', config: { unitPrice: '0.01' }, effectiveFrom: new Date('2026-01-01') });
    const record = async (idempotencyKey: string) => {
      const response = await fetch(`${a.url}/v1/usage`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key.secret}` },
        body: JSON.stringify({ customer: 'repriced', idempotencyKey, quantities: { searches: 1 } }),
      });
      return ((await response.json()) as any).event.charge as string;
    };
    expect(await record('before')).toBe('0.01');

    await runtime.services.priceRules.put(merchant.id, { name: 'searches', type: 'FLAT', meterKey: 'searches', config: { unitPrice: '0.05' } });
    await settle();
    expect(await record('after')).toBe('0.05');

    await runtime.services.meters.archive(merchant.id, 'searches');
    await settle();
    expect(await record('archived')).toBe('0.00');
  });
});
