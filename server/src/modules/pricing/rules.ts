import { AppError, invalidField } from '../../shared/errors.ts';
import { parseDecimalAttos } from '../../shared/money.ts';
import { isJsonObject, requireStorableText } from '../../shared/validation.ts';
import { eventModelNames, modelNameRank, type ModelNames } from './cost.ts';
import { parseMeterKey } from '../meters/meters.service.ts';
import { ceilDiv, count, priceAttos, QUANTITY_SCALE, roundHalfUp, scaledQuantity, type Quantity } from './decimal.ts';

/**
 * What the merchant charges for one event, exact in atto-units of the event's currency: rules carry
 * no currency (see PriceRule.currency in pricing.graphql.ts).
 *
 * Quantity rules (FLAT, GRADUATED, VOLUME, PACKAGE) are priced on the customer's running total in
 * the billing period of the units the rule itself priced (one total per rule, whatever else
 * prices its meter): an event's charge is periodCharge(prior + quantity) − periodCharge(prior).
 * The increments therefore telescope, so however a period's usage is split into events, the
 * charges sum to exactly periodCharge(total), rounding included. A VOLUME rule whose period was
 * partly priced by another version of it is priced from what it charged instead (see
 * ApplyInput.priorChargeAttos), which keeps that sum equal to the version in force's volume price.
 */

export type { Quantity } from './decimal.ts';

export interface Tier {
  /** Inclusive upper bound in units; null = no bound (the last tier must have it). */
  upTo: Quantity | null;
  /** Price per unit inside this tier, a decimal string (a config may also give a whole number, see PriceText). */
  unitPrice: string;
  /** Charged once the period's quantity enters this tier (GRADUATED) or ends in it (VOLUME). */
  flatFee?: string | null;
}

export interface RuleTarget {
  meter?: string | null;
  provider?: string | null;
  model?: string | null;
}

interface RuleCommon extends RuleTarget {
  id?: string;
  /** Floor on every event's charge. Not allowed on VOLUME rules (see validateRule). */
  minimumCharge?: string | null;
}

export type PricingRule = RuleCommon &
  (
    | { kind: 'FLAT'; unitPrice: string; /** Price is per this many units, default 1. */ perUnits?: Quantity }
    | { kind: 'MARKUP'; /** Percent over cost, e.g. "25" or "12.5". */ percent: string; feePerRequest?: string | null }
    | { kind: 'GRADUATED'; tiers: Tier[] }
    | { kind: 'VOLUME'; tiers: Tier[] }
    | { kind: 'PACKAGE'; packageSize: Quantity; packagePrice: string }
  );

export interface ApplyInput {
  /** This event's quantity: a whole number, or a decimal string for fractional units. */
  quantity: Quantity;
  /** What the customer already used in this billing period before this event. */
  priorQuantity?: Quantity;
  /** Provider cost of this event in attos (0 when unknown). */
  costAttos?: bigint;
  /** Requests in this event, for MARKUP's per-request fee; default 1. */
  requests?: number;
  /**
   * VOLUME: what the rule (every version of its name) already charged in the period, when that may
   * differ from this version's price of priorQuantity (another version, or another kind, priced
   * part of the period). The charge is then periodCharge(priorQuantity + quantity) − this: the
   * period re-priced at this version, less what was charged. Ignored by the other kinds, whose
   * increments price only the event's own units.
   */
  priorChargeAttos?: bigint;
  /**
   * MARKUP: the event's provider cost is unknown (costAttos is 0 for want of a price, not because
   * the call was free): only the fee per request is charged, and no minimumCharge, which floors a
   * markup of a known cost.
   */
  costUnknown?: boolean;
}

export interface ApplyResult {
  chargeAttos: bigint;
  /** chargeAttos − costAttos. */
  marginAttos: bigint;
}

interface ParsedTier {
  upTo: bigint | null;
  unitPrice: bigint;
  flatFee: bigint;
}

