import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';

/**
 * Model-based fuzz of usage pricing through the real API: random rule books (MARKUP with fees and
 * minimums, FLAT, GRADUATED, VOLUME and PACKAGE on meters, each aimed at a meter, a provider, a
 * model or a provider and model, in the default book or a plan's), new versions of rules put
 * between events (from now, or scheduled), rules archived (right after a new version, too),
 * provider prices changed, customers moved onto and off the plan, and batches of events of several
 * customers in dollars and euros out of time order — stamped now, a few minutes ahead, earlier
 * today, days back, in an earlier month, at a month's edge, at the very moment something changed —
 * sent through POST /v1/usage/batch and GraphQL recordUsage, with a controllable clock that moves
 * forward between steps. Rules and provider prices read the wall clock, not this server's, so their
 * changes "from now" are given as the dates the README says they take (archives through the service,
 * as archivePriceRule takes no date); a plan change from now is left to the server and checked.
 *
 * Every event's answer (cost, charge, margin, status, shortfall, shortfallSettled, and through
 * GraphQL its charge lines), every stored event (its amounts and charge lines) and every wallet's
 * balance are compared with an oracle written here from the README's semantics (exact, in bigint
 * attos; nothing of the production pricing code is imported):
 * - rules in force at the event's time (a version from its effectiveFrom until the next one, or
 *   until archived; archiving stops the rule from its moment, with the versions scheduled later);
 *   "from now" is a millisecond after the merchant's latest usage already priced at or after now;
 * - the plan's book first for each part (the markup, each meter), then the default book; within a
 *   book the most specific rule (model > provider > meter only; a model and provider beats both);
 *   no rule at all passes the cost through; an unknown cost gets only a markup's fee per request;
 * - each rule counts only the units it priced, per customer, month (UTC) of the event's time, book
 *   and rule name (every version continues it), but a MAX meter's peak is the customer's, whichever
 *   rule priced it (a VOLUME line on a peak another rule raised too is priced on the raise, at its
 *   version); SUM / COUNT / MAX meters; an event is charged its
 *   rule's price of the month's total after it less before it, floored at minimumCharge (not for
 *   an event adding nothing to a MAX meter); VOLUME: the version's price of the month's units less
 *   what the rule charged in the month, a give-back settling the month's shortfalls first;
 * - the customer pays what it can: the rest is the event's shortfall; a wallet moves by exactly
 *   the events' charges (sub-nano amounts carried, so balance = ceil(Σ / 1e9) in nanos);
 * - two rules of a book with the same target are refused (CONFLICT).
 * A failure names the seed and prints what its run did: every rule version, change and event with
 * the oracle's charge and lines.
 *
 * Knobs: FUZZ_SEED, FUZZ_RUNS (default 16), FUZZ_SHRINK=1 (shrink a failure: slow), FUZZ_STATS=1.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 1);
const RUNS = Number(process.env.FUZZ_RUNS ?? 16);
const SHRINK = process.env.FUZZ_SHRINK === '1';
const STATS = process.env.FUZZ_STATS === '1';

// ---------------------------------------------------------------------------------------------
// Exact decimals: amounts in attos (1e-18), quantities scaled by 1e18.

const ONE = 10n ** 18n;
const NANO = 10n ** 9n;
const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;

/** A decimal string (or whole number) × 1e18, exactly. */
function scaled(value: string | number): bigint {
  const match = /^(-)?(\d+)(?:\.(\d{1,18}))?$/.exec(String(value).trim());
  if (!match) throw new Error(`not a decimal: ${value}`);
  const magnitude = BigInt(match[2]!) * ONE + BigInt((match[3] ?? '').padEnd(18, '0'));
  return match[1] ? -magnitude : magnitude;
}
const halfUp = (num: bigint, den: bigint) => (2n * num + den) / (2n * den);
const ceilDiv = (num: bigint, den: bigint) => (num + den - 1n) / den;
const max0 = (value: bigint) => (value > 0n ? value : 0n);
const minOf = (a: bigint, b: bigint) => (a < b ? a : b);
/** ceil(value / den) for either sign. */
const ceilSigned = (value: bigint, den: bigint) => (value >= 0n ? ceilDiv(value, den) : -(-value / den));
const show = (attos: bigint) => {
  const negative = attos < 0n;
  const abs = negative ? -attos : attos;
  const fraction = (abs % ONE).toString().padStart(18, '0').replace(/0+$/, '');
  return `${negative ? '-' : ''}${abs / ONE}${fraction ? `.${fraction}` : ''}`;
};
const iso = (ms: number) => new Date(ms).toISOString();
const monthOf = (ms: number) => {
  const date = new Date(ms);
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1);
};

// ---------------------------------------------------------------------------------------------
// The merchant's world: meters, provider prices, rule slots.

const METERS = ['calls', 'out', 'units'] as const;
type MeterKey = (typeof METERS)[number];
type Aggregation = 'SUM' | 'COUNT' | 'MAX';
const PROVIDERS = ['acme', 'zeta'] as const;
const MODELS = ['m1', 'm2', 'm3'] as const;
/** USD per million tokens from the start; a pair not listed has no price row (until a step adds one), so its cost is unknown. */
const PRICE_ROWS: Record<string, { input: string; output: string }> = {
  'acme/m1': { input: '3', output: '15' },
  'acme/m2': { input: '0.25', output: '1.25' },
  'zeta/m1': { input: '0.000001', output: '7.5' },
};
const SINCE = Date.parse('2026-01-01T00:00:00Z');
/** Every customer's credit in euros (its dollars vary by scenario). */
const EUR_CREDIT = '4';
const STARTS = ['2026-03-27T09:00:00Z', '2026-04-29T21:30:00Z', '2026-05-31T23:10:00Z'].map((text) => Date.parse(text));

type Book = '' | 'pro';
type Part = 'cost' | MeterKey;
interface Slot {
  book: Book;
  part: Part;
  provider: string | null;
  model: string | null;
  /** Rule names repeat across books: each book versions its own. */
  name: string;
}
const TARGETS: [string | null, string | null][] = [[null, null], ['acme', null], ['zeta', null], [null, 'm1'], [null, 'm2'], ['acme', 'm1'], ['zeta', 'm2']];
const SLOTS: Slot[] = (['', 'pro'] as Book[]).flatMap((book) =>
  (['cost', ...METERS] as Part[]).flatMap((part) => TARGETS.map(([provider, model]) => ({ book, part, provider, model, name: `${part}:${provider ?? '*'}/${model ?? '*'}` }))),
);

interface Tier {
  upTo: number | null;
  unitPrice: string;
  flatFee?: string;
}
type RuleSpec =
  | { type: 'MARKUP'; config: { percent: string; feePerRequest?: string; minimumCharge?: string } }
  | { type: 'FLAT'; config: { unitPrice: string; perUnits?: number | string; minimumCharge?: string } }
  | { type: 'GRADUATED'; config: { tiers: Tier[]; minimumCharge?: string } }
  | { type: 'VOLUME'; config: { tiers: Tier[] } }
  | { type: 'PACKAGE'; config: { packageSize: number | string; packagePrice: string; minimumCharge?: string } };

/** Drops the keys left undefined: a config takes only its kind's settings. */
const defined = <T extends object>(object: T): T => Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined)) as T;

