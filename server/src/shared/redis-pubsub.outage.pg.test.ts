import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from './logger.ts';
import { RedisPubSub } from './redis-pubsub.ts';

/** A Redis of this file's own, stopped and started again by the test. */
let redis: ChildProcess | undefined;
let port: number;

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port: free } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return free;
}

function startRedis(): void {
  redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
}

async function stopRedis(): Promise<void> {
  const child = redis;
  redis = undefined;
  if (child && child.exitCode === null) await new Promise((resolve) => child.once('exit', resolve).kill('SIGKILL'));
}

async function eventually(check: () => Promise<boolean>, withinMs: number): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

afterAll(stopRedis);

describe('RedisPubSub while Redis is away', () => {
  it('reports the lost connection, refuses to confirm subscriptions at once, and confirms them again once Redis is back', { timeout: 60_000 }, async () => {
    port = await freePort();
    startRedis();
    const pubsub = new RedisPubSub(`redis://127.0.0.1:${port}`, createLogger('silent'));
    try {
      const topic = 'outage-test';
      const events = pubsub.subscribe(topic);
      expect(await eventually(() => pubsub.ready().then(() => true, () => false), 10_000)).toBe(true);
      let interrupted = 0;
      pubsub.onInterrupted(() => (interrupted += 1));

      await stopRedis();
      expect(await eventually(async () => interrupted > 0, 5000)).toBe(true);
      const started = Date.now();
      const answer = await pubsub.ready().then(() => 'confirmed', () => 'refused');
      expect({ answer, fast: Date.now() - started < 500 }).toEqual({ answer: 'refused', fast: true });

      startRedis();
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
