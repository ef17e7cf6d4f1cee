import { type AppError, invalidField } from './errors.ts';

/** Small input checks shared by services; each names the field it rejects. */

export function requireNonEmpty(field: string, value: string, maxLength = 255): string {
  const trimmed = value.trim();
  if (trimmed.length === 0) throw invalidField(field, 'must not be empty');
  if (trimmed.length > maxLength) throw invalidField(field, `must be at most ${maxLength} characters`);
  requireStorableText(field, trimmed);
  return trimmed;
}

export function optionalText(field: string, value: string | null | undefined, maxLength = 255): string | null | undefined {
  if (value === undefined || value === null) return value;
  const trimmed = value.trim();
  if (trimmed.length > maxLength) throw invalidField(field, `must be at most ${maxLength} characters`);
  requireStorableText(field, trimmed);
  return trimmed.length === 0 ? null : trimmed;
}

/**
 * Text kept exactly as given (it is part of what an idempotency key's retry must repeat, so it is
 * not trimmed), at most `maxLength` characters.
 */
export function requireTextAtMost(field: string, value: string | null | undefined, maxLength: number): void {
  if (value != null && value.length > maxLength) throw invalidField(field, `must be at most ${maxLength} characters`);
  requireStorableText(field, value);
}

// Deliberately loose: one @, something on both sides, a dot in the domain. Delivery proves the rest.
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export function optionalEmail(field: string, value: string | null | undefined): string | null | undefined {
  const text = optionalText(field, value, 320);
  if (text && !EMAIL.test(text)) throw invalidField(field, 'is not an email address');
  return text?.toLowerCase() ?? text;
}

export type JsonObject = { [key: string]: unknown };

/** An object as JSON has them: not null, not a list, not a Date. */
export function isJsonObject(value: unknown): value is JsonObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Date);
}

/** Refuses a value that is given but is not a JSON object: "" or false sent for one is a mistake, not an omission. */
export function requireObjectIfGiven(field: string, value: unknown): void {
  if (value != null && !isJsonObject(value)) throw invalidField(field, 'must be a JSON object');
}

export function requireJsonObject(field: string, value: unknown, maxBytes = 16_384): JsonObject {
  if (!isJsonObject(value)) throw invalidField(field, 'must be a JSON object');
  requireFaithfulJson(field, value);
  if (Buffer.byteLength(JSON.stringify(value)) > maxBytes) {
    throw invalidField(field, `must be at most ${maxBytes} bytes of JSON`);
  }
  requireStorableText(field, value);
  return value as JsonObject;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: string): boolean {
  return UUID.test(value);
}

export function requireUuid(field: string, value: string): string {
  if (!isUuid(value)) throw invalidField(field, 'is not a valid id');
  return value.toLowerCase();
}

export function requireIntInRange(field: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalidField(field, `must be a whole number from ${min} to ${max}`);
  }
  return value;
}

/** A NUL character, or a UTF-16 surrogate without its pair: text PostgreSQL refuses (jsonb) or silently alters (text). */
// eslint-disable-next-line no-control-regex -- the NUL character is what this looks for
const UNSTORABLE_TEXT = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether any string in `value` (object keys included) is text PostgreSQL cannot store as given. */
export function holdsUnstorableText(value: unknown): boolean {
  if (typeof value === 'string') return UNSTORABLE_TEXT.test(value);
  if (value === null || typeof value !== 'object') return false;
  if (Array.isArray(value)) return value.some(holdsUnstorableText);
  return Object.entries(value).some(([key, inner]) => UNSTORABLE_TEXT.test(key) || holdsUnstorableText(inner));
}

/**
 * Deeper than any real metadata nests. Deeper JSON overflows the stack of whatever walks it
 * recursively (JSON.stringify, holdsUnstorableText, Prisma, PostgreSQL's jsonb parser).
 */
export const MAX_JSON_DEPTH = 64;

/** Whether objects and lists in `value` nest more than `maxDepth` levels. Walks without recursion: safe at any depth. */
export function nestsDeeperThan(value: unknown, maxDepth: number): boolean {
  const pending: { value: unknown; depth: number }[] = [{ value, depth: 0 }];
  for (let next = pending.pop(); next; next = pending.pop()) {
    if (next.value === null || typeof next.value !== 'object') continue;
    const depth = next.depth + 1;
    if (depth > maxDepth) return true;
    for (const inner of Object.values(next.value)) pending.push({ value: inner, depth });
  }
  return false;
}

/** The error for JSON nested deeper than MAX_JSON_DEPTH, for walks that count the depth themselves. */
export function jsonTooDeep(field: string): AppError {
  return invalidField(field, `must not nest objects and lists more than ${MAX_JSON_DEPTH} levels deep`);
}

/**
 * Refuses, naming the field, JSON that would not be stored as given: nested deeper than
 * MAX_JSON_DEPTH (refused before anything recursive walks it), an own `__proto__` key at any
 * depth (dropped on the way to the database), or a number that is not finite (JSON.parse reads
 * 1e400 as Infinity, which is stored as null). One walk, without recursion.
 */
function requireFaithfulJson(field: string, value: unknown): void {
  const pending: { value: unknown; depth: number }[] = [{ value, depth: 0 }];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const inner = next.value;
    if (typeof inner === 'number') {
      if (!Number.isFinite(inner)) throw invalidField(field, 'must hold only finite numbers');
      continue;
    }
    if (inner === null || typeof inner !== 'object') continue;
    const depth = next.depth + 1;
    if (depth > MAX_JSON_DEPTH) throw jsonTooDeep(field);
    if (Object.hasOwn(inner, '__proto__')) throw invalidField(field, 'must not have a "__proto__" key');
    for (const item of Object.values(inner)) pending.push({ value: item, depth });
  }
}

/** Refuses JSON nested deeper than MAX_JSON_DEPTH, before anything recursive walks it. */
export function requireShallowJson(field: string, value: unknown): void {
  if (nestsDeeperThan(value, MAX_JSON_DEPTH)) throw jsonTooDeep(field);
}

/**
 * Refuses, naming the field, text PostgreSQL cannot store: refused up front, since at write time
 * it would fail the whole batch the value rides in. JSON too deep to walk, or that would be
 * stored other than sent (see requireFaithfulJson), is refused first.
 */
export function requireStorableText(field: string, value: unknown): void {
  if (value !== null && typeof value === 'object') requireFaithfulJson(field, value);
  if (holdsUnstorableText(value)) throw invalidField(field, 'must not contain the NUL character (\\u0000) or an unpaired UTF-16 surrogate');
}
