import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { startServerProcess, type ServerProcess } from '../../../test/processes.ts';
import { loadConfig } from '../../config.ts';
import { openRuntime } from '../../runtime.ts';
import { createLogger } from '../../shared/logger.ts';
import { parseDecimalAttos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { periodStartOf } from './usage.service.ts';

/**
 * Randomized concurrency fuzz of post-request usage ingestion across TWO server processes that
 * share one PostgreSQL database and Redis. The other usage tests send one batch at a time (or one
 * batch twice at once) to one process; here each run fires dozens of requests at once, split at
 * random between the processes and between POST /v1/usage, POST /v1/usage/batch (sometimes with
 * `Prefer: return=minimal`) and GraphQL recordUsage: overlapping customers and meters, the same
 * idempotency key sent to both processes at once (the same record, or another record under it),
 * late events (earlier this month and last month), raw provider responses from
 * shared/fixtures/providers and normalized records and meter quantities, some in a currency the
 * customer has no credit in (two wallets of one customer locked by concurrent batches). The
 * merchant prices a GRADUATED and a VOLUME meter, a MAX meter (GRADUATED), a COUNT meter
 * (PACKAGE) and a markup over cost; customers have little credit (some an overdraft allowance),
 * one in EUR. After the burst, some keys are sent again to either process at once.
 *
 * Whatever the interleaving, it checks:
 * - every key is stored once and charged at most once; concurrent duplicates answer the first
 *   result as a replay, or CONFLICT for a different record; nothing answers 5xx or INTERNAL;
 * - per customer, currency, month and rule, the lines of the rule's events add up to the rule's
 *   price of the month's total (GRADUATED, VOLUME and PACKAGE priced from the units alone, the
 *   order of events aside; a MAX meter's charged units chain from 0 to the month's peak);
 *   VOLUME lines are each some step of the volume price, and a give-back only settles shortfalls;
 * - each event's lines = charge + shortfall − shortfallSettled, and its status and INSUFFICIENT_FUNDS
 *   answer agree with what was charged; each wallet moved by exactly the events' charges, never
 *   below its overdraft floor, and sits on that floor after a shortfall; the ledger is whole;
 * - the retries answer the first result (or CONFLICT), and move no money and store nothing.
 * Why: these are the guarantees a merchant relies on when several instances ingest at once, and
 * they depend on wallet locks, unique keys and period-total row locks all agreeing across processes.
 *
 * Knobs: FUZZ_RUNS (runs, default 5), FUZZ_SEED (replay a run), FUZZ_MAX_GROUPS (keys per run,
 * default 28), FUZZ_STATS=1 (print what the runs reached). A run is never shrunk: it is a burst.
 */

const FIXTURES = new URL('../../../../../shared/fixtures/providers/', import.meta.url);
const fixtureText = (name: string) => readFileSync(new URL(name, FIXTURES), 'utf8');
type Meta = Record<string, { request: { url: string; body?: Record<string, unknown> }; response: { status: number; headers?: Record<string, string> } }>;
const meta = JSON.parse(fixtureText('_http_meta.json')) as Meta;
const expectedUsage = JSON.parse(fixtureText('expected_usage.json')) as Record<string, { billable: boolean }>;
/** Every response body fixture (the TTS head is headers only, with a binary body left out). */
const FIXTURE_NAMES = Object.keys(meta).filter((name) => !name.startsWith('_') && !name.endsWith('.txt'));
const responseOf = (name: string) => {
  const info = meta[name]!;
  return { url: info.request.url, status: info.response.status, headers: info.response.headers ?? {}, body: fixtureText(name), requestBody: info.request.body ?? null };
};

const NUM_RUNS = Number(process.env.FUZZ_RUNS ?? 5);
const MAX_GROUPS = Number(process.env.FUZZ_MAX_GROUPS ?? 28);
const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const masterKey = randomBytes(32).toString('hex');

// ---------------------------------------------------------------------------------------------
// The merchant's prices, and the test's own model of them (integers only, so exact).

const attos = (text: string) => parseDecimalAttos('test', text);
const NANO = 1_000_000_000n;

interface Tier {
  upTo: number | null;
  unitPrice: string;
  flatFee?: string;
}
const TOKEN_TIERS: Tier[] = [{ upTo: 1000, unitPrice: '0.0004' }, { upTo: 4000, unitPrice: '0.0002', flatFee: '0.05' }, { upTo: null, unitPrice: '0.0001' }];
const SEARCH_TIERS: Tier[] = [{ upTo: 8, unitPrice: '0.05' }, { upTo: 25, unitPrice: '0.03', flatFee: '0.02' }, { upTo: null, unitPrice: '0.01' }];
const SEAT_TIERS: Tier[] = [{ upTo: 5, unitPrice: '0.10' }, { upTo: null, unitPrice: '0.04' }];
const PACKAGE = { packageSize: 3, packagePrice: '0.07' };
const MARKUP = { percent: '20', feePerRequest: '0.001' };

function graduatedPrice(tiers: Tier[], total: bigint): bigint {
  let sum = 0n;
  let lower = 0n;
  for (const tier of tiers) {
    if (total <= lower) break;
    const upper = tier.upTo === null || total < BigInt(tier.upTo) ? total : BigInt(tier.upTo);
    sum += attos(tier.unitPrice) * (upper - lower) + attos(tier.flatFee ?? '0');
    if (tier.upTo === null) break;
    lower = BigInt(tier.upTo);
  }
  return sum;
}

function volumePrice(tiers: Tier[], total: bigint): bigint {
  if (total === 0n) return 0n;
  const tier = tiers.find((t) => t.upTo === null || total <= BigInt(t.upTo))!;
  return attos(tier.unitPrice) * total + attos(tier.flatFee ?? '0');
}

const packagePrice = (count: bigint) => ((count + BigInt(PACKAGE.packageSize) - 1n) / BigInt(PACKAGE.packageSize)) * attos(PACKAGE.packagePrice);

/** MARKUP over a known cost: cost × 1.2 (halves up) plus the fee per request; an unknown cost pays only the fee. */
function markupCharge(costAttos: bigint, costKnown: boolean, requests: bigint): bigint {
  const fee = attos(MARKUP.feePerRequest) * requests;
  if (!costKnown) return fee;
  const scale = 100n * 10n ** 18n;
  const numerator = costAttos * (scale + attos(MARKUP.percent));
  return (numerator * 2n + scale) / (2n * scale) + fee;
}

// ---------------------------------------------------------------------------------------------
// The two instances and the merchant.

let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
let instances: ServerProcess[] = [];
let runtime: Awaited<ReturnType<typeof openRuntime>>;
let merchant: { id: string; secret: string };
/** Price rule version id → rule name. */
const ruleNames = new Map<string, string>();

beforeAll(async () => {
  database = await createPostgresDatabase();
  const env = { DATABASE_URL: database.url, REDIS_URL: redisUrl, TOLLGATE_MASTER_KEY: masterKey };
  instances = await Promise.all([startServerProcess(env), startServerProcess(env)]);
  runtime = await openRuntime(loadConfig({ ...env, NODE_ENV: 'test' }), createLogger('silent'));
  const created = await runtime.services.merchants.create({ name: 'Concurrent ingestion' });
  merchant = { id: created.merchant.id, secret: created.key.secret };
  const { meters, priceRules } = runtime.services;
  await meters.create(merchant.id, { key: 'out_tokens', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
  await meters.create(merchant.id, { key: 'searches', name: 'Searches', unit: 'search', source: 'QUANTITY' });
  await meters.create(merchant.id, { key: 'seats', name: 'Seats', unit: 'seat', source: 'QUANTITY', aggregation: 'MAX' });
  await meters.create(merchant.id, { key: 'jobs', name: 'Jobs', unit: 'job', source: 'QUANTITY', aggregation: 'COUNT' });
  // In force from before last month, so late events of last month are priced by the same rules.
  const lastMonth = periodStartOf(new Date(periodStartOf(new Date()).getTime() - 1));
  const from = periodStartOf(new Date(lastMonth.getTime() - 1));
  const rules = [
    { name: 'markup', type: 'MARKUP' as const, meterKey: null, config: MARKUP },
    { name: 'tokens', type: 'GRADUATED' as const, meterKey: 'out_tokens', config: { tiers: TOKEN_TIERS } },
    { name: 'searches', type: 'VOLUME' as const, meterKey: 'searches', config: { tiers: SEARCH_TIERS } },
    { name: 'seats', type: 'GRADUATED' as const, meterKey: 'seats', config: { tiers: SEAT_TIERS } },
    { name: 'jobs', type: 'PACKAGE' as const, meterKey: 'jobs', config: PACKAGE },
  ];
  for (const rule of rules) {
    const row = await priceRules.put(merchant.id, { ...rule, effectiveFrom: from });
    ruleNames.set(row.id, rule.name);
  }
}, 120_000);

afterAll(async () => {
  await Promise.all(instances.map((instance) => instance.stop()));
  await runtime?.close();
  await database?.drop();
});

// ---------------------------------------------------------------------------------------------
// Generators.

type Channel = 'single' | 'graphql' | 'batch' | 'minimal';
type Body =
  | { kind: 'response'; fixture: string }
  | { kind: 'usage'; provider: string; model: string; inputTokens: number; outputTokens: number }
  | { kind: 'quantities' };
interface Stated {
  searches?: number;
  seats?: number;
  jobs?: number;
}
interface RecordSpec {
  customer: number;
  /** In the currency of the customer's other wallet (USD customers' EUR, the EUR customer's USD): no credit there. */
  otherCurrency: boolean;
  when: { at: 'now' } | { at: 'late' | 'lastMonth'; fraction: number };
  body: Body;
  quantities: Stated | null;
}
/**
 * One sending of a record. How it is written is not part of the record: the customer by id (in
 * either case) or externalId, the currency's case (or left out for USD), the time's zone offset,
 * spaces around the key, the order of JSON keys, the metadata.
 */
interface SendSpec {
  channel: Channel;
  slot: number;
  order: number;
  delay: number;
  process: number;
  /** Which record a conflict's send carries (0 or 1). */
  variant: number;
  customerStyle: 'id' | 'upper id' | 'externalId';
  currencyText: 'absent' | 'upper' | 'lower';
  /** The timestamp written at this offset from UTC, in minutes (the same instant). */
  zoneMinutes: number;
  padKey: boolean;
  reverseKeys: boolean;
  metadata: { note: string } | null;
}
interface GroupSpec {
  record: RecordSpec;
  conflict: { change: 'customer'; shift: number } | { change: 'quantity'; extra: number } | null;
  sends: SendSpec[];
}
interface WalletSpec {
  grantCents: number;
  overdraftCents: number;
}

const CUSTOMERS = 4;
/** c0 is rich (USD), c1 and c2 have little USD credit, c3 little EUR credit. */
const mainCurrencyOf = (customer: number) => (customer === 3 ? 'EUR' : 'USD');
const currencyOf = (record: Pick<RecordSpec, 'customer' | 'otherCurrency'>) => {
  const main = mainCurrencyOf(record.customer);
  return record.otherCurrency ? (main === 'USD' ? 'EUR' : 'USD') : main;
};

const recordArb: fc.Arbitrary<RecordSpec> = fc
  .record({
    customer: fc.nat({ max: CUSTOMERS - 1 }),
    otherCurrency: fc.oneof({ weight: 8, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    when: fc.oneof(
      { weight: 3, arbitrary: fc.constant({ at: 'now' as const }) },
      { weight: 2, arbitrary: fc.record({ at: fc.constantFrom('late' as const, 'lastMonth' as const), fraction: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }) }) },
    ),
    body: fc.oneof(
      { weight: 3, arbitrary: fc.record({ kind: fc.constant('response' as const), fixture: fc.constantFrom(...FIXTURE_NAMES) }) },
      {
        weight: 3,
        arbitrary: fc.record({
          kind: fc.constant('usage' as const),
          provider: fc.constantFrom('openai|gpt-5.4-mini', 'anthropic|claude-haiku-4-5', 'acme|house-model'),
          inputTokens: fc.nat({ max: 3000 }),
          outputTokens: fc.nat({ max: 1500 }),
        }).map(({ provider, ...rest }) => ({ ...rest, provider: provider.split('|')[0]!, model: provider.split('|')[1]! })),
      },
      { weight: 3, arbitrary: fc.constant({ kind: 'quantities' as const }) },
    ),
    quantities: fc.option(fc.record({ searches: fc.nat({ max: 15 }), seats: fc.nat({ max: 12 }), jobs: fc.nat({ max: 3 }) }, { requiredKeys: [] }), { nil: null, freq: 3 }),
  })
  .map((record) => {
    // Meter quantities alone must state at least one meter.
    if (record.body.kind === 'quantities' && (!record.quantities || Object.keys(record.quantities).length === 0)) return { ...record, quantities: { searches: 1 } };
    return record;
  });

const sendArb: fc.Arbitrary<SendSpec> = fc.record({
  channel: fc.constantFrom<Channel>('single', 'graphql', 'batch', 'batch', 'minimal'),
  slot: fc.nat({ max: 2 }),
  order: fc.nat({ max: 1000 }),
  delay: fc.nat({ max: 15 }),
  process: fc.nat({ max: 1 }),
  variant: fc.nat({ max: 1 }),
  customerStyle: fc.constantFrom('id' as const, 'upper id' as const, 'externalId' as const),
  currencyText: fc.constantFrom('absent' as const, 'upper' as const, 'lower' as const),
  zoneMinutes: fc.constantFrom(0, 0, 330, -420, 60),
  padKey: fc.boolean(),
  reverseKeys: fc.boolean(),
  metadata: fc.option(fc.record({ note: fc.string({ maxLength: 6 }) }), { nil: null }),
});

const groupArb: fc.Arbitrary<GroupSpec> = fc
  .record({
    record: recordArb,
    conflict: fc.oneof(
      { weight: 5, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: fc.record({ change: fc.constant('customer' as const), shift: fc.integer({ min: 1, max: CUSTOMERS - 1 }) }) },
      { weight: 1, arbitrary: fc.record({ change: fc.constant('quantity' as const), extra: fc.integer({ min: 1, max: 5 }) }) },
    ),
    sends: fc.oneof({ weight: 3, arbitrary: fc.array(sendArb, { minLength: 1, maxLength: 1 }) }, { weight: 2, arbitrary: fc.array(sendArb, { minLength: 2, maxLength: 3 }) }),
  })
  // A different record under the key needs two sends at least.
  .chain((group) => (group.conflict && group.sends.length < 2 ? sendArb.map((extra) => ({ ...group, sends: [...group.sends, extra] })) : fc.constant(group)))
  .map((group) => ({
    ...group,
    sends: group.sends.map((send, i) => ({
      ...send,
      // The first two sends of a key go to different processes (a third goes to either).
      process: i === 1 ? 1 - group.sends[0]!.process : send.process,
      // Both records of a conflict are sent (the first two sends carry one each), else only the one.
      variant: !group.conflict ? 0 : i < 2 ? (i + group.sends[0]!.variant) % 2 : send.variant,
    })),
  }));

const walletArb: fc.Arbitrary<WalletSpec> = fc.record({
  grantCents: fc.integer({ min: 20, max: 400 }),
  overdraftCents: fc.oneof(fc.constant(0), fc.integer({ min: 10, max: 150 })),
});

const runArb = fc.record({
  groups: fc.array(groupArb, { minLength: 8, maxLength: MAX_GROUPS, size: 'max' }),
  wallets: fc.tuple(walletArb, walletArb, walletArb),
  /** Sent again once the burst is answered, all at once: some key (by place), and one of its records. */
  retries: fc.array(fc.record({ group: fc.nat(), send: sendArb }), { maxLength: 16 }),
});
type RunSpec = (typeof runArb) extends fc.Arbitrary<infer T> ? T : never;

/** The variants of a group: its record, and for a conflict the other record sent under the same key. */
function variantsOf(group: GroupSpec): RecordSpec[] {
  const { record, conflict } = group;
  if (!conflict) return [record];
  if (conflict.change === 'customer') return [record, { ...record, customer: (record.customer + conflict.shift) % CUSTOMERS }];
  const quantities = { ...record.quantities, searches: (record.quantities?.searches ?? 0) + conflict.extra };
  return [record, { ...record, quantities }];
}

// ---------------------------------------------------------------------------------------------
// One run: a fresh set of customers (so fresh wallets and period totals), then every request at once.

interface Customer {
  id: string;
  externalId: string;
  currency: string;
  grantNanos: bigint;
  overdraftNanos: bigint;
}

interface AnsweredEvent {
  id: string;
  customerId: string;
  status: string;
  charge: string;
  shortfall: string;
  shortfallSettled: string;
}
type Answer =
  | { kind: 'ok'; replayed: boolean; chargeError: string | null; event: AnsweredEvent }
  | { kind: 'omitted' }
  | { kind: 'error'; code: string; message: string };

interface Send extends SendSpec {
  group: number;
  answer?: Answer;
}

interface Materialized {
  key: string;
  variants: RecordSpec[];
  /** The record as a send writes it (for HTTP and GraphQL alike). */
  http: (send: Send, index: number) => Record<string, unknown>;
  timestamps: (string | null)[];
}

async function createCustomers(runId: string, wallets: WalletSpec[]): Promise<Customer[]> {
  const specs = [{ grantCents: 20_000, overdraftCents: 0 }, ...wallets];
  return Promise.all(
    specs.map(async (spec, index) => {
      const externalId = `${runId}-c${index}`;
      const { id } = await runtime.services.customers.create(merchant.id, { externalId });
      const currency = mainCurrencyOf(index);
      const grantNanos = BigInt(spec.grantCents) * 10_000_000n;
      const overdraftNanos = BigInt(spec.overdraftCents) * 10_000_000n;
      await runtime.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: id, currency, amountNanos: grantNanos, kind: 'PAID', idempotencyKey: `grant-${externalId}` });
      if (overdraftNanos > 0n) await runtime.services.ledger.setOverdraftLimit(merchant.id, id, currency, overdraftNanos);
      return { id, externalId, currency, grantNanos, overdraftNanos };
    }),
  );
}

function timestampOf(when: RecordSpec['when'], now: Date): string | null {
  if (when.at === 'now') return null;
  const monthStart = periodStartOf(now).getTime();
  if (when.at === 'late') {
    // Earlier in this month (at least a minute ago when the month is older than that).
    const latest = Math.max(monthStart, now.getTime() - 60_000);
    return new Date(monthStart + Math.floor(when.fraction * (latest - monthStart))).toISOString();
  }
  const previous = periodStartOf(new Date(monthStart - 1)).getTime();
  return new Date(previous + Math.floor(when.fraction * (monthStart - previous - 1))).toISOString();
}

/** An ISO time written at another offset from UTC: the same instant, e.g. 2026-12-01T15:30:00.000+05:30. */
function inZone(iso: string, minutes: number): string {
  if (minutes === 0) return iso;
  const local = new Date(Date.parse(iso) + minutes * 60_000).toISOString().slice(0, -1);
  const offset = Math.abs(minutes);
  return `${local}${minutes < 0 ? '-' : '+'}${String(Math.floor(offset / 60)).padStart(2, '0')}:${String(offset % 60).padStart(2, '0')}`;
}

function materialize(group: GroupSpec, index: number, runId: string, customers: Customer[], now: Date): Materialized {
  const key = `${runId}-k${index}`;
  const variants = variantsOf(group);
  const timestamps = variants.map((variant) => timestampOf(variant.when, now));
  const ordered = <T extends object>(value: T, reverse: boolean): T => (reverse ? (Object.fromEntries(Object.entries(value).reverse()) as T) : value);
  const http = (send: Send, sendIndex: number) => {
    const record = variants[send.variant]!;
    const customer = customers[record.customer]!;
    const named = { id: customer.id, 'upper id': customer.id.toUpperCase(), externalId: customer.externalId }[send.customerStyle];
    const out: Record<string, unknown> = { customer: named, idempotencyKey: send.padKey ? ` ${key}\t` : key };
    const currency = currencyOf(record);
    if (send.currencyText !== 'absent' || currency !== 'USD') out.currency = send.currencyText === 'lower' ? currency.toLowerCase() : currency;
    const timestamp = timestamps[send.variant];
    if (timestamp) out.timestamp = inZone(timestamp, send.zoneMinutes);
    if (record.body.kind === 'response') out.response = ordered(responseOf(record.body.fixture), send.reverseKeys);
    if (record.body.kind === 'usage') {
      const { provider, model, inputTokens, outputTokens } = record.body;
      out.usage = ordered({ provider, model, inputTokens, outputTokens }, send.reverseKeys);
    }
    if (record.quantities) out.quantities = ordered(record.quantities, send.reverseKeys);
    // Metadata is not part of the record: each send may carry its own.
    if (send.metadata) out.metadata = { ...send.metadata, send: sendIndex };
    return ordered(out, send.reverseKeys);
  };
  return { key, variants, http, timestamps };
}

const EVENT_FIELDS = 'id customerId status charge shortfall shortfallSettled';
const RECORD = `mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { replayed chargeError { code message } event { ${EVENT_FIELDS} } } }`;

async function post(url: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}`, ...headers },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, text, headers: response.headers };
}

const eventOf = (raw: any): AnsweredEvent => ({
  id: raw.id, customerId: raw.customerId, status: raw.status, charge: raw.charge, shortfall: raw.shortfall, shortfallSettled: raw.shortfallSettled,
});

/** What the HTTP batch answered for one event. */
function batchAnswer(result: any): Answer {
  if (!result.ok) return { kind: 'error', code: result.error.code, message: result.error.message };
  return { kind: 'ok', replayed: result.replayed, chargeError: result.chargeError?.code ?? null, event: eventOf(result.event) };
}

interface RequestOutcome {
  /** Events this request recorded (answered replayed: false), counted from the summary for minimal batches. */
  originals: number;
}

/** Sends one request; records each send's answer on it. */
async function sendRequest(url: string, channel: Channel, sends: Send[], records: Record<string, unknown>[]): Promise<RequestOutcome> {
  if (channel === 'graphql') {
    // GraphQL's input types take the HTTP record as it is.
    const { status, text } = await post(url, '/graphql', { query: RECORD, variables: { input: records[0] } });
    expect(status, text.slice(0, 500)).toBe(200);
    const body = JSON.parse(text) as { data?: any; errors?: { message: string; extensions: { code: string } }[] };
    if (body.errors) {
      expect(body.errors, text.slice(0, 500)).toHaveLength(1);
      sends[0]!.answer = { kind: 'error', code: body.errors[0]!.extensions.code, message: body.errors[0]!.message };
      return { originals: 0 };
    }
    const result = body.data.recordUsage;
    sends[0]!.answer = { kind: 'ok', replayed: result.replayed, chargeError: result.chargeError?.code ?? null, event: eventOf(result.event) };
    return { originals: result.replayed ? 0 : 1 };
  }
  if (channel === 'single') {
    const { status, text } = await post(url, '/v1/usage', records[0]);
    expect(status, text.slice(0, 500)).toBeLessThan(500);
    const body = JSON.parse(text);
    if (body.error) {
      expect(status, text.slice(0, 300)).toBe(409);
      sends[0]!.answer = { kind: 'error', code: body.error.code, message: body.error.message };
      return { originals: 0 };
    }
    // Recorded but not fully paid for: 402, with the event and its chargeError.
    expect(status, text.slice(0, 300)).toBe(body.chargeError ? 402 : 200);
    sends[0]!.answer = batchAnswer({ ...body, ok: true });
    return { originals: body.replayed ? 0 : 1 };
  }
  const minimal = channel === 'minimal';
  const { status, text, headers } = await post(url, '/v1/usage/batch', { events: records }, minimal ? { prefer: 'return=minimal' } : {});
  expect(status, text.slice(0, 500)).toBe(200);
  const body = JSON.parse(text) as { results: any[]; summary: { received: number; ok: number; failed: number; replayed: number } };
  expect(body.summary.received).toBe(records.length);
  expect(body.summary.ok + body.summary.failed).toBe(records.length);
  const listed = new Map(body.results.map((result) => [result.index as number, result]));
  if (!minimal) expect(body.results.map((result) => result.index)).toEqual(records.map((_r, i) => i));
  else expect(headers.get('preference-applied')).toBe('return=minimal');
  sends.forEach((send, index) => {
    const result = listed.get(index);
    send.answer = result ? batchAnswer(result) : { kind: 'omitted' };
  });
  const answers = sends.map((send) => send.answer!);
  const ok = answers.filter((answer) => answer.kind !== 'error').length;
  expect(body.summary.ok).toBe(ok);
  const knownReplays = answers.filter((answer) => answer.kind === 'ok' && answer.replayed).length;
  if (!minimal) expect(body.summary.replayed).toBe(knownReplays);
  else expect(body.summary.replayed).toBeGreaterThanOrEqual(knownReplays);
  return { originals: body.summary.ok - body.summary.replayed };
}

interface ListedEvent {
  id: string;
  idempotencyKey: string;
  customerId: string;
  currency: string;
  occurredAt: string;
  status: string;
  cost: string;
  charge: string;
  shortfall: string;
  shortfallSettled: string;
  costProblem: string | null;
  estimated: boolean;
  ledgerTransactionId: string | null;
  charges: { priceRuleId: string | null; amount: string; quantity: string | null }[];
}

const EVENTS = `query ($customerId: ID, $after: String) { usageEvents(customerId: $customerId, first: 100, after: $after) {
  pageInfo { hasNextPage endCursor }
  edges { node { id idempotencyKey customerId currency occurredAt status cost charge shortfall shortfallSettled costProblem estimated ledgerTransactionId
    charges { priceRuleId amount quantity } } } } }`;

/** A customer's events as the usageEvents query lists them, every page. */
async function listEvents(url: string, customerId: string): Promise<ListedEvent[]> {
  const events: ListedEvent[] = [];
  for (let after: string | null = null; ;) {
    const { status, text } = await post(url, '/graphql', { query: EVENTS, variables: { customerId, after } });
    expect(status, text.slice(0, 300)).toBe(200);
    const body = JSON.parse(text) as { data: any; errors?: unknown };
    expect(body.errors).toBeUndefined();
    const page = body.data.usageEvents;
    events.push(...page.edges.map((edge: { node: ListedEvent }) => edge.node));
    if (!page.pageInfo.hasNextPage) return events;
    after = page.pageInfo.endCursor;
  }
}

/** Why a minimal batch answer lists an ok event: not fully paid for, or its provider cost unknown and so unpriced. */
function needsAttention(event: ListedEvent): boolean {
  const unpaid = event.status === 'UNCHARGED' || event.status === 'PARTIALLY_CHARGED';
  const unpriced = event.costProblem !== null && (event.status === 'NOT_BILLABLE' || event.charges.some((line) => line.quantity === null));
  return unpaid || unpriced;
}

const seen = new Map<string, number>();
const tally = (what: string, by = 1) => seen.set(what, (seen.get(what) ?? 0) + by);

/**
 * Sends every send at once: each single and GraphQL send alone, batch sends grouped by process,
 * kind and slot (and by record too when `recordsApart`), in their generated order.
 */
async function fire(groups: Materialized[], sends: Send[]): Promise<RequestOutcome[]> {
  const requests: { process: number; channel: Channel; sends: Send[]; delay: number }[] = [];
  const batches = new Map<string, Send[]>();
  for (const send of sends) {
    if (send.channel === 'single' || send.channel === 'graphql') requests.push({ process: send.process, channel: send.channel, sends: [send], delay: send.delay });
    else {
      const at = `${send.process}|${send.channel}|${send.slot}`;
      batches.set(at, [...(batches.get(at) ?? []), send]);
    }
  }
  for (const [at, members] of batches) {
    const [process, channel] = at.split('|') as [string, Channel];
    members.sort((a, b) => a.order - b.order);
    if (members.some((one) => members.some((other) => other.group === one.group && other.variant !== one.variant))) tally('both records of a key in one batch');
    requests.push({ process: Number(process), channel, sends: members, delay: members[0]!.delay });
  }
  for (const request of requests) tally(`request ${request.channel}`);
  return Promise.all(
    requests.map(async (request) => {
      await new Promise((resolve) => setTimeout(resolve, request.delay));
      const records = request.sends.map((send) => groups[send.group]!.http(send, sends.indexOf(send)));
      return sendRequest(instances[request.process]!.url, request.channel, request.sends, records);
    }),
  );
}

async function runOnce(run: RunSpec): Promise<void> {
  const runId = randomUUID().slice(0, 8);
  const customers = await createCustomers(runId, run.wallets);
  const now = new Date();
  const groups = run.groups.map((group, index) => materialize(group, index, runId, customers, now));
  const sends: Send[] = run.groups.flatMap((group, g) => group.sends.map((send) => ({ ...send, group: g })));

  const outcomes = await fire(groups, sends);

  // ---- What was stored, straight from the tables.
  const ids = customers.map((customer) => customer.id);
  const rows = await runtime.services.db.withConnection((c) =>
    c.query<{ id: string; key: string; customer_id: string; output_tokens: number; requests: number; stated: Record<string, unknown> }>(
      `SELECT id, idempotency_key AS key, customer_id, output_tokens, requests, stated_quantities AS stated FROM usage_events WHERE merchant_id = $1 AND customer_id = ANY($2::uuid[])`,
      [merchant.id, ids],
    ),
  );
  const rowByKey = new Map<string, (typeof rows)[number]>();
  for (const row of rows) {
    expect(rowByKey.has(row.key), `key ${row.key} stored twice`).toBe(false);
    rowByKey.set(row.key, row);
  }
  // Every key stored once (each group's records are valid); nothing else stored for these customers.
  expect(new Set(rows.map((row) => row.key))).toEqual(new Set(groups.map((group) => group.key)));
  // Each stored event was recorded by exactly one answer (replayed: false), whichever process gave it.
  expect(outcomes.reduce((sum, outcome) => sum + outcome.originals, 0), 'answers that recorded an event').toBe(rows.length);

  // ---- The events as the usageEvents query reports them (read through either process).
  const listed = new Map<string, ListedEvent>();
  const lists = await Promise.all(customers.map((customer, index) => listEvents(instances[index % 2]!.url, customer.id)));
  for (const [index, customer] of customers.entries()) {
    for (const event of lists[index]!) {
      expect(event.customerId).toBe(customer.id);
      listed.set(event.idempotencyKey, event);
    }
  }
  expect(new Set(listed.keys())).toEqual(new Set(rowByKey.keys()));

  // ---- Per key: the answers to its concurrent sends.
  const winnerOf = new Map<string, RecordSpec>();
  groups.forEach((group, g) => {
    const mine = sends.filter((send) => send.group === g);
    const where = `key ${group.key} (sends ${JSON.stringify(mine.map((send) => ({ variant: send.variant, channel: send.channel, process: send.process, answer: send.answer })))})`;
    const row = rowByKey.get(group.key)!;
    const event = listed.get(group.key)!;
    for (const send of mine) {
      expect(send.answer, where).toBeDefined();
      if (send.answer!.kind === 'error') expect(send.answer!.code, where).toBe('CONFLICT');
    }
    const kept = mine.filter((send) => send.answer!.kind !== 'error');
    expect(kept.length, where).toBeGreaterThan(0);
    const winner = kept[0]!.variant;
    // The one record kept; every send of another record under the key is a CONFLICT.
    for (const send of mine) expect(send.answer!.kind === 'error', where).toBe(send.variant !== winner);
    const record = group.variants[winner]!;
    winnerOf.set(group.key, record);
    expect(row.customer_id, where).toBe(customers[record.customer]!.id);
    expect(event.currency, where).toBe(currencyOf(record));
    if (group.timestamps[winner]) expect(Date.parse(event.occurredAt), where).toBe(Date.parse(group.timestamps[winner]!));
    expect(row.stated, where).toEqual(record.quantities ?? {});
    if (record.body.kind === 'usage') expect(row.output_tokens, where).toBe(record.body.outputTokens);
    // The first result, once as recorded and otherwise as a replay, all naming the stored event.
    const answered = kept.map((send) => send.answer!).filter((answer): answer is Extract<Answer, { kind: 'ok' }> => answer.kind === 'ok');
    const recorded = answered.filter((answer) => !answer.replayed).length;
    expect(recorded, where).toBeLessThanOrEqual(1);
    if (recorded === 0) expect(kept.some((send) => send.answer!.kind === 'omitted'), where).toBe(true);
    const unpaid = event.status === 'UNCHARGED' || event.status === 'PARTIALLY_CHARGED';
    for (const answer of answered) {
      expect(answer.event, where).toEqual({
        id: event.id, customerId: event.customerId, status: event.status, charge: event.charge, shortfall: event.shortfall, shortfallSettled: event.shortfallSettled,
      });
      expect(answer.chargeError, where).toBe(unpaid ? 'INSUFFICIENT_FUNDS' : null);
    }
    // A minimal answer lists an ok event exactly when it needs attention.
    for (const send of kept) if (send.channel === 'minimal') expect(send.answer!.kind === 'ok', where).toBe(needsAttention(event));
    tally(mine.length > 1 ? (group.variants.length > 1 ? 'key conflict' : 'key sent twice at once') : 'key sent once');
    tally(`status ${event.status}`);
  });

  // ---- Per event: its lines, and what it was charged.
  const chargeOf = new Map<string, bigint>();
  const periods = new Map<string, { event: ListedEvent; record: RecordSpec; meters: Record<string, bigint> }[]>();
  for (const [key, event] of listed) {
    const record = winnerOf.get(key)!;
    const row = rowByKey.get(key)!;
    const where = `event ${key} ${JSON.stringify(record)}: ${JSON.stringify(event)}`;
    const charge = attos(event.charge);
    const shortfall = attos(event.shortfall);
    const settled = attos(event.shortfallSettled);
    chargeOf.set(key, charge);
    const billable = record.body.kind !== 'response' || expectedUsage[record.body.fixture]?.billable === true || event.estimated;
    const meters: Record<string, bigint> = {
      out_tokens: billable ? BigInt(record.body.kind === 'quantities' ? 0 : row.output_tokens) : 0n,
      searches: billable ? BigInt(record.quantities?.searches ?? 0) : 0n,
      seats: billable ? BigInt(record.quantities?.seats ?? 0) : 0n,
      jobs: billable && (record.quantities?.jobs ?? 0) > 0 ? 1n : 0n,
    };
    const byRule = new Map<string, ListedEvent['charges'][number]>();
    for (const line of event.charges) {
      const name = ruleNames.get(line.priceRuleId ?? '');
      expect(name, where).toBeDefined();
      expect(byRule.has(name!), where).toBe(false);
      byRule.set(name!, line);
    }
    // Which rules priced it: the markup for a billable USD event, and each meter it moved.
    const expectedRules = [
      ...(billable && event.currency === 'USD' ? ['markup'] : []),
      ...(meters.out_tokens! > 0n ? ['tokens'] : []),
      ...(meters.searches! > 0n ? ['searches'] : []),
      ...(meters.seats! > 0n ? ['seats'] : []),
      ...(meters.jobs! > 0n ? ['jobs'] : []),
    ];
    expect([...byRule.keys()].sort(), where).toEqual(expectedRules.sort());
    if (byRule.has('markup')) {
      const costKnown = event.costProblem === null;
      expect(attos(byRule.get('markup')!.amount), where).toBe(markupCharge(attos(event.cost), costKnown, BigInt(row.requests)));
    }
    if (byRule.has('tokens')) expect(byRule.get('tokens')!.quantity, where).toBe(String(meters.out_tokens));
    if (byRule.has('searches')) expect(byRule.get('searches')!.quantity, where).toBe(String(meters.searches));
    if (byRule.has('jobs')) expect(byRule.get('jobs')!.quantity, where).toBe('1');
    // The lines make up the charge, with what the customer could not pay and what settled earlier shortfalls.
    const lines = event.charges.reduce((sum, line) => sum + attos(line.amount), 0n);
    expect(lines, where).toBe(charge + shortfall - settled);
    expect(shortfall >= 0n && settled >= 0n, where).toBe(true);
    if (settled > 0n) expect(attos(byRule.get('searches')?.amount ?? '0') < 0n, where).toBe(true);
    switch (event.status) {
      case 'CHARGED':
        expect(shortfall, where).toBe(0n);
        expect(charge + settled, where).not.toBe(0n);
        break;
      case 'NOT_BILLABLE':
        expect([charge, shortfall], where).toEqual([0n, 0n]);
        expect(event.ledgerTransactionId, where).toBeNull();
        break;
      case 'UNCHARGED':
        expect(charge, where).toBe(0n);
        expect(shortfall > 0n, where).toBe(true);
        expect(event.ledgerTransactionId, where).toBeNull();
        break;
      case 'PARTIALLY_CHARGED':
        expect(charge > 0n && shortfall > 0n, where).toBe(true);
        expect(event.ledgerTransactionId, where).not.toBeNull();
        break;
      default:
        throw new Error(`${where}: unknown status`);
    }
    const period = `${event.customerId}|${event.currency}|${periodStartOf(new Date(event.occurredAt)).toISOString()}`;
    periods.set(period, [...(periods.get(period) ?? []), { event, record, meters }]);
  }

  // ---- Per customer, currency and month: each rule's lines add up to its price of the month's total.
  const lineOf = (event: ListedEvent, rule: string) => event.charges.find((line) => ruleNames.get(line.priceRuleId ?? '') === rule);
  for (const [period, events] of periods) {
    const where = `period ${period}`;
    const sumOf = (rule: string) => events.reduce((sum, { event }) => sum + attos(lineOf(event, rule)?.amount ?? '0'), 0n);
    const total = (meter: string) => events.reduce((sum, { meters }) => sum + meters[meter]!, 0n);
    expect(sumOf('tokens'), `${where}: tokens`).toBe(graduatedPrice(TOKEN_TIERS, total('out_tokens')));
    expect(sumOf('searches'), `${where}: searches`).toBe(volumePrice(SEARCH_TIERS, total('searches')));
    expect(sumOf('jobs'), `${where}: jobs`).toBe(packagePrice(total('jobs')));
    // VOLUME: each line is the step of some total before it (the period re-priced at the rate of its tier).
    const searches = total('searches');
    for (const { event, meters } of events) {
      const line = lineOf(event, 'searches');
      if (!line) continue;
      const q = meters.searches!;
      const amount = attos(line.amount);
      let found = false;
      for (let prior = 0n; prior + q <= searches && !found; prior++) found = volumePrice(SEARCH_TIERS, prior + q) - volumePrice(SEARCH_TIERS, prior) === amount;
      expect(found, `${where}: searches line ${line.amount} for ${q} is no step of the volume price within ${searches}`).toBe(true);
      if (amount < 0n) tally('volume give-back');
    }
    // MAX: the events that raised the peak chain from 0 to it; the others add nothing.
    const peak = events.reduce((most, { meters }) => (meters.seats! > most ? meters.seats! : most), 0n);
    const raises: [bigint, bigint][] = [];
    for (const { event, meters } of events) {
      const line = lineOf(event, 'seats');
      if (!line) continue;
      const stated = meters.seats!;
      const added = BigInt(line.quantity!);
      expect(added >= 0n && added <= stated, `${where}: seats line ${JSON.stringify(line)} for ${stated}`).toBe(true);
      if (added === 0n) expect(attos(line.amount), `${where}: seats`).toBe(0n);
      else {
        raises.push([stated - added, stated]);
        expect(attos(line.amount), `${where}: seats ${stated - added} → ${stated}`).toBe(graduatedPrice(SEAT_TIERS, stated) - graduatedPrice(SEAT_TIERS, stated - added));
      }
    }
    raises.sort((a, b) => (a[1] < b[1] ? -1 : 1));
    let level = 0n;
    for (const [from, to] of raises) {
      expect(from, `${where}: seats raises ${JSON.stringify(raises.map(String))}`).toBe(level);
      level = to;
    }
    expect(level, `${where}: seats peak`).toBe(peak);
    expect(sumOf('seats'), `${where}: seats`).toBe(graduatedPrice(SEAT_TIERS, peak));
    if (raises.length > 1) tally('peak raised twice or more');
    // A give-back settles only shortfalls the month has.
    const shortfalls = events.reduce((sum, { event }) => sum + attos(event.shortfall), 0n);
    const settled = events.reduce((sum, { event }) => sum + attos(event.shortfallSettled), 0n);
    expect(settled <= shortfalls, `${where}: settled ${settled} of shortfalls ${shortfalls}`).toBe(true);
    if (settled > 0n) tally('shortfall settled');
  }

  // ---- Per wallet: moved by exactly the events' charges; never below its floor.
  const walletsRead = await Promise.all(customers.map((customer) => Promise.all(['USD', 'EUR'].map((currency) => runtime.services.ledgerQueries.wallet(merchant.id, customer.id, currency)))));
  for (const [index, customer] of customers.entries()) {
    for (const [c, currency] of ['USD', 'EUR'].entries()) {
      const main = currency === customer.currency;
      const [granted, overdraft] = main ? [customer.grantNanos, customer.overdraftNanos] : [0n, 0n];
      const wallet = walletsRead[index]![c]!;
      const mine = [...listed.values()].filter((event) => event.customerId === customer.id && event.currency === currency);
      const charged = mine.reduce((sum, event) => sum + chargeOf.get(event.idempotencyKey)!, 0n);
      const where = `customer c${index} ${currency} (granted ${granted}, overdraft ${overdraft}): balance ${wallet.balance}, carry ${wallet.fractionCarry}, events ${JSON.stringify(mine.map((e) => [e.status, e.charge, e.shortfall, e.shortfallSettled]))}`;
      expect(wallet.balance * NANO - wallet.fractionCarry, where).toBe(granted * NANO - charged);
      expect(wallet.balance >= -overdraft, where).toBe(true);
      expect(wallet.overdraftLimit, where).toBe(overdraft);
      const short = mine.some((event) => attos(event.shortfall) > 0n);
      if (index === 0 && main) expect(short, where).toBe(false);
      // After a shortfall the wallet was taken down to its floor, and only a give-back lifts it from there.
      if (short && !mine.some((event) => attos(event.charge) < 0n)) expect(wallet.balance, where).toBe(-overdraft);
      if (short) tally(main ? 'wallet ran out' : 'charged in a currency without credit');
    }
  }

  // ---- The ledger: each event charged by at most one transaction, which took exactly its charges.
  const transactions = await runtime.services.db.withConnection((c) =>
    c.query<{ id: string; metadata: { usageEventIds?: string[]; exactChargeAttos?: string } }>(
      `SELECT id, metadata FROM ledger_transactions WHERE merchant_id = $1 AND customer_id = ANY($2::uuid[]) AND kind = 'USAGE'`,
      [merchant.id, ids],
    ),
  );
  const byId = new Map([...listed.values()].map((event) => [event.id, event]));
  const chargedBy = new Map<string, string>();
  for (const transaction of transactions) {
    const eventIds = transaction.metadata.usageEventIds ?? [];
    expect(eventIds.length, JSON.stringify(transaction)).toBeGreaterThan(0);
    let sum = 0n;
    for (const id of eventIds) {
      expect(chargedBy.has(id), `event ${id} charged by two transactions`).toBe(false);
      chargedBy.set(id, transaction.id);
      const event = byId.get(id);
      expect(event, `transaction ${transaction.id} charges an unknown event ${id}`).toBeDefined();
      expect(event!.ledgerTransactionId).toBe(transaction.id);
      sum += attos(event!.charge);
    }
    expect(sum, JSON.stringify(transaction)).toBe(BigInt(transaction.metadata.exactChargeAttos ?? 'x'));
  }
  for (const event of listed.values()) {
    if (event.ledgerTransactionId !== null) expect(chargedBy.get(event.id), `event ${event.idempotencyKey}`).toBe(event.ledgerTransactionId);
    else expect(event.status === 'CHARGED' ? attos(event.charge) <= 0n : event.status !== 'PARTIALLY_CHARGED', `event ${event.idempotencyKey} charged without a transaction`).toBe(true);
  }
  expect((await runtime.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);

  // ---- Retries, to either process at once: each answers the first result (or CONFLICT for the other record), and nothing moves.
  if (run.retries.length === 0) return;
  const walletsNow = async () =>
    Promise.all(customers.flatMap((customer) => ['USD', 'EUR'].map(async (currency) => {
      const wallet = await runtime.services.ledgerQueries.wallet(merchant.id, customer.id, currency);
      return `${customer.externalId}/${currency}=${wallet.balance}/${wallet.fractionCarry}`;
    })));
  const transactionCount = async () => (await runtime.services.db.withConnection((c) =>
    c.query<{ n: number }>(`SELECT count(*)::int AS n FROM ledger_transactions WHERE merchant_id = $1 AND customer_id = ANY($2::uuid[])`, [merchant.id, ids])))[0]!.n;
  const before = { wallets: await walletsNow(), transactions: await transactionCount() };
  const retries: Send[] = run.retries.map(({ group, send }) => {
    const g = group % groups.length;
    return { ...send, group: g, variant: send.variant % groups[g]!.variants.length };
  });
  const replayed = await fire(groups, retries);
  expect(replayed.reduce((sum, outcome) => sum + outcome.originals, 0), 'retries that recorded an event').toBe(0);
  for (const send of retries) {
    const group = groups[send.group]!;
    const event = listed.get(group.key)!;
    const where = `retry of key ${group.key} (record ${send.variant} of ${group.variants.length}, ${send.channel} to process ${send.process}): ${JSON.stringify(send.answer)}`;
    if (group.variants[send.variant] !== winnerOf.get(group.key)) {
      expect(send.answer!.kind === 'error' && send.answer!.code, where).toBe('CONFLICT');
      continue;
    }
    if (send.channel === 'minimal') expect(send.answer!.kind === 'ok', where).toBe(needsAttention(event));
    if (send.answer!.kind === 'omitted') continue;
    expect(send.answer!.kind, where).toBe('ok');
    const answer = send.answer as Extract<Answer, { kind: 'ok' }>;
    expect(answer.replayed, where).toBe(true);
    expect(answer.event, where).toEqual({
      id: event.id, customerId: event.customerId, status: event.status, charge: event.charge, shortfall: event.shortfall, shortfallSettled: event.shortfallSettled,
    });
    expect(answer.chargeError, where).toBe(event.status === 'UNCHARGED' || event.status === 'PARTIALLY_CHARGED' ? 'INSUFFICIENT_FUNDS' : null);
    tally('retry replayed');
  }
  expect(await walletsNow(), 'wallets after the retries').toEqual(before.wallets);
  expect(await transactionCount(), 'ledger transactions after the retries').toBe(before.transactions);
  const after = await runtime.services.db.withConnection((c) =>
    c.query<{ n: number }>(`SELECT count(*)::int AS n FROM usage_events WHERE merchant_id = $1 AND customer_id = ANY($2::uuid[])`, [merchant.id, ids]));
  expect(after[0]!.n, 'events after the retries').toBe(rows.length);
}

function reporter<T>(out: fc.RunDetails<T>): void {
  if (!out.failed) return;
  const error = out.errorInstance instanceof Error ? out.errorInstance.message : String(out.errorInstance);
  throw new Error(`Property failed after ${out.numRuns} run(s) (seed ${out.seed}, path "${out.counterexamplePath}"): replay with FUZZ_SEED=${out.seed}\n${error}`);
}

describe('usage ingestion across two server processes, concurrently', () => {
  it('stores and charges every key once, prices each month from its totals, and keeps wallets and the ledger whole', async () => {
    await fc.assert(fc.asyncProperty(runArb, runOnce), {
      numRuns: NUM_RUNS,
      seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined,
      // Each run is a burst of concurrent requests: a failure is reported as found, not shrunk.
      endOnFailure: true,
      reporter,
    });
    if (process.env.FUZZ_STATS) console.log(Object.fromEntries([...seen].sort()));
    // The runs reached what they are for: duplicates across processes, conflicts, refusals for funds.
    if (NUM_RUNS < 3) return;
    expect(seen.get('key sent twice at once') ?? 0).toBeGreaterThan(0);
    expect(seen.get('key conflict') ?? 0).toBeGreaterThan(0);
    expect((seen.get('status UNCHARGED') ?? 0) + (seen.get('status PARTIALLY_CHARGED') ?? 0)).toBeGreaterThan(0);
  }, 30_000 + NUM_RUNS * 10_000);

  // A retry placed after another customer's record under its key used to take that record's
  // CONFLICT as its own answer (see UsageService.chargeTogether): whether a retry replayed depended
  // on what else its batch held, and, concurrently, on which process stored the key first.
  it('a retry of the stored record after another customer\'s record under its key, in one batch, answers the first result', async () => {
    const [a, b] = instances as [ServerProcess, ServerProcess];
    const runId = randomUUID().slice(0, 8);
    const [c0, c1, c2] = await createCustomers(runId, [{ grantCents: 500, overdraftCents: 0 }, { grantCents: 500, overdraftCents: 0 }, { grantCents: 500, overdraftCents: 0 }]);
    const outcome = (result: any) => (result.ok ? `${result.replayed ? 'replay of' : 'recorded'} ${result.event.id}` : result.error.code);
    const cases: Record<string, string[]> = {};
    for (const [name, other] of [['same customer', c0!], ['another customer', c1!]] as const) {
      const key = `${runId}-${name}`;
      const stored = { customer: c2!.id, idempotencyKey: key, quantities: { searches: 2 } };
      const first = await post(a.url, '/v1/usage', stored);
      expect(first.status, first.text).toBe(200);
      const id = JSON.parse(first.text).event.id;
      // Another record under the key first (naming the same customer, or another), then the stored record again.
      const differing = { ...stored, customer: name === 'same customer' ? c2!.id : other.id, quantities: { searches: 3 } };
      const batch = await post(b.url, '/v1/usage/batch', { events: [differing, stored] });
      expect(batch.status, batch.text).toBe(200);
      cases[name] = (JSON.parse(batch.text).results as any[]).map(outcome).map((text) => text.replace(id, '<stored>'));
    }
    expect(cases).toEqual({
      'same customer': ['CONFLICT', 'replay of <stored>'],
      'another customer': ['CONFLICT', 'replay of <stored>'],
    });
  });
});
