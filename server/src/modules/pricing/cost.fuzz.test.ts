import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from '../../../test/server.ts';
import { AppError } from '../../shared/errors.ts';
import type { NormalizedUsage } from '../usage/usage.types.ts';
import { canonicalRate, costOf, priceInForce, validateProviderPrice, withCanonicalRates, type ContextTier, type ProviderPrice, type TokenPrices } from './cost.ts';

/**
 * Property-based fuzz of the provider cost function (costOf) and its neighbours (priceInForce,
 * validateProviderPrice, canonicalRate) against an oracle written here from the documented rules:
 * the README ("Rates are stored and returned as decimal strings in their shortest form", the
 * price row in force at the event's time, "a request above N input tokens is all at these rates")
 * and, where it is silent, cost.ts's doc comments (fallback rates, what a cache write, reasoning
 * or audio token is a subset of, per-image keys). Nothing of cost.ts but its types is used by the
 * oracle, which computes in exact rationals of bigint attos (1e-18 USD), never a float.
 *
 * The rounding rule under test (costOf's doc comment, the same rule the README gives reported
 * costs): every term is exact, the sum is rounded once to the nearest atto, halves up.
 *
 * Properties:
 * - costOf equals the oracle exactly, or both refuse (VALIDATION) — random valid price rows with
 *   every kind of rate and random usage, impossible usage (cache reads + writes beyond input,
 *   1-hour writes beyond writes, reasoning + audio beyond output, bad counts) included;
 * - cost never falls when one kind of usage grows (price rows whose long-context tiers get dearer);
 * - a context tier applies exactly above its threshold: N input tokens cost as the rates below
 *   it, N + 1 as its own (each the base rates overridden field by field);
 * - the same price written another way ("2.50", "2.5", " 002.500 ", 2) is the same price: same
 *   shortest form, same stored rates, same cost;
 * - priceInForce picks the best model match, then the latest effectiveFrom at or before the time,
 *   at the very millisecond of each boundary, whatever the rows' order;
 * - validateProviderPrice accepts every valid row and refuses each documented way of being invalid.
 *
 * - an event recorded through GraphQL against a price set through GraphQL costs what
 *   the oracle says, or is recorded with its cost unknown when the row does not price it or the
 *   cost reaches 10^20 USD (README).
 *
 * Knobs: FUZZ_SEED, FUZZ_RUNS (multiplies the default run counts, default 1), FUZZ_STATS=1.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 1);
const SCALE = Number(process.env.FUZZ_RUNS ?? 1);
const runs = (n: number) => ({ seed: SEED, numRuns: Math.max(1, Math.round(n * SCALE)) });

// ---------------------------------------------------------------------------------------------
// The oracle: exact rationals of attos.

const ONE = 10n ** 18n;
const MILLION = 1_000_000n;

interface Fraction {
  n: bigint;
  d: bigint;
}
const gcd = (a: bigint, b: bigint): bigint => (b === 0n ? a : gcd(b, a % b));
function plus(a: Fraction, b: Fraction): Fraction {
  const n = a.n * b.d + b.n * a.d;
  const d = a.d * b.d;
  const g = gcd(n, d) || 1n;
  return { n: n / g, d: d / g };
}
/** Nearest whole number, a half going up (n ≥ 0). */
function nearestHalfUp({ n, d }: Fraction): bigint {
  const whole = n / d;
  return 2n * (n % d) >= d ? whole + 1n : whole;
}

/** A decimal (up to 18 places) as attos; null when it is not one. */
function decimalAttos(text: string): bigint | null {
  const match = /^(\d+)(?:\.(\d{1,18}))?$/.exec(text.trim());
  return match ? BigInt(match[1]!) * ONE + BigInt((match[2] ?? '').padEnd(18, '0')) : null;
}

/** A rate as attos per its unit: a decimal string, or a whole JSON number (exact). */
function rateOf(value: unknown): bigint | null {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? BigInt(value) * ONE : null;
  return typeof value === 'string' ? decimalAttos(value) : null;
}

/** The shortest decimal string of an amount of attos. */
function shortest(attos: bigint): string {
  const fraction = (attos % ONE).toString().padStart(18, '0').replace(/0+$/, '');
  return `${attos / ONE}${fraction ? `.${fraction}` : ''}`;
}

class Refused extends Error {}
const refuse = (why: string): never => {
  throw new Refused(why);
};
type Outcome = { cost: bigint } | { refused: string };

const TOKEN_KEYS = ['input', 'cachedInput', 'cacheWrite', 'cacheWrite1h', 'output', 'reasoning', 'inputAudio', 'outputAudio'] as const;
type TokenKey = (typeof TOKEN_KEYS)[number];

/** The token rates a request of `inputTokens` pays: the base overridden field by field by the highest tier it is above. */
function ratesFor(price: ProviderPrice, inputTokens: bigint): TokenPrices {
  let rates: TokenPrices = { ...(price.perMillionTokens ?? {}) };
  let above = -1n;
  for (const tier of price.contextTiers ?? []) {
    const threshold = BigInt(tier.aboveInputTokens);
    if (inputTokens > threshold && threshold > above) {
      above = threshold;
      rates = { ...(price.perMillionTokens ?? {}) };
      for (const key of TOKEN_KEYS) if (tier.perMillionTokens[key] != null) rates[key] = tier.perMillionTokens[key];
    }
  }
  return rates;
}

function oracle(usage: NormalizedUsage, price: ProviderPrice): Outcome {
  try {
    return { cost: oracleCost(usage, price) };
  } catch (error) {
    if (error instanceof Refused) return { refused: error.message };
    throw error;
  }
}

