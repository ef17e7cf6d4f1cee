import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { AppError } from '../../shared/errors.ts';
import { blankUsage } from '../usage/usage.types.ts';
import { costOf } from './cost.ts';
import { decimalFromJsonNumber, importModelsDevJson, inexactNumbers } from './models-dev.ts';

/**
 * Property-based test of the provider price table's models.dev import, end to end: random
 * models.dev-shaped files (odd numbers — 0, -0, tiny fractions, 1e-7, 1E-19, huge values, more
 * than 18 decimal places, non-numbers —, missing and extra fields, tiers, the legacy
 * context_over_200k, models repeated in another case or with spaces, provider aliases and
 * models.dev ids, unknown providers, ids no row can store, the { providers: … } wrapper) are
 * imported through importModelsDevJson, the service and GraphQL (importModelsDevPrices), and
 * checked against an oracle written here from the README and models-dev.ts's doc comment:
 *
 * - which rows an import creates (one per model, the first of a name repeated in another case or
 *   with spaces; a provider by its id, an alias or a models.dev id stored as the id; every
 *   malformed model skipped with a path inside it, never approximated);
 * - rates in USD per million as stored decimal strings in their shortest form, computed from the
 *   file's number text in bigint attos (no float): more than 18 decimal places or 10^12 and up is
 *   skipped, not rounded;
 * - Claude on Anthropic, Vertex AI or Bedrock: 1-hour cache writes at exactly twice the input
 *   rate, in every tier that sets input; and the row costs them so (nearest atto, halves up);
 * - effective dates: a row prices from its effectiveFrom on, never before; importing the same
 *   file again at the same time changes nothing (the same price in another spelling neither); a
 *   different price at the time of one in force is a CONFLICT naming it, and writes nothing; a
 *   later date adds rows and leaves history as it was;
 * - providerPrices(provider:, model:) finds each row by names in any case and with spaces, a
 *   provider by an alias.
 *
 * Knobs: PRICES_FUZZ_SEED (a number, or "random"), PRICES_FUZZ_RUNS (multiplies run counts).
 */

const SEED = process.env.PRICES_FUZZ_SEED === 'random' ? Date.now() % 2 ** 31 : Number(process.env.PRICES_FUZZ_SEED ?? 20260601);
const SCALE = Number(process.env.PRICES_FUZZ_RUNS ?? 1);
const runs = (n: number) => ({ seed: SEED, numRuns: Math.max(1, Math.round(n * SCALE)) });

