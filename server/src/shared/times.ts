/**
 * A formatter of times as ISO text that formats each distinct time once: the rows of a batch
 * mostly share their time, and toISOString is costly next to what is done with each row.
 */
export function isoTimes(): (time: Date) => string {
  let lastTime = Number.NaN;
  let lastIso = '';
  return (time) => {
    const ms = time.getTime();
    if (ms !== lastTime) {
      lastTime = ms;
      lastIso = time.toISOString();
    }
    return lastIso;
  };
}

/**
 * How far ahead of the server's clock a usage event's timestamp may be (the caller's clock may
 * run fast). A price scheduled further ahead than this cannot have costed any event yet.
 */
export const MAX_FUTURE_USAGE_MS = 5 * 60_000;

/** The times this API stores and compares: years 1 to 9999 (PostgreSQL's own range is wider, JavaScript's wider still). */
const EARLIEST_TIME = Date.parse('0001-01-01T00:00:00.000Z');
const LATEST_TIME = Date.parse('9999-12-31T23:59:59.999Z');

export function isStorableTime(time: Date): boolean {
  const ms = time.getTime();
  return ms >= EARLIEST_TIME && ms <= LATEST_TIME;
}

/**
 * ISO 8601 as this API reads it: a date and time with its zone, `Z` or `±hh:mm`
 * (`2026-04-01T12:00`, `…:00`, `…:00.123`), or a date alone, read as midnight UTC as ECMAScript
 * reads one. Years may be expanded (`+010000`) so that the range check (isStorableTime), not
 * this, refuses them. `new Date(text)` is not used: it rolls impossible dates over (February 30th
 * becomes March 2nd), reads a time without a zone in the server's zone, and takes other text ("1").
 */
const ISO_TIME = /^([+-]\d{6}|\d{4})-(\d{2})-(\d{2})(?:[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(?:[Zz]|([+-])(\d{2}):(\d{2})))?$/;

/**
 * Times parsed from text that named an instant inside a millisecond, past its start (`…00.0005Z`):
 * a Date holds whole milliseconds, so they were cut to the one they fall in. Only a filter bound
 * needs to know (see atOrAfter and earlierThan); every other input stores the cut time as before.
 */
const CUT_TO_MILLISECOND = new WeakSet<Date>();

/**
 * The instant `text` names (see ISO_TIME), or null when it is not one or names a day that does not
 * exist. Digits past the millisecond (Python's isoformat() writes microseconds) are cut off.
 */
export function parseIsoTime(text: string): Date | null {
  const match = ISO_TIME.exec(text);
  if (!match || match[1] === '-000000') return null; // ISO 8601 has no minus zero year
  const [year, month, day, hour, minute, second, offsetHours, offsetMinutes] = [1, 2, 3, 4, 5, 6, 9, 10].map((group) => Number(match[group] ?? 0)) as [number, number, number, number, number, number, number, number];
  if (hour > 23 || minute > 59 || second > 59 || offsetHours > 23 || offsetMinutes > 59) return null;
  const time = new Date(0);
  // setUTCFullYear, not Date.UTC, which would read the years 0-99 as 1900-1999.
  time.setUTCFullYear(year, month - 1, day);
  time.setUTCHours(hour, minute, second, Number((match[7] ?? '').slice(0, 3).padEnd(3, '0')));
  if (time.getUTCFullYear() !== year || time.getUTCMonth() !== month - 1 || time.getUTCDate() !== day) return null;
  const offset = (offsetHours * 60 + offsetMinutes) * (match[8] === '-' ? -1 : 1);
  const instant = new Date(time.getTime() - offset * 60_000);
  if (/[1-9]/.test((match[7] ?? '').slice(3))) CUT_TO_MILLISECOND.add(instant);
  return instant;
}

/**
 * Conditions on a column of whole milliseconds (timestamptz(3)), exact for a bound parsed finer
 * than that: with `bound` cut down from b, a time t is at or after b exactly when it is after the
 * cut, and before b exactly when it is at or before the cut (no whole millisecond lies between).
 */
export function atOrAfter(bound: Date): { gte: Date } | { gt: Date } {
  return CUT_TO_MILLISECOND.has(bound) ? { gt: bound } : { gte: bound };
}

export function earlierThan(bound: Date): { lt: Date } | { lte: Date } {
  return CUT_TO_MILLISECOND.has(bound) ? { lte: bound } : { lt: bound };
}
