import { jsonTooDeep, MAX_JSON_DEPTH } from './validation.ts';

/**
 * `value` with every object's keys in sorted order (lists keep theirs), so one request hashes to
 * one text whatever order a client serialized its keys in; with `dropNulls`, a property set to
 * null counts as left out (where the reader treats them alike, e.g. a usage record's counts).
 * Hot paths hash every event: an object already in order that holds no objects (and no nulls
 * to drop) is returned as it is. Counts its depth, so JSON too deep to walk is refused.
 */
export function canonicalJson(value: unknown, field: string, dropNulls: boolean, depth = 1): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (depth > MAX_JSON_DEPTH) throw jsonTooDeep(field);
  if (Array.isArray(value)) return value.map((item) => canonicalJson(item, field, dropNulls, depth + 1));
  const given = value as Record<string, unknown>;
  const keys = Object.keys(given);
  let inOrder = true;
  for (let i = 0; inOrder && i < keys.length; i++) {
    const inner = given[keys[i]!];
    inOrder = (i === 0 || keys[i - 1]! < keys[i]!) && (inner === null ? !dropNulls : typeof inner !== 'object');
  }
  if (inOrder) return given;
  keys.sort();
  const sorted: Record<string, unknown> = {};
  for (const key of keys) {
    if (dropNulls && given[key] === null) continue;
    const inner = canonicalJson(given[key], field, dropNulls, depth + 1);
    // An own "__proto__" key (JSON.parse makes them) is data: assigned, it would set the prototype.
    if (key === '__proto__') Object.defineProperty(sorted, key, { value: inner, enumerable: true, writable: true, configurable: true });
    else sorted[key] = inner;
  }
  return sorted;
}
