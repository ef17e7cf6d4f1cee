import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseDocument, type Tags } from 'yaml';
import { MeterAggregation, MeterSource, PriceRuleType } from '../../generated/prisma/enums.ts';
import type { Services } from '../../services.ts';
import { inPrismaTransaction, lockMerchantScope } from '../../shared/db/prisma-transaction.ts';
import { AppError, conflict, invalidField } from '../../shared/errors.ts';
import { isStorableTime, MAX_FUTURE_USAGE_MS, parseIsoTime } from '../../shared/times.ts';
import { isJsonObject, requireNonEmpty, requireShallowJson, requireStorableText } from '../../shared/validation.ts';
import { meterLabels, parseMeterKey } from '../meters/meters.service.ts';
import { contextTiersInOrder, priceInForce, validateProviderPrice, type ProviderPrice } from './cost.ts';
import { PROVIDER_PRICES_LOCK, type PriceWithRef } from './prices.service.ts';
import { normalizePlanInput } from '../plans/plans.service.ts';
import { concurrentVersionAt, effectiveFromNow, followingNow } from './pricing-time.ts';
import { checkedRuleConfig, clashAmong, describeTarget, rulesInForce, toPricingRule, tookEffect, type RuleCandidate, type RuleInput, type RuleRow } from './rules.service.ts';
import { validateRule } from './rules.ts';
import { inexactNumbers } from './models-dev.ts';
import { canonicalProviderId } from '../usage/normalize/index.ts';

/**
 * Pricing as code: meters, provider prices, price rules and plans (each with its own rules)
 * declared in a file (tollgate.config.ts/.js/.json/.yaml) and applied with
 * `npm run tollgate -- apply <file>`. Applying is idempotent (an unchanged file changes nothing)
 * and never rewrites history: a changed price or rule becomes a new version from now, and events
 * keep the prices of their time. What the file does not mention is left as it is.
 *
 * Provider prices may be listed in several dated versions (see planPrices). Rules and plans take
 * no date: they change from the moment they are applied, so a dated one is refused rather than
 * silently applied early.
 */
export interface PricingConfig {
  meters?: { key: string; name: string; unit: string; source: MeterSource; aggregation?: MeterAggregation }[];
  /** `effectiveFrom`: a date (2026-04-01, midnight UTC) or an ISO 8601 time with its zone, as the DateTime scalar takes it. */
  providerPrices?: (Omit<ProviderPrice, 'currency' | 'effectiveFrom'> & { effectiveFrom?: string })[];
  /** The default price book: prices every customer on no plan, and what a plan's rules do not cover. */
  priceRules?: PricingConfigRule[];
  /** Listing a plan that was archived restores it. */
  plans?: { key: string; name: string; description?: string | null; priceRules?: PricingConfigRule[] }[];
}

type PricingConfigRule = { name: string; type: PriceRuleType; meterKey?: string; provider?: string; model?: string; config: Record<string, unknown> };
type PricingConfigMeter = NonNullable<PricingConfig['meters']>[number];
type PricingConfigPlan = NonNullable<PricingConfig['plans']>[number];
type PricingConfigPrice = NonNullable<PricingConfig['providerPrices']>[number];

export type Change =
  | { kind: 'create-meter'; key: string; detail: PricingConfigMeter }
  | { kind: 'update-meter'; key: string; from: string; to: string; detail: PricingConfigMeter }
  /** `effectiveFrom` is a scheduled (future) version's ISO date; null adds a version from the moment of applying. */
  | { kind: 'add-price'; key: string; from: string | null; to: string; effectiveFrom: string | null; detail: PricingConfigPrice }
  /** A stored version scheduled for a date the file no longer lists (`ref`: its row), deleted: it has priced nothing yet. */
  | { kind: 'cancel-price'; key: string; from: string; effectiveFrom: string; ref: string }
  | { kind: 'create-plan'; key: string; to: string; detail: PricingConfigPlan }
  | { kind: 'update-plan'; key: string; from: string; to: string; detail: PricingConfigPlan }
  /** `key` is the rule's name, or "<plan key>/<rule name>" for a plan's rule. */
  | { kind: 'add-rule'; key: string; plan: string | null; from: string | null; to: string; detail: PricingConfigRule };

/**
 * Where the command was typed, which a relative path is read from. `npm run` changes into the
 * workspace and sets INIT_CWD to where it was run; the root's `npm run tollgate` runs npm again
 * from the root, which sets INIT_CWD anew, so it hands the first one on as TOLLGATE_CWD.
 */
export function commandDirectory(): string {
  return process.env.TOLLGATE_CWD || process.env.INIT_CWD || process.cwd();
}

/** Reads a config file: JSON, YAML, or a module whose default export is the config. */
export async function loadPricingConfig(file: string): Promise<PricingConfig> {
  const absolute = path.resolve(commandDirectory(), file);
  const extension = path.extname(absolute).toLowerCase();
  let config: unknown;
  if (extension === '.json') config = parseJson(file, readFileSync(absolute, 'utf8'));
  else if (extension === '.yaml' || extension === '.yml') config = parseYaml(file, readFileSync(absolute, 'utf8'));
  // A module may export the promise of its config (`export default load()`): what it resolves to is the config.
  else config = await ((await import(pathToFileURL(absolute).href)) as { default: unknown }).default;
  // A plain object only: anything else (a Map, a class instance) has no own lists to read, and
  // would be planned as an empty file ("No changes") instead of refused.
  if (!config || typeof config !== 'object' || !isPlainObject(config)) throw invalidField('config', `${file} must hold a pricing config object`);
  return config as PricingConfig;
}

function isPlainObject(value: object): boolean {
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

function parseJson(file: string, source: string): unknown {
  // A byte order mark (as Windows editors save UTF-8) is no part of the JSON, as YAML skips it.
  const text = source.startsWith('\uFEFF') ? source.slice(1) : source;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    const reason = (error as Error).message;
    // Node 20 says only "at position N"; newer versions may add the line themselves.
    const position = /at position (\d+)/.exec(reason);
    if (!position) throw new AppError('VALIDATION', `${file} is not valid JSON: ${reason}`, { field: 'config', file });
    const offset = Number(position[1]);
    const line = text.slice(0, offset).split('\n').length;
    const col = offset - text.lastIndexOf('\n', offset - 1);
    throw new AppError('VALIDATION', `${file}:${line}:${col}: invalid JSON: ${reason}`, { field: 'config', file, line, column: col });
  }
  refuseDuplicateKeys(file, text);
  refuseInexactNumbers(file, text);
  return value;
}