function oracleCost(usage: NormalizedUsage, price: ProviderPrice): bigint {
  if (price.currency !== 'USD') refuse('not USD');
  // Providers do not charge for errors: nothing of the record is read.
  if (!usage.billable) return 0n;
  const whole = (what: string, value: number) => (Number.isSafeInteger(value) && value >= 0 ? BigInt(value) : refuse(`${what} is not a count`));
  const input = whole('inputTokens', usage.inputTokens);
  const cached = whole('cachedInputTokens', usage.cachedInputTokens);
  const written = whole('cacheWriteTokens', usage.cacheWriteTokens);
  const output = whole('outputTokens', usage.outputTokens);
  const reasoning = whole('reasoningTokens', usage.reasoningTokens);
  // Cache reads and writes are subsets of inputTokens; reasoning of outputTokens.
  if (cached + written > input) refuse('cache reads + writes exceed input');
  if (reasoning > output) refuse('reasoning exceeds output');
  const detail = (key: string): bigint => {
    const value = usage.details[key];
    if (value === undefined) return 0n;
    if (typeof value === 'string') return /^\d+$/.test(value.trim()) ? BigInt(value.trim()) : refuse(`${key} is not a count`);
    return whole(key, value);
  };
  const written1h = detail('cache_write_1h_tokens');
  if (written1h > written) refuse('1-hour writes exceed cache writes');
  const uncached = input - cached - written;
  // Prompt audio is counted cached or not: only its uncached part takes the audio rate.
  const promptAudio = detail('input_audio_tokens');
  const audioIn = promptAudio < uncached ? promptAudio : uncached;
  // Output audio is a subset of output disjoint from reasoning.
  const audioOut = detail('output_audio_tokens');
  if (audioOut + reasoning > output) refuse('output audio + reasoning exceed output');

  let total: Fraction = { n: 0n, d: 1n };
  const add = (quantity: bigint, rate: bigint, per: bigint) => {
    total = plus(total, { n: quantity * rate, d: per });
  };
  const rates = ratesFor(price, input);
  // Fallbacks: cache reads and writes at input, 1-hour writes at cache writes, reasoning at output, audio at text.
  const chains: [bigint, TokenKey[]][] = [
    [uncached - audioIn, ['input']],
    [audioIn, ['inputAudio', 'input']],
    [cached, ['cachedInput', 'input']],
    [written - written1h, ['cacheWrite', 'input']],
    [written1h, ['cacheWrite1h', 'cacheWrite', 'input']],
    [output - reasoning - audioOut, ['output']],
    [reasoning, ['reasoning', 'output']],
    [audioOut, ['outputAudio', 'output']],
  ];
  for (const [quantity, chain] of chains) {
    if (quantity === 0n) continue;
    const key = chain.find((name) => rates[name] != null);
    if (key === undefined) refuse(`no rate for ${chain[0]} tokens`);
    add(quantity, rateOf(rates[key!])!, MILLION);
  }

  const images = whole('images', usage.images);
  // Images the provider billed as tokens (their tokens reported) are costed by a token-priced row's tokens alone.
  const billedAsTokens = price.perMillionTokens != null && detail('input_image_tokens') + detail('output_image_tokens') > 0n;
  if (images > 0n && !billedAsTokens) {
    const text = (key: string) => {
      const value = usage.details[key];
      return value === undefined || String(value).trim() === '' ? null : String(value).trim().toLowerCase();
    };
    const size = text('size');
    const quality = text('quality');
    const keyed = new Map(Object.entries(price.perImageBy ?? {}).map(([key, value]) => [key.trim().toLowerCase(), value]));
    const wanted = [size && quality ? `${size}/${quality}` : null, size, quality].filter((key): key is string => key !== null);
    const hit = wanted.map((key) => keyed.get(key)).find((value) => value !== undefined) ?? price.perImage;
    if (hit == null) refuse('no price for these images');
    add(images, rateOf(hit)!, 1n);
  }

  if (usage.audioSeconds != null) {
    const seconds = decimalAttos(usage.audioSeconds) ?? refuse('audioSeconds is not a decimal');
    if (price.perAudioSecond != null && price.perAudioMinute != null) refuse('both audio rates');
    if (price.perAudioMinute != null) add(seconds, rateOf(price.perAudioMinute)!, 60n * ONE);
    else if (price.perAudioSecond != null) add(seconds, rateOf(price.perAudioSecond)!, ONE);
    else if (seconds > 0n) refuse('no audio rate');
  }

  const characters = whole('characters', usage.characters);
  if (price.perCharacter != null && price.perMillionCharacters != null) refuse('both character rates');
  if (price.perMillionCharacters != null) add(characters, rateOf(price.perMillionCharacters)!, MILLION);
  else if (price.perCharacter != null) add(characters, rateOf(price.perCharacter)!, 1n);
  else if (characters > 0n) refuse('no character rate');

  const requests = whole('requests', usage.requests);
  if (price.perRequest != null) add(requests, rateOf(price.perRequest)!, 1n);
  return nearestHalfUp(total);
}

/** costOf's answer in the oracle's terms: a VALIDATION error is a refusal, anything else thrown fails the test. */
function actual(usage: NormalizedUsage, price: ProviderPrice): Outcome {
  try {
    const cost = costOf(usage, price);
    if (typeof cost !== 'bigint') throw new Error(`costOf answered a ${typeof cost}: ${String(cost)}`);
    return { cost };
  } catch (error) {
    if (error instanceof AppError && error.code === 'VALIDATION') return { refused: `${String(error.details.field)}: ${error.message}` };
    throw error;
  }
}

const same = (a: Outcome, b: Outcome) => ('cost' in a && 'cost' in b ? a.cost === b.cost : 'refused' in a && 'refused' in b);
const showOutcome = (outcome: Outcome) => ('cost' in outcome ? `${shortest(outcome.cost)} USD` : `refused (${outcome.refused})`);
const json = (value: unknown) => JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));

// ---------------------------------------------------------------------------------------------
// Generators.

const digits = (min: number, max: number) => fc.array(fc.integer({ min: 0, max: 9 }), { minLength: min, maxLength: max }).map((list) => list.join(''));
/** The whole part of a rate: up to 12 digits, mostly small. */
const wholePart = fc.oneof(
  { weight: 4, arbitrary: fc.constant('0') },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 99 }).map(String) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 10n ** 12n - 1n }).map(String) },
);
/** A decimal string of a rate, as configs write them: up to 18 places, trailing zeros or not. */
const rateText = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(wholePart, digits(0, 6)).map(([w, f]) => (f ? `${w}.${f}` : w)) },
  { weight: 3, arbitrary: fc.tuple(wholePart, digits(7, 18)).map(([w, f]) => `${w}.${f}`) },
  { weight: 1, arbitrary: fc.constantFrom('0', '2.50', '0.000000000000000001', '999999999999.999999999999999999', '0.075') },
);
/** A rate, sometimes as a whole JSON number (exact), which a config may write bare. */
const rate: fc.Arbitrary<string> = fc.oneof({ weight: 12, arbitrary: rateText }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 1000 }) as unknown as fc.Arbitrary<string> });
/** Set (weight `set`), left out, or null: null is an unset rate. */
const maybe = <T>(arbitrary: fc.Arbitrary<T>, set = 1) =>
  fc.oneof({ weight: set, arbitrary }, { weight: 1, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constant(null) });

const withoutUndefined = <T extends object>(value: T): T => Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;

const tokenPrices = (inputOutputWeight: number) =>
  fc
    .record({
      input: maybe(rate, inputOutputWeight), cachedInput: maybe(rate), cacheWrite: maybe(rate), cacheWrite1h: maybe(rate),
      output: maybe(rate, inputOutputWeight), reasoning: maybe(rate), inputAudio: maybe(rate), outputAudio: maybe(rate),
    })
    .map((rates) => withoutUndefined(rates) as TokenPrices);