/** fc.assert naming the env var that replays a failure. */
async function check(property: fc.IProperty<unknown> | fc.IAsyncProperty<unknown>, numRuns: number) {
  try {
    await fc.assert(property as fc.IAsyncProperty<unknown>, runs(numRuns));
  } catch (error) {
    (error as Error).message = `PRICES_FUZZ_SEED=${SEED} (replay with it)\n${(error as Error).message}`;
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// JSON as the file holds it: numbers are kept as their text, objects as ordered entries.

class Num {
  constructor(readonly text: string) {}
}
class Obj {
  constructor(readonly entries: [string, J][]) {}
}
/** A bare number is a value of the wrong kind where an entry or a cost is expected (42 for a model). */
type J = Num | number | string | boolean | null | J[] | Obj;

function toJson(value: J): string {
  if (value instanceof Num) return value.text;
  if (value instanceof Obj) return `{${value.entries.map(([key, inner]) => `${JSON.stringify(key)}:${toJson(inner)}`).join(',')}}`;
  if (Array.isArray(value)) return `[${value.map(toJson).join(',')}]`;
  return JSON.stringify(value);
}

const isObj = (value: J | undefined): value is Obj => value instanceof Obj;
/** A key's value as JSON.parse leaves it: the last of repeated keys. */
const get = (object: Obj, key: string): J | undefined => object.entries.findLast(([name]) => name === key)?.[1];
/** Keys in the order a parsed object lists them: array indices first, ascending, then the rest as first written. */
function keysOf(object: Obj): string[] {
  const keys = [...new Set(object.entries.map(([key]) => key))];
  const index = (key: string) => /^(?:0|[1-9]\d*)$/.test(key) && Number(key) < 2 ** 32 - 1;
  return [...keys.filter(index).sort((a, b) => Number(a) - Number(b)), ...keys.filter((key) => !index(key))];
}

// ---------------------------------------------------------------------------------------------
// The oracle: exact decimals in bigint attos (1e-18 USD).

const ONE = 10n ** 18n;
const TOO_LARGE = 10n ** 12n * ONE;

/** The exact value a JSON number's text writes, as sign, coefficient and decimal scale (value = coef / 10^scale). */
function exactOf(text: string): { negative: boolean; coef: bigint; scale: number } {
  const match = /^(-)?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!match) throw new Error(`not a JSON number: ${text}`);
  const [, sign, whole = '', fraction = '', exponent = '0'] = match;
  let coef = BigInt(whole + fraction);
  let scale = fraction.length - Number(exponent);
  while (coef !== 0n && coef % 10n === 0n) {
    coef /= 10n;
    scale -= 1;
  }
  return { negative: sign === '-' && coef !== 0n, coef, scale: coef === 0n ? 0 : scale };
}

function shortest(attos: bigint): string {
  const whole = attos / ONE;
  const fraction = (attos % ONE).toString().padStart(18, '0').replace(/0+$/, '');
  return fraction ? `${whole}.${fraction}` : `${whole}`;
}

type Rate = { attos: bigint; text: string } | 'absent' | 'bad';

/** A rate as the import must store it, or 'bad' when the model must be skipped. */
function rateOf(value: J | undefined): Rate {
  if (value === undefined) return 'absent';
  if (!(value instanceof Num)) return 'bad';
  const { negative, coef, scale } = exactOf(value.text);
  if (negative || scale > 18) return 'bad';
  const attos = coef * 10n ** BigInt(18 - scale);
  if (attos >= TOO_LARGE) return 'bad';
  return { attos, text: shortest(attos) };
}

const RATE_FIELDS: Record<string, string> = {
  input: 'input', output: 'output', cache_read: 'cachedInput', cache_write: 'cacheWrite', reasoning: 'reasoning', input_audio: 'inputAudio', output_audio: 'outputAudio',
};

type Rates = Record<string, string>;

/** The rates of a cost (or tier) object, or null when the model must be skipped. */
function ratesOf(object: Obj, otherKeys: readonly string[], required: boolean): Rates | null {
  if (keysOf(object).some((key) => !(key in RATE_FIELDS) && !otherKeys.includes(key))) return null;
  const out: Rates = {};
  for (const [key, field] of Object.entries(RATE_FIELDS)) {
    const rate = rateOf(get(object, key));
    if (rate === 'bad') return null;
    if (rate === 'absent') {
      if (required && (key === 'input' || key === 'output')) return null;
      continue;
    }
    out[field] = rate.text;
  }
  return out;
}

/** A safe whole number of tokens above 0, from a tier's size; null otherwise. */
function tierSize(value: J | undefined): number | null {
  if (!(value instanceof Num)) return null;
  const { negative, coef, scale } = exactOf(value.text);
  if (negative || scale > 0 || coef === 0n) return null;
  const size = coef * 10n ** BigInt(-scale);
  return size <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(size) : null;
}

interface StoredPrices {
  perMillionTokens: Rates;
  contextTiers?: { aboveInputTokens: number; perMillionTokens: Rates }[];
  perAudioMinute?: string;
}

const twice = (text: string) => shortest(2n * rateAttos(text));
const rateAttos = (text: string) => {
  const { coef, scale } = exactOf(text);
  return coef * 10n ** BigInt(18 - scale);
};

/** What a model's entry stores, or null when it must be skipped. */
function modelOracle(model: J | undefined, claude: boolean): StoredPrices | null {
  if (!isObj(model)) return null;
  const cost = get(model, 'cost');
  if (!isObj(cost)) return null;
  const base = ratesOf(cost, ['per_minute', 'context_over_200k', 'tiers'], true);
  if (!base) return null;
  const out: StoredPrices = { perMillionTokens: base };
  const tiers = get(cost, 'tiers');
  const legacy = get(cost, 'context_over_200k');
  // tiers are the precise form: context_over_200k beside them is not read, unless the list is empty.
  if (tiers !== undefined && !(Array.isArray(tiers) && tiers.length === 0 && legacy !== undefined)) {
    if (!Array.isArray(tiers)) return null;
    const sizes = new Set<number>();
    const list: NonNullable<StoredPrices['contextTiers']> = [];
    for (const entry of tiers) {
      if (!isObj(entry)) return null;
      const selector = get(entry, 'tier');
      if (!isObj(selector)) return null;
      const type = get(selector, 'type');
      if (type !== undefined && type !== 'context') return null;
      const size = tierSize(get(selector, 'size'));
      if (size === null || sizes.has(size)) return null;
      sizes.add(size);
      const rates = ratesOf(entry, ['tier'], false);
      if (!rates || Object.keys(rates).length === 0) return null;
      list.push({ aboveInputTokens: size, perMillionTokens: rates });
    }
    if (list.length > 0) out.contextTiers = list;
  } else if (legacy !== undefined) {
    if (!isObj(legacy)) return null;
    const rates = ratesOf(legacy, [], false);
    if (!rates || Object.keys(rates).length === 0) return null;
    out.contextTiers = [{ aboveInputTokens: 200_000, perMillionTokens: rates }];
  }
  const perMinute = rateOf(get(cost, 'per_minute'));
  if (perMinute === 'bad') return null;
  if (perMinute !== 'absent') out.perAudioMinute = perMinute.text;
  if (claude) {
    // A rate is stored below 10^12 USD per million: twice an input rate above half that is none, so the model cannot be imported as documented.
    for (const rates of [base, ...(out.contextTiers ?? []).map((tier) => tier.perMillionTokens)]) {
      if (rates.input === undefined) continue;
      if (2n * rateAttos(rates.input) >= TOO_LARGE) return null;
      rates.cacheWrite1h = twice(rates.input);
    }
  }
  return out;
}

/** README: a provider named by an alias is stored as its id. Only the names the generator uses. */
const ALIASES: Record<string, string> = {
  claude: 'anthropic', gemini: 'google', 'vertex-ai': 'vertex', 'google-vertex': 'vertex', 'aws-bedrock': 'bedrock', 'amazon-bedrock': 'bedrock', azure: 'azure-openai', 'together-ai': 'together',
};
const PROVIDER_IDS = new Set(['openai', 'anthropic', 'google', 'vertex', 'bedrock', 'azure-openai', 'together', 'mistral']);
/** models.dev's ids for providers Tollgate knows under another id (models-dev.ts). */
const MODELS_DEV_IDS: Record<string, string> = { togetherai: 'together', 'google-vertex': 'vertex', 'google-vertex-anthropic': 'vertex', 'amazon-bedrock': 'bedrock', azure: 'azure-openai' };

function canonical(name: string): string {
  const lower = name.trim().toLowerCase();
  return ALIASES[lower] ?? (PROVIDER_IDS.has(lower) ? lower : name.trim());
}

/** Claude served at Anthropic's rates: any model from Anthropic, Claude models on Vertex AI and Bedrock. */
function isClaude(provider: string, model: string): boolean {
  const name = model.trim();
  if (provider === 'anthropic') return true;
  if (provider === 'vertex') return /^(?:anthropic\/|publishers\/anthropic\/models\/)?claude-/i.test(name);
  if (provider === 'bedrock') return /(?:^|\.)anthropic\.claude/i.test(name);
  return false;
}

/** A UTF-16 surrogate without its pair: text that is not well formed (String.prototype.isWellFormed is ES2024). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const unstorable = (name: string) => !name.trim() || name.trim().length > 255 || name.includes('\u0000') || LONE_SURROGATE.test(name);
const pointer = (...parts: string[]) => parts.map((part) => `/${part.replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');

interface ExpectedRow {
  provider: string;
  model: string;
  prices: StoredPrices;
  claude: boolean;
}
interface Expected {
  rows: ExpectedRow[];
  /** Where each skip lies: a provider's or a model's pointer, in file order. */
  skipped: string[];
}