/**
 * JSON.parse reads a number as the nearest double, and some of those are whole: `1e-400` is read
 * as 0 and `2.0000000000000001` as 2, which prices take as exact (see priceAttos), so a rate would
 * be applied as a number the file did not hold, without a word. Refused, naming where it is.
 */
function refuseInexactNumbers(file: string, text: string): void {
  const [found] = inexactNumbers(text);
  if (!found) return;
  const [pointer, { literal }] = found;
  const field = pointer.split('/').slice(1).map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~')).join('.');
  throw new AppError('VALIDATION', `${file}: ${field || 'config'}: ${literal} is a number JSON reads as ${Number(literal)}, not as written: write it as a decimal string, e.g. "0.15"`, {
    field: field || 'config', file,
  });
}

/**
 * JSON.parse keeps the last of two equal keys of an object without a word, so a setting written
 * twice would be applied as whichever came last. YAML refuses that; so does JSON here, naming the
 * line and column of the second one and the object it is in. `text` is valid JSON (JSON.parse
 * took it), so a scan of its strings and brackets is enough.
 */
function refuseDuplicateKeys(file: string, text: string): void {
  const frames: ({ keys: Set<string>; key: string | null } | { index: number })[] = [];
  let expectKey = false;
  for (let at = 0; at < text.length; at++) {
    const char = text[at];
    const top = frames.at(-1);
    if (char === '"') {
      let end = at + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      if (expectKey && top && 'keys' in top) {
        // Decoded, as JSON.parse compares them: "a" and "\u0061" are the same key.
        const key = JSON.parse(text.slice(at, end + 1)) as string;
        if (top.keys.has(key)) {
          const where = frames.slice(0, -1).map((frame) => ('keys' in frame ? frame.key : frame.index)).join('.');
          const line = text.slice(0, at).split('\n').length;
          const col = at - text.lastIndexOf('\n', at - 1);
          throw new AppError('VALIDATION', `${file}:${line}:${col}: invalid JSON: keys must be unique, and "${key}" is given twice in ${where ? `the object at ${where}` : 'the top-level object'}`, {
            field: 'config', file, line, column: col,
          });
        }
        top.keys.add(key);
        top.key = key;
        expectKey = false;
      }
      at = end;
    } else if (char === '{') {
      frames.push({ keys: new Set(), key: null });
      expectKey = true;
    } else if (char === '[') {
      frames.push({ index: 0 });
    } else if (char === '}' || char === ']') {
      frames.pop();
      expectKey = false;
    } else if (char === ':') {
      expectKey = false;
    } else if (char === ',' && top) {
      if ('keys' in top) expectKey = true;
      else top.index += 1;
    }
  }
}

const YAML_FLOAT = 'tag:yaml.org,2002:float';

/**
 * Plain YAML 1.2 (core schema) to plain JS. One difference: a decimal written without quotes
 * (`unitPrice: 0.05`) is read as its exact text, "0.05", never through a binary float, so YAML
 * plans exactly like the same JSON with quoted decimals. Whole numbers stay numbers, which prices
 * and percents take as their digits (see priceAttos).
 */
function parseYaml(file: string, text: string): unknown {
  const exactDecimals = (tags: Tags): Tags =>
    tags.map((tag) => {
      if (typeof tag !== 'object' || tag.tag !== YAML_FLOAT || !('test' in tag)) return tag;
      if (tag.test?.test('0.5')) return { ...tag, resolve: (source: string) => source };
      // Exponent notation too (`1e-7`), or `1e-400` would be read as 0 and priced so.
      if (tag.test?.test('1e-7')) return { ...tag, resolve: exactExponent };
      return tag;
    });
  const document = parseDocument(text, { customTags: exactDecimals, prettyErrors: true });
  const [error] = document.errors;
  if (error) {
    // The parser's message ends with the offending line and a caret under the column.
    const { line, col } = error.linePos?.[0] ?? { line: 0, col: 0 };
    const [reason, rest = ''] = error.message.split(/ at line \d+, column \d+:?/);
    const excerpt = rest.replace(/^\n+/, '').trimEnd();
    throw new AppError('VALIDATION', `${file}:${line}:${col}: invalid YAML: ${reason}${excerpt ? `\n${excerpt}` : ''}`, { field: 'config', file, line, column: col });
  }
  return document.toJS();
}

const EXPONENT = /^[-+]?(\d*)(?:\.(\d*))?[eE]([-+]?\d+)$/;

/**
 * A YAML number in exponent notation: a whole number it holds exactly stays one (`2e5` tokens are
 * 200000); any other is kept as its text, as a decimal is, never read through a binary float,
 * which makes `1e-400` 0 and `2.0000000000000001e0` 2 (a price then refuses the text, naming it).
 */
function exactExponent(source: string): number | string {
  const match = EXPONENT.exec(source);
  const exponent = Number(match?.[3]);
  // Larger than any safe integer, or with more zeros after the point than any price holds.
  if (!match || Math.abs(exponent) > 100) return source;
  const whole = match[1] ?? '';
  const digits = whole + (match[2] ?? '');
  const point = whole.length + exponent;
  // Whole when every digit after the point is 0.
  const fraction = point <= 0 ? digits : digits.slice(point);
  if (/[1-9]/.test(fraction)) return source;
  const number = Number(source);
  return Number.isSafeInteger(number) ? number : source;
}

/**
 * Canonical JSON (sorted keys, whole numbers as their digits) so that equal settings compare
 * equal however they were written: `upTo: 1000000` in YAML and `"upTo": "1000000"` in JSON.
 */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, inner) =>
    inner && typeof inner === 'object' && !Array.isArray(inner)
      ? Object.fromEntries(Object.entries(inner as Record<string, unknown>).filter(([, v]) => v !== undefined && v !== null).sort(([a], [b]) => a.localeCompare(b)))
      : typeof inner === 'number' && Number.isSafeInteger(inner)
        ? String(inner)
        : inner,
  );
}

/** A decimal as the price parsers take it (see parseDecimalAttos), and a few ways they refuse, which change nothing here. */
const DECIMAL_TEXT = /^\s*([+-]?)(\d+)(?:\.(\d*))?\s*$/;

/**
 * `value` with every decimal in its shortest text ("4.50" → "4.5", "0.10" → "0.1", "007" → "7",
 * "-0" → "0"; a whole number 2 → "2"), by its digits alone, never through a float: the same
 * price written another way compares equal. Only for rates and rule settings, which hold nothing
 * but decimals: a name such as "1.0" is not a number.
 */
