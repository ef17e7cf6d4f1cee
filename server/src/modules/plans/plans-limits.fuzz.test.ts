import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type GraphQLResponse, type TestServer } from '../../../test/server.ts';
import { ERROR_CODES } from '../../shared/errors.ts';

/**
 * Model-based fuzzing of plans and spend limits as usage ingestion meets them, through the public
 * API only (GraphQL and POST /v1/usage/batch with a merchant's secret key), on a controllable clock.
 *
 * Each run builds a merchant: two meters ("units", a QUANTITY meter, and "calls", one per request),
 * a default price book of FLAT rules, plans "basic" and "pro" with their own FLAT rules (some
 * absent, so the default book prices that meter; "pro" may have a version scheduled ahead), three
 * customers with paid and plan-included credit. Then a random sequence of: usage (one record over
 * GraphQL, or a batch over HTTP, late, slightly ahead or now), putPlan, archivePlan,
 * setCustomerPlan (now, back-dated or scheduled), new rule versions, setSpendLimit,
 * removeSpendLimit, grants (idempotent "included credit of the month" keys), overdraft limits,
 * clock advances across the month's end, replays (as sent, or changed), and broken arguments.
 *
 * A model predicts every answer: the plan in force at each event's time and the rule versions in
 * force then give its exact charge (prices have at most 12 decimals, quantities at most 6, so no
 * rounding is involved); the wallet's balance, sub-nano carry, overdraft and credit by kind
 * (promotional, then plan-included, then paid credit is spent: the default consumption order)
 * give its status and what is taken; plan histories follow PlanService.assign's documented rules
 * ("from now" moved past usage already priced, history only appended, archived plans not newly
 * assignable); spend limits are the gateway's (the ledger and post-request metering do not
 * enforce them: see SpendLimitService and GatewayService.assertUnderSpendLimit), so recording is
 * never refused for them and `spentThisMonth` must be exactly the month's charges.
 * Events in EUR are priced by the same rules (rules carry no currency) and paid from the EUR wallet,
 * and counted by the EUR limit only. After the sequence, every event, plan, assignment and limit in
 * the database is compared with the model, and ledgerIntegrity must hold.
 *
 * Two more properties: malformed arguments alone (each VALIDATION or NOT_FOUND, and nothing
 * written, compared row by row), and tiered rules across plan changes (invariants only: see runTiered).
 * The brief's "included credits granted once per period" has no plan field behind it here: plans
 * carry no included credit, so it is fuzzed as PLAN_INCLUDED grants under a per-month idempotency key.
 *
 * Knobs (environment): FUZZ_RUNS, FUZZ_RUNS_BAD, FUZZ_RUNS_TIERED, FUZZ_SEED, FUZZ_SHRINK=1, FUZZ_STATS=1,
 * FUZZ_TIME_LIMIT_MS (no run starts past it), FUZZ_TIMEOUT_MS (each test's timeout).
 */

// ------------------------------------------------------------------ server and clock

const START = Date.parse('2026-06-29T18:00:00Z');
const SINCE = '2026-01-01T00:00:00.000Z';
const MAX_FUTURE_MS = 5 * 60_000;
const EARLIEST_USAGE_MS = Date.parse('2000-01-01T00:00:00Z');
let now = new Date(START);
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

// ------------------------------------------------------------------ operations

const CREATE_METER = `mutation ($input: CreateMeterInput!) { createMeter(input: $input) { key } }`;
const PUT_RULE = `mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id effectiveFrom plan { key } } }`;
const CREATE_CUSTOMER = `mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { id externalId } }`;
const PUT_PLAN = `mutation ($input: PutPlanInput!) { putPlan(input: $input) { key name description archivedAt } }`;
const ARCHIVE_PLAN = `mutation ($key: String!) { archivePlan(key: $key) { key archivedAt } }`;
const SET_PLAN = `mutation ($customerId: ID!, $planKey: String, $effectiveFrom: DateTime) {
  setCustomerPlan(customerId: $customerId, planKey: $planKey, effectiveFrom: $effectiveFrom) { id plan { key } } }`;
const SET_LIMIT = `mutation ($customerId: ID!, $amount: Decimal!, $currency: String) {
  setSpendLimit(customerId: $customerId, amount: $amount, currency: $currency) { customerId limit { amount currency } spentThisMonth resetsAt } }`;
const REMOVE_LIMIT = `mutation ($customerId: ID!, $currency: String) { removeSpendLimit(customerId: $customerId, currency: $currency) }`;
const RECORD = `mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { replayed chargeError { code } event { id customerId status charge shortfall occurredAt } } }`;
const GRANT = `mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed transaction { id amount { amount } } } }`;
const OVERDRAFT = `mutation ($customerId: ID!, $limit: Decimal!) { setOverdraftLimit(customerId: $customerId, limit: $limit) { overdraftLimit { amount } } }`;
const WALLET = `query ($id: ID!, $currency: String) { wallet(customerId: $id, currency: $currency) { balance { amount } overdraftLimit { amount } grants(first: 100) { totalCount nodes { kind remaining { amount } } } } }`;
const CUSTOMER = `query ($id: ID!) { customer(id: $id) { plan { key } spendLimits { customerId limit { amount currency } spentThisMonth resetsAt } } }`;
const INTEGRITY = `query { ledgerIntegrity { ok violations } }`;

type CustRef = 0 | 1 | 2 | 'ext0' | 'upper1' | 'unknown' | 'malformed' | 'empty';
type TimeSpec = { rel: number } | { text: string } | null | undefined;
type GrantKind = 'PAID' | 'PLAN_INCLUDED' | 'PROMOTIONAL';
interface EventSpec {
  c: CustRef;
  key: string;
  q: unknown;
  at: TimeSpec;
  currency: unknown;
}

type Op =
  | { t: 'usage'; ev: EventSpec }
  | { t: 'batch'; evs: EventSpec[] }
  | { t: 'putPlan'; key: string; name: string; description: string | null | undefined }
  | { t: 'archivePlan'; key: string }
  | { t: 'assign'; c: CustRef; plan: string | null; at: TimeSpec }
  | { t: 'rule'; book: string | null; price: string; at: TimeSpec }
  | { t: 'setLimit'; c: CustRef; amount: unknown; currency: unknown }
  | { t: 'removeLimit'; c: CustRef; currency: unknown }
  | { t: 'grant'; c: 0 | 1 | 2; amount: string; kind: GrantKind; key: string }
  | { t: 'overdraft'; c: 0 | 1 | 2; limit: string }
  | { t: 'advance'; seconds: number }
  | { t: 'replay'; index: number; mutate: boolean };

// ------------------------------------------------------------------ generators

/** Prices with at most 12 decimals: a quantity with at most 6 is charged a whole number of attos. */
const PRICES = ['0', '0.01', '0.0025', '0.000001', '0.000000000003', '1.5', '0.333333333333'] as const;
const priceArb = fc.constantFrom(...PRICES);
const custArb = fc.oneof({ weight: 12, arbitrary: fc.constantFrom<CustRef>(0, 0, 1, 2) }, { weight: 2, arbitrary: fc.constantFrom<CustRef>('ext0', 'upper1') }, { weight: 1, arbitrary: fc.constantFrom<CustRef>('unknown', 'malformed', 'empty') });
const goodQuantity = fc.oneof(
  { weight: 6, arbitrary: fc.nat(50) as fc.Arbitrary<unknown> },
  { weight: 2, arbitrary: fc.constantFrom<unknown>('2.5', '0.000001', '12.345678', '1000', 0, '0') },
  { weight: 1, arbitrary: fc.constantFrom<unknown>('123456789012345', Number.MAX_SAFE_INTEGER, '999999999999999.5') },
);
const BAD_QUANTITIES: unknown[] = [-1, 1.5, '1e3', '-2', '', 'abc', '1.1234567890123456789', '1234567890123456', null, true, {}, [], 1e21, ' 5'];
const badQuantity = fc.constantFrom<unknown>(...BAD_QUANTITIES);
/** Texts no usage timestamp or plan change may have (the GraphQL DateTime scalar, or usage's own bounds). */
const BAD_TIMES = ['2026-02-30T00:00:00Z', 'yesterday', '2026-06-29 12:00', '+010000-01-01T00:00:00Z', '1999-12-31T23:59:59.999Z', '0050-06-01T00:00:00Z', ''];
const usageTimeArb: fc.Arbitrary<TimeSpec> = fc.oneof(
  { weight: 8, arbitrary: fc.constant(undefined) },
  { weight: 5, arbitrary: fc.constantFrom(-40 * 86_400, -3 * 86_400, -3600, -1, 1, 120, 299).map((rel) => ({ rel })) },
  { weight: 1, arbitrary: fc.constantFrom(301, 86_400).map((rel) => ({ rel })) },
  { weight: 1, arbitrary: fc.constantFrom(...BAD_TIMES).map((text) => ({ text })) },
);
const USAGE_KEYS = ['u1', 'u2', 'u3', ' u1 ', 'u1\t'];
const usageKeyArb = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...USAGE_KEYS) }, { weight: 8, arbitrary: fc.uuid() }, { weight: 1, arbitrary: fc.constantFrom('', '   ', 'k'.repeat(201), 'a\u0000b') });
const currencyArb = fc.oneof({ weight: 10, arbitrary: fc.constantFrom<unknown>(undefined, undefined, 'USD', 'usd', 'EUR', ' eur ') }, { weight: 1, arbitrary: fc.constantFrom<unknown>('ZZZ', 'EURO', '', null) });
const eventArb = (quantities: fc.Arbitrary<unknown>): fc.Arbitrary<EventSpec> =>
  fc.record({ c: custArb, key: usageKeyArb, q: quantities, at: usageTimeArb, currency: currencyArb });
