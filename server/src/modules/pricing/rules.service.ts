import type { Prisma, PriceRule as RuleRow, PriceRuleType, PrismaClient } from '../../generated/prisma/client.ts';
import { MERCHANT_CONFIG_CACHE, RefreshingCache } from '../../shared/cache.ts';
import { ConfigChanges } from '../../shared/config-changes.ts';
import { inPrismaTransaction, lockMerchantScope, whenCommitted, type PrismaTransaction } from '../../shared/db/prisma-transaction.ts';
import { conflict, invalidField, notFound } from '../../shared/errors.ts';
import { requireJsonObject, requireNonEmpty, requireShallowJson } from '../../shared/validation.ts';
import type { PlanService } from '../plans/plans.service.ts';
import { canonicalProviderId } from '../usage/normalize/index.ts';
import { backdatedPastUsage, CONCURRENT_NOW_MS, effectiveFromNow, latestPricedUsageOf } from './pricing-time.ts';
import { ruleTargetsEvent, validateRule, validateRuleConfig, type PricingRule } from './rules.ts';

export type { RuleRow };

/** Rules stored under a provider alias before ids were canonical still target that provider (see canonicalProviderId). */
function withProviderIds(rows: RuleRow[]): RuleRow[] {
  return rows.map((row) => (row.provider == null || canonicalProviderId(row.provider) === row.provider ? row : { ...row, provider: canonicalProviderId(row.provider) }));
}

/** The lock (see lockMerchantScope) a merchant's writes of price rules take. */
const PRICE_RULES_LOCK = 'price-rules';

export interface RuleInput {
  name: string;
  type: PriceRuleType;
  meterKey?: string | null;
  provider?: string | null;
  model?: string | null;
  /** The plan whose book the rule belongs to; omitted or null: the default price book. */
  planKey?: string | null;
  /** Kind-specific settings: unitPrice/perUnits, percent/feePerRequest, tiers, packageSize/packagePrice, minimumCharge. */
  config: Record<string, unknown>;
  effectiveFrom?: Date | null;
}

/** A stored rule as the pricing math wants it. */
export function toPricingRule(row: Pick<RuleRow, 'id' | 'type' | 'meterKey' | 'provider' | 'model' | 'config'>): PricingRule {
  return { ...(row.config as object), kind: row.type, id: row.id, meter: row.meterKey, provider: row.provider, model: row.model } as PricingRule;
}

/**
 * False for a version archived before its effectiveFrom: a scheduled version stopped with its rule.
 * It never priced anything, so it neither ends the version before it nor bounds a new one.
 */
export function tookEffect(row: Pick<RuleRow, 'effectiveFrom' | 'archivedAt'>): boolean {
  return !row.archivedAt || row.archivedAt > row.effectiveFrom;
}

/**
 * The versions in force at `at`: for each rule name, the latest version effective by then.
 * Changing a price never rewrites history; it adds a version with a later effectiveFrom.
 */
export function rulesInForce<R extends Pick<RuleRow, 'name' | 'effectiveFrom' | 'archivedAt'>>(rows: readonly R[], at: Date): R[] {
  const latest = new Map<string, R>();
  for (const row of rows) {
    if (row.effectiveFrom > at || !tookEffect(row)) continue;
    const current = latest.get(row.name);
    if (!current || row.effectiveFrom > current.effectiveFrom) latest.set(row.name, row);
  }
  return [...latest.values()].filter((row) => !row.archivedAt || row.archivedAt > at);
}

type RuleShape = Pick<RuleRow, 'type' | 'meterKey' | 'provider' | 'model'>;
/** A new version of a rule, about to be put. */
export type RuleCandidate = RuleShape & { name: string; effectiveFrom: Date };
/** A version as clashingRule reads it: a stored row, or a candidate (never archived). */
type RuleVersion = RuleCandidate & Pick<RuleRow, 'archivedAt'>;

