import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type GraphQLResponse, type TestServer } from '../../../test/server.ts';
import { ERROR_CODES } from '../../shared/errors.ts';

/**
 * Property-based fuzzing of the ledger through its GraphQL API, on a controllable clock: random
 * sequences of grants, adjustments, refunds, debits, holds (create, capture, release), overdraft
 * limits, clock advances and replays against a few customers, with valid and broken arguments.
 * A model keeps each wallet's balance, carry, holds and used idempotency keys, predicts every
 * outcome (error code, or success with its exact movement), and is checked against the wallet as
 * the API shows it before and after every operation.
 *
 * Knobs (environment): FUZZ_RUNS / FUZZ_RUNS_HUGE (runs of each property), FUZZ_SEED (replay a
 * failure), FUZZ_SHRINK=1 (shrink a counterexample: slow, every attempt is a fresh merchant),
 * FUZZ_STATS=1 (print the outcomes reached), FUZZ_TIMEOUT_MS (per property).
 */

// ------------------------------------------------------------------ server and clock

const START = new Date('2026-06-01T12:00:00Z').getTime();
let now = new Date(START);
let server: TestServer;
/** A hold of another merchant: never visible to the fuzzed one. */
let foreignHoldId: string;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
  const other = await server.createMerchant('Other merchant');
  const customerId = (await server.services.customers.create(other.id, { externalId: `o-${randomUUID()}` })).id;
  const granted = await server.graphql(GRANT, { input: { customerId, amount: '5', kind: 'PAID', idempotencyKey: 'g' } }, other.secret);
  expect(granted.errors).toBeUndefined();
  const held = await server.graphql<{ createHold: { hold: { id: string } } }>(HOLD, { input: { customerId, amount: '1', idempotencyKey: 'h', ttlSeconds: 604800 } }, other.secret);
  expect(held.errors).toBeUndefined();
  foreignHoldId = held.data!.createHold.hold.id;
});
afterAll(() => server?.close());

// ------------------------------------------------------------------ operations

const OP_FIELDS = 'replayed transaction { id kind amount { amount currency } }';
const GRANT = `mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { ${OP_FIELDS} } }`;
const ADJUST = `mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { ${OP_FIELDS} } }`;
const REFUND = `mutation ($input: RefundCreditsInput!) { refundCredits(input: $input) { ${OP_FIELDS} } }`;
const DEBIT = `mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { ${OP_FIELDS} } }`;
const HOLD = `mutation ($input: CreateHoldInput!) { createHold(input: $input) { replayed hold { id status amount { amount currency } expiresAt } } }`;
const CAPTURE = `mutation ($id: ID!, $amount: Decimal) { captureHold(id: $id, amount: $amount) {
  replayed hold { id status capturedAmount { amount } } transaction { id kind amount { amount } } } }`;
const RELEASE = `mutation ($id: ID!) { releaseHold(id: $id) { id status } }`;
const OVERDRAFT = `mutation ($customerId: ID!, $currency: String, $limit: Decimal!) {
  setOverdraftLimit(customerId: $customerId, currency: $currency, limit: $limit) { overdraftLimit { amount } } }`;
const WALLET = `query ($id: ID!, $currency: String) { wallet(customerId: $id, currency: $currency) {
  balance { amount } available { amount } held { amount } overdraftLimit { amount }
  grants(first: 100) { totalCount nodes { kind remaining { amount } holdId expiresAt } }
  holds(status: [PENDING], first: 100) { totalCount nodes { id amount { amount } capturedAmount { amount } } }
  expiries: transactions(first: 100, filter: { kinds: [EXPIRY] }) { totalCount edges { node { id amount { amount } } } } } }`;

type CustomerRef = 0 | 1 | 2 | 'upper0' | 'unknown' | 'malformed';
type HoldRef = { known: number; upper?: boolean } | 'unknown' | 'malformed' | 'foreign' | 'empty';

type Op =
  | { t: 'grant'; c: CustomerRef; amount: unknown; currency: unknown; kind: string; expiresAt: ExpirySpec; priority: unknown; key: string }
  | { t: 'adjust'; c: CustomerRef; amount: unknown; currency: unknown; reason: unknown; key: string }
  | { t: 'refund'; c: CustomerRef; amount: unknown; currency: unknown; reason: unknown; key: string }
  | { t: 'debit'; c: CustomerRef; amount: unknown; currency: unknown; key: string }
  | { t: 'hold'; c: CustomerRef; amount: unknown; currency: unknown; ttl: unknown; key: string }
  | { t: 'capture'; hold: HoldRef; amount: unknown }
  | { t: 'release'; hold: HoldRef }
  | { t: 'overdraft'; c: CustomerRef; currency: unknown; limit: unknown }
  | { t: 'advance'; seconds: number }
  | { t: 'replay'; index: number; mutate: boolean };