const quantityArb = fc.oneof({ weight: 12, arbitrary: goodQuantity }, { weight: 1, arbitrary: badQuantity });
const PLAN_KEYS = ['basic', 'pro', 'extra'];
const planKeyArb = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...PLAN_KEYS) }, { weight: 1, arbitrary: fc.constantFrom('ghost', 'Bad Key', '', 'x'.repeat(65), 'pro ') });
const nameArb = fc.oneof({ weight: 6, arbitrary: fc.constantFrom('Basic', '  Pro plan  ', 'Extra') }, { weight: 1, arbitrary: fc.constantFrom('', '   ', 'n'.repeat(101), 'a\u0000b') });
const descriptionArb = fc.constantFrom<string | null | undefined>(undefined, null, 'Included credits monthly', '   ', 'd'.repeat(1001));
const assignTimeArb: fc.Arbitrary<TimeSpec> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(undefined, null) },
  { weight: 5, arbitrary: fc.constantFrom(-3 * 86_400, -3600, -1, 0, 1, 60, 3600, 2 * 86_400).map((rel) => ({ rel })) },
  { weight: 1, arbitrary: fc.constantFrom('2026-02-30T00:00:00Z', 'soon', '+010000-01-01T00:00:00Z', '9999-12-31T23:59:59.999Z', '0050-06-01T00:00:00Z', '2001-01-01T00:00:00+02:00').map((text) => ({ text })) },
);
const ruleTimeArb: fc.Arbitrary<TimeSpec> = fc.constantFrom(-86_400, -3600, -1, 1, 600, 7200, 3 * 86_400).map((rel) => ({ rel }));
const GOOD_LIMITS: unknown[] = ['0.01', '1', '25', '0.000000001', 5, ' 2.5 '];
const BAD_LIMITS: unknown[] = ['0', '-1', '1.0000000001', 'abc', '1e3', '1000000000.5', '', 1.5, null, true, '1000000000000'];
const limitAmountArb = fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...GOOD_LIMITS) }, { weight: 1, arbitrary: fc.constantFrom(...BAD_LIMITS) });
const limitCurrencyArb = fc.oneof({ weight: 8, arbitrary: fc.constantFrom<unknown>(undefined, 'USD', 'usd', 'EUR') }, { weight: 1, arbitrary: fc.constantFrom<unknown>('ZZZ', 'US', null) });

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 12, arbitrary: fc.record({ t: fc.constant('usage' as const), ev: eventArb(quantityArb) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('batch' as const), evs: fc.array(eventArb(quantityArb), { minLength: 1, maxLength: 4 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('putPlan' as const), key: planKeyArb, name: nameArb, description: descriptionArb }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('archivePlan' as const), key: planKeyArb }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant('assign' as const), c: custArb, plan: fc.oneof({ weight: 5, arbitrary: planKeyArb as fc.Arbitrary<string | null> }, { weight: 1, arbitrary: fc.constant(null) }), at: assignTimeArb }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('rule' as const), book: fc.constantFrom<string | null>(null, 'basic', 'pro', 'extra', 'ghost'), price: fc.oneof({ weight: 6, arbitrary: priceArb as fc.Arbitrary<string> }, { weight: 1, arbitrary: fc.constant('-0.5') }), at: ruleTimeArb }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('setLimit' as const), c: custArb, amount: limitAmountArb, currency: limitCurrencyArb }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('removeLimit' as const), c: custArb, currency: limitCurrencyArb }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('grant' as const), c: fc.constantFrom<0 | 1 | 2>(0, 1, 2), amount: fc.constantFrom('0.02', '1', '0.000000007', '0', '-1', '0.0000000001'), kind: fc.constantFrom<GrantKind>('PAID', 'PLAN_INCLUDED', 'PLAN_INCLUDED', 'PROMOTIONAL'), key: fc.oneof(fc.constantFrom('included-2026-06', 'included-2026-07', 'topup'), fc.uuid()) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('overdraft' as const), c: fc.constantFrom<0 | 1 | 2>(0, 1, 2), limit: fc.constantFrom('0', '0.5', '2', '-1') }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('advance' as const), seconds: fc.constantFrom(1, 59, 600, 3600, 86_400, 3 * 86_400) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('replay' as const), index: fc.nat(40), mutate: fc.boolean() }) },
);

interface Setup {
  /** When the run starts: mid-week, or minutes before the month ends (usage stamped ahead lands in the next). */
  start: number;
  defaults: { units: string; calls: string };
  basic: { units: string | null; calls: string | null };
  pro: { units: string | null; calls: string | null; later: { hours: number; price: string } | null };
  paid: string[];
  included: string[];
}
const setupArb: fc.Arbitrary<Setup> = fc.record({
  start: fc.constantFrom(START, Date.parse('2026-06-30T23:57:00Z')),
  defaults: fc.record({ units: priceArb, calls: priceArb }),
  basic: fc.record({ units: fc.option(priceArb), calls: fc.option(priceArb) }),
  pro: fc.record({ units: fc.option(priceArb), calls: fc.option(priceArb), later: fc.option(fc.record({ hours: fc.constantFrom(1, 30, 80), price: priceArb })) }),
  paid: fc.array(fc.constantFrom('0', '0.05', '1', '3.5'), { minLength: 3, maxLength: 3 }),
  included: fc.array(fc.constantFrom('0', '0.03', '0.5'), { minLength: 3, maxLength: 3 }),
});

// ------------------------------------------------------------------ the server's input rules, as a spec

const ATTOS = 1_000_000_000n;
const UNIT_ATTOS = ATTOS * ATTOS;
const MAX_NANOS = 1_000_000_000n * ATTOS;
const MICRO = 1_000_000n;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const PLAN_KEY = /^[a-z0-9_-]{1,64}$/;
const ISO = new Set(Intl.supportedValuesOf('currency'));
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const unstorable = (text: string) => text.includes('\u0000') || LONE_SURROGATE.test(text);

/** A decimal as attos (up to 18 places, 12 whole digits not counting zeros leading them), or null. */
function attosOf(text: unknown): bigint | null {
  if (typeof text !== 'string') return null;
  const match = /^(-)?0*(\d{1,12})(?:\.(\d{1,18}))?$/.exec(text.trim());
  if (!match) return null;
  const attos = BigInt(match[2]!) * UNIT_ATTOS + BigInt((match[3] ?? '').padEnd(18, '0'));
  return match[1] ? -attos : attos;
}
function nanosOf(text: unknown): bigint | null {
  const attos = attosOf(typeof text === 'number' && Number.isSafeInteger(text) ? String(text) : text);
  if (attos === null || attos % ATTOS !== 0n) return null;
  const nanos = attos / ATTOS;
  return nanos > MAX_NANOS || nanos < -MAX_NANOS ? null : nanos;
}
/** An amount the server wrote (any size). */
function readAttos(text: string): bigint {
  const match = /^(-)?(\d+)(?:\.(\d{1,18}))?$/.exec(text);
  if (!match) throw new Error(`unparseable amount from the server: ${text}`);
  const attos = BigInt(match[2]!) * UNIT_ATTOS + BigInt((match[3] ?? '').padEnd(18, '0'));
  return match[1] ? -attos : attos;
}
const readNanos = (text: string) => {
  const attos = readAttos(text);
  expect(attos % ATTOS, `${text} is whole nanos`).toBe(0n);
  return attos / ATTOS;
};
function currencyOf(value: unknown): string | null {
  if (value !== undefined && value !== null && typeof value !== 'string') return null;
  const code = ((value as string | null | undefined) ?? 'USD').trim().toUpperCase();
  return /^[A-Z]{3}$/.test(code) && ISO.has(code) ? code : null;
}
/** A valid quantity (a safe whole number, or up to 15 digits and 18 decimals) in millionths; our generators use at most 6 decimals. */
function microOf(q: unknown): bigint | null {
  if (typeof q === 'number') return Number.isSafeInteger(q) && q >= 0 ? BigInt(q) * MICRO : null;
  if (typeof q !== 'string') return null;
  const match = /^(\d{1,15})(?:\.(\d{1,18}))?$/.exec(q);
  if (!match) return null;
  const fraction = match[2] ?? '';
  if (fraction.length > 6) throw new Error(`the model prices quantities of at most 6 decimals: ${q}`);
  return BigInt(match[1]!) * MICRO + BigInt(fraction.padEnd(6, '0'));
}
/** A time text as the DateTime scalar (and the HTTP route) read the ones generated here, or null. */
function timeOf(text: string): number | null {
  if (['2026-02-30T00:00:00Z', 'yesterday', '2026-06-29 12:00', 'soon', '', '+010000-01-01T00:00:00Z'].includes(text)) return null;
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new Error(`the model cannot read ${text}`);
  return ms;
}
const monthStart = (ms: number) => Date.UTC(new Date(ms).getUTCFullYear(), new Date(ms).getUTCMonth(), 1);
const monthEnd = (ms: number) => Date.UTC(new Date(ms).getUTCFullYear(), new Date(ms).getUTCMonth() + 1, 1);

// ------------------------------------------------------------------ the model

interface Version {
  price: bigint;
  from: number;
}
interface ModelWallet {
  balance: bigint;
  carry: bigint;
  overdraft: bigint;
  /** Remaining credit by kind: spent PROMOTIONAL, then PLAN_INCLUDED, then PAID. */
  credit: Record<GrantKind, bigint>;
}
type Currency = 'USD' | 'EUR';
const CURRENCIES: readonly Currency[] = ['USD', 'EUR'];
interface ModelCustomer {
  id: string;
  ext: string;
  /** Appended only, each later than the one before. */
  history: { plan: string | null; from: number }[];
  /** By currency: rules carry none, so an event in EUR is priced alike and paid from the EUR wallet. */
  wallets: Record<Currency, ModelWallet>;
}
interface ModelEvent {
  id: string;
  key: string;
  c: number;
  currency: Currency;
  sig: string;
  at: number;
  status: string;
  charge: bigint;
  shortfall: bigint;
  chargeError: string | null;
}
interface Model {
  merchant: { id: string; secret: string };
  customers: ModelCustomer[];
  /** '' for the default book, else a plan key: versions of the rules "units" and "calls". */
  books: Map<string, Map<'units' | 'calls', Version[]>>;
  plans: Map<string, { archived: boolean; name: string; description: string | null }>;
  events: Map<string, ModelEvent>;
  limits: Map<string, bigint>;
  grantKeys: Map<string, string>;
  /** Usage records sent (as sent), for replays. */
  sent: Record<string, unknown>[];
  log: string[];
}