/**
 * What a rule matches events on. Two rules of a price book with the same target match every event
 * equally (selectRule ranks on nothing else), so neither can be chosen: they tie. Quantity rules of
 * any kind compete for their meter; MARKUP rules for the provider cost.
 */
export function ruleTargetKey(rule: RuleShape): string {
  const name = (text: string | null) => (text == null ? null : text.trim().toLowerCase());
  return JSON.stringify([rule.type === 'MARKUP' ? 'cost' : 'meter', rule.meterKey, name(rule.provider), name(rule.model)]);
}

/**
 * A rule of another name in the same book that would tie with `candidate` (see ruleTargetKey)
 * while both are in force, or null. The candidate is the newest version of its name, so it is in
 * force from its effectiveFrom on; another name's version is in force from its own effectiveFrom
 * until the next version of that name, or until it was archived.
 */
export function clashingRule<R extends RuleVersion>(versions: readonly R[], candidate: RuleCandidate): R | null {
  const target = ruleTargetKey(candidate);
  const byName = new Map<string, R[]>();
  for (const row of versions) {
    if (row.name === candidate.name || !tookEffect(row)) continue;
    const rows = byName.get(row.name);
    if (rows) rows.push(row);
    else byName.set(row.name, [row]);
  }
  for (const rows of byName.values()) {
    rows.sort((a, b) => a.effectiveFrom.getTime() - b.effectiveFrom.getTime());
    for (const [index, row] of rows.entries()) {
      if (ruleTargetKey(row) !== target) continue;
      const next = rows[index + 1]?.effectiveFrom.getTime() ?? Infinity;
      const end = Math.min(next, row.archivedAt?.getTime() ?? Infinity);
      if (end > row.effectiveFrom.getTime() && end > candidate.effectiveFrom.getTime()) return row;
    }
  }
  return null;
}

/**
 * New versions put into one book together (a config apply): the first that would tie (see
 * clashingRule) with a stored version or with another of them, judged with all of them in force,
 * so rules may trade targets in one go. A tie between two of them is reported at the later one.
 * `with` is the other one's index, or null when the clash is a stored version.
 */
export function clashAmong<R extends RuleVersion, C extends RuleCandidate>(
  versions: readonly R[],
  candidates: readonly C[],
): { index: number; with: null; clash: R } | { index: number; with: number; clash: C } | null {
  const added = candidates.map((candidate) => ({ ...candidate, archivedAt: null }));
  const all: RuleVersion[] = [...versions, ...added];
  for (const [index, candidate] of candidates.entries()) {
    const clash = clashingRule(all, candidate);
    if (!clash) continue;
    const other = added.indexOf(clash as (typeof added)[number]);
    if (other === -1) return { index, with: null, clash: clash as R };
    // The later one is found tying with this one (or with something else) in its turn.
    if (other < index) return { index, with: other, clash: candidates[other]! };
  }
  return null;
}

/** A rule's target in words, for messages: "the provider cost of anthropic", "meter tokens of openai/gpt-5.4". */
export function describeTarget(rule: RuleShape): string {
  const scope = [rule.provider, rule.model].filter((part) => part != null).join('/') || 'every event';
  return rule.type === 'MARKUP' ? `the provider cost of ${scope}` : `meter ${rule.meterKey ?? '?'} of ${scope}`;
}

/**
 * Every version of a merchant's rules, by price book: the default book (rules with no plan) and
 * each plan's own. Versions are per (book, name): the same name lives independently in each.
 */
export interface RuleBook {
  defaults: RuleRow[];
  /** A plan's versions (empty for a plan with no rules); undefined for null: no plan. */
  ofPlan(planId: string | null): RuleRow[] | undefined;
  /** A version's effectiveFrom in ms, by its id; undefined for an id not in the book. */
  versionTime(ruleId: string): number | undefined;
}

const NO_RULES: RuleRow[] = [];

/** Far above any real price book's rule (a few dozen tiers), well below what would strain a row. */
const MAX_CONFIG_BYTES = 16_384;