// ---------------------------------------------------------------------------------------------
// The oracle's prices.

/** A quantity rule's price of a month's total (scaled), in attos. */
function periodPrice(rule: Exclude<RuleSpec, { type: 'MARKUP' }>, total: bigint): bigint {
  switch (rule.type) {
    case 'FLAT':
      return halfUp(scaled(rule.config.unitPrice) * total, scaled(rule.config.perUnits ?? 1));
    case 'PACKAGE':
      return ceilDiv(total, scaled(rule.config.packageSize)) * scaled(rule.config.packagePrice);
    case 'GRADUATED': {
      // Each unit at its own tier's price; a tier's flat fee once the total enters it.
      let sum = 0n;
      let floor = 0n;
      for (const tier of rule.config.tiers) {
        if (total <= floor) break;
        const ceiling = tier.upTo === null ? total : minOf(total, scaled(tier.upTo));
        sum += scaled(tier.unitPrice) * (ceiling - floor) + scaled(tier.flatFee ?? '0') * ONE;
        if (tier.upTo === null) break;
        floor = scaled(tier.upTo);
      }
      return halfUp(sum, ONE);
    }
    case 'VOLUME': {
      // Every unit at the price of the tier the total ends in (upTo inclusive), plus its flat fee.
      if (total === 0n) return 0n;
      const tier = rule.config.tiers.find((candidate) => candidate.upTo === null || total <= scaled(candidate.upTo))!;
      return halfUp(scaled(tier.unitPrice) * total, ONE) + scaled(tier.flatFee ?? '0');
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Generators.

const unitPrice = fc.constantFrom('0', '0.0004', '0.002', '0.05', '0.3', '1.25', '0.000000000000000007', '0.000000001');
const flatFee = fc.constantFrom(undefined, undefined, '0.1', '0.75');
const minimum = fc.constantFrom(undefined, undefined, '0.02', '0.5', '2');
const tiers = fc
  .tuple(fc.subarray([2, 6, 25, 150, 1200], { maxLength: 3 }), fc.array(unitPrice, { minLength: 4, maxLength: 4 }), fc.array(flatFee, { minLength: 4, maxLength: 4 }))
  .map(([bounds, prices, fees]) => [...bounds, null].map((upTo, index): Tier => defined({ upTo, unitPrice: prices[index]!, flatFee: fees[index] })));
// Mostly cheaper by volume (the usual discount), so the month's units get re-priced downwards.
const volumeRule = fc.record({ tiers, discount: fc.constantFrom(true, true, true, false) }).map(({ tiers, discount }) => ({
  type: 'VOLUME' as const,
  config: { tiers: discount ? tiers.map((tier, index) => ({ ...tier, unitPrice: [...tiers].map((t) => t.unitPrice).sort((a, b) => Number(b) - Number(a))[index]! })) : tiers },
}));
const quantityRule: fc.Arbitrary<Exclude<RuleSpec, { type: 'MARKUP' }>> = fc.oneof(
  fc.record({ unitPrice, perUnits: fc.constantFrom(undefined, 1, 3, 3, 1000, '2.5', '2.5'), minimumCharge: minimum }).map((config) => ({ type: 'FLAT' as const, config: defined(config) })),
  fc.record({ tiers, minimumCharge: minimum }).map((config) => ({ type: 'GRADUATED' as const, config: defined(config) })),
  { weight: 2, arbitrary: volumeRule },
  fc.record({ packageSize: fc.constantFrom(1, 3, 10, 250, '2.5', '0.75'), packagePrice: fc.constantFrom('0.05', '1', '0.3', '0.000000000000000003'), minimumCharge: minimum })
    .map((config) => ({ type: 'PACKAGE' as const, config: defined(config) })),
);
const markupRule = fc
  .record({ percent: fc.constantFrom('0', '10', '12.5', '33.333333', '250'), feePerRequest: fc.constantFrom(undefined, '0.001', '0.2', '0.000000000123'), minimumCharge: minimum })
  .map((config) => ({ type: 'MARKUP' as const, config: defined(config) }));
/** A rule for any slot: the markup for the provider cost, the quantity rule for a meter. */
const ruleArb = fc.record({ markup: markupRule, quantity: quantityRule });
type RuleChoice = { markup: RuleSpec; quantity: RuleSpec };
const specFor = (slot: Slot, choice: RuleChoice) => (slot.part === 'cost' ? choice.markup : choice.quantity);

/**
 * A slot: the default book three times as often as the plan's, so books overlap and override; broad
 * targets more often than narrow ones, so that each rule prices enough of a month to reach its tiers.
 */
const TARGET_WEIGHTS = [4, 2, 1, 2, 1, 2, 1];
const slotIndex = fc
  .tuple(fc.constantFrom(0, 0, 0, 1), fc.nat({ max: 3 }), fc.oneof(...TARGET_WEIGHTS.map((weight, target) => ({ weight, arbitrary: fc.constant(target) }))))
  .map(([book, part, target]) => (book * 4 + part) * TARGETS.length + target);

const when = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ kind: 'now' as const, amount: 0 }) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 290 }).map((amount) => ({ kind: 'ahead' as const, amount })) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 7_200 }).map((amount) => ({ kind: 'recent' as const, amount })) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 240 }).map((amount) => ({ kind: 'hoursBack' as const, amount })) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 600 }).map((amount) => ({ kind: 'lastMonth' as const, amount })) },
  // The first millisecond of this month, or the last of the one before.
  { weight: 1, arbitrary: fc.constantFrom(0, 1).map((amount) => ({ kind: 'monthEdge' as const, amount })) },
  // Exactly when a rule version, an archive, a plan change or a provider price took effect, or a millisecond before.
  { weight: 1, arbitrary: fc.tuple(fc.nat(), fc.constantFrom(0, 1)).map(([pick, before]) => ({ kind: 'change' as const, amount: pick * 2 + before })) },
  // The same at a provider price's change, for its model.
  { weight: 1, arbitrary: fc.tuple(fc.nat(), fc.constantFrom(0, 1)).map(([pick, before]) => ({ kind: 'priceChange' as const, amount: pick * 2 + before })) },
);
const tokens = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 41, max: 3_000 }));
const eventArb = fc.record({
  customer: fc.constantFrom(0, 0, 0, 1, 1, 2),
  provider: fc.constantFrom(...PROVIDERS),
  model: fc.constantFrom(...MODELS),
  inputTokens: tokens,
  outputTokens: tokens,
  requests: fc.constantFrom(undefined, undefined, 1, 2, 3),
  units: fc.oneof(fc.constantFrom(undefined, '0', '0.5', '1', '2.25', '3', 5), fc.constantFrom('7', '12.5', '40')),
  currency: fc.constantFrom('USD', 'USD', 'USD', 'USD', 'USD', 'EUR'),
  when,
});
type EventSpec = typeof eventArb extends fc.Arbitrary<infer T> ? T : never;

