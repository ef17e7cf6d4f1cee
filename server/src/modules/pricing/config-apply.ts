import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseDocument, type Tags } from 'yaml';
import type { MeterAggregation, MeterSource, PriceRuleType } from '../../generated/prisma/client.ts';
import type { Services } from '../../services.ts';
import { AppError, invalidField } from '../../shared/errors.ts';
import { priceInForce, validateProviderPrice, type ProviderPrice } from './cost.ts';
import { normalizePlanInput } from '../plans/plans.service.ts';
import { rulesInForce, toPricingRule, type RuleRow } from './rules.service.ts';
import { validateRule } from './rules.ts';

/**
 * Pricing as code: meters, provider prices, price rules and plans (each with its own rules)
 * declared in a file (tollgate.config.ts/.js/.json/.yaml) and applied with
 * `npm run tollgate -- apply <file>`. Applying is idempotent (an unchanged file changes nothing)
 * and never rewrites history: a changed price or rule becomes a new version from now, and events
 * keep the prices of their time. What the file does not mention is left as it is.
 */
export interface PricingConfig {
  meters?: { key: string; name: string; unit: string; source: MeterSource; aggregation?: MeterAggregation }[];
  providerPrices?: (Omit<ProviderPrice, 'currency' | 'effectiveFrom'> & { effectiveFrom?: string })[];
  /** The default price book: prices every customer on no plan, and what a plan's rules do not cover. */
  priceRules?: PricingConfigRule[];
  /** Listing a plan that was archived restores it. */
  plans?: { key: string; name: string; description?: string | null; priceRules?: PricingConfigRule[] }[];
}

type PricingConfigRule = { name: string; type: PriceRuleType; meterKey?: string; provider?: string; model?: string; config: Record<string, unknown> };
type PricingConfigMeter = NonNullable<PricingConfig['meters']>[number];
type PricingConfigPlan = NonNullable<PricingConfig['plans']>[number];

export type Change =
  | { kind: 'create-meter'; key: string; detail: PricingConfigMeter }
  | { kind: 'update-meter'; key: string; from: string; to: string; detail: PricingConfigMeter }
  | { kind: 'add-price'; key: string; from: string | null; to: string; detail: NonNullable<PricingConfig['providerPrices']>[number] }
  | { kind: 'create-plan'; key: string; to: string; detail: PricingConfigPlan }
  | { kind: 'update-plan'; key: string; from: string; to: string; detail: PricingConfigPlan }
  /** `key` is the rule's name, or "<plan key>/<rule name>" for a plan's rule. */
  | { kind: 'add-rule'; key: string; plan: string | null; from: string | null; to: string; detail: PricingConfigRule };

/** Reads a config file: JSON, YAML, or a module whose default export is the config. */
export async function loadPricingConfig(file: string): Promise<PricingConfig> {
  // `npm run` changes into the workspace; resolve the path from where the command was typed.
  const absolute = path.resolve(process.env.INIT_CWD ?? process.cwd(), file);
  const extension = path.extname(absolute).toLowerCase();
  let config: unknown;
  if (extension === '.json') config = parseJson(file, readFileSync(absolute, 'utf8'));
  else if (extension === '.yaml' || extension === '.yml') config = parseYaml(file, readFileSync(absolute, 'utf8'));
  else config = ((await import(pathToFileURL(absolute).href)) as { default: unknown }).default;
  if (!config || typeof config !== 'object' || Array.isArray(config)) throw invalidField('config', `${file} must hold a pricing config object`);
  return config as PricingConfig;
}

function parseJson(file: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new AppError('VALIDATION', `${file} is not valid JSON: ${(error as Error).message}`, { field: 'config', file });
  }
}

const YAML_FLOAT = 'tag:yaml.org,2002:float';

/**
 * Plain YAML 1.2 (core schema) to plain JS. One difference: a decimal written without quotes
 * (`unitPrice: 0.05`) is read as its exact text, "0.05", never through a binary float, so YAML
 * plans exactly like the same JSON with quoted decimals. Whole numbers stay numbers.
 */
