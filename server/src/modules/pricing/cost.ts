import { invalidField } from '../../shared/errors.ts';
import { formatScaled, parseDecimalAttos } from '../../shared/money.ts';
import { isStorableTime } from '../../shared/times.ts';
import { isJsonObject, requireStorableText } from '../../shared/validation.ts';
import type { NormalizedUsage } from '../usage/usage.types.ts';
import { count, knownPriceAttos, priceAttos, roundHalfUp, type PriceText } from './decimal.ts';

/**
 * What a provider charges for one usage record. Prices are exact decimal strings in USD;
 * the result is atto-dollars (1e-18) as a bigint.
 */

/** USD per 1,000,000 tokens, as decimal strings. A missing rate falls back as documented on costOf. */
export interface TokenPrices {
  /** Uncached input: inputTokens − cachedInputTokens − cacheWriteTokens. */
  input?: string | null;
  /** Cache reads (hits). */
  cachedInput?: string | null;
  /**
   * Audio inside the cache reads (details.cached_audio_tokens), where a provider prices it apart
   * from cached text (Gemini's context caching); unset, cached audio is costed as cachedInput.
   */
  cachedInputAudio?: string | null;
  /** Cache writes; for Anthropic this is the 5-minute rate. */
  cacheWrite?: string | null;
  /** Cache writes with a 1-hour TTL, when the details carry the split. */
  cacheWrite1h?: string | null;
  /** All output tokens, reasoning included unless `reasoning` is set. */
  output?: string | null;
  /** Reasoning tokens, when a provider prices them apart from output. */
  reasoning?: string | null;
  /** Audio tokens inside the uncached input (details.input_audio_tokens). */
  inputAudio?: string | null;
  /** Audio tokens inside the output (details.output_audio_tokens). */
  outputAudio?: string | null;
  /** Image tokens inside the uncached input (details.input_image_tokens): GPT image models rate them above text. */
  inputImage?: string | null;
  /** Image tokens inside the output (details.output_image_tokens): GPT image models, Gemini's image output. */
  outputImage?: string | null;
}

/** Long-context pricing: once inputTokens exceeds the threshold, the whole request uses these rates. */
export interface ContextTier {
  aboveInputTokens: number;
  /** Overrides the base rates field by field; rates it leaves out keep the base value. */
  perMillionTokens: TokenPrices;
}

export interface ProviderPrice {
  provider: string;
  /** Undated name ("gpt-5.4-mini"); dated snapshots match it (see modelMatchRank). */
  model: string;
  currency: 'USD';
  /** History is kept: the row in force is the latest effectiveFrom at or before the usage time. */
  effectiveFrom: Date;
  perMillionTokens?: TokenPrices;
  contextTiers?: ContextTier[];
  /** Per image when no keyed price matches. */
  perImage?: string | null;
  /** Per image keyed by "size/quality", "size" or "quality" (from usage.details), most specific first. */
  perImageBy?: Record<string, string>;
  perAudioSecond?: string | null;
  perAudioMinute?: string | null;
  perCharacter?: string | null;
  perMillionCharacters?: string | null;
  perRequest?: string | null;
}

/** Keys of NormalizedUsage.details that pricing reads (as the normalizers write them). Absent = 0 / no split. */
export const USAGE_DETAIL_KEYS = {
  /** Subset of cacheWriteTokens written with a 1-hour TTL; the rest is priced at cacheWrite. */
  cacheWrite1hTokens: 'cache_write_1h_tokens',
  /** Informational: the 5-minute part of cacheWriteTokens. */
  cacheWrite5mTokens: 'cache_write_5m_tokens',
  /** Audio tokens of the prompt; priced at inputAudio as part of the uncached input. */
  inputAudioTokens: 'input_audio_tokens',
  /** Audio tokens of the cache reads: inside cachedInputTokens; priced at cachedInputAudio. */
  cachedAudioTokens: 'cached_audio_tokens',
  /** Audio tokens of the output; a subset of outputTokens disjoint from reasoning. */
  outputAudioTokens: 'output_audio_tokens',
  /** Tokens of the prompt's images: inside inputTokens; priced at inputImage as part of the uncached input. */
  inputImageTokens: 'input_image_tokens',
  /** Tokens of the generated images: inside outputTokens, disjoint from reasoning and audio; priced at outputImage. */
  outputImageTokens: 'output_image_tokens',
  imageSize: 'size',
  imageQuality: 'quality',
} as const;