const versionAt = (versions: Version[] | undefined, at: number) => versions?.filter((v) => v.from <= at).reduce<Version | undefined>((a, b) => (!a || b.from > a.from ? b : a), undefined);
const planAt = (customer: ModelCustomer, at: number) => customer.history.filter((h) => h.from <= at).at(-1)?.plan ?? null;

/** What an event of `micro` millionths of a unit (plus its one request) costs the customer at `at`. */
function priceOf(model: Model, c: number, at: number, micro: bigint): bigint {
  const plan = planAt(model.customers[c]!, at);
  let total = 0n;
  for (const meter of ['units', 'calls'] as const) {
    const version = (plan !== null ? versionAt(model.books.get(plan)?.get(meter), at) : undefined) ?? versionAt(model.books.get('')!.get(meter), at);
    if (!version) continue;
    const quantity = meter === 'units' ? micro : MICRO;
    expect((quantity * version.price) % MICRO, 'the model prices exactly').toBe(0n);
    total += (quantity * version.price) / MICRO;
  }
  return total;
}

function debit(wallet: ModelWallet, attos: bigint): void {
  const total = wallet.carry + attos;
  const nanos = total / ATTOS;
  wallet.carry = total - nanos * ATTOS;
  wallet.balance -= nanos;
  let left = nanos;
  for (const kind of ['PROMOTIONAL', 'PLAN_INCLUDED', 'PAID'] as const) {
    const take = wallet.credit[kind] < left ? wallet.credit[kind] : left;
    wallet.credit[kind] -= take;
    left -= take;
  }
}

/** Charges a priced event as ingest does: whole if it fits (down to the overdraft floor), else what is left. */
function chargeEvent(wallet: ModelWallet, priced: bigint): { status: string; charge: bigint; shortfall: bigint; chargeError: string | null } {
  if (priced === 0n) return { status: 'NOT_BILLABLE', charge: 0n, shortfall: 0n, chargeError: null };
  const nanos = (wallet.carry + priced) / ATTOS;
  if (nanos <= 0n || wallet.balance - nanos >= -wallet.overdraft) {
    debit(wallet, priced);
    return { status: 'CHARGED', charge: priced, shortfall: 0n, chargeError: null };
  }
  const most = (wallet.balance + wallet.overdraft) * ATTOS - wallet.carry;
  const affordable = most <= 0n ? 0n : most < priced ? most : priced;
  debit(wallet, affordable);
  return { status: affordable > 0n ? 'PARTIALLY_CHARGED' : 'UNCHARGED', charge: affordable, shortfall: priced - affordable, chargeError: 'INSUFFICIENT_FUNDS' };
}

function customerIdOf(model: Model, ref: CustRef): string {
  if (typeof ref === 'number') return model.customers[ref]!.id;
  if (ref === 'ext0') return model.customers[0]!.ext;
  if (ref === 'upper1') return model.customers[1]!.id.toUpperCase();
  return ref === 'unknown' ? randomUUID() : ref === 'malformed' ? 'no-such-customer' : '';
}
/** By Tollgate id in any case (as the mutations taking an ID resolve it), or null. */
function byId(model: Model, id: unknown): number | null {
  if (typeof id !== 'string' || !UUID.test(id)) return null;
  const index = model.customers.findIndex((customer) => customer.id === id.toLowerCase());
  return index >= 0 ? index : null;
}

// ------------------------------------------------------------------ usage: judged, then charged

type Judged = { code: string } | { key: string; c: number; currency: Currency; sig: string; at: number; micro: bigint };

/** What ingest makes of one record before charging it: a refusal, or the event to charge. */
function judge(model: Model, record: Record<string, unknown>): Judged {
  const bad = { code: 'VALIDATION' };
  let at = now.getTime();
  let iso: string | null = null;
  if (record.timestamp !== undefined && record.timestamp !== null) {
    const parsed = typeof record.timestamp === 'string' ? timeOf(record.timestamp) : null;
    if (parsed === null) return bad;
    at = parsed;
    iso = new Date(parsed).toISOString();
  }
  const key = typeof record.idempotencyKey === 'string' ? record.idempotencyKey.trim() : '';
  if (!key || key.length > 200 || unstorable(key)) return bad;
  const ref = typeof record.customer === 'string' ? record.customer.trim() : '';
  if (!ref) return bad;
  if (at < EARLIEST_USAGE_MS || at > now.getTime() + MAX_FUTURE_MS) return bad;
  const currency = currencyOf(record.currency);
  if (currency === null) return bad;
  const quantities = record.quantities as Record<string, unknown>;
  const micro = microOf(quantities.units);
  if (micro === null) return bad;
  const c = UUID.test(ref) ? model.customers.findIndex((customer) => customer.id === ref.toLowerCase()) : model.customers.findIndex((customer) => customer.ext === ref);
  if (c < 0) return { code: 'NOT_FOUND' };
  if (currency !== 'USD' && currency !== 'EUR') throw new Error(`the model keeps USD and EUR wallets only: ${currency}`);
  return { key, c, currency, sig: JSON.stringify([model.customers[c]!.id, currency, iso, quantities]), at, micro };
}

type UsageAnswer = { code: string } | { event: ModelEvent; replayed: boolean };

/** Charges a judged event against the model (or answers its replay). */
function ingest(model: Model, judged: Extract<Judged, { key: string }>): UsageAnswer {
  const prior = model.events.get(judged.key);
  if (prior) return prior.sig === judged.sig ? { event: prior, replayed: true } : { code: 'CONFLICT' };
  const priced = priceOf(model, judged.c, judged.at, judged.micro);
  const outcome = chargeEvent(model.customers[judged.c]!.wallets[judged.currency], priced);
  const event: ModelEvent = { id: '', key: judged.key, c: judged.c, currency: judged.currency, sig: judged.sig, at: judged.at, ...outcome };
  model.events.set(judged.key, event);
  return { event, replayed: false };
}

/** A batch's answers, as partitionByCustomer documents them: a key an earlier event of another customer uses answers from that first one. */
function ingestBatch(model: Model, records: Record<string, unknown>[]): UsageAnswer[] {
  const judged = records.map((record) => judge(model, record));
  const firstOfKey = new Map<string, number>();
  const repeatOf = new Map<number, number>();
  judged.forEach((item, index) => {
    if ('code' in item) return;
    const first = firstOfKey.get(item.key);
    if (first === undefined) firstOfKey.set(item.key, index);
    else if ((judged[first] as { c: number }).c !== item.c) repeatOf.set(index, first);
  });
  const answers: UsageAnswer[] = judged.map((item, index) => ('code' in item ? item : repeatOf.has(index) ? { code: 'pending' } : ingest(model, item)));
  for (const [index, first] of repeatOf) {
    const answer = answers[first]!;
    answers[index] = 'code' in answer ? answer : { code: 'CONFLICT' };
  }
  return answers;
}

function checkUsageAnswer(model: Model, predicted: UsageAnswer, got: { error?: { code: string }; event?: any; replayed?: boolean; chargeError?: { code: string } | null }, label: string): void {
  if ('code' in predicted) {
    expect(got.error?.code, `${label}: refused`).toBe(predicted.code);
    return;
  }
  expect(got.error, `${label}: recorded`).toBeUndefined();
  const { event } = predicted;
  expect(got.replayed, `${label}: replayed`).toBe(predicted.replayed);
  if (predicted.replayed) expect(got.event.id, `${label}: a replay answers the first event`).toBe(event.id);
  else event.id = got.event.id;
  expect(got.event.customerId, `${label}: customer`).toBe(model.customers[event.c]!.id);
  expect(new Date(got.event.occurredAt).getTime(), `${label}: occurredAt`).toBe(event.at);
  expect({ status: got.event.status, charge: readAttos(got.event.charge), shortfall: readAttos(got.event.shortfall), chargeError: got.chargeError?.code ?? null }, `${label}: charge`)
    .toEqual({ status: event.status, charge: event.charge, shortfall: event.shortfall, chargeError: event.chargeError });
}

// ------------------------------------------------------------------ reading the server back

const TYPED_CODES = ERROR_CODES.filter((code) => code !== 'INTERNAL');
const stats = new Map<string, number>();
const count = (outcome: string) => stats.set(outcome, (stats.get(outcome) ?? 0) + 1);

async function gql<T = Record<string, any>>(model: Model, query: string, variables: Record<string, unknown>, label: string): Promise<GraphQLResponse<T>> {
  const response = await server.graphql<T>(query, variables, model.merchant.secret);
  for (const error of response.errors ?? []) expect(TYPED_CODES, `${label}: every error has a typed code: ${JSON.stringify(response.errors)}`).toContain(error.extensions?.code);
  return response;
}

/** The customer's wallet as the model keeps it: balance, overdraft, credit by kind; and never below its overdraft floor unless it was already. */
async function checkWallet(model: Model, c: number, label: string, currency: Currency = 'USD', floorBefore?: bigint): Promise<void> {
  const response = await gql<{ wallet: any }>(model, WALLET, { id: model.customers[c]!.id, currency }, label);
  expect(response.errors, label).toBeUndefined();
  const view = response.data!.wallet;
  const wallet = model.customers[c]!.wallets[currency];
  const credit: Record<GrantKind, bigint> = { PROMOTIONAL: 0n, PLAN_INCLUDED: 0n, PAID: 0n };
  expect(view.grants.totalCount).toBeLessThanOrEqual(100);
  for (const grant of view.grants.nodes) credit[grant.kind as GrantKind] += readNanos(grant.remaining.amount);
  const balance = readNanos(view.balance.amount);
  expect({ balance, overdraft: readNanos(view.overdraftLimit.amount), credit }, `${label}: ${currency} wallet of customer ${c}`).toEqual({ balance: wallet.balance, overdraft: wallet.overdraft, credit: wallet.credit });
  if (floorBefore !== undefined) {
    const floor = -wallet.overdraft;
    expect(balance, `${label}: usage never takes a wallet past its overdraft limit`).toBeGreaterThanOrEqual(floorBefore < floor ? floorBefore : floor);
  }
}