function sameDecimals(value: unknown): unknown {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return sameDecimals(String(value));
  if (Array.isArray(value)) return value.map(sameDecimals);
  if (isJsonObject(value)) return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([key, inner]) => [key, sameDecimals(inner)]));
  const match = typeof value === 'string' ? DECIMAL_TEXT.exec(value) : null;
  if (!match) return value;
  const whole = match[2]!.replace(/^0+(?=\d)/, '');
  const fraction = (match[3] ?? '').replace(/0+$/, '');
  const digits = fraction ? `${whole}.${fraction}` : whole;
  return match[1] === '-' && digits !== '0' ? `-${digits}` : digits;
}

/** A price's rates as planning compares them (see sameDecimals); its names and currency as they are. */
function comparableRates({ provider, model, currency, ...rates }: Record<string, unknown>): string {
  // Names in any case price the same calls (priceInForce), as perImageBy's keys match images
  // (validated not to collide so): only the rates tell two prices apart.
  const name = (value: unknown) => (typeof value === 'string' ? value.trim().toLowerCase() : value);
  const perImageBy = isJsonObject(rates.perImageBy) ? Object.fromEntries(Object.entries(rates.perImageBy).map(([key, price]) => [name(key), price])) : rates.perImageBy;
  // Tiers in another order are the same price (see contextTiersInOrder).
  const contextTiers = contextTiersInOrder(rates.contextTiers);
  return canonical({
    provider: name(provider), model: name(model), currency,
    ...(sameDecimals({ ...rates, ...(perImageBy === undefined ? {} : { perImageBy }), ...(contextTiers === undefined ? {} : { contextTiers }) }) as object),
  });
}

/** A file's price: checked, with its date parsed (null: undated). */
interface CheckedPrice {
  price: PricingConfigPrice;
  effectiveFrom: Date | null;
}

/** A file as planning reads it: every list present, every entry checked (see checkedConfig). */
interface CheckedConfig {
  meters: PricingConfigMeter[];
  providerPrices: CheckedPrice[];
  priceRules: PricingConfigRule[];
  plans: (PricingConfigPlan & { priceRules: PricingConfigRule[] })[];
}

const CONFIG_FIELDS = ['meters', 'providerPrices', 'priceRules', 'plans'] as const;
const METER_FIELDS = ['key', 'name', 'unit', 'source', 'aggregation'] as const;
const RULE_FIELDS = ['name', 'type', 'meterKey', 'provider', 'model', 'config'] as const;
const PLAN_FIELDS = ['key', 'name', 'description', 'priceRules'] as const;

/**
 * The file checked for everything but prices and rule settings (cost.ts and rules.ts check those)
 * and brought to the form storage gives it: names trimmed, providers named by id (see
 * canonicalProviderId), dates parsed strictly. Planning compares that form with what is stored,
 * so applying a file twice changes nothing, and a malformed file is refused, naming the entry,
 * before any diff is shown.
 */
function checkedConfig(file: unknown): CheckedConfig {
  if (!isJsonObject(file)) throw invalidField('config', 'must be an object');
  const config = file as Record<string, unknown>;
  const unknown = Object.keys(config).find((key) => !(CONFIG_FIELDS as readonly string[]).includes(key));
  if (unknown !== undefined) throw invalidField(unknown, `is not a field of a pricing config (the fields are ${CONFIG_FIELDS.join(', ')})`);
  const meterKeys = new Set<string>();
  const meters = listAt('meters', config.meters).map((item, index): PricingConfigMeter => {
    const field = `meters.${index}`;
    const meter = entryAt(field, item, METER_FIELDS);
    const key = parseMeterKey(`${field}.key`, meter.key);
    if (meterKeys.has(key)) throw invalidField(`${field}.key`, `meter "${key}" is declared twice`);
    meterKeys.add(key);
    return {
      key,
      ...meterLabels(meter, `${field}.`),
      source: oneOf(`${field}.source`, meter.source, Object.values(MeterSource)),
      ...(meter.aggregation == null ? {} : { aggregation: oneOf(`${field}.aggregation`, meter.aggregation, Object.values(MeterAggregation)) }),
    };
  });
  const providerPrices = listAt('providerPrices', config.providerPrices).map((item, index): CheckedPrice => {
    const field = `providerPrices.${index}`;
    const price = entryAt(field, item);
    const effectiveFrom = dateAt(`${field}.effectiveFrom`, price.effectiveFrom);
    const { effectiveFrom: _given, ...rates } = price;
    return {
      price: {
        ...(rates as Omit<PricingConfigPrice, 'provider' | 'model'>),
        provider: canonicalProviderId(textAt(`${field}.provider`, price.provider)),
        model: textAt(`${field}.model`, price.model),
        ...(effectiveFrom ? { effectiveFrom: effectiveFrom.toISOString() } : {}),
      },
      effectiveFrom,
    };
  });
  const plans = listAt('plans', config.plans).map((item, index) => {
    const field = `plans.${index}`;
    refuseDate(item, field);
    const plan = entryAt(field, item, PLAN_FIELDS);
    // A YAML `key: 2025` is a number: told to quote it, not that a key of digits is not one.
    if (plan.key != null && typeof plan.key !== 'string') throw invalidField(`${field}.key`, TEXT);
    if (plan.name != null && typeof plan.name !== 'string') throw invalidField(`${field}.name`, TEXT);
    if (plan.description != null && typeof plan.description !== 'string') throw invalidField(`${field}.description`, TEXT);
    return { ...normalizePlanInput(plan as PricingConfigPlan, `${field}.`), priceRules: checkedRules(`${field}.priceRules`, plan.priceRules) };
  });
  return { meters, providerPrices, priceRules: checkedRules('priceRules', config.priceRules), plans };
}

function checkedRules(field: string, value: unknown): PricingConfigRule[] {
  return listAt(field, value).map((item, index): PricingConfigRule => {
    const at = `${field}.${index}`;
    refuseDate(item, at);
    const rule = entryAt(at, item, RULE_FIELDS);
    if (!isJsonObject(rule.config)) throw invalidField(`${at}.config`, 'must be an object of the rule\'s settings');
    const provider = optionalTextAt(`${at}.provider`, rule.provider);
    const meterKey = optionalTextAt(`${at}.meterKey`, rule.meterKey);
    const model = optionalTextAt(`${at}.model`, rule.model);
    return {
      name: textAt(`${at}.name`, rule.name, 100), // as the price rules service takes it
      type: oneOf(`${at}.type`, rule.type, Object.values(PriceRuleType)),
      ...(meterKey === undefined ? {} : { meterKey }),
      ...(provider === undefined ? {} : { provider: canonicalProviderId(provider) }),
      ...(model === undefined ? {} : { model }),
      config: rule.config as Record<string, unknown>,
    };
  });
}

