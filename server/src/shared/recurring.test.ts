import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from './logger.ts';
import { startRecurring } from './recurring.ts';

afterEach(() => {
  vi.useRealTimers();
});

describe('startRecurring', () => {
  it('runs on every tick, skips ticks while a run is still going, logs a failure and goes on, and stops', async () => {
    vi.useFakeTimers();
    const logger = createLogger('silent');
    const errors = vi.spyOn(logger, 'error');
    let started = 0;
    let finish: (() => void) | undefined;
    const stop = startRecurring('the task', 100, () => {
      started++;
      if (started === 3) return Promise.reject(new Error('boom'));
      return new Promise<void>((resolve) => (finish = resolve));
    }, logger);
    await vi.advanceTimersByTimeAsync(100);
    expect(started).toBe(1);
    await vi.advanceTimersByTimeAsync(300); // still running: three ticks skipped
    expect(started).toBe(1);
    finish!();
    await vi.advanceTimersByTimeAsync(100);
    expect(started).toBe(2);
    finish!();
    await vi.advanceTimersByTimeAsync(100); // the third run fails
    expect(started).toBe(3);
    expect(errors).toHaveBeenCalledWith({ err: expect.objectContaining({ message: 'boom' }) }, 'the task failed');
    await vi.advanceTimersByTimeAsync(100);
    expect(started).toBe(4);
    stop();
    finish!();
    await vi.advanceTimersByTimeAsync(500);
    expect(started).toBe(4);
  });
});
