import type { Meter, MeterAggregation } from '../../generated/prisma/client.ts';
import { meterQuantity } from '../meters/meters.service.ts';
import { costOf } from '../pricing/cost.ts';
import { QUANTITY_SCALE, ScaledQuantity, scaledQuantity } from '../pricing/decimal.ts';
import type { PriceWithRef } from '../pricing/prices.service.ts';
import { applyRule, selectRule, type PricingRule, type Quantity, type RuleEvent } from '../pricing/rules.ts';
import { rulesInForce, toPricingRule, type RuleRow } from '../pricing/rules.service.ts';
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
 * tiered prices are computed over (Meter.aggregation). Each event is priced on what it adds:
 * price(prior + quantity) − price(prior), so a period's charges always sum to price(total).
 * - SUM: the total is the sum of the events' quantities (tokens, seconds, images, …).
 * - COUNT: the number of events that carry the meter (a non-zero quantity); each counts 1,
 *   whatever its quantity, so N events are priced like N units.
 * - MAX: the highest quantity seen in the period (peak seats, storage, concurrency). An event
 *   adds only how far it raises the maximum, nothing when it does not (then its charge for the
 *   meter is zero, minimumCharge included); the period's charges sum to price(max).
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

export function providerCost(usage: NormalizedUsage, price: PriceWithRef | null): { costAttos: bigint; problem: string | null } {
  if (!usage.billable) return { costAttos: 0n, problem: null };
  if (!price) return { costAttos: 0n, problem: usage.provider ? `no provider price for ${usage.provider}/${usage.model ?? '?'}` : null };
  try {
    return { costAttos: costOf(usage, price), problem: null };
  } catch (error) {
    return { costAttos: 0n, problem: (error as Error).message };
  }
}

/**
 * Charges one event: a MARKUP rule (most specific for its provider/model) prices the cost;
 * each meter the event moves is priced by its most specific quantity rule on what the event
 * adds to the customer's period total (`quantities`, see PeriodStep), from the total before it
 * (`priorFor`). With no rule at all, cost passes through.
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
}): PricedUsage {
  const { usage, steps, costAttos } = params;
  // Plan first: the first book with a matching rule prices the part.
  const books = params.planRules?.length
    ? [inForceAt(params.planRules, params.occurredAt), inForceAt(params.rules, params.occurredAt)]
    : [inForceAt(params.rules, params.occurredAt)];
  const provider = usage.provider || null;
  const lines: ChargeLine[] = [];

  const markup = firstMatch(books, null, { provider, model: usage.model, meter: null });
  if (markup) {
    const { chargeAttos } = applyRule(markup.rule, { quantity: 0n, costAttos, requests: usage.requests });
    lines.push(lineOf(markup.row, null, null, chargeAttos));
  }
  for (const [meterKey, { quantity, prior }] of steps) {
    const match = firstMatch(books, meterKey, { provider, model: usage.model, meter: meterKey });
    if (!match) continue;
    // A MAX meter the event did not raise is still priced by its rule (the cost does not pass
    // through), at nothing: no minimumCharge for an event that adds nothing.
    const { chargeAttos } = scaledQuantity('quantity', quantity) === 0n
      ? { chargeAttos: 0n }
      : applyRule(match.rule, { quantity, priorQuantity: prior, costAttos: 0n, requests: usage.requests });
    lines.push(lineOf(match.row, meterKey, String(quantity), chargeAttos));
  }
  const passThrough = lines.length === 0;
  const chargeAttos = passThrough ? costAttos : lines.reduce((sum, line) => sum + line.chargeAttos, 0n);
  return { costAttos, costProblem: params.costProblem, chargeAttos, marginAttos: chargeAttos - costAttos, lines, passThrough };
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
}

/** Indexed once per list of rules in force (inForceAt hands the same list to a batch's events). */
const bookIndexes = new WeakMap<RuleRow[], BookIndex>();
function indexOf(book: RuleRow[]): BookIndex {
  let index = bookIndexes.get(book);
  if (index) return index;
  index = { markup: { rows: [], rules: [] }, byMeter: new Map() };
  for (const row of book) {
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
 * Incomplete streams under the ESTIMATE policy: the output streamed so far, at the common
 * rule of thumb of four characters a token (rounded up). Input is unknown and not charged.
 */
export function estimateIncomplete(usage: NormalizedUsage): NormalizedUsage {
  const text = usage.streamedText ?? '';
  return { ...usage, outputTokens: Math.ceil(text.length / 4), billable: text.length > 0, requests: 1 };
}