const TEXT = 'must be text (in YAML, put a number-like value in quotes)';

/** `value` as a list; absent (or null) is an empty one. */
function listAt(field: string, value: unknown): unknown[] {
  if (value == null) return [];
  if (!Array.isArray(value)) throw invalidField(field, 'must be a list');
  return value;
}

/**
 * `value` as an object whose text can be stored (see requireStorableText), holding only `fields`
 * when given: a misspelt field would otherwise be ignored without a word.
 */
function entryAt(field: string, value: unknown, fields?: readonly string[]): Record<string, unknown> {
  if (!isJsonObject(value)) throw invalidField(field, 'must be an object');
  requireStorableEntry(field, value);
  if (fields) {
    const unknown = Object.keys(value).find((key) => !fields.includes(key));
    if (unknown !== undefined) throw invalidField(`${field}.${unknown}`, `is not a field here (the fields are ${fields.join(', ')})`);
  }
  return value as Record<string, unknown>;
}

/** Refuses unstorable text naming the field that holds it ("providerPrices.2.model"). */
function requireStorableEntry(field: string, value: unknown, depth = 0): void {
  if (value === null || typeof value !== 'object') return requireStorableText(field, value);
  // Each of the entry's fields is measured (without recursion) before this recursive walk goes
  // into it: a file nesting thousands deep would overflow the stack. Named at that field.
  if (depth === 1) requireShallowJson(field, value);
  for (const [key, inner] of Object.entries(value)) {
    requireStorableText(field, key);
    requireStorableEntry(`${field}.${key}`, inner, depth + 1);
  }
}

function textAt(field: string, value: unknown, maxLength = Infinity): string {
  if (value == null) throw invalidField(field, 'is required');
  if (typeof value !== 'string') throw invalidField(field, TEXT);
  return requireNonEmpty(field, value, maxLength);
}

/** Absent or null: undefined. Empty text is refused rather than read as absent, which would widen what a rule matches. */
function optionalTextAt(field: string, value: unknown): string | undefined {
  if (value == null) return undefined;
  if (typeof value !== 'string') throw invalidField(field, TEXT);
  if (value.trim() === '') throw invalidField(field, 'must not be empty (leave it out to match any)');
  return value.trim();
}

function oneOf<T extends string>(field: string, value: unknown, values: readonly T[]): T {
  if (!values.includes(value as T)) throw invalidField(field, `must be one of ${values.join(', ')}`);
  return value as T;
}

/** A date as the DateTime scalar takes it (see parseIsoTime); a .ts/.js config may also give a Date. */
function dateAt(field: string, value: unknown): Date | null {
  if (value == null) return null;
  const time = value instanceof Date ? value : typeof value === 'string' ? parseIsoTime(value) : null;
  if (!time || Number.isNaN(time.getTime())) throw invalidField(field, 'must be a date, e.g. 2026-04-01 (midnight UTC), or an ISO 8601 time with its zone, e.g. 2026-04-01T12:00:00Z');
  if (!isStorableTime(time)) throw invalidField(field, 'must be in the years 1 to 9999');
  return time;
}

/** What applying `config` would change, computed without changing anything. */
export async function planPricingConfig(services: Services, merchantId: string, file: PricingConfig, at?: Date): Promise<Change[]> {
  const config = checkedConfig(file);
  // Planned at the moment an apply would write "from now" (moved past usage already priced, see
  // effectiveFromNow): what the file's last apply scheduled there is then in force, not a
  // scheduled version the file would have to cancel, so applying it again changes nothing.
  const now = at ?? (await effectiveFromNow(services.prisma, merchantId, new Date()));
  const changes: Change[] = [];
  const meters = new Map((await services.meters.list(merchantId, true)).map((meter) => [meter.key, meter]));
  for (const [index, meter] of config.meters.entries()) {
    const existing = meters.get(meter.key);
    const wanted = canonical({ name: meter.name, unit: meter.unit, source: meter.source, aggregation: meter.aggregation ?? 'SUM' });
    if (!existing) changes.push({ kind: 'create-meter', key: meter.key, detail: meter });
    else {
      // Archived shows in the diff, as for plans: listing an archived meter restores it.
      const current = describeMeter(existing);
      if (existing.source !== meter.source) throw invalidField(`meters.${index}.source`, `meter "${meter.key}" already counts ${existing.source}; use a new key for a different source`);
      if (current !== wanted) changes.push({ kind: 'update-meter', key: meter.key, from: current, to: wanted, detail: meter });
    }
  }
  changes.push(...planPrices(await services.providerPrices.rowsFor(merchantId), config.providerPrices, now));
  const book = await services.priceRules.book(merchantId);
  // As putAll counts them: active meters, and those the file declares (which restores an archived one).
  const knownMeters = new Set([...[...meters.values()].filter((meter) => !meter.archivedAt).map((meter) => meter.key), ...config.meters.map((meter) => meter.key)]);
  changes.push(...planRules(book.defaults, config.priceRules, 'priceRules', null, knownMeters, now));
  const plans = new Map((await services.plans.list(merchantId, true)).map((plan) => [plan.key, plan]));
  const seen = new Set<string>();
  for (const [index, plan] of config.plans.entries()) {
    const { key, name, description } = plan;
    if (seen.has(key)) throw invalidField(`plans.${index}.key`, `plan "${key}" is declared twice`);
    seen.add(key);
    const existing = plans.get(key);
    const to = canonical({ name, description });
    if (!existing) changes.push({ kind: 'create-plan', key, to, detail: plan });
    else {
      const from = describePlan(existing);
      if (from !== to) changes.push({ kind: 'update-plan', key, from, to, detail: plan });
    }
    changes.push(...planRules(existing ? book.ofPlan(existing.id)! : [], plan.priceRules, `plans.${index}.priceRules`, key, knownMeters, now));
  }
  return changes;
}

/** Later than any version's date: rules in force then are those not archived, scheduled ones included. */
const END_OF_TIME = new Date(8.64e15);

/**
 * What the merchant has active that the file does not list, as the diff names it ("meter images",
 * "plan legacy", `rule "promo"`, `rule "pro/old markup"`): applying leaves each as it is, so a
 * rule deleted from the file keeps pricing, and the diff must say so rather than that the merchant
 * matches the file. Archived ones are left out (they price nothing), and so are provider prices,
 * which a models.dev import holds by the thousand. `file` has been planned (it is valid).
 */
