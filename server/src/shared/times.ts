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