/** The customer's plan now and its spend limits, with spentThisMonth = the charges of its events this month. */
async function checkCustomer(model: Model, c: number, label: string): Promise<void> {
  const customer = model.customers[c]!;
  const response = await gql<{ customer: any }>(model, CUSTOMER, { id: customer.id }, label);
  expect(response.errors, label).toBeUndefined();
  const view = response.data!.customer;
  expect(view.plan?.key ?? null, `${label}: plan of customer ${c} now`).toBe(planAt(customer, now.getTime()));
  const start = monthStart(now.getTime());
  const end = monthEnd(now.getTime());
  const spent = (currency: string) => [...model.events.values()].filter((e) => e.c === c && e.currency === currency && e.at >= start && e.at < end).reduce((sum, e) => sum + e.charge, 0n);
  const expected = [...model.limits].filter(([key]) => key.startsWith(`${c}|`)).map(([key, nanos]) => ({ currency: key.split('|')[1]!, nanos }))
    .sort((a, b) => a.currency.localeCompare(b.currency));
  expect(view.spendLimits.map((limit: any) => ({ currency: limit.limit.currency, nanos: readNanos(limit.limit.amount) })), `${label}: spend limits of customer ${c}`).toEqual(expected);
  for (const limit of view.spendLimits) {
    expect(limit.customerId).toBe(customer.id);
    expect(readAttos(limit.spentThisMonth), `${label}: spentThisMonth (${limit.limit.currency}) of customer ${c}`).toBe(spent(limit.limit.currency));
    expect(new Date(limit.resetsAt).getTime(), `${label}: resetsAt`).toBe(end);
  }
}

/** Everything the merchant has in the database, compared with the model; and the ledger's integrity. */
async function checkStored(model: Model, label: string): Promise<void> {
  const { prisma } = server.services;
  const merchantId = model.merchant.id;
  const events = await prisma.usageEvent.findMany({ where: { merchantId }, orderBy: { idempotencyKey: 'asc' } });
  expect(events.map((e) => ({ key: e.idempotencyKey, customer: e.customerId, at: e.occurredAt.getTime(), status: e.status, charge: BigInt(e.chargeAttos.toFixed(0)) })), `${label}: stored events`)
    .toEqual([...model.events.values()].sort((a, b) => (a.key < b.key ? -1 : 1)).map((e) => ({ key: e.key, customer: model.customers[e.c]!.id, at: e.at, status: e.status, charge: e.charge })));
  const assignments = await prisma.customerPlan.findMany({ where: { merchantId }, include: { plan: true }, orderBy: { effectiveFrom: 'asc' } });
  for (const [c, customer] of model.customers.entries()) {
    expect(assignments.filter((a) => a.customerId === customer.id).map((a) => ({ plan: a.plan?.key ?? null, from: a.effectiveFrom.getTime() })), `${label}: plan history of customer ${c}`)
      .toEqual(customer.history);
  }
  const plans = await prisma.plan.findMany({ where: { merchantId }, orderBy: { key: 'asc' } });
  expect(plans.map((p) => ({ key: p.key, archived: p.archivedAt !== null, name: p.name, description: p.description })), `${label}: plans`)
    .toEqual([...model.plans].sort(([a], [b]) => (a < b ? -1 : 1)).map(([key, plan]) => ({ key, ...plan })));
  const limits = await prisma.spendLimit.findMany({ where: { merchantId } });
  expect(new Map(limits.map((l) => [`${model.customers.findIndex((c) => c.id === l.customerId)}|${l.currency}`, l.amountNanos])), `${label}: spend limits`).toEqual(model.limits);
  const integrity = await gql<{ ledgerIntegrity: { ok: boolean; violations: string[] } }>(model, INTEGRITY, {}, label);
  expect(integrity.data?.ledgerIntegrity, `${label}: ledger integrity`).toEqual({ ok: true, violations: [] });
}

// ------------------------------------------------------------------ running a sequence

function timeText(spec: TimeSpec): string | null | undefined {
  if (spec === undefined || spec === null) return spec;
  return 'rel' in spec ? new Date(now.getTime() + spec.rel * 1000).toISOString() : spec.text;
}

function recordOf(model: Model, spec: EventSpec): Record<string, unknown> {
  const record: Record<string, unknown> = { customer: customerIdOf(model, spec.c), idempotencyKey: spec.key, quantities: { units: spec.q } };
  const timestamp = timeText(spec.at);
  if (timestamp != null) record.timestamp = timestamp;
  if (spec.currency !== undefined) record.currency = spec.currency;
  return record;
}

async function recordOne(model: Model, record: Record<string, unknown>, label: string): Promise<void> {
  const judged = judge(model, record);
  const touched = 'code' in judged ? null : judged;
  const floor = touched === null ? undefined : model.customers[touched.c]!.wallets[touched.currency].balance;
  const predicted: UsageAnswer = 'code' in judged ? judged : ingest(model, judged);
  const response = await gql<{ recordUsage: any }>(model, RECORD, { input: record }, label);
  const describe = `${label}: recordUsage ${JSON.stringify(record)} → ${JSON.stringify(response.errors ?? response.data)}`;
  model.log.push(describe);
  count(`usage ${response.errors ? response.errors[0]!.extensions.code : response.data!.recordUsage.replayed ? 'replayed' : response.data!.recordUsage.event.status}`);
  const got = response.errors ? { error: { code: response.errors[0]!.extensions.code } } : response.data!.recordUsage;
  checkUsageAnswer(model, predicted, got, describe);
  if (!('code' in predicted) && !predicted.replayed) model.sent.push(record);
  if (touched !== null) await checkWallet(model, touched.c, describe, touched.currency, floor);
}

async function recordBatch(model: Model, records: Record<string, unknown>[], label: string): Promise<void> {
  const floors = model.customers.map((customer) => ({ USD: customer.wallets.USD.balance, EUR: customer.wallets.EUR.balance }));
  const predicted = ingestBatch(model, records);
  const response = await fetch(`${server.url}/v1/usage/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${model.merchant.secret}` },
    body: JSON.stringify({ events: records }),
  });
  const body = (await response.json()) as { results: any[] };
  const describe = `${label}: batch ${JSON.stringify(records)} → ${response.status} ${JSON.stringify(body)}`;
  model.log.push(describe);
  expect(response.status, describe).toBe(200);
  expect(body.results, describe).toHaveLength(records.length);
  body.results.forEach((result, index) => {
    if (!result.ok) expect(TYPED_CODES, `${describe}: typed error`).toContain(result.error.code);
    count(`batch ${result.ok ? (result.replayed ? 'replayed' : result.event.status) : result.error.code}`);
    expect(result.index, describe).toBe(index);
    checkUsageAnswer(model, predicted[index]!, result.ok ? result : { error: result.error }, `${describe} #${index}`);
  });
  for (const [index, answer] of predicted.entries()) if (!('code' in answer) && !answer.replayed) model.sent.push(records[index]!);
  const touched = new Set(predicted.flatMap((answer) => ('code' in answer ? [] : [`${answer.event.c}|${answer.event.currency}`])));
  for (const key of touched) {
    const [c, currency] = key.split('|') as [string, Currency];
    await checkWallet(model, Number(c), describe, currency, floors[Number(c)]![currency]);
  }
}

type Prediction = { code: string } | { ok: (data: any) => void };

function predictAssign(model: Model, customerId: string, planKey: string | null, effectiveFrom: string | null | undefined): Prediction {
  let given: number | null = null;
  if (effectiveFrom != null) {
    given = timeOf(effectiveFrom);
    if (given === null) return { code: 'VALIDATION' };
  }
  const c = byId(model, customerId);
  if (c === null) return { code: 'NOT_FOUND' };
  if (planKey !== null && !PLAN_KEY.test(planKey)) return { code: 'VALIDATION' };
  const plan = planKey === null ? null : model.plans.get(planKey);
  if (plan === undefined) return { code: 'NOT_FOUND' };
  const customer = model.customers[c]!;
  const latest = customer.history.at(-1);
  if (plan?.archived && latest?.plan !== planKey) return { code: 'VALIDATION' };
  let from = given;
  if (from === null) {
    // "Now", moved past the customer's usage already priced at or after it.
    const ahead = [...model.events.values()].filter((e) => e.c === c && e.at >= now.getTime()).reduce((max, e) => Math.max(max, e.at), -Infinity);
    from = ahead === -Infinity ? now.getTime() : ahead + 1;
    if (latest && latest.from >= from && latest.from - from < 1000) from = latest.from + 1;
  }
  const already = latest ? latest.plan === planKey && from >= latest.from : planKey === null;
  const check = (data: any) => {
    expect(data.id).toBe(customer.id);
    expect(data.plan?.key ?? null, 'setCustomerPlan answers the plan in force now').toBe(planAt(customer, now.getTime()));
  };
  if (already) return { ok: check };
  if (latest && from <= latest.from) return { code: 'VALIDATION' };
  if (given !== null && [...model.events.values()].some((e) => e.c === c && e.at >= from)) return { code: 'VALIDATION' };
  const entry = { plan: planKey, from };
  return { ok: (data) => {
    customer.history.push(entry);
    check(data);
  } };
}

function predictRule(model: Model, book: string | null, price: string, effectiveFrom: string): Prediction {
  if (price.startsWith('-')) return { code: 'VALIDATION' };
  if (book !== null && !model.plans.has(book)) return { code: 'NOT_FOUND' };
  const from = Date.parse(effectiveFrom);
  const versions = model.books.get(book ?? '')?.get('units') ?? [];
  const latest = versions.reduce((max, v) => Math.max(max, v.from), -Infinity);
  if (from <= latest) return { code: 'VALIDATION' };
  // The rule (no provider or model) could price any event: none may be at or after its start.
  if ([...model.events.values()].some((e) => e.at >= from)) return { code: 'VALIDATION' };
  return { ok: (data) => {
    expect(new Date(data.effectiveFrom).getTime()).toBe(from);
    expect(data.plan?.key ?? null).toBe(book);
    if (!model.books.has(book ?? '')) model.books.set(book ?? '', new Map());
    const rules = model.books.get(book ?? '')!;
    rules.set('units', [...(rules.get('units') ?? []), { price: attosOf(price)!, from }]);
  } };
}

