import { pgArrayOf } from '../../shared/db/arrays.ts';
import type { SqlExecutor } from '../../shared/db/database.ts';
import { periodEndOf, type ChargeLine, type PricedUsage, type RuleScope } from './usage.pricing.ts';

/**
 * VOLUME tiers price a customer's whole period at one rate, so an event that takes the period
 * into a cheaper tier has a negative line: what the earlier units were charged at the dearer rate
 * comes back. It may only come back as far as it was paid:
 * - a negative line is limited to the net of the period's earlier lines of the same rule (its
 *   book and name, every version: see ruleScopeOf) for the same meter (as its period total is
 *   kept), in the event's currency: a VOLUME rule gives
 *   back only what it charged, never what another rule on its meter (a FLAT rule for another
 *   model, the default book's rule before a plan change) charged, nor what was charged in
 *   another currency;
 * - what it gives back settles the period's unpaid usage first (the shortfalls of events the
 *   customer could not cover), and only the rest is credited.
 * So a customer that ran out of credit is never paid back charges it did not pay.
 *
 * The same net prices a VOLUME rule's events in a period another version of it (another price, or
 * another kind) also priced: an event is charged the volume price of the period after it at the
 * version in force, less that net (see volumeCreditNeed). The net counts what the lines priced,
 * not what was paid: a shortfall is owed already (the period's `unpaid`), so counting only what
 * was paid would charge it a second time; a give-back settles it first, as above.
 */
export interface PeriodCredit {
  /** Net of the period's meter lines by rule and meter (see scopeKey), in the event's currency, as stored (capped). */
  net: Map<string, bigint>;
  /** The period's shortfalls not yet settled by a lower period price. */
  unpaid: bigint;
  /** By rule and meter (see scopeKey): the effectiveFrom (ms) of the latest of its versions that priced a line in the period. */
  latestPricedBy: Map<string, number>;
}

/** A rule version's effectiveFrom in ms, by its id (the batch's price book), for the lines a batch prices. */
export type VersionTimes = (ruleId: string) => number | undefined;

/** An event's part in its period's credit: its final lines, its shortfall, and the credit it withheld to settle earlier shortfalls. */
export interface PeriodPart {
  lines: readonly ChargeLine[];
  shortfallAttos: bigint;
  withheldAttos: bigint;
}

const min = (a: bigint, b: bigint) => (a < b ? a : b);

/**
 * Whether a version of the rule in force after `effectiveFrom` already priced some of the period's
 * units of the meter: then a late event priced by an earlier version (`effectiveFrom`'s) must not
 * re-price the period from what the rule charged, for that would price the later version's units
 * at its own rates; it is priced on its own units instead (see volumeCreditNeed).
 */
export function laterVersionPriced(period: PeriodCredit, scope: RuleScope, meter: string, effectiveFrom: Date): boolean {
  const latest = period.latestPricedBy.get(scopeKey(scope.priceBook, meter, scope.ruleName));
  return latest !== undefined && latest > effectiveFrom.getTime();
}

/** What a rule (its book and name, every version) charged for a meter's units in the period so far, net of what it gave back; never below zero. */
export function ruleNet(period: PeriodCredit, scope: RuleScope, meter: string): bigint {
  const net = period.net.get(scopeKey(scope.priceBook, meter, scope.ruleName)) ?? 0n;
  return net > 0n ? net : 0n;
}

const periodKey = (customerId: string, currency: string, periodStart: Date) => `${customerId}|${currency}|${periodStart.getTime()}`;

/**
 * The rule a meter line's charge counts for: its book ("" for the default book, else the plan's id)
 * and name, and the meter, as its period total is kept (a version that moved the rule to another
 * meter starts that meter's count, and its charges).
 */
const scopeKey = (priceBook: string, meter: string, ruleName: string) => `${priceBook}|${meter}|${ruleName}`;
const lineScope = (line: ChargeLine) => scopeKey(line.planId ?? '', line.meter!, line.rule);

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

/** Adds a priced event to its period's credit; `versionTimes` dates the versions its lines name. */
export function foldPeriodPart(period: PeriodCredit, part: PeriodPart, versionTimes: VersionTimes): void {
  for (const line of part.lines) {
    if (line.meter === null) continue;
    const scope = lineScope(line);
    period.net.set(scope, (period.net.get(scope) ?? 0n) + line.chargeAttos);
    const from = line.ruleId === null ? undefined : versionTimes(line.ruleId);
    if (from !== undefined && from > (period.latestPricedBy.get(scope) ?? -Infinity)) period.latestPricedBy.set(scope, from);
  }
  period.unpaid += part.shortfallAttos - part.withheldAttos;
}

/**
 * Each period's credit for one batch, read from the stored events only for the periods that need it
 * (a VOLUME rule's negative line, or a VOLUME rule another version priced part of the period:
 * rare), all of them in one statement when the batch names them up front (`need`, then `load`),
 * with the batch's earlier events folded in, since they are not stored yet. The batch holds its
 * customers' wallet locks, so no other writer adds events meanwhile.
 */
export class BatchPeriodCredits {
  private readonly parts: { customerId: string; currency: string; periodStart: Date; part: PeriodPart }[] = [];
  private readonly periods = new Map<string, PeriodCredit>();
  private readonly wanted = new Map<string, { customerId: string; currency: string; periodStart: Date }>();