const PER_MILLION = 1_000_000n;
const SECONDS_PER_MINUTE = 60n;
const SECOND_SCALE = 10n ** 18n;
/** Every term of a cost is an exact fraction over this denominator; it is rounded once, at the end. */
const DENOMINATOR = PER_MILLION * SECONDS_PER_MINUTE * SECOND_SCALE;

const DATE_SUFFIX = /[-@](?:\d{4}-\d{2}-\d{2}|\d{8})$/;

/**
 * 2 = same name, 1 = the model is a dated snapshot of the priced name
 * ("gpt-5.4-mini-2026-03-17", "claude-haiku-4-5-20251001", "claude-opus-4-5@20251101"), 0 = no match.
 * Only dates are stripped: a bare prefix must not match, or gpt-5.4 would price gpt-5.4-mini.
 */
export function modelMatchRank(pricedModel: string, model: string): 0 | 1 | 2 {
  const priced = pricedModel.trim().toLowerCase();
  const reported = model.trim().toLowerCase();
  if (priced === reported) return 2;
  const undated = reported.replace(DATE_SUFFIX, '');
  return undated !== reported && undated === priced ? 1 : 0;
}

/**
 * The model name without a leading "<owner>/" or "publishers/<owner>/models/" naming one of
 * `owners` (provider ids), or null when it has no such prefix. Vertex AI's OpenAI-compatible
 * endpoint names Gemini "google/gemini-2.0-flash-001"; a gateway may name "openai/gpt-4o". Any
 * other prefix is part of the name: "meta-llama/Llama-3.3-70B" on Together is that model's name.
 */
export function withoutOwnerPrefix(model: string, owners: readonly string[]): string | null {
  const name = model.trim();
  if (!name.includes('/')) return null;
  const lower = name.toLowerCase();
  for (const owner of owners) {
    const id = owner.trim().toLowerCase();
    if (!id) continue;
    for (const prefix of [`${id}/`, `publishers/${id}/models/`]) {
      if (lower.startsWith(prefix) && name.length > prefix.length) return name.slice(prefix.length);
    }
  }
  return null;
}

/**
 * The names a reported model is matched by, trimmed and lower-cased, read once per model rather
 * than once per row or rule compared with it (see modelNameRank).
 */
export interface ModelNames {
  /** The whole name. */
  whole: string;
  /** The whole name without its date suffix; null when it has none. */
  undated: string | null;
  /** The name without its owner's prefix (see withoutOwnerPrefix); null when it has none. */
  unprefixed: string | null;
  /** That without its date suffix; null when either is missing. */
  unprefixedUndated: string | null;
}

function undatedOf(name: string): string | null {
  const undated = name.replace(DATE_SUFFIX, '');
  return undated === name ? null : undated;
}

/** The names `model` is matched by, its prefix stripped when it names one of `owners` (provider ids). */
export function modelNames(model: string, owners: readonly string[]): ModelNames {
  const whole = model.trim().toLowerCase();
  const unprefixed = withoutOwnerPrefix(model, owners)?.trim().toLowerCase() ?? null;
  return { whole, undated: undatedOf(whole), unprefixed, unprefixedUndated: unprefixed === null ? null : undatedOf(unprefixed) };
}

/**
 * How well a priced name (a price row's or a price rule's model) matches a reported model, best
 * first: 4 = the whole name, 3 = the whole name as a dated snapshot (see modelMatchRank), 2 = the
 * name without its owner's prefix, 1 = that as a dated snapshot, 0 = no match.
 */
export function modelNameRank(pricedModel: string, names: ModelNames): 0 | 1 | 2 | 3 | 4 {
  const priced = pricedModel.trim().toLowerCase();
  if (priced === names.whole) return 4;
  if (priced === names.undated) return 3;
  if (priced === names.unprefixed) return 2;
  return priced === names.unprefixedUndated ? 1 : 0;
}

/**
 * The names an event's model is matched by, as its price row is found (see resolvePrice): a
 * prefix naming the provider that served it, or the maker whose models that provider resells
 * (resoldBy), is stripped. A cloud that names the maker's model its own way (Bedrock's
 * "[region.]anthropic.<model>-v1:0") is matched by the maker's name for it too, as the maker's
 * row costs it, in the place of a name without its prefix. Price rules match these names too, so
 * a model is the same model to its price row and to the rules that price it.
 */
