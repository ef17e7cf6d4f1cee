import { afterAll, describe, expect, it } from 'vitest';
import { eventually, OwnRedis } from '../../test/own-redis.ts';
import { createLogger } from './logger.ts';
import { RedisPubSub } from './redis-pubsub.ts';

/** A Redis of this file's own, stopped and started again by the test. */
let redis: OwnRedis;

afterAll(() => redis?.stop());

describe('RedisPubSub while Redis is away', () => {
  it('reports the lost connection, refuses to confirm subscriptions at once, and confirms them again once Redis is back', { timeout: 60_000 }, async () => {
    redis = await OwnRedis.onFreePort();
    redis.start();
    const pubsub = new RedisPubSub(redis.url, createLogger('silent'));
    try {
      const topic = 'outage-test';
      const events = pubsub.subscribe(topic);
      expect(await eventually(() => pubsub.ready().then(() => true, () => false), 10_000)).toBe(true);
      let interrupted = 0;
      pubsub.onInterrupted(() => (interrupted += 1));

      await redis.stop();
      expect(await eventually(async () => interrupted > 0, 5000)).toBe(true);
      const started = Date.now();
      const answer = await pubsub.ready().then(() => 'confirmed', () => 'refused');
      expect({ answer, fast: Date.now() - started < 500 }).toEqual({ answer: 'refused', fast: true });

      redis.start();
      expect(await eventually(() => pubsub.ready().then(() => true, () => false), 20_000)).toBe(true);
      // Resubscribed by itself: an event published now arrives.
      pubsub.publish(topic, { after: true });
      const next = await Promise.race([events.next(), new Promise<null>((resolve) => setTimeout(() => resolve(null), 5000))]);
      expect(next?.value).toEqual({ after: true });
    } finally {
      await pubsub.close();
    }
  });
});