function oracle(document: J): Expected | 'not a table' {
  if (!isObj(document)) return 'not a table';
  const wrapped = get(document, 'providers');
  const unwrap = isObj(wrapped) && !isObj(get(wrapped, 'models'));
  const table = unwrap ? wrapped : document;
  const base = unwrap ? '/providers' : '';
  const rows: ExpectedRow[] = [];
  const skipped: string[] = [];
  // Beside a wrapped table: reported, not imported.
  if (unwrap) for (const key of keysOf(document)) if (key !== 'providers') skipped.push(pointer(key));
  const seen = new Set<string>();
  for (const providerKey of keysOf(table)) {
    const entry = get(table, providerKey);
    const providerPath = base + pointer(providerKey);
    const models = isObj(entry) ? get(entry, 'models') : undefined;
    // models.dev's ids are lower case; one written in capitals names the same provider.
    const providerId = MODELS_DEV_IDS[providerKey] ?? MODELS_DEV_IDS[providerKey.toLowerCase()] ?? providerKey;
    if (!isObj(models) || unstorable(providerId)) {
      skipped.push(providerPath);
      continue;
    }
    const provider = canonical(providerId);
    for (const modelKey of keysOf(models)) {
      const path = providerPath + pointer('models', modelKey);
      // models.dev's "<model>@default" (Vertex AI's undated Claude) is stored by the bare id calls report.
      const name = modelKey.replace(/@default\s*$/i, '').trim() ? modelKey.replace(/@default\s*$/i, '') : modelKey;
      const key = `${provider.toLowerCase()}\u0000${name.trim().toLowerCase()}`;
      const claude = isClaude(provider, modelKey);
      const prices = unstorable(modelKey) || seen.has(key) ? null : modelOracle(get(models, modelKey), claude);
      if (!prices) {
        skipped.push(path);
        continue;
      }
      seen.add(key);
      rows.push({ provider, model: name.trim(), prices, claude });
    }
  }
  return { rows, skipped };
}

/** Rates as JSON with sorted keys: equal prices compare equal however their keys were ordered. */
const sorted = (value: unknown): string =>
  JSON.stringify(value, (_key, inner: unknown) =>
    inner && typeof inner === 'object' && !Array.isArray(inner) ? Object.fromEntries(Object.entries(inner).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : inner,
  );
/** A price as costing reads it: context tiers in any order are the same tiers. */
const samePrice = (prices: unknown): string => {
  const { contextTiers, ...rest } = prices as { contextTiers?: { aboveInputTokens: number }[] };
  return sorted(contextTiers ? { ...rest, contextTiers: [...contextTiers].sort((a, b) => a.aboveInputTokens - b.aboveInputTokens) } : rest);
};
const nameKey = (row: { provider: string; model: string }) => `${canonical(row.provider).toLowerCase()}\u0000${row.model.trim().toLowerCase()}`;

/** Each skip the import reported lies where the oracle expects one, one for one, in order. */
function expectSkips(actual: { path: string; reason: string }[], expected: string[], file: string) {
  const where = `file ${file}\nskipped ${JSON.stringify(actual)}\nexpected at ${JSON.stringify(expected)}`;
  expect(actual.length, where).toBe(expected.length);
  actual.forEach((skip, index) => {
    const owner = expected[index]!;
    expect(skip.path === owner || skip.path.startsWith(`${owner}/`), where).toBe(true);
    expect(skip.reason, where).toMatch(/\S/);
  });
}

// ---------------------------------------------------------------------------------------------
// Generators.

/** JSON number texts whose value a double holds exactly enough to print back (≤ 15 significant digits). */
const exactNumber: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '0', '-0', '0.0', '0e5', '1e-7', '1E-7', '1.25e-7', '2.50', '2.5', '15', '1e-18', '1e-19', '1.5e-18', '3E-18', '999999999999', '999999999999.999',
      '1e12', '1000000000000', '1e21', '123456789012345', '-1', '-1e-30', '0.000000000000000001', '0.1', '3e2', '100', '0.30000000000000004', '1e+2', '0.075',
    ),
  },
  { weight: 12, arbitrary: fc.integer({ min: 0, max: 100_000 }).map((cents) => (cents % 100 === 0 ? String(cents / 100) : (cents / 100).toFixed(2))) },
  {
    weight: 3,
    arbitrary: fc
      .record({
        mantissa: fc.bigInt({ min: 0n, max: 10n ** 15n - 1n }),
        point: fc.integer({ min: 0, max: 16 }),
        zeros: fc.integer({ min: 0, max: 3 }),
        exponent: fc.oneof(fc.integer({ min: -12, max: 4 }), fc.integer({ min: -25, max: 15 })),
        form: fc.constantFrom('plain', 'plain', 'e', 'E', 'e+'),
      })
      .map(({ mantissa, point, zeros, exponent, form }) => {
        const digits = mantissa.toString();
        let text = digits.length > point ? digits.slice(0, digits.length - point) : '0';
        const fraction = (digits.length > point ? digits.slice(digits.length - point) : digits.padStart(point, '0')) + '0'.repeat(zeros);
        if (fraction) text += `.${fraction}`;
        if (form === 'plain') return text;
        return `${text}${form === 'E' ? 'E' : 'e'}${form === 'e+' && exponent >= 0 ? '+' : ''}${exponent}`;
      }),
  },
);

/** `arbitrary` in `percent` of cases, else undefined. */
const sometimes = <T>(arbitrary: fc.Arbitrary<T>, percent: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: 100 - percent, arbitrary: fc.constant(undefined) }, { weight: percent, arbitrary });

const rateValue: fc.Arbitrary<J> = fc.oneof(
  { weight: 40, arbitrary: exactNumber.map((text) => new Num(text)) },
  { weight: 1, arbitrary: fc.constantFrom<J>('0.15', null, true, new Obj([]), []) },
);

/** Rate entries of a cost or tier object; `base` asks for input and output nearly always. */
const rateEntries = (base: boolean): fc.Arbitrary<[string, J][]> =>
  fc
    .tuple(
      ...Object.keys(RATE_FIELDS).map((key) =>
        sometimes(rateValue, base && (key === 'input' || key === 'output') ? 96 : 40).map((value) => (value === undefined ? null : ([key, value] as [string, J]))),
      ),
      sometimes(fc.constantFrom<[string, J]>(['per_image', new Num('0.04')], ['label', 'long context'], ['cache_write_1h', new Num('2')]), 3),
    )
    .map((entries) => entries.filter((entry): entry is [string, J] => entry != null));

