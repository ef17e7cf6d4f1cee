import { AppError, invalidField } from '../../shared/errors.ts';
import { formatScaled, parseDecimalAttos } from '../../shared/money.ts';
import { isStorableTime } from '../../shared/times.ts';
import { holdsUnstorableText, isJsonObject } from '../../shared/validation.ts';
import { canonicalProviderId } from '../usage/normalize/index.ts';
import { MAX_PRICE_NAME_LENGTH, validateProviderPrice, type ContextTier, type ProviderPrice, type TokenPrices } from './cost.ts';
import { priceAttos } from './decimal.ts';

/**
 * Imports a price table in models.dev's `api.json` format, supplied as a file (no network):
 *
 *   { "<provider id>": { id, name, …, models: { "<model id>": { id, name, …, cost: {
 *       input, output, cache_read?, cache_write?, reasoning?, input_audio?, output_audio?,
 *       context_over_200k?: { …same rates },
 *       tiers?: [{ …same rates, tier: { type: "context", size } | { type: "conditional", … } }]
 *   } } } } }
 *
 * Rates are USD per million tokens (older files also carry `per_minute` for audio models).
 * `cost_cn` (CNY) and `experimental` modes are not imported. A model whose cost has structure a
 * ProviderPrice cannot express is skipped with its reason rather than approximated.
 *
 * models.dev gives one cache-read rate: audio read from a cache (cachedInputAudio, which Gemini
 * prices apart) is then costed at it, as cached text, and not derived from the other rates.
 *
 * models.dev gives one cache-write rate, Anthropic's 5-minute one. Claude served by Anthropic,
 * Vertex AI or Bedrock also writes 1-hour caches, at twice the input rate (Anthropic's published
 * rule): those rows get cacheWrite1h = 2 × input, in every tier that sets input, or 1-hour writes
 * would be costed at the 5-minute rate.
 */

export interface ModelsDevImportOptions {
  /** When the imported prices take effect (models.dev carries no price dates). */
  effectiveFrom: Date;
  /** Only these models.dev provider ids; every provider when absent. */
  providers?: readonly string[];
  /** Renames models.dev provider ids beyond MODELS_DEV_PROVIDER_IDS, e.g. { 'my-proxy': 'openai-compatible' }. */
  providerIds?: Readonly<Record<string, string>>;
}

/**
 * models.dev provider ids that usage reports under another id: rows are imported under the
 * provider id of Tollgate's registry (usage/normalize/registry.ts), or they would never price a
 * call. Ids that already agree (openai, anthropic, google, groq, deepseek, …) are kept as they are.
 */
export const MODELS_DEV_PROVIDER_IDS: ReadonlyMap<string, string> = new Map([
  ['togetherai', 'together'],
  ['fireworks-ai', 'fireworks'],
  ['google-vertex', 'vertex'],
  ['google-vertex-anthropic', 'vertex'],
  ['amazon-bedrock', 'bedrock'],
  ['azure', 'azure-openai'],
  ['moonshotai', 'moonshot'],
  ['novita-ai', 'novita'],
  ['zhipuai', 'zhipu'],
]);

export interface ImportSkip {
  /** JSON Pointer into the file, e.g. "/openai/models/gpt-5.4/cost/input". */
  path: string;
  reason: string;
}

export interface ModelsDevImport {
  rows: ProviderPrice[];
  skipped: ImportSkip[];
}

const RATE_KEYS: Record<string, keyof TokenPrices> = {
  input: 'input',
  output: 'output',
  cache_read: 'cachedInput',
  cache_write: 'cacheWrite',
  reasoning: 'reasoning',
  input_audio: 'inputAudio',
  output_audio: 'outputAudio',
};
const COST_KEYS = new Set([...Object.keys(RATE_KEYS), 'per_minute', 'context_over_200k', 'tiers']);
const TIER_KEYS = new Set([...Object.keys(RATE_KEYS), 'tier']);
/** models.dev's name for its one legacy long-context tier: above 200K prompt tokens. */
const OVER_200K = 200_000;

const NUMBER_TEXT = /^(\d+)(?:\.(\d+))?(?:e([+-]?\d+))?$/i;

/**
 * A JSON number as a plain decimal string with no float artefacts: 0.15 → "0.15",
 * 1.25e-7 → "0.000000125", 1e21 → "1000000000000000000000". JavaScript prints the shortest
 * decimal that reads back as the same double, which is the text the file held for any price
 * with up to 15 significant digits. Negative or non-finite input → null.
 */
