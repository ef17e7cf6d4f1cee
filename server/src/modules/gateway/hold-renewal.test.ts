import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AppError } from '../../shared/errors.ts';
import { createLogger } from '../../shared/logger.ts';
import type { HoldRecord } from '../ledger/ledger.holds.ts';
import { HoldRenewal } from './hold-renewal.ts';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

const TTL_SECONDS = 480;

function setup(extendHold: (merchantId: string, holdId: string, ttlSeconds: number) => Promise<HoldRecord> = () => Promise.resolve({} as HoldRecord)) {
  const ledger = { extendHold: vi.fn(extendHold) };
  const logger = createLogger('silent');
  const warnings = vi.spyOn(logger, 'warn');
  const renewal = new HoldRenewal(ledger, logger, 'merchant-1', 'hold-1', TTL_SECONDS);
  return { ledger, warnings, renewal };
}

describe('a gateway hold renewal', () => {
  it('extends the hold by its TTL each time a third of the TTL has passed, until the call ends', async () => {
    const { ledger, renewal } = setup();
    await vi.advanceTimersByTimeAsync((TTL_SECONDS * 1000) / 3 - 1);
    expect(ledger.extendHold).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(ledger.extendHold.mock.calls).toEqual([['merchant-1', 'hold-1', TTL_SECONDS]]);
    await vi.advanceTimersByTimeAsync(TTL_SECONDS * 1000);
    expect(ledger.extendHold).toHaveBeenCalledTimes(4);
    renewal.stop();
    await vi.advanceTimersByTimeAsync(TTL_SECONDS * 1000);
    await renewal.renew();
    expect(ledger.extendHold).toHaveBeenCalledTimes(4);
  });

  it('logs a failed renewal and renews again at the next tick: the call goes on', async () => {
    let failures = 1;
    const { ledger, warnings, renewal } = setup(() => (failures-- > 0 ? Promise.reject(new Error('connection lost')) : Promise.resolve({} as HoldRecord)));
    await vi.advanceTimersByTimeAsync((TTL_SECONDS * 1000 * 2) / 3);
    expect({ renewals: ledger.extendHold.mock.calls.length, warnings: warnings.mock.calls.map(([, message]) => message) }).toEqual({
      renewals: 2, warnings: ['gateway hold not renewed'],
    });
    renewal.stop();
  });

  it('stops renewing a hold that is no longer pending, and says nothing of one settled while a renewal was on its way', async () => {
    const lapsed = setup(() => Promise.reject(new AppError('CONFLICT', 'This hold can no longer be extended: it is expired')));
    await vi.advanceTimersByTimeAsync(TTL_SECONDS * 1000 * 2);
    expect({ renewals: lapsed.ledger.extendHold.mock.calls.length, warnings: lapsed.warnings.mock.calls.length }).toEqual({ renewals: 1, warnings: 1 });

    let refuse!: (error: Error) => void;
    const settled = setup(() => new Promise((_resolve, reject) => (refuse = reject)));
    const renewing = settled.renewal.renew();
    await vi.advanceTimersByTimeAsync(0);
    settled.renewal.stop();
    refuse(new AppError('CONFLICT', 'This hold can no longer be extended: it is released'));
    await renewing;
    expect(settled.warnings).not.toHaveBeenCalled();
  });

  it('never has two renewals of one hold under way: a tick while one waits on the ledger adds none', async () => {
    let finish!: () => void;
    const { ledger, renewal } = setup(() => new Promise((resolve) => (finish = () => resolve({} as HoldRecord))));
    await vi.advanceTimersByTimeAsync(TTL_SECONDS * 1000);
    expect(ledger.extendHold).toHaveBeenCalledTimes(1);
    finish();
    await vi.advanceTimersByTimeAsync((TTL_SECONDS * 1000) / 3);
    expect(ledger.extendHold).toHaveBeenCalledTimes(2);
    renewal.stop();
  });
});
