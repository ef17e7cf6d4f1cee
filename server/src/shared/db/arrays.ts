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

/** Text that an array literal can hold unquoted: no whitespace, braces, quotes, commas or backslashes. */
const PLAIN = /^[^\s{}",\\]+$/;

/**
 * The array literal of `pick` over `items`, without an intermediate array of values: ingest
 * builds some thirty columns per batch of a thousand events, so every per-element string counts.
 * Ids, numbers and times go in as they are (quoted only when they must be), and the literal is
 * joined once, so no string is built per element but for numbers and quoted text.
 */
export function pgArrayOf<T>(items: readonly T[], pick: (item: T) => ArrayElement): string {
  const parts: string[] = new Array<string>(items.length);
  // Rows of a batch often repeat the row before (merchant, currency, kind, wallet) and mostly
  // share their timestamps: a repeat reuses the text, and each distinct time is formatted once.
  let previous: ArrayElement = undefined;
  let previousText = '';
  let lastTime = Number.NaN;
  let lastIso = '';
  for (let i = 0; i < items.length; i++) {
    const value = pick(items[i]!);
    if (i > 0 && value === previous) {
      parts[i] = previousText;
      continue;
    }
    if (value === null || value === undefined) parts[i] = 'NULL';
    else if (typeof value === 'string') {
      if (PLAIN.test(value) && !(value.length === 4 && value.toUpperCase() === 'NULL')) parts[i] = value;
      else parts[i] = '"' + (value.indexOf('"') === -1 && value.indexOf('\\') === -1 ? value : value.replace(/["\\]/g, '\\$&')) + '"';
    } else if (typeof value === 'number' || typeof value === 'bigint') parts[i] = String(value);
    else if (typeof value === 'boolean') parts[i] = value ? 't' : 'f';
    else {
      const time = value.getTime();
      if (time !== lastTime) {
        lastTime = time;
        lastIso = value.toISOString();
      }
      parts[i] = lastIso;
    }
    previous = value;
    previousText = parts[i]!;
  }
  return '{' + parts.join(',') + '}';
}