export function eventModelNames(provider: string | null, model: string): ModelNames {
  if (!provider) return modelNames(model, NO_OWNERS);
  const maker = resoldBy(provider, model);
  return servedModelNames(provider, model, maker ? [provider, maker.provider] : [provider]);
}

/**
 * modelNames of a model `provider` served, its prefix stripped when it names one of `owners`. A
 * cloud's own name for a maker's model (Bedrock's "[region.]anthropic.<model>-v1:0", see resoldBy)
 * has no such prefix: the maker's name for it stands in the place of the name without its prefix.
 */
function servedModelNames(provider: string, model: string, owners: readonly string[]): ModelNames {
  const names = modelNames(model, owners);
  if (names.unprefixed !== null) return names;
  const makers = resoldBy(provider, model)?.model.trim().toLowerCase();
  return makers === undefined || makers === names.whole ? names : { ...names, unprefixed: makers, unprefixedUndated: undatedOf(makers) };
}

const NO_OWNERS: readonly string[] = [];

/**
 * The model maker whose price a cloud charges for a model it resells, or null. Vertex AI bills
 * Gemini at the Gemini API's list price and Claude (as on Bedrock) at Anthropic's; Azure OpenAI
 * bills OpenAI's models at OpenAI's. That is their standard (global) price: a merchant whose
 * deployment costs more (regional endpoints, provisioned throughput) adds rows under the cloud's
 * own provider id, and those win. Bedrock names models "[region.]anthropic.<model>-v1:0"; Vertex
 * AI's OpenAI-compatible endpoint prefixes the maker ("google/gemini-2.0-flash-001"), which the
 * maker's rows are matched without (see priceInForce).
 */
export function resoldBy(provider: string, model: string): { provider: string; model: string } | null {
  switch (provider.trim().toLowerCase()) {
    case 'vertex':
      return { provider: CLAUDE.test(withoutOwnerPrefix(model, ANTHROPIC) ?? model.trim()) ? 'anthropic' : 'google', model };
    case 'azure-openai':
      return { provider: 'openai', model };
    case 'bedrock': {
      const at = model.lastIndexOf('anthropic.');
      return at === -1 ? null : { provider: 'anthropic', model: model.slice(at + 'anthropic.'.length).replace(BEDROCK_VERSION, '') };
    }
    default:
      return null;
  }
}

const CLAUDE = /^claude-/i;
const ANTHROPIC: readonly string[] = ['anthropic'];
const BEDROCK_VERSION = /-v\d+(?::\d+)?$/;

/**
 * The price row in force at `at`: best model match first (see modelNameRank), then the latest
 * effectiveFrom ≤ at. A model named with a prefix of the provider's own id, or of one of `owners`
 * (the maker whose models a cloud resells, see resoldBy), is also matched without it, below any
 * match of the whole name (see withoutOwnerPrefix): "openai/gpt-4o" is priced as gpt-4o by
 * OpenAI's row. Bedrock's "[region.]anthropic.<model>-v1:0" is matched so by <model> (see
 * servedModelNames), as Vertex AI's "claude-…@date" is by its undated name.
 */
export function priceInForce<T extends ProviderPrice>(rows: readonly T[], provider: string, model: string, at: Date, owners: readonly string[] = []): T | null {
  if (!(at instanceof Date) || Number.isNaN(at.getTime())) throw invalidField('at', 'must be a valid date');
  const wanted = provider.trim().toLowerCase();
  const names = servedModelNames(provider, model, [provider, ...owners]);
  let best: T | null = null;
  let bestRank = 0;
  // A row as good as `best`, at its instant. Only an error once every row is seen: a later row (or a
  // better match) further on supersedes both, and the rows' order must not decide whether it throws.
  let tied: T | null = null;
  for (const row of rows) {
    if (row.provider.trim().toLowerCase() !== wanted) continue;
    const from = row.effectiveFrom.getTime();
    if (Number.isNaN(from)) throw invalidField('rows.effectiveFrom', `is not a valid date for ${row.provider}/${row.model}`);
    if (from > at.getTime()) continue;
    // 4 / 3: the whole name, exactly or as a dated snapshot; 2 / 1: the same without the owner's prefix.
    const rank = modelNameRank(row.model, names);
    if (rank === 0 || rank < bestRank) continue;
    if (best && rank === bestRank) {
      const bestFrom = best.effectiveFrom.getTime();
      if (from === bestFrom) tied = row;
      if (from <= bestFrom) continue;
    }
    best = row;
    bestRank = rank;
    tied = null;
  }
  if (tied) throw invalidField('rows', `two prices for ${tied.provider}/${tied.model} take effect at ${tied.effectiveFrom.toISOString()}`);
  return best;
}

