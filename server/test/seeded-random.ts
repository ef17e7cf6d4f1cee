/**
 * mulberry32: a small seeded generator for model and race tests, so that a failing sequence's
 * choices can be replayed from its seed.
 */
export function seededRandom(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  /** A whole number from `min` to `max`, both included. */
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1));
  const pick = <T>(items: readonly T[]): T => items[int(0, items.length - 1)]!;
  const chance = (p: number) => next() < p;
  return { next, int, pick, chance };
}

export type SeededRandom = ReturnType<typeof seededRandom>;

/**
 * An amount the API wrote as a decimal string ("12.50", "-0.000000015") in units of 10^-`places`,
 * exactly (an oracle never reads money through a float); at most `places` decimals.
 */
export function decimalUnits(text: string, places: number): bigint {
  const match = /^(-)?(\d+)(?:\.(\d+))?$/.exec(text);
  if (!match || (match[3] ?? '').length > places) throw new Error(`unparseable amount: ${text}`);
  const units = BigInt(match[2]!) * 10n ** BigInt(places) + BigInt((match[3] ?? '').padEnd(places, '0'));
  return match[1] ? -units : units;
}

/** `units` of 10^-`places` as a decimal with at least `least` decimals (the API's form for Money is two). */
export function decimalText(units: bigint, places: number, least = 0): string {
  const scale = 10n ** BigInt(places);
  const sign = units < 0n ? '-' : '';
  const abs = units < 0n ? -units : units;
  let fraction = (abs % scale).toString().padStart(places, '0').replace(/0+$/, '');
  if (fraction.length < least) fraction = fraction.padEnd(least, '0');
  return `${sign}${abs / scale}${fraction ? `.${fraction}` : ''}`;
}