function parseTiers(tiers: Tier[] | undefined): ParsedTier[] {
  if (!Array.isArray(tiers) || tiers.length === 0) throw invalidField('rule.tiers', 'must have at least one tier');
  let previous = 0n;
  return tiers.map((tier: unknown, index) => {
    const field = `rule.tiers.${index}`;
    if (!isJsonObject(tier)) throw invalidField(field, 'must be an object { upTo, unitPrice, flatFee }');
    const last = index === tiers.length - 1;
    let upTo: bigint | null = null;
    const { upTo: bound, unitPrice, flatFee } = tier as unknown as Tier;
    if (bound === null || bound === undefined) {
      if (!last) throw invalidField(`${field}.upTo`, 'only the last tier may be unbounded');
    } else {
      if (last) throw invalidField(`${field}.upTo`, 'the last tier must be unbounded (upTo: null)');
      upTo = scaledQuantity(`${field}.upTo`, bound);
      if (upTo <= previous) throw invalidField(`${field}.upTo`, 'must be greater than the previous tier\'s upTo');
      previous = upTo;
    }
    return {
      upTo,
      unitPrice: priceAttos(`${field}.unitPrice`, unitPrice),
      flatFee: flatFee == null ? 0n : priceAttos(`${field}.flatFee`, flatFee),
    };
  });
}

function positiveQuantity(field: string, value: Quantity): bigint {
  const scaled = scaledQuantity(field, value);
  if (scaled === 0n) throw invalidField(field, 'must be greater than zero');
  return scaled;
}

/** The settings each kind takes in its config; anything else is refused rather than ignored. */
const CONFIG_KEYS: Record<PricingRule['kind'], readonly string[]> = {
  FLAT: ['unitPrice', 'perUnits', 'minimumCharge'],
  MARKUP: ['percent', 'feePerRequest', 'minimumCharge'],
  GRADUATED: ['tiers', 'minimumCharge'],
  // minimumCharge is listed so that it gets its own message (see periodPricer).
  VOLUME: ['tiers', 'minimumCharge'],
  PACKAGE: ['packageSize', 'packagePrice', 'minimumCharge'],
};
const TIER_KEYS: readonly string[] = ['upTo', 'unitPrice', 'flatFee'];
/** What a PricingRule holds besides its config (see toPricingRule). */
const TARGET_KEYS: readonly string[] = ['kind', 'id', 'meter', 'provider', 'model'];
const MAX_TARGET_LENGTH = 255;
/** 1,000,000% (10,001× the cost): above it a percent is a typo, not a price. */
const MAX_PERCENT = 1_000_000;
const MAX_PERCENT_ATTOS = BigInt(MAX_PERCENT) * 10n ** 18n;

/**
 * Refuses a config key the kind does not take: a misspelt one ("perUnit") would be stored and
 * ignored, and the rule would price something else than was meant.
 */
function refuseUnknownKeys(kind: PricingRule['kind'], settings: Record<string, unknown>, skip: readonly string[] = []) {
  const allowed = CONFIG_KEYS[kind];
  for (const key of Object.keys(settings)) {
    if (skip.includes(key) || allowed.includes(key)) continue;
    throw invalidField(`rule.${key}`, `is not a setting of a ${kind} rule, which takes ${allowed.join(', ')}`);
  }
}

/**
 * A rule's config as stored (before toPricingRule merges it with the target, which would hide a
 * config key named like a target field): a JSON object of the kind's settings only.
 */
export function validateRuleConfig(kind: PricingRule['kind'], config: unknown): Record<string, unknown> {
  if (!isJsonObject(config)) throw invalidField('config', 'must be a JSON object');
  if (!Object.hasOwn(CONFIG_KEYS, kind)) throw invalidField('rule.kind', 'must be FLAT, MARKUP, GRADUATED, VOLUME or PACKAGE');
  refuseUnknownKeys(kind, config);
  return config;
}

/** provider/model: optional text; blank is refused, not taken as "any" (null is that). */
function checkTargetText(field: string, value: unknown) {
  if (value == null) return;
  if (typeof value !== 'string') throw invalidField(field, 'must be a string');
  if (value.trim() === '') throw invalidField(field, 'must not be blank: omit it (null) to match every value');
  if (value.length > MAX_TARGET_LENGTH) throw invalidField(field, `must be at most ${MAX_TARGET_LENGTH} characters`);
  requireStorableText(field, value);
}