const TOKEN_KEYS = ['input', 'cachedInput', 'cachedInputAudio', 'cacheWrite', 'cacheWrite1h', 'output', 'reasoning', 'inputAudio', 'outputAudio', 'inputImage', 'outputImage'] as const;
const UNIT_KEYS = ['perImage', 'perAudioSecond', 'perAudioMinute', 'perCharacter', 'perMillionCharacters', 'perRequest'] as const;
/** Every key a price row may have: anything else (a typo) would be stored and silently price nothing. */
const PRICE_KEYS: ReadonlySet<string> = new Set(['provider', 'model', 'currency', 'effectiveFrom', 'perMillionTokens', 'contextTiers', 'perImageBy', ...UNIT_KEYS]);
/**
 * Context tiers in threshold order, when each has a whole threshold (anything else as it is): the
 * tier a request uses is the highest threshold it exceeds, wherever it is listed, so tiers listed
 * in another order are the same price (compared so by the price service and by a pricing file's plan).
 */
export function contextTiersInOrder(tiers: unknown): unknown {
  if (!Array.isArray(tiers)) return tiers;
  const threshold = (tier: unknown) => (tier && typeof tier === 'object' ? Number((tier as { aboveInputTokens?: unknown }).aboveInputTokens) : Number.NaN);
  return tiers.every((tier) => Number.isSafeInteger(threshold(tier))) ? [...tiers].sort((a, b) => threshold(a) - threshold(b)) : tiers;
}

const TIER_KEYS: ReadonlySet<string> = new Set(['aboveInputTokens', 'perMillionTokens']);
const RATE_KEYS: ReadonlySet<string> = new Set(TOKEN_KEYS);

/** Longest provider id or model name: both are in a unique index, which PostgreSQL caps at about 2.7 kB. */
export const MAX_PRICE_NAME_LENGTH = 255;

function refuseUnknownKeys(field: string, value: Record<string, unknown>, known: ReadonlySet<string>) {
  const unknown = Object.keys(value).find((key) => !known.has(key));
  if (unknown !== undefined) throw invalidField(`${field}.${unknown}`, `is not a price field (expected one of ${[...known].join(', ')})`);
}

function checkName(field: string, value: unknown) {
  if (typeof value !== 'string') throw invalidField(field, 'must be a string');
  const trimmed = value.trim();
  if (!trimmed) throw invalidField(field, 'must not be empty');
  if (trimmed.length > MAX_PRICE_NAME_LENGTH) throw invalidField(field, `must be at most ${MAX_PRICE_NAME_LENGTH} characters`);
  requireStorableText(field, value);
}

/** Checks token rates; answers how many are set. */
function checkTokenPrices(field: string, rates: unknown): number {
  if (!isJsonObject(rates)) throw invalidField(field, 'must be an object of decimal strings, e.g. { "input": "0.15", "output": "0.60" }');
  refuseUnknownKeys(field, rates, RATE_KEYS);
  let set = 0;
  for (const key of TOKEN_KEYS) {
    const text = rates[key];
    if (text == null) continue;
    priceAttos(`${field}.${key}`, text as string);
    set += 1;
  }
  return set;
}

/**
 * Checks every field of a row up front (costOf only parses the rates a record uses): its type,
 * that it is a known field, and that the row prices something. Stored rows are read back with no
 * further check, so what passes here must be costable.
 */
