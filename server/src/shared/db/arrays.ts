/**
 * PostgreSQL array literals built in one pass, for `unnest($1::uuid[], …)` bulk statements.
 * The driver's generic encoding inspects and escapes every element on its own; a batch of
 * a few thousand elements is cheaper joined here. Pass the result as a text parameter with
 * an explicit cast (`$1::bigint[]`).
 */
export type ArrayElement = string | number | bigint | boolean | Date | null | undefined;

/** The array literal of `values`. */
export function pgArray(values: readonly ArrayElement[]): string {
  return pgArrayOf(values, (value) => value);
}

/**
 * The array literal of `pick` over `items`, without an intermediate array: ingest builds
 * some thirty columns per batch of a thousand events, so every per-element string counts.
 */
export function pgArrayOf<T>(items: readonly T[], pick: (item: T) => ArrayElement): string {
  let literal = '{';
  // Rows of a batch mostly share their timestamps: format each distinct one once.
  let lastTime = Number.NaN;
  let lastIso = '';
  for (let i = 0; i < items.length; i++) {
    if (i > 0) literal += ',';
    const value = pick(items[i]!);
    if (value === null || value === undefined) literal += 'NULL';
    else if (typeof value === 'string') {
      // Ids, keys and hashes rarely hold a quote or a backslash: skip the regex for them.
      literal += value.indexOf('"') === -1 && value.indexOf('\\') === -1 ? '"' + value + '"' : '"' + value.replace(/["\\]/g, '\\$&') + '"';
    } else if (typeof value === 'number' || typeof value === 'bigint') literal += value;
    else if (typeof value === 'boolean') literal += value ? 't' : 'f';
    else {
      const time = value.getTime();
      if (time !== lastTime) {
        lastTime = time;
        lastIso = value.toISOString();
      }
      literal += '"' + lastIso + '"';
    }
  }
  return literal + '}';
}