const stepArb = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant('batch' as const), graphql: fc.constantFrom(false, false, true), events: fc.array(eventArb, { minLength: 1, maxLength: 8 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.constantFrom(1_000, 90_000, 4 * MINUTE, 3 * HOUR, 20 * HOUR, 4 * DAY, 9 * DAY) }) },
  {
    weight: 4,
    arbitrary: fc.record({
      // A new version of a rule already put, of the scenario's VOLUME rule (as VOLUME again, or another kind), or any rule.
      kind: fc.constant('put' as const), target: fc.constantFrom('existing', 'existing', 'volume', 'any'), pick: fc.nat(), slot: slotIndex, rule: ruleArb, volume: fc.option(volumeRule),
      fromNow: fc.boolean(), laterMinutes: fc.constantFrom(0, 1, 45, 600, 4_000),
      // Then pull the rule again at once ("from now" too): a price put by mistake, say.
      pull: fc.constantFrom(false, false, true),
    }),
  },
  // Often the rule changed last: a merchant putting a price and pulling the rule again at once.
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('archive' as const), latest: fc.boolean(), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('plan' as const), customer: fc.nat({ max: 2 }), toPlan: fc.boolean(), laterMinutes: fc.constantFrom(0, 30, 900, 5_000) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('tie' as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('price' as const), provider: fc.constantFrom(...PROVIDERS), model: fc.constantFrom(...MODELS),
      input: fc.constantFrom('3', '0.25', '0.000001', '12'), output: fc.constantFrom('15', '1.25', '7.5', '0.6'), laterMinutes: fc.constantFrom(0, 30, 900),
    }),
  },
);

const scenarioArb = fc.record({
  start: fc.constantFrom(...STARTS),
  aggregation: fc.record({ calls: fc.constantFrom<Aggregation>('SUM', 'COUNT'), units: fc.constantFrom<Aggregation>('SUM', 'COUNT', 'MAX', 'MAX') }),
  credits: fc.tuple(...[0, 1, 2].map(() => fc.constantFrom('0.2', '3', '50', '2000'))),
  // Each customer's plan history before the first event: none, the plan all along, or joined or left
  // it some days before the start, so that late events of that month straddle the change.
  plans: fc.tuple(...[0, 1, 2].map(() => fc.record({ history: fc.constantFrom('none', 'pro', 'joined', 'left'), daysAgo: fc.constantFrom(3, 12, 26) }))),
  rules: fc.uniqueArray(fc.record({ slot: slotIndex, rule: ruleArb }), { minLength: 2, maxLength: 8, selector: (rule) => rule.slot }),
  // And a VOLUME rule of the default book on a meter of every event (or of a provider's), unless a rule has
  // its slot; often the plan prices the same slot, by a rule of the same name (each book counts its own).
  volume: fc.record({ meter: fc.nat({ max: 2 }), target: fc.constantFrom(0, 0, 1), rule: volumeRule, inPlan: fc.option(quantityRule) }),
  // Narrower rules on the VOLUME rule's meter, and markups of several reaches, which outrank broader ones for the events they match.
  narrower: fc.array(fc.record({ target: fc.integer({ min: 1, max: TARGETS.length - 1 }), rule: quantityRule }), { maxLength: 2 }),
  markups: fc.array(fc.record({ target: fc.nat({ max: TARGETS.length - 1 }), rule: markupRule }), { maxLength: 3 }),
  // A provider price changed (or first set) some days before the start, so that late events straddle it.
  repriced: fc.record({
    provider: fc.constantFrom(...PROVIDERS), model: fc.constantFrom(...MODELS), daysAgo: fc.constantFrom(2, 9, 20),
    input: fc.constantFrom('3', '0.25', '0.000001', '12'), output: fc.constantFrom('15', '1.25', '7.5', '0.6'),
  }),
  steps: fc.array(stepArb, { minLength: 10, maxLength: 26 }),
});
type Scenario = typeof scenarioArb extends fc.Arbitrary<infer T> ? T : never;

// ---------------------------------------------------------------------------------------------
// The oracle's state of one merchant.

interface Version {
  id: string;
  spec: RuleSpec;
  effectiveFrom: number;
  /** Order of the call that made it (a stop issued later at the same moment overrides it). */
  seq: number;
  /** Scheduled past a later archive: never in force. */
  cancelled: boolean;
}
interface Stop {
  at: number;
  seq: number;
}
interface RuleState {
  slot: Slot;
  versions: Version[];
  stops: Stop[];
}

interface Line {
  ruleId: string;
  amount: bigint;
  /** Units priced; null for a markup. */
  quantity: bigint | null;
  /** Its rule's month count (customer|currency|month|book|name|meter), for meter lines. */
  scope: string | null;
}

interface Expected {
  cost: bigint;
  costKnown: boolean;
  priced: bigint;
  charged: bigint;
  shortfall: bigint;
  settled: bigint;
  status: 'CHARGED' | 'NOT_BILLABLE' | 'PARTIALLY_CHARGED' | 'UNCHARGED';
  lines: Line[];
}

interface SentEvent {
  key: string;
  customer: number;
  currency: string;
  at: number;
  record: Record<string, unknown>;
  expected: Expected;
  label: string;
}

const stats: Record<string, number> = {};
const count = (what: string) => void (stats[what] = (stats[what] ?? 0) + 1);

class Oracle {
  readonly rules = new Map<Slot, RuleState>();
  readonly plans: { planKey: 'pro' | null; from: number }[][] = [[], [], []];
  /** What is left in each wallet (customer|currency), exactly: balance × 1e9 − the sub-nano carry, in attos. */
  readonly wallets = new Map<string, bigint>();
  readonly totals = new Map<string, bigint>();
  /** The rules (scopes) that priced each MAX meter's peak (customer|currency|month|meter). */
  readonly pricedPeak = new Map<string, Set<string>>();
  readonly nets = new Map<string, bigint>();
  readonly unpaid = new Map<string, bigint>();
  readonly events: SentEvent[] = [];
  readonly prices = new Map<string, { from: number; input: string; output: string }[]>(Object.entries(PRICE_ROWS).map(([pair, rates]) => [pair, [{ from: SINCE, ...rates }]]));
  /** The clock, for the statistics only. */
  now = 0;
  private seq = 0;

  constructor(
    readonly aggregation: Record<MeterKey, Aggregation>,
    credits: readonly string[],
  ) {
    credits.forEach((credit, customer) => {
      this.wallets.set(`${customer}|USD`, scaled(credit));
      this.wallets.set(`${customer}|EUR`, scaled(EUR_CREDIT));
    });
  }

  nextSeq() {
    return ++this.seq;
  }

  /** "From now": a millisecond after the merchant's (or the customer's) latest usage at or after now, else now. */
  fromNow(now: number, customer?: number): number {
    let latest = -Infinity;
    for (const event of this.events) if (event.at >= now && event.at > latest && (customer === undefined || event.customer === customer)) latest = event.at;
    return latest === -Infinity ? now : latest + 1;
  }

  /** The version of a rule in force at `at`, or null (none yet, or stopped). */
  inForce(state: RuleState, at: number): Version | null {
    let best: { time: number; seq: number; version: Version | null } | null = null;
    const consider = (time: number, seq: number, version: Version | null) => {
      if (time > at) return;
      if (!best || time > best.time || (time === best.time && seq > best.seq)) best = { time, seq, version };
    };
    for (const version of state.versions) if (!version.cancelled) consider(version.effectiveFrom, version.seq, version);
    for (const stop of state.stops) consider(stop.at, stop.seq, null);
    return (best as { version: Version | null } | null)?.version ?? null;
  }

