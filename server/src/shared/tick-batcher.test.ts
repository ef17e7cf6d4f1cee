import { describe, expect, it } from 'vitest';
import { TickBatcher } from './tick-batcher.ts';

describe('TickBatcher', () => {
  it('answers the loads of one tick from one call, each key asked once; keys not found get the default', async () => {
    const calls: string[][] = [];
    const batcher = new TickBatcher<string, number | null>(async (keys) => {
      calls.push(keys);
      return new Map(keys.filter((key) => key !== 'gone').map((key) => [key, key.length]));
    }, null);
    const answers = await Promise.all(['a', 'bb', 'a', 'gone'].map((key) => batcher.load(key)));
    expect(answers).toEqual([1, 2, 1, null]);
    expect(calls).toEqual([['a', 'bb', 'gone']]);

    await batcher.load('ccc');
    expect(calls).toEqual([['a', 'bb', 'gone'], ['ccc']]);
  });

  it('a failed call rejects every load of its batch, and the next batch starts afresh', async () => {
    let fail = true;
    const batcher = new TickBatcher<string, string>(async (keys) => {
      if (fail) throw new Error('database down');
      return new Map(keys.map((key) => [key, key.toUpperCase()]));
    }, '');
    const failed = await Promise.allSettled([batcher.load('x'), batcher.load('y')]);
    expect(failed.map((result) => result.status)).toEqual(['rejected', 'rejected']);
    fail = false;
    expect(await batcher.load('x')).toBe('X');
  });
});