export async function unlistedByFile(services: Services, merchantId: string, file: PricingConfig): Promise<string[]> {
  const config = checkedConfig(file);
  const book = await services.priceRules.book(merchantId);
  const unlistedRules = (versions: readonly RuleRow[], listed: readonly PricingConfigRule[], plan: string | null) => {
    const names = new Set(listed.map((rule) => rule.name));
    return rulesInForce(versions, END_OF_TIME)
      .filter((rule) => !names.has(rule.name))
      .map((rule) => `rule "${plan === null ? rule.name : `${plan}/${rule.name}`}"`);
  };
  const meterKeys = new Set(config.meters.map((meter) => meter.key));
  const unlisted = (await services.meters.list(merchantId, false)).filter((meter) => !meterKeys.has(meter.key)).map((meter) => `meter ${meter.key}`);
  unlisted.push(...unlistedRules(book.defaults, config.priceRules, null));
  const plans = new Map(config.plans.map((plan) => [plan.key, plan]));
  for (const plan of await services.plans.list(merchantId, false)) {
    const listed = plans.get(plan.key);
    // A plan the file does not list is named once, not rule by rule.
    if (!listed) unlisted.push(`plan ${plan.key}`);
    else unlisted.push(...unlistedRules(book.ofPlan(plan.id)!, listed.priceRules, plan.key));
  }
  return unlisted;
}

interface FileVersion {
  /** Its place in the file's providerPrices. */
  index: number;
  price: PricingConfigPrice;
  /** Null when the file gives no date: the base version, before any dated one. */
  effectiveFrom: Date | null;
  /** As the diff shows them, and as planning compares them (see comparableRates). */
  rates: string;
  same: string;
}

/** A model's stored price versions, its name matched as pricing matches it: trimmed, in any case. */
function versionsOfModel(stored: readonly PriceWithRef[], provider: string, model: string): PriceWithRef[] {
  return stored.filter((row) => row.model.trim().toLowerCase() === model.trim().toLowerCase() && row.provider.trim().toLowerCase() === provider.toLowerCase());
}

/** A stored version's rates, as the diff shows them (a change's `from`). */
const describeStored = ({ effectiveFrom: _e, ref: _r, ...rates }: PriceWithRef) => canonical(rates);

/**
 * The price versions to add so that the merchant's prices match the file's, compared per
 * provider/model by effective date:
 * - a future-dated version is added with its own date unless the same values are stored for that
 *   date (a stored one that differs is replaced: it has priced nothing yet);
 * - of the past-dated and undated versions only the newest matters (an undated one comes before
 *   every dated one, so a file can keep today's price undated and schedule the next beside it):
 *   it is what should be in force now. When the price in force differs it is added as a new
 *   version from now, never backdated. Older past versions are history the file merely records;
 *   they are not added again.
 * - a stored version scheduled for a date the file does not list (moved or removed in the file)
 *   is cancelled: it has priced nothing yet. Only for the models the file lists: the others are
 *   left as they are. One due sooner than usage may be timestamped ahead (MAX_FUTURE_USAGE_MS)
 *   may have priced events already; the file is refused until it lists it or it is in force.
 * Rates compare by value ("4.5" is "4.50", see sameDecimals). Applying the plan and planning
 * again therefore finds nothing to do.
 */
function planPrices(stored: readonly PriceWithRef[], wanted: readonly CheckedPrice[], now: Date): Change[] {
  const byModel = new Map<string, FileVersion[]>();
  for (const [index, { price, effectiveFrom }] of wanted.entries()) {
    // The file's own currency, if it gives one, is checked: the default only fills it in.
    const { effectiveFrom: _e, ...rates } = namedByEntry(`providerPrices.${index}`, priceEntryField, () =>
      validateProviderPrice({ currency: 'USD', ...price, effectiveFrom: effectiveFrom ?? now } as ProviderPrice),
    );
    // Names match as pricing matches them (priceInForce, modelMatchRank): trimmed, in any case.
    const modelKey = `${price.provider.toLowerCase()}/${price.model.trim().toLowerCase()}`;
    const versions = byModel.get(modelKey) ?? [];
    if (versions.some((version) => version.effectiveFrom?.getTime() === effectiveFrom?.getTime())) {
      throw invalidField(`providerPrices.${index}.effectiveFrom`, `${price.provider}/${price.model} already has a version ${effectiveFrom ? `from ${effectiveFrom.toISOString()}` : 'without a date'} in this file`);
    }
    versions.push({ index, price, effectiveFrom, rates: canonical(rates), same: comparableRates(rates) });
    byModel.set(modelKey, versions);
  }

  const changes: Change[] = [];
  const same = ({ effectiveFrom: _e, ref: _r, ...rates }: PriceWithRef) => comparableRates(rates);
  for (const versions of byModel.values()) {
    const { provider, model } = versions[0]!.price;
    const key = `${provider}/${model}`;
    const rows = versionsOfModel(stored, provider, model);
    // A version put "from now" just before is the one in force now, not a scheduled one (see concurrentVersionAt).
    const present = concurrentVersionAt(now, rows.map((row) => row.effectiveFrom)) ?? now;
    const past = versions.filter((version) => !version.effectiveFrom || version.effectiveFrom <= present);
    const newest = past.sort((a, b) => (b.effectiveFrom?.getTime() ?? -Infinity) - (a.effectiveFrom?.getTime() ?? -Infinity))[0];
    if (newest) {
      const current = priceInForce(rows, provider, model, present);
      if (!current || same(current) !== newest.same) {
        changes.push({ kind: 'add-price', key, from: current ? describeStored(current) : null, to: newest.rates, effectiveFrom: null, detail: newest.price });
      }
    }
    // Dated versions to come, the file's and those stored for other dates, in the order they would take effect.
    const upcoming: (Change & { kind: 'add-price' | 'cancel-price' })[] = [];
    for (const version of versions.filter((candidate) => candidate.effectiveFrom && candidate.effectiveFrom > present)) {
      const at = version.effectiveFrom!;
      const row = rows.find((candidate) => candidate.effectiveFrom.getTime() === at.getTime());
      // As for a cancelled one below: the price service refuses to replace it (it may have priced
      // events already), so a diff showing it replaced could never be applied.
      if (row && same(row) !== version.same && row.effectiveFrom.getTime() <= now.getTime() + MAX_FUTURE_USAGE_MS) {
        throw invalidField(
          `providerPrices.${version.index}`,
          `${key} has a version stored from ${row.effectiveFrom.toISOString()} with other rates: it is too close to replace, since usage timestamped ` +
            `up to ${MAX_FUTURE_USAGE_MS / 60_000} minutes ahead may already be priced by it. Keep its rates in the file, or apply the file once it is in force.`,
        );
      }
      if (!row || same(row) !== version.same) upcoming.push({ kind: 'add-price', key, from: row ? describeStored(row) : null, to: version.rates, effectiveFrom: at.toISOString(), detail: version.price });
    }
    const dates = new Set(versions.map((version) => version.effectiveFrom?.getTime()));
    for (const row of rows.filter((candidate) => candidate.effectiveFrom > present && !dates.has(candidate.effectiveFrom.getTime()))) {
      if (row.effectiveFrom.getTime() <= now.getTime() + MAX_FUTURE_USAGE_MS) {
        throw invalidField(
          `providerPrices.${versions[0]!.index}`,
          `${key} has a version stored from ${row.effectiveFrom.toISOString()}, which this file does not list: it is too close to cancel, since usage timestamped ` +
            `up to ${MAX_FUTURE_USAGE_MS / 60_000} minutes ahead may already be priced by it. List it in the file, or apply the file once it is in force.`,
        );
      }
      upcoming.push({ kind: 'cancel-price', key, from: describeStored(row), effectiveFrom: row.effectiveFrom.toISOString(), ref: row.ref });
    }
    changes.push(...upcoming.sort((a, b) => Date.parse(a.effectiveFrom!) - Date.parse(b.effectiveFrom!)));
  }
  return changes;
}

