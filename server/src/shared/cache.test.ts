import { describe, expect, it } from 'vitest';
import { RefreshingCache } from './cache.ts';

/** A load the test resolves by hand, counting how often it was started. */
function manualLoads<V>() {
  const pending: { resolve: (value: V) => void; reject: (error: Error) => void }[] = [];
  let started = 0;
  return {
    load: () => {
      started++;
      return new Promise<V>((resolve, reject) => pending.push({ resolve, reject }));
    },
    get started() {
      return started;
    },
    resolveNext: (value: V) => pending.shift()!.resolve(value),
    failNext: (error: Error) => pending.shift()!.reject(error),
  };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

/** A cache on a clock the test moves, with 'k' loaded as 'v1' at time 0 (one load started). */
async function loadedCache() {
  const clock = { now: 0 };
  const cache = new RefreshingCache<string, string>({ ttlMs: 1000, maxEntries: 10 }, () => clock.now);
  const loads = manualLoads<string>();
  const first = cache.get('k', loads.load);
  loads.resolveNext('v1');
  await first;
  return { clock, cache, loads };
}

describe('RefreshingCache', () => {
  it('loads an absent key once for all the callers asking together, then serves it from memory', async () => {
    let now = 0;
    const cache = new RefreshingCache<string, string>({ ttlMs: 1000, maxEntries: 10 }, () => now);
    const loads = manualLoads<string>();
    const callers = Array.from({ length: 50 }, () => cache.get('k', loads.load));
    expect(loads.started).toBe(1);
    loads.resolveNext('v1');
    expect(await Promise.all(callers)).toEqual(Array(50).fill('v1'));
    now = 400;
    expect(await cache.get('k', loads.load)).toBe('v1');
    expect(loads.started).toBe(1);
  });

  it('past half its lifetime an entry is still served while one background refresh replaces it', async () => {
    const { clock, cache, loads } = await loadedCache();
    clock.now = 600;
    expect(await cache.get('k', loads.load)).toBe('v1');
    expect(await cache.get('k', loads.load)).toBe('v1');
    expect(loads.started).toBe(2); // one refresh, not one per caller
    loads.resolveNext('v2');
    await tick();
    expect(await cache.get('k', loads.load)).toBe('v2');
    // The refreshed entry counts from when its read began (600): no refresh before its half-life, 1100.
    clock.now = 1099;
    expect(await cache.get('k', loads.load)).toBe('v2');
    expect(loads.started).toBe(2);
  });

  it('never serves an entry past its lifetime: callers wait for the reload', async () => {
    const { clock, cache, loads } = await loadedCache();
    clock.now = 1000;
    let answered: string | undefined;
    const waiting = cache.get('k', loads.load).then((value) => (answered = value));
    await tick();
    expect(answered).toBeUndefined();
    loads.resolveNext('v2');
    await waiting;
    expect(answered).toBe('v2');
  });

  it('a failed load is not cached and reaches its callers; a failed background refresh keeps the entry', async () => {
    let now = 0;
    const cache = new RefreshingCache<string, string>({ ttlMs: 1000, maxEntries: 10 }, () => now);
    const loads = manualLoads<string>();
    const failing = cache.get('k', loads.load);
    loads.failNext(new Error('database down'));
    await expect(failing).rejects.toThrow('database down');
    const retry = cache.get('k', loads.load);
    expect(loads.started).toBe(2);
    loads.resolveNext('v1');
    expect(await retry).toBe('v1');
    now = 700;
    expect(await cache.get('k', loads.load)).toBe('v1');
    loads.failNext(new Error('database down'));
    await tick();
    expect(await cache.get('k', loads.load)).toBe('v1');
    expect(loads.started).toBe(4); // the failed refresh is retried by the next caller past half-life
  });

  it('delete drops the entry and any load in flight, so a change made here is seen at once', async () => {
    const cache = new RefreshingCache<string, string>({ ttlMs: 1000, maxEntries: 10 }, () => 0);
    const loads = manualLoads<string>();
    const stale = cache.get('merchant|openai', loads.load);
    cache.deleteWhere((key) => key.startsWith('merchant|'));
    const fresh = cache.get('merchant|openai', loads.load);
    loads.resolveNext('old key');
    loads.resolveNext('new key');
    expect(await stale).toBe('old key');
    expect(await fresh).toBe('new key');
    expect(await cache.get('merchant|openai', loads.load)).toBe('new key');
  });

  it('stays within maxEntries, making room from the oldest', async () => {
    const cache = new RefreshingCache<number, number>({ ttlMs: 1000, maxEntries: 3 }, () => 0);
    let loads = 0;
    const load = (value: number) => async () => {
      loads++;
      return value;
    };
    for (const key of [1, 2, 3, 4]) await cache.get(key, load(key));
    expect(loads).toBe(4);
    await cache.get(4, load(4));
    await cache.get(2, load(2));
    expect(loads).toBe(4);
    await cache.get(1, load(1)); // evicted: loaded again
    expect(loads).toBe(5);
  });
});
