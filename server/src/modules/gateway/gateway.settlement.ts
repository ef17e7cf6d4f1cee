import type { GatewayOutcome } from '../../generated/prisma/client.ts';
import type { Database } from '../../shared/db/database.ts';
import type { Logger } from '../../shared/logger.ts';
import { groupBy, partition } from '../../shared/collections.ts';
import { AppError } from '../../shared/errors.ts';
import type { Actor, LedgerService } from '../ledger/ledger.service.ts';
import type { UsageRecordInput, UsageService } from '../usage/usage.service.ts';

/** The log row of one forwarded call (table gateway_requests). */
export interface GatewayRequestLog {
  id: string;
  merchantId: string;
  customerId: string | null;
  provider: string | null;
  method: string;
  host: string;
  path: string;
  status: number;
  outcome: GatewayOutcome;
  errorCode: string | null;
  streamed: boolean;
  latencyMs: number;
  ttfbMs: number | null;
  createdAt: Date;
}

interface Item {
  merchantId: string;
  actor: Actor;
  usage: UsageRecordInput | null;
  log: GatewayRequestLog;
  /** The reservation made before the call; released in the ledger transaction that charges the actual usage. */
  holdId: string | null;
  attempts: number;
}

const MAX_BATCH = 500;
/** How long the first finished call waits for others to share its batch: settling calls one by one would cost each a transaction. */
const GATHER_MS = 20;
const MAX_ATTEMPTS = 6;

/**
 * Charges forwarded calls after their responses have gone out, so the caller never waits for
 * the ledger. Calls that finish close together are charged together: one UsageService batch
 * (one ledger transaction per wallet) per merchant, and one insert for their log rows. Each
 * call's usage has its own idempotency key, so retrying a failed batch never charges twice.
 */
export class GatewaySettlement {
  private queue: Item[] = [];
  private running: Promise<void> | null = null;

  constructor(
    private readonly db: Database,
    private readonly usage: UsageService,
    private readonly ledger: LedgerService,
    private readonly logger: Logger,
  ) {}

  enqueue(merchantId: string, actor: Actor, usage: UsageRecordInput | null, log: GatewayRequestLog, holdId: string | null = null): void {
    this.queue.push({ merchantId, actor, usage, log, holdId, attempts: 0 });
    this.running ??= this.run();
  }

  /** Resolves once everything enqueued so far has been charged and logged (tests, shutdown). */
  async drain(): Promise<void> {
    while (this.running) await this.running;
  }

  private async run(): Promise<void> {
    while (this.queue.length > 0) {
      // Let calls finishing close together join the batch.
      const gatherUntil = performance.now() + GATHER_MS;
      while (this.queue.length < MAX_BATCH && performance.now() < gatherUntil) await new Promise((resolve) => setTimeout(resolve, 2));
      const batch = this.queue.splice(0, MAX_BATCH);
      try {
        // Calls whose usage was answered "not recorded, retryable" (their part of the batch failed
        // while the rest was recorded) go round again, keeping their reservations.
        const again = await this.settle(batch);
        if (again.length > 0) {
          this.logger.warn({ size: again.length, attempt: again[0]!.attempts }, 'gateway usage not recorded; retrying it');
          await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** again[0]!.attempts));
          this.queue.unshift(...again);
        }
      } catch (error) {
        const [retry, dropped] = partition(batch, (item) => ++item.attempts < MAX_ATTEMPTS);
        this.logger.error({ err: error, size: batch.length, retrying: retry.length }, 'gateway settlement failed');
        // Given up on: at least free what they reserved now rather than at expiry.
        for (const item of dropped) await this.releaseAlone(item).catch((err: unknown) => this.logger.error({ err, holdId: item.holdId }, 'gateway hold not released'));
        if (retry.length > 0) {
          await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** retry[0]!.attempts));
          this.queue.unshift(...retry);
        }
      }
    }
    this.running = null;
  }

  /** Frees a call's reservation on its own (no usage charged it). */
  private async releaseAlone(item: Item): Promise<void> {
    if (!item.holdId) return;
    try {
      await this.ledger.releaseHold(item.merchantId, item.holdId);
    } catch (error) {
      // Already expired or captured: nothing is held.
      if (!(error instanceof AppError && error.code === 'CONFLICT')) throw error;
    }
    item.holdId = null;
  }

  /** Charges and logs the batch; returns the calls to charge again (see run). */
  private async settle(batch: Item[]): Promise<Item[]> {
    // A reservation is released in the same ledger transaction (wallet locked) that charges the
    // call's usage: released any earlier, another call could reserve the freed credit first and
    // leave this charge short.
    const groups = groupBy(batch.filter((item) => item.usage), (item) => `${item.merchantId}|${item.actor.kind}|${item.actor.apiKeyId ?? ''}`);
    const usageEventIds = new Map<Item, string>();
    const again = new Set<Item>();
    for (const items of groups.values()) {
      const { merchantId, actor } = items[0]!;
      const results = await this.usage.record(merchantId, actor, items.map((item) => (item.holdId ? { ...item.usage!, holdId: item.holdId } : item.usage!)));
      results.forEach((result, index) => {
        const item = items[index]!;
        if (result.ok) {
          usageEventIds.set(item, result.event.id);
          item.holdId = null;
        } else if (result.error.details?.retryable === true && ++item.attempts < MAX_ATTEMPTS) again.add(item);
        else this.logger.warn({ requestId: item.log.id, code: result.error.code, message: result.error.message }, 'gateway usage not recorded');
      });
    }
    const done = again.size === 0 ? batch : batch.filter((item) => !again.has(item));
    // Reservations no charge released (nothing to record, or its record was refused) are freed on their own.
    for (const item of done) await this.releaseAlone(item);
    if (done.length > 0) await this.log(done.map((item) => item.log), done.map((item) => usageEventIds.get(item) ?? null));
    return [...again];
  }

  private async log(logs: GatewayRequestLog[], usageEventIds: (string | null)[]): Promise<void> {
    await this.db.withConnection((sql) =>
      sql.query(
        `INSERT INTO gateway_requests (id, merchant_id, customer_id, provider, method, host, path, status, outcome, error_code, streamed, latency_ms, ttfb_ms, usage_event_id, created_at)
         SELECT u.id, u.merchant_id, u.customer_id, u.provider, u.method, u.host, u.path, u.status, u.outcome::"GatewayOutcome", u.error_code, u.streamed,
           u.latency_ms, u.ttfb_ms, u.usage_event_id, u.created_at
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[], $10::text[],
           $11::bool[], $12::int[], $13::int[], $14::uuid[], $15::timestamptz[])
           AS u(id, merchant_id, customer_id, provider, method, host, path, status, outcome, error_code, streamed, latency_ms, ttfb_ms, usage_event_id, created_at)
         ON CONFLICT (id) DO NOTHING`,
        [
          logs.map((log) => log.id), logs.map((log) => log.merchantId), logs.map((log) => log.customerId), logs.map((log) => log.provider),
          logs.map((log) => log.method), logs.map((log) => log.host), logs.map((log) => log.path), logs.map((log) => log.status), logs.map((log) => log.outcome),
          logs.map((log) => log.errorCode), logs.map((log) => log.streamed), logs.map((log) => log.latencyMs), logs.map((log) => log.ttfbMs),
          usageEventIds, logs.map((log) => log.createdAt),
        ],
      ),
    );
  }
}