/**
 * Runs a check written for the API (validateRule, validateProviderPrice) and names what it refuses
 * by its place in the file ("priceRules.2.config.percent", not "rule.percent"), so the author can
 * find the line. `fieldAt` maps the check's field name to its path under the entry.
 */
function namedByEntry<T>(entry: string, fieldAt: (field: string) => string, check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (!(error instanceof AppError) || error.code !== 'VALIDATION' || typeof error.details.field !== 'string') throw error;
    const field = error.details.field;
    const path = fieldAt(field);
    const named = path ? `${entry}.${path}` : entry;
    const message = error.message.startsWith(`${field}: `) ? error.message.slice(field.length + 2) : error.message;
    throw new AppError('VALIDATION', `${named}: ${message}`, { ...error.details, field: named });
  }
}

const RULE_TARGETS = ['meterKey', 'provider', 'model'];

/** validateRule's names: `rule.kind` is the entry's type, its targets are the entry's own fields, the rest are settings under config. */
function ruleEntryField(field: string): string {
  if (field === 'rule') return '';
  if (field === 'config') return 'config';
  if (field === 'rule.kind') return 'type';
  const name = field.startsWith('rule.') ? field.slice('rule.'.length) : field;
  return RULE_TARGETS.includes(name) ? name : `config.${name}`;
}

/**
 * checkedRuleConfig's names: what it refuses under `rule.` is a setting under the entry's config,
 * `rule.kind` included (the entry's type is already one of the kinds, see checkedRules).
 */
function ruleConfigField(field: string): string {
  return field.startsWith('rule.') ? `config.${field.slice('rule.'.length)}` : field;
}

/** validateProviderPrice's names are `price.<field>`, the entry's own fields. */
function priceEntryField(field: string): string {
  if (field === 'price') return '';
  return field.startsWith('price.') ? field.slice('price.'.length) : field;
}

/** Rules and plans change from the moment they are applied; a date on one would be ignored. */
function refuseDate(item: unknown, field: string) {
  if (item && typeof item === 'object' && 'effectiveFrom' in item) throw invalidField(`${field}.effectiveFrom`, 'is not taken here: rules and plans change from the moment the file is applied');
}

/**
 * The rule versions to add so that a price book's rules in force match the file's, their settings
 * compared by value ("0.10" is "0.1", see sameDecimals). Refused when two rules of the book would
 * then tie (see clashAmong): the file's new versions, the versions in force of the rules it leaves
 * as they are, and stored rules it does not list. Refused too when a rule the file lists has a
 * version scheduled (through the API) for later: a file cannot date a rule, so it can neither
 * keep nor replace that version, and a version from now could not be put before it.
 */
function planRules(versions: readonly RuleRow[], wanted: readonly PricingConfigRule[], field: string, plan: string | null, meters: ReadonlySet<string>, now: Date): Change[] {
  const changes: Change[] = [];
  const changed: (RuleCandidate & { index: number })[] = [];
  const names = new Set<string>();
  for (const [index, rule] of wanted.entries()) {
    if (names.has(rule.name)) throw invalidField(`${field}.${index}.name`, `rule "${rule.name}" is declared twice in the same price book`);
    names.add(rule.name);
    const at = `${field}.${index}`;
    // The settings alone first, as the service checks them (checkedRuleConfig): a setting named as
    // a target ("provider" inside config) is hidden once merged with the target below, and it, or
    // settings beyond the size a rule stores, were refused only when applying, after the diff,
    // without naming the entry.
    namedByEntry(at, ruleConfigField, () => checkedRuleConfig(rule.type, rule.config));
    namedByEntry(at, ruleEntryField, () =>
      validateRule(toPricingRule({ id: 'new', type: rule.type, meterKey: rule.meterKey ?? null, provider: rule.provider ?? null, model: rule.model ?? null, config: rule.config as never })),
    );
    // As putAll refuses it when applying, but before the diff is shown: such a rule would price nothing.
    if (rule.meterKey !== undefined && !meters.has(rule.meterKey)) {
      throw invalidField(`${at}.meterKey`, `no active meter has the key "${rule.meterKey}": declare it under meters (which restores an archived one), or fix the key`);
    }
    // A version archived before its date never takes effect (see tookEffect): it holds nothing back.
    const ofName = versions.filter((row) => row.name === rule.name && tookEffect(row));
    // A version put "from now" just before is the one in force now, not a scheduled one (see concurrentVersionAt).
    const times = ofName.map((row) => row.effectiveFrom);
    const present = concurrentVersionAt(now, times) ?? now;
    const scheduled = ofName.find((row) => row.effectiveFrom > present);
    if (scheduled) {
      throw invalidField(
        at,
        `rule "${rule.name}" has a version scheduled from ${scheduled.effectiveFrom.toISOString()} (put through the API), which would replace the file's rule then. ` +
          'A file cannot date a rule, so it cannot keep or replace that version: apply the file once it is in force, or archive the rule ' +
          `(archivePriceRule, which stops the scheduled version too) and apply the file again.`,
      );
    }
    const [current] = rulesInForce(ofName, present);
    // Compared as pricing matches targets (rules.ts): a provider or model in another case is the same rule.
    const comparable = (r: DescribedRule) => describeRule({ ...r, provider: r.provider?.trim().toLowerCase(), model: r.model?.toLowerCase() }, sameDecimals(r.config));
    if (!current || comparable(current) !== comparable(rule)) {
      const from = current ? describeRule(current) : null;
      changes.push({ kind: 'add-rule', key: plan === null ? rule.name : `${plan}/${rule.name}`, plan, from, to: describeRule(rule), detail: rule });
      changed.push({ index, name: rule.name, type: rule.type, meterKey: rule.meterKey ?? null, provider: rule.provider ?? null, model: rule.model ?? null, effectiveFrom: followingNow(now, times) });
    }
  }
  const tie = clashAmong(versions, changed);
  if (tie) {
    const rule = changed[tie.index]!;
    const other = tie.with === null ? wanted.findIndex((candidate) => candidate.name === tie.clash.name) : changed[tie.with]!.index;
    throw new AppError(
      'VALIDATION',
      `${field}.${rule.index}: rule "${rule.name}" would tie with ` +
        (other === -1 ? `the stored rule "${tie.clash.name}", which this file does not list,` : `rule "${tie.clash.name}" (${field}.${other})`) +
        ` in this price book: both price ${describeTarget(rule)}, and events that two rules match equally cannot be priced. ` +
        `Give one a narrower target${other === -1 ? `, or archive "${tie.clash.name}" first` : ''}.`,
      { field: `${field}.${rule.index}`, conflictingRule: tie.clash.name },
    );
  }
  return changes;
}

