import type { Meter, MeterAggregation } from '../../generated/prisma/client.ts';
import { AppError } from '../../shared/errors.ts';
import { formatAttosText } from '../../shared/money.ts';
import { meterQuantity } from '../meters/meters.service.ts';
import { costOf, eventModelNames, type ModelNames } from '../pricing/cost.ts';
import { QUANTITY_SCALE, ScaledQuantity, scaledQuantity } from '../pricing/decimal.ts';
import type { PriceWithRef } from '../pricing/prices.service.ts';
import { applyRule, maxEventChargeAttos, selectRule, type PricingRule, type Quantity, type RuleEvent } from '../pricing/rules.ts';
import { describeTarget, ruleTargetKey, rulesInForce, toPricingRule, tookEffect, type RuleRow } from '../pricing/rules.service.ts';
import type { NormalizedUsage } from './usage.types.ts';

/**
 * The money of one usage event, free of I/O: provider cost from the price in force, the
 * merchant's charge from its rules in force, and the margin between them.
 */
export interface ChargeLine {
  ruleId: string | null;
  rule: string;
  /** The plan the rule belongs to; absent for the default price book. */
  planId?: string;
  meter: string | null;
  quantity: string | null;
  chargeAttos: bigint;
}

/**
 * A charge line as an event keeps it (metadata.pricing): [ruleId, chargeAttos] for a markup,
 * [ruleId, chargeAttos, quantity] for a meter. The rule version's row holds its name, plan and
 * meter, so the line does not repeat them. Written as objects that did, the lines were most of
 * an event's metadata, the costliest part of its row to store: bench/ingest ran about 14% faster
 * with no lines at all.
 */
export type StoredChargeLine = [ruleId: string | null, chargeAttos: string] | [ruleId: string | null, chargeAttos: string, quantity: string];

export function storedChargeLines(lines: readonly ChargeLine[]): StoredChargeLine[] {
  return lines.map((line) => (line.quantity === null ? [line.ruleId, line.chargeAttos.toString()] : [line.ruleId, line.chargeAttos.toString(), line.quantity]));
}

/** A stored line's parts; events stored before the compact form hold objects instead. */
export function readChargeLine(line: unknown): { ruleId: string | null; chargeAttos: string; quantity: string | null } {
  if (Array.isArray(line)) {
    const [ruleId, chargeAttos, quantity] = line as StoredChargeLine;
    return { ruleId, chargeAttos, quantity: quantity ?? null };
  }
  const old = line as { ruleId: string | null; chargeAttos: string; quantity?: string | null };
  return { ruleId: old.ruleId, chargeAttos: old.chargeAttos, quantity: old.quantity ?? null };
}

export interface PricedUsage {
  costAttos: bigint;
  /** Why the cost is unknown (no price row, or a unit the row does not price); null when known. */
  costProblem: string | null;
  chargeAttos: bigint;
  marginAttos: bigint;
  lines: ChargeLine[];
  /** No rule applied, so the provider cost was passed through at no margin. */
  passThrough: boolean;
}

/** Non-zero quantities of the merchant's meters in this record. */
export function meterQuantities(usage: NormalizedUsage, meters: readonly Meter[], stated: Record<string, string | number>): Map<string, Quantity> {
  const quantities = new Map<string, Quantity>();
  for (const meter of meters) {
    const quantity = meterQuantity(meter.source, usage, stated, meter.key);
    if (quantity !== 0n && quantity !== '0' && !(typeof quantity === 'string' && /^0*(\.0*)?$/.test(quantity))) quantities.set(meter.key, quantity);
  }
  return quantities;
}