  /** A version that ever was (or will be) in force: neither cancelled nor stopped at its own moment. */
  tookEffect(state: RuleState, version: Version): boolean {
    return !version.cancelled && !state.stops.some((stop) => stop.at === version.effectiveFrom && stop.seq > version.seq);
  }

  /** Whether the rule's latest change (by time, then call order) is a version, i.e. it is not archived for good. */
  live(state: RuleState): boolean {
    const entries = [...state.versions.filter((version) => !version.cancelled).map((version) => ({ time: version.effectiveFrom, seq: version.seq, stop: false })), ...state.stops.map((stop) => ({ time: stop.at, seq: stop.seq, stop: true }))];
    entries.sort((a, b) => a.time - b.time || a.seq - b.seq);
    return entries.length > 0 && !entries.at(-1)!.stop;
  }

  planAt(customer: number, at: number): 'pro' | null {
    let plan: 'pro' | null = null;
    for (const change of this.plans[customer]!) if (change.from <= at) plan = change.planKey;
    return plan;
  }

  /** The most specific rule in force for one part of an event: the plan's book first, then the default book. */
  select(part: Part, customer: number, provider: string, model: string, at: number): { state: RuleState; version: Version } | null {
    const books: Book[] = this.planAt(customer, at) === 'pro' ? ['pro', ''] : [''];
    for (const book of books) {
      let best: { state: RuleState; version: Version; rank: number } | null = null;
      let candidates = 0;
      for (const state of this.rules.values()) {
        const { slot } = state;
        if (slot.book !== book || slot.part !== part) continue;
        if ((slot.provider !== null && slot.provider !== provider) || (slot.model !== null && slot.model !== model)) continue;
        const version = this.inForce(state, at);
        if (!version) continue;
        // A model outranks a provider, which outranks the meter alone; both together outrank either.
        const rank = (slot.model !== null ? 2 : 0) + (slot.provider !== null ? 1 : 0);
        if (best && best.rank === rank) throw new Error(`oracle: two rules tie for ${part} (${best.state.slot.name}, ${slot.name})`);
        candidates++;
        if (!best || rank > best.rank) best = { state, version, rank };
      }
      if (best) {
        if (book === 'pro') count('priced by the plan');
        if (candidates > 1) count(`${part === 'cost' ? 'markup' : 'meter rule'} chosen among ${candidates}`);
        return best;
      }
    }
    return null;
  }

  quantityOf(meter: MeterKey, event: EventSpec): bigint {
    if (meter === 'out') return BigInt(event.outputTokens) * ONE;
    if (meter === 'calls') return BigInt(event.requests ?? 1) * ONE;
    return event.units === undefined ? 0n : scaled(event.units);
  }

  /** Prices one event as the README describes, and moves the state by it. */
  price(event: EventSpec, at: number): Expected {
    const { customer, provider, model, currency } = event;
    const month = monthOf(at);
    const requests = BigInt(event.requests ?? 1);
    // The provider price in force at the event's time; prices are in USD, so an event in another currency has no known cost.
    const row = currency !== 'USD' ? undefined : this.prices.get(`${provider}/${model}`)?.filter((price) => price.from <= at).sort((a, b) => a.from - b.from).at(-1);
    const cost = row ? (BigInt(event.inputTokens) * scaled(row.input) + BigInt(event.outputTokens) * scaled(row.output)) / 1_000_000n : 0n;
    if (row && (BigInt(event.inputTokens) * scaled(row.input) + BigInt(event.outputTokens) * scaled(row.output)) % 1_000_000n !== 0n) throw new Error('oracle: inexact cost');
    const lines: Line[] = [];

    // A markup prices a cost in USD: rules carry no currency, so none prices an event in another one.
    const markup = currency === 'USD' ? this.select('cost', customer, provider, model, at) : null;
    if (markup) {
      const { config } = markup.version.spec as Extract<RuleSpec, { type: 'MARKUP' }>;
      const fee = scaled(config.feePerRequest ?? '0') * requests;
      let amount: bigint;
      if (!row) {
        // An unknown cost is charged only the fee per request, never the minimum.
        amount = fee;
        count('markup of an unknown cost');
      } else {
        amount = halfUp(cost * (100n * ONE + scaled(config.percent)), 100n * ONE) + fee;
        if (config.minimumCharge !== undefined && amount < scaled(config.minimumCharge)) {
          amount = scaled(config.minimumCharge);
          count('markup raised to its minimum');
        }
      }
      lines.push({ ruleId: markup.version.id, amount, quantity: null, scope: null });
    }

    for (const meter of METERS) {
      const quantity = this.quantityOf(meter, event);
      if (quantity === 0n) continue;
      const match = this.select(meter, customer, provider, model, at);
      if (!match) continue;
      const { slot } = match.state;
      const spec = match.version.spec as Exclude<RuleSpec, { type: 'MARKUP' }>;
      // Tiers count each currency's units apart.
      const scope = `${customer}|${currency}|${month}|${slot.book}|${slot.name}|${meter}`;
      const aggregation = this.aggregation[meter];
      // A MAX meter's peak is the customer's, whichever book and rule priced it.
      const total = aggregation === 'MAX' ? `${customer}|${currency}|${month}|${meter}` : scope;
      const prior = this.totals.get(total) ?? 0n;
      // Another rule priced this peak already: a VOLUME line prices only what the event raises it by.
      const pricers = this.pricedPeak.get(total) ?? new Set<string>();
      const shared = aggregation === 'MAX' && [...pricers].some((other) => other !== scope);
      if (aggregation === 'MAX') this.pricedPeak.set(total, pricers.add(scope));
      const added = aggregation === 'COUNT' ? ONE : aggregation === 'MAX' ? max0(quantity - prior) : quantity;
      this.totals.set(total, prior + added);
      let amount = 0n;
      if (added === 0n) count('MAX meter not raised');
      else if (spec.type === 'VOLUME') {
        count('VOLUME line');
        // The month's units at this version's price, less what the rule (every version) charged in the month:
        // with one version all month, its price of the units before the event; a give-back goes no further.
        // A peak another rule raised too is priced on the raise alone, at this version.
        const charged = shared ? periodPrice(spec, prior) : max0(this.nets.get(scope) ?? 0n);
        if (shared) count('VOLUME on a shared peak');
        amount = periodPrice(spec, prior + added) - charged;
        if (charged !== periodPrice(spec, prior)) count('VOLUME re-priced from another version');
      } else {
        amount = periodPrice(spec, prior + added) - periodPrice(spec, prior);
        if (spec.type === 'FLAT' && (scaled(spec.config.unitPrice) * (prior + added)) % scaled(spec.config.perUnits ?? 1) !== 0n) count('FLAT rounded');
        const floor = spec.config.minimumCharge;
        if (floor !== undefined && amount < scaled(floor)) {
          amount = scaled(floor);
          count(`${spec.type} raised to its minimum`);
        }
      }
      if (prior > 0n && match.version !== match.state.versions[0]) count('version continues the month');
      lines.push({ ruleId: match.version.id, amount, quantity: added, scope });
    }

    let priced = lines.length === 0 ? cost : lines.reduce((sum, line) => sum + line.amount, 0n);
    if (lines.length === 0 && row) count('cost passed through');
    const unpaidKey = `${customer}|${currency}|${month}`;
    let unpaid = this.unpaid.get(unpaidKey) ?? 0n;
    let settled = 0n;
    for (const line of lines) {
      if (line.amount >= 0n || line.scope === null) continue;
      count('negative VOLUME line');
      // What comes back is at most what the rule charged in the month; it settles shortfalls first.
      const applied = minOf(-line.amount, max0(this.nets.get(line.scope) ?? 0n));
      if (applied !== -line.amount) {
        count('give-back capped');
        priced += -applied - line.amount;
        line.amount = -applied;
      }
      const settles = minOf(applied, unpaid);
      unpaid -= settles;
      settled += settles;
    }
    if (settled > 0n) count('give-back settled a shortfall');
    priced += settled;
    for (const line of lines) if (line.scope !== null) this.nets.set(line.scope, (this.nets.get(line.scope) ?? 0n) + line.amount);

    // The wallet: a charge is taken whole while it leaves less than a nano owed (the carry), else what is left.
    let charged = priced;
    let shortfall = 0n;
    const wallet = `${customer}|${currency}`;
    const left = this.wallets.get(wallet)!;
    if (priced > 0n && priced >= left + NANO) {
      charged = left > 0n ? minOf(priced, left) : 0n;
      shortfall = priced - charged;
      count('shortfall');
    }
    this.wallets.set(wallet, left - charged);
    this.unpaid.set(unpaidKey, unpaid + shortfall);
    if (month !== monthOf(this.now)) count('late event in an earlier month');
    const status = priced === 0n ? 'NOT_BILLABLE' : shortfall === 0n ? 'CHARGED' : charged > 0n ? 'PARTIALLY_CHARGED' : 'UNCHARGED';
    return { cost, costKnown: !!row, priced, charged, shortfall, settled, status, lines };
  }
}