type ExpirySpec = { rel: number } | { text: string } | null | undefined;

/** A request as sent: what replays send again. */
interface Request {
  t: Exclude<Op['t'], 'advance' | 'replay'>;
  query: string;
  vars: Record<string, unknown>;
}

// ------------------------------------------------------------------ generators

const digits = (n: number) => fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: n, maxLength: n });
const validAmount = fc
  .tuple(fc.oneof(fc.bigInt({ min: 0n, max: 20n }), fc.bigInt({ min: 0n, max: 2_000n })), fc.constantFrom(0, 0, 1, 2, 2, 3, 6, 9), fc.constantFrom(0, 0, 0, 1, 3), fc.boolean())
  .chain(([whole, places, zeros, spaced]) =>
    digits(places).map((fraction) => {
      const text = '0'.repeat(zeros) + whole.toString() + (places > 0 ? `.${fraction}` : '');
      return spaced ? ` ${text}\t` : text;
    }),
  );
const oddAmount = fc.constantFrom<unknown>(
  '0', '-0', '0.000', '-0.00', 'NaN', 'Infinity', '-Infinity', '1e3', '1E-2', '+1', '-1', '-5.25', '1.', '.5', '', ' ', '1,5', '0x10',
  '\u00a02.5\u00a0', '１', '٣', '৫', '1\u0000', '1000000000', '-1000000000', '1000000000.000000001', '999999999999', '1000000000000',
  '0.0000000001', '0.000000000000000001', '0.0000000000000000001', '1.123456789', '1.1234567891', '00000000000001.5', 5, 0, -3, 0.1, 1e21, true, null,
);
const amountArb = fc.oneof({ weight: 9, arbitrary: validAmount }, { weight: 1, arbitrary: oddAmount });
const currencyArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant<unknown>(undefined) },
  { weight: 6, arbitrary: fc.constantFrom<unknown>('USD', 'EUR') },
  { weight: 1, arbitrary: fc.constantFrom<unknown>('usd', ' eur ', 'JPY', 'BHD', 'jpy', 'ınr', null, 'UDS', 'US', 'USDD', '', 'XTS', '  ', 'U$D', 'usd\u0000') },
);
const KEYS = ['k1', 'k2', 'k3', 'k4', ' k1 ', 'k1\t', '', '   ', 'x'.repeat(255), 'x'.repeat(256), ` ${'y'.repeat(255)} `, 'a\u0000b', '🔑', 'é', 'e\u0301', '\ud800',
  'usage:1', 'hold-capture:x', 'grant-keep:', 'GRANT-EXPIRY:1'];
const keyArb = fc.oneof({ weight: 3, arbitrary: fc.constantFrom('k1', 'k2', 'k3', 'k4', 'k5', 'k6') }, { weight: 1, arbitrary: fc.constantFrom(...KEYS) }, { weight: 8, arbitrary: fc.uuid() });
const customerArb = fc.oneof({ weight: 12, arbitrary: fc.constantFrom<CustomerRef>(0, 0, 1, 2) }, { weight: 1, arbitrary: fc.constantFrom<CustomerRef>('upper0', 'unknown', 'malformed') });
const reasonArb = fc.oneof({ weight: 8, arbitrary: fc.constant<unknown>('fix') }, { weight: 1, arbitrary: fc.constantFrom<unknown>('  why  ', '', '   ', 'bad\u0000', 'é🔑', null) });
const expiryArb: fc.Arbitrary<ExpirySpec> = fc.oneof(
  { weight: 8, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.constant(null) },
  { weight: 4, arbitrary: fc.constantFrom(-3600, -1, 0, 1, 60, 600, 3600, 86_400, 30 * 86_400).map((rel) => ({ rel })) },
  { weight: 1, arbitrary: fc.constantFrom('9999-12-31T23:59:59.999Z', '+010000-01-01T00:00:00Z', 'tomorrow', '2026-02-30T00:00:00Z', '', '2026-06-01T12:00:00', '0001-01-01T00:00:00Z').map((text) => ({ text })) },
);
const priorityArb = fc.oneof({ weight: 6, arbitrary: fc.constant<unknown>(undefined) }, { weight: 1, arbitrary: fc.constantFrom<unknown>(null, 0, 1, -1, 7, 2147483647, -2147483648, 2147483648, 1.5, '3') });
const ttlArb = fc.oneof({ weight: 8, arbitrary: fc.constantFrom<unknown>(undefined, null, 1, 5, 60, 300, 3600, 604800) }, { weight: 1, arbitrary: fc.constantFrom<unknown>(604801, 0, -1, 2147483648, 1.5, '60') });
const holdArb: fc.Arbitrary<HoldRef> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ known: fc.nat(20), upper: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constantFrom<HoldRef>('unknown', 'malformed', 'foreign', 'empty') },
);