export function validateProviderPrice(price: ProviderPrice): ProviderPrice {
  if (!isJsonObject(price)) throw invalidField('price', 'must be an object');
  refuseUnknownKeys('price', price, PRICE_KEYS);
  checkName('price.provider', price.provider);
  checkName('price.model', price.model);
  if (price.currency !== 'USD') throw invalidField('price.currency', 'only USD prices are supported');
  if (!(price.effectiveFrom instanceof Date) || Number.isNaN(price.effectiveFrom.getTime())) {
    throw invalidField('price.effectiveFrom', 'must be a valid date');
  }
  if (!isStorableTime(price.effectiveFrom)) throw invalidField('price.effectiveFrom', 'must be between the years 1 and 9999');
  let rates = price.perMillionTokens == null ? 0 : checkTokenPrices('price.perMillionTokens', price.perMillionTokens);
  if (price.contextTiers != null) {
    if (!Array.isArray(price.contextTiers)) throw invalidField('price.contextTiers', 'must be a list of { aboveInputTokens, perMillionTokens }');
    // Tiers override the base rates field by field: the base must be there for the requests below them.
    if (price.contextTiers.length > 0 && price.perMillionTokens == null) {
      throw invalidField('price.perMillionTokens', 'is required with contextTiers: it prices the requests up to the first tier');
    }
    const thresholds = new Set<number>();
    for (const [index, tier] of (price.contextTiers as unknown[]).entries()) {
      const field = `price.contextTiers.${index}`;
      if (!isJsonObject(tier)) throw invalidField(field, 'must be an object { aboveInputTokens, perMillionTokens }');
      refuseUnknownKeys(field, tier, TIER_KEYS);
      const above = tier.aboveInputTokens;
      if (typeof above !== 'number' || !Number.isInteger(above) || above < 1) {
        throw invalidField(`${field}.aboveInputTokens`, 'must be a whole number of input tokens above 0');
      }
      if (above > Number.MAX_SAFE_INTEGER) throw invalidField(`${field}.aboveInputTokens`, `must be a whole number of input tokens above 0 and at most ${Number.MAX_SAFE_INTEGER}`);
      if (thresholds.has(above)) throw invalidField(`${field}.aboveInputTokens`, 'repeats another tier');
      thresholds.add(above);
      if (tier.perMillionTokens == null) throw invalidField(`${field}.perMillionTokens`, 'is required: the rates above the threshold');
      if (checkTokenPrices(`${field}.perMillionTokens`, tier.perMillionTokens) === 0) {
        throw invalidField(`${field}.perMillionTokens`, 'must set at least one rate');
      }
    }
  }
  for (const key of UNIT_KEYS) {
    const text = price[key];
    if (text == null) continue;
    priceAttos(`price.${key}`, text);
    rates += 1;
  }
  if (price.perImageBy != null) {
    if (!isJsonObject(price.perImageBy)) throw invalidField('price.perImageBy', 'must be an object of decimal strings keyed by "size/quality", "size" or "quality"');
    // Keys match usage details trimmed and case-insensitively (see imagePrice): two that match alike are ambiguous.
    const keys = new Map<string, string>();
    for (const [key, text] of Object.entries(price.perImageBy)) {
      requireStorableText('price.perImageBy', key);
      const normal = key.trim().toLowerCase();
      if (!normal) throw invalidField('price.perImageBy', 'keys must not be empty');
      const other = keys.get(normal);
      if (other !== undefined) throw invalidField(`price.perImageBy.${key}`, `matches the same images as "${other}" (keys are compared trimmed and case-insensitively)`);
      keys.set(normal, key);
      priceAttos(`price.perImageBy.${key}`, text);
      rates += 1;
    }
  }
  if (rates === 0) throw invalidField('price', 'sets no rate: give perMillionTokens, a per-unit price (perImage, perRequest, …) or perImageBy');
  oneOf(price.perAudioSecond, price.perAudioMinute, 'price.perAudioSecond', 'price.perAudioMinute');
  oneOf(price.perCharacter, price.perMillionCharacters, 'price.perCharacter', 'price.perMillionCharacters');
  return price;
}

/** A rate as stored: the shortest exact decimal string of its value ("2.50", " 2.5" and 2 are all "2.5" / "2"). */
export function canonicalRate(field: string, value: PriceText): string {
  return formatScaled(priceAttos(field, value), 18, 0);
}

/** canonicalRate of a value that may not be a rate at all (a row stored before it was validated): that is left as it is. */
function canonicalOrAsIs(value: unknown): unknown {
  if (typeof value !== 'string' && typeof value !== 'number') return value;
  try {
    return canonicalRate('rate', value);
  } catch {
    return value;
  }
}

function canonicalValues(rates: unknown): unknown {
  return isJsonObject(rates) ? Object.fromEntries(Object.entries(rates).map(([key, value]) => [key, canonicalOrAsIs(value)])) : rates;
}

/**
 * A copy of a price (or of the rates alone, as stored) with every rate as canonicalRate writes it,
 * so that one price is stored, returned and compared alike however it was written: "2.50" then
 * "2.5" is the same price, and a whole number 2 is the decimal string "2". What is not a readable
 * rate is left as it is: validateProviderPrice refuses it, and costOf reports it.
 */