/**
 * How a meter's events add up to the customer's total for the billing period — the quantity
 * tiered prices are computed over (Meter.aggregation). A total is kept per rule (see
 * ruleScopeOf): it holds only the events that rule priced. Each event is priced on what it adds:
 * price(prior + quantity) − price(prior), so a period's charges always sum to price(total).
 * - SUM: the total is the sum of the events' quantities (tokens, seconds, images, …).
 * - COUNT: the number of events that carry the meter (a non-zero quantity); each counts 1,
 *   whatever its quantity, so N events are priced like N units.
 * - MAX: the highest quantity seen in the period (peak seats, storage, concurrency). An event
 *   adds only how far it raises the maximum, nothing when it does not (then its charge for the
 *   meter is zero, minimumCharge included); the period's charges sum to price(max). The maximum it
 *   starts from is the customer's for the meter, whichever rule's total holds it: after a mid-period
 *   plan change the new plan charges only what rises above the peak already charged under the old
 *   one. SUM and COUNT totals stay the rule's own: each unit is charged once, by the book in force
 *   when it was used, so a plan's tiers count from the units that plan priced.
 * Changing a meter's aggregation mid-period carries on from the total stored so far.
 */
export interface PeriodStep {
  /** The period total before this event. */
  prior: ScaledQuantity;
  /** What this event adds to it: the quantity priced. Zero when it adds nothing. */
  quantity: ScaledQuantity;
  /** The period total after this event. */
  after: ScaledQuantity;
}

/** A meter's part in pricing one event: the quantity priced, over the period total before it. */
export interface MeterStep {
  quantity: Quantity;
  prior: Quantity;
  /**
   * The rule whose period total `prior` is (see meterRules), when the caller already chose it;
   * otherwise the meter's rule is chosen here.
   */
  rule?: RuleRow;
  /**
   * What that rule (its book and name, every version) charged in the period so far, for a VOLUME
   * rule that another version priced part of the period (see volumeCreditNeed): its line is then
   * the period's price at this version less this (ApplyInput.priorChargeAttos).
   */
  charged?: bigint;
}

/** Which rule's count a meter's units go to: its book ("" for the default book, else the plan's id) and its name. */
export interface RuleScope {
  priceBook: string;
  ruleName: string;
}

/**
 * A rule's period total is kept per book and name: every version of a rule continues one count
 * (a price changed mid-month keeps counting), and no other rule's units are in it.
 */
export function ruleScopeOf(row: Pick<RuleRow, 'planId' | 'name'>): RuleScope {
  return { priceBook: row.planId ?? '', ruleName: row.name };
}

/** The start of the period after the one starting at `periodStart` (a calendar month, UTC). */
export function periodEndOf(periodStart: Date): Date {
  const end = new Date(periodStart.getTime());
  end.setUTCMonth(end.getUTCMonth() + 1);
  return end;
}

/**
 * What pricing an event's step of a VOLUME rule needs from its period's credit (see
 * usage.credits.ts), told before the batch is priced so that every period needed is read at once:
 * - 'charged': another version of the rule (its book and name: another price, or another kind)
 *   was in force at some time of the period, so what the rule charged in it need not be this
 *   version's price of the total before the event: the line is priced from what was charged
 *   (MeterStep.charged). Not for a MAX meter's peak that another rule also raised (`shared`, e.g.
 *   under the plan before a change): what this rule charged then covers only part of the peak, and
 *   re-pricing the whole peak from it would charge the other rule's units again; the event is
 *   priced on what it raises the peak by, at this version;
 * - 'credit': the step takes the total into a cheaper tier, so its line is negative and is capped
 *   by the period's credit;
 * - null: neither, and for every step of the other kinds (never negative, and priced on the units
 *   they add). With one version all period, what the rule charged is exactly its price of the total
 *   before the event (the increments telescope, and no cap lowers a give-back: the volume price is
 *   never below zero), so nothing is read.
 * `versions`: every version of the step's rule's book (RuleBook.defaults, or its plan's).
 */
export function volumeCreditNeed(step: { rule: RuleRow; prior: Quantity; quantity: Quantity; shared?: boolean }, versions: readonly RuleRow[], periodStart: Date): 'charged' | 'credit' | null {
  const { rule } = step;
  if (rule.type !== 'VOLUME' || scaledQuantity('quantity', step.quantity) === 0n) return null;
  if (!step.shared && otherVersionInPeriod(versions, rule, periodStart)) return 'charged';
  return applyRule(pricingRuleOf(rule), { quantity: step.quantity, priorQuantity: step.prior }).chargeAttos < 0n ? 'credit' : null;
}

