import { pino } from 'pino';
import { expect } from 'vitest';
import { createApp } from '../src/app.ts';
import { openRuntime } from '../src/runtime.ts';
import type { Services } from '../src/services.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createTestDatabase, type TestDatabase } from './databases.ts';
import { eventually } from './own-redis.ts';
import { testConfig } from './server.ts';

/** Whether the instance's subscriptions are confirmed by Redis (false while it is unreachable). */
export const confirmed = (services: Services) => services.pubsub.ready().then(() => true, () => false);

export interface TwoInstances {
  database: TestDatabase;
  /** Serves HTTP and subscriptions. */
  a: { services: Services; url: string };
  /** A runtime only: it makes the changes. */
  b: Services;
  /** What B logged at warn and above (a publish it gave up on says so). */
  bLog: string[];
  close(): Promise<void>;
}

/**
 * Two server instances sharing one test database, each on the Redis URL given, started and
 * confirmed on Redis: what the cross-instance subscription tests run against.
 */
export async function startTwoInstances(redisUrls: { a: string; b: string }): Promise<TwoInstances> {
  const database = await createTestDatabase();
  const runtimeA = await openRuntime(testConfig({ REDIS_URL: redisUrls.a }), createLogger('silent'), { db: database.db });
  const app = await createApp(runtimeA.services);
  const { url } = await app.listen(0, '127.0.0.1');
  const bLog: string[] = [];
  const runtimeB = await openRuntime(testConfig({ REDIS_URL: redisUrls.b }), pino({ level: 'warn' }, { write: (line: string) => void bLog.push(line) }), { db: database.db });
  const b = runtimeB.services;
  expect(await eventually(async () => (await confirmed(runtimeA.services)) && (await confirmed(b)), 20_000)).toBe(true);
  return {
    database,
    a: { services: runtimeA.services, url },
    b,
    bLog,
    async close() {
      // B shares A's database: only A's runtime closes it.
      await b.stop();
      await b.pubsub.close();
      await app.close();
      await runtimeA.close();
      await database.close();
    },
  };
}