const tierSizeValue: fc.Arbitrary<J> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom('200000', '272000', '128000', '2e5', '2.72E5', '1').map((text) => new Num(text)) },
  { weight: 1, arbitrary: fc.constantFrom<J>(new Num('0'), new Num('-5'), new Num('1.5'), 'big', null) },
);

const tierEntry: fc.Arbitrary<J> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc
      .tuple(rateEntries(false), fc.constantFrom<J | undefined>(undefined, 'context', 'context', 'context', 'conditional'), tierSizeValue)
      .map(([rates, type, size]) => new Obj([...rates, ['tier', new Obj([...(type === undefined ? [] : [['type', type] as [string, J]]), ['size', size]])]])),
  },
  { weight: 1, arbitrary: fc.constantFrom<J>(42, new Obj([['input', new Num('1')]])) },
);

const cost: fc.Arbitrary<J> = fc
  .tuple(
    rateEntries(true),
    sometimes(exactNumber.map((text) => new Num(text)), 10),
    sometimes(fc.oneof({ weight: 8, arbitrary: fc.array(tierEntry, { maxLength: 3 }) as fc.Arbitrary<J> }, { weight: 1, arbitrary: fc.constant<J>('x') }), 25),
    sometimes(fc.oneof({ weight: 8, arbitrary: rateEntries(false).map((entries) => new Obj(entries) as J) }, { weight: 1, arbitrary: fc.constant<J>(7) }), 20),
  )
  .map(([rates, perMinute, tiers, legacy]) => {
    const entries: [string, J][] = [...rates];
    if (perMinute) entries.push(['per_minute', perMinute]);
    if (tiers !== undefined) entries.push(['tiers', tiers]);
    if (legacy !== undefined) entries.push(['context_over_200k', legacy]);
    return new Obj(entries);
  });

const model = (id: string): fc.Arbitrary<J> =>
  fc.oneof(
    {
      weight: 20,
      arbitrary: fc
        .tuple(fc.oneof({ weight: 20, arbitrary: cost }, { weight: 1, arbitrary: fc.constantFrom<J | undefined>(undefined, null, 42) }), fc.subarray<[string, J]>([
          ['name', 'A model'],
          ['limit', new Obj([['context', new Num('128000')], ['output', new Num('8192')]])],
          ['modalities', new Obj([['input', ['text', 'image']]])],
          ['cost_cn', new Obj([['input', new Num('1')], ['output', new Num('2')]])],
          ['experimental', new Obj([['modes', new Obj([])]])],
          ['release_date', '2026-01-01'],
        ]))
        .map(([modelCost, extra]) => new Obj([['id', id], ...extra, ...(modelCost === undefined ? [] : [['cost', modelCost] as [string, J]])])),
    },
    { weight: 1, arbitrary: fc.constantFrom<J>(42, null, [], 'x') },
  );

const GENERIC = ['gpt-x', 'gpt-4o', 'claude-sonnet-4-6', 'gemini-2.5-flash', 'openai/gpt-4o', 'm~1/a', '42', 'llama-3.3-70b', 'whisper-1'];
const VERTEX = ['claude-sonnet-4-6@20260101', 'anthropic/claude-haiku-4-5', 'gemini-2.5-pro', 'publishers/anthropic/models/claude-opus-4-8', 'Claude-Opus-4-8@default'];
const BEDROCK = ['anthropic.claude-haiku-4-5-20251001-v1:0', 'us.anthropic.claude-sonnet-4-6-v1:0', 'meta.llama3-70b-instruct-v1:0', 'amazon.nova-pro-v1:0'];
const UNSTORABLE = ['', '  ', 'a\u0000b', 'x\ud800', 'm'.repeat(256), 'm'.repeat(255)];
const PROVIDER_KEYS = [
  'openai', 'anthropic', 'Anthropic', 'claude', 'google', 'gemini', 'google-vertex', 'google-vertex-anthropic', 'vertex-ai', 'amazon-bedrock', 'aws-bedrock', 'azure',
  'togetherai', 'together-ai', 'acme', 'ACME', 'Acme-Labs', ' mistral ',
];

/** A name as a file might spell it: in another case, with spaces around it. */
const respelled = (names: readonly string[]) =>
  fc.tuple(fc.constantFrom(...names), fc.integer({ min: 0, max: 2 ** 30 }), fc.constantFrom('', '', '', '', ' ', '\t')).map(([name, mask, pad]) => {
    const cased = mask % 3 === 0 ? name : [...name].map((char, index) => ((mask >> index % 30) & 1 ? char.toUpperCase() : char.toLowerCase())).join('');
    return pad && mask % 2 ? `${pad}${cased}` : `${cased}${pad}`;
  });

const modelId = (provider: string): fc.Arbitrary<string> => {
  const kind = canonical(MODELS_DEV_IDS[provider] ?? provider);
  const pool = kind === 'vertex' ? [...VERTEX, 'gemini-2.5-flash'] : kind === 'bedrock' ? BEDROCK : GENERIC;
  return fc.oneof({ weight: 12, arbitrary: respelled(pool) }, { weight: 1, arbitrary: fc.constantFrom(...UNSTORABLE) });
};

const provider: fc.Arbitrary<[string, J]> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc
      .constantFrom(...PROVIDER_KEYS)
      .chain((key) => fc.array(modelId(key).chain((id) => model(id).map((value) => [id, value] as [string, J])), { minLength: 1, maxLength: 5 }).map((models) => [key, new Obj([['id', key], ['name', key], ['models', new Obj(models)]])] as [string, J])),
  },
  { weight: 1, arbitrary: fc.constantFrom<[string, J]>(['broken', 42], ['no-models', new Obj([['id', 'x']])], ['array-models', new Obj([['models', []]])], ['', new Obj([['models', new Obj([])]])], ['p\u0000', new Obj([['models', new Obj([])]])]) },
);