/** Operations over the given argument generators: the broad mix, or a narrow one (huge amounts on one wallet). */
const opsOf = (amounts: fc.Arbitrary<unknown>, customers: fc.Arbitrary<CustomerRef>, currencies: fc.Arbitrary<unknown>): fc.Arbitrary<Op> => fc.oneof(
  { weight: 7, arbitrary: fc.record({ t: fc.constant('grant' as const), c: customers, amount: fc.oneof({ weight: 3, arbitrary: amounts }, { weight: 1, arbitrary: fc.constantFrom<unknown>('5000', '25000.123456789', '100000', '1000000000', '999999999.999999999') }), currency: currencies, kind: fc.constantFrom('PAID', 'PAID', 'PROMOTIONAL', 'PLAN_INCLUDED'), expiresAt: expiryArb, priority: priorityArb, key: keyArb }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('adjust' as const), c: customers, amount: amounts, currency: currencies, reason: reasonArb, key: keyArb }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('refund' as const), c: customers, amount: amounts, currency: currencies, reason: reasonArb, key: keyArb }) },
  { weight: 5, arbitrary: fc.record({ t: fc.constant('debit' as const), c: customers, amount: amounts, currency: currencies, key: keyArb }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant('hold' as const), c: customers, amount: amounts, currency: currencies, ttl: ttlArb, key: keyArb }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('capture' as const), hold: holdArb, amount: fc.oneof(fc.constant<unknown>(undefined), fc.constant<unknown>(null), amounts) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('release' as const), hold: holdArb }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('overdraft' as const), c: customers, currency: currencies, limit: fc.oneof(validAmount, oddAmount, amounts) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('advance' as const), seconds: fc.constantFrom(1, 30, 299, 300, 301, 3599, 3600, 86_400, 8 * 86_400) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('replay' as const), index: fc.nat(40), mutate: fc.boolean() }) },
);
const opArb = opsOf(amountArb, customerArb, currencyArb);
const hugeAmount = fc.constantFrom<unknown>('1000000000', '-1000000000', '999999999.999999999', '-999999999.999999999', '0.000000001', '0.000000000000000001', '500000000.5', '-0');
const hugeOpArb = opsOf(hugeAmount, fc.constantFrom<CustomerRef>(0, 0, 0, 1), fc.constantFrom<unknown>(undefined, 'USD'));

// ------------------------------------------------------------------ the server's input rules, as a spec

/** Up to 12 whole digits, zeros leading them not counted, and 18 places. */
const DECIMAL = /^(-)?0*(\d{1,12})(?:\.(\d{1,18}))?$/;
const ATTOS = 1_000_000_000n;
const MAX_NANOS = 1_000_000_000n * 1_000_000_000n;
const ISO = new Set(Intl.supportedValuesOf('currency'));
const RESERVED = ['grant-expiry:', 'grant-keep:', 'hold-capture:', 'usage:'];
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
/** Text PostgreSQL cannot store faithfully: a NUL, or half a surrogate pair. */
const unstorable = (text: string) => text.includes('\u0000') || LONE_SURROGATE.test(text);

/** A Decimal argument as attos, or null if GraphQL or the parser refuses it. */
function attosOf(value: unknown): bigint | null {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) return null;
    value = String(value);
  }
  if (typeof value !== 'string') return null;
  const match = DECIMAL.exec(value.trim());
  if (!match) return null;
  const attos = BigInt(match[2]!) * ATTOS * ATTOS + BigInt((match[3] ?? '').padEnd(18, '0'));
  return match[1] ? -attos : attos;
}
function nanosOf(value: unknown): bigint | null {
  const attos = attosOf(value);
  if (attos === null || attos % ATTOS !== 0n) return null;
  const nanos = attos / ATTOS;
  return nanos > MAX_NANOS || nanos < -MAX_NANOS ? null : nanos;
}
function currencyOf(value: unknown): string | null {
  if (value !== undefined && value !== null && typeof value !== 'string') return null;
  const code = ((value as string | null | undefined) ?? 'USD').trim().toUpperCase();
  return /^[A-Z]{3}$/.test(code) && ISO.has(code) ? code : null;
}
function keyOf(value: unknown, caller: boolean): string | null {
  if (typeof value !== 'string') return null;
  const key = value.trim();
  if (!key || key.length > 255 || unstorable(key)) return null;
  if (caller && RESERVED.some((prefix) => key.startsWith(prefix))) return null;
  return key;
}
function reasonOf(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  const reason = value.trim();
  return reason && !unstorable(reason) ? reason : null;
}
/** A balance no wallet may reach (BIGINT nanos): the posting is refused as VALIDATION. */
const beyondWallet = (balance: bigint) => balance > 9_223_372_036_854_775_807n || balance < -9_223_372_036_854_775_807n;
const isInt32 = (value: unknown) => typeof value === 'number' && Number.isInteger(value) && value >= -(2 ** 31) && value < 2 ** 31;