export function withCanonicalRates<T extends object>(price: T): T {
  const out = { ...price } as Record<string, unknown>;
  if (out.perMillionTokens != null) out.perMillionTokens = canonicalValues(out.perMillionTokens);
  if (Array.isArray(out.contextTiers)) {
    out.contextTiers = out.contextTiers.map((tier: unknown) =>
      isJsonObject(tier) && tier.perMillionTokens != null ? { ...tier, perMillionTokens: canonicalValues(tier.perMillionTokens) } : tier,
    );
  }
  if (out.perImageBy != null) out.perImageBy = canonicalValues(out.perImageBy);
  for (const key of UNIT_KEYS) if (out[key] != null) out[key] = canonicalOrAsIs(out[key]);
  return out as T;
}

function detailCount(usage: NormalizedUsage, key: string): bigint {
  const value = usage.details?.[key];
  if (value === undefined) return 0n;
  const field = `usage.details.${key}`;
  if (typeof value === 'string' && /^\d+$/.test(value.trim())) return BigInt(value.trim());
  if (typeof value !== 'number') throw invalidField(field, 'must be a whole number');
  return count(field, value);
}

function detailText(usage: NormalizedUsage, key: string): string | null {
  const value = usage.details?.[key];
  return value === undefined ? null : String(value).trim().toLowerCase();
}

function tokenPricesAt(price: ProviderPrice, inputTokens: bigint): { rates: TokenPrices; field: string } {
  let rates: TokenPrices = price.perMillionTokens ?? {};
  let field = 'price.perMillionTokens';
  let chosen = -1n;
  const tiers = price.contextTiers ?? [];
  // Rows stored before validateProviderPrice checked tiers' shape: a clear error, not a TypeError.
  if (!Array.isArray(tiers)) throw invalidField('price.contextTiers', 'must be a list of { aboveInputTokens, perMillionTokens }');
  for (const [index, tier] of tiers.entries()) {
    const above = count(`price.contextTiers.${index}.aboveInputTokens`, tier?.aboveInputTokens);
    if (inputTokens > above && above > chosen) {
      if (tier.perMillionTokens == null || typeof tier.perMillionTokens !== 'object') {
        throw invalidField(`price.contextTiers.${index}.perMillionTokens`, 'must be an object of rates');
      }
      chosen = above;
      rates = { ...(price.perMillionTokens ?? {}), ...definedOnly(tier.perMillionTokens) };
      field = `price.contextTiers.${index}.perMillionTokens`;
    }
  }
  return { rates, field };
}

function definedOnly(rates: TokenPrices): TokenPrices {
  return Object.fromEntries(Object.entries(rates).filter(([, value]) => value !== undefined && value !== null));
}

interface Rate {
  text: string;
  field: string;
}

// Token rates and their fallbacks, most specific first (see costOf).
const INPUT = ['input'] as const;
const INPUT_AUDIO = ['inputAudio', 'input'] as const;
const CACHED_INPUT = ['cachedInput', 'input'] as const;
const CACHED_INPUT_AUDIO = ['cachedInputAudio', 'cachedInput', 'input'] as const;
const CACHE_WRITE = ['cacheWrite', 'input'] as const;
const CACHE_WRITE_1H = ['cacheWrite1h', 'cacheWrite', 'input'] as const;
const OUTPUT = ['output'] as const;
const REASONING = ['reasoning', 'output'] as const;
const OUTPUT_AUDIO = ['outputAudio', 'output'] as const;
const INPUT_IMAGE = ['inputImage', 'input'] as const;
const OUTPUT_IMAGE = ['outputImage', 'output'] as const;

/**
 * One term of the cost over DENOMINATOR: rate × quantity, the rate being per `per` units. A
 * quantity with no rate is a VALIDATION error naming `missing`, saying what the usage had
 * (`shown`, default the quantity); the message is only built then: this runs for every unit of
 * every event.
 */
function term(rate: Rate | null, quantity: bigint, per: bigint, missing: string, shown?: string): bigint {
  if (quantity === 0n) return 0n;
  if (!rate) throw invalidField(missing, `is not set but the usage has ${shown ?? quantity}`);
  return priceAttos(rate.field, rate.text) * quantity * (DENOMINATOR / per);
}

const PER_TOKEN = DENOMINATOR / PER_MILLION;

/**
 * Token terms, rated by the first of `keys` the rates set. The rate is looked up only for a
 * quantity there is, and its field is named only to report a problem: this runs for every
 * token kind of every event.
 */