/** Per version and period start: whether another version of its rule was in force in that period. */
const otherVersions = new WeakMap<RuleRow, Map<number, boolean>>();
function otherVersionInPeriod(versions: readonly RuleRow[], row: RuleRow, periodStart: Date): boolean {
  let known = otherVersions.get(row);
  if (!known) otherVersions.set(row, (known = new Map()));
  const answer = known.get(periodStart.getTime());
  if (answer !== undefined) return answer;
  const start = periodStart.getTime();
  const end = periodEndOf(periodStart).getTime();
  // A version is in force from its effectiveFrom until the next version's, or until it was archived.
  const timeline = versions.filter((other) => other.name === row.name && other.planId === row.planId && tookEffect(other))
    .sort((a, b) => a.effectiveFrom.getTime() - b.effectiveFrom.getTime());
  const found = timeline.some((other, index) => {
    if (other.id === row.id) return false;
    const until = Math.min(timeline[index + 1]?.effectiveFrom.getTime() ?? Infinity, other.archivedAt?.getTime() ?? Infinity);
    return other.effectiveFrom.getTime() < end && until > start && until > other.effectiveFrom.getTime();
  });
  known.set(start, found);
  return found;
}

/**
 * The quantity rule that prices each of an event's meters, as priceUsage would choose it; meters
 * no rule prices are left out (their units count in no period total). Asked before the event's
 * period totals move, since each rule counts only the units it priced.
 */
export function meterRules(params: { usage: NormalizedUsage; occurredAt: Date; rules: readonly RuleRow[]; planRules?: readonly RuleRow[] | null; meters: Iterable<string> }): Map<string, RuleRow> {
  const books = booksAt(params);
  const provider = params.usage.provider || null;
  const event: RuleEvent = { provider, model: params.usage.model, meter: null, modelNames: modelNamesOf(provider, params.usage.model) };
  const matched = new Map<string, RuleRow>();
  for (const meterKey of params.meters) {
    event.meter = meterKey;
    const match = firstMatch(books, meterKey, event);
    if (match) matched.set(meterKey, match.row);
  }
  return matched;
}

/** What one event contributes to the batch's aggregate for a meter (summed, or maxed for MAX), scaled by QUANTITY_SCALE. */
export function periodContribution(aggregation: MeterAggregation, quantity: Quantity): bigint {
  return aggregation === 'COUNT' ? QUANTITY_SCALE : scaledQuantity('quantity', quantity);
}

/** Advances a period total by one event's quantity of a meter. */
export function stepPeriodTotal(aggregation: MeterAggregation, before: Quantity, quantity: Quantity): PeriodStep {
  const prior = scaledQuantity('before', before);
  const seen = scaledQuantity('quantity', quantity);
  const added = aggregation === 'COUNT' ? QUANTITY_SCALE : aggregation === 'MAX' ? (seen > prior ? seen - prior : 0n) : seen;
  return { prior: new ScaledQuantity(prior), quantity: new ScaledQuantity(added), after: new ScaledQuantity(prior + added) };
}

export interface ProviderCost {
  costAttos: bigint;
  /** Why the cost is unknown; null when known. */
  problem: string | null;
  /** What costed the event: a price row's ref, REPORTED_COST_REF, or null. */
  ref: string | null;
}

/** The ref an event records when the provider's own reported cost (not a price row) costed it. */
export const REPORTED_COST_REF = 'reported';

/**
 * What the call cost the merchant. When the provider reports what it billed (OpenRouter's
 * usage.cost, Perplexity's usage.cost.total_cost), that figure is the cost: it is what was
 * actually charged, for models no price table lists too. Otherwise the price in force costs the
 * usage; `priceOf` is asked only then. A price table that cannot decide (two rows tied) is a
 * problem of this event, never of its batch.
 */
