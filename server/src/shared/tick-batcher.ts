/**
 * Gathers the loads asked for in one tick and answers them all from one call: a DataLoader in
 * miniature, without its cache. GraphQL calls a list's field resolvers one after another before
 * awaiting any, so the fields of a page of 100 customers become one query instead of 100.
 */
export class TickBatcher<K, V> {
  private pending: { key: K; resolve: (value: V) => void; reject: (error: unknown) => void }[] | null = null;

  /** `loadMany` answers the keys it found; keys it leaves out get `missing`. */
  constructor(
    private readonly loadMany: (keys: K[]) => Promise<Map<K, V>>,
    private readonly missing: V,
  ) {}

  load(key: K): Promise<V> {
    return new Promise((resolve, reject) => {
      if (!this.pending) {
        this.pending = [];
        // After the promise jobs already queued (resolvers awaiting their parents), as DataLoader does.
        void Promise.resolve().then(() => process.nextTick(() => this.flush()));
      }
      this.pending.push({ key, resolve, reject });
    });
  }

  private flush(): void {
    const batch = this.pending ?? [];
    this.pending = null;
    this.loadMany([...new Set(batch.map((item) => item.key))]).then(
      (found) => {
        for (const item of batch) item.resolve(found.has(item.key) ? found.get(item.key)! : this.missing);
      },
      (error: unknown) => {
        for (const item of batch) item.reject(error);
      },
    );
  }
}