type DescribedRule = { type: string; meterKey?: string | null; provider?: string | null; model?: string | null; config: unknown };

/** A rule version as the diff shows it. Trimmed: a rule stored through the API may not be, and it matches the same events. */
function describeRule(rule: DescribedRule, config = rule.config): string {
  return canonical({ type: rule.type, meterKey: rule.meterKey?.trim(), provider: rule.provider, model: rule.model?.trim(), config });
}

/** As the plan describes a stored meter (archived shows: listing an archived meter restores it). */
const describeMeter = (meter: { name: string; unit: string; source: string; aggregation: string; archivedAt: Date | null }) =>
  canonical({ name: meter.name, unit: meter.unit, source: meter.source, aggregation: meter.aggregation, archived: meter.archivedAt ? true : null });

/** As the plan describes a stored plan. */
const describePlan = (plan: { name: string; description: string | null; archivedAt: Date | null }) =>
  canonical({ name: plan.name, description: plan.description, archived: plan.archivedAt ? true : null });

/** The diff; `unlisted` (see unlistedByFile) follows it, named as left as they are. */
export function describeChanges(changes: readonly Change[], unlisted: readonly string[] = []): string {
  const kept = unlisted.length ? `\nNot in the file, left as they are (archive one to stop it):\n${unlisted.map((entry) => `  ${entry}`).join('\n')}` : '';
  if (changes.length === 0) return `No changes: what the file lists is already in force.${kept}`;
  return changes
    .map((change) => {
      switch (change.kind) {
        case 'create-meter': {
          // Its values, as a changed meter's are shown: its source can never change once created.
          const { name, unit, source, aggregation } = change.detail;
          return `+ meter ${change.key}\n    + ${canonical({ name, unit, source, aggregation: aggregation ?? 'SUM' })}`;
        }
        case 'update-meter':
          return `~ meter ${change.key}\n    - ${change.from}\n    + ${change.to}`;
        case 'add-price':
          return `${describePrice(change)}${change.from ? `\n    - ${change.from}` : ''}\n    + ${change.to}`;
        case 'cancel-price':
          return `- price ${change.key} scheduled from ${change.effectiveFrom} (cancelled: the file no longer lists it; it has priced nothing)\n    - ${change.from}`;
        case 'create-plan':
          return `+ plan ${change.key}\n    + ${change.to}`;
        case 'update-plan':
          return `~ plan ${change.key}\n    - ${change.from}\n    + ${change.to}`;
        case 'add-rule':
          return change.from ? `~ rule "${change.key}" (new version from now)\n    - ${change.from}\n    + ${change.to}` : `+ rule "${change.key}"\n    + ${change.to}`;
      }
    })
    .join('\n') + kept;
}

function describePrice(change: Extract<Change, { kind: 'add-price' }>): string {
  if (change.effectiveFrom) {
    return change.from ? `~ price ${change.key} scheduled from ${change.effectiveFrom} (replaces the version scheduled then)` : `+ price ${change.key} scheduled from ${change.effectiveFrom}`;
  }
  const fileDate = change.detail.effectiveFrom ? new Date(change.detail.effectiveFrom).toISOString() : null;
  if (!change.from) return fileDate ? `+ price ${change.key} (dated ${fileDate} in the file; in force from now, history is never rewritten)` : `+ price ${change.key}`;
  return `~ price ${change.key} (new version from now${fileDate ? `, not from its file date ${fileDate}` : ''}; earlier events keep the old price)`;
}

/**
 * When a price the plan adds "from now" takes effect: `from`, or a millisecond after a version of
 * the model put "from now" just before (see concurrentVersionAt). The version it follows must be
 * the one the plan found in force (see unchangedSincePlan).
 */
function priceMomentFromNow(change: Extract<Change, { kind: 'add-price' }>, stored: readonly PriceWithRef[], from: Date): Date {
  const { provider, model } = change.detail;
  const rows = versionsOfModel(stored, provider, model);
  const at = followingNow(from, rows.map((row) => row.effectiveFrom));
  unchangedSincePlan(change, priceInForce(rows, provider, model, new Date(at.getTime() - 1)));
  return at;
}

/**
 * Refuses (CONFLICT) a price change whose version it replaces, follows or cancels (`current`) is
 * not the one the diff showed as its "-" (a change's `from`): one written since the plan was made
 * would be overridden unseen, so the apply is refused, nothing written, and the file can be
 * planned again. Checked for every such price, not only one put "from now" just before: a price
 * set through the API a minute after the plan (while the CLI asked to confirm) was replaced
 * under a diff that showed the older one.
 */
function unchangedSincePlan(change: Extract<Change, { kind: 'add-price' | 'cancel-price' }>, current: PriceWithRef | null | undefined): void {
  if ((current ? describeStored(current) : null) === change.from) return;
  throw conflict(
    `${current ? `A different price for ${change.key} was written from ${current.effectiveFrom.toISOString()}` : `The price for ${change.key} the plan showed was removed`} after this plan was made, ` +
      'and prices in force are history that is kept: plan the file again to see the change against it.',
    { field: 'effectiveFrom', models: [change.key] },
  );
}

/**
 * A meter, plan or rule the diff showed one way was written another way (or created, or archived)
 * after the plan was made: refused as a changed price is (see unchangedSincePlan), nothing written.
 */