/** A rule's name as stored (trimmed), or a VALIDATION error; also what archive looks rules up by. */
function ruleName(name: unknown): string {
  if (typeof name !== 'string') throw invalidField('name', 'must be text');
  return requireNonEmpty('name', name, 100);
}

/**
 * Target text trimmed, as matching reads it (meter keys match exactly, so " tok " would match
 * nothing). Anything but text is passed on for validateRule to refuse.
 */
const trimmed = (value: unknown): unknown => (typeof value === 'string' ? value.trim() : (value ?? null));

/** An input checked and brought to the form it is stored in. */
interface CheckedInput {
  name: string;
  meterKey: string | null;
  provider: string | null;
  model: string | null;
  config: Prisma.InputJsonObject;
  /** Null: from now, read once the lock is held (a writer waiting on it must not put a version earlier than the one it waited for). */
  effectiveFrom: Date | null;
}

function checkInput(input: RuleInput): CheckedInput {
  const name = ruleName(input.name);
  const config = checkedRuleConfig(input.type, input.config);
  // Checked before canonicalProviderId, so that what it is given is storable text.
  const target = { meterKey: trimmed(input.meterKey), provider: input.provider ?? null, model: trimmed(input.model) };
  validateRule(toPricingRule({ id: 'new', type: input.type, ...target, config } as Parameters<typeof toPricingRule>[0]));
  const effectiveFrom = input.effectiveFrom ?? null;
  if (effectiveFrom !== null && (!(effectiveFrom instanceof Date) || Number.isNaN(effectiveFrom.getTime()))) throw invalidField('effectiveFrom', 'must be a valid date');
  return {
    name,
    meterKey: target.meterKey as string | null,
    provider: target.provider === null ? null : canonicalProviderId(target.provider),
    model: target.model as string | null,
    config: config as Prisma.InputJsonObject,
    effectiveFrom,
  };
}

/** A rule's settings as put stores them, or a VALIDATION error (a pricing file's plan runs it too). */
export function checkedRuleConfig(type: PriceRuleType, config: unknown): Record<string, unknown> {
  return validateRuleConfig(type, requireJsonObject('config', jsonOnly(config), MAX_CONFIG_BYTES));
}

/** A config a service caller built with values JSON cannot hold (a bigint) is refused, not a TypeError. */
function jsonOnly(config: unknown): unknown {
  // Measured first, without recursion: JSON.stringify overflows the stack on a config nested
  // thousands deep, which was then refused as holding values JSON cannot (it holds none).
  requireShallowJson('config', config);
  try {
    JSON.stringify(config);
  } catch {
    throw invalidField('config', 'must hold only JSON values: text, numbers, true/false, null, lists and objects');
  }
  return config;
}

export class PriceRuleService {
  private readonly cache = new RefreshingCache<string, RuleBook>(MERCHANT_CONFIG_CACHE);

  constructor(
    private readonly prisma: PrismaClient,
    private readonly plans: PlanService,
    private readonly changes = new ConfigChanges(),
  ) {
    changes.on('price-rules', (merchantId) => this.cache.delete(merchantId));
  }

  /** Every version of every rule, default book and plans together, cached briefly and invalidated together. */
  book(merchantId: string): Promise<RuleBook> {
    return this.cache.get(merchantId, () => this.loadBook(merchantId));
  }

  private async loadBook(merchantId: string): Promise<RuleBook> {
    const rows = withProviderIds(await this.prisma.priceRule.findMany({ where: { merchantId }, orderBy: [{ name: 'asc' }, { effectiveFrom: 'asc' }] }));
    const defaults: RuleRow[] = [];
    const byPlan = new Map<string, RuleRow[]>();
    for (const row of rows) {
      if (row.planId === null) defaults.push(row);
      else if (byPlan.has(row.planId)) byPlan.get(row.planId)!.push(row);
      else byPlan.set(row.planId, [row]);
    }
    const times = new Map(rows.map((row) => [row.id, row.effectiveFrom.getTime()]));
    return { defaults, ofPlan: (planId) => (planId === null ? undefined : (byPlan.get(planId) ?? NO_RULES)), versionTime: (ruleId) => times.get(ruleId) };
  }