const document: fc.Arbitrary<J> = fc
  .tuple(fc.array(provider, { minLength: 1, maxLength: 4 }), fc.integer({ min: 0, max: 9 }))
  .map(([providers, wrap]) => (wrap === 0 ? new Obj([['providers', new Obj(providers)]]) : new Obj(providers)));

/** Every number of a file written another way (the same value), or replaced by another; tiers listed the other way round when `reverse`. */
function mutate(value: J, choices: readonly (0 | 1 | string)[], reverse: boolean, at = { index: 0 }): J {
  if (value instanceof Num) {
    const choice = choices[at.index++ % Math.max(1, choices.length)] ?? 0;
    if (choice === 0) return value;
    if (choice !== 1) return new Num(choice);
    const { negative, coef, scale } = exactOf(value.text);
    return new Num(`${negative ? '-' : ''}${coef}e${-scale}`);
  }
  if (value instanceof Obj) {
    return new Obj(value.entries.map(([key, inner]) => [key, key === 'tiers' && reverse && Array.isArray(inner) ? (mutate(inner, choices, reverse, at) as J[]).toReversed() : mutate(inner, choices, reverse, at)]));
  }
  if (Array.isArray(value)) return value.map((inner) => mutate(inner, choices, reverse, at));
  return value;
}
const mutation = fc.tuple(fc.boolean(), fc.array(fc.oneof({ weight: 6, arbitrary: fc.constant(0 as const) }, { weight: 2, arbitrary: fc.constant(1 as const) }, { weight: 2, arbitrary: exactNumber }), { minLength: 1, maxLength: 40 }));

// ---------------------------------------------------------------------------------------------

describe('importModelsDev against the oracle', () => {
  it('creates exactly the rows the oracle does, each rate in its shortest exact form, and skips the rest with a path inside the entry', async () => {
    const effectiveFrom = new Date('2026-03-01T00:00:00Z');
    await check(
      fc.property(document, (doc) => {
        const file = toJson(doc);
        const expected = oracle(doc);
        if (expected === 'not a table') {
          expect(() => importModelsDevJson(file, { effectiveFrom }), file).toThrow(AppError);
          return;
        }
        const { rows, skipped } = importModelsDevJson(file, { effectiveFrom });
        const actual = rows.map(({ provider: name, model: id, currency, effectiveFrom: from, ...prices }) => {
          expect(currency).toBe('USD');
          expect(from).toBe(effectiveFrom);
          return { provider: canonical(name), model: id.trim(), prices: JSON.parse(sorted(prices)) as unknown };
        });
        expect(actual, file).toEqual(expected.rows.map(({ provider: name, model: id, prices }) => ({ provider: name, model: id, prices: JSON.parse(sorted(prices)) as unknown })));
        expectSkips(skipped, expected.skipped, file);
      }),
      600,
    );
  });

  it('a file that is no table of providers is refused whole, as a VALIDATION error naming the file', async () => {
    await check(
      fc.property(fc.constantFrom<J>([], null, new Num('42'), 'api.json', true, [new Obj([])]), (doc) => {
        expect(oracle(doc)).toBe('not a table');
        try {
          importModelsDevJson(toJson(doc), { effectiveFrom: new Date('2026-03-01T00:00:00Z') });
          throw new Error('expected a VALIDATION error');
        } catch (error) {
          expect(error).toBeInstanceOf(AppError);
          expect((error as AppError).details.field).toBe('file');
        }
      }),
      20,
    );
  });

  it('a rate with more significant digits than a double holds is stored as the file wrote it, or skipped when a price cannot hold it', async () => {
    // Past 15 significant digits JSON.parse has already rounded the number: the file's text is read instead.
    await check(
      fc.property(fc.bigInt({ min: 10n ** 15n, max: 10n ** 20n }), fc.integer({ min: 5, max: 21 }), fc.nat({ max: 3 }), (digits, shift, zeros) => {
        const point = Math.max(shift, `${digits}`.length - 11);
        const padded = `${digits}`.padStart(point + 1, '0');
        const text = `${padded.slice(0, -point)}.${padded.slice(-point)}${'0'.repeat(zeros)}`;
        const file = JSON.stringify({ acme: { models: { m: { cost: { output: 1 } } } } }).replace('{"output":1}', `{"input":${text},"output":1}`);
        const { rows, skipped } = importModelsDevJson(file, { effectiveFrom: new Date('2026-03-01T00:00:00Z') });
        const fraction = text.split('.')[1]!.replace(/0+$/, '');
        if (fraction.length > 18) {
          expect(rows).toEqual([]);
          expect(skipped).toEqual([{ path: '/acme/models/m/cost/input', reason: expect.stringMatching(/^\S+ has more than 18 decimal places$/) }]);
          // The number named is the file's (as written, or its shortest form when a double holds it).
          expect(Number(skipped[0]!.reason.split(' ')[0])).toBe(Number(text));
          return;
        }
        expect(skipped).toEqual([]);
        const whole = text.split('.')[0]!.replace(/^0+(?=\d)/, '');
        expect(rows[0]!.perMillionTokens!.input).toBe(fraction ? `${whole}.${fraction}` : whole);
      }),
      200,
    );
  });

  it('finds every number a double does not hold, by its pointer, in any JSON text', async () => {
    type Tree = { literal: string } | Tree[] | { entries: [string, Tree][] };
    const literal = fc.oneof(
      fc.constantFrom('0', '-0', '1', '0.15', '2.5e-7', '1e21', '1e-400', '-1e-400', '1e999', '12345678901234567890', '0.12345678901234567891', '1.0000000000000000000001', '5E+2', '-3.25'),
      fc.tuple(fc.bigInt({ min: 0n, max: 10n ** 25n }), fc.integer({ min: -30, max: 30 })).map(([digits, exponent]) => `${digits}e${exponent}`),
      fc.double({ noNaN: true, noDefaultInfinity: true }).map((value) => JSON.stringify(value)),
    );
    const key = fc.oneof(fc.constantFrom('input', 'a/b', 'c~d', '~1', 'q"uote', 'back\\slash', '', 'é', '[', '{', ','), fc.string({ maxLength: 4 }));
    const { tree } = fc.letrec<{ tree: Tree }>((tie) => ({
      tree: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        literal.map((text) => ({ literal: text })),
        fc.array(tie('tree'), { maxLength: 4 }),
        fc.array(fc.tuple(key, tie('tree')), { maxLength: 4 }).map((entries) => ({ entries })),
      ),
    }));
    const space = fc.constantFrom('', ' ', '\n  ', '\t', '\r\n');
    const escape = (name: string) => name.replace(/~/g, '~0').replace(/\//g, '~1');
    await check(
      fc.property(tree, fc.array(space, { minLength: 64, maxLength: 64 }), (root, spaces) => {
        let n = 0;
        const ws = () => spaces[n++ % spaces.length]!;
        const expected = new Map<string, string>();
        const write = (node: Tree, at: string): string => {
          if ('literal' in node) {
            if (!sameValue(node.literal, Number(node.literal))) expected.set(at, node.literal);
            return node.literal;
          }
          if (Array.isArray(node)) return `[${ws()}${node.map((child, index) => write(child, `${at}/${index}`) + ws()).join(`,${ws()}`)}]`;
          // As JSON.parse does, a repeated key keeps its last value: what an earlier one held is not there.
          const last = new Map(node.entries.map(([name], index) => [name, index]));
          return `{${ws()}${node.entries.map(([name, child], index) => {
            const childAt = `${at}/${escape(name)}`;
            const text = `${JSON.stringify(name)}${ws()}:${ws()}${write(child, childAt)}`;
            if (last.get(name) !== index) for (const pointer of [...expected.keys()]) if (pointer === childAt || pointer.startsWith(`${childAt}/`)) expected.delete(pointer);
            return text;
          }).join(`,${ws()}`)}${ws()}}`;
        };
        const text = `${ws()}${write(root, '')}${ws()}`;
        JSON.parse(text);
        expect(new Map([...inexactNumbers(text)].map(([pointer, found]) => [pointer, found.literal]))).toEqual(expected);
      }),
      300,
    );
  });
});