const tokenRateCount = (rates: TokenPrices | undefined | null) => TOKEN_KEYS.filter((key) => rates?.[key] != null).length;

/** Thresholds near usage counts, and far beyond them. */
const threshold = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 3_000 }) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 3_000_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 2 ** 50 }) },
  { weight: 1, arbitrary: fc.constant(Number.MAX_SAFE_INTEGER) },
);
const tierRates = tokenPrices(1).chain((rates) =>
  tokenRateCount(rates) > 0 ? fc.constant(rates) : fc.tuple(fc.constantFrom(...TOKEN_KEYS), rateText).map(([key, text]) => ({ ...rates, [key]: text })),
);
const tiers = fc
  .uniqueArray(fc.tuple(threshold, tierRates), { maxLength: 3, selector: ([above]) => above })
  .map((list) => list.map(([aboveInputTokens, perMillionTokens]): ContextTier => ({ aboveInputTokens, perMillionTokens })));

const SIZES = ['1024x1024', '1024x1792', '512x512'];
const QUALITIES = ['standard', 'hd', 'low'];
const IMAGE_KEYS = [...SIZES, ...QUALITIES, ...SIZES.flatMap((size) => QUALITIES.map((quality) => `${size}/${quality}`))];
/** A name spelled another way: case and surrounding spaces (keys and details match trimmed and case-insensitively). */
const respell = (text: string, seed: number) => {
  const cased = seed % 3 === 0 ? text.toUpperCase() : seed % 3 === 1 ? text : text.replace(/^./, (c) => c.toUpperCase());
  return `${' '.repeat((seed >> 2) % 2)}${cased}${' '.repeat((seed >> 3) % 2)}`;
};
const perImageBy = fc
  .uniqueArray(fc.tuple(fc.constantFrom(...IMAGE_KEYS), rate, fc.nat(15)), { maxLength: 5, selector: ([key]) => key })
  .map((entries) => Object.fromEntries(entries.map(([key, value, seed]) => [respell(key, seed), value])));

const unitRates = fc.record({
  perImage: maybe(rate),
  perImageBy: fc.option(perImageBy, { nil: undefined, freq: 3 }),
  audio: fc.constantFrom('none', 'perAudioSecond', 'perAudioMinute'),
  audioRate: rate,
  characters: fc.constantFrom('none', 'perCharacter', 'perMillionCharacters'),
  characterRate: rate,
  perRequest: maybe(rate),
});

const ROW = { provider: 'acme', model: 'm', currency: 'USD' as const, effectiveFrom: new Date('2026-01-01T00:00:00Z') };

/** Random valid price rows: every kind of rate, long-context tiers, per-image maps; each prices something. */
const validPrice: fc.Arbitrary<ProviderPrice> = fc
  .record({ base: fc.option(tokenPrices(6), { nil: undefined, freq: 6 }), contextTiers: fc.oneof(fc.constant(undefined), tiers), units: unitRates, fallback: rate })
  .map(({ base, contextTiers, units, fallback }) => {
    const price: ProviderPrice = withoutUndefined({
      ...ROW,
      // Tiers override the base field by field: a row with tiers needs its base rates.
      perMillionTokens: base ?? (contextTiers?.length ? {} : undefined),
      contextTiers,
      perImage: units.perImage,
      perImageBy: units.perImageBy,
      perRequest: units.perRequest,
      ...(units.audio === 'none' ? {} : { [units.audio]: units.audioRate }),
      ...(units.characters === 'none' ? {} : { [units.characters]: units.characterRate }),
    });
    const priced = tokenRateCount(price.perMillionTokens) + Object.keys(price.perImageBy ?? {}).length
      + (['perImage', 'perAudioSecond', 'perAudioMinute', 'perCharacter', 'perMillionCharacters', 'perRequest'] as const).filter((key) => price[key] != null).length;
    return priced > 0 ? price : { ...price, perRequest: fallback };
  });

/** Counts: zero, small, large, huge (kept so that sums of a few stay safe integers). */
const amount = fc.oneof(
  { weight: 3, arbitrary: fc.constant(0) },
  { weight: 5, arbitrary: fc.integer({ min: 1, max: 3_000 }) },
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 3_000_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 48 }) },
);
const countText = (value: number, asText: boolean): number | string => (asText ? String(value) : value);
const audioSeconds = fc.oneof(
  { weight: 3, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: fc.constantFrom('0', '25.933313', '0.5', '60', '0.000000000000000001') },
  { weight: 2, arbitrary: fc.tuple(fc.integer({ min: 0, max: 100_000 }), digits(0, 18)).map(([w, f]) => (f ? `${w}.${f}` : String(w))) },
  { weight: 1, arbitrary: fc.tuple(fc.bigInt({ min: 0n, max: 10n ** 12n - 1n }), digits(1, 18)).map(([w, f]) => `${w}.${f}`) },
);

interface Parts {
  uncached: number;
  cached: number;
  write5m: number;
  write1h: number;
  text: number;
  reasoning: number;
  audioOut: number;
  promptAudio: number;
  images: number;
  characters: number;
  requests: number;
  audioSeconds: string | null;
  imageTokens: number;
  size: string | null;
  quality: string | null;
  /** Whether details' counts are written as strings, and 1-hour writes are split out at all. */
  textCounts: boolean;
  split: boolean;
}

const partsArb: fc.Arbitrary<Parts> = fc.record({
  uncached: amount, cached: amount, write5m: amount, write1h: amount, text: amount, reasoning: amount, audioOut: amount, promptAudio: amount,
  images: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: amount }),
  characters: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: amount }),
  requests: fc.oneof(fc.constant(0), fc.constant(1), amount),
  audioSeconds,
  imageTokens: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: amount }),
  size: fc.option(fc.tuple(fc.constantFrom(...SIZES, '256x256'), fc.nat(15)).map(([size, seed]) => respell(size, seed))),
  quality: fc.option(fc.tuple(fc.constantFrom(...QUALITIES, 'medium'), fc.nat(15)).map(([quality, seed]) => respell(quality, seed))),
  textCounts: fc.boolean(),
  split: fc.boolean(),
});