function changedSincePlan(what: string, field: string): AppError {
  return conflict(`The ${what} was changed after this plan was made, and applying would overwrite that change unseen: plan the file again to see the change against it.`, { field });
}

/** How long an apply may hold its transaction open. */
const APPLY_TIMEOUT_MS = 60_000;

/**
 * Applies a plan from planPricingConfig, all or nothing: every change is written in one
 * transaction, so a change refused at this point (a clash with a row written since the plan was
 * made, say) leaves the merchant as it was. The services drop their cached reads once it commits.
 */
export async function applyPricingChanges(services: Services, merchantId: string, changes: readonly Change[], now?: Date): Promise<void> {
  await inPrismaTransaction(
    services.prisma,
    async (tx) => {
      // One writer of a merchant's prices at a time (another apply, setProviderPrice, an import).
      // Side by side, this apply would read the prices stored before the other committed, find the
      // version its diff showed still in force, and write over the other's price unseen. Taken
      // first, so that what was written while this waited is read (and refuses the apply, see
      // unchangedSincePlan), and "now" is read once the lock is held.
      await lockMerchantScope(tx, PROVIDER_PRICES_LOCK, merchantId);
      // "From now" comes after the merchant's usage already priced (stamped up to
      // MAX_FUTURE_USAGE_MS ahead), read in the transaction that writes: a price or rule version
      // in force at a charged event's time would price a late event at that moment another way.
      // The services take `from` as their "from now", not as a date given: usage recorded since it
      // was read (ingest takes no lock this waits on) does not refuse the file, as it would not
      // refuse a change from now. Only a scheduled date is checked as given.
      const from = await effectiveFromNow(tx.client, merchantId, now ?? new Date());
      const rules: RuleInput[] = [];
      const replaced: Extract<Change, { kind: 'add-rule' }>[] = [];
      let storedPrices: PriceWithRef[] | undefined;
      /** The models (a change's key) this apply has put a price for: storedPrices does not hold it. */
      const pricedHere = new Set<string>();
      for (const change of changes) {
        switch (change.kind) {
          case 'create-meter':
            await services.meters.create(merchantId, change.detail, tx);
            break;
          case 'update-meter': {
            // Locked, then compared: a meter changed or archived since the plan was made would be overwritten (or restored) unseen.
            const [stored] = await tx.client.$queryRaw<{ name: string; unit: string; source: string; aggregation: string; archivedAt: Date | null }[]>`
              SELECT name, unit, source::text AS source, aggregation::text AS aggregation, archived_at AS "archivedAt"
              FROM meters WHERE merchant_id = ${merchantId}::uuid AND key = ${change.key} FOR UPDATE`;
            if (!stored || describeMeter(stored) !== change.from) throw changedSincePlan(`meter ${change.key}`, 'meters');
            await services.meters.update(merchantId, change.key, change.detail, tx);
            break;
          }
          case 'add-price': {
            const scheduled = change.effectiveFrom ? new Date(change.effectiveFrom) : null;
            storedPrices ??= await services.providerPrices.rowsIn(merchantId, tx);
            if (scheduled && scheduled > from) {
              // The version stored for that date, which it replaces, must be the one the plan showed.
              const { provider, model } = change.detail;
              unchangedSincePlan(change, versionsOfModel(storedPrices, provider, model).find((row) => row.effectiveFrom.getTime() === scheduled.getTime()));
              await services.providerPrices.add(merchantId, { ...change.detail, effectiveFrom: scheduled }, 'config', tx, from);
              pricedHere.add(change.key);
              break;
            }
            if (scheduled) {
              // A scheduled date that passed between planning and applying (the CLI waiting on its
              // question), or that usage already priced has passed, is not backdated: the price is
              // put from now, when the plan still holds for it. When it does not (the diff showed
              // the version at that date, not the price in force now, or the file's own price of
              // now was just put at that moment), that is said, not a price written since the plan
              // that was not, nor a clash of the file with itself.
              const due = () =>
                conflict(`The price for ${change.key} this plan scheduled from ${change.effectiveFrom} is due by now, and a price is never backdated: plan the file again, which puts it in force from now.`, {
                  field: 'effectiveFrom', models: [change.key],
                });
              if (pricedHere.has(change.key)) throw due();
              let at: Date;
              try {
                at = priceMomentFromNow(change, storedPrices, from);
              } catch (error) {
                throw error instanceof AppError && error.code === 'CONFLICT' ? due() : error;
              }
              await services.providerPrices.add(merchantId, { ...change.detail, effectiveFrom: null }, 'config', tx, at);
              pricedHere.add(change.key);
              break;
            }
            await services.providerPrices.add(merchantId, { ...change.detail, effectiveFrom: null }, 'config', tx, priceMomentFromNow(change, storedPrices, from));
            pricedHere.add(change.key);
            break;
          }
          case 'cancel-price':
            // Refused, and nothing written, if it has come too close to its date since the plan was made.
            // A row replaced at its date since then is not what the diff showed (one gone is NOT_FOUND there).
            storedPrices ??= await services.providerPrices.rowsIn(merchantId, tx);
            if (storedPrices.some((row) => row.ref === change.ref)) unchangedSincePlan(change, storedPrices.find((row) => row.ref === change.ref));
            await services.providerPrices.cancelScheduled(merchantId, change.ref, tx);
            break;
          case 'create-plan':
          case 'update-plan': {
            // A plan created, changed or archived since the plan was made would be taken over, overwritten or restored unseen.
            const [stored] = await tx.client.$queryRaw<{ name: string; description: string | null; archivedAt: Date | null }[]>`
              SELECT name, description, archived_at AS "archivedAt" FROM plans WHERE merchant_id = ${merchantId}::uuid AND key = ${change.key} FOR UPDATE`;
            if ((stored ? describePlan(stored) : null) !== (change.kind === 'update-plan' ? change.from : null)) throw changedSincePlan(`plan ${change.key}`, 'plans');
            await services.plans.put(merchantId, { key: change.key, name: change.detail.name, description: change.detail.description ?? null }, tx);
            break;
          }
          case 'add-rule':
            rules.push({ ...change.detail, planKey: change.plan, effectiveFrom: null });
            replaced.push(change);
            break;
        }
      }
      // Together, once their plans exist: ties are judged with all of them in force, as the plan did.
      // Each replaces the version the diff showed as its "-", read under the rules' write lock.
      await services.priceRules.putAll(merchantId, rules, tx, from, (index, current) => {
        const change = replaced[index]!;
        if ((current ? describeRule(current) : null) !== change.from) throw changedSincePlan(`rule "${change.key}"`, 'priceRules');
      });
    },
    { timeout: APPLY_TIMEOUT_MS },
  );
}