/** An amount the server wrote: exact, and not held to the input limit (a wallet may hold more than one request may send). */
const toNanos = (text: string) => {
  const match = /^(-)?(\d+)(?:\.(\d{1,9}))?$/.exec(text);
  if (!match) throw new Error(`unparseable amount from the server: ${text}`);
  const nanos = BigInt(match[2]!) * ATTOS + BigInt((match[3] ?? '').padEnd(9, '0'));
  return match[1] ? -nanos : nanos;
};

// ------------------------------------------------------------------ the model

interface ModelHold {
  id: string;
  wallet: string;
  amount: bigint;
  status: 'PENDING' | 'CAPTURED' | 'RELEASED';
  captured: bigint;
  expiresAt: number;
  key: string;
  ttl: number;
  customer: number;
  currency: string;
  /** The wallet's overdraft limit when the hold was placed: its capture may go that far, though the limit be lowered since. */
  limit: bigint;
}
interface ModelWallet {
  balance: bigint;
  carry: bigint;
  limit: bigint;
  /** EXPIRY transactions seen so far, by id: their amounts are the only moves the model does not predict. */
  expiries: Map<string, bigint>;
}
interface Model {
  merchant: { id: string; secret: string };
  customers: string[];
  wallets: Map<string, ModelWallet>;
  holds: ModelHold[];
  /** Caller keys of committed ledger transactions (merchant-wide), with their request's signature and transaction. */
  txKeys: Map<string, { sig: string; transactionId: string; wallet: string }>;
  /** Keys of holds (merchant-wide, a namespace of their own). */
  holdKeys: Map<string, ModelHold>;
  history: Request[];
  log: string[];
}

const walletKey = (customer: number, currency: string) => `${customer}:${currency}`;
const modelWallet = (model: Model, key: string): ModelWallet => {
  let wallet = model.wallets.get(key);
  if (!wallet) model.wallets.set(key, (wallet = { balance: 0n, carry: 0n, limit: 0n, expiries: new Map() }));
  return wallet;
};
const liveHeld = (model: Model, key: string) =>
  model.holds.filter((hold) => hold.wallet === key && hold.status === 'PENDING' && hold.expiresAt > now.getTime()).reduce((sum, hold) => sum + hold.amount, 0n);

/** The customer index a customerId variable resolves to: a number, 'unknown' (NOT_FOUND). */
function customerIndexOf(model: Model, id: unknown): number | 'unknown' {
  if (typeof id !== 'string') return 'unknown';
  const index = model.customers.findIndex((customer) => customer === id.toLowerCase());
  return index >= 0 ? index : 'unknown';
}
function customerIdOf(model: Model, ref: CustomerRef): string {
  if (typeof ref === 'number') return model.customers[ref]!;
  if (ref === 'upper0') return model.customers[0]!.toUpperCase();
  return ref === 'unknown' ? randomUUID() : 'not-a-customer';
}
function holdIdOf(model: Model, ref: HoldRef): string {
  if (typeof ref === 'object') {
    const hold = model.holds[ref.known % Math.max(model.holds.length, 1)];
    if (!hold) return randomUUID();
    return ref.upper ? hold.id.toUpperCase() : hold.id;
  }
  return ref === 'unknown' ? randomUUID() : ref === 'malformed' ? 'hold-1' : ref === 'foreign' ? foreignHoldId : '';
}

// ------------------------------------------------------------------ snapshots and invariants

interface Snapshot {
  balance: bigint;
  available: bigint;
  held: bigint;
  limit: bigint;
  /** Remaining credit by kind (not kept for a hold), and what is kept per hold. */
  paid: bigint;
  kept: Map<string, bigint>;
}