/** A consistent usage record built from its parts (each kind of token apart). */
function usageOf(parts: Parts, billable = true): NormalizedUsage {
  const written = parts.write5m + parts.write1h;
  const details: Record<string, string | number> = {};
  if (parts.split || parts.write1h > 0) {
    details.cache_write_1h_tokens = countText(parts.write1h, parts.textCounts);
    details.cache_write_5m_tokens = parts.write5m;
  }
  if (parts.promptAudio > 0) details.input_audio_tokens = countText(parts.promptAudio, parts.textCounts);
  if (parts.audioOut > 0) details.output_audio_tokens = parts.audioOut;
  if (parts.imageTokens > 0) details[parts.textCounts ? 'input_image_tokens' : 'output_image_tokens'] = parts.imageTokens;
  if (parts.size !== null) details.size = parts.size;
  if (parts.quality !== null) details.quality = parts.quality;
  return {
    provider: 'acme', api: 'chat.completions', model: 'm',
    inputTokens: parts.uncached + parts.cached + written, cachedInputTokens: parts.cached, cacheWriteTokens: written,
    outputTokens: parts.text + parts.reasoning + parts.audioOut, reasoningTokens: parts.reasoning,
    audioSeconds: parts.audioSeconds, characters: parts.characters, images: parts.images, requests: parts.requests,
    details, providerReportedCostUsd: null, billable, incomplete: false, streamedText: null,
  };
}

/** Counts that need not add up: cache reads and writes beyond input, reasoning beyond output, counts that are no counts. */
const badCount = fc.constantFrom(-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, Number.MAX_SAFE_INTEGER);
const rawUsage: fc.Arbitrary<NormalizedUsage> = fc
  .record({
    parts: partsArb,
    inputTokens: fc.oneof(amount, fc.maxSafeNat()), cachedInputTokens: amount, cacheWriteTokens: amount, outputTokens: amount, reasoningTokens: amount,
    bad: fc.option(fc.tuple(fc.constantFrom('inputTokens', 'cachedInputTokens', 'cacheWriteTokens', 'outputTokens', 'reasoningTokens', 'images', 'characters', 'requests'), badCount), { freq: 4 }),
    over1h: fc.boolean(),
  })
  .map(({ parts, bad, over1h, ...counts }) => {
    const usage = { ...usageOf(parts), ...counts };
    if (over1h) usage.details = { ...usage.details, cache_write_1h_tokens: usage.cacheWriteTokens + 1 };
    return bad ? { ...usage, [bad[0]]: bad[1] } : usage;
  });

/** Usage of no tokens (images, audio, speech), some with image tokens reported beside none. */
const unitsOnly = partsArb.map((parts) => usageOf({ ...parts, uncached: 0, cached: 0, write5m: 0, write1h: 0, text: 0, reasoning: 0, audioOut: 0, promptAudio: 0 }));

const anyUsage = fc.oneof(
  { weight: 8, arbitrary: partsArb.map((parts) => usageOf(parts)) },
  { weight: 2, arbitrary: unitsOnly },
  { weight: 2, arbitrary: rawUsage },
  { weight: 1, arbitrary: partsArb.map((parts) => usageOf(parts, false)) },
);

// ---------------------------------------------------------------------------------------------

describe('costOf against the oracle', () => {
  it('costs every usage record exactly as documented (nearest atto, halves up), or refuses it as the oracle does', () => {
    const seen = { costed: 0, refused: 0, tiered: 0, nonZero: 0 };
    fc.assert(
      fc.property(validPrice, anyUsage, (price, usage) => {
        const expected = oracle(usage, price);
        const got = actual(usage, price);
        if (!same(expected, got)) {
          throw new Error(`costOf answered ${showOutcome(got)}, the oracle ${showOutcome(expected)}\nprice ${json(price)}\nusage ${json(usage)}`);
        }
        if ('cost' in got) {
          seen.costed += 1;
          if (got.cost > 0n) seen.nonZero += 1;
          if ((price.contextTiers ?? []).some((tier) => usage.inputTokens > tier.aboveInputTokens)) seen.tiered += 1;
        } else seen.refused += 1;
      }),
      runs(4000),
    );
    // The generators reach what they are meant to: costed records, tiers in use, refusals.
    if (process.env.FUZZ_STATS === '1') console.log(seen);
    expect(seen.costed).toBeGreaterThan(400 * SCALE);
    expect(seen.nonZero).toBeGreaterThan(300 * SCALE);
    expect(seen.tiered).toBeGreaterThan(50 * SCALE);
    expect(seen.refused).toBeGreaterThan(400 * SCALE);
  });

  it('rounds once, to the nearest atto, halves up: sub-atto terms add up before rounding', () => {
    // 1e-18 USD per million tokens: each token is a millionth of an atto.
    const tiny = { ...ROW, perMillionTokens: { input: '0.000000000000000001', output: '0.000000000000000001', cachedInput: '0.000000000000000001' } };
    fc.assert(
      fc.property(fc.nat(5_000_000), fc.nat(5_000_000), fc.nat(5_000_000), (uncached, cached, output) => {
        const usage = usageOf({ ...EMPTY, uncached, cached, text: output });
        const millionths = BigInt(uncached + cached + output);
        const expected = millionths / MILLION + (2n * (millionths % MILLION) >= MILLION ? 1n : 0n);
        expect(costOf(usage, tiny)).toBe(expected);
      }),
      runs(300),
    );
  });
});

const EMPTY: Parts = {
  uncached: 0, cached: 0, write5m: 0, write1h: 0, text: 0, reasoning: 0, audioOut: 0, promptAudio: 0, images: 0, characters: 0, requests: 0,
  audioSeconds: null, imageTokens: 0, size: null, quality: null, textCounts: false, split: false,
};

// ---------------------------------------------------------------------------------------------

const MAX_RATE = 10n ** 12n * ONE - 1n;
const minOf = (a: bigint, b: bigint) => (a < b ? a : b);

/** Rows whose long-context tiers only get dearer (as providers' do), and that price every unit. */
const dearerTiersPrice: fc.Arbitrary<ProviderPrice> = fc
  .record({
    keys: fc.subarray([...TOKEN_KEYS], { minLength: 0 }),
    base: fc.array(rateText, { minLength: TOKEN_KEYS.length, maxLength: TOKEN_KEYS.length }),
    steps: fc.uniqueArray(fc.tuple(threshold, fc.array(fc.bigInt({ min: 0n, max: 10n ** 19n }), { minLength: TOKEN_KEYS.length, maxLength: TOKEN_KEYS.length })), {
      maxLength: 3, selector: ([above]) => above,
    }),
    order: fc.nat(),
    units: unitRates,
    image: rate,
    audio: fc.constantFrom('perAudioSecond', 'perAudioMinute'),
    characters: fc.constantFrom('perCharacter', 'perMillionCharacters'),
  })
  .map(({ keys, base, steps, order, units, image, audio, characters }) => {
    const used = [...new Set<TokenKey>(['input', 'output', ...keys])];
    let level = Object.fromEntries(used.map((key) => [key, decimalAttos(base[TOKEN_KEYS.indexOf(key)]!)!]));
    const ofLevel = (attos: Record<string, bigint>) => Object.fromEntries(Object.entries(attos).map(([key, value]) => [key, shortest(value)])) as TokenPrices;
    const contextTiers = [...steps].sort((a, b) => a[0] - b[0]).map(([above, rises]): ContextTier => {
      // Dearer or the same, within the 12 digits a rate may have before the point.
      level = Object.fromEntries(used.map((key) => [key, minOf(level[key]! + rises[TOKEN_KEYS.indexOf(key)]!, MAX_RATE)]));
      return { aboveInputTokens: above, perMillionTokens: ofLevel(level) };
    });
    // Tiers in any order: the highest one a request is above applies.
    const rotated = contextTiers.map((_, index) => contextTiers[(index + order) % contextTiers.length]!);
    return withoutUndefined({
      ...ROW, perMillionTokens: ofLevel(Object.fromEntries(used.map((key) => [key, decimalAttos(base[TOKEN_KEYS.indexOf(key)]!)!]))), contextTiers: rotated,
      perImage: image, perImageBy: units.perImageBy, perRequest: units.perRequest, [audio]: units.audioRate, [characters]: units.characterRate,
    }) as ProviderPrice;
  });