  /** Every version of the default price book's rules. */
  async allVersions(merchantId: string): Promise<RuleRow[]> {
    return (await this.book(merchantId)).defaults;
  }

  /** Every version of a plan's rules (by plan key), or of the default book when `planKey` is null. */
  async versions(merchantId: string, planKey?: string | null): Promise<RuleRow[]> {
    if (planKey == null) return this.allVersions(merchantId);
    const plan = await this.plans.get(merchantId, planKey);
    return (await this.book(merchantId)).ofPlan(plan.id)!;
  }

  /** Every version of the rules of one of the merchant's plans, by id. */
  async planVersions(merchantId: string, planId: string): Promise<RuleRow[]> {
    return (await this.book(merchantId)).ofPlan(planId)!;
  }

  /**
   * Creates a rule, or a new version of the rule with this name in its book (the plan `planKey`,
   * or the default book), from effectiveFrom (default now: moved past the merchant's usage already
   * priced at or after now, which may be stamped up to MAX_FUTURE_USAGE_MS ahead, so that no
   * charged event is priced by the new version; a given effectiveFrom at or before usage already
   * priced that the rule matches is refused). An archived plan still takes new versions: the
   * customers who stayed on it are still priced by it.
   */
  async put(merchantId: string, input: RuleInput): Promise<RuleRow> {
    return inPrismaTransaction(this.prisma, async (tx) => (await this.write(merchantId, [input], tx, true))[0]!);
  }

  /**
   * Puts several rules, each as put does, checking them all before writing any. Ties are judged
   * with all of them in force (see clashAmong), so rules may trade targets in one go. All or
   * nothing, in `tx` when given (else in a transaction of its own); the cache is dropped once it commits.
   * A meter the same transaction created (a config file's own) counts as known. `movedNow`: the
   * moment "from now" stands for, when the caller already read it in `tx` (see effectiveFromNow:
   * a config file's changes all take effect then). `replacing`: called under the lock with each
   * input's index and the version it replaces (in force just before it takes effect, null for
   * none); it may throw to refuse the whole put, nothing written (a config file's apply checks that
   * no version was written since its diff).
   */
  async putAll(
    merchantId: string,
    inputs: readonly RuleInput[],
    tx?: PrismaTransaction,
    movedNow?: Date,
    replacing?: (index: number, current: RuleRow | null) => void,
  ): Promise<RuleRow[]> {
    if (!tx) return inPrismaTransaction(this.prisma, (own) => this.write(merchantId, inputs, own, true, movedNow, replacing));
    return this.write(merchantId, inputs, tx, true, movedNow, replacing);
  }