function tokenTerm(rates: TokenPrices, field: string, keys: readonly (keyof TokenPrices)[], quantity: bigint, kind: 'input' | 'output'): bigint {
  if (quantity === 0n) return 0n;
  for (const key of keys) {
    const text = rates[key];
    if (text != null) return (knownPriceAttos(text) ?? priceAttos(`${field}.${key}`, text)) * quantity * PER_TOKEN;
  }
  throw invalidField(`${field}.${kind}`, `is not set but the usage has ${quantity} ${kind} tokens`);
}

function imagePrice(price: ProviderPrice, usage: NormalizedUsage): Rate | null {
  const size = detailText(usage, USAGE_DETAIL_KEYS.imageSize);
  const quality = detailText(usage, USAGE_DETAIL_KEYS.imageQuality);
  const keyed = new Map(Object.entries(price.perImageBy ?? {}).map(([key, value]) => [key.trim().toLowerCase(), [key, value] as const]));
  const keys = [size && quality ? `${size}/${quality}` : null, size, quality].filter((key): key is string => key !== null);
  for (const key of keys) {
    const hit = keyed.get(key);
    if (hit) return { text: hit[1], field: `price.perImageBy.${hit[0]}` };
  }
  return price.perImage != null ? { text: price.perImage, field: 'price.perImage' } : null;
}

/**
 * Whether the token terms already cost the images: the provider billed them as tokens (GPT image
 * models report the images' tokens inside input and output) and the price rates tokens. A
 * per-image price would then count the same images twice: it prices only images reported
 * without their tokens (dall-e, a stream cut before its usage).
 */
function imagesPricedByTokens(usage: NormalizedUsage, price: ProviderPrice): boolean {
  if (price.perMillionTokens == null) return false;
  return detailCount(usage, USAGE_DETAIL_KEYS.inputImageTokens) + detailCount(usage, USAGE_DETAIL_KEYS.outputImageTokens) > 0n;
}

function oneOf(a: string | null | undefined, b: string | null | undefined, fieldA: string, fieldB: string) {
  if (a != null && b != null) throw invalidField(fieldB, `set ${fieldA} or ${fieldB}, not both`);
}

/**
 * Provider cost of one usage record in attos. Exact: each term is a fraction over one common
 * denominator, summed, then rounded once to the nearest atto (halves up). Rounding only happens
 * when a rate has more than 12 decimals per million tokens or audio is priced per minute.
 *
 * Fallbacks where a provider does not quote a rate: cache reads and writes at the input rate (no
 * discount, no surcharge), 1-hour writes at the cache-write rate, reasoning at the output rate,
 * audio and image tokens at the text rate (cached audio at the cached text rate), no per-request
 * fee. Images the provider billed as tokens are costed by the token rates alone (see
 * imagesPricedByTokens). Any other unit the usage has but the price does not cover (input, output,
 * images, audio, characters) is a VALIDATION error, never a free ride.
 * A record that is not billable costs nothing: providers do not charge for errors.
 */