const GROWABLE = ['uncached', 'cached', 'write5m', 'write1h', 'text', 'reasoning', 'audioOut', 'promptAudio', 'images', 'characters', 'requests', 'audioSeconds'] as const;

describe('costOf is monotone', () => {
  it('more of any one kind of usage never costs less', () => {
    fc.assert(
      fc.property(dearerTiersPrice, partsArb, fc.constantFrom(...GROWABLE), amount, digits(0, 18), (price, parts, kind, more, fraction) => {
        const grown: Parts = { ...parts };
        if (kind === 'audioSeconds') {
          const seconds = decimalAttos(parts.audioSeconds ?? '0')! + BigInt(more % 1e9) * ONE + BigInt(fraction.padEnd(18, '0'));
          // A duration has at most 12 digits before the point.
          fc.pre(seconds < 10n ** 12n * ONE);
          grown.audioSeconds = shortest(seconds);
        } else if (kind === 'promptAudio') {
          // Prompt audio tokens are input tokens too.
          grown.promptAudio += more;
          grown.uncached += more;
        } else grown[kind] += more;
        const before = actual(usageOf(parts), price);
        const after = actual(usageOf(grown), price);
        if (!('cost' in before) || !('cost' in after)) throw new Error(`a row pricing every unit refused usage: ${showOutcome(before)} / ${showOutcome(after)}\nprice ${json(price)}\nparts ${json(parts)}`);
        if (after.cost < before.cost) {
          throw new Error(`${more} more ${kind} lowered the cost from ${shortest(before.cost)} to ${shortest(after.cost)}\nprice ${json(price)}\nparts ${json(parts)}`);
        }
      }),
      runs(1500),
    );
  });
});

// ---------------------------------------------------------------------------------------------

/** The price with one set of token rates and no tiers: the base overridden field by field by the tier above `above` (or none). */
function flattened(price: ProviderPrice, above: number | null): ProviderPrice {
  const tier = above === null ? null : price.contextTiers!.find((candidate) => candidate.aboveInputTokens === above)!;
  const rates: TokenPrices = { ...(price.perMillionTokens ?? {}) };
  for (const key of TOKEN_KEYS) if (tier?.perMillionTokens[key] != null) rates[key] = tier.perMillionTokens[key];
  return { ...price, perMillionTokens: rates, contextTiers: [] };
}

describe('context tiers', () => {
  it('a tier applies exactly above its threshold: N input tokens pay the rates below it, N + 1 its own', () => {
    const tiered = validPrice.filter((price) => (price.contextTiers?.length ?? 0) > 0 && price.contextTiers!.some((tier) => tier.aboveInputTokens < Number.MAX_SAFE_INTEGER));
    fc.assert(
      fc.property(tiered, fc.nat(), partsArb, fc.nat(), fc.nat(), (price, pick, parts, cachedShare, writeShare) => {
        const usable = price.contextTiers!.filter((tier) => tier.aboveInputTokens < Number.MAX_SAFE_INTEGER);
        const n = usable[pick % usable.length]!.aboveInputTokens;
        // n input tokens in all, some of them cache reads and writes.
        const cached = cachedShare % (n + 1);
        const written = writeShare % (n - cached + 1);
        const write1h = Math.min(parts.write1h, written);
        const atN: Parts = { ...parts, cached, write5m: written - write1h, write1h, uncached: n - cached - written };
        const below = Math.max(-1, ...price.contextTiers!.map((tier) => tier.aboveInputTokens).filter((above) => above < n));
        const cases: [number, Parts, number | null][] = [
          [n, atN, below === -1 ? null : below],
          [n + 1, { ...atN, uncached: atN.uncached + 1 }, n],
        ];
        for (const [inputTokens, at, tier] of cases) {
          const usage = usageOf(at);
          expect(usage.inputTokens).toBe(inputTokens);
          const got = actual(usage, price);
          const flat = actual(usage, flattened(price, tier));
          if (!same(got, flat)) {
            throw new Error(`${inputTokens} input tokens cost ${showOutcome(got)}, the rates ${tier === null ? 'of the base' : `above ${tier}`} ${showOutcome(flat)}\nprice ${json(price)}\nusage ${json(usage)}`);
          }
          expect(same(got, oracle(usage, price))).toBe(true);
        }
      }),
      runs(1500),
    );
  });
});

// ---------------------------------------------------------------------------------------------

/** The same rate written another way: trailing or leading zeros, spaces around it, a whole number bare. */
function rewritten(value: unknown, seed: number): unknown {
  const attos = rateOf(value)!;
  const canonical = shortest(attos);
  const [whole, fraction = ''] = canonical.split('.');
  const pad = 18 - fraction.length;
  switch (seed % 6) {
    case 0:
      return canonical;
    case 1:
      return pad > 0 ? `${whole}.${fraction}${'0'.repeat(1 + ((seed >> 3) % pad))}` : canonical;
    case 2:
      return `${'0'.repeat(Math.max(0, Math.min(12 - whole!.length, 1 + ((seed >> 3) % 3))))}${canonical}`;
    case 3:
      return ` ${typeof value === 'number' ? String(value) : value} `;
    case 4:
      return attos % ONE === 0n && attos / ONE <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(attos / ONE) : canonical;
    default:
      return fraction ? canonical : `${whole}.0`;
  }
}