// ---------------------------------------------------------------------------------------------
// The server.

let server: TestServer;
let now = STARTS[0]!;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => new Date(now) });
});
afterAll(() => server?.close());

async function gql<T = Record<string, unknown>>(secret: string, query: string, variables?: Record<string, unknown>): Promise<T> {
  const response = await server.graphql<T>(query, variables, secret);
  if (response.errors?.length) throw Object.assign(new Error(`GraphQL: ${response.errors.map((error) => `${error.extensions.code}: ${error.message}`).join('; ')}`), { errors: response.errors });
  return response.data!;
}

interface Answer {
  ok: boolean;
  event?: { cost: string; costProblem: string | null; currency: string; charge: string; margin: string; shortfall: string; shortfallSettled: string; status: string; charges?: { priceRuleId: string | null; amount: string; quantity: string | null }[] };
  chargeError?: { code: string } | null;
  error?: { code: string; message: string };
}

const EVENT_FIELDS = 'cost costProblem charge margin shortfall shortfallSettled status currency charges { priceRuleId amount quantity }';

function lineText(lines: readonly { ruleId: string | null; amount: bigint; quantity: bigint | null }[], names: Map<string, string>) {
  return lines.map((line) => `${names.get(line.ruleId ?? '') ?? line.ruleId}=${show(line.amount)}${line.quantity === null ? '' : `@${show(line.quantity)}`}`).sort().join(', ');
}