/** A percent is exact text; a JSON number with a fraction may already have lost digits on the way. */
function checkPercent(percent: unknown) {
  if (typeof percent === 'number') {
    // Whole numbers are exact, and YAML configs write them bare (`percent: 30`). One too large for
    // a double to hold exactly is too large a percent: told so, not to send as text what is refused as text too.
    if (Number.isInteger(percent) && percent > MAX_PERCENT) throw invalidField('rule.percent', `must be at most ${MAX_PERCENT} (percent)`);
    if (!Number.isSafeInteger(percent)) throw invalidField('rule.percent', `must be a decimal string such as "12.5", not a JSON number: ${percent} may already have lost digits`);
  } else if (typeof percent !== 'string') {
    throw invalidField('rule.percent', 'must be a decimal string such as "25" or "12.5"');
  }
  if (parseDecimalAttos('rule.percent', String(percent)) > MAX_PERCENT_ATTOS) throw invalidField('rule.percent', `must be at most ${MAX_PERCENT} (percent)`);
}

/** Throws a VALIDATION error naming the bad field; returns the rule for chaining. */
export function validateRule<R extends PricingRule>(rule: R): R {
  if (!isJsonObject(rule)) throw invalidField('rule', 'must be an object');
  if (Object.hasOwn(CONFIG_KEYS, rule.kind)) {
    refuseUnknownKeys(rule.kind, rule as Record<string, unknown>, TARGET_KEYS);
    if (rule.kind === 'GRADUATED' || rule.kind === 'VOLUME') {
      // Only the tiers' shape here: parseTiers (also run on stored rules) checks their values.
      for (const [index, tier] of (Array.isArray(rule.tiers) ? rule.tiers : []).entries()) {
        if (!isJsonObject(tier)) continue;
        const unknown = Object.keys(tier).find((key) => !TIER_KEYS.includes(key));
        if (unknown !== undefined) throw invalidField(`rule.tiers.${index}.${unknown}`, `is not a setting of a tier, which takes ${TIER_KEYS.join(', ')}`);
      }
    }
  }
  periodPricer(rule);
  if (rule.kind === 'MARKUP') {
    checkPercent(rule.percent);
    markupParts(rule);
  }
  if (rule.minimumCharge != null) priceAttos('rule.minimumCharge', rule.minimumCharge);
  checkTargetText('rule.provider', rule.provider);
  checkTargetText('rule.model', rule.model);
  // A rule of the wrong shape would be accepted and then never apply: quantity rules price a
  // meter's quantity, so they need one; MARKUP prices an event's provider cost, which belongs to
  // no meter (ingest never offers it one to match).
  if (rule.kind === 'MARKUP') {
    if (rule.meter != null) throw invalidField('rule.meterKey', 'must not be set on a MARKUP rule: a markup prices the provider cost of each event, not a meter; target a provider or a model instead');
  } else if (rule.meter == null || String(rule.meter).trim() === '') {
    throw invalidField('rule.meterKey', `is required for a ${rule.kind} rule: it prices the quantity of that meter`);
  } else {
    // Matched exactly against meter keys: a key no meter can have would match nothing.
    parseMeterKey('rule.meterKey', rule.meter);
  }
  return rule;
}

type Pricer = (scaledTotal: bigint) => bigint;

/** The period price as a function of the scaled total, for the quantity kinds; null for MARKUP. */
function periodPricer(rule: PricingRule): Pricer | null {
  switch (rule.kind) {
    case 'FLAT': {
      const unit = priceAttos('rule.unitPrice', rule.unitPrice);
      const per = positiveQuantity('rule.perUnits', rule.perUnits ?? 1);
      return (total) => roundHalfUp(unit * total, per);
    }
    case 'GRADUATED': {
      const tiers = parseTiers(rule.tiers);
      return (total) => {
        let numerator = 0n;
        let lower = 0n;
        for (const tier of tiers) {
          if (total <= lower) break;
          const upper = tier.upTo === null || total < tier.upTo ? total : tier.upTo;
          numerator += tier.unitPrice * (upper - lower) + tier.flatFee * QUANTITY_SCALE;
          if (tier.upTo === null) break;
          lower = tier.upTo;
        }
        return roundHalfUp(numerator, QUANTITY_SCALE);
      };
    }
    case 'VOLUME': {
      const tiers = parseTiers(rule.tiers);
      if (rule.minimumCharge != null) {
        // A floor would swallow the credit an event gets when the period drops into a cheaper tier,
        // and the period's charges would no longer add up to the volume price.
        throw invalidField('rule.minimumCharge', 'cannot be used with VOLUME tiers');
      }
      return (total) => {
        if (total === 0n) return 0n;
        const tier = volumeTier(tiers, total);
        return roundHalfUp(tier.unitPrice * total, QUANTITY_SCALE) + tier.flatFee;
      };
    }
    case 'PACKAGE': {
      const size = positiveQuantity('rule.packageSize', rule.packageSize);
      const price = priceAttos('rule.packagePrice', rule.packagePrice);
      return (total) => ceilDiv(total, size) * price;
    }
    case 'MARKUP':
      return null;
    default:
      throw invalidField('rule.kind', 'must be FLAT, MARKUP, GRADUATED, VOLUME or PACKAGE');
  }
}

