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
  /** Failures the database answered (or could not be told apart from that); lost connections do not count. */
  attempts: number;
}

export interface SettlementOptions {
  /** Attempts at a call whose charge fails while the database answers (a refused batch part, an error it raised). */
  maxAttempts: number;
  /** Backoff after the n-th failure: base·2ⁿ, at most maxBackoffMs. */
  baseBackoffMs: number;
  maxBackoffMs: number;
  /** Calls waiting to be charged beyond which new ones are given up at once (logged with their usage): memory stays bounded through a long outage. */
  maxQueued: number;
}

const DEFAULTS: SettlementOptions = { maxAttempts: 6, baseBackoffMs: 100, maxBackoffMs: 30_000, maxQueued: 100_000 };
const MAX_BATCH = 500;
/** How long the first finished call waits for others to share its batch: settling calls one by one would cost each a transaction. */
const GATHER_MS = 20;

/**
 * Charges forwarded calls after their responses have gone out, so the caller never waits for
 * the ledger. Calls that finish close together are charged together: one UsageService batch
 * (one ledger transaction per wallet) per merchant, and one insert for their log rows. Each
 * call's usage has its own idempotency key, so retrying a failed batch never charges twice.
 *
 * A batch that fails because the database cannot be reached (refused or lost connections, a
 * restart or failover in progress) is retried for as long as that lasts, with backoff up to
 * maxBackoffMs: the provider served those calls, so they are charged once the database is back.
 * Other failures are retried maxAttempts times. A call given up on — those attempts spent, the
 * queue past maxQueued, or shutdown reached with the database still away — is logged at error
 * level with its usage record (what POST /v1/usage takes, same idempotency key), so it can be replayed.
 */
export class GatewaySettlement {
  private queue: Item[] = [];
  private running: Promise<void> | null = null;
  private readonly options: SettlementOptions;
  /** Consecutive batches lost to an unreachable database (backoff), 0 once one goes through. */
  private outage = 0;
  /** Set by close(): from then on, past its deadline, unreachable-database failures give up instead of waiting. */
  private closingAt: number | null = null;
  private wake: (() => void) | null = null;

  constructor(
    private readonly db: Database,
    private readonly usage: UsageService,
    private readonly ledger: LedgerService,
    private readonly logger: Logger,
    options: Partial<SettlementOptions> = {},
  ) {
    this.options = { ...DEFAULTS, ...options };
  }

  enqueue(merchantId: string, actor: Actor, usage: UsageRecordInput | null, log: GatewayRequestLog, holdId: string | null = null): void {
    const item: Item = { merchantId, actor, usage, log, holdId, attempts: 0 };
    if (this.queue.length >= this.options.maxQueued) {
      this.abandon([item], 'gateway call not charged: the settlement queue is full (the database has been failing for long)');
      return;
    }
    this.queue.push(item);
    this.running ??= this.run();
  }

  /** Whether calls are waiting or being charged. */
  get busy(): boolean {
    return this.running !== null;
  }

  /** Resolves once everything enqueued so far has been charged and logged, or given up on (tests, shutdown). */
  async drain(): Promise<void> {
    while (this.running) await this.running;
  }