export function providerCost(usage: NormalizedUsage, priceOf: () => PriceWithRef | null, currency = PROVIDER_COST_CURRENCY): ProviderCost {
  if (!usage.billable) return { costAttos: 0n, problem: null, ref: null };
  // Provider prices and reported costs are dollars: counted as euros they would be off by the
  // exchange rate. Rules on meters still price such an event, in its own currency.
  if (currency !== PROVIDER_COST_CURRENCY) {
    const costed = usage.providerReportedCostUsd != null || hasPriceableUnits(usage) || (usage.requests > 0 && pricesRequests(priceOf));
    return { costAttos: 0n, problem: costed ? `provider costs are in USD and this event is in ${currency}: with no exchange rate its cost is unknown` : null, ref: null };
  }
  const reported = reportedCost(usage);
  if (reported !== null) return reported;
  let price: PriceWithRef | null = null;
  try {
    price = priceOf();
    if (!price) return { costAttos: 0n, problem: missingPriceProblem(usage), ref: null };
    const costAttos = costOf(usage, price);
    // The usage happened, so the event is recorded, at an unknown cost rather than one it cannot hold.
    if (costAttos >= MAX_EVENT_ATTOS) return { costAttos: 0n, problem: tooLargeCostProblem(costAttos), ref: price.ref };
    return { costAttos, problem: null, ref: price.ref };
  } catch (error) {
    return { costAttos: 0n, problem: (error as Error).message, ref: price?.ref ?? null };
  }
}

/**
 * An event's amounts are whole attos of at most 38 digits (usage_events' NUMERIC(38,0) columns):
 * a cost from this up (over 10^20 USD, a price row or usage far beyond any real call) is not stored
 * as a figure, which the database would refuse, failing the event.
 */
export const MAX_EVENT_ATTOS = 10n ** 38n;

function tooLargeCostProblem(costAttos: bigint): string {
  return `the price in force costs this usage ${formatAttosText(costAttos.toString())} USD, more than an event stores (under 10^20 USD), so the cost is unknown`;
}

/** The currency of provider prices and of the costs providers report. */
export const PROVIDER_COST_CURRENCY = 'USD';

/** Whether a price row in force charges per request (a lookup that fails counts as one: its cost is not known either). */
function pricesRequests(priceOf: () => PriceWithRef | null): boolean {
  try {
    return priceOf()?.perRequest != null;
  } catch {
    return true;
  }
}

/** Whether the usage holds anything a provider price would cost (not just requests or custom meters). */
function hasPriceableUnits(usage: NormalizedUsage): boolean {
  return usage.inputTokens + usage.outputTokens + usage.images + usage.characters > 0 || (usage.audioSeconds !== null && Number(usage.audioSeconds) > 0);
}

/** Why no price row costs the usage; null for a record with nothing a price would cost (custom meters, requests). */
function missingPriceProblem(usage: NormalizedUsage): string | null {
  if (usage.provider) return `no provider price for ${usage.provider}/${usage.model ?? '?'}`;
  return hasPriceableUnits(usage) ? 'no provider given, so no provider price can cost its tokens, images, characters or audio' : null;
}

/**
 * The cost of a usage record that carries the provider's reported cost, or null when it carries
 * none (the price table costs it then). The normalizer keeps the JSON number's own digits as a
 * decimal string; OpenRouter and Perplexity write the cost as a float, whose shortest digits may
 * run past the atto ("0.00017250000000000002"): it is rounded to the nearest atto (see
 * roundedAttos). With OpenRouter BYOK (bring your own key), `cost` is only OpenRouter's fee: the
 * upstream provider billed the merchant's key its upstream_inference_cost on top.
 *
 * A reported figure that cannot be read is a problem of the event, and its cost is unknown: the
 * price table is not asked, since the provider said what it billed, and a table price (if any)
 * may not be it.
 */
function reportedCost(usage: NormalizedUsage): ProviderCost | null {
  if (usage.providerReportedCostUsd == null) return null;
  const cost = roundedAttos(usage.providerReportedCostUsd);
  if (cost === null) return unreadableCost('cost', usage.providerReportedCostUsd);
  const upstream = usage.details.is_byok === 'true' ? usage.details.upstream_inference_cost_usd : undefined;
  if (upstream === undefined) return { costAttos: cost, problem: null, ref: REPORTED_COST_REF };
  const upstreamAttos = roundedAttos(String(upstream));
  if (upstreamAttos === null) return unreadableCost('upstream inference cost (BYOK)', String(upstream));
  return { costAttos: cost + upstreamAttos, problem: null, ref: REPORTED_COST_REF };
}