function respelled(price: ProviderPrice, seed: number, keys: boolean): ProviderPrice {
  let next = seed;
  const again = (value: unknown) => {
    next = (next * 1103515245 + 12345) % 2 ** 31;
    return value == null ? value : rewritten(value, next >> 4);
  };
  const rates = (of: TokenPrices) => Object.fromEntries(Object.entries(of).map(([key, value]) => [key, again(value)])) as TokenPrices;
  return {
    ...price,
    perMillionTokens: price.perMillionTokens && rates(price.perMillionTokens),
    contextTiers: price.contextTiers?.map((tier) => ({ ...tier, perMillionTokens: rates(tier.perMillionTokens) })),
    perImageBy: price.perImageBy && Object.fromEntries(Object.entries(price.perImageBy).map(([key, value]) => [keys ? respell(key.trim(), (next >> 5) % 16) : key, again(value) as string])),
    ...Object.fromEntries((['perImage', 'perAudioSecond', 'perAudioMinute', 'perCharacter', 'perMillionCharacters', 'perRequest'] as const).filter((key) => key in price).map((key) => [key, again(price[key])])),
  };
}

describe('the same price written another way', () => {
  it('has the same shortest form, the same stored rates and the same cost', () => {
    fc.assert(
      fc.property(validPrice, fc.nat(), anyUsage, (price, seed, usage) => {
        const values = respelled(price, seed, false);
        const named = respelled(price, seed, true);
        expect(validateProviderPrice(values)).toBe(values);
        expect(validateProviderPrice(named)).toBe(named);
        for (const key of TOKEN_KEYS) {
          const text = values.perMillionTokens?.[key];
          if (text != null) expect(canonicalRate('x', text)).toBe(shortest(rateOf(text)!));
        }
        expect(withCanonicalRates(values)).toEqual(withCanonicalRates(price));
        const cost = actual(usage, price);
        for (const variant of [values, named]) {
          const other = actual(usage, variant);
          if (!same(cost, other)) throw new Error(`${showOutcome(cost)} written one way, ${showOutcome(other)} another\n${json(price)}\n${json(variant)}\nusage ${json(usage)}`);
        }
      }),
      runs(1500),
    );
  });
});

// ---------------------------------------------------------------------------------------------

const BASE_NAME = 'gpt-q';
const DATES = ['-2026-03-17', '@20251101', '-20251001'];
interface Named {
  prefix: '' | 'acme/';
  base: string;
  date: string;
}
const nameOf = ({ prefix, base, date }: Named) => `${prefix}${base}${date}`;
/** Which match a row's name is for the model asked for (priceInForce's doc comment): 4 the whole name, 3 its undated name, 2 / 1 the same without the provider's prefix. */
function rank(row: Named, asked: Named): number {
  if (row.base !== asked.base) return 0;
  if (row.prefix === asked.prefix && row.date === asked.date) return 4;
  if (row.prefix === asked.prefix && asked.date && !row.date) return 3;
  if (asked.prefix && !row.prefix && row.date === asked.date) return 2;
  if (asked.prefix && !row.prefix && asked.date && !row.date) return 1;
  return 0;
}

const T0 = Date.parse('2026-03-01T00:00:00Z');
const askedName = fc.record({ prefix: fc.constantFrom<'' | 'acme/'>('', 'acme/'), base: fc.constant(BASE_NAME), date: fc.constantFrom('', ...DATES) });
const historyArb = fc.record({
  asked: askedName,
  rows: fc.array(
    fc.record({
      provider: fc.constantFrom('acme', ' ACME', 'Acme ', 'other'),
      prefix: fc.constantFrom<'' | 'acme/'>('', 'acme/'),
      base: fc.constantFrom(BASE_NAME, BASE_NAME, `${BASE_NAME}-mini`),
      date: fc.constantFrom('', '', 'asked', '-2025-01-01'),
      // A few instants, so that rows share them and boundaries meet.
      from: fc.oneof(fc.integer({ min: 0, max: 4 }).map((k) => T0 + k * 86_400_000), fc.integer({ min: -3, max: 3 }).map((ms) => T0 + 86_400_000 + ms)),
      spelling: fc.nat(15),
    }),
    { minLength: 1, maxLength: 8 },
  ),
  extra: fc.array(fc.integer({ min: -86_400_000, max: 6 * 86_400_000 }), { maxLength: 3 }),
  shuffles: fc.array(fc.nat(), { minLength: 2, maxLength: 2 }),
});

describe('priceInForce', () => {
  it('picks the best model match, then the latest effectiveFrom at or before the time, at each boundary and in any order', () => {
    fc.assert(
      fc.property(historyArb, ({ asked, rows: specs, extra, shuffles }) => {
        const rows = specs.map((spec, index) => {
          const named: Named = { prefix: spec.prefix, base: spec.base, date: spec.date === 'asked' ? asked.date : spec.date };
          const row: ProviderPrice & { named: Named; id: number } = {
            ...ROW, provider: spec.provider, model: respell(nameOf(named), spec.spelling), effectiveFrom: new Date(spec.from),
            perMillionTokens: { input: String(index) }, named, id: index,
          };
          return row;
        });
        const model = nameOf(asked);
        const times = [...new Set([...rows.flatMap((row) => [-1, 0, 1].map((ms) => row.effectiveFrom.getTime() + ms)), ...extra.map((ms) => T0 + ms)])];
        for (const at of times) {
          const candidates = rows
            .filter((row) => row.provider.trim().toLowerCase() === 'acme' && row.effectiveFrom.getTime() <= at)
            .map((row) => ({ row, rank: rank(row.named, asked) }))
            .filter((candidate) => candidate.rank > 0);
          const bestRank = Math.max(0, ...candidates.map((candidate) => candidate.rank));
          const ofRank = candidates.filter((candidate) => candidate.rank === bestRank);
          const latest = Math.max(...ofRank.map((candidate) => candidate.row.effectiveFrom.getTime()));
          const top = ofRank.filter((candidate) => candidate.row.effectiveFrom.getTime() === latest);
          // Two rows of the best match taking effect at the same instant: which one prices is not known.
          const expected = top.length > 1 ? 'ambiguous' : (top[0]?.row.id ?? null);
          for (const shuffle of [0, ...shuffles]) {
            const order = [...rows].sort((a, b) => ((a.id * 7919 + shuffle) % 104729) - ((b.id * 7919 + shuffle) % 104729));
            let got: number | null | 'ambiguous';
            try {
              got = (priceInForce(order, ' Acme', model, new Date(at)) as (typeof rows)[number] | null)?.id ?? null;
            } catch (error) {
              if (!(error instanceof AppError && error.details.field === 'rows')) throw error;
              got = 'ambiguous';
            }
            if (got !== expected) {
              throw new Error(`${model} at ${new Date(at).toISOString()}: priceInForce chose ${got}, expected ${expected}\nrows (in this order) ${json(order.map(({ id, provider, model: name, effectiveFrom }) => ({ id, provider, model: name, from: effectiveFrom.toISOString() })))}`);
            }
          }
        }
      }),
      runs(1500),
    );
  });

  it('two rows at one instant are ambiguous only while they are the rows in force, whatever the order', () => {
    const at = (iso: string, input: string, model = 'gpt-q'): ProviderPrice => ({ ...ROW, model, effectiveFrom: new Date(iso), perMillionTokens: { input } });
    const [first, twin, later] = [at('2026-03-01T00:00:00Z', '1'), at('2026-03-01T00:00:00Z', '2', 'GPT-Q'), at('2026-03-02T00:00:00Z', '3')];
    for (const rows of [[first, twin, later], [later, first, twin], [first, later, twin]]) {
      expect(priceInForce(rows, 'acme', 'gpt-q', new Date('2026-03-02T00:00:00Z'))).toBe(later);
      expect(() => priceInForce(rows, 'acme', 'gpt-q', new Date('2026-03-01T12:00:00Z'))).toThrow(/two prices/);
    }
  });
});