  constructor(
    private readonly tx: SqlExecutor,
    private readonly merchantId: string,
    private readonly versionTimes: VersionTimes,
  ) {}

  /** Names a period the batch will ask for (periodOf), to be read with the others by `load`. */
  need(customerId: string, currency: string, periodStart: Date): void {
    const key = periodKey(customerId, currency, periodStart);
    if (!this.periods.has(key)) this.wanted.set(key, { customerId, currency, periodStart });
  }

  /** Reads every period named by `need` and not read yet, in one statement. */
  async load(): Promise<void> {
    if (this.wanted.size === 0) return;
    const wanted = [...this.wanted.values()];
    this.wanted.clear();
    const stored = await this.stored(wanted);
    wanted.forEach((want, index) => {
      const period = stored[index]!;
      for (const earlier of this.parts) {
        if (earlier.customerId === want.customerId && earlier.currency === want.currency && earlier.periodStart.getTime() === want.periodStart.getTime()) foldPeriodPart(period, earlier.part, this.versionTimes);
      }
      this.periods.set(periodKey(want.customerId, want.currency, want.periodStart), period);
    });
  }

  /** A period's credit: read by `load` when named up front, else read now on its own. */
  async periodOf(customerId: string, currency: string, periodStart: Date): Promise<PeriodCredit> {
    const key = periodKey(customerId, currency, periodStart);
    let period = this.periods.get(key);
    if (!period) {
      this.need(customerId, currency, periodStart);
      await this.load();
      period = this.periods.get(key)!;
    }
    return period;
  }

  /** Every priced event of the batch, in order. Cheap while no period was read: it is only kept. */
  add(customerId: string, currency: string, periodStart: Date, part: PeriodPart): void {
    if (part.lines.length === 0 && part.shortfallAttos === 0n) return;
    this.parts.push({ customerId, currency, periodStart, part });
    if (this.periods.size === 0) return;
    const period = this.periods.get(periodKey(customerId, currency, periodStart));
    if (period) foldPeriodPart(period, part, this.versionTimes);
  }

  /**
   * The stored events' share of each period (in the order given): meter lines by their rule's book,
   * meter and name (stored lines name the rule version only), and shortfalls.
   */
  private async stored(wanted: { customerId: string; currency: string; periodStart: Date }[]): Promise<PeriodCredit[]> {
    const rows = await this.tx.query<{ i: string; price_book: string | null; meter_key: string | null; rule_name: string | null; amount: string; latest_from: Date | null }>(
      `WITH wanted AS (
         SELECT * FROM unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[]) WITH ORDINALITY AS w(customer_id, currency, period_start, period_end, i)),
       period AS (
         SELECT w.i, e.metadata FROM wanted w JOIN usage_events e
           ON e.merchant_id = $1 AND e.customer_id = w.customer_id AND e.currency = w.currency
          AND e.occurred_at >= w.period_start AND e.occurred_at < w.period_end AND e.period_start = w.period_start),
       lines AS (
         SELECT period.i,
                CASE WHEN jsonb_typeof(l) = 'array' THEN l->>0 ELSE l->>'ruleId' END AS rule_id,
                CASE WHEN jsonb_typeof(l) = 'array' THEN l->>1 ELSE l->>'chargeAttos' END AS amount
         FROM period, jsonb_array_elements(CASE WHEN jsonb_typeof(period.metadata->'pricing') = 'array' THEN period.metadata->'pricing' ELSE '[]'::jsonb END) AS l)
       SELECT lines.i::text AS i, coalesce(r.plan_id::text, '') AS price_book, r.meter_key, r.name AS rule_name, sum(lines.amount::numeric)::text AS amount,
              max(r.effective_from) AS latest_from
       FROM lines JOIN price_rules r ON r.merchant_id = $1 AND r.meter_key IS NOT NULL AND r.id::text = lines.rule_id
       GROUP BY 1, 2, 3, 4
       UNION ALL
       SELECT period.i::text, NULL, NULL, NULL, (coalesce(sum((metadata->>'shortfallAttos')::numeric), 0) - coalesce(sum((metadata->>'withheldCreditAttos')::numeric), 0))::text, NULL
       FROM period GROUP BY period.i`,
      [
        this.merchantId, pgArrayOf(wanted, (want) => want.customerId), pgArrayOf(wanted, (want) => want.currency),
        pgArrayOf(wanted, (want) => want.periodStart), pgArrayOf(wanted, (want) => periodEndOf(want.periodStart)),
      ],
    );
    const periods = wanted.map((): PeriodCredit => ({ net: new Map(), unpaid: 0n, latestPricedBy: new Map() }));
    for (const row of rows) {
      const period = periods[Number(row.i) - 1]!;
      if (row.rule_name === null) period.unpaid = BigInt(row.amount);
      else {
        const scope = scopeKey(row.price_book!, row.meter_key!, row.rule_name);
        period.net.set(scope, BigInt(row.amount));
        if (row.latest_from !== null) period.latestPricedBy.set(scope, new Date(row.latest_from).getTime());
      }
    }
    return periods;
  }
}