function unreadableCost(what: string, text: string): ProviderCost {
  return { costAttos: 0n, problem: `the provider reported a ${what} of ${JSON.stringify(text)} USD, which is not a non-negative decimal amount, so the cost is unknown`, ref: null };
}

/** A non-negative plain decimal of up to 12 whole digits, with any number of decimals. */
const REPORTED_DECIMAL = /^(\d{1,12})(?:\.(\d+))?$/;
const ATTOS_PER_USD = 10n ** 18n;

/**
 * A reported amount in attos, rounded to the nearest atto (halves up) by its digits alone, never
 * through a float; null when it is not a non-negative plain decimal.
 */
function roundedAttos(text: string): bigint | null {
  // A float serializer's negative zero ("-0.0", Python's json.dumps(-0.0)) is zero.
  const match = REPORTED_DECIMAL.exec(text.trim().replace(/^-(?=0*(\.0*)?$)/, ''));
  if (!match) return null;
  const [, whole = '0', fraction = ''] = match;
  const attos = BigInt(whole) * ATTOS_PER_USD + BigInt(fraction.slice(0, 18).padEnd(18, '0'));
  // The digits past the atto are at least half of one when the first of them is 5 or more.
  return fraction.length > 18 && fraction.charCodeAt(18) >= 53 /* 5 */ ? attos + 1n : attos;
}

/**
 * Charges one event: a MARKUP rule (most specific for its provider/model) prices the cost;
 * each meter the event moves is priced by its most specific quantity rule on what the event
 * adds to that rule's period total for the customer (`steps`, see PeriodStep and meterRules),
 * from the total before it. With no rule at all, cost passes through.
 *
 * A markup prices a provider cost, which is in USD (PROVIDER_COST_CURRENCY): an event in another
 * currency has none, so no markup prices it (rules carry no currency: its fee would be charged as
 * that many euros), and only the rules on meters do. An event whose cost is unknown (costProblem)
 * is charged only the markup's fee per request.
 *
 * `atMost` (a quote, which knows no period total): each meter is priced at the most its rule can
 * charge an event of that quantity whatever the total before it (see maxEventChargeAttos).
 *
 * When the customer was on a plan at the event's time (`planRules`: every version of that
 * plan's rules), the plan's rules in force win for what they cover: the markup when one of them
 * matches the event, and each meter one of them matches. The default book (`rules`) prices
 * everything else, so a plan only needs the rules in which it differs.
 */
export function priceUsage(params: {
  usage: NormalizedUsage;
  occurredAt: Date;
  rules: readonly RuleRow[];
  planRules?: readonly RuleRow[] | null;
  /** What the event adds to each meter it moves, and the period total before it (see PeriodStep). */
  steps: ReadonlyMap<string, MeterStep>;
  costAttos: bigint;
  costProblem: string | null;
  /** The event's currency. */
  currency: string;
  atMost?: boolean;
}): PricedUsage {
  const { usage, steps, costAttos } = params;
  const books = booksAt(params);
  const provider = usage.provider || null;
  const lines: ChargeLine[] = [];
  // One event to match every part by (its meter set per part), its model's names read once.
  const event: RuleEvent = { provider, model: usage.model, meter: null, modelNames: modelNamesOf(provider, usage.model) };

  const markup = params.currency === PROVIDER_COST_CURRENCY ? firstMatch(books, null, event) : null;
  if (markup) {
    const { chargeAttos } = applyRule(markup.rule, { quantity: 0n, costAttos, requests: usage.requests, costUnknown: params.costProblem !== null });
    lines.push(lineOf(markup.row, null, null, chargeAttos));
  }
  for (const [meterKey, { quantity, prior, rule, charged }] of steps) {
    event.meter = meterKey;
    const match = rule ? { row: rule, rule: pricingRuleOf(rule) } : firstMatch(books, meterKey, event);
    if (!match) continue;
    // A MAX meter the event did not raise is still priced by its rule (the cost does not pass
    // through), at nothing: no minimumCharge for an event that adds nothing.
    const { chargeAttos } = scaledQuantity('quantity', quantity) === 0n
      ? { chargeAttos: 0n }
      : params.atMost
        ? { chargeAttos: maxEventChargeAttos(match.rule, quantity) }
        : applyRule(match.rule, { quantity, priorQuantity: prior, priorChargeAttos: charged, costAttos: 0n, requests: usage.requests });
    lines.push(lineOf(match.row, meterKey, String(quantity), chargeAttos));
  }
  const passThrough = lines.length === 0;
  const chargeAttos = passThrough ? costAttos : lines.reduce((sum, line) => sum + line.chargeAttos, 0n);
  return { costAttos, costProblem: params.costProblem, chargeAttos, marginAttos: chargeAttos - costAttos, lines, passThrough };
}