function predictPutPlan(model: Model, input: { key: string; name: string; description?: string | null }): Prediction {
  if (!PLAN_KEY.test(input.key)) return { code: 'VALIDATION' };
  const name = input.name.trim();
  if (!name || name.length > 100 || unstorable(name)) return { code: 'VALIDATION' };
  const description = input.description == null ? null : input.description.trim();
  if (description !== null && (description.length > 1000 || unstorable(description))) return { code: 'VALIDATION' };
  return { ok: (data) => {
    const plan = { archived: false, name, description: description || null };
    expect({ key: data.key, archived: data.archivedAt !== null, name: data.name, description: data.description }).toEqual({ key: input.key, ...plan });
    model.plans.set(input.key, plan);
  } };
}

function predictSetLimit(model: Model, customerId: string, amount: unknown, currency: unknown): Prediction {
  if (amount === null || (typeof amount !== 'string' && typeof amount !== 'number') || (typeof amount === 'number' && !Number.isSafeInteger(amount))) return { code: 'VALIDATION' };
  const c = byId(model, customerId);
  if (c === null) return { code: 'NOT_FOUND' };
  const code = currencyOf(currency);
  const nanos = nanosOf(amount);
  if (code === null || nanos === null || nanos <= 0n) return { code: 'VALIDATION' };
  return { ok: (data) => {
    expect(data.customerId).toBe(model.customers[c]!.id);
    expect({ currency: data.limit.currency, nanos: readNanos(data.limit.amount) }).toEqual({ currency: code, nanos });
    expect(new Date(data.resetsAt).getTime()).toBe(monthEnd(now.getTime()));
    model.limits.set(`${c}|${code}`, nanos);
  } };
}

function predictRemoveLimit(model: Model, customerId: string, currency: unknown): Prediction {
  const c = byId(model, customerId);
  if (c === null) return { code: 'NOT_FOUND' };
  const code = currencyOf(currency);
  if (code === null) return { code: 'VALIDATION' };
  return { ok: (data) => {
    expect(data, 'removeSpendLimit: true when there was one').toBe(model.limits.has(`${c}|${code}`));
    model.limits.delete(`${c}|${code}`);
  } };
}

function predictGrant(model: Model, op: Extract<Op, { t: 'grant' }>): Prediction {
  const nanos = nanosOf(op.amount);
  if (nanos === null || nanos <= 0n) return { code: 'VALIDATION' };
  const sig = JSON.stringify([op.c, nanos.toString(), op.kind]);
  const prior = model.grantKeys.get(op.key);
  if (prior !== undefined) return prior === sig ? { ok: (data) => expect(data.replayed, 'a grant replayed moves nothing').toBe(true) } : { code: 'CONFLICT' };
  return { ok: (data) => {
    expect(data.replayed).toBe(false);
    expect(readNanos(data.transaction.amount.amount)).toBe(nanos);
    model.grantKeys.set(op.key, sig);
    const wallet = model.customers[op.c]!.wallets.USD;
    // A grant first repays what the wallet owes; only the rest is credit of its kind.
    const debt = wallet.balance < 0n ? -wallet.balance : 0n;
    wallet.credit[op.kind] += nanos - (nanos < debt ? nanos : debt);
    wallet.balance += nanos;
  } };
}

async function mutate(model: Model, label: string, query: string, variables: Record<string, unknown>, field: string, prediction: Prediction): Promise<void> {
  const response = await gql<Record<string, any>>(model, query, variables, label);
  const describe = `${label}: ${field} ${JSON.stringify(variables)} → ${JSON.stringify(response.errors ?? response.data)}`;
  model.log.push(describe);
  count(`${field} ${response.errors ? response.errors[0]!.extensions.code : 'ok'}`);
  if ('code' in prediction) {
    expect(response.errors?.[0]?.extensions.code, describe).toBe(prediction.code);
    return;
  }
  expect(response.errors, describe).toBeUndefined();
  try {
    prediction.ok(response.data![field]);
  } catch (error) {
    (error as Error).message = `${describe}\n${(error as Error).message}`;
    throw error;
  }
}

async function step(model: Model, op: Op, label: string): Promise<void> {
  switch (op.t) {
    case 'advance':
      now = new Date(now.getTime() + op.seconds * 1000);
      model.log.push(`${label}: advance ${op.seconds}s → ${now.toISOString()}`);
      return;
    case 'usage':
      return recordOne(model, recordOf(model, op.ev), label);
    case 'batch':
      return recordBatch(model, op.evs.map((ev) => recordOf(model, ev)), label);
    case 'replay': {
      if (model.sent.length === 0) return;
      const record = structuredClone(model.sent[op.index % model.sent.length]!);
      if (op.mutate) record.quantities = { units: 987_654 };
      return recordOne(model, record, `${label} (replay${op.mutate ? ', changed' : ''})`);
    }
    case 'putPlan': {
      const input: Record<string, unknown> = { key: op.key, name: op.name };
      if (op.description !== undefined) input.description = op.description;
      return mutate(model, label, PUT_PLAN, { input }, 'putPlan', predictPutPlan(model, { key: op.key, name: op.name, description: op.description }));
    }
    case 'archivePlan': {
      const plan = model.plans.get(op.key);
      return mutate(model, label, ARCHIVE_PLAN, { key: op.key }, 'archivePlan', plan ? { ok: (data) => {
        expect(data.archivedAt, 'archived').not.toBeNull();
        plan.archived = true;
      } } : { code: 'NOT_FOUND' });
    }
    case 'assign': {
      const customerId = customerIdOf(model, op.c);
      const effectiveFrom = timeText(op.at);
      const variables: Record<string, unknown> = { customerId, planKey: op.plan };
      if (effectiveFrom !== undefined) variables.effectiveFrom = effectiveFrom;
      await mutate(model, label, SET_PLAN, variables, 'setCustomerPlan', predictAssign(model, customerId, op.plan, effectiveFrom));
      const c = byId(model, customerId);
      if (c !== null) await checkCustomer(model, c, label);
      return;
    }
    case 'rule': {
      const effectiveFrom = timeText(op.at)!;
      const input: Record<string, unknown> = { name: 'units', type: 'FLAT', meterKey: 'units', config: { unitPrice: op.price }, effectiveFrom };
      if (op.book !== null) input.planKey = op.book;
      return mutate(model, label, PUT_RULE, { input }, 'putPriceRule', predictRule(model, op.book, op.price, effectiveFrom));
    }
    case 'setLimit': {
      const customerId = customerIdOf(model, op.c);
      const variables: Record<string, unknown> = { customerId, amount: op.amount };
      if (op.currency !== undefined) variables.currency = op.currency;
      await mutate(model, label, SET_LIMIT, variables, 'setSpendLimit', predictSetLimit(model, customerId, op.amount, op.currency));
      const c = byId(model, customerId);
      if (c !== null) await checkCustomer(model, c, label);
      return;
    }
    case 'removeLimit': {
      const customerId = customerIdOf(model, op.c);
      const variables: Record<string, unknown> = { customerId };
      if (op.currency !== undefined) variables.currency = op.currency;
      return mutate(model, label, REMOVE_LIMIT, variables, 'removeSpendLimit', predictRemoveLimit(model, customerId, op.currency));
    }
    case 'grant': {
      const input = { customerId: model.customers[op.c]!.id, amount: op.amount, kind: op.kind, idempotencyKey: op.key };
      await mutate(model, label, GRANT, { input }, 'grantCredits', predictGrant(model, op));
      return checkWallet(model, op.c, label);
    }
    case 'overdraft': {
      const limit = nanosOf(op.limit);
      const wallet = model.customers[op.c]!.wallets.USD;
      await mutate(model, label, OVERDRAFT, { customerId: model.customers[op.c]!.id, limit: op.limit }, 'setOverdraftLimit', limit === null || limit < 0n ? { code: 'VALIDATION' } : { ok: (data) => {
        expect(readNanos(data.overdraftLimit.amount)).toBe(limit);
        wallet.overdraft = limit;
      } });
      return checkWallet(model, op.c, label);
    }
  }
}