export function decimalFromJsonNumber(value: number): string | null {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) return null;
  const match = NUMBER_TEXT.exec(String(value));
  if (!match) return null;
  const [, whole = '', fraction = '', exponent = '0'] = match;
  const digits = whole + fraction;
  const point = whole.length + Number(exponent);
  let text: string;
  if (point <= 0) text = `0.${'0'.repeat(-point)}${digits}`;
  else if (point >= digits.length) text = digits + '0'.repeat(point - digits.length);
  else text = `${digits.slice(0, point)}.${digits.slice(point)}`;
  if (text.includes('.')) text = text.replace(/0+$/, '').replace(/\.$/, '');
  text = text.replace(/^0+(?=\d)/, '');
  return text;
}

/** A number as the file wrote it, where the double JSON.parse made of it differs (see inexactNumbers). */
interface ExactNumber {
  literal: string;
  negative: boolean;
  /** Digits before and after the decimal point of its exact value, without leading or trailing zeros. */
  wholeDigits: number;
  fractionDigits: number;
  /** Its exact value as a plain decimal; null when too long to be any price (its digits say why). */
  text: string | null;
}

/** Numbers a double did not keep, by JSON Pointer. */
type ExactNumbers = ReadonlyMap<string, ExactNumber>;

const JSON_NUMBER = /-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?/y;
/** Longer than this, a number's exact digits are not written out: no double reads as it (their decimals have under 400 digits). */
const MAX_EXACT_DIGITS = 400;

/** The exact value of a JSON number literal, or null when the double JSON.parse reads holds it exactly. */
function exactNumber(literal: string): ExactNumber | null {
  JSON_NUMBER.lastIndex = 0;
  const [, whole = '', fraction = '', exponent = '0'] = JSON_NUMBER.exec(literal)!;
  // digits × 10^scale, with the zeros that say nothing taken off.
  let digits = (whole + fraction).replace(/^0+/, '');
  let scale = Number(exponent) - fraction.length;
  const trailing = digits.length - digits.replace(/0+$/, '').length;
  digits = digits.slice(0, digits.length - trailing);
  scale += trailing;
  const negative = literal.startsWith('-') && digits !== '';
  const wholeDigits = digits === '' ? 0 : Math.max(0, digits.length + scale);
  const fractionDigits = digits === '' ? 0 : Math.max(0, -scale);
  let text: string | null = null;
  if (digits === '') text = '0';
  else if (wholeDigits + fractionDigits <= MAX_EXACT_DIGITS) {
    const padded = scale >= 0 ? digits + '0'.repeat(scale) : digits.padStart(fractionDigits, '0');
    text = fractionDigits === 0 ? padded : `${padded.slice(0, padded.length - fractionDigits) || '0'}.${padded.slice(padded.length - fractionDigits)}`;
  }
  const read = Number(literal);
  const readText = read < 0 ? `-${decimalFromJsonNumber(-read)}` : decimalFromJsonNumber(read);
  if (text !== null && readText === (negative ? `-${text}` : text)) return null;
  return { literal, negative, wholeDigits, fractionDigits, text };
}

/**
 * The numbers of a JSON text that JSON.parse does not read exactly, by JSON Pointer: it reads
 * 1e-400 as 0 and rounds a 19th significant digit away, and a price must not be imported as a
 * number the file did not hold. Scans text that JSON.parse has already accepted, without
 * recursion (any depth), and as JSON.parse does, the last of a repeated key is the one kept.
 */
export function inexactNumbers(text: string): Map<string, ExactNumber> {
  const found = new Map<string, ExactNumber>();
  const frames: { array: boolean; index: number; key: string; keys: Set<string> }[] = [];
  const escape = (key: string) => key.replace(/~/g, '~0').replace(/\//g, '~1');
  const pointerHere = () => frames.map((frame) => `/${frame.array ? frame.index : escape(frame.key)}`).join('');
  let i = 0;
  const skipSpace = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  };
  const readString = () => {
    const start = i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return text.slice(start, i);
  };
  const readKey = () => {
    skipSpace();
    const frame = frames[frames.length - 1]!;
    frame.key = JSON.parse(readString()) as string;
    // A repeated key: JSON.parse keeps the last value, so what was found under the first goes.
    if (frame.keys.has(frame.key)) {
      const at = pointerHere();
      for (const pointer of [...found.keys()]) if (pointer === at || pointer.startsWith(`${at}/`)) found.delete(pointer);
    }
    frame.keys.add(frame.key);
    skipSpace();
    i++; // ':'
  };
  for (;;) {
    // A value starts here.
    skipSpace();
    const c = text[i];
    if (c === '{' || c === '[') {
      i++;
      frames.push({ array: c === '[', index: 0, key: '', keys: new Set() });
      skipSpace();
      if (text[i] !== (c === '{' ? '}' : ']')) {
        if (c === '{') readKey();
        continue;
      }
      i++;
      frames.pop();
    } else if (c === '"') readString();
    else if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) {
      JSON_NUMBER.lastIndex = i;
      const literal = JSON_NUMBER.exec(text)![0];
      i += literal.length;
      const exact = exactNumber(literal);
      if (exact) found.set(pointerHere(), exact);
    } else i += c === 'f' ? 5 : 4; // true, false, null
    // After a value: a comma goes on to the next, a closing bracket ends its container.
    for (;;) {
      skipSpace();
      if (frames.length === 0) return found;
      const frame = frames[frames.length - 1]!;
      if (text[i] === ',') {
        i++;
        if (frame.array) frame.index++;
        else readKey();
        break;
      }
      i++;
      frames.pop();
    }
  }
}