function volumeTier(tiers: ParsedTier[], total: bigint): ParsedTier {
  return tiers.find((tier) => tier.upTo === null || total <= tier.upTo) ?? tiers[tiers.length - 1]!;
}

/**
 * The price of a whole period's quantity under a quantity rule, in attos. Rounded once to the
 * nearest atto (halves up); exact whenever the quantity is whole.
 */
export function periodChargeAttos(rule: PricingRule, totalQuantity: Quantity): bigint {
  const pricer = periodPricer(rule);
  if (!pricer) throw invalidField('rule.kind', 'MARKUP has no period price: it follows each event\'s cost');
  return pricer(scaledQuantity('totalQuantity', totalQuantity));
}

const PERCENT_SCALE = 100n * 10n ** 18n;

interface ParsedRule {
  pricer: Pricer | null;
  markup: { percent: bigint; fee: bigint } | null;
  minimum: bigint | null;
}

/**
 * A rule's prices parsed once per rule object: applyRule runs for every event a rule prices,
 * and rule objects are not changed once built (a new version of a rule is a new object).
 */
const parsedRules = new WeakMap<PricingRule, ParsedRule>();
function parsedOnce(rule: PricingRule): ParsedRule {
  let parsed = parsedRules.get(rule);
  if (!parsed) {
    parsed = {
      pricer: periodPricer(rule),
      markup: rule.kind === 'MARKUP' ? markupParts(rule) : null,
      minimum: rule.minimumCharge != null ? priceAttos('rule.minimumCharge', rule.minimumCharge) : null,
    };
    parsedRules.set(rule, parsed);
  }
  return parsed;
}

function markupParts(rule: Extract<PricingRule, { kind: 'MARKUP' }>) {
  const percent = parseDecimalAttos('rule.percent', rule.percent);
  if (percent < 0n) throw invalidField('rule.percent', 'must not be negative');
  const fee = rule.feePerRequest == null ? 0n : priceAttos('rule.feePerRequest', rule.feePerRequest);
  return { percent, fee };
}

/**
 * The charge for one event and the margin over its cost.
 *
 * MARKUP: cost × (100 + percent) / 100, rounded to the nearest atto (halves up) only when that
 * division is not exact, plus feePerRequest × requests.
 * VOLUME: the whole period is re-priced at the rate of the tier its total falls in, so an event
 * that moves the total into a cheaper tier gets a NEGATIVE charge: a credit for what earlier events
 * over-collected. That keeps what the customer has paid equal to the volume price of what they
 * used at every point of the period; clamping it to zero would overcharge them for the rest of it.
 * With priorChargeAttos (another version priced part of the period), the charge is the volume
 * price of the period after the event less what was charged: negative only as far as this version
 * prices the period below what the customer was charged, so never more than was charged.
 * Every other kind is never negative.
 * minimumCharge raises a charge to the floor and never lowers one; a MARKUP of an unknown cost
 * (costUnknown) charges only its fee per request, with no floor.
 */
