import type { Logger } from '../../shared/logger.ts';
import type { LedgerService } from './ledger.service.ts';

/**
 * Runs grant and hold expiry every `intervalMs` in this process. Every instance may run it:
 * expiry is idempotent. A run still going when the next is due is not started twice.
 */
export function startExpirySchedule(ledger: LedgerService, intervalMs: number, logger: Logger): () => void {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    ledger
      .runExpiry()
      .then((result) => {
        if (result.grantsExpired || result.holdsExpired) logger.info(result, 'expired credit grants and holds');
      })
      .catch((error: unknown) => logger.error({ err: error }, 'expiry run failed'))
      .finally(() => {
        running = false;
      });
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
