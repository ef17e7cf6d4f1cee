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