/** Why a provider or model id cannot be stored as a price row's name, or null when it can. */
function unstorableName(what: string, name: string): string | null {
  if (!name.trim()) return `${what} must not be empty`;
  if (name.trim().length > MAX_PRICE_NAME_LENGTH) return `${what} must be at most ${MAX_PRICE_NAME_LENGTH} characters`;
  if (holdsUnstorableText(name)) return `${what} must not contain the NUL character (\\u0000) or an unpaired UTF-16 surrogate`;
  return null;
}

class Skip extends Error {
  constructor(
    readonly path: string,
    readonly reason: string,
  ) {
    super(reason);
  }
}

const pointer = (...parts: (string | number)[]) =>
  parts.map((part) => `/${String(part).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');

/** Longest text of a value a skip reason quotes. */
const MAX_SHOWN = 60;

/**
 * A value as a skip reason quotes it: short, and never by walking into it. JSON.stringify (or
 * String) of a list nested some thousands deep, which JSON.parse reads, overflows the stack, and
 * the whole import failed as an internal error; a long text was echoed whole into the answer.
 */
function shown(value: unknown): string {
  if (Array.isArray(value)) return 'a list';
  if (value !== null && typeof value === 'object') return 'an object';
  return clipped(JSON.stringify(value) ?? String(value));
}

const clipped = (text: string) => (text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}…` : text);

function rate(value: unknown, path: string, exact: ExactNumbers): string {
  if (typeof value !== 'number') throw new Skip(path, `must be a number (USD per million), got ${shown(value)}`);
  // A number the double did not keep (1e-400 read as 0, a 19th decimal rounded) goes by the file's digits.
  const written = exact.get(path) ?? numberRead(value);
  if (written === null) throw new Skip(path, 'is not a finite number');
  if (written.negative) throw new Skip(path, `must not be negative, got ${clipped(written.literal)}`);
  if (written.fractionDigits > 18) throw new Skip(path, `${clipped(written.literal)} has more than 18 decimal places`);
  if (written.wholeDigits > 12 || written.text === null) throw new Skip(path, `${clipped(written.literal)} is too large`);
  return written.text;
}

/** A number as JSON.parse read it, described as an ExactNumber (the file held it exactly). */
function numberRead(value: number): ExactNumber | null {
  if (value < 0) return { literal: String(value), negative: true, wholeDigits: 0, fractionDigits: 0, text: null };
  const text = decimalFromJsonNumber(value);
  if (text === null) return null;
  const [whole = '', fraction = ''] = text.split('.');
  return { literal: text, negative: false, wholeDigits: whole.length, fractionDigits: fraction.length, text };
}

function rates(cost: Record<string, unknown>, path: string, allowed: Set<string>, required: boolean, exact: ExactNumbers): TokenPrices {
  const unknown = Object.keys(cost).filter((key) => !allowed.has(key));
  if (unknown.length > 0) throw new Skip(path + pointer(unknown[0]!), `unknown price key "${unknown[0]}"`);
  const out: TokenPrices = {};
  for (const [key, target] of Object.entries(RATE_KEYS)) {
    const value = cost[key];
    if (value === undefined) {
      if (required && (key === 'input' || key === 'output')) throw new Skip(`${path}/${key}`, 'is required');
      continue;
    }
    out[target] = rate(value, `${path}/${key}`, exact);
  }
  return out;
}