function parseYaml(file: string, text: string): unknown {
  const exactDecimals = (tags: Tags): Tags =>
    tags.map((tag) => (typeof tag === 'object' && tag.tag === YAML_FLOAT && 'test' in tag && tag.test?.test('0.5') ? { ...tag, resolve: (source: string) => source } : tag));
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

/** What applying `config` would change, computed without changing anything. */
export async function planPricingConfig(services: Services, merchantId: string, config: PricingConfig, now = new Date()): Promise<Change[]> {
  const changes: Change[] = [];
  const meters = new Map((await services.meters.list(merchantId, true)).map((meter) => [meter.key, meter]));
  for (const [index, meter] of (config.meters ?? []).entries()) {
    if (!meter?.key) throw invalidField(`meters.${index}.key`, 'is required');
    const existing = meters.get(meter.key);
    const wanted = canonical({ name: meter.name, unit: meter.unit, source: meter.source, aggregation: meter.aggregation ?? 'SUM' });
    if (!existing) changes.push({ kind: 'create-meter', key: meter.key, detail: meter });
    else {
      const current = canonical({ name: existing.name, unit: existing.unit, source: existing.source, aggregation: existing.aggregation });
      if (existing.source !== meter.source) throw invalidField(`meters.${index}.source`, `meter "${meter.key}" already counts ${existing.source}; use a new key for a different source`);
      if (current !== wanted || existing.archivedAt) changes.push({ kind: 'update-meter', key: meter.key, from: current, to: wanted, detail: meter });
    }
  }
  const own = await services.providerPrices.rowsFor(merchantId);
  for (const [index, price] of (config.providerPrices ?? []).entries()) {
    const effectiveFrom = price.effectiveFrom ? new Date(price.effectiveFrom) : now;
    const { effectiveFrom: _e, ...rates } = validateProviderPrice({ ...price, currency: 'USD', effectiveFrom } as ProviderPrice);
    if (!price.provider || !price.model) throw invalidField(`providerPrices.${index}`, 'needs provider and model');
    const current = priceInForce(own.filter((row) => row.model === price.model), price.provider, price.model, now);
    const { effectiveFrom: _c, ref: _r, ...currentRates } = current ?? ({} as Record<string, unknown>);
    const from = current ? canonical(currentRates) : null;
    const to = canonical(rates);
    if (from !== to) changes.push({ kind: 'add-price', key: `${price.provider}/${price.model}`, from, to, detail: price });
  }
  const book = await services.priceRules.book(merchantId);
  changes.push(...planRules(book.defaults, config.priceRules ?? [], 'priceRules', null, now));
  const plans = new Map((await services.plans.list(merchantId, true)).map((plan) => [plan.key, plan]));
  const seen = new Set<string>();
  for (const [index, plan] of (config.plans ?? []).entries()) {
    const { key, name, description } = normalizePlanInput(plan ?? ({} as PricingConfigPlan), `plans.${index}.`);
    if (seen.has(key)) throw invalidField(`plans.${index}.key`, `plan "${key}" is declared twice`);
    seen.add(key);
    const existing = plans.get(key);
    const to = canonical({ name, description });
    if (!existing) changes.push({ kind: 'create-plan', key, to, detail: plan });
    else {
      const from = canonical({ name: existing.name, description: existing.description, archived: existing.archivedAt ? true : null });
      if (from !== to) changes.push({ kind: 'update-plan', key, from, to, detail: plan });
    }
    changes.push(...planRules(existing ? book.ofPlan(existing.id)! : [], plan.priceRules ?? [], `plans.${index}.priceRules`, key, now));
  }
  return changes;
}

/** The rule versions to add so that a price book's rules in force match the file's. */
function planRules(versions: readonly RuleRow[], wanted: readonly PricingConfigRule[], field: string, plan: string | null, now: Date): Change[] {
  const changes: Change[] = [];
  const rules = rulesInForce(versions, now);
  const names = new Set<string>();
  for (const [index, rule] of wanted.entries()) {
    if (!rule?.name) throw invalidField(`${field}.${index}.name`, 'is required');
    if (names.has(rule.name)) throw invalidField(`${field}.${index}.name`, `rule "${rule.name}" is declared twice in the same price book`);
    names.add(rule.name);
    validateRule(toPricingRule({ id: 'new', type: rule.type, meterKey: rule.meterKey ?? null, provider: rule.provider ?? null, model: rule.model ?? null, config: rule.config as never }));
    const current = rules.find((candidate) => candidate.name === rule.name);
    const describe = (r: { type: string; meterKey?: string | null; provider?: string | null; model?: string | null; config: unknown }) =>
      canonical({ type: r.type, meterKey: r.meterKey, provider: r.provider, model: r.model, config: r.config });
    const from = current ? describe(current) : null;
    const to = describe(rule);
    if (from !== to) changes.push({ kind: 'add-rule', key: plan === null ? rule.name : `${plan}/${rule.name}`, plan, from, to, detail: rule });
  }
  return changes;
}

export function describeChanges(changes: readonly Change[]): string {
  if (changes.length === 0) return 'No changes: the merchant already matches the file.';
  return changes
    .map((change) => {
      switch (change.kind) {
        case 'create-meter':
          return `+ meter ${change.key}`;
        case 'update-meter':
          return `~ meter ${change.key}\n    - ${change.from}\n    + ${change.to}`;
        case 'add-price':
          return change.from ? `~ price ${change.key} (new version from now; earlier events keep the old price)\n    - ${change.from}\n    + ${change.to}` : `+ price ${change.key}\n    + ${change.to}`;
        case 'create-plan':
          return `+ plan ${change.key}\n    + ${change.to}`;
        case 'update-plan':
          return `~ plan ${change.key}\n    - ${change.from}\n    + ${change.to}`;
        case 'add-rule':
          return change.from ? `~ rule "${change.key}" (new version from now)\n    - ${change.from}\n    + ${change.to}` : `+ rule "${change.key}"\n    + ${change.to}`;
      }
    })
    .join('\n');
}

/** Applies a plan from planPricingConfig. */
export async function applyPricingChanges(services: Services, merchantId: string, changes: readonly Change[], now = new Date()): Promise<void> {
  for (const change of changes) {
    switch (change.kind) {
      case 'create-meter':
        await services.meters.create(merchantId, change.detail);
        break;
      case 'update-meter':
        await services.meters.update(merchantId, change.key, change.detail);
        break;
      case 'add-price': {
        const wanted = change.detail.effectiveFrom ? new Date(change.detail.effectiveFrom) : now;
        await services.providerPrices.add(merchantId, { ...change.detail, effectiveFrom: wanted > now ? wanted : now }, 'config');
        break;
      }
      case 'create-plan':
      case 'update-plan':
        await services.plans.put(merchantId, { key: change.key, name: change.detail.name, description: change.detail.description ?? null });
        break;
      case 'add-rule':
        await services.priceRules.put(merchantId, { ...change.detail, planKey: change.plan, effectiveFrom: now });
        break;
    }
  }
}