async function runScenario(scenario: Scenario): Promise<void> {
  now = scenario.start;
  const log: string[] = [`start ${iso(now)}; meters calls:${scenario.aggregation.calls} out:SUM units:${scenario.aggregation.units}; credits ${scenario.credits.join(', ')}`];
  const oracle = new Oracle({ calls: scenario.aggregation.calls, out: 'SUM', units: scenario.aggregation.units }, scenario.credits);
  oracle.now = now;
  /** Rule version id → "book/name vN", for the log. */
  const names = new Map<string, string>();
  const fail = (message: string): never => {
    throw new Error(`${message}\n(seed ${SEED}; FUZZ_SEED=${SEED} replays the runs)\n--- what this run did ---\n${log.join('\n')}`);
  };
  const { repriced } = scenario;
  const repricedPair = `${repriced.provider}/${repriced.model}`;
  oracle.prices.set(repricedPair, [...(oracle.prices.get(repricedPair) ?? []), { from: now - repriced.daysAgo * DAY, input: repriced.input, output: repriced.output }]);
  log.push(`prices: ${[...oracle.prices.entries()].map(([pair, history]) => `${pair} ${history.map(({ from, input, output }) => `${input}/${output} from ${iso(from)}`).join(', ')}`).join('; ')}`);
  try {
    const merchant = await server.createMerchant(`rules-fuzz-${randomUUID().slice(0, 8)}`);
    const secret = merchant.secret;
    await gql(secret, `mutation {
      calls: createMeter(input: { key: "calls", name: "Calls", unit: "call", source: REQUESTS, aggregation: ${scenario.aggregation.calls} }) { key }
      out: createMeter(input: { key: "out", name: "Output tokens", unit: "token", source: OUTPUT_TOKENS, aggregation: SUM }) { key }
      units: createMeter(input: { key: "units", name: "Units", unit: "unit", source: QUANTITY, aggregation: ${scenario.aggregation.units} }) { key }
      plan: putPlan(input: { key: "pro", name: "Pro" }) { key }
      ${[...oracle.prices.entries()].flatMap(([pair, history]) => history.map(({ from, input, output }, n) => {
        const [provider, model] = pair.split('/');
        return `p${pair.replace('/', '_')}${n}: setProviderPrice(input: { provider: "${provider}", model: "${model}", effectiveFrom: "${iso(from)}", rates: { perMillionTokens: { input: "${input}", output: "${output}" } } }) { ref }`;
      })).join('\n')}
    }`);
    const created = await gql<Record<string, { id: string }>>(secret, `mutation { ${[0, 1, 2].map((i) => `c${i}: createCustomer(input: { externalId: "c${i}-${randomUUID().slice(0, 8)}" }) { id }`).join(' ')} }`);
    const customers = [0, 1, 2].map((i) => created[`c${i}`]!.id);

    const ruleInput = (slot: Slot, spec: RuleSpec, effectiveFrom: number | null, name = slot.name) => ({
      name, type: spec.type, meterKey: slot.part === 'cost' ? null : slot.part, provider: slot.provider, model: slot.model, planKey: slot.book === 'pro' ? 'pro' : null,
      config: spec.config, effectiveFrom: effectiveFrom === null ? null : iso(effectiveFrom),
    });
    const addVersion = (slot: Slot, spec: RuleSpec, id: string, effectiveFrom: number) => {
      let state = oracle.rules.get(slot);
      if (!state) oracle.rules.set(slot, (state = { slot, versions: [], stops: [] }));
      state.versions.push({ id, spec, effectiveFrom, seq: oracle.nextSeq(), cancelled: false });
      const label = `${slot.book || 'default'}/${slot.name} v${state.versions.length}`;
      names.set(id, label);
      log.push(`  ${label} from ${iso(effectiveFrom)}: ${spec.type} ${JSON.stringify(spec.config)}`);
    };

    // Credit, plans from the start, and the first rules, in one request.
    const initial = scenario.rules.map(({ slot, rule }): { slot: Slot; spec: RuleSpec } => ({ slot: SLOTS[slot]!, spec: specFor(SLOTS[slot]!, rule) }));
    const volumeSlot = SLOTS[(1 + scenario.volume.meter) * TARGETS.length + scenario.volume.target]!;
    if (!initial.some(({ slot }) => slot === volumeSlot)) initial.push({ slot: volumeSlot, spec: scenario.volume.rule });
    const planSlot = SLOTS[SLOTS.length / 2 + SLOTS.indexOf(volumeSlot)]!;
    const add = (slot: Slot, spec: RuleSpec) => void (initial.some((rule) => rule.slot === slot) || initial.push({ slot, spec }));
    if (scenario.volume.inPlan) add(planSlot, scenario.volume.inPlan);
    for (const { target, rule } of scenario.narrower) add(SLOTS[SLOTS.indexOf(volumeSlot) - scenario.volume.target + target]!, rule);
    for (const { target, rule } of scenario.markups) add(SLOTS[target]!, rule);
    const variables: Record<string, unknown> = {};
    const fields: string[] = [];
    customers.forEach((id, i) => {
      fields.push(`g${i}: grantCredits(input: { customerId: "${id}", amount: "${scenario.credits[i]}", kind: PAID, idempotencyKey: "seed-${i}" }) { replayed }`);
      fields.push(`e${i}: grantCredits(input: { customerId: "${id}", amount: "${EUR_CREDIT}", currency: "EUR", kind: PAID, idempotencyKey: "seed-eur-${i}" }) { replayed }`);
      const { history, daysAgo } = scenario.plans[i]!;
      const changes: { planKey: 'pro' | null; from: number }[] = history === 'pro' ? [{ planKey: 'pro', from: SINCE }]
        : history === 'joined' ? [{ planKey: 'pro', from: now - daysAgo * DAY }]
          : history === 'left' ? [{ planKey: 'pro', from: SINCE }, { planKey: null, from: now - daysAgo * DAY }]
            : [];
      changes.forEach(({ planKey, from }, n) => {
        fields.push(`s${i}x${n}: setCustomerPlan(customerId: "${id}", planKey: ${planKey ? '"pro"' : 'null'}, effectiveFrom: "${iso(from)}") { id }`);
        oracle.plans[i]!.push({ planKey, from });
      });
    });
    initial.forEach(({ slot, spec }, i) => {
      variables[`r${i}`] = ruleInput(slot, spec, SINCE);
      fields.push(`r${i}: putPriceRule(input: $r${i}) { id effectiveFrom }`);
    });
    log.push(`plans: ${oracle.plans.map((changes, i) => `c${i} [${changes.map(({ planKey, from }) => `${planKey ?? 'default'} from ${iso(from)}`).join(', ')}]`).join('; ')}; rules:`);
    const seeded = await gql<Record<string, { id: string; effectiveFrom: string }>>(
      secret,
      `mutation(${initial.map((_, i) => `$r${i}: PutPriceRuleInput!`).join(', ')}) { ${fields.join('\n')} }`,
      variables,
    );
    initial.forEach(({ slot, spec }, i) => addVersion(slot, spec, seeded[`r${i}`]!.id, SINCE));

    const archive = async (state: RuleState, stepIndex: number) => {
      const at = oracle.fromNow(now);
      log.push(`#${stepIndex} archive ${state.slot.book || 'default'}/${state.slot.name} from now, ${iso(at)}`);
      // archivePriceRule stops a rule "from now" by the wall clock: the service is given the same moment by this server's clock.
      await server.services.priceRules.archive(merchant.id, state.slot.name, state.slot.book === 'pro' ? 'pro' : null, new Date(at));
      // Stops the rule from that moment, with the versions scheduled later (they never take effect).
      for (const version of state.versions) if (version.effectiveFrom > at) version.cancelled = true;
      state.stops.push({ at, seq: oracle.nextSeq() });
      count(state.versions.some((version) => version.effectiveFrom === at) ? 'archive at the moment of its last version' : 'archive');
    };

    /** Every moment something changed (that an event may still be stamped at); a provider price's with its model. */
    const changes = () => [
      ...[...oracle.rules.values()].flatMap((state) => [...state.versions.map((version) => version.effectiveFrom), ...state.stops.map((stop) => stop.at)]).map((time) => ({ time, pair: null })),
      ...oracle.plans.flat().map((change) => ({ time: change.from, pair: null })),
      ...[...oracle.prices.entries()].flatMap(([pair, history]) => history.map((price) => ({ time: price.from, pair }))),
    ].filter(({ time }) => time > SINCE && time <= now + 290_000).sort((a, b) => a.time - b.time);
    /** When an event happened, and the model it was of when it is stamped at a price change. */
    const timeOf = (when: EventSpec['when']): { at: number; pair?: string | null } => {
      switch (when.kind) {
        case 'now': return { at: now };
        case 'ahead': return { at: now + when.amount * 1000 };
        case 'recent': return { at: now - when.amount * 1000 };
        case 'hoursBack': return { at: now - when.amount * HOUR };
        case 'lastMonth': return { at: monthOf(now) - when.amount * HOUR };
        case 'monthEdge': return { at: monthOf(now) - when.amount };
        case 'change':
        case 'priceChange': {
          const times = changes().filter(({ pair }) => when.kind === 'change' || pair !== null);
          if (times.length === 0) return { at: now };
          count('event at a change');
          const { time, pair } = times[Math.floor(when.amount / 2) % times.length]!;
          if (pair) count('event at a provider price change');
          return { at: time - (when.amount % 2), pair };
        }
      }
    };

    let keyCount = 0;
    for (const [stepIndex, step] of scenario.steps.entries()) {
      oracle.now = now;
      const existing = [...oracle.rules.values()];
      switch (step.kind) {
        case 'advance': {
          now += step.ms;
          log.push(`#${stepIndex} clock → ${iso(now)}`);
          break;
        }
        case 'put': {
          const slot = step.target === 'volume' ? volumeSlot : step.target === 'existing' && existing.length > 0 ? existing[step.pick % existing.length]!.slot : SLOTS[step.slot]!;
          const spec = step.target === 'volume' && step.volume ? step.volume : specFor(slot, step.rule);
          const state = oracle.rules.get(slot);
          // "From now" (see Oracle.fromNow), given as a date: rules read the wall clock, not this server's.
          // Taken only when no version of the rule is in force from then or later: history is never rewritten.
          let effectiveFrom = step.fromNow ? oracle.fromNow(now) : null;
          const latest = state?.versions.filter((version) => oracle.tookEffect(state, version)).sort((a, b) => a.effectiveFrom - b.effectiveFrom).at(-1);
          if (effectiveFrom !== null && latest && latest.effectiveFrom >= effectiveFrom) effectiveFrom = null;
          const scheduled = effectiveFrom === null;
          effectiveFrom ??= Math.max(now + 6 * MINUTE, ...(state?.versions.map((version) => version.effectiveFrom + MINUTE) ?? [])) + step.laterMinutes * MINUTE;
          log.push(`#${stepIndex} put ${slot.book || 'default'}/${slot.name} from ${scheduled ? '' : 'now, '}${iso(effectiveFrom)}`);
          const put = await gql<{ putPriceRule: { id: string; effectiveFrom: string } }>(secret, 'mutation($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id effectiveFrom } }', {
            input: ruleInput(slot, spec, effectiveFrom),
          });
          if (Date.parse(put.putPriceRule.effectiveFrom) !== effectiveFrom) fail(`put took effect at ${put.putPriceRule.effectiveFrom}, asked for ${iso(effectiveFrom)}`);
          addVersion(slot, spec, put.putPriceRule.id, effectiveFrom);
          count(scheduled ? 'version scheduled' : 'version from now');
          if (step.pull) await archive(oracle.rules.get(slot)!, stepIndex);
          break;
        }
        case 'archive': {
          if (existing.length === 0) break;
          const state = step.latest
            ? existing.reduce((last, candidate) => (Math.max(...candidate.versions.map((version) => version.seq)) > Math.max(...last.versions.map((version) => version.seq)) ? candidate : last))
            : existing[step.pick % existing.length]!;
          await archive(state, stepIndex);
          break;
        }
        case 'plan': {
          const history = oracle.plans[step.customer]!;
          const planKey = step.toPlan ? 'pro' : null;
          const last = history.at(-1);
          // From now (this server's clock): a millisecond after the customer's latest usage at or after
          // now, or a millisecond after a change made so just before; else at a date after its latest change.
          let fromNow: number | null = null;
          if (step.laterMinutes === 0) {
            fromNow = oracle.fromNow(now, step.customer);
            if (last && last.from >= fromNow && last.from - fromNow < 1000) fromNow = last.from + 1;
            if (last && fromNow <= last.from) fromNow = null;
          }
          const given = fromNow === null ? Math.max(now + 6 * MINUTE, ...history.map((change) => change.from + MINUTE)) + step.laterMinutes * MINUTE : null;
          const from = fromNow ?? given!;
          log.push(`#${stepIndex} c${step.customer} → ${planKey ?? 'default book'} from ${fromNow === null ? '' : 'now, '}${iso(from)}`);
          await gql(secret, 'mutation($id: ID!, $planKey: String, $from: DateTime) { setCustomerPlan(customerId: $id, planKey: $planKey, effectiveFrom: $from) { id } }', {
            id: customers[step.customer], planKey, from: given === null ? null : iso(given),
          });
          // Putting a customer on the plan it is on already changes nothing.
          if ((last?.planKey ?? null) === planKey) break;
          history.push({ planKey, from });
          count(fromNow === null ? 'plan change scheduled' : 'plan change from now');
          const stored = await server.services.prisma.customerPlan.findFirst({ where: { customerId: customers[step.customer] }, orderBy: { effectiveFrom: 'desc' } });
          if (stored?.effectiveFrom.getTime() !== from) fail(`the plan change took effect at ${stored?.effectiveFrom.toISOString()}, expected ${iso(from)}`);
          break;
        }
        case 'price': {
          // A new provider price, from a date: a price "from now" reads the wall clock, not this server's.
          const pair = `${step.provider}/${step.model}`;
          const history = oracle.prices.get(pair) ?? [];
          const from = Math.max(now + 6 * MINUTE, ...history.map((price) => price.from + MINUTE)) + step.laterMinutes * MINUTE;
          log.push(`#${stepIndex} price ${pair} from ${iso(from)}: input ${step.input}, output ${step.output} per million tokens`);
          await gql(secret, 'mutation($input: SetProviderPriceInput!) { setProviderPrice(input: $input) { ref } }', {
            input: { provider: step.provider, model: step.model, effectiveFrom: iso(from), rates: { perMillionTokens: { input: step.input, output: step.output } } },
          });
          oracle.prices.set(pair, [...history, { from, input: step.input, output: step.output }]);
          count('provider price changed');
          break;
        }
        case 'tie': {
          const live = existing.filter((state) => oracle.live(state));
          if (live.length === 0) break;
          const { slot } = live[step.pick % live.length]!;
          const spec: RuleSpec = slot.part === 'cost' ? { type: 'MARKUP', config: { percent: '1' } } : { type: 'FLAT', config: { unitPrice: '1' } };
          log.push(`#${stepIndex} put ${slot.book || 'default'}/${slot.name}+tie with the same target: refused`);
          const response = await server.graphql('mutation($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id } }', { input: ruleInput(slot, spec, oracle.fromNow(now), `${slot.name}+tie`) }, secret);
          // Two rules of a book that would match equally are refused.
          if (response.errors?.[0]?.extensions.code !== 'CONFLICT') fail(`a second rule on the target of ${slot.name} was not refused as a tie: ${JSON.stringify(response.errors ?? response.data)}`);
          count('tie refused');
          break;
        }
        case 'batch': {
          const events = step.graphql ? step.events.slice(0, 1) : step.events;
          const sent: SentEvent[] = [];
          for (const generated of events) {
            const { at, pair } = timeOf(generated.when);
            const event = pair ? { ...generated, provider: pair.split('/')[0] as EventSpec['provider'], model: pair.split('/')[1] as EventSpec['model'] } : generated;
            const key = `e${++keyCount}`;
            const record = {
              customer: customers[event.customer], idempotencyKey: `${merchant.id.slice(0, 8)}-${key}`, timestamp: event.when.kind === 'now' ? null : iso(at),
              usage: defined({ provider: event.provider, model: event.model, inputTokens: event.inputTokens, outputTokens: event.outputTokens, requests: event.requests }),
              ...(event.units === undefined ? {} : { quantities: { units: event.units } }),
              ...(event.currency === 'USD' ? {} : { currency: event.currency }),
            };
            const expected = oracle.price(event, at);
            const label = `c${event.customer} ${key} @${iso(at)} ${event.currency === 'USD' ? '' : `${event.currency} `}${event.provider}/${event.model} in=${event.inputTokens} out=${event.outputTokens} req=${event.requests ?? '-'} units=${event.units ?? '-'}`;
            const item: SentEvent = { key: record.idempotencyKey, customer: event.customer, currency: event.currency, at, record, expected, label };
            oracle.events.push(item);
            sent.push(item);
            log.push(`#${stepIndex} ${step.graphql ? 'recordUsage' : 'batch'} ${label} → cost ${expected.costKnown ? show(expected.cost) : 'unknown'}, charge ${show(expected.charged)}`
              + `${expected.shortfall ? ` (shortfall ${show(expected.shortfall)})` : ''}${expected.settled ? ` (settled ${show(expected.settled)})` : ''} [${lineText(expected.lines, names)}]`);
          }
          let answers: Answer[];
          if (step.graphql) {
            const response = await server.graphql<{ recordUsage: { event: NonNullable<Answer['event']>; chargeError: { code: string } | null } }>(
              `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { chargeError { code } event { ${EVENT_FIELDS} } } }`,
              { input: sent[0]!.record },
              secret,
            );
            if (response.errors?.length) answers = [{ ok: false, error: { code: response.errors[0]!.extensions.code, message: response.errors[0]!.message } }];
            else answers = [{ ok: true, event: response.data!.recordUsage.event, chargeError: response.data!.recordUsage.chargeError }];
          } else {
            const response = await fetch(`${server.url}/v1/usage/batch`, {
              method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` }, body: JSON.stringify({ events: sent.map((event) => event.record) }),
            });
            if (response.status !== 200) fail(`the batch answered ${response.status}: ${await response.text()}`);
            answers = ((await response.json()) as { results: Answer[] }).results;
          }
          sent.forEach((event, index) => compareAnswer(event, answers[index]!, names, fail));
          await compareWallets(secret, customers, oracle, fail);
          break;
        }
      }
    }
    await compareStored(merchant.id, oracle, names, fail);
  } catch (error) {
    if ((error as Error).message.includes('--- what this run did ---')) throw error;
    fail(`${(error as Error).stack ?? error}`);
  }
}

function compareAnswer(event: SentEvent, answer: Answer, names: Map<string, string>, fail: (message: string) => never) {
  const { expected } = event;
  const where = `event ${event.label}`;
  if (!answer.ok || !answer.event) fail(`${where} was refused: ${JSON.stringify(answer.error)}`);
  const got = answer.event!;
  const mismatches: string[] = [];
  const compare = (what: string, actual: bigint, wanted: bigint) => {
    if (actual !== wanted) mismatches.push(`${what} ${show(actual)}, expected ${show(wanted)}`);
  };
  compare('cost', scaled(got.cost), expected.cost);
  if (got.currency !== event.currency) mismatches.push(`currency ${got.currency}, expected ${event.currency}`);
  // A dollar event's cost is unknown, saying why, exactly when no provider price was in force at its time.
  if (event.currency === 'USD' && (got.costProblem !== null) !== !expected.costKnown) mismatches.push(`costProblem ${JSON.stringify(got.costProblem)} with the cost ${expected.costKnown ? 'known' : 'unknown'}`);
  compare('charge', scaled(got.charge), expected.charged);
  compare('margin', scaled(got.margin), expected.charged - expected.cost);
  compare('shortfall', scaled(got.shortfall), expected.shortfall);
  compare('shortfallSettled', scaled(got.shortfallSettled), expected.settled);
  if (got.status !== expected.status) mismatches.push(`status ${got.status}, expected ${expected.status}`);
  if ((answer.chargeError?.code ?? null) !== (expected.shortfall > 0n ? 'INSUFFICIENT_FUNDS' : null)) mismatches.push(`chargeError ${JSON.stringify(answer.chargeError)} with a shortfall of ${show(expected.shortfall)}`);
  if (got.charges) {
    const actual = got.charges.map((line) => ({ ruleId: line.priceRuleId, amount: scaled(line.amount), quantity: line.quantity === null ? null : scaled(line.quantity) }));
    if (lineText(actual, names) !== lineText(expected.lines, names)) mismatches.push(`charge lines [${lineText(actual, names)}], expected [${lineText(expected.lines, names)}]`);
    // Documented: the lines add up to charge + shortfall − shortfallSettled (when a rule priced it).
    if (actual.length > 0 && actual.reduce((sum, line) => sum + line.amount, 0n) !== scaled(got.charge) + scaled(got.shortfall) - scaled(got.shortfallSettled)) {
      mismatches.push('the charge lines do not add up to charge + shortfall − shortfallSettled');
    }
  }
  if (mismatches.length > 0) fail(`${where}: ${mismatches.join('; ')}`);
}

async function compareWallets(secret: string, customers: string[], oracle: Oracle, fail: (message: string) => never) {
  const wallets = customers.flatMap((id, i) => ['USD', 'EUR'].map((currency) => ({ id, i, currency })));
  const data = await gql<Record<string, { balance: { amount: string } }>>(secret, `{ ${wallets.map(({ id, currency }, n) => `w${n}: wallet(customerId: "${id}", currency: "${currency}") { balance { amount } }`).join(' ')} }`);
  wallets.forEach(({ i, currency }, n) => {
    const balance = scaled(data[`w${n}`]!.balance.amount) / NANO;
    // The wallet moved by exactly the events' charges; what is finer than a nano is carried.
    const left = oracle.wallets.get(`${i}|${currency}`)!;
    const expected = ceilSigned(left, NANO);
    if (balance !== expected) fail(`${currency} wallet of c${i}: balance ${show(balance * NANO)}, expected ${show(expected * NANO)} (exactly ${show(left)} left)`);
  });
}

async function compareStored(merchantId: string, oracle: Oracle, names: Map<string, string>, fail: (message: string) => never) {
  const rows = await server.services.prisma.usageEvent.findMany({ where: { merchantId } });
  const byKey = new Map(rows.map((row) => [row.idempotencyKey, row]));
  if (rows.length !== oracle.events.length) fail(`${rows.length} events stored, ${oracle.events.length} sent`);
  for (const event of oracle.events) {
    const row = byKey.get(event.key);
    if (!row) fail(`event ${event.label} was not stored`);
    const { expected } = event;
    const metadata = row!.metadata as { pricing?: [string | null, string, string?][]; shortfallAttos?: string; withheldCreditAttos?: string; costProblem?: string };
    const lines = (metadata.pricing ?? []).map(([ruleId, amount, quantity]) => ({ ruleId, amount: BigInt(amount), quantity: quantity === undefined ? null : scaled(quantity) }));
    const stored = {
      cost: BigInt(row!.costAttos.toFixed(0)), charge: BigInt(row!.chargeAttos.toFixed(0)), margin: BigInt(row!.marginAttos.toFixed(0)),
      shortfall: BigInt(metadata.shortfallAttos ?? '0'), settled: BigInt(metadata.withheldCreditAttos ?? '0'), occurredAt: row!.occurredAt.getTime(),
    };
    const mismatches: string[] = [];
    if (stored.cost !== expected.cost) mismatches.push(`cost ${show(stored.cost)}, expected ${show(expected.cost)}`);
    if (stored.charge !== expected.charged) mismatches.push(`charge ${show(stored.charge)}, expected ${show(expected.charged)}`);
    if (stored.margin !== expected.charged - expected.cost) mismatches.push(`margin ${show(stored.margin)}, expected ${show(expected.charged - expected.cost)}`);
    if (stored.shortfall !== expected.shortfall) mismatches.push(`shortfall ${show(stored.shortfall)}, expected ${show(expected.shortfall)}`);
    if (stored.settled !== expected.settled) mismatches.push(`shortfallSettled ${show(stored.settled)}, expected ${show(expected.settled)}`);
    if (row!.status !== expected.status) mismatches.push(`status ${row!.status}, expected ${expected.status}`);
    if (row!.currency.trim() !== event.currency) mismatches.push(`currency ${row!.currency}`);
    if (event.currency === 'USD' && (metadata.costProblem !== undefined) !== !expected.costKnown) mismatches.push(`costProblem ${JSON.stringify(metadata.costProblem)} with the cost ${expected.costKnown ? 'known' : 'unknown'}`);
    if (stored.occurredAt !== event.at) mismatches.push(`occurredAt ${iso(stored.occurredAt)}`);
    if (lineText(lines, names) !== lineText(expected.lines, names)) mismatches.push(`charge lines [${lineText(lines, names)}], expected [${lineText(expected.lines, names)}]`);
    if (mismatches.length > 0) fail(`stored event ${event.label}: ${mismatches.join('; ')}`);
  }
}

describe('usage pricing against a model of the documented rules', () => {
  it('prices random event sequences under random, changing rule books as the README says', { timeout: 120_000 }, async () => {
    await fc.assert(fc.asyncProperty(scenarioArb, runScenario), { seed: SEED, numRuns: RUNS, endOnFailure: !SHRINK });
    if (STATS) console.log(`seed ${SEED}, ${RUNS} runs:`, stats);
    expect(true).toBe(true);
  });
});
