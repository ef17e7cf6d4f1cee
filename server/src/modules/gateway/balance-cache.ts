import type { Database } from '../../shared/db/database.ts';
import { parseFormattedNanos } from '../../shared/money.ts';
import type { PubSub } from '../../shared/pubsub.ts';
import { creditToKeep } from '../ledger/ledger.planner.ts';
import { walletTopic, type BalanceEvent } from '../ledger/ledger.service.ts';

/** What a customer can still spend in one currency: available balance plus the overage allowance. */
export interface Spendable {
  available: bigint;
  overdraftLimit: bigint;
}

interface Entry extends Spendable {
  loadedAt: number;
  /** The wallet balance the entry was built from: a rise means new credit, which may expire. */
  balance: bigint;
  /** Epoch ms of the earliest expiry among the credit counted in `available`: stale from then on. */
  staleAt: number;
  /** The wallet version the entry shows (BalanceEvent.version): an event of an older one, arriving late from another instance, is ignored. */
  version: bigint | null;
}

interface Watch {
  entries: Map<string, Entry>;
  stop: () => void;
  /**
   * The cache's epoch (see BalanceCache.epoch) in which the subscription was confirmed to
   * receive events; null until then. A balance read before could miss a change made meanwhile,
   * for good, so none is kept: each use reads the database until the subscription is confirmed.
   */
  subscribedIn: number | null;
  /** The confirmation under way, shared by the calls that wait for it. */
  confirming: Promise<void> | null;
}

/**
 * The gateway asks "may this customer still spend?" before every call, so the answer must not
 * cost a database round trip. Balances are cached per customer and kept current by the
 * ledger's balanceUpdated events (over Redis when several instances run). The cache is
 * advisory: a refusal is always confirmed against the database first, so a stale entry can
 * only ever let one call through early, never lock a customer out after a top-up — and the
 * charge itself goes through the ledger, which never overdraws.
 */
export class BalanceCache {
  private readonly watches = new Map<string, Watch>();
  /** Counts the times subscriptions may have missed events (Redis connection lost): every entry kept before is dropped then. */
  private epoch = 0;
  private readonly stopInterrupted: () => void;

  constructor(
    private readonly db: Database,
    private readonly pubsub: PubSub,
    private readonly options: { maxCustomers: number; ttlMs: number } = { maxCustomers: 10_000, ttlMs: 60_000 },
  ) {
    this.stopInterrupted = pubsub.onInterrupted(() => {
      this.epoch += 1;
      for (const watch of this.watches.values()) {
        watch.subscribedIn = null;
        watch.entries.clear();
      }
    });
  }

  /** The cached view, loading it (and subscribing to its changes) on first use. */
  async get(customerId: string, currency: string): Promise<Spendable> {
    const watch = this.watch(customerId);
    const entry = watch.entries.get(currency);
    const now = Date.now();
    if (entry && now - entry.loadedAt < this.options.ttlMs && now < entry.staleAt) return entry;
    return this.load(customerId, currency, watch);
  }

  /** Reads the database, bypassing what is cached, and keeps the fresh value. */
  async refresh(customerId: string, currency: string): Promise<Spendable> {
    return this.load(customerId, currency, this.watch(customerId));
  }

  close(): void {
    this.stopInterrupted();
    for (const watch of this.watches.values()) watch.stop();
    this.watches.clear();
  }

  private watch(customerId: string): Watch {
    const existing = this.watches.get(customerId);
    if (existing) {
      // Map order is insertion order: re-inserting makes this the most recently used.
      this.watches.delete(customerId);
      this.watches.set(customerId, existing);
      return existing;
    }
    if (this.watches.size >= this.options.maxCustomers) {
      const [oldest, watch] = this.watches.entries().next().value as [string, Watch];
      watch.stop();
      this.watches.delete(oldest);
    }
    const events = this.pubsub.subscribe(walletTopic(customerId));
    const watch: Watch = { entries: new Map(), stop: () => void events.return?.(), subscribedIn: null, confirming: null };
    this.watches.set(customerId, watch);
    void (async () => {
      for await (const payload of events) {
        try {
          applyEvent(watch, payload as BalanceEvent);
        } catch {
          // An event it cannot read is skipped, not let end the loop (that would stop this
          // customer's watch for good); what the entries knew may be out of date, so they are read again.
          watch.entries.clear();
        }
      }
    })().catch(() => undefined);
    return watch;
  }

  /**
   * Waits (briefly: PubSub.ready is bounded, and fails at once while Redis is unreachable) for
   * the watch's subscription to be confirmed in the current epoch; answers whether it is.
   */
  private async confirm(watch: Watch): Promise<boolean> {
    if (watch.subscribedIn === this.epoch) return true;
    if (!watch.confirming) {
      const epoch = this.epoch;
      watch.confirming = this.pubsub.ready().then(
        () => {
          if (this.epoch === epoch) watch.subscribedIn = epoch;
        },
        () => undefined,
      ).finally(() => {
        watch.confirming = null;
      });
    }
    await watch.confirming;
    return watch.subscribedIn === this.epoch;
  }