function contextTiers(cost: Record<string, unknown>, path: string, exact: ExactNumbers): ContextTier[] {
  // An empty list names no tier: a premium given as context_over_200k beside it still holds.
  if (cost.tiers !== undefined && !(Array.isArray(cost.tiers) && cost.tiers.length === 0 && cost.context_over_200k !== undefined)) {
    // Newer files list tiers and may repeat the premium as context_over_200k; tiers are the precise one.
    if (!Array.isArray(cost.tiers)) throw new Skip(`${path}/tiers`, 'must be an array');
    const seen = new Set<number>();
    return cost.tiers.map((entry: unknown, index) => {
      const tierPath = `${path}/tiers/${index}`;
      if (!isJsonObject(entry) || !isJsonObject(entry.tier)) throw new Skip(tierPath, 'must be an object with a "tier" selector');
      const type = entry.tier.type ?? 'context';
      if (type !== 'context') {
        throw new Skip(`${tierPath}/tier/type`, `${shown(type)} tiers (by output, time of day…) are not supported`);
      }
      const size = entry.tier.size;
      if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || exact.has(`${tierPath}/tier/size`)) {
        throw new Skip(`${tierPath}/tier/size`, 'must be a whole number of tokens');
      }
      if (size === 0) throw new Skip(`${tierPath}/tier/size`, 'must be above 0 tokens: a tier from the first token would replace the base price');
      if (seen.has(size)) throw new Skip(`${tierPath}/tier/size`, `repeats the tier at ${size} tokens`);
      seen.add(size);
      return { aboveInputTokens: size, perMillionTokens: rates(entry, tierPath, TIER_KEYS, false, exact) };
    });
  }
  if (cost.context_over_200k !== undefined) {
    const over = cost.context_over_200k;
    const overPath = `${path}/context_over_200k`;
    if (!isJsonObject(over)) throw new Skip(overPath, 'must be an object');
    return [{ aboveInputTokens: OVER_200K, perMillionTokens: rates(over, overPath, new Set(Object.keys(RATE_KEYS)), false, exact) }];
  }
  return [];
}

/** Whether the provider bills this model at Anthropic's rates: Claude on Anthropic, Vertex AI (claude-…) or Bedrock ([region.]anthropic.…). */
function anthropicServed(provider: string, modelId: string): boolean {
  const id = canonicalProviderId(provider).toLowerCase();
  const name = modelId.trim();
  if (id === 'anthropic') return true;
  if (id === 'vertex') return /^(?:publishers\/anthropic\/models\/|anthropic\/)?claude-/i.test(name);
  if (id === 'bedrock') return /(?:^|\.)anthropic\.claude/i.test(name);
  return false;
}

/**
 * Rates with Anthropic's 1-hour cache write added: twice their input rate, exactly. Rates without
 * input are kept as they are. A derived rate too large to store skips the model with that reason:
 * the file never named the field the price's own check would blame.
 */
function withHourCacheWrite(rates: TokenPrices, path: string): TokenPrices {
  if (rates.input == null || rates.cacheWrite1h != null) return rates;
  const cacheWrite1h = formatScaled(priceAttos('input', rates.input) * 2n, 18, 0);
  try {
    parseDecimalAttos('cacheWrite1h', cacheWrite1h);
  } catch {
    throw new Skip(path, `input ${rates.input} USD per million is too large: Claude's 1-hour cache write, which Tollgate adds at twice the input rate, would be ${cacheWrite1h}, and a price has at most 12 digits before the decimal point`);
  }
  return { ...rates, cacheWrite1h };
}

function modelRow(provider: string, modelId: string, model: unknown, path: string, effectiveFrom: Date, exact: ExactNumbers): ProviderPrice {
  if (!isJsonObject(model)) throw new Skip(path, 'must be an object');
  const cost = model.cost;
  if (cost === undefined) {
    throw new Skip(`${path}/cost`, model.cost_cn !== undefined ? 'has only CNY prices (cost_cn); only USD is imported' : 'has no cost');
  }
  if (!isJsonObject(cost)) throw new Skip(`${path}/cost`, 'must be an object');
  const costPath = `${path}/cost`;
  const unknown = Object.keys(cost).find((key) => !COST_KEYS.has(key));
  if (unknown !== undefined) throw new Skip(costPath + pointer(unknown), `unknown price key "${unknown}"`);
  const row: ProviderPrice = {
    provider,
    model: modelId,
    currency: 'USD',
    effectiveFrom,
    perMillionTokens: rates(cost, costPath, COST_KEYS, true, exact),
  };
  const tiers = contextTiers(cost, costPath, exact);
  if (tiers.length > 0) row.contextTiers = tiers;
  if (anthropicServed(provider, modelId)) {
    row.perMillionTokens = withHourCacheWrite(row.perMillionTokens!, costPath);
    if (row.contextTiers) row.contextTiers = row.contextTiers.map((tier) => ({ ...tier, perMillionTokens: withHourCacheWrite(tier.perMillionTokens, costPath) }));
  }
  if (cost.per_minute !== undefined) row.perAudioMinute = rate(cost.per_minute, `${costPath}/per_minute`, exact);
  try {
    return validateProviderPrice(row);
  } catch (error) {
    if (error instanceof AppError) throw new Skip(costPath, error.message);
    throw error;
  }
}