/** The price books in force at the event's time, plan first: the first book with a matching rule prices the part. */
function booksAt(params: { occurredAt: Date; rules: readonly RuleRow[]; planRules?: readonly RuleRow[] | null }): RuleRow[][] {
  return params.planRules?.length
    ? [inForceAt(params.planRules, params.occurredAt), inForceAt(params.rules, params.occurredAt)]
    : [inForceAt(params.rules, params.occurredAt)];
}

/**
 * Why priceUsage cannot price this event: two rules in force match one of its parts (the provider
 * cost, or a meter it moves) equally, so neither can be chosen. Rules are refused such a tie when
 * saved, but rules saved before that check may have one. Checked before the event counts anywhere,
 * so the event alone fails, unrecorded, and can be sent again once one of the rules is changed.
 * Free for books without a tie, which is all of them but old data.
 */
export function ruleTie(params: { usage: NormalizedUsage; occurredAt: Date; rules: readonly RuleRow[]; planRules?: readonly RuleRow[] | null; meters: Iterable<string> }): AppError | null {
  const books = booksAt(params);
  if (!books.some((book) => indexOf(book).tied)) return null;
  const provider = params.usage.provider || null;
  const event = { provider, model: params.usage.model, modelNames: modelNamesOf(provider, params.usage.model) };
  for (const meterKey of [null, ...params.meters]) {
    try {
      firstMatch(books, meterKey, { ...event, meter: meterKey });
    } catch (error) {
      if (!(error instanceof AppError) || error.details.field !== 'rules') throw error;
      const ids = (error.details.ruleIds ?? []) as (string | null)[];
      const rows = books.flat().filter((row) => ids.includes(row.id));
      const names = rows.map((row) => `"${row.name}"`).join(' and ');
      return new AppError(
        'CONFLICT',
        `Not recorded: price rules ${names || '(unknown)'} both price ${rows[0] ? describeTarget(rows[0]) : 'this event'} and match it equally, so neither can be chosen. ` +
          'Archive one of them or narrow its target, then send this event again with the same idempotency key.',
        { field: 'rules', rules: rows.map((row) => row.name), ruleIds: ids },
      );
    }
  }
  return null;
}

/**
 * rulesInForce, remembered for the last time asked of each list: the events of a batch share
 * the merchant's cached rule lists and mostly their millisecond, and this runs for each event.
 */
const inForceMemo = new WeakMap<readonly RuleRow[], { time: number; rows: RuleRow[] }>();
function inForceAt(rows: readonly RuleRow[], at: Date): RuleRow[] {
  const time = at.getTime();
  const known = inForceMemo.get(rows);
  if (known && known.time === time) return known.rows;
  const inForce = rulesInForce(rows, at);
  inForceMemo.set(rows, { time, rows: inForce });
  return inForce;
}

/**
 * eventModelNames of the provider and model asked last: the events of a batch mostly repeat them,
 * and rules match an event's model by these names (see RuleEvent.modelNames).
 */
let lastModelNames: { provider: string | null; model: string; names: ModelNames } | null = null;
function modelNamesOf(provider: string | null, model: string | null): ModelNames | null {
  if (model == null) return null;
  const last = lastModelNames;
  if (last !== null && last.model === model && last.provider === provider) return last.names;
  const names = eventModelNames(provider, model);
  lastModelNames = { provider, model, names };
  return names;
}