/** A merchant with meters, a default book, plans "basic" and "pro" and three funded customers, built through the API. */
async function setUp(setup: Setup): Promise<Model> {
  now = new Date(setup.start);
  const merchant = await server.createMerchant(`Plans fuzz ${randomUUID()}`);
  const model: Model = {
    merchant, customers: [], books: new Map(), plans: new Map(), events: new Map(), limits: new Map(), grantKeys: new Map(), sent: [], log: [],
  };
  const must = async (query: string, variables: Record<string, unknown>) => {
    const response = await gql<Record<string, any>>(model, query, variables, 'setup');
    expect(response.errors, `setup: ${JSON.stringify(variables)}`).toBeUndefined();
    return response.data!;
  };
  await must(CREATE_METER, { input: { key: 'units', name: 'Units', unit: 'unit', source: 'QUANTITY' } });
  await must(CREATE_METER, { input: { key: 'calls', name: 'Calls', unit: 'request', source: 'REQUESTS' } });
  const rule = async (book: string, meter: 'units' | 'calls', price: string | null, from = SINCE) => {
    if (price === null) return;
    await must(PUT_RULE, { input: { name: meter, type: 'FLAT', meterKey: meter, config: { unitPrice: price }, effectiveFrom: from, ...(book ? { planKey: book } : {}) } });
    if (!model.books.has(book)) model.books.set(book, new Map());
    const rules = model.books.get(book)!;
    rules.set(meter, [...(rules.get(meter) ?? []), { price: attosOf(price)!, from: Date.parse(from) }]);
  };
  model.books.set('', new Map());
  await rule('', 'units', setup.defaults.units);
  await rule('', 'calls', setup.defaults.calls);
  for (const [key, name] of [['basic', 'Basic'], ['pro', 'Pro']] as const) {
    await must(PUT_PLAN, { input: { key, name } });
    model.plans.set(key, { archived: false, name, description: null });
    model.books.set(key, new Map());
    await rule(key, 'units', setup[key].units);
    await rule(key, 'calls', setup[key].calls);
  }
  if (setup.pro.later) await rule('pro', 'units', setup.pro.later.price, new Date(setup.start + setup.pro.later.hours * 3_600_000).toISOString());
  for (let index = 0; index < 3; index++) {
    const ext = `ext-${randomUUID()}`;
    const { createCustomer } = await must(CREATE_CUSTOMER, { input: { externalId: ext } });
    const empty = (): ModelWallet => ({ balance: 0n, carry: 0n, overdraft: 0n, credit: { PROMOTIONAL: 0n, PLAN_INCLUDED: 0n, PAID: 0n } });
    const wallets = { USD: empty(), EUR: empty() };
    const wallet = wallets.USD;
    model.customers.push({ id: createCustomer.id, ext, history: [], wallets });
    for (const [kind, amount] of [['PAID', setup.paid[index]!], ['PLAN_INCLUDED', setup.included[index]!]] as const) {
      if (amount === '0') continue;
      await must(GRANT, { input: { customerId: createCustomer.id, amount, kind, idempotencyKey: `seed-${kind}-${index}` } });
      wallet.balance += nanosOf(amount)!;
      wallet.credit[kind] += nanosOf(amount)!;
    }
    if (index === 0) {
      // Some EUR credit too: usage in EUR is priced by the same rules and paid from this wallet.
      await must(GRANT, { input: { customerId: createCustomer.id, amount: '0.4', currency: 'EUR', kind: 'PAID', idempotencyKey: 'seed-eur' } });
      wallets.EUR.balance += nanosOf('0.4')!;
      wallets.EUR.credit.PAID += nanosOf('0.4')!;
    }
  }
  return model;
}

async function runSequence(setup: Setup, ops: Op[]): Promise<Model> {
  const model = await setUp(setup);
  try {
    for (const [index, op] of ops.entries()) await step(model, op, `#${index}`);
    for (const c of [0, 1, 2]) {
      for (const currency of CURRENCIES) await checkWallet(model, c, 'end', currency);
      await checkCustomer(model, c, 'end');
    }
    await checkStored(model, 'end');
    return model;
  } catch (error) {
    (error as Error).message += `\n--- setup ---\n${JSON.stringify(setup)}\n--- operations ---\n${model.log.join('\n')}`;
    throw error;
  }
}

// ------------------------------------------------------------------ malformed input, alone

/** Operations that must be refused whatever the state: each is VALIDATION or NOT_FOUND, and nothing is written. */
const malformedArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant('usage' as const), ev: fc.record({ c: fc.constantFrom<CustRef>(0, 1, 'ext0'), key: fc.uuid(), q: badQuantity, at: usageTimeArb, currency: currencyArb }) }),
  fc.record({ t: fc.constant('usage' as const), ev: fc.record({ c: fc.constantFrom<CustRef>(0, 'upper1'), key: fc.uuid(), q: goodQuantity, at: fc.constantFrom(...BAD_TIMES, '2026-06-29T18:05:00.001Z').map((text) => ({ text })), currency: currencyArb }) }),
  fc.record({ t: fc.constant('usage' as const), ev: fc.record({ c: fc.constantFrom<CustRef>('unknown', 'malformed', 'empty'), key: fc.uuid(), q: goodQuantity, at: fc.constant(undefined), currency: fc.constant(undefined) }) }),
  fc.record({ t: fc.constant('usage' as const), ev: fc.record({ c: fc.constantFrom<CustRef>(0, 2), key: fc.constantFrom('', '  ', 'k'.repeat(201), 'a\u0000b'), q: goodQuantity, at: fc.constant(undefined), currency: fc.constant(undefined) }) }),
  fc.record({ t: fc.constant('usage' as const), ev: fc.record({ c: fc.constantFrom<CustRef>(0, 2), key: fc.uuid(), q: goodQuantity, at: fc.constant(undefined), currency: fc.constantFrom<unknown>('ZZZ', 'EURO', '') }) }),
  fc.record({ t: fc.constant('batch' as const), evs: fc.array(fc.record({ c: fc.constantFrom<CustRef>(0, 1, 'unknown'), key: fc.uuid(), q: badQuantity, at: usageTimeArb, currency: currencyArb }), { minLength: 1, maxLength: 3 }) }),
  fc.record({ t: fc.constant('putPlan' as const), key: fc.constantFrom('Bad Key', '', 'x'.repeat(65), 'pro ', 'ünï'), name: nameArb, description: descriptionArb }),
  fc.record({ t: fc.constant('putPlan' as const), key: fc.constantFrom('basic', 'fresh'), name: fc.constantFrom('', '   ', 'n'.repeat(101), 'a\u0000b'), description: descriptionArb }),
  fc.record({ t: fc.constant('archivePlan' as const), key: fc.constantFrom('ghost', 'Bad Key', '', 'x'.repeat(65)) }),
  fc.record({ t: fc.constant('assign' as const), c: fc.constantFrom<CustRef>('unknown', 'malformed', 'ext0', 'empty'), plan: fc.constantFrom<string | null>('basic', null, 'ghost'), at: assignTimeArb }),
  fc.record({ t: fc.constant('assign' as const), c: fc.constantFrom<CustRef>(0, 1, 'upper1'), plan: fc.constantFrom<string | null>('ghost', 'Bad Key', '', 'x'.repeat(65)), at: fc.constant(undefined) }),
  fc.record({ t: fc.constant('assign' as const), c: fc.constantFrom<CustRef>(0, 1), plan: fc.constantFrom<string | null>('basic', 'pro'), at: fc.constantFrom('2026-02-30T00:00:00Z', 'soon', '+010000-01-01T00:00:00Z', '').map((text) => ({ text })) }),
  fc.record({ t: fc.constant('rule' as const), book: fc.constantFrom<string | null>('ghost', 'extra'), price: priceArb as fc.Arbitrary<string>, at: ruleTimeArb }),
  fc.record({ t: fc.constant('rule' as const), book: fc.constantFrom<string | null>(null, 'pro'), price: fc.constant('-0.5'), at: ruleTimeArb }),
  fc.record({ t: fc.constant('setLimit' as const), c: fc.constantFrom<CustRef>(0, 1, 2, 'upper1'), amount: fc.constantFrom(...BAD_LIMITS), currency: limitCurrencyArb }),
  fc.record({ t: fc.constant('setLimit' as const), c: fc.constantFrom<CustRef>('unknown', 'malformed', 'ext0', 'empty'), amount: limitAmountArb, currency: limitCurrencyArb }),
  fc.record({ t: fc.constant('setLimit' as const), c: fc.constantFrom<CustRef>(0, 1), amount: fc.constantFrom(...GOOD_LIMITS), currency: fc.constantFrom<unknown>('ZZZ', 'US', '', 'usd\u0000') }),
  fc.record({ t: fc.constant('removeLimit' as const), c: fc.constantFrom<CustRef>('unknown', 'malformed', 'ext0'), currency: limitCurrencyArb }),
  fc.record({ t: fc.constant('grant' as const), c: fc.constantFrom<0 | 1 | 2>(0, 1, 2), amount: fc.constantFrom('0', '-1', '0.0000000001', '1e3'), kind: fc.constantFrom<GrantKind>('PAID', 'PLAN_INCLUDED'), key: fc.uuid() }),
);

/** What the merchant has written, to show a refused operation wrote nothing. */
async function fingerprint(merchantId: string): Promise<string> {
  const { prisma } = server.services;
  const where = { merchantId };
  const rows = await Promise.all([
    prisma.usageEvent.count({ where }), prisma.usagePeriodTotal.findMany({ where, orderBy: [{ customerId: 'asc' }, { meterKey: 'asc' }, { priceBook: 'asc' }] }),
    prisma.customerPlan.findMany({ where, orderBy: { id: 'asc' } }), prisma.plan.findMany({ where, orderBy: { key: 'asc' } }),
    prisma.priceRule.findMany({ where, orderBy: { id: 'asc' } }), prisma.spendLimit.findMany({ where, orderBy: { id: 'asc' } }),
    prisma.ledgerTransaction.count({ where }), prisma.wallet.findMany({ where, orderBy: { id: 'asc' } }), prisma.creditGrant.findMany({ where, orderBy: { id: 'asc' } }),
  ]);
  return JSON.stringify(rows, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value));
}

async function runMalformed(setup: Setup, warmUp: Op[], ops: Op[]): Promise<void> {
  // At START: a timestamp of 18:05:00.001 is then beyond what usage may be stamped ahead.
  const model = await setUp({ ...setup, start: START });
  try {
    // Some state first (usage, plans, limits), so refusals meet a merchant that has some.
    for (const [index, op] of warmUp.entries()) await step(model, op, `warm-up #${index}`);
    for (const [index, op] of ops.entries()) {
      const before = await fingerprint(model.merchant.id);
      const logged = model.log.length;
      await step(model, op, `#${index}`);
      const answers = model.log.slice(logged).join('\n');
      for (const line of model.log.slice(logged)) {
        const codes = [...line.matchAll(/"code":"([A-Z_]+)"/g)].map((match) => match[1]);
        expect(codes.length, `${line}: refused`).toBeGreaterThan(0);
        for (const code of codes) expect(['VALIDATION', 'NOT_FOUND'], `${line}: refused as VALIDATION or NOT_FOUND`).toContain(code);
      }
      expect(await fingerprint(model.merchant.id), `${answers}: nothing written`).toBe(before);
    }
    await checkStored(model, 'end');
  } catch (error) {
    (error as Error).message += `\n--- setup ---\n${JSON.stringify(setup)}\n--- operations ---\n${model.log.join('\n')}`;
    throw error;
  }
}

// ------------------------------------------------------------------ the properties