/**
 * Reads a parsed models.dev document into ProviderPrice rows. Bad entries are skipped and listed
 * with their JSON Pointer and reason; only a document that is not a models.dev table at all throws.
 */
export function importModelsDev(document: unknown, options: ModelsDevImportOptions, exact: ExactNumbers = new Map()): ModelsDevImport {
  const { effectiveFrom } = options;
  if (!(effectiveFrom instanceof Date) || Number.isNaN(effectiveFrom.getTime()) || !isStorableTime(effectiveFrom)) {
    throw invalidField('effectiveFrom', 'must be a valid date between the years 1 and 9999');
  }
  if (!isJsonObject(document)) throw invalidField('file', 'must be a models.dev api.json object of providers');
  // Some copies wrap the table as { providers: { … } }.
  const table = isJsonObject(document.providers) && !isJsonObject(document.providers.models) ? document.providers : document;
  const base = table === document ? '' : '/providers';
  const only = options.providers ? new Set(options.providers) : null;

  const rows: ProviderPrice[] = [];
  const skipped: ImportSkip[] = [];
  // Beside a wrapped table, a provider would otherwise be left out without a word.
  if (table !== document) {
    for (const key of Object.keys(document)) if (key !== 'providers') skipped.push({ path: pointer(key), reason: 'lies outside the "providers" object that holds this file\'s table' });
  }
  const seen = new Map<string, string>();
  for (const [providerKey, provider] of Object.entries(table)) {
    if (only && !only.has(providerKey)) continue;
    const providerPath = base + pointer(providerKey);
    if (!isJsonObject(provider) || !isJsonObject(provider.models)) {
      skipped.push({ path: providerPath, reason: 'is not a provider with a "models" object' });
      continue;
    }
    const renamed = options.providerIds && Object.hasOwn(options.providerIds, providerKey) ? options.providerIds[providerKey] : undefined;
    // models.dev's ids are lower case; a copy that capitalizes one ("TogetherAI") still names it.
    const providerId = renamed ?? MODELS_DEV_PROVIDER_IDS.get(providerKey) ?? MODELS_DEV_PROVIDER_IDS.get(providerKey.toLowerCase()) ?? providerKey;
    const badProvider = unstorableName('provider id', providerId);
    if (badProvider) {
      skipped.push({ path: providerPath, reason: badProvider });
      continue;
    }
    for (const [modelId, model] of Object.entries(provider.models)) {
      const path = providerPath + pointer('models', modelId);
      try {
        const badModel = unstorableName('model id', modelId);
        if (badModel) throw new Skip(path, badModel);
        // Keyed as stored rows are (provider id, trimmed name; see storedRow), compared as priced: case-insensitively.
        const name = reportedName(modelId);
        const key = `${canonicalProviderId(providerId).toLowerCase()}\u0000${name.trim().toLowerCase()}`;
        const first = seen.get(key);
        if (first !== undefined) throw new Skip(path, `repeats ${providerId}/${name}, already imported from ${first}`);
        rows.push(modelRow(providerId, name, model, path, effectiveFrom, exact));
        seen.set(key, path);
      } catch (error) {
        if (!(error instanceof Skip)) throw error;
        skipped.push({ path: error.path, reason: error.reason });
      }
    }
  }
  return { rows, skipped };
}

/**
 * A model id as usage reports it. models.dev names Vertex AI's undated Claude models
 * "<model>@default" (a file name: only dated models carry an "@" version there), which no call
 * reports: Vertex AI serves and names them by the bare id, so the row must be stored under it.
 */
function reportedName(modelId: string): string {
  const name = modelId.replace(/@default\s*$/i, '');
  return name.trim() ? name : modelId;
}

/** importModelsDev for the file's text. */
export function importModelsDevJson(source: string, options: ModelsDevImportOptions): ModelsDevImport {
  // A byte order mark (a file saved by a Windows editor) is no part of the JSON, as for a pricing file.
  const text = source.startsWith('\uFEFF') ? source.slice(1) : source;
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw invalidField('file', `is not valid JSON: ${(error as Error).message}`);
  }
  return importModelsDev(document, options, inexactNumbers(text));
}