async function snapshot(model: Model, key: string, label: string): Promise<Snapshot> {
  const [customer, currency] = key.split(':') as [string, string];
  const response = await gql<{ wallet: any }>(model, WALLET, { id: model.customers[Number(customer)], currency });
  expect(response.errors, `${label}: reading wallet ${key}`).toBeUndefined();
  const view = response.data!.wallet;
  const snap: Snapshot = {
    balance: toNanos(view.balance.amount),
    available: toNanos(view.available.amount),
    held: toNanos(view.held.amount),
    limit: toNanos(view.overdraftLimit.amount),
    paid: 0n,
    kept: new Map(),
  };
  expect(view.grants.totalCount, `${label}: grants fit one page`).toBeLessThanOrEqual(100);
  for (const grant of view.grants.nodes) {
    const remaining = toNanos(grant.remaining.amount);
    if (grant.holdId) snap.kept.set(grant.holdId, (snap.kept.get(grant.holdId) ?? 0n) + remaining);
    else if (grant.kind === 'PAID') snap.paid += remaining;
  }
  // available = balance − held, and held = Σ of the pending, unexpired holds listed.
  expect(snap.available, `${label}: available = balance − held on ${key}`).toBe(snap.balance - snap.held);
  expect(view.holds.totalCount).toBeLessThanOrEqual(100);
  const listed = view.holds.nodes.reduce((sum: bigint, hold: any) => sum + toNanos(hold.amount.amount) - toNanos(hold.capturedAmount.amount), 0n);
  expect(snap.held, `${label}: held = Σ pending holds on ${key}`).toBe(listed);
  expect(snap.held, `${label}: held as the model counts it on ${key}`).toBe(liveHeld(model, key));
  expect(new Set(view.holds.nodes.map((hold: any) => hold.id)), `${label}: pending holds on ${key}`).toEqual(
    new Set(model.holds.filter((hold) => hold.wallet === key && hold.status === 'PENDING' && hold.expiresAt > now.getTime()).map((hold) => hold.id)),
  );
  // Expiry is the one move the model takes from the server: it takes each EXPIRY transaction once, and none adds credit.
  const wallet = modelWallet(model, key);
  expect(view.expiries.totalCount).toBeLessThanOrEqual(100);
  for (const { node } of view.expiries.edges) {
    const amount = toNanos(node.amount.amount);
    expect(amount, `${label}: an expiry never adds credit`).toBeLessThanOrEqual(0n);
    if (!wallet.expiries.has(node.id)) {
      wallet.expiries.set(node.id, amount);
      wallet.balance += amount;
    }
  }
  expect(snap.balance, `${label}: balance as the model keeps it on ${key}`).toBe(wallet.balance);
  expect(snap.limit, `${label}: overdraft limit on ${key}`).toBe(wallet.limit);
  return snap;
}

// ------------------------------------------------------------------ prediction

type Prediction =
  | { code: string }
  | { ok: true; replayed: boolean; delta: bigint; wallet: string | null; commit?: (data: any) => void };

const fail = (code: string): Prediction => ({ code });