export function applyRule(rule: PricingRule, input: ApplyInput): ApplyResult {
  const cost = input.costAttos ?? 0n;
  if (typeof cost !== 'bigint') throw invalidField('costAttos', 'must be a bigint of atto-units');
  if (cost < 0n) throw invalidField('costAttos', 'must not be negative');
  const quantity = scaledQuantity('quantity', input.quantity);
  const prior = scaledQuantity('priorQuantity', input.priorQuantity ?? 0n);

  let charge: bigint;
  if (rule.kind === 'MARKUP') {
    const { percent, fee } = parsedOnce(rule).markup!;
    const requests = count('requests', input.requests ?? 1);
    if (input.costUnknown) return { chargeAttos: fee * requests, marginAttos: fee * requests - cost };
    charge = roundHalfUp(cost * (PERCENT_SCALE + percent), PERCENT_SCALE) + fee * requests;
  } else {
    const pricer = parsedOnce(rule).pricer!;
    if (rule.kind === 'VOLUME' && input.priorChargeAttos !== undefined) {
      if (typeof input.priorChargeAttos !== 'bigint') throw invalidField('priorChargeAttos', 'must be a bigint of atto-units');
      charge = pricer(prior + quantity) - input.priorChargeAttos;
    } else {
      charge = pricer(prior + quantity) - pricer(prior);
    }
  }
  const { minimum } = parsedOnce(rule);
  if (minimum !== null && charge < minimum) charge = minimum;
  return { chargeAttos: charge, marginAttos: charge - cost };
}

/**
 * The most one event that adds `quantity` to a quantity rule's period total can be charged, in
 * attos, whatever the total before it: what a quote, which knows no period total, reserves.
 * - FLAT: quantity × unitPrice / perUnits, rounded up (an increment's two roundings differ by
 *   less than one atto from the exact amount).
 * - GRADUATED: quantity × the dearest tier's unitPrice, rounded up, plus every tier's flatFee.
 * - VOLUME: the same at the dearest tier with the dearest flatFee, plus, when a tier is dearer
 *   than one below it, the most that re-pricing the period's earlier units can add: an event that
 *   takes the total from tier i into a dearer tier j re-prices at most upTo(i) earlier units at
 *   unitPrice(j) − unitPrice(i).
 * - PACKAGE: ceil(quantity / packageSize) packages. A partly used package has room left, which
 *   can only lower what the event takes, so the count from an empty period is the most.
 * minimumCharge raises the bound to itself. Exact for the version pricing the whole period; a
 * VOLUME event priced from what another version charged (priorChargeAttos) re-prices units this
 * bound does not know of.
 */
export function maxEventChargeAttos(rule: PricingRule, quantity: Quantity): bigint {
  const bound = boundOf(rule);
  if (!bound) throw invalidField('rule.kind', 'MARKUP has no bound in units: it follows each event\'s cost');
  const { minimum } = parsedOnce(rule);
  const most = bound(scaledQuantity('quantity', quantity));
  return minimum !== null && most < minimum ? minimum : most;
}

const bounds = new WeakMap<PricingRule, Pricer | null>();
function boundOf(rule: PricingRule): Pricer | null {
  let bound = bounds.get(rule);
  if (bound === undefined) bounds.set(rule, (bound = eventBound(rule)));
  return bound;
}

function eventBound(rule: PricingRule): Pricer | null {
  switch (rule.kind) {
    case 'FLAT': {
      const unit = priceAttos('rule.unitPrice', rule.unitPrice);
      const per = positiveQuantity('rule.perUnits', rule.perUnits ?? 1);
      return (quantity) => ceilDiv(unit * quantity, per);
    }
    case 'GRADUATED': {
      const tiers = parseTiers(rule.tiers);
      const dearest = tiers.reduce((most, tier) => (tier.unitPrice > most ? tier.unitPrice : most), 0n);
      const fees = tiers.reduce((sum, tier) => sum + tier.flatFee, 0n);
      return (quantity) => ceilDiv(dearest * quantity, QUANTITY_SCALE) + fees;
    }
    case 'VOLUME': {
      const tiers = parseTiers(rule.tiers);
      const dearest = tiers.reduce((most, tier) => (tier.unitPrice > most ? tier.unitPrice : most), 0n);
      const dearestFee = tiers.reduce((most, tier) => (tier.flatFee > most ? tier.flatFee : most), 0n);
      // Most a move from tier i into a dearer later tier re-prices: upTo(i) units at the difference.
      let repricing = 0n;
      let dearerAbove = 0n;
      for (let i = tiers.length - 1; i >= 0; i--) {
        const tier = tiers[i]!;
        if (tier.upTo !== null && dearerAbove > tier.unitPrice) {
          const most = (dearerAbove - tier.unitPrice) * tier.upTo;
          if (most > repricing) repricing = most;
        }
        if (tier.unitPrice > dearerAbove) dearerAbove = tier.unitPrice;
      }
      return (quantity) => ceilDiv(dearest * quantity + repricing, QUANTITY_SCALE) + dearestFee;
    }
    case 'PACKAGE': {
      const size = positiveQuantity('rule.packageSize', rule.packageSize);
      const price = priceAttos('rule.packagePrice', rule.packagePrice);
      return (quantity) => ceilDiv(quantity, size) * price;
    }
    case 'MARKUP':
      return null;
    default:
      throw invalidField('rule.kind', 'must be FLAT, MARKUP, GRADUATED, VOLUME or PACKAGE');
  }
}

