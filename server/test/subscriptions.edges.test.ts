import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { InMemoryPubSub, withScheduledPushes, type EventPayload } from '../src/shared/pubsub.ts';
import { startTestServer, type TestServer } from './server.ts';

/** Edges of live updates: scheduled pushes as reads fail or clocks disagree, and subscription rules over HTTP. */

/**
 * withScheduledPushes against a stand-in for PlanService.nextScheduledChange: the first change
 * strictly after "now" (as its query reads it), failing while `down` says the database is.
 */
function schedule(changes: number[], down: (now: number) => boolean = () => false) {
  const reads: number[] = [];
  const nextAt = async () => {
    const now = Date.now();
    reads.push(now);
    if (down(now)) throw new Error('database unreachable');
    const next = changes.find((at) => at > now);
    return next === undefined ? null : new Date(next);
  };
  return { nextAt, reads };
}

/** Everything the subscription pushes, with the (fake) time it was pushed at. */
function collect(iterator: AsyncIterableIterator<EventPayload>) {
  const pushed: { at: number; value: EventPayload }[] = [];
  void (async () => {
    for await (const value of iterator) pushed.push({ at: Date.now(), value });
  })();
  return pushed;
}

const TICK = { tick: true };

describe('withScheduledPushes', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('pushes a change that takes effect while the reads after an event fail', async () => {
    const pubsub = new InMemoryPubSub();
    // The database is unreachable from 500 ms to 2 s; the change takes effect at 1 s.
    const { nextAt } = schedule([1000], (now) => now >= 500 && now < 2000);
    const iterator = withScheduledPushes(pubsub.subscribe('customer'), nextAt, TICK);
    const pushed = collect(iterator);
    await vi.advanceTimersByTimeAsync(500);
    // An event (the customer renamed, say) asks for the next change again: that read fails.
    pubsub.publish('customer', { renamed: true });
    await vi.advanceTimersByTimeAsync(4500);

    expect(pushed.map((push) => push.value)).toEqual([{ renamed: true }, TICK]);
    expect(pushed[1]!.at).toBeGreaterThan(1000);
    expect(pushed[1]!.at).toBeLessThan(1100);
    await iterator.return?.();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('pushes a change whose timer fires as the wall clock shows its very moment', async () => {
    const { nextAt } = schedule([1000]);
    const iterator = withScheduledPushes(new InMemoryPubSub().subscribe('customer'), nextAt, TICK);
    const pushed = collect(iterator);
    await vi.advanceTimersByTimeAsync(1000);
    // The wall clock runs a millisecond behind the timers' (they are different clocks): the timer
    // for 1 s and a millisecond fires with Date.now() at 1 s, when the change is in force and a
    // read of the changes after "now" no longer names it.
    vi.setSystemTime(999);
    await vi.advanceTimersByTimeAsync(1);
    expect(Date.now()).toBe(1000);
    await vi.advanceTimersByTimeAsync(5000);

    expect(pushed.map((push) => push.value)).toEqual([TICK]);
    await iterator.return?.();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('reads less and less often while the database stays unreachable', async () => {
    const { nextAt, reads } = schedule([], () => true);
    const iterator = withScheduledPushes(new InMemoryPubSub().subscribe('customer'), nextAt, TICK);
    await vi.advanceTimersByTimeAsync(60_000);
    // Doubling from 500 ms, at most 30 s apart (RESYNC_READ_RETRY_MS): 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s;
    // not every 500 ms (121 reads a minute per subscription).
    expect(reads).toEqual([0, 500, 1500, 3500, 7500, 15_500, 31_500]);
    await iterator.return?.();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('reads the next change once at a time, however many events come at once, and from after the last', async () => {
    const pubsub = new InMemoryPubSub();
    let running = 0;
    let most = 0;
    let changes = [10_000];
    // Each read takes 100 ms, and sees the changes as they were when it started.
    const nextAt = async () => {
      const now = Date.now();
      const next = changes.find((at) => at > now);
      running += 1;
      most = Math.max(most, running);
      await new Promise((resolve) => setTimeout(resolve, 100));
      running -= 1;
      return next === undefined ? null : new Date(next);
    };
    const iterator = withScheduledPushes(pubsub.subscribe('customer'), nextAt, TICK);
    const pushed = collect(iterator);
    await vi.advanceTimersByTimeAsync(50);
    // A burst (a bulk update): the last event reschedules the change to 5 s.
    for (let n = 0; n < 50; n++) pubsub.publish('customer', { n });
    changes = [5000];
    pubsub.publish('customer', { n: 50 });
    await vi.advanceTimersByTimeAsync(10_000);

    expect(pushed).toHaveLength(52);
    expect(most).toBe(1);
    // The change as the last read found it (not as a read under way when it was made did).
    expect(pushed.at(-1)).toEqual({ at: 5001, value: TICK });
    await iterator.return?.();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('pushes a change once when the reads name it still ahead by a clock behind this one (as an injected clock does)', async () => {
    // The services' clock is injectable (tests fix it): its "now" stays at 0, so every read names the change at 1 s.
    const nextAt = async () => new Date(1000);
    const iterator = withScheduledPushes(new InMemoryPubSub().subscribe('customer'), nextAt, TICK);
    const pushed = collect(iterator);
    await vi.advanceTimersByTimeAsync(5000);
    expect(pushed).toEqual([{ at: 1001, value: TICK }]);
    await iterator.return?.();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('waits for a change beyond setTimeout\'s limit in steps, pushing it once, at its moment', async () => {
    const far = 60 * 24 * 3600_000;
    const { nextAt, reads } = schedule([far]);
    const iterator = withScheduledPushes(new InMemoryPubSub().subscribe('customer'), nextAt, TICK);
    const pushed = collect(iterator);
    await vi.advanceTimersByTimeAsync(far + 10);
    expect(pushed).toEqual([{ at: far + 1, value: TICK }]);
    // Read as it starts, after each of the two 24.8-day steps, and after the push.
    expect(reads).toHaveLength(4);
    await iterator.return?.();
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('a subscription root field skipped or included by a directive, over HTTP', () => {
  let server: TestServer;
  let merchant: { id: string; secret: string };
  beforeAll(async () => {
    server = await startTestServer();
    merchant = await server.createMerchant();
  });
  afterAll(async () => {
    await server?.close();
  });

  /**
   * Commas and comments are ignored tokens, so they may stand between `@` and the directive's
   * name. The check of the text before Apollo looked for `@` and the name side by side: these
   * passed it, and graphql-js's validation threw on `$on` (a 500 INTERNAL, not a VALIDATION).
   */
  it('refuses it as VALIDATION (400) with a comma or a comment between @ and the name', async () => {
    for (const directive of ['@,include(if: $on)', '@ # on or off\n include(if: $on)', '@,,skip(if: $on)']) {
      const query = `subscription ($on: Boolean!) { customerUpdated(id: "00000000-0000-4000-8000-000000000000") ${directive} { id } }`;
      const response = await server.graphql(query, { on: true }, merchant.secret);
      expect(response.status, query).toBe(400);
      expect(response.errors?.[0]?.extensions.code, query).toBe('VALIDATION');
    }
  });
});