/** Whether the shortest decimal of the double read from `literal` is the literal's own exact value. */
function sameValue(literal: string, read: number): boolean {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal)!;
  const [, sign, whole, fraction = '', exponent = '0'] = match;
  let digits = (whole! + fraction).replace(/^0+/, '');
  let scale = BigInt(exponent) - BigInt(fraction.length);
  while (digits.endsWith('0')) {
    digits = digits.slice(0, -1);
    scale++;
  }
  if (digits === '') return read === 0;
  const shortest = decimalFromJsonNumber(Math.abs(read));
  if (shortest === null || (sign === '-') !== (read < 0)) return false;
  const [readWhole, readFraction = ''] = shortest.split('.');
  let readDigits = (readWhole! + readFraction).replace(/^0+/, '');
  let readScale = -BigInt(readFraction.length);
  while (readDigits.endsWith('0')) {
    readDigits = readDigits.slice(0, -1);
    readScale++;
  }
  return digits === readDigits && scale === readScale;
}

// ---------------------------------------------------------------------------------------------
// Through the service and GraphQL, on a database.

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const IMPORT = 'mutation ($json: String!, $from: DateTime) { importModelsDevPrices(json: $json, effectiveFrom: $from) { imported unchanged skipped } }';
const LIST = 'query ($provider: String, $model: String) { providerPrices(provider: $provider, model: $model) { ref provider model effectiveFrom rates } }';

type Outcome = { imported: number; unchanged: number; skipped: { path: string; reason: string }[] } | { error: { code: string; field?: unknown; models?: unknown } };

async function importFile(merchant: { id: string; secret: string }, file: string, from: Date | null, viaGraphql: boolean): Promise<Outcome> {
  if (viaGraphql) {
    const answer = await server.graphql<{ importModelsDevPrices: { imported: number; unchanged: number; skipped: { entries: { path: string; reason: string }[] } } }>(IMPORT, { json: file, from: from?.toISOString() ?? null }, merchant.secret);
    if (answer.errors) return { error: answer.errors[0]!.extensions as { code: string } };
    const { imported, unchanged, skipped } = answer.data!.importModelsDevPrices;
    return { imported, unchanged, skipped: skipped.entries };
  }
  try {
    return await server.services.providerPrices.importModelsDev(merchant.id, file, from);
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
    return { error: { code: error.code, ...error.details } };
  }
}

const storedRows = async (merchantId: string) =>
  (await server.services.prisma.providerPrice.findMany({ where: { merchantId } })).sort((a, b) => (a.id < b.id ? -1 : 1));
type Stored = Awaited<ReturnType<typeof storedRows>>[number];

/** History is kept: every row stored before is still there, as it was. */
function expectKept(before: Stored[], after: Stored[], where: string) {
  const now = new Map(after.map((row) => [row.id, row]));
  for (const row of before) expect(now.get(row.id), `${where}: ${row.provider}/${row.model}@${row.effectiveFrom.toISOString()} was rewritten`).toEqual(row);
}

/** The rows an import at `from` must have stored, by name. */
function expectRowsAt(stored: Stored[], expected: ExpectedRow[], from: Date, where: string) {
  const at = stored.filter((row) => row.effectiveFrom.getTime() === from.getTime());
  const actual = new Map(at.map((row) => [nameKey(row), row]));
  expect(at.length, `${where}: rows at ${from.toISOString()}`).toBe(actual.size);
  for (const row of expected) {
    const found = actual.get(nameKey(row));
    expect(found, `${where}: no row for ${row.provider}/${row.model}`).toBeDefined();
    expect(canonical(found!.provider), where).toBe(found!.provider);
    expect(found!.provider.toLowerCase(), where).toBe(row.provider.toLowerCase());
    expect(found!.model.toLowerCase(), where).toBe(row.model.toLowerCase());
    expect(found!.model, where).toBe(found!.model.trim());
    expect(JSON.parse(samePrice(found!.prices)), `${where}: ${row.provider}/${row.model}`).toEqual(JSON.parse(samePrice(row.prices)));
  }
}

