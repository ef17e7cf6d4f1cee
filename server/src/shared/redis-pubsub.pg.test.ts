import { describe, expect, it } from 'vitest';
import { createLogger } from './logger.ts';
import { RedisPubSub } from './redis-pubsub.ts';

const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

describe('RedisPubSub', () => {
  it('delivers what was published just before close (a CLI that changed prices and exits)', async () => {
    const logger = createLogger('silent');
    const server = new RedisPubSub(redisUrl, logger);
    const topic = `close-test-${Date.now()}`;
    const events = server.subscribe(topic);
    await server.ready();
    // Published before its connection is even up: the events wait in its queue.
    const cli = new RedisPubSub(redisUrl, logger);
    for (let i = 0; i < 50; i++) cli.publish(topic, { i });
    await cli.close();
    const received: unknown[] = [];
    const deadline = Date.now() + 3000;
    while (received.length < 50 && Date.now() < deadline) {
      const next = await Promise.race([events.next(), new Promise<null>((resolve) => setTimeout(() => resolve(null), deadline - Date.now()))]);
      if (next && !next.done) received.push(next.value.i);
    }
    expect(received).toEqual(Array.from({ length: 50 }, (_, i) => i));
    await server.close();
  });
});