  /** `knownMeters`: refuse a rule for a meter the merchant does not have or archived (read in `tx`, so a meter created or restored in it counts). */
  private async write(
    merchantId: string,
    inputs: readonly RuleInput[],
    tx: PrismaTransaction,
    knownMeters: boolean,
    movedNow?: Date,
    replacing?: (index: number, current: RuleRow | null) => void,
  ): Promise<RuleRow[]> {
    // Before the lock and any read: a bad input is refused without touching the database.
    const valid = inputs.map(checkInput);
    // Two writers checking for ties side by side would each find none and both write, leaving a
    // tie that fails every event it would price: one merchant's rule writes go one at a time.
    await lockMerchantScope(tx, PRICE_RULES_LOCK, merchantId);
    const prisma = tx.client;
    // "From now" is read once the lock is held, and comes after the merchant's usage already
    // priced (stamped up to MAX_FUTURE_USAGE_MS ahead): a version in force at a charged event's
    // time would price a late event at that moment another way than it was charged.
    const fromNow = valid.some((input) => input.effectiveFrom === null) ? (movedNow ?? (await effectiveFromNow(prisma, merchantId, new Date()))) : null;
    const books = new Map<string | null, RuleRow[]>();
    const checked: (RuleCandidate & { planId: string | null; config: Prisma.InputJsonObject })[] = [];
    for (const [index, input] of inputs.entries()) {
      const { name, meterKey, provider, model, config } = valid[index]!;
      let effectiveFrom = valid[index]!.effectiveFrom ?? fromNow!;
      const planId = await this.planIdOf(merchantId, input.planKey, tx);
      if (knownMeters && meterKey !== null) {
        // It would price nothing: ingest only ever offers a rule the quantities of the merchant's active meters.
        const meter = await prisma.meter.findUnique({ where: { merchantId_key: { merchantId, key: meterKey } }, select: { archivedAt: true } });
        if (!meter) throw invalidField('rule.meterKey', `no meter has the key "${meterKey}": create the meter first (createMeter), or fix the key`);
        if (meter.archivedAt) throw invalidField('rule.meterKey', `meter "${meterKey}" is archived, so ingest no longer counts it: restore the meter first (list it under meters in a pricing config), or use another meter`);
      }
      if (checked.some((other) => other.planId === planId && other.name === name)) throw invalidField('name', `rule "${name}" is put twice in the same price book`);
      let versions = books.get(planId);
      if (!versions) books.set(planId, (versions = withProviderIds(await prisma.priceRule.findMany({ where: { merchantId, planId } }))));
      const latest = versions.filter((row) => row.name === name && tookEffect(row)).reduce<RuleRow | null>((last, row) => (!last || row.effectiveFrom > last.effectiveFrom ? row : last), null);
      // A version "from now" put just before this one (moved past the same usage, or in the same
      // millisecond) is followed a millisecond later rather than refused, as plan changes are.
      if (valid[index]!.effectiveFrom === null && latest && latest.effectiveFrom >= effectiveFrom && latest.effectiveFrom.getTime() - effectiveFrom.getTime() < CONCURRENT_NOW_MS) {
        effectiveFrom = new Date(latest.effectiveFrom.getTime() + 1);
      }
      if (latest && effectiveFrom <= latest.effectiveFrom) {
        throw invalidField('effectiveFrom', `must be after the current version's (${latest.effectiveFrom.toISOString()}): history is never rewritten`);
      }
      replacing?.(index, rulesInForce(versions.filter((row) => row.name === name), new Date(effectiveFrom.getTime() - 1))[0] ?? null);
      // A version given a date must come after the usage already priced that it, or the version
      // it ends, matches: a late event in between would be priced another way than its neighbours.
      // Not narrowed by meter or price book: a plan's rule is checked against every customer's
      // usage (simple, and safe).
      if (valid[index]!.effectiveFrom !== null) {
        const priced = await latestPricedUsageOf(prisma, merchantId, effectiveFrom, (pair) => ruleTargetsEvent({ provider, model }, pair) || (latest !== null && ruleTargetsEvent(latest, pair)));
        if (priced) throw backdatedPastUsage("the merchant's latest usage already priced that this rule matches", priced);
      }
      checked.push({ planId, name, type: input.type, meterKey, provider, model, effectiveFrom, config });
    }
    for (const [planId, versions] of books) {
      const candidates = checked.filter((rule) => rule.planId === planId);
      const tie = clashAmong(versions, candidates);
      if (!tie) continue;
      const name = candidates[tie.index]!.name;
      const { clash } = tie;
      throw conflict(
        tie.with === null
          ? `Price rule "${clash.name}" already prices ${describeTarget(clash)} in this price book while ${inputs.length === 1 ? 'this one' : `"${name}"`} would be in force: two rules that match an event ` +
              `equally cannot be told apart. Change or archive "${clash.name}", or give ${inputs.length === 1 ? 'this rule' : `"${name}"`} a narrower target.`
          : `Price rules "${clash.name}" and "${name}" would both price ${describeTarget(clash)} in this price book: two rules that match an event equally cannot be told apart. ` +
              'Give one of them a narrower target.',
        { field: 'name', conflictingRule: clash.name, ...(tie.with === null ? { conflictingRuleId: tie.clash.id } : {}) },
      );
    }
    const rows: RuleRow[] = [];
    for (const { planId, name, type, meterKey, provider, model, config, effectiveFrom } of checked) {
      rows.push(await prisma.priceRule.create({ data: { merchantId, planId, name, type, meterKey, provider, model, config, effectiveFrom } }));
    }
    whenCommitted(tx, () => this.changes.changed('price-rules', merchantId));
    return rows;
  }