const fuzzOptions = (runs: number) => ({
  numRuns: Number(process.env.FUZZ_RUNS ?? runs),
  seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined,
  endOnFailure: process.env.FUZZ_SHRINK !== '1',
  // Runs stop starting past this (a loaded machine runs fewer of them), within the test's timeout.
  interruptAfterTimeLimit: Number(process.env.FUZZ_TIME_LIMIT_MS ?? 25_000),
});
const TEST_TIMEOUT_MS = Number(process.env.FUZZ_TIMEOUT_MS ?? 120_000);

describe('plans and spend limits fuzz', () => {
  it('random sequences of plan changes, limits, grants and usage keep every documented property', async () => {
    await fc.assert(fc.asyncProperty(setupArb, fc.array(opArb, { minLength: 1, maxLength: 30, size: 'max' }), async (setup, ops) => {
      await runSequence(setup, ops);
    }), fuzzOptions(30));
    if (process.env.FUZZ_STATS) console.log([...stats].sort().map(([outcome, n]) => `${outcome}: ${n}`).join('\n'));
  }, TEST_TIMEOUT_MS);

  it('malformed inputs are refused as VALIDATION or NOT_FOUND, and write nothing', async () => {
    const warmUp = fc.array(fc.oneof(
      fc.record({ t: fc.constant('usage' as const), ev: fc.record({ c: fc.constantFrom<CustRef>(0, 1, 2), key: fc.uuid(), q: goodQuantity, at: fc.constant(undefined), currency: fc.constant(undefined) }) }),
      fc.record({ t: fc.constant('assign' as const), c: fc.constantFrom<CustRef>(0, 1, 2), plan: fc.constantFrom<string | null>('basic', 'pro'), at: fc.constant(undefined) }),
      fc.record({ t: fc.constant('setLimit' as const), c: fc.constantFrom<CustRef>(0, 1, 2), amount: fc.constantFrom<unknown>('1', '0.5'), currency: fc.constant(undefined) }),
    ), { maxLength: 4 });
    await fc.assert(fc.asyncProperty(setupArb, warmUp, fc.array(malformedArb, { minLength: 1, maxLength: 12 }), runMalformed), { ...fuzzOptions(8), numRuns: Number(process.env.FUZZ_RUNS_BAD ?? 8) });
  }, TEST_TIMEOUT_MS);

  it('tiered prices across plan changes: every month total priced exactly once, nothing re-priced, nothing paid back beyond what was paid', async () => {
    const paid = fc.array(fc.constantFrom('0', '3', '50'), { minLength: 2, maxLength: 2 });
    await fc.assert(fc.asyncProperty(paid, fc.array(tieredOpArb, { minLength: 1, maxLength: 30, size: 'max' }), runTiered), { ...fuzzOptions(12), numRuns: Number(process.env.FUZZ_RUNS_TIERED ?? 12) });
  }, TEST_TIMEOUT_MS);
});

// ------------------------------------------------------------------ tiered prices across plan changes: invariants

/**
 * Tiered rules (VOLUME in the default book and in "pro", GRADUATED in "basic") priced on running
 * month totals that a plan change splits by price book: exact charges are left to the pricing
 * tests; here the documented invariants are asserted. For every month total a rule kept, the
 * lines its events were charged add up to the rule's price of that total (a VOLUME give-back never
 * reaches past what that same rule charged: see usage.credits.ts); an event's lines add up to
 * charge + shortfall − shortfallSettled; no event changes after it was answered (a plan change
 * never re-prices it, a replay answers it as first charged); a customer is never paid back more
 * than it was charged in a month; a wallet moves by exactly what its events were charged (to
 * within the sub-nano carry) and stays above its overdraft floor; the ledger stays whole.
 */
const TIERED = {
  default: { type: 'VOLUME', tiers: [{ upTo: 10, unitPrice: '1' }, { upTo: null, unitPrice: '0.5' }] },
  pro: { type: 'VOLUME', tiers: [{ upTo: 5, unitPrice: '2' }, { upTo: 20, unitPrice: '0.25' }, { upTo: null, unitPrice: '0.1' }] },
  basic: { type: 'GRADUATED', tiers: [{ upTo: 8, unitPrice: '0.5' }, { upTo: null, unitPrice: '0.2' }] },
} as const;
type TieredOp =
  | { t: 'use'; c: 0 | 1; q: number; at: number | undefined; key: string }
  | { t: 'assign'; c: 0 | 1; plan: 'basic' | 'pro' | null; at: number | undefined }
  | { t: 'advance'; seconds: number }
  | { t: 'grant'; c: 0 | 1; amount: string }
  | { t: 'overdraft'; c: 0 | 1 };
const tieredOpArb: fc.Arbitrary<TieredOp> = fc.oneof(
  { weight: 10, arbitrary: fc.record({ t: fc.constant('use' as const), c: fc.constantFrom<0 | 1>(0, 1), q: fc.nat(30), at: fc.constantFrom(undefined, undefined, -3 * 86_400, -3600, 120), key: fc.oneof(fc.constantFrom('r1', 'r2'), fc.uuid(), fc.uuid()) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('assign' as const), c: fc.constantFrom<0 | 1>(0, 1), plan: fc.constantFrom<'basic' | 'pro' | null>('basic', 'pro', null), at: fc.constantFrom(undefined, undefined, 3600, -3600) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('advance' as const), seconds: fc.constantFrom(3600, 86_400, 2 * 86_400) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('grant' as const), c: fc.constantFrom<0 | 1>(0, 1), amount: fc.constantFrom('0.5', '5', '30') }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('overdraft' as const), c: fc.constantFrom<0 | 1>(0, 1) }) },
);

/** A tiered rule's price of a month's whole-unit total, in attos. */
function tieredPrice(rule: { type: string; tiers: readonly { upTo: number | null; unitPrice: string }[] }, total: bigint): bigint {
  if (rule.type === 'VOLUME') {
    const tier = rule.tiers.find((t) => t.upTo === null || total <= BigInt(t.upTo))!;
    return total * attosOf(tier.unitPrice)!;
  }
  let price = 0n;
  let below = 0n;
  for (const tier of rule.tiers) {
    const top = tier.upTo === null ? total : BigInt(tier.upTo) < total ? BigInt(tier.upTo) : total;
    if (top > below) price += (top - below) * attosOf(tier.unitPrice)!;
    below = top > below ? top : below;
  }
  return price;
}

const RECORD_LINES = `mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { replayed event { id status charge shortfall shortfallSettled charges { priceRuleId amount } } } }`;