/** What the request must do, given the model and the wallet as read just before (same clock). */
function predict(model: Model, req: Request, before: Snapshot | null): Prediction {
  const input = (req.vars.input ?? {}) as Record<string, any>;
  switch (req.t) {
    case 'grant':
    case 'adjust':
    case 'refund':
    case 'debit': {
      const currency = currencyOf(input.currency);
      const amount = req.t === 'debit' ? attosOf(input.amount) : nanosOf(input.amount);
      const key = keyOf(input.idempotencyKey, true);
      if (currency === null || amount === null || key === null) return fail('VALIDATION');
      if (req.t === 'debit' && (amount <= 0n || amount > MAX_NANOS * ATTOS)) return fail('VALIDATION');
      if ((req.t === 'grant' || req.t === 'refund') && amount <= 0n) return fail('VALIDATION');
      let reason: string | null = null;
      if (req.t === 'adjust' || req.t === 'refund') {
        reason = reasonOf(input.reason);
        if (reason === null) return fail('VALIDATION');
      }
      if (req.t === 'adjust' && amount === 0n) return fail('VALIDATION');
      let expiresAt: number | null = null;
      if (req.t === 'grant') {
        if (input.priority !== undefined && input.priority !== null && !isInt32(input.priority)) return fail('VALIDATION');
        if (input.expiresAt !== undefined && input.expiresAt !== null) {
          const parsed = Date.parse(input.expiresAt as string);
          if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/.test(input.expiresAt as string) || Number.isNaN(parsed) || new Date(parsed).toISOString().slice(0, 10) !== (input.expiresAt as string).slice(0, 10)) {
            return fail('VALIDATION');
          }
          if (new Date(parsed).getUTCFullYear() < 1) return fail('VALIDATION');
          expiresAt = parsed;
        }
      }
      const customer = customerIndexOf(model, input.customerId);
      if (customer === 'unknown') return fail('NOT_FOUND');
      const wk = walletKey(customer, currency);
      const sig = JSON.stringify([req.t, customer, currency, amount.toString(), input.kind ?? null, expiresAt, input.priority ?? 0, reason]);
      const prior = model.txKeys.get(key);
      if (prior) return prior.sig === sig ? { ok: true, replayed: true, delta: 0n, wallet: wk, commit: (data) => expect(data.transaction?.id).toBe(prior.transactionId) } : fail('CONFLICT');
      if (!before) throw new Error('a wallet operation needs its snapshot');
      const wallet = modelWallet(model, wk);
      let delta: bigint;
      let carry = wallet.carry;
      if (req.t === 'grant') {
        if (expiresAt !== null && expiresAt <= now.getTime()) return fail('VALIDATION');
        delta = amount;
      } else if (req.t === 'adjust') {
        delta = amount;
      } else if (req.t === 'refund') {
        if (before.available - amount < 0n || before.paid < amount) return fail('INSUFFICIENT_FUNDS');
        delta = -amount;
      } else {
        const total = wallet.carry + amount;
        const nanos = total / ATTOS;
        carry = total - nanos * ATTOS;
        if (nanos > 0n && before.available - nanos < -wallet.limit) return fail('INSUFFICIENT_FUNDS');
        delta = -nanos;
      }
      if (beyondWallet(before.balance + delta)) return fail('VALIDATION');
      return {
        ok: true, replayed: false, delta, wallet: wk,
        commit: (data) => {
          expect(toNanos(data.transaction.amount.amount), 'the transaction moves what was asked').toBe(delta);
          expect(data.transaction.amount.currency).toBe(currency);
          model.txKeys.set(key, { sig, transactionId: data.transaction.id, wallet: wk });
          wallet.carry = carry;
        },
      };
    }
    case 'hold': {
      const currency = currencyOf(input.currency);
      const amount = nanosOf(input.amount);
      const key = keyOf(input.idempotencyKey, false);
      if (currency === null || amount === null || key === null || amount <= 0n) return fail('VALIDATION');
      const ttl = input.ttlSeconds ?? 300;
      if (!isInt32(ttl) || ttl < 1 || ttl > 604800) return fail('VALIDATION');
      const customer = customerIndexOf(model, input.customerId);
      if (customer === 'unknown') return fail('NOT_FOUND');
      const wk = walletKey(customer, currency);
      const prior = model.holdKeys.get(key);
      if (prior) {
        if (prior.customer !== customer || prior.amount !== amount || prior.currency !== currency || prior.ttl !== ttl) return fail('CONFLICT');
        return { ok: true, replayed: true, delta: 0n, wallet: wk, commit: (data) => expect(data.hold.id).toBe(prior.id) };
      }
      if (!before) throw new Error('a hold needs its snapshot');
      const wallet = modelWallet(model, wk);
      if (before.available - amount < -wallet.limit) return fail('INSUFFICIENT_FUNDS');
      return {
        ok: true, replayed: false, delta: 0n, wallet: wk,
        commit: (data) => {
          expect(data.hold.status).toBe('PENDING');
          expect(toNanos(data.hold.amount.amount)).toBe(amount);
          expect(new Date(data.hold.expiresAt).getTime()).toBe(now.getTime() + ttl * 1000);
          const hold: ModelHold = { id: data.hold.id, wallet: wk, amount, status: 'PENDING', captured: 0n, expiresAt: now.getTime() + ttl * 1000, key, ttl, customer, currency, limit: wallet.limit };
          model.holds.push(hold);
          model.holdKeys.set(key, hold);
        },
      };
    }
    case 'capture':
    case 'release': {
      let requested: bigint | null = null;
      if (req.t === 'capture' && req.vars.amount !== undefined && req.vars.amount !== null) {
        requested = nanosOf(req.vars.amount);
        if (requested === null) return fail('VALIDATION');
      }
      const id = String(req.vars.id).toLowerCase();
      const hold = model.holds.find((candidate) => candidate.id === id);
      if (!hold) return fail('NOT_FOUND');
      const lapsed = hold.status === 'PENDING' && hold.expiresAt <= now.getTime();
      if (req.t === 'release') {
        if (hold.status === 'RELEASED') return { ok: true, replayed: true, delta: 0n, wallet: hold.wallet, commit: (data) => expect(data.status).toBe('RELEASED') };
        if (hold.status !== 'PENDING' || lapsed) return fail('CONFLICT');
        return { ok: true, replayed: false, delta: 0n, wallet: hold.wallet, commit: (data) => {
          expect(data.status).toBe('RELEASED');
          hold.status = 'RELEASED';
        } };
      }
      const amount = requested ?? hold.amount;
      if (amount < 0n || amount > hold.amount) return fail('VALIDATION');
      if (hold.status === 'CAPTURED') {
        return hold.captured === amount ? { ok: true, replayed: true, delta: 0n, wallet: hold.wallet, commit: (data) => expect(data.hold.status).toBe('CAPTURED') } : fail('CONFLICT');
      }
      if (hold.status !== 'PENDING' || lapsed) return fail('CONFLICT');
      if (!before) throw new Error('a capture needs its snapshot');
      const kept = before.kept.get(hold.id) ?? 0n;
      const currentLimit = modelWallet(model, hold.wallet).limit;
      const floor = hold.limit > currentLimit ? hold.limit : currentLimit;
      if (amount > kept && before.available + hold.amount - amount < -floor) return fail('INSUFFICIENT_FUNDS');
      if (beyondWallet(before.balance - amount)) return fail('VALIDATION');
      return {
        ok: true, replayed: false, delta: -amount, wallet: hold.wallet,
        commit: (data) => {
          expect(data.hold.status).toBe('CAPTURED');
          expect(toNanos(data.hold.capturedAmount.amount)).toBe(amount);
          if (amount === 0n) expect(data.transaction).toBeNull();
          else expect(toNanos(data.transaction.amount.amount)).toBe(-amount);
          hold.status = 'CAPTURED';
          hold.captured = amount;
        },
      };
    }
    case 'overdraft': {
      const currency = currencyOf(req.vars.currency);
      const limit = nanosOf(req.vars.limit);
      if (currency === null || limit === null || limit < 0n) return fail('VALIDATION');
      const customer = customerIndexOf(model, req.vars.customerId);
      if (customer === 'unknown') return fail('NOT_FOUND');
      const wk = walletKey(customer, currency);
      return { ok: true, replayed: false, delta: 0n, wallet: wk, commit: (data) => {
        expect(toNanos(data.overdraftLimit.amount)).toBe(limit);
        modelWallet(model, wk).limit = limit;
      } };
    }
  }
}