// ---------------------------------------------------------------------------------------------

type Mutation = [label: string, change: (price: Record<string, unknown>) => void];
const at = (price: Record<string, unknown>, key: string) => price[key] as Record<string, unknown>;
const someRate = (price: Record<string, unknown>, value: unknown) => {
  price.perMillionTokens = { ...(at(price, 'perMillionTokens') ?? {}), input: value };
};
const BAD_RATES: unknown[] = ['-1', '-0.5', '0.0000000000000000001', '1e-7', '1E3', 'abc', '', ' ', '1.', '.5', '1,5', '+1', '0x10', '1 000', 0.5, -2, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 60, true, {}, ['1']];

/** Each a documented way for a row to be invalid. */
const INVALID: Mutation[] = [
  ...BAD_RATES.flatMap((bad): Mutation[] => [
    [`token rate ${String(bad)}`, (price) => someRate(price, bad)],
    [`perRequest ${String(bad)}`, (price) => { price.perRequest = bad; }],
    [`perImageBy value ${String(bad)}`, (price) => { price.perImageBy = { ...(at(price, 'perImageBy') ?? {}), hd: bad }; }],
    [`tier rate ${String(bad)}`, (price) => {
      price.perMillionTokens ??= {};
      price.contextTiers = [{ aboveInputTokens: 1000, perMillionTokens: { output: bad } }];
    }],
  ]),
  ['a typo of a field', (price) => { price.perMilionTokens = { input: '1' }; }],
  ['a typo of a token rate', (price) => { price.perMillionTokens = { ...(at(price, 'perMillionTokens') ?? {}), inptu: '1' }; }],
  ['no rate at all', (price) => {
    for (const key of Object.keys(price)) if (!['provider', 'model', 'currency', 'effectiveFrom'].includes(key)) delete price[key];
  }],
  ['an empty perMillionTokens alone', (price) => {
    for (const key of Object.keys(price)) if (!['provider', 'model', 'currency', 'effectiveFrom'].includes(key)) delete price[key];
    price.perMillionTokens = {};
  }],
  ['per audio second and minute', (price) => { price.perAudioSecond = '0.001'; price.perAudioMinute = '0.06'; }],
  ['per character and per million characters', (price) => { price.perCharacter = '0.001'; price.perMillionCharacters = '15'; }],
  ['tiers without base rates', (price) => {
    delete price.perMillionTokens;
    price.contextTiers = [{ aboveInputTokens: 1000, perMillionTokens: { input: '2' } }];
  }],
  ...[0, -1, 1.5, '1000', Number.NaN, 2 ** 53, null, undefined].map((above): Mutation => [`tier threshold ${String(above)}`, (price) => {
    price.perMillionTokens ??= {};
    price.contextTiers = [{ aboveInputTokens: above, perMillionTokens: { input: '2' } }];
  }]),
  ['two tiers at one threshold', (price) => {
    price.perMillionTokens ??= {};
    price.contextTiers = [{ aboveInputTokens: 5, perMillionTokens: { input: '2' } }, { aboveInputTokens: 5, perMillionTokens: { input: '3' } }];
  }],
  ['a tier setting no rate', (price) => {
    price.perMillionTokens ??= {};
    price.contextTiers = [{ aboveInputTokens: 5, perMillionTokens: { input: null } }];
  }],
  ['a tier without rates', (price) => {
    price.perMillionTokens ??= {};
    price.contextTiers = [{ aboveInputTokens: 5 }];
  }],
  ['a tier with another field', (price) => {
    price.perMillionTokens ??= {};
    price.contextTiers = [{ aboveInputTokens: 5, perMillionTokens: { input: '2' }, cachedInput: '1' }];
  }],
  ['tiers not a list', (price) => {
    price.perMillionTokens ??= {};
    price.contextTiers = { aboveInputTokens: 5, perMillionTokens: { input: '2' } };
  }],
  ['token rates not an object', (price) => { price.perMillionTokens = '2.5'; }],
  ['perImageBy not an object', (price) => { price.perImageBy = '0.04'; }],
  ['an empty perImageBy key', (price) => { price.perImageBy = { '  ': '0.04' }; }],
  ['perImageBy keys matching alike', (price) => { price.perImageBy = { HD: '0.08', ' hd': '0.09' }; }],
  ['another currency', (price) => { price.currency = 'EUR'; }],
  ['no date', (price) => { price.effectiveFrom = new Date('not a date'); }],
  ['a date as text', (price) => { price.effectiveFrom = '2026-01-01T00:00:00Z'; }],
  ['a date after year 9999', (price) => { price.effectiveFrom = new Date('+010000-01-01T00:00:00Z'); }],
  ['an empty provider', (price) => { price.provider = '  '; }],
  ['an empty model', (price) => { price.model = ''; }],
  ['a model of 256 characters', (price) => { price.model = 'm'.repeat(256); }],
  ['a provider that is no text', (price) => { price.provider = 7; }],
  ['a model with a NUL', (price) => { price.model = 'a\u0000b'; }],
];

/** Each a valid change: the row stays valid. */
const VALID: Mutation[] = [
  ['null rates are unset rates', (price) => {
    for (const key of ['perImage', 'perAudioMinute', 'perMillionCharacters']) price[key] ??= null;
    if (price.perMillionTokens != null) at(price, 'perMillionTokens').reasoning ??= null;
  }],
  ['a zero rate', (price) => { price.perRequest = '0'; }],
  ['a whole number bare', (price) => { price.perRequest = 2; }],
  ['a rate with spaces and trailing zeros', (price) => { price.perRequest = ' 0.0100 '; }],
  ['18 decimal places', (price) => { price.perRequest = '0.000000000000000001'; }],
  ['no tiers', (price) => { price.contextTiers = []; }],
  ['null tiers', (price) => { price.contextTiers = null; }],
  ['a model of 255 characters', (price) => { price.model = 'm'.repeat(255); }],
  ['the last day of year 9999', (price) => { price.effectiveFrom = new Date('9999-12-31T00:00:00Z'); }],
  ['per audio second instead', (price) => { delete price.perAudioMinute; price.perAudioSecond = '0.0001'; }],
];