async function runTiered(paid: string[], ops: TieredOp[]): Promise<void> {
  now = new Date(START);
  const merchant = await server.createMerchant(`Tiered fuzz ${randomUUID()}`);
  const log: string[] = [];
  const call = async (query: string, variables: Record<string, unknown>, label: string) => {
    const response = await server.graphql<Record<string, any>>(query, variables, merchant.secret);
    const describe = `${label} ${JSON.stringify(variables)} → ${JSON.stringify(response.errors ?? response.data)}`;
    log.push(describe);
    for (const error of response.errors ?? []) expect(TYPED_CODES, `${describe}: every error has a typed code`).toContain(error.extensions.code);
    return { response, describe };
  };
  const must = async (query: string, variables: Record<string, unknown>) => {
    const { response, describe } = await call(query, variables, 'setup');
    expect(response.errors, describe).toBeUndefined();
    return response.data!;
  };
  try {
    await must(CREATE_METER, { input: { key: 'units', name: 'Units', unit: 'unit', source: 'QUANTITY' } });
    await must(CREATE_METER, { input: { key: 'calls', name: 'Calls', unit: 'request', source: 'REQUESTS' } });
    await must(PUT_RULE, { input: { name: 'calls', type: 'FLAT', meterKey: 'calls', config: { unitPrice: '0.001' }, effectiveFrom: SINCE } });
    for (const book of ['default', 'pro', 'basic'] as const) {
      if (book !== 'default') await must(PUT_PLAN, { input: { key: book, name: book } });
      const rule = TIERED[book];
      await must(PUT_RULE, { input: { name: 'units', type: rule.type, meterKey: 'units', config: { tiers: rule.tiers }, effectiveFrom: SINCE, ...(book === 'default' ? {} : { planKey: book }) } });
    }
    const customers: string[] = [];
    const granted = [0n, 0n];
    for (const index of [0, 1]) {
      const { createCustomer } = await must(CREATE_CUSTOMER, { input: { externalId: `t-${randomUUID()}` } });
      customers.push(createCustomer.id);
      if (paid[index] !== '0') await must(GRANT, { input: { customerId: createCustomer.id, amount: paid[index], kind: 'PAID', idempotencyKey: `seed-${index}` } });
      granted[index] = nanosOf(paid[index])!;
    }
    /** Every event as first answered, by id. */
    const answered = new Map<string, { status: string; charge: string; shortfall: string; shortfallSettled: string; charges: unknown[] }>();
    for (const [index, op] of ops.entries()) {
      const label = `#${index}`;
      if (op.t === 'advance') {
        now = new Date(now.getTime() + op.seconds * 1000);
        log.push(`${label} advance ${op.seconds}s → ${now.toISOString()}`);
      } else if (op.t === 'use') {
        const input: Record<string, unknown> = { customer: customers[op.c], idempotencyKey: op.key, quantities: { units: op.q } };
        if (op.at !== undefined) input.timestamp = new Date(now.getTime() + op.at * 1000).toISOString();
        const { response, describe } = await call(RECORD_LINES, { input }, label);
        if (response.errors) {
          expect(response.errors[0]!.extensions.code, `${describe}: only a reused key is refused`).toBe('CONFLICT');
          continue;
        }
        const { replayed, event } = response.data!.recordUsage;
        const lines = event.charges.reduce((sum: bigint, line: any) => sum + readAttos(line.amount), 0n);
        expect(lines, `${describe}: lines = charge + shortfall − shortfallSettled`).toBe(readAttos(event.charge) + readAttos(event.shortfall) - readAttos(event.shortfallSettled));
        expect(readAttos(event.shortfall) > 0n, `${describe}: a shortfall exactly when not fully charged`).toBe(event.status === 'UNCHARGED' || event.status === 'PARTIALLY_CHARGED');
        const { id, ...seen } = event;
        if (replayed) expect(seen, `${describe}: a replay answers the first result`).toEqual(answered.get(id));
        else answered.set(id, seen);
      } else if (op.t === 'assign') {
        const variables: Record<string, unknown> = { customerId: customers[op.c], planKey: op.plan };
        if (op.at !== undefined) variables.effectiveFrom = new Date(now.getTime() + op.at * 1000).toISOString();
        const { response, describe } = await call(SET_PLAN, variables, label);
        // Refused only as history rewriting (dated at or before usage priced, or before a change already scheduled): the main property predicts which.
        if (response.errors) expect(response.errors[0]!.extensions.code, describe).toBe('VALIDATION');
      } else if (op.t === 'grant') {
        const { response, describe } = await call(GRANT, { input: { customerId: customers[op.c], amount: op.amount, kind: 'PAID', idempotencyKey: randomUUID() } }, label);
        expect(response.errors, describe).toBeUndefined();
        granted[op.c]! += nanosOf(op.amount)!;
      } else {
        const { response, describe } = await call(OVERDRAFT, { customerId: customers[op.c], limit: '5' }, label);
        expect(response.errors, describe).toBeUndefined();
      }
    }
    // Stored as answered: nothing re-priced after the fact.
    const { prisma } = server.services;
    const events = await prisma.usageEvent.findMany({ where: { merchantId: merchant.id } });
    expect(events.length, 'every event answered is stored').toBe(answered.size);
    const view = async (id: string) => (await call(`query ($id: ID!) { usageEvents(customerId: $id, first: 100) { edges { node { id status charge shortfall shortfallSettled charges { priceRuleId amount } } } } }`, { id }, 'end')).response;
    for (const customerId of customers) {
      const listed = await view(customerId);
      expect(listed.errors).toBeUndefined();
      for (const { node } of listed.data!.usageEvents.edges) {
        const { id, ...seen } = node;
        expect(seen, `event ${id} as first answered`).toEqual(answered.get(id));
      }
    }
    // Each month total a rule kept is priced, across its events' lines, at the rule's price of the total.
    const rules = await prisma.priceRule.findMany({ where: { merchantId: merchant.id }, include: { plan: true } });
    const lineOf = (line: unknown): [string, bigint] => (Array.isArray(line) ? [String(line[0]), BigInt(line[1] as string)] : [String((line as any).ruleId), BigInt((line as any).chargeAttos)]);
    const totals = await prisma.usagePeriodTotal.findMany({ where: { merchantId: merchant.id, meterKey: 'units' } });
    for (const total of totals) {
      const ids = new Set(rules.filter((r) => (r.planId ?? '') === total.priceBook && r.name === total.ruleName).map((r) => r.id));
      const book = rules.find((r) => ids.has(r.id))!.plan?.key ?? 'default';
      let charged = 0n;
      for (const event of events) {
        if (event.customerId !== total.customerId || event.periodStart.getTime() !== total.periodStart.getTime()) continue;
        for (const line of ((event.metadata as any).pricing ?? []) as unknown[]) {
          const [ruleId, attos] = lineOf(line);
          if (ids.has(ruleId)) charged += attos;
        }
      }
      const quantity = BigInt(total.quantity.toFixed(0));
      expect(charged, `${book} rule's lines of ${total.periodStart.toISOString().slice(0, 7)} for customer ${customers.indexOf(total.customerId)}: its price of ${quantity} units`)
        .toBe(tieredPrice(TIERED[book as keyof typeof TIERED], quantity));
    }
    for (const [index, customerId] of customers.entries()) {
      const mine = events.filter((e) => e.customerId === customerId);
      for (const month of new Set(mine.map((e) => e.periodStart.getTime()))) {
        const net = mine.filter((e) => e.periodStart.getTime() === month).reduce((sum, e) => sum + BigInt(e.chargeAttos.toFixed(0)), 0n);
        expect(net, `customer ${index} is never paid back more than it was charged in a month`).toBeGreaterThanOrEqual(0n);
      }
      const charged = mine.reduce((sum, e) => sum + BigInt(e.chargeAttos.toFixed(0)), 0n);
      const wallet = (await call(WALLET, { id: customerId }, 'end')).response.data!.wallet;
      const balance = readNanos(wallet.balance.amount);
      const carry = charged - (granted[index]! - balance) * ATTOS;
      expect(carry >= 0n && carry < ATTOS, `customer ${index}: the wallet moved by its events' charges (carry ${carry})`).toBe(true);
      expect(balance, `customer ${index}: within the overdraft limit`).toBeGreaterThanOrEqual(-readNanos(wallet.overdraftLimit.amount));
    }
    const integrity = (await call(INTEGRITY, {}, 'end')).response;
    expect(integrity.data?.ledgerIntegrity).toEqual({ ok: true, violations: [] });
  } catch (error) {
    (error as Error).message += `\n--- operations ---\n${log.join('\n')}`;
    throw error;
  }
}

describe('plans and spend limits: the model on chosen sequences', () => {
  const setup: Setup = {
    start: START, defaults: { units: '0.01', calls: '0.001' }, basic: { units: '0.0025', calls: null }, pro: { units: '0', calls: '0.000000000003', later: { hours: 30, price: '1.5' } },
    paid: ['1', '0.05', '0'], included: ['0.5', '0.03', '0'],
  };
  const usage = (c: CustRef, key: string, q: unknown, at?: TimeSpec): Op => ({ t: 'usage', ev: { c, key, q, at, currency: undefined } });

  it('a spend limit does not refuse recorded usage (the gateway enforces it); spentThisMonth is exactly the month\'s charges and resets with the month', async () => {
    const model = await runSequence(setup, [
      { t: 'setLimit', c: 0, amount: '0.01', currency: undefined },
      usage(0, 'a', 5), usage(0, 'b', 40), usage(0, 'late', 7, { rel: -40 * 86_400 }),
      { t: 'setLimit', c: 0, amount: '0.000000001', currency: 'EUR' },
      { t: 'advance', seconds: 3 * 86_400 }, usage(0, 'july', 1),
      { t: 'removeLimit', c: 0, currency: undefined }, { t: 'removeLimit', c: 0, currency: undefined },
    ]);
    // 5 and 40 units at $0.01 plus $0.001 a call: past the $0.01 limit, and charged all the same.
    expect(['a', 'b'].map((key) => [model.events.get(key)!.status, model.events.get(key)!.charge])).toEqual([['CHARGED', attosOf('0.051')], ['CHARGED', attosOf('0.401')]]);
  });

  it('plan-included credit is spent before paid credit, and a month\'s included grant is granted once per key', async () => {
    await runSequence(setup, [
      { t: 'grant', c: 1, amount: '0.02', kind: 'PLAN_INCLUDED', key: 'included-2026-06' },
      { t: 'grant', c: 1, amount: '0.02', kind: 'PLAN_INCLUDED', key: 'included-2026-06' },
      { t: 'grant', c: 1, amount: '0.5', kind: 'PLAN_INCLUDED', key: 'included-2026-06' },
      usage(1, 'a', 3), usage(1, 'b', 3), usage(1, 'c', 1000),
      { t: 'overdraft', c: 1, limit: '2' }, usage(1, 'd', 1000), usage(1, 'e', 1000),
      { t: 'grant', c: 1, amount: '1', kind: 'PLAN_INCLUDED', key: 'included-2026-07' },
    ]);
  });

  it('switching plans prices later events by the new plan and never re-prices charged ones; archived plans keep their customers', async () => {
    const model = await runSequence(setup, [
      // "From now" comes a millisecond after the event just recorded at this same instant: it keeps the default book.
      usage(0, 'before', 4), { t: 'assign', c: 0, plan: 'basic', at: undefined }, usage(0, 'same-instant', 4), { t: 'advance', seconds: 1 }, usage(0, 'on-basic', 4),
      { t: 'assign', c: 0, plan: 'pro', at: { rel: 3600 } }, usage(0, 'still-basic', 4), { t: 'advance', seconds: 3600 }, usage(0, 'on-pro', 4),
      usage(0, 'late-basic', 4, { rel: -1800 }), { t: 'replay', index: 0, mutate: false },
      { t: 'archivePlan', key: 'pro' }, usage(0, 'archived-pro', 4), { t: 'assign', c: 1, plan: 'pro', at: undefined },
      { t: 'assign', c: 0, plan: 'pro', at: undefined }, { t: 'assign', c: 0, plan: 'basic', at: { rel: -7200 } },
      { t: 'advance', seconds: 30 * 3600 }, usage(0, 'pro-later-price', '0.5'),
      { t: 'putPlan', key: 'pro', name: 'Pro again', description: undefined }, { t: 'assign', c: 1, plan: 'pro', at: undefined },
    ]);
    // Default 4 × $0.01 + $0.001; basic 4 × $0.0025 + the default's $0.001; pro $0 a unit and $0.000000000003 a call, then $1.5 a unit from its later version.
    const charges = ['before', 'same-instant', 'on-basic', 'still-basic', 'on-pro', 'late-basic', 'archived-pro', 'pro-later-price'].map((key) => model.events.get(key)!.charge);
    expect(charges).toEqual(['0.041', '0.041', '0.011', '0.011', '0.000000000003', '0.011', '0.000000000003', '0.750000000003'].map((text) => attosOf(text)));
    // The archived plan could not be newly assigned to customer 1 until put again; customer 0 stayed on it.
    expect(model.customers[1]!.history.map((h) => h.plan)).toEqual(['pro']);
  });

  it('"from now" follows usage stamped ahead: the event keeps the plan it was charged under', async () => {
    await runSequence(setup, [
      usage(2, 'ahead', 3, { rel: 299 }), { t: 'assign', c: 2, plan: 'basic', at: undefined }, usage(2, 'now', 3),
      { t: 'assign', c: 2, plan: 'pro', at: undefined }, { t: 'assign', c: 2, plan: 'pro', at: undefined }, { t: 'assign', c: 2, plan: null, at: { rel: 0 } },
      { t: 'assign', c: 2, plan: null, at: { text: '0050-06-01T00:00:00Z' } }, { t: 'advance', seconds: 600 }, usage(2, 'after', 3),
    ]);
  });
});