  /**
   * Drains for shutdown: a database that is unreachable is waited for only until `graceMs` has
   * passed; what is still unsettled then is logged with its usage record (see the class comment).
   */
  async close(graceMs: number): Promise<void> {
    this.closingAt = Date.now() + graceMs;
    const timer = setTimeout(() => this.wake?.(), graceMs);
    try {
      await this.drain();
    } finally {
      clearTimeout(timer);
    }
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
        this.outage = 0;
        if (again.length > 0) {
          this.logger.warn({ size: again.length, attempt: again[0]!.attempts }, 'gateway usage not recorded; retrying it');
          await this.sleep(this.backoff(again[0]!.attempts));
          this.queue.unshift(...again);
        }
      } catch (error) {
        if (isConnectionError(error)) {
          // The database is away (restart, failover, network): the calls keep their place and
          // their reservations until it is back, however long that takes. A reservation that
          // lapses meanwhile only stops holding credit: the charge still goes through the usage
          // pipeline (taking what the wallet has, any rest a shortfall).
          if (this.closingAt !== null && Date.now() >= this.closingAt) {
            // Every call still waiting at once: trying each batch against a database that does not
            // answer (a connect timeout each) would outlast any shutdown deadline, and a process
            // killed then logs nothing.
            this.abandon([...batch, ...this.queue.splice(0)], 'gateway call not charged: the database was still unreachable at shutdown', error);
            continue;
          }
          this.outage += 1;
          this.logger.error({ err: error, size: batch.length, queued: this.queue.length, attempt: this.outage }, 'gateway settlement failed: database unreachable; retrying until it is back');
          await this.sleep(this.backoff(this.outage));
          this.queue.unshift(...batch);
          continue;
        }
        const [retry, dropped] = partition(batch, (item) => ++item.attempts < this.options.maxAttempts);
        this.logger.error({ err: error, size: batch.length, retrying: retry.length }, 'gateway settlement failed');
        if (dropped.length > 0) {
          this.abandon(dropped, 'gateway call not charged: settling it kept failing', error);
          // Given up on: at least free what they reserved now rather than at expiry.
          for (const item of dropped) await this.releaseAlone(item).catch((err: unknown) => this.logger.error({ err, holdId: item.holdId }, 'gateway hold not released'));
        }
        if (retry.length > 0) {
          await this.sleep(this.backoff(retry[0]!.attempts));
          this.queue.unshift(...retry);
        }
      }
    }
    this.running = null;
  }

  private backoff(failures: number): number {
    return Math.min(this.options.baseBackoffMs * 2 ** Math.min(failures, 30), this.options.maxBackoffMs);
  }

  /** Waits `ms`, or less when close() reaches its deadline meanwhile. */
  private async sleep(ms: number): Promise<void> {
    if (this.closingAt !== null) ms = Math.max(0, Math.min(ms, this.closingAt - Date.now()));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.wake = null;
  }

  /**
   * Logs calls given up on, each with what it takes to charge it later: its usage record (send
   * it to POST /v1/usage as the merchant: the idempotency key makes a replay charge once) and its log row.
   */
  private abandon(items: Item[], message: string, error?: unknown): void {
    for (const item of items) {
      const usage = item.usage ? replayable(item.usage) : null;
      this.logger.error({ err: error, merchantId: item.merchantId, requestId: item.log.id, holdId: item.holdId, usage, log: item.log }, message);
    }
  }

  /** Frees a call's reservation on its own (no usage charged it). */
  private async releaseAlone(item: Item): Promise<void> {
    if (!item.holdId) return;
    try {
      await this.ledger.releaseHold(item.merchantId, item.actor, item.holdId);
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
      let results: Awaited<ReturnType<UsageService['record']>>;
      try {
        results = await this.usage.record(merchantId, actor, items.map((item) => (item.holdId ? { ...item.usage!, holdId: item.holdId } : item.usage!)));
      } catch (error) {
        // An unreachable database stops the whole batch (run() waits for it to come back). Any
        // other failure is this group's own: its calls go round again, up to maxAttempts, while
        // the other merchants' calls in the batch are charged and logged now, not held back with it.
        if (isConnectionError(error)) throw error;
        this.logger.error({ err: error, merchantId, size: items.length }, 'gateway settlement failed');
        for (const item of items) {
          if (++item.attempts < this.options.maxAttempts) again.add(item);
          else this.abandon([item], 'gateway call not charged: settling it kept failing', error);
        }
        continue;
      }
      results.forEach((result, index) => {
        const item = items[index]!;
        if (result.ok) {
          usageEventIds.set(item, result.event.id);
          item.holdId = null;
        } else if (result.error.details?.retryable === true && ++item.attempts < this.options.maxAttempts) again.add(item);
        else if (result.error.details?.retryable === true) this.abandon([item], 'gateway call not charged: its usage kept failing to record');
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

/**
 * A usage record as POST /v1/usage takes it (the gateway's internal fields left out). It keeps
 * the provider's response as it came: only that replays exactly as the gateway would have
 * charged — the provider's own id for a job (a polled prediction is keyed by it, so a replay
 * after a later poll was charged charges nothing), a reported cost (OpenRouter), the details
 * prices depend on (image sizes, cache lifetimes), a cut stream's estimate. So these log lines
 * hold the model's output: the README says to treat them as such.
 */
export function replayable(usage: UsageRecordInput): Record<string, unknown> {
  const { normalized: _normalized, holdId: _holdId, ...record } = usage;
  return record;
}

/** Socket errors of a connection that could not be made or was lost. */
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'ENOTFOUND', 'EAI_AGAIN']);
/** PostgreSQL: connection exceptions (class 08), and the server shutting down or starting (admin_shutdown, crash_shutdown, cannot_connect_now). */
const CONNECTION_SQLSTATE = /^(08[0-9A-Z]{3}|57P0[123])$/;
/** Prisma's codes for a database it cannot reach (P1001), reach in time (P1002, P1008) or whose connection closed (P1017). */
const PRISMA_CONNECTION_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017']);
/** Prisma's driver adapter kinds for the same. */
const ADAPTER_CONNECTION_KINDS = new Set(['DatabaseNotReachable', 'ConnectionClosed', 'SocketTimeout']);
/** pg's messages for a lost connection and for the pool's connect timeout. */
const CONNECTION_MESSAGE = /Connection terminated|Connection ended unexpectedly|timeout exceeded when trying to connect|Client has encountered a connection error|read ECONNRESET|connect ECONNREFUSED/i;

/**
 * Whether a failure means the database could not be reached (so the work never ran, or its
 * transaction was rolled back with the connection), as opposed to an error it answered. An
 * embedded database that was closed is not this: that is shutdown, not an outage.
 */
export function isConnectionError(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > 5) return false;
  const { code, originalCode, kind, message, cause, errors, meta } = error as {
    code?: unknown; originalCode?: unknown; kind?: unknown; message?: unknown; cause?: unknown; errors?: unknown; meta?: { driverAdapterError?: unknown };
  };
  if (typeof code === 'string' && (CONNECTION_CODES.has(code) || CONNECTION_SQLSTATE.test(code) || PRISMA_CONNECTION_CODES.has(code))) return true;
  if (typeof originalCode === 'string' && CONNECTION_SQLSTATE.test(originalCode)) return true;
  if (typeof kind === 'string' && ADAPTER_CONNECTION_KINDS.has(kind)) return true;
  if (typeof message === 'string' && CONNECTION_MESSAGE.test(message)) return true;
  if (Array.isArray(errors) && errors.length > 0 && errors.every((inner) => isConnectionError(inner, depth + 1))) return true;
  return isConnectionError(cause, depth + 1) || isConnectionError(meta?.driverAdapterError, depth + 1);
}
