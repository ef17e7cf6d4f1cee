import type { Database } from '../../shared/db/database.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import type { PubSub } from '../../shared/pubsub.ts';
import { walletTopic, type BalanceEvent } from '../ledger/ledger.service.ts';

/** What a customer can still spend in one currency: available balance plus the overage allowance. */
export interface Spendable {
  available: bigint;
  overdraftLimit: bigint;
}

interface Entry extends Spendable {
  loadedAt: number;
}

interface Watch {
  entries: Map<string, Entry>;
  stop: () => void;
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

  constructor(
    private readonly db: Database,
    private readonly pubsub: PubSub,
    private readonly options: { maxCustomers: number; ttlMs: number } = { maxCustomers: 10_000, ttlMs: 60_000 },
  ) {}

  /** The cached view, loading it (and subscribing to its changes) on first use. */
  async get(customerId: string, currency: string): Promise<Spendable> {
    const watch = this.watch(customerId);
    const entry = watch.entries.get(currency);
    if (entry && Date.now() - entry.loadedAt < this.options.ttlMs) return entry;
    return this.load(customerId, currency, watch);
  }

  /** Reads the database, bypassing what is cached, and keeps the fresh value. */
  async refresh(customerId: string, currency: string): Promise<Spendable> {
    return this.load(customerId, currency, this.watch(customerId));
  }

  close(): void {
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
    const watch: Watch = { entries: new Map(), stop: () => void events.return?.() };
    this.watches.set(customerId, watch);
    void (async () => {
      for await (const payload of events) {
        const event = payload as BalanceEvent;
        if (typeof event.available !== 'string' || typeof event.currency !== 'string') continue;
        watch.entries.set(event.currency, {
          available: parseDecimalNanos('available', event.available),
          overdraftLimit: typeof event.overdraftLimit === 'string' ? parseDecimalNanos('overdraftLimit', event.overdraftLimit) : (watch.entries.get(event.currency)?.overdraftLimit ?? 0n),
          loadedAt: Date.now(),
        });
      }
    })().catch(() => undefined);
    return watch;
  }

  private async load(customerId: string, currency: string, watch: Watch): Promise<Spendable> {
    const before = watch.entries.get(currency);
    const [row] = await this.db.withConnection((sql) =>
      sql.query<{ balance: string; overdraft_limit: string; held: string }>(
        `SELECT w.balance::text AS balance, w.overdraft_limit::text AS overdraft_limit,
           coalesce((SELECT sum(h.amount - h.captured_amount) FROM holds h
                     WHERE h.wallet_id = w.id AND h.status = 'PENDING' AND h.expires_at > now()), 0)::text AS held
         FROM wallets w WHERE w.customer_id = $1 AND w.currency = $2`,
        [customerId, currency],
      ),
    );
    const current = watch.entries.get(currency);
    // Each event stores a new entry; one that arrived while we read is at least as new as
    // what we read, so it wins.
    if (current && current !== before) return current;
    const entry: Entry = {
      available: row ? BigInt(row.balance) - BigInt(row.held) : 0n,
      overdraftLimit: row ? BigInt(row.overdraft_limit) : 0n,
      loadedAt: Date.now(),
    };
    watch.entries.set(currency, entry);
    return entry;
  }
}