export interface RuleEvent {
  meter?: string | null;
  provider?: string | null;
  model?: string | null;
  /**
   * eventModelNames(provider, model), when the caller already read them (once per event, not once
   * per rule compared); read from provider and model when absent.
   */
  modelNames?: ModelNames | null;
}

const same = (a: string, b: string) => a.trim().toLowerCase() === b.trim().toLowerCase();

/**
 * 0 = does not apply. Otherwise a model match outranks any provider/meter combination, a provider
 * match outranks a meter match. A rule's model matches as a price row's does (modelNameRank over
 * eventModelNames), so the same model is the same model to the row that costs an event and the
 * rule that prices it: case aside, a dated snapshot ("gpt-4o-2024-08-06") matches its undated
 * name, and a name prefixed with its provider's or reselling maker's id ("openai/gpt-4o" from
 * OpenAI, "google/gemini-2.0-flash-001" on Vertex AI) matches the name without it, each below the
 * closer match, so an exact name outranks a snapshot, which outranks a prefixed name. Any other
 * prefix ("meta-llama/…", OpenRouter's "openai/…") is part of the name, as it is to price rows.
 * With a rank of 1 to 4, ×4 keeps every model match above any provider/meter combination (at most 4).
 */
function specificity(rule: RuleTarget, event: RuleEvent): number {
  let score = 1;
  if (rule.meter != null) {
    if (event.meter == null || rule.meter !== event.meter) return 0;
    score += 1;
  }
  if (rule.provider != null) {
    if (event.provider == null || !same(rule.provider, event.provider)) return 0;
    score += 2;
  }
  if (rule.model != null) {
    if (event.model == null) return 0;
    const rank = modelNameRank(rule.model, event.modelNames ?? eventModelNames(event.provider ?? null, event.model));
    if (rank === 0) return 0;
    score += rank * 4;
  }
  return score;
}

/** Whether a rule's provider and model target (its meter aside) takes in events of this provider and model. */
export function ruleTargetsEvent(rule: { provider: string | null; model: string | null }, event: { provider: string | null; model: string | null }): boolean {
  return specificity({ provider: rule.provider, model: rule.model }, { provider: event.provider, model: event.model }) > 0;
}

/**
 * The most specific rule for an event: model > provider > meter default > a rule with no target.
 * Two rules matching equally is a configuration error, reported rather than guessed.
 */
export function selectRule<R extends RuleTarget & { id?: string }>(rules: readonly R[], given: RuleEvent): R | null {
  // The event's model names are read once here when the caller did not (see RuleEvent.modelNames).
  const event = given.modelNames != null || given.model == null ? given : { ...given, modelNames: eventModelNames(given.provider ?? null, given.model) };
  let best: R | null = null;
  let bestScore = 0;
  let tiedWith: R | null = null;
  for (const rule of rules) {
    const score = specificity(rule, event);
    if (score > bestScore) {
      best = rule;
      bestScore = score;
      tiedWith = null;
    } else if (score > 0 && score === bestScore) {
      tiedWith = rule;
    }
  }
  if (tiedWith && best) {
    const target = [best.meter, best.provider, best.model].filter((part) => part != null).join('/') || 'everything';
    throw new AppError('VALIDATION', `rules: two rules target ${target} equally; keep one`, { field: 'rules', ruleIds: [best.id ?? null, tiedWith.id ?? null] });
  }
  return best;
}