/** The wallet a request touches, if it names one the model knows (read before it, to settle expiry at this time). */
function targetOf(model: Model, req: Request): string | null {
  if (req.t === 'capture' || req.t === 'release') {
    const id = String(req.vars.id).toLowerCase();
    return model.holds.find((hold) => hold.id === id)?.wallet ?? null;
  }
  const source = req.t === 'overdraft' ? req.vars : ((req.vars.input ?? {}) as Record<string, unknown>);
  const customer = customerIndexOf(model, source.customerId);
  const currency = currencyOf(source.currency);
  return customer === 'unknown' || currency === null ? null : walletKey(customer, currency);
}

// ------------------------------------------------------------------ running a sequence

function gql<T = Record<string, any>>(model: Model, query: string, variables: Record<string, unknown>): Promise<GraphQLResponse<T>> {
  return server.graphql<T>(query, variables, model.merchant.secret);
}

function materialize(model: Model, op: Exclude<Op, { t: 'advance' | 'replay' }>): Request {
  const put = (target: Record<string, unknown>, name: string, value: unknown) => {
    if (value !== undefined) target[name] = value;
  };
  if (op.t === 'capture') {
    const vars: Record<string, unknown> = { id: holdIdOf(model, op.hold) };
    put(vars, 'amount', op.amount);
    return { t: op.t, query: CAPTURE, vars };
  }
  if (op.t === 'release') return { t: op.t, query: RELEASE, vars: { id: holdIdOf(model, op.hold) } };
  if (op.t === 'overdraft') {
    const vars: Record<string, unknown> = { customerId: customerIdOf(model, op.c), limit: op.limit };
    put(vars, 'currency', op.currency);
    return { t: op.t, query: OVERDRAFT, vars };
  }
  const input: Record<string, unknown> = { customerId: customerIdOf(model, op.c), amount: op.amount, idempotencyKey: op.key };
  put(input, 'currency', op.currency);
  if (op.t === 'grant') {
    input.kind = op.kind;
    put(input, 'priority', op.priority);
    if (op.expiresAt === null) input.expiresAt = null;
    else if (op.expiresAt && 'rel' in op.expiresAt) input.expiresAt = new Date(now.getTime() + op.expiresAt.rel * 1000).toISOString();
    else if (op.expiresAt) input.expiresAt = op.expiresAt.text;
    return { t: op.t, query: GRANT, vars: { input } };
  }
  if (op.t === 'adjust' || op.t === 'refund') {
    put(input, 'reason', op.reason);
    return { t: op.t, query: op.t === 'adjust' ? ADJUST : REFUND, vars: { input } };
  }
  if (op.t === 'hold') {
    put(input, 'ttlSeconds', op.ttl);
    return { t: op.t, query: HOLD, vars: { input } };
  }
  return { t: op.t, query: DEBIT, vars: { input } };
}

/** An earlier request again, as it was or with another amount. */
function replayOf(model: Model, op: Extract<Op, { t: 'replay' }>): Request | null {
  if (model.history.length === 0) return null;
  const earlier = model.history[op.index % model.history.length]!;
  const vars = structuredClone(earlier.vars);
  if (op.mutate) {
    if (vars.input) (vars.input as Record<string, unknown>).amount = '0.5';
    else if (earlier.t === 'capture') vars.amount = '0.25';
    else if (earlier.t === 'overdraft') vars.limit = '3';
  }
  return { ...earlier, vars };
}

const DATA_FIELD: Record<Request['t'], string> = {
  grant: 'grantCredits', adjust: 'adjustBalance', refund: 'refundCredits', debit: 'debitCredits', hold: 'createHold',
  capture: 'captureHold', release: 'releaseHold', overdraft: 'setOverdraftLimit',
};
/** Outcomes seen, by operation: printed with FUZZ_STATS=1 to show what the generators reach. */
const stats = new Map<string, number>();
const TYPED_CODES = ERROR_CODES.filter((code) => code !== 'INTERNAL');

