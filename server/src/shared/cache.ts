/**
 * An in-process cache for lookups repeated on every request (credentials, settings, customers),
 * bounded in age and size. What it adds over a Map with timestamps:
 * - An entry past half its lifetime is refreshed in the background while callers keep getting
 *   it, so under steady traffic no request ever waits for the database.
 * - An absent or expired entry is loaded once, however many callers ask for it at the same
 *   moment; they all wait for that one load (instead of a hundred identical queries).
 * - Nothing older than `ttlMs` is ever served: a change made elsewhere is seen within it.
 */
/**
 * For a merchant's pricing configuration (price rules, provider prices, meters) read on every
 * usage batch. A change is dropped at once here and, through ConfigChanges, on other instances;
 * ttlMs bounds a lost message. 5 s, as for keys and customers: an event another instance took
 * meanwhile would be priced by the old configuration for good, and a reload (in the background, every couple of seconds under traffic)
 * costs one small query per merchant.
 */
export const MERCHANT_CONFIG_CACHE = { ttlMs: 5_000, maxEntries: 10_000 } as const;

export class RefreshingCache<K, V> {
  private readonly entries = new Map<K, { value: V; at: number }>();
  private readonly loading = new Map<K, Promise<V>>();

  constructor(
    private readonly options: { ttlMs: number; maxEntries: number },
    private readonly now: () => number = Date.now,
  ) {}

  async get(key: K, load: () => Promise<V>): Promise<V> {
    const entry = this.entries.get(key);
    const age = entry ? this.now() - entry.at : Infinity;
    if (entry && age < this.options.ttlMs) {
      if (age >= this.options.ttlMs / 2 && !this.loading.has(key)) {
        // A failed refresh leaves the entry as it was: the next caller past half-life tries again.
        this.load(key, load).catch(() => undefined);
      }
      return entry.value;
    }
    return this.loading.get(key) ?? this.load(key, load);
  }

  delete(key: K): void {
    this.entries.delete(key);
    this.loading.delete(key);
  }

  /** Drops the entries whose key (and value, when it is known) match; `value` is undefined for a load in flight. */
  deleteWhere(matches: (key: K, value: V | undefined) => boolean): void {
    for (const [key, entry] of [...this.entries]) if (matches(key, entry.value)) this.delete(key);
    for (const key of [...this.loading.keys()]) if (matches(key, undefined)) this.delete(key);
  }

  /** Drops the entries whose value matches, and every load in flight (its value is not known yet). */
  deleteWhereValue(matches: (value: V) => boolean): void {
    for (const [key, entry] of [...this.entries]) if (matches(entry.value)) this.delete(key);
    for (const key of [...this.loading.keys()]) this.delete(key);
  }

  private load(key: K, load: () => Promise<V>): Promise<V> {
    // Stamped with when the read began: what it returns is at least that recent.
    const startedAt = this.now();
    const pending = load().then(
      (value) => {
        // A delete() while this ran (a change made here) wins: the value may predate it.
        if (this.loading.get(key) !== pending) return value;
        this.loading.delete(key);
        if (this.entries.size >= this.options.maxEntries && !this.entries.has(key)) this.entries.delete(this.entries.keys().next().value as K);
        this.entries.set(key, { value, at: startedAt });
        return value;
      },
      (error: unknown) => {
        if (this.loading.get(key) === pending) this.loading.delete(key);
        throw error;
      },
    );
    this.loading.set(key, pending);
    return pending;
  }
}