  /**
   * Stops a rule of the default book, or of the plan `planKey`, from `at` (default now, moved past usage already priced as put does;
   * a given `at` at or before usage already priced that the rule matches is refused); earlier events keep the price they were charged.
   * The version in force at `at` and every later (scheduled) version are archived at `at`: rulesInForce reads only a name's
   * latest version effective, so archiving the latest alone would leave the current one in force until the scheduled date.
   * Scheduled versions stopped so never take effect (see tookEffect), so they do not hold back putting the rule again from now.
   */
  async archive(merchantId: string, givenName: string, planKey?: string | null, at?: Date): Promise<RuleRow> {
    // Rules are stored under their trimmed name; a name put would refuse (NUL…) is refused before any query.
    const name = ruleName(givenName);
    const planId = await this.planIdOf(merchantId, planKey);
    return inPrismaTransaction(this.prisma, async (tx) => {
      // As write: a version put while this reads would escape the archiving.
      await lockMerchantScope(tx, PRICE_RULES_LOCK, merchantId);
      // "From now" comes after the merchant's usage already priced, as for a new version (see write).
      const stopAt = at ?? (await effectiveFromNow(tx.client, merchantId, new Date()));
      const versions = await tx.client.priceRule.findMany({ where: { merchantId, planId, name }, orderBy: { effectiveFrom: 'asc' } });
      if (versions.length === 0) throw notFound('Price rule', planKey == null ? name : `${planKey}/${name}`);
      // A version stopped before it took effect is no longer part of the rule's timeline.
      const live = versions.filter(tookEffect);
      // The version in force just before stopAt, and every version from stopAt on. A version taking
      // effect at stopAt itself (put "from now" at the same moment) never takes effect once stopped,
      // so the one before it must stop too: else it would be back in force after the archive.
      const inForce = live.findLast((row) => row.effectiveFrom < stopAt);
      const toStop = live.filter((row) => (row === inForce || row.effectiveFrom >= stopAt) && (!row.archivedAt || row.archivedAt > stopAt));
      if (toStop.length > 0) {
        // A given `at` must come after the merchant's usage already priced, as a version's date
        // must (see write). Only when something would stop then: archiving again answers the same.
        const stopping = withProviderIds(toStop);
        const priced = at && (await latestPricedUsageOf(tx.client, merchantId, at, (pair) => stopping.some((row) => ruleTargetsEvent(row, pair))));
        if (priced) throw backdatedPastUsage("the merchant's latest usage already priced that this rule matches", priced);
        await tx.client.priceRule.updateMany({ where: { id: { in: toStop.map((row) => row.id) } }, data: { archivedAt: stopAt } });
        whenCommitted(tx, () => this.changes.changed('price-rules', merchantId));
      }
      // Answered as it stands now, so archiving again answers the same: its latest version that took effect.
      const stopped = versions.map((row) => (toStop.includes(row) ? { ...row, archivedAt: stopAt } : row));
      return stopped.findLast(tookEffect) ?? stopped.at(-1)!;
    });
  }

  private async planIdOf(merchantId: string, planKey: string | null | undefined, tx?: PrismaTransaction): Promise<string | null> {
    return planKey == null ? null : (await this.plans.get(merchantId, planKey, tx)).id;
  }
}
