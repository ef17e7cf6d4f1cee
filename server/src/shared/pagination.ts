import { invalidField } from './errors.ts';
import { isStorableTime } from './times.ts';
import { isUuid } from './validation.ts';

/**
 * Keyset cursors over (createdAt, id), newest first. Stable under inserts, unlike offsets,
 * and served by the (merchant_id, created_at, id) indexes.
 */
export interface CreatedCursor {
  createdAt: Date;
  id: string;
}

export function encodeCreatedCursor(row: CreatedCursor): string {
  return Buffer.from(`${row.createdAt.toISOString()}|${row.id}`).toString('base64url');
}

/** A cursor's time exactly as encodeCreatedCursor writes it (toISOString): anything else was not issued here. */
const CURSOR_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

export function decodeCreatedCursor(field: string, cursor: string): CreatedCursor {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  // Node's decoder skips what is not base64 ("<cursor>|", "<cursor>!!", padding, spaces read as
  // the cursor): only the text encodeCreatedCursor writes for it was issued.
  const parts = Buffer.from(text).toString('base64url') === cursor ? text.split('|') : [];
  const [iso, id] = parts;
  const createdAt = parts.length === 2 && iso && CURSOR_TIME.test(iso) ? new Date(iso) : undefined;
  // Read back the way it was written: "2026-02-30T…" would roll over to March.
  if (!createdAt || Number.isNaN(createdAt.getTime()) || createdAt.toISOString() !== iso || !isStorableTime(createdAt) || !id || !isUuid(id)) {
    throw invalidField(field, 'is not a cursor this API issued');
  }
  return { createdAt, id: id.toLowerCase() };
}

/**
 * Prisma `where` + `orderBy` for one page. `inverted` pages backwards (Relay `last`/`before`):
 * the plugin reverses the rows back afterwards. `time` is the column the pages run by (its
 * cursors carry that time): `createdAt` unless the rows have a time of their own that callers
 * see (a usage event's `occurredAt`). `oldestFirst` runs the pages the other way.
 */
export function createdKeysetPage(params: { before?: string; after?: string; inverted: boolean }, time: 'createdAt' | 'occurredAt' = 'createdAt', oldestFirst = false) {
  const { before, after, inverted } = params;
  const conditions: object[] = [];
  const [past, ahead] = oldestFirst ? (['gt', 'lt'] as const) : (['lt', 'gt'] as const);
  // An empty cursor is a cursor too (not "from the start"): it was never issued.
  if (after !== undefined && after !== null) {
    const c = decodeCreatedCursor('after', after);
    conditions.push({ OR: [{ [time]: { [past]: c.createdAt } }, { [time]: c.createdAt, id: { [past]: c.id } }] });
  }
  if (before !== undefined && before !== null) {
    const c = decodeCreatedCursor('before', before);
    conditions.push({ OR: [{ [time]: { [ahead]: c.createdAt } }, { [time]: c.createdAt, id: { [ahead]: c.id } }] });
  }
  const direction = inverted !== oldestFirst ? ('asc' as const) : ('desc' as const);
  return { where: { AND: conditions }, orderBy: [{ [time]: direction }, { id: direction }] };
}
