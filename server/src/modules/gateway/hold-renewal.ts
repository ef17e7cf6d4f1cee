import { AppError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { LedgerService } from '../ledger/ledger.service.ts';

/**
 * Keeps a gateway call's reservation alive while the call runs. Its TTL covers the wait for the
 * first byte and one stall, not a stream's whole length: a longer stream would outlive its hold,
 * and another call could then reserve the same credit. Each time a third of the TTL has passed
 * the hold is extended to a full TTL from the ledger's now, so one failed renewal (logged, never
 * failing the call) still leaves time for the next.
 */
export class HoldRenewal {
  private readonly timer: NodeJS.Timeout;
  private renewing: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private readonly ledger: Pick<LedgerService, 'extendHold'>,
    private readonly logger: Logger,
    private readonly merchantId: string,
    readonly holdId: string,
    private readonly ttlSeconds: number,
  ) {
    this.timer = setInterval(() => {
      // A renewal still waiting on the ledger is enough: another would only queue behind it.
      if (!this.renewing) void this.renew();
    }, (ttlSeconds * 1000) / 3);
    // A call's timer never keeps the process alive on its own.
    this.timer.unref();
  }

  /** Extends the hold now, after any renewal under way; resolves once done (a failure is logged, never thrown). */
  renew(): Promise<void> {
    const previous = this.renewing ?? Promise.resolve();
    const current = previous.then(() => this.extend());
    this.renewing = current;
    void current.then(() => {
      if (this.renewing === current) this.renewing = null;
    });
    return current;
  }

  /** The call has ended: no more renewals (its settlement captures or releases the hold). */
  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  private async extend(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.ledger.extendHold(this.merchantId, this.holdId, this.ttlSeconds);
    } catch (error) {
      // Settled while the renewal was on its way: nothing is wrong.
      if (this.stopped) return;
      // No longer pending (it lapsed before it could be renewed): renewing it again cannot help.
      if (error instanceof AppError && error.code === 'CONFLICT') this.stop();
      this.logger.warn({ err: error, holdId: this.holdId }, 'gateway hold not renewed');
    }
  }
}