/** What n one-hour cache writes cost at the row's rates above `inputTokens`' tier: the oracle's rates, halves up. */
function hourWriteCost(prices: StoredPrices, tokens: number): bigint {
  const tier = (prices.contextTiers ?? []).filter((t) => tokens > t.aboveInputTokens).sort((a, b) => b.aboveInputTokens - a.aboveInputTokens)[0];
  const rates = { ...prices.perMillionTokens, ...(tier?.perMillionTokens ?? {}) };
  const rate = rates.cacheWrite1h ?? rates.cacheWrite ?? rates.input!;
  const numerator = BigInt(tokens) * rateAttos(rate);
  return (2n * numerator + 1_000_000n) / 2_000_000n;
}

describe('importModelsDevPrices through the service and GraphQL', () => {
  it('stores what the oracle says once, prices from effectiveFrom on, never rewrites history, and finds rows by any spelling of their names', async () => {
    await check(
      fc.asyncProperty(
        document.filter((doc) => (oracle(doc) as Expected).rows.length >= 2),
        mutation,
        fc.integer({ min: 0, max: 400 * 86_400_000 }),
        fc.integer({ min: 1, max: 30 * 86_400_000 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 2 ** 30 }),
        async (doc, choices, offset, gap, viaGraphql, pick) => {
          const merchant = await server.createMerchant();
          const prices = server.services.providerPrices;
          const fileA = toJson(doc);
          const docB = mutate(doc, choices[1], choices[0]);
          const fileB = toJson(docB);
          const a = oracle(doc) as Expected;
          const b = oracle(docB) as Expected;
          // Mostly a time already in force; sometimes one further ahead than any event can be stamped (a row then has costed nothing, and is replaced).
          const scheduled = pick % 4 === 0;
          const t1 = new Date((scheduled ? Date.now() + 86_400_000 : Date.parse('2024-06-01T00:00:00Z')) + offset);
          const t2 = new Date(t1.getTime() + gap);
          const where = (step: string) => `${step}\nfile A ${fileA}\nfile B ${fileB}`;

          // 1. The first import stores one row per model the oracle imports, at t1.
          const first = await importFile(merchant, fileA, t1, viaGraphql);
          expect('error' in first ? first.error : null, where('import A')).toBeNull();
          if ('error' in first) return;
          expect([first.imported, first.unchanged], where('import A')).toEqual([a.rows.length, 0]);
          expectSkips(first.skipped, a.skipped, fileA);
          const afterA = await storedRows(merchant.id);
          expect(afterA, where('import A')).toHaveLength(a.rows.length);
          expectRowsAt(afterA, a.rows, t1, where('import A'));
          expect(afterA.every((row) => row.source === 'models.dev')).toBe(true);

          // 2. The same file again, the other way in: every price unchanged, nothing written.
          const again = await importFile(merchant, fileA, t1, !viaGraphql);
          expect(again, where('import A again')).toEqual({ ...first, imported: 0, unchanged: a.rows.length });
          expect(await storedRows(merchant.id), where('import A again')).toEqual(afterA);

          // 3. Each row prices from t1 on, not before; is listed by any spelling of its names; costs 1-hour writes as documented.
          const byName = new Map(afterA.map((row) => [nameKey(row), row]));
          for (const [index, row] of a.rows.entries()) {
            if (index > 2) break;
            const stored = byName.get(nameKey(row))!;
            const variant = (name: string, salt: number) => {
              const cased = [...name].map((char, i) => (((pick + salt) >> i % 30) & 1 ? char.toUpperCase() : char.toLowerCase())).join('');
              return (pick + salt) % 2 ? ` ${cased} ` : cased;
            };
            const aliases = Object.entries(ALIASES).filter(([, id]) => id === row.provider).map(([alias]) => alias);
            const providerName = variant(aliases.length > 0 && pick % 2 ? aliases[pick % aliases.length]! : row.provider, index);
            const modelName = variant(row.model, index + 7);
            const listed = await server.graphql<{ providerPrices: { ref: string; effectiveFrom: string; rates: unknown }[] }>(LIST, { provider: providerName, model: modelName }, merchant.secret);
            expect(listed.errors, where(`list ${providerName}/${modelName}`)).toBeUndefined();
            const mine = listed.data!.providerPrices.filter((price) => price.ref === stored.id);
            expect(mine, where(`list ${providerName}/${modelName}`)).toHaveLength(1);
            expect(JSON.parse(samePrice(mine[0]!.rates)), where(`list ${providerName}/${modelName}`)).toEqual(JSON.parse(samePrice(row.prices)));
            expect(mine[0]!.effectiveFrom).toBe(t1.toISOString());

            const atT1 = await prices.priceFor(merchant.id, row.provider, modelName, t1);
            expect(atT1?.ref, where(`price of ${row.provider}/${modelName} at t1`)).toBe(stored.id);
            const before = await prices.priceFor(merchant.id, row.provider, modelName, new Date(t1.getTime() - 1));
            expect(before === null || (before.ref !== stored.id && before.effectiveFrom.getTime() < t1.getTime()), where(`price of ${row.provider}/${modelName} before t1`)).toBe(true);

            const tokens = Math.max(1, ...(row.prices.contextTiers ?? []).map((tier) => tier.aboveInputTokens + 1)) + (pick % 1000);
            const usage = blankUsage({ provider: row.provider, model: modelName, inputTokens: tokens, cacheWriteTokens: tokens, details: { cache_write_1h_tokens: tokens } });
            expect(costOf(usage, atT1!), where(`1-hour cache writes of ${row.provider}/${row.model}`)).toBe(hourWriteCost(row.prices, tokens));
            if (row.claude) expect(row.prices.perMillionTokens.cacheWrite1h).toBe(twice(row.prices.perMillionTokens.input!));
          }

          // 4. File B at t1, over prices in force: a CONFLICT naming each model it would change, and nothing written; else it only adds rows.
          //    Over prices scheduled beyond any event's time, B's prices replace them in the same rows.
          const storedAt = new Map(afterA.map((row) => [nameKey(row), row]));
          const changes = b.rows.filter((row) => storedAt.has(nameKey(row)) && samePrice(row.prices) !== samePrice(storedAt.get(nameKey(row))!.prices));
          const overA = await importFile(merchant, fileB, t1, viaGraphql);
          const afterB = await storedRows(merchant.id);
          const replaced = new Set(scheduled ? changes.map((row) => storedAt.get(nameKey(row))!.id) : []);
          expectKept(afterA.filter((row) => !replaced.has(row.id)), afterB, where('import B at t1'));
          if (changes.length > 0 && !scheduled) {
            expect('error' in overA ? overA.error.code : overA, where('import B at t1')).toBe('CONFLICT');
            const named = 'error' in overA ? (overA.error.models as string[]) : [];
            expect([...named].sort(), where('import B at t1')).toEqual(changes.map((row) => storedAt.get(nameKey(row))!).map((row) => `${row.provider}/${row.model}`).sort());
            expect(afterB, where('import B at t1')).toEqual(afterA);
          } else {
            expect('error' in overA ? overA.error : null, where('import B at t1')).toBeNull();
            expect(afterB, where('import B at t1')).toHaveLength(new Set([...a.rows, ...b.rows].map(nameKey)).size);
            expectRowsAt(afterB, [...b.rows, ...a.rows.filter((row) => !b.rows.some((other) => nameKey(other) === nameKey(row)))], t1, where('import B at t1'));
            for (const id of replaced) expect(afterB.some((row) => row.id === id), where('import B at t1: a scheduled row is replaced in place')).toBe(true);
          }

          // 5. File B at a later t2: taken; the rows of t1 stay as they were; each model prices at B's rates from t2, at its t1 row just before.
          const later = await importFile(merchant, fileB, t2, !viaGraphql);
          expect('error' in later ? later.error : null, where('import B at t2')).toBeNull();
          const afterT2 = await storedRows(merchant.id);
          expectKept(afterB, afterT2, where('import B at t2'));
          expect(afterT2, where('import B at t2')).toHaveLength(afterB.length + b.rows.length);
          expectRowsAt(afterT2, b.rows, t2, where('import B at t2'));
          const atT1ByName = new Map(afterB.map((row) => [nameKey(row), row]));
          const atT2ByName = new Map(afterT2.filter((row) => row.effectiveFrom.getTime() === t2.getTime()).map((row) => [nameKey(row), row]));
          for (const row of b.rows.slice(0, 3)) {
            expect((await prices.priceFor(merchant.id, row.provider, row.model, t2))?.ref, where(`price of ${row.provider}/${row.model} at t2`)).toBe(atT2ByName.get(nameKey(row))!.id);
            const previous = atT1ByName.get(nameKey(row));
            const justBefore = await prices.priceFor(merchant.id, row.provider, row.model, new Date(t2.getTime() - 1));
            if (previous) expect(justBefore?.ref, where(`price of ${row.provider}/${row.model} just before t2`)).toBe(previous.id);
            else expect(justBefore?.effectiveFrom.getTime() ?? 0, where(`price of ${row.provider}/${row.model} just before t2`)).toBeLessThan(t2.getTime());
          }
        },
      ),
      20,
    );
  });

  it('the same tiers listed in another order are the same price: importing them again at the same time changes nothing', async () => {
    const cents = fc.integer({ min: 0, max: 100_000 }).map((n) => new Num(String(n / 100)));
    const tier = fc.tuple(fc.integer({ min: 1, max: 2_000_000 }), cents, cents).map(([size, input, output]) => new Obj([['input', input], ['output', output], ['tier', new Obj([['type', 'context'], ['size', new Num(String(size))]])]]));
    await check(
      fc.asyncProperty(
        fc.uniqueArray(tier, { minLength: 2, maxLength: 4, selector: (entry) => toJson(get(get(entry, 'tier') as Obj, 'size')!) }),
        fc.constantFrom('anthropic', 'acme', 'google-vertex-anthropic'),
        fc.integer({ min: 1, max: 2 ** 30 }),
        async (tiers, providerKey, shuffle) => {
          const merchant = await server.createMerchant();
          const file = (list: J[]) => toJson(new Obj([[providerKey, new Obj([['models', new Obj([['claude-x-1', new Obj([['cost', new Obj([['input', new Num('1')], ['output', new Num('2')], ['tiers', list]])]])]])]])]]));
          const reordered = [...tiers].sort((a, b) => ((toJson(a).length * shuffle) % 7) - ((toJson(b).length * shuffle) % 7)).toReversed();
          const at = new Date('2025-02-01T00:00:00Z');
          const first = await importFile(merchant, file(tiers), at, false);
          expect('error' in first ? first.error : [first.imported, first.unchanged]).toEqual([1, 0]);
          const before = await storedRows(merchant.id);
          const again = await importFile(merchant, file(reordered), at, true);
          expect('error' in again ? again.error : [again.imported, again.unchanged], `${file(tiers)}\nthen ${file(reordered)}`).toEqual([0, 1]);
          expect(await storedRows(merchant.id)).toEqual(before);
        },
      ),
      8,
    );
  });

  it('a file imported "from now" twice prices every model at its rates, and leaves the rows of the first import as they were', async () => {
    await check(
      fc.asyncProperty(document.filter((doc) => oracle(doc) !== 'not a table'), fc.boolean(), async (doc, viaGraphql) => {
        const merchant = await server.createMerchant();
        const file = toJson(doc);
        const expected = oracle(doc) as Expected;
        const first = await importFile(merchant, file, null, viaGraphql);
        expect('error' in first ? first.error : null, file).toBeNull();
        const afterFirst = await storedRows(merchant.id);
        const second = await importFile(merchant, file, null, !viaGraphql);
        expect(second, file).toEqual('error' in first ? first : { ...first, imported: 0, unchanged: first.imported + first.unchanged });
        const afterSecond = await storedRows(merchant.id);
        expectKept(afterFirst, afterSecond, file);
        const now = new Date(Date.now() + 2000);
        for (const row of expected.rows.slice(0, 4)) {
          const price = await server.services.providerPrices.priceFor(merchant.id, row.provider, row.model, now);
          const { provider: _p, model: _m, currency: _c, effectiveFrom: _e, ref: _r, ...rates } = price!;
          expect(JSON.parse(samePrice(rates)), `${file}\n${row.provider}/${row.model}`).toEqual(JSON.parse(samePrice(row.prices)));
        }
      }),
      6,
    );
  });
});
