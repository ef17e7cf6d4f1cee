import type { SqlExecutor } from '../../shared/db/database.ts';
import type { ChargeLine, PricedUsage } from './usage.pricing.ts';

/**
 * VOLUME tiers price a customer's whole period at one rate, so an event that takes the period
 * into a cheaper tier has a negative line: what the earlier units were charged at the dearer rate
 * comes back. It may only come back as far as it was paid:
 * - a negative line is limited to the net of the period's earlier lines of the same rule (its
 *   book and name, every version: see ruleScopeOf) in the event's currency: a VOLUME rule gives
 *   back only what it charged, never what another rule on its meter (a FLAT rule for another
 *   model, the default book's rule before a plan change) charged, nor what was charged in
 *   another currency;
 * - what it gives back settles the period's unpaid usage first (the shortfalls of events the
 *   customer could not cover), and only the rest is credited.
 * So a customer that ran out of credit is never paid back charges it did not pay.
 */
export interface PeriodCredit {
  /** Net of the period's meter lines by rule (see scopeKey), in the event's currency, as stored (capped). */
  net: Map<string, bigint>;
  /** The period's shortfalls not yet settled by a lower period price. */
  unpaid: bigint;
}

/** An event's part in its period's credit: its final lines, its shortfall, and the credit it withheld to settle earlier shortfalls. */
export interface PeriodPart {
  lines: readonly ChargeLine[];
  shortfallAttos: bigint;
  withheldAttos: bigint;
}

const min = (a: bigint, b: bigint) => (a < b ? a : b);

const periodKey = (customerId: string, currency: string, periodStart: Date) => `${customerId}|${currency}|${periodStart.getTime()}`;

/** The rule a meter line's charge counts for: its book ("" for the default book, else the plan's id) and name. */
const scopeKey = (priceBook: string, ruleName: string) => `${priceBook}|${ruleName}`;
const lineScope = (line: ChargeLine) => scopeKey(line.planId ?? '', line.rule);

/**
 * The event's pricing with its negative meter lines capped (see PeriodCredit), and what of them
 * went to the period's unpaid usage instead of to the customer (`withheldAttos`, which the event
 * is charged on top of its lines). `period` is not changed: fold the final event into it.
 */
export function capCredits(priced: PricedUsage, period: PeriodCredit): { priced: PricedUsage; withheldAttos: bigint } {
  const net = new Map(period.net);
  let unpaid = period.unpaid;
  let withheld = 0n;
  let raised = 0n;
  const lines = priced.lines.map((line) => {
    if (line.meter === null) return line;
    const scope = lineScope(line);
    const before = net.get(scope) ?? 0n;
    if (line.chargeAttos >= 0n) {
      net.set(scope, before + line.chargeAttos);
      return line;
    }
    const applied = min(-line.chargeAttos, before > 0n ? before : 0n);
    const settled = min(applied, unpaid);
    unpaid -= settled;
    withheld += settled;
    net.set(scope, before - applied);
    // The line rises from its charge to -applied.
    raised += -applied - line.chargeAttos;
    return applied === -line.chargeAttos ? line : { ...line, chargeAttos: -applied };
  });
  if (raised === 0n && withheld === 0n) return { priced, withheldAttos: 0n };
  const change = raised + withheld;
  return { priced: { ...priced, lines, chargeAttos: priced.chargeAttos + change, marginAttos: priced.marginAttos + change }, withheldAttos: withheld };
}

/** Adds a priced event to its period's credit. */
export function foldPeriodPart(period: PeriodCredit, part: PeriodPart): void {
  for (const line of part.lines) {
    if (line.meter === null) continue;
    const scope = lineScope(line);
    period.net.set(scope, (period.net.get(scope) ?? 0n) + line.chargeAttos);
  }
  period.unpaid += part.shortfallAttos - part.withheldAttos;
}

/**
 * Each period's credit for one batch, read from the stored events when an event first needs it
 * (a negative line: rare), with the batch's earlier events folded in, since they are not stored
 * yet. The batch holds its customers' wallet locks, so no other writer adds events meanwhile.
 */
export class BatchPeriodCredits {
  private readonly parts: { customerId: string; currency: string; periodStart: Date; part: PeriodPart }[] = [];
  private readonly periods = new Map<string, PeriodCredit>();

  constructor(
    private readonly tx: SqlExecutor,
    private readonly merchantId: string,
  ) {}

  async periodOf(customerId: string, currency: string, periodStart: Date): Promise<PeriodCredit> {
    const key = periodKey(customerId, currency, periodStart);
    let period = this.periods.get(key);
    if (!period) {
      period = await this.stored(customerId, currency, periodStart);
      for (const earlier of this.parts) {
        if (earlier.customerId === customerId && earlier.currency === currency && earlier.periodStart.getTime() === periodStart.getTime()) foldPeriodPart(period, earlier.part);
      }
      this.periods.set(key, period);
    }
    return period;
  }

  /** Every priced event of the batch, in order. Cheap while no period was read: it is only kept. */
  add(customerId: string, currency: string, periodStart: Date, part: PeriodPart): void {
    if (part.lines.length === 0 && part.shortfallAttos === 0n) return;
    this.parts.push({ customerId, currency, periodStart, part });
    if (this.periods.size === 0) return;
    const period = this.periods.get(periodKey(customerId, currency, periodStart));
    if (period) foldPeriodPart(period, part);
  }

  /** The stored events' share: meter lines by their rule's book and name (stored lines name the rule version only), and shortfalls. */
  private async stored(customerId: string, currency: string, periodStart: Date): Promise<PeriodCredit> {
    const next = new Date(Date.UTC(periodStart.getUTCFullYear(), periodStart.getUTCMonth() + 1, 1));
    const rows = await this.tx.query<{ price_book: string | null; rule_name: string | null; amount: string }>(
      `WITH period AS (
         SELECT metadata FROM usage_events
         WHERE merchant_id = $1 AND customer_id = $2 AND currency = $3 AND occurred_at >= $4 AND occurred_at < $5 AND period_start = $4),
       lines AS (
         SELECT CASE WHEN jsonb_typeof(l) = 'array' THEN l->>0 ELSE l->>'ruleId' END AS rule_id,
                CASE WHEN jsonb_typeof(l) = 'array' THEN l->>1 ELSE l->>'chargeAttos' END AS amount
         FROM period, jsonb_array_elements(CASE WHEN jsonb_typeof(period.metadata->'pricing') = 'array' THEN period.metadata->'pricing' ELSE '[]'::jsonb END) AS l)
       SELECT coalesce(r.plan_id::text, '') AS price_book, r.name AS rule_name, sum(lines.amount::numeric)::text AS amount
       FROM lines JOIN price_rules r ON r.merchant_id = $1 AND r.meter_key IS NOT NULL AND r.id::text = lines.rule_id
       GROUP BY 1, 2
       UNION ALL
       SELECT NULL, NULL, (coalesce(sum((metadata->>'shortfallAttos')::numeric), 0) - coalesce(sum((metadata->>'withheldCreditAttos')::numeric), 0))::text FROM period`,
      [this.merchantId, customerId, currency, periodStart, next],
    );
    const period: PeriodCredit = { net: new Map(), unpaid: 0n };
    for (const row of rows) {
      if (row.rule_name === null) period.unpaid = BigInt(row.amount);
      else period.net.set(scopeKey(row.price_book!, row.rule_name), BigInt(row.amount));
    }
    return period;
  }
}