describe('validateProviderPrice', () => {
  it('accepts every valid row, and refuses each documented way of being invalid', () => {
    fc.assert(
      fc.property(validPrice, fc.constantFrom(...INVALID), fc.constantFrom(...VALID), (price, [badLabel, breakIt], [goodLabel, keepIt]) => {
        expect(validateProviderPrice(price), 'a valid row').toBe(price);
        const good = structuredClone(price) as unknown as Record<string, unknown>;
        keepIt(good);
        if ('perAudioSecond' in good && good.perAudioSecond != null && good.perAudioMinute != null) delete good.perAudioMinute;
        expect(() => validateProviderPrice(good as unknown as ProviderPrice), goodLabel).not.toThrow();
        const bad = structuredClone(price) as unknown as Record<string, unknown>;
        breakIt(bad);
        let refused: unknown = null;
        try {
          validateProviderPrice(bad as unknown as ProviderPrice);
        } catch (error) {
          refused = error;
        }
        if (!(refused instanceof AppError && refused.code === 'VALIDATION')) {
          throw new Error(`${badLabel}: ${refused ? `answered ${String(refused)}` : 'accepted'}\n${json(bad)}`);
        }
      }),
      runs(1500),
    );
  });
});

// ---------------------------------------------------------------------------------------------

/** A rate small enough that a usage record sent through the API costs well below 10^20 USD… */
const apiRate = fc.tuple(fc.integer({ min: 0, max: 99 }), digits(0, 18)).map(([w, f]) => (f ? `${w}.${f}` : String(w)));
/** …or, now and then, one so large that it costs more than an event stores. */
const apiPrice = fc.record({
  perMillionTokens: fc.record({ input: apiRate, cachedInput: maybe(apiRate), cacheWrite: maybe(apiRate), output: apiRate, reasoning: maybe(apiRate) }).map(withoutUndefined),
  contextTiers: fc.option(fc.tuple(fc.integer({ min: 1, max: 5_000 }), apiRate).map(([aboveInputTokens, input]) => [{ aboveInputTokens, perMillionTokens: { input } }]), { nil: undefined }),
  perImage: maybe(fc.oneof({ weight: 9, arbitrary: apiRate }, { weight: 1, arbitrary: fc.constant('999999999999') })),
  perAudioMinute: maybe(apiRate),
  perMillionCharacters: maybe(apiRate),
  perRequest: maybe(apiRate),
}).map((rates) => withoutUndefined(rates) as Omit<ProviderPrice, 'provider' | 'model' | 'currency' | 'effectiveFrom'>);
const apiCount = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 0, max: 2_147_483_647 }));
const apiUsage = fc
  .record({
    uncached: apiCount, cached: apiCount, write: apiCount, text: apiCount, reasoning: apiCount,
    images: fc.oneof(fc.constant(0), apiCount), characters: fc.oneof(fc.constant(0), apiCount), requests: fc.integer({ min: 1, max: 3 }),
    audioSeconds: fc.option(fc.tuple(fc.integer({ min: 0, max: 100_000 }), digits(0, 18)).map(([w, f]) => (f ? `${w}.${f}` : String(w))), { nil: undefined }),
  })
  // Counts an event may carry: each at most 2,147,483,647.
  .filter(({ uncached, cached, write, text, reasoning }) => uncached + cached + write <= 2_147_483_647 && text + reasoning <= 2_147_483_647);

const withoutRow = ({ provider: _provider, model: _model, currency: _currency, effectiveFrom: _from, ...rates }: ProviderPrice) => rates;

describe('costing through the API', () => {
  let server: TestServer;
  beforeAll(async () => {
    const { startTestServer } = await import('../../../test/server.ts');
    server = await startTestServer();
  });
  afterAll(() => server?.close());

  it('an event recorded against a price set through GraphQL costs what the oracle says (unknown beyond 10^20 USD or when unpriced)', async () => {
    const { secret } = await server.createMerchant('cost-fuzz');
    const gql = async <T>(query: string, variables: Record<string, unknown>) => {
      const response = await server.graphql<T>(query, variables, secret);
      if (response.errors?.length) throw new Error(`GraphQL: ${response.errors.map((error) => error.message).join('; ')}`);
      return response.data!;
    };
    const { createCustomer } = await gql<{ createCustomer: { id: string } }>('mutation($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }', { input: { externalId: `cost-fuzz-${randomUUID()}` } });
    let n = 0;
    await fc.assert(
      fc.asyncProperty(apiPrice, apiUsage, async (rates, counts) => {
        const model = `fuzz-${++n}-${randomUUID().slice(0, 8)}`;
        await gql('mutation($input: SetProviderPriceInput!) { setProviderPrice(input: $input) { ref } }', {
          input: { provider: 'acme', model, effectiveFrom: '2026-01-01T00:00:00Z', rates: withoutRow(respelled({ ...ROW, ...rates }, n, false)) },
        });
        const usage = {
          provider: 'acme', model, inputTokens: counts.uncached + counts.cached + counts.write, cachedInputTokens: counts.cached, cacheWriteTokens: counts.write,
          outputTokens: counts.text + counts.reasoning, reasoningTokens: counts.reasoning, images: counts.images, characters: counts.characters,
          requests: counts.requests, ...(counts.audioSeconds === undefined ? {} : { audioSeconds: counts.audioSeconds }),
        };
        const { recordUsage } = await gql<{ recordUsage: { event: { cost: string; costProblem: string | null } } }>(
          'mutation($input: RecordUsageInput!) { recordUsage(input: $input) { event { cost costProblem } } }',
          { input: { customer: createCustomer.id, idempotencyKey: `k-${model}`, usage } },
        );
        const record: NormalizedUsage = {
          ...usageOf(EMPTY), inputTokens: usage.inputTokens, cachedInputTokens: usage.cachedInputTokens, cacheWriteTokens: usage.cacheWriteTokens,
          outputTokens: usage.outputTokens, reasoningTokens: usage.reasoningTokens, images: usage.images, characters: usage.characters,
          requests: usage.requests, audioSeconds: counts.audioSeconds ?? null,
        };
        const expected = oracle(record, { ...ROW, ...rates });
        const { cost, costProblem } = recordUsage.event;
        const where = `rates ${json(rates)}\nusage ${json(usage)}\nanswered cost ${cost}, costProblem ${costProblem}`;
        if ('cost' in expected && expected.cost < 10n ** 38n) {
          expect(costProblem, where).toBeNull();
          expect(decimalAttos(cost), where).toBe(expected.cost);
        } else {
          expect(costProblem, `${where}\nexpected the cost unknown: ${showOutcome(expected)}`).not.toBeNull();
        }
      }),
      runs(6),
    );
  });
});