  private async load(customerId: string, currency: string, watch: Watch): Promise<Spendable> {
    // With Redis, a change published before it confirms the subscription never reaches this
    // watch: a balance read earlier is answered but not kept, and so is one read while Redis is
    // unreachable (the next call reads the database again), until the subscription is confirmed.
    const epoch = (await this.confirm(watch)) ? this.epoch : null;
    const before = watch.entries.get(currency);
    const [row] = await this.db.withConnection((sql) =>
      // Grants past their expiry still count in wallets.balance until the expiry job (or the
      // wallet's next posting) expires them. What remains on them is not spendable, except what
      // the wallet's lock will keep for pending holds (keepForHolds in ledger.store.ts): that is
      // counted in `held` already, so it must not count as expired too. Credit kept for a hold
      // that has ended is expired.
      sql.query<{ balance: string; overdraft_limit: string; version: string; held: string; due_own: string; lasting: string; live_kept: string; ended_kept: string; next_expiry: string | null }>(
        `SELECT w.balance::text AS balance, w.overdraft_limit::text AS overdraft_limit, w.version::text AS version,
           coalesce((SELECT sum(h.amount - h.captured_amount) FROM holds h
                     WHERE h.wallet_id = w.id AND h.status = 'PENDING' AND h.expires_at > now()), 0)::text AS held,
           coalesce(g.due_own, 0)::text AS due_own, coalesce(g.lasting, 0)::text AS lasting,
           coalesce(g.live_kept, 0)::text AS live_kept, coalesce(g.ended_kept, 0)::text AS ended_kept,
           (SELECT floor(extract(epoch FROM min(g.expires_at)) * 1000)::bigint FROM credit_grants g
             WHERE g.wallet_id = w.id AND g.expired_at IS NULL AND g.expires_at > now() AND g.remaining > 0)::text AS next_expiry
         FROM wallets w
         CROSS JOIN LATERAL (
           SELECT sum(remaining) FILTER (WHERE hold_id IS NULL AND expires_at <= now()) AS due_own,
                  sum(remaining) FILTER (WHERE hold_id IS NULL AND (expires_at IS NULL OR expires_at > now())) AS lasting,
                  sum(remaining) FILTER (WHERE hold_id IS NOT NULL AND live) AS live_kept,
                  sum(remaining) FILTER (WHERE hold_id IS NOT NULL AND NOT live) AS ended_kept
           FROM (SELECT g.remaining, g.hold_id, g.expires_at,
                   g.hold_id IS NOT NULL AND EXISTS (SELECT FROM holds h WHERE h.id = g.hold_id AND h.status = 'PENDING' AND h.expires_at > now()) AS live
                 FROM credit_grants g WHERE g.wallet_id = w.id AND g.expired_at IS NULL AND g.remaining > 0) g) g
         WHERE w.customer_id = $1 AND w.currency = $2`,
        [customerId, currency],
      ),
    );
    const expired = row ? expiredOf(row) : 0n;
    const current = watch.entries.get(currency);
    // Each event stores a new entry; one that arrived while we read is at least as new as
    // what we read, so it wins.
    if (current && current !== before) return current;
    const entry: Entry = {
      available: row ? BigInt(row.balance) - expired - BigInt(row.held) : 0n,
      overdraftLimit: row ? BigInt(row.overdraft_limit) : 0n,
      loadedAt: Date.now(),
      balance: row ? BigInt(row.balance) - expired : 0n,
      staleAt: row?.next_expiry ? Number(row.next_expiry) : Infinity,
      version: row ? BigInt(row.version) : null,
    };
    // Kept only when no event can have been missed since the subscription was confirmed.
    if (epoch !== null && epoch === this.epoch && watch.subscribedIn === epoch) watch.entries.set(currency, entry);
    return entry;
  }
}

/**
 * What of the balance is past its expiry and not spendable: credit due to expire, less what the
 * wallet's next lock keeps of it for pending holds (what they lack beyond credit that lasts, as
 * keepForHolds works it out), plus what was kept for holds that have ended.
 */
function expiredOf(row: { held: string; due_own: string; lasting: string; live_kept: string; ended_kept: string }): bigint {
  const due = BigInt(row.due_own);
  // What the holds lack is taken in total here (the ledger sums it per hold): an estimate.
  return due - creditToKeep(BigInt(row.held) - BigInt(row.live_kept), BigInt(row.lasting), due) + BigInt(row.ended_kept);
}

/** Takes a balance event into the watch's entry for its currency. */
function applyEvent(watch: Watch, event: BalanceEvent): void {
  if (typeof event.available !== 'string' || typeof event.currency !== 'string') return;
  const previous = watch.entries.get(event.currency);
  const version = typeof event.version === 'string' ? BigInt(event.version) : null;
  if (version !== null && previous?.version != null && version < previous.version) return;
  // Read without the input limit (parseDecimalNanos'): a wallet may hold more than a caller may send at once.
  const balance = typeof event.balance === 'string' ? parseFormattedNanos(event.balance) : (previous?.balance ?? 0n);
  watch.entries.set(event.currency, {
    available: parseFormattedNanos(event.available),
    overdraftLimit: typeof event.overdraftLimit === 'string' ? parseFormattedNanos(event.overdraftLimit) : (previous?.overdraftLimit ?? 0n),
    loadedAt: Date.now(),
    balance,
    // The ledger settles due grants before it publishes, so the event's figure is current; but
    // credit it adds may expire sooner than what the entry knew of: read its expiry on next use.
    staleAt: !previous || balance > previous.balance ? 0 : previous.staleAt,
    version,
  });
}