export function costOf(usage: NormalizedUsage, price: ProviderPrice): bigint {
  if (price.currency !== 'USD') throw invalidField('price.currency', 'only USD prices are supported');
  if (!usage.billable) return 0n;

  const input = count('usage.inputTokens', usage.inputTokens);
  const cached = count('usage.cachedInputTokens', usage.cachedInputTokens);
  const written = count('usage.cacheWriteTokens', usage.cacheWriteTokens);
  const output = count('usage.outputTokens', usage.outputTokens);
  const reasoning = count('usage.reasoningTokens', usage.reasoningTokens);
  if (cached + written > input) {
    throw invalidField('usage.cachedInputTokens', 'cache reads plus cache writes exceed inputTokens');
  }
  if (reasoning > output) throw invalidField('usage.reasoningTokens', 'exceeds outputTokens');
  const uncached = input - cached - written;
  const written1h = detailCount(usage, USAGE_DETAIL_KEYS.cacheWrite1hTokens);
  if (written1h > written) throw invalidField(`usage.details.${USAGE_DETAIL_KEYS.cacheWrite1hTokens}`, 'exceeds cacheWriteTokens');
  // Providers count prompt audio whether or not it was cached: the audio rate applies to the uncached part only.
  const promptAudio = detailCount(usage, USAGE_DETAIL_KEYS.inputAudioTokens);
  const audioIn = promptAudio < uncached ? promptAudio : uncached;
  // Audio read from the cache, where the usage tells it apart (Gemini's cacheTokensDetails): at its
  // own cache rate, never more than the cache read holds.
  const cachedAudioCount = detailCount(usage, USAGE_DETAIL_KEYS.cachedAudioTokens);
  const cachedAudio = cachedAudioCount < cached ? cachedAudioCount : cached;
  const audioOut = detailCount(usage, USAGE_DETAIL_KEYS.outputAudioTokens);
  if (audioOut + reasoning > output) {
    throw invalidField(`usage.details.${USAGE_DETAIL_KEYS.outputAudioTokens}`, 'plus reasoningTokens exceeds outputTokens');
  }

  // Image tokens as audio: the prompt's at their rate within the uncached input, the output's apart
  // from its text. Never more than what is left of either, as a provider counts them inside it.
  const promptImage = detailCount(usage, USAGE_DETAIL_KEYS.inputImageTokens);
  const imageIn = promptImage < uncached - audioIn ? promptImage : uncached - audioIn;
  const outputImage = detailCount(usage, USAGE_DETAIL_KEYS.outputImageTokens);
  const imageOut = outputImage < output - reasoning - audioOut ? outputImage : output - reasoning - audioOut;

  const { rates, field } = tokenPricesAt(price, input);
  let numerator =
    tokenTerm(rates, field, INPUT, uncached - audioIn - imageIn, 'input') +
    tokenTerm(rates, field, INPUT_AUDIO, audioIn, 'input') +
    tokenTerm(rates, field, INPUT_IMAGE, imageIn, 'input') +
    tokenTerm(rates, field, CACHED_INPUT, cached - cachedAudio, 'input') +
    tokenTerm(rates, field, CACHED_INPUT_AUDIO, cachedAudio, 'input') +
    tokenTerm(rates, field, CACHE_WRITE, written - written1h, 'input') +
    tokenTerm(rates, field, CACHE_WRITE_1H, written1h, 'input') +
    tokenTerm(rates, field, OUTPUT, output - reasoning - audioOut - imageOut, 'output') +
    tokenTerm(rates, field, REASONING, reasoning, 'output') +
    tokenTerm(rates, field, OUTPUT_AUDIO, audioOut, 'output') +
    tokenTerm(rates, field, OUTPUT_IMAGE, imageOut, 'output');

  const images = count('usage.images', usage.images);
  if (images > 0n && !imagesPricedByTokens(usage, price)) {
    const found = imagePrice(price, usage);
    if (!found) {
      const size = detailText(usage, USAGE_DETAIL_KEYS.imageSize) ?? '-';
      const quality = detailText(usage, USAGE_DETAIL_KEYS.imageQuality) ?? '-';
      throw invalidField('price.perImage', `has no price for images of size ${size}, quality ${quality}`);
    }
    numerator += term(found, images, 1n, found.field);
  }

  if (usage.audioSeconds != null) {
    const seconds = parseDecimalAttos('usage.audioSeconds', usage.audioSeconds);
    if (seconds < 0n) throw invalidField('usage.audioSeconds', 'must not be negative');
    oneOf(price.perAudioSecond, price.perAudioMinute, 'price.perAudioSecond', 'price.perAudioMinute');
    if (price.perAudioMinute != null) {
      numerator += term({ text: price.perAudioMinute, field: 'price.perAudioMinute' }, seconds, SECOND_SCALE * SECONDS_PER_MINUTE, '');
    } else {
      const perSecond = price.perAudioSecond != null ? { text: price.perAudioSecond, field: 'price.perAudioSecond' } : null;
      numerator += term(perSecond, seconds, SECOND_SCALE, 'price.perAudioSecond', `${usage.audioSeconds} seconds of audio`);
    }
  }

  const characters = count('usage.characters', usage.characters);
  oneOf(price.perCharacter, price.perMillionCharacters, 'price.perCharacter', 'price.perMillionCharacters');
  if (price.perMillionCharacters != null) {
    numerator += term({ text: price.perMillionCharacters, field: 'price.perMillionCharacters' }, characters, PER_MILLION, '');
  } else if (characters > 0n) {
    const perCharacter = price.perCharacter != null ? { text: price.perCharacter, field: 'price.perCharacter' } : null;
    numerator += term(perCharacter, characters, 1n, 'price.perCharacter', `${characters} characters`);
  }

  const requests = count('usage.requests', usage.requests);
  if (price.perRequest != null) numerator += term({ text: price.perRequest, field: 'price.perRequest' }, requests, 1n, '');

  return roundHalfUp(numerator, DENOMINATOR);
}
