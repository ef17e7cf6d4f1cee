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
