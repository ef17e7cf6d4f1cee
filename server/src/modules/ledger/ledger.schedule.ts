import type { Logger } from '../../shared/logger.ts';
import { startRecurring } from '../../shared/recurring.ts';
import type { LedgerService } from './ledger.service.ts';

/** Runs grant and hold expiry every `intervalMs` in this process. Every instance may run it: expiry is idempotent. */
export function startExpirySchedule(ledger: LedgerService, intervalMs: number, logger: Logger): () => void {
  return startRecurring('expiry run', intervalMs, async () => {
    const result = await ledger.runExpiry();
    if (result.grantsExpired || result.holdsExpired) logger.info(result, 'expired credit grants and holds');
  }, logger);
}
