import { describe, expect, it } from 'vitest';
import { InMemoryPubSub } from './pubsub.ts';

describe('a subscriber that falls behind', () => {
  it('keeps the newest 1,000 events: the oldest are the ones dropped', async () => {
    const pubsub = new InMemoryPubSub();
    const events = pubsub.subscribe('topic');
    for (let n = 1; n <= 1001; n++) pubsub.publish('topic', { n });
    const read: unknown[] = [];
    for (let i = 0; i < 1000; i++) read.push((await events.next()).value?.n);
    expect(read[0]).toBe(2);
    expect(read.at(-1)).toBe(1001);
    // Nothing else is buffered: the next read waits for the next event.
    const next = events.next();
    pubsub.publish('topic', { n: 1002 });
    expect((await next).value).toEqual({ n: 1002 });
    await events.return?.();
  });
});
