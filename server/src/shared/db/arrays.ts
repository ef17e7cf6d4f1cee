/**
 * PostgreSQL array literals built in one pass, for `unnest($1::uuid[], …)` bulk statements.
 * The driver's generic encoding inspects and escapes every element on its own; a batch of
 * a few thousand elements is cheaper joined here. Pass the result as a text parameter with
 * an explicit cast (`$1::bigint[]`).
 */
export type ArrayElement = string | number | bigint | boolean | Date | null | undefined;

function element(value: ArrayElement): string {
  if (value === null || value === undefined) return 'NULL';
  switch (typeof value) {
    case 'string':
      // Ids, keys and hashes rarely hold a quote or a backslash: skip the regex for them.
      return value.indexOf('"') === -1 && value.indexOf('\\') === -1 ? `"${value}"` : `"${value.replace(/["\\]/g, '\\$&')}"`;
    case 'number':
    case 'bigint':
      return String(value);
    case 'boolean':
      return value ? 't' : 'f';
    default:
      return `"${value.toISOString()}"`;
  }
}

export function pgArray(values: readonly ArrayElement[]): string {
  return `{${values.map(element).join(',')}}`;
}