/** toPricingRule once per row: rows are immutable once loaded, and read for every event. */
const pricingRules = new WeakMap<RuleRow, PricingRule>();
function pricingRuleOf(row: RuleRow): PricingRule {
  let rule = pricingRules.get(row);
  if (!rule) pricingRules.set(row, (rule = toPricingRule(row)));
  return rule;
}

/** A book's rules in force that could price one part of an event, with their pricing form (same order). */
interface Candidates {
  rows: RuleRow[];
  rules: PricingRule[];
}

/** The rules in force of a book split by what they price: the cost (MARKUP) or a meter. */
interface BookIndex {
  markup: Candidates;
  byMeter: Map<string, Candidates>;
  /** Two of the rules have the same target (ruleTargetKey), so events they match cannot be priced. */
  tied: boolean;
}

/** Indexed once per list of rules in force (inForceAt hands the same list to a batch's events). */
const bookIndexes = new WeakMap<RuleRow[], BookIndex>();
function indexOf(book: RuleRow[]): BookIndex {
  let index = bookIndexes.get(book);
  if (index) return index;
  index = { markup: { rows: [], rules: [] }, byMeter: new Map(), tied: false };
  const targets = new Set<string>();
  for (const row of book) {
    const target = ruleTargetKey(row);
    if (targets.has(target)) index.tied = true;
    targets.add(target);
    let candidates: Candidates | undefined = index.markup;
    if (row.type !== 'MARKUP') {
      if (row.meterKey === null) continue;
      candidates = index.byMeter.get(row.meterKey);
      if (!candidates) index.byMeter.set(row.meterKey, (candidates = { rows: [], rules: [] }));
    }
    candidates.rows.push(row);
    candidates.rules.push(pricingRuleOf(row));
  }
  bookIndexes.set(book, index);
  return index;
}

/** The most specific rule of the first book that has one matching the event: its markup (meterKey null) or a meter's rule. */
function firstMatch(books: readonly RuleRow[][], meterKey: string | null, event: RuleEvent): { row: RuleRow; rule: PricingRule } | null {
  for (const book of books) {
    const index = indexOf(book);
    const candidates = meterKey === null ? index.markup : index.byMeter.get(meterKey);
    if (!candidates || candidates.rules.length === 0) continue;
    const rule = selectRule(candidates.rules, event);
    if (rule) return { row: candidates.rows[candidates.rules.indexOf(rule)]!, rule };
  }
  return null;
}

/** A plan's lines name the plan; the default book's do not (most events, kept small). */
function lineOf(row: RuleRow, meter: string | null, quantity: string | null, chargeAttos: bigint): ChargeLine {
  return row.planId
    ? { ruleId: row.id, rule: row.name, planId: row.planId, meter, quantity, chargeAttos }
    : { ruleId: row.id, rule: row.name, meter, quantity, chargeAttos };
}

/**
 * Incomplete streams under the ESTIMATE policy: the output streamed so far — visible text and
 * the tool-call and reasoning text counted beside it (details.streamed_other_chars) — at the
 * common rule of thumb of four characters a token (rounded up), or what the provider had
 * already reported when that is more (Gemini's cumulative counts). Reasoning is part of output,
 * so it is kept within it. Input is charged only as far as the provider reported it — and it is,
 * even when the stream was cut before any output: the provider read the prompt (Anthropic's
 * message_start) and bills it.
 */
export function estimateIncomplete(usage: NormalizedUsage): NormalizedUsage {
  const other = usage.details.streamed_other_chars;
  const chars = (usage.streamedText?.length ?? 0) + (typeof other === 'number' && Number.isSafeInteger(other) && other > 0 ? other : 0);
  const outputTokens = Math.max(usage.outputTokens, Math.ceil(chars / 4));
  const billable = outputTokens > 0 || usage.inputTokens > 0 || usage.cacheWriteTokens > 0;
  return { ...usage, outputTokens, reasoningTokens: Math.min(usage.reasoningTokens, outputTokens), billable, requests: 1 };
}
