import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { OwnRedis } from '../../../test/own-redis.ts';
import { loadConfig } from '../../config.ts';
import { openRuntime } from '../../runtime.ts';
import { createLogger } from '../../shared/logger.ts';
import { parseDecimalAttos, parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { BalanceCache } from './balance-cache.ts';

/**
 * A Redis of this file's own: the test pauses it (CLIENT PAUSE), which on the shared one would
 * hold up the other test files' events.
 */
let redis: OwnRedis;
let redisUrl: string;
let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
let runtime: Awaited<ReturnType<typeof openRuntime>>;

beforeAll(async () => {
  redis = await OwnRedis.onFreePort();
  redisUrl = redis.url;
  redis.start();
  for (let attempt = 0; ; attempt++) {
    const probe = new Redis(redisUrl, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      await probe.ping();
      break;
    } catch (error) {
      if (attempt > 50) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      probe.disconnect();
    }
  }
  database = await createPostgresDatabase();
  runtime = await openRuntime(
    loadConfig({ DATABASE_URL: database.url, REDIS_URL: redisUrl, TOLLGATE_MASTER_KEY: randomBytes(32).toString('hex'), NODE_ENV: 'test' }),
    createLogger('silent'),
  );
}, 60_000);

afterAll(async () => {
  await runtime?.close();
  await database?.drop();
  await redis?.stop();
});

it('reads a balance only once its subscription is live, so a change made meanwhile is not missed for good', async () => {
  const { services } = runtime;
  const { merchant } = await services.merchants.create({ name: 'Subscribed first' });
  const customer = await services.customers.create(merchant.id, { externalId: 'late-subscriber' });
  await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('a', '1.00'), kind: 'PAID', idempotencyKey: 'seed' });
  const cache = new BalanceCache(services.db, services.pubsub);
  // Redis takes the SUBSCRIBE only when the pause ends; a debit commits in the meantime and its
  // event, published before the subscription is live, would never reach this cache.
  const admin = new Redis(redisUrl);
  await admin.call('CLIENT', 'PAUSE', '300', 'ALL');
  const first = cache.get(customer.id, 'USD');
  await new Promise((resolve) => setTimeout(resolve, 50));
  await services.ledger.debit(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountAttos: parseDecimalAttos('a', '0.40'), idempotencyKey: 'meanwhile' });
  expect((await first).available).toBe(parseDecimalNanos('a', '0.60'));
  admin.disconnect();
  cache.close();
});