async function step(model: Model, req: Request, label: string): Promise<void> {
  const target = targetOf(model, req);
  const before = target ? await snapshot(model, target, `${label} (before)`) : null;
  const prediction = predict(model, req, before);
  const response = await gql<Record<string, any>>(model, req.query, req.vars);
  const describe = `${label}: ${req.t} ${JSON.stringify(req.vars)} → ${JSON.stringify(response.errors ?? response.data)}`;
  model.log.push(describe);
  const outcome = `${req.t} ${response.errors ? response.errors[0]?.extensions?.code : (response.data?.[DATA_FIELD[req.t]]?.replayed ? 'replayed' : 'ok')}`;
  stats.set(outcome, (stats.get(outcome) ?? 0) + 1);
  for (const error of response.errors ?? []) {
    expect(TYPED_CODES, `${describe}: every error has a typed code`).toContain(error.extensions?.code);
  }
  if ('code' in prediction) {
    expect(response.errors?.[0]?.extensions?.code, describe).toBe(prediction.code);
  } else {
    expect(response.errors, describe).toBeUndefined();
    const data = response.data![DATA_FIELD[req.t]];
    if (req.t !== 'release' && req.t !== 'overdraft') expect(data.replayed, `${describe}: replayed`).toBe(prediction.replayed);
    prediction.commit?.(data);
    if (prediction.wallet) modelWallet(model, prediction.wallet).balance += prediction.delta;
    if (!prediction.replayed) model.history.push(req);
  }
  if (!response.errors && 'code' in prediction) return;
  // Also record refused requests: replaying them must be refused again the same way (or succeed, if funds arrived since).
  if (response.errors && !model.history.includes(req)) model.history.push(req);
  if (target) {
    const after = await snapshot(model, target, `${label} (after)`);
    if ('code' in prediction) expect(after.balance, `${describe}: a refused operation moves nothing`).toBe(before!.balance);
    // A debit that took credit, or a new hold, leaves the wallet within its overdraft limit (a sub-nano debit moving
    // nothing, on a wallet an adjustment already took past it, is no breach).
    else if (!prediction.replayed && ((req.t === 'debit' && prediction.delta < 0n) || req.t === 'hold')) {
      expect(after.available, `${describe}: within the overdraft limit`).toBeGreaterThanOrEqual(-after.limit);
    }
  }
}

async function runSequence(ops: Op[]): Promise<void> {
  now = new Date(START);
  const merchant = await server.createMerchant(`Fuzz ${randomUUID()}`);
  const customers: string[] = [];
  for (let index = 0; index < 3; index++) customers.push((await server.services.customers.create(merchant.id, { externalId: `f-${randomUUID()}` })).id);
  const model: Model = { merchant, customers, wallets: new Map(), holds: [], txKeys: new Map(), holdKeys: new Map(), history: [], log: [] };
  try {
    for (const [index, op] of ops.entries()) {
      if (op.t === 'advance') {
        now = new Date(now.getTime() + op.seconds * 1000);
        model.log.push(`#${index}: advance ${op.seconds}s`);
        continue;
      }
      const req = op.t === 'replay' ? replayOf(model, op) : materialize(model, op);
      if (req) await step(model, req, `#${index}`);
    }
    // Every wallet the model knows, read once more: balances, holds and limits as predicted.
    for (const key of model.wallets.keys()) await snapshot(model, key, 'end');
    const report = await server.services.ledgerQueries.integrity(merchant.id);
    expect(report.violations).toEqual([]);
  } catch (error) {
    (error as Error).message += `\n--- operations ---\n${model.log.join('\n')}`;
    throw error;
  }
}

// ------------------------------------------------------------------ the properties

describe('ledger fuzz', () => {
  it('random operation sequences keep every ledger property', async () => {
    await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40, size: 'max' }), runSequence), {
      numRuns: Number(process.env.FUZZ_RUNS ?? 40),
      seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined,
      endOnFailure: process.env.FUZZ_SHRINK !== '1',
    });
    if (process.env.FUZZ_STATS) console.log([...stats].sort().map(([outcome, count]) => `${outcome}: ${count}`).join('\n'));
  }, Number(process.env.FUZZ_TIMEOUT_MS ?? 120_000));

  it('huge amounts on few wallets: the bounds of a wallet and of one request', async () => {
    await fc.assert(fc.asyncProperty(fc.array(hugeOpArb, { minLength: 1, maxLength: 40, size: 'max' }), runSequence), {
      numRuns: Number(process.env.FUZZ_RUNS_HUGE ?? 15),
      seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined,
      endOnFailure: process.env.FUZZ_SHRINK !== '1',
    });
  }, Number(process.env.FUZZ_TIMEOUT_MS ?? 120_000));
});

