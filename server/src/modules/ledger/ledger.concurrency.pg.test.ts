import { randomBytes, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ERROR_CODES } from '../../shared/errors.ts';
import { postGraphql, readGraphql, startSharedCluster, stopSharedCluster, type GraphqlAnswer, type ServerProcess, type SharedCluster } from '../../../test/processes.ts';

/**
 * Randomized concurrency fuzz of the ledger through its GraphQL API, on two real server processes
 * sharing one PostgreSQL database and Redis. The model-based fuzz (ledger.fuzz.test.ts) runs its
 * operations one at a time, so it predicts every outcome but never races two of them; here a
 * generated mix of debits (some finer than a nano), grants, adjustments (negative too), refunds,
 * overdraft-limit changes and holds — each hold then captured (in full, in part, for zero, beyond
 * its amount) and/or released, several of these at once — is fired all at once, split between
 * the two processes, on a few customers (some nearly empty, so INSUFFICIENT_FUNDS is common; some
 * with an overdraft limit). Some requests are sent twice at the same moment under one idempotency
 * key, to either process: the same payload, another amount, another customer, or another
 * operation.
 *
 * No outcome is predicted; what is checked holds whatever the interleaving:
 * - every answer is a success or a typed error a caller could get for that request (never
 *   INTERNAL, a 5xx, or a code the operation cannot have); INSUFFICIENT_FUNDS agrees with its own
 *   figures; a hold's capture is refused for funds only after a negative adjustment or a limit
 *   that moved (a hold reserves what its capture takes, even when the credit behind it expires, and
 *   may take it down to the limit it was placed under; a limit raised, spent into and lowered
 *   again can leave less);
 * - an idempotency key moves money at most once: one fresh answer at most, replays answer with
 *   the first transaction and only for the same payload, CONFLICT only for another payload, and
 *   the wallets list exactly the transactions the fresh answers reported (hold keys are a
 *   namespace of their own);
 * - each successful debit or capture leaves balanceAfter ≥ −limit, a refund ≥ 0; the final wallet
 *   is within its limit (unless an adjustment, which may overdraw by design, took it past);
 * - the final balance is the seed plus the amounts the fresh answers reported (and the expiries
 *   listed, the one movement no answer reports), equals the sum of the wallet's transactions,
 *   and ledgerIntegrity (asked of both processes) finds nothing, its
 *   overdraft rule included while limits change under the debits; the carry of sub-nano debits
 *   loses or invents less than a nano;
 * - a hold ends captured or released, never both, by at most one fresh capture; its capture
 *   transaction is the one the answer reported; held is the sum of the pending holds listed and
 *   available = balance − held;
 * - a graphql-ws subscriber to balanceUpdated on process A sees every transaction made on either
 *   process exactly once; each event's balance is the balanceAfter of its last transaction or,
 *   for an event that reached A after a newer state of the wallet (the processes publish on their
 *   own), the figures of the event before it (see inVersionOrder); at most one event comes per
 *   committed change that moves no money (a limit set, a hold made, released, captured for zero, or
 *   marked expired by a read after it ran out its time:
 *   balanceUpdated is published once per committed wallet transaction, and debits coalesced into
 *   one batch share an event, so changes that post are counted by transaction id instead; one
 *   overtaken by a newer state is dropped); and the last event shows the final balance and available.
 *
 * Knobs (environment): FUZZ_RUNS (scenarios, default 4), FUZZ_OPS (most operations per scenario,
 * default 100), FUZZ_SEED (replay a failure's scenarios; the race itself differs each time),
 * FUZZ_STATS=1 (print the outcomes reached and each scenario's timings). Some grants expire within
 * the race and some holds have a one-second TTL, so expiry races captures and debits; the expiry
 * schedule is set to an hour (expiry then happens under each wallet's lock, as it does anyway),
 * so that the events can be counted.
 */
const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const masterKey = randomBytes(32).toString('hex');
const RUNS = Number(process.env.FUZZ_RUNS ?? 4);
const MAX_OPS = Number(process.env.FUZZ_OPS ?? 100);

let cluster: SharedCluster;
let instances: ServerProcess[] = [];
let runtime: SharedCluster['runtime'];

beforeAll(async () => {
  cluster = await startSharedCluster({ REDIS_URL: redisUrl, TOLLGATE_MASTER_KEY: masterKey, TOLLGATE_EXPIRY_INTERVAL_SECONDS: '3600' });
  ({ instances, runtime } = cluster);
}, 120_000);

afterAll(() => stopSharedCluster(cluster ?? {}));

// ------------------------------------------------------------------ money

const BILLION = 1_000_000_000n;
const CENT = 10_000_000n; // in nanos

const abs = (value: bigint) => (value < 0n ? -value : value);
const scaled = (value: bigint, digits: number) => {
  const unit = 10n ** BigInt(digits);
  return `${value < 0n ? '-' : ''}${abs(value) / unit}.${(abs(value) % unit).toString().padStart(digits, '0')}`;
};
const nanosText = (nanos: bigint) => scaled(nanos, 9);
const attosText = (attos: bigint) => scaled(attos, 18);
/** An amount the server wrote ("12.50", "-0.000000015"). */
const toNanos = (text: string): bigint => {
  const match = /^(-)?(\d+)(?:\.(\d{1,9}))?$/.exec(text);
  if (!match) throw new Error(`unparseable amount from the server: ${text}`);
  const nanos = BigInt(match[2]!) * BILLION + BigInt((match[3] ?? '').padEnd(9, '0'));
  return match[1] ? -nanos : nanos;
};

// ------------------------------------------------------------------ scenarios

type Via = 0 | 1;
/**
 * The same key sent again at the same moment: the same payload, twice the amount, for the next
 * customer, or by another operation (a grant for a debit, a debit for anything else; a hold's
 * key is of another namespace, so a debit under it is a request of its own).
 */
type Echo = { kind: 'same' | 'different' | 'elsewhere' | 'crossed'; via: Via; lag: number } | null;
type CaptureAmount = 'omit' | 'full' | 'zero' | 'over' | 1 | 2 | 3;
type End = { t: 'capture'; amount: CaptureAmount; via: Via; delay: number } | { t: 'release'; via: Via; delay: number };
type LedgerKind = 'debit' | 'grant' | 'adjust' | 'refund';
type Op =
  | { t: 'debit'; c: number; amount: bigint; via: Via; delay: number; echo: Echo }
  /** A grant may expire (`expiresIn` ms after it is sent), so that credit expires under pending holds. */
  | { t: 'grant' | 'adjust' | 'refund'; c: number; amount: bigint; kind: 'PAID' | 'PROMOTIONAL'; expiresIn: number | null; via: Via; delay: number; echo: Echo }
  | { t: 'hold'; c: number; amount: bigint; ttl: number; via: Via; delay: number; echo: Echo; ends: End[] }
  /** Sets the overdraft limit to one of the customer's two. */
  | { t: 'limit'; c: number; which: 0 | 1; via: Via; delay: number };
interface CustomerSpec {
  seed: bigint;
  seedKind: 'PAID' | 'PROMOTIONAL';
  /** The limit set before the race, and another that `limit` operations may switch to (and back). */
  limits: [bigint, bigint];
}
interface Scenario {
  customers: CustomerSpec[];
  ops: Op[];
}

const cents = (min: number, max: number) => fc.integer({ min, max }).map((n) => BigInt(n) * CENT);
const via = fc.constantFrom<Via>(0, 1);
const delay = fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.nat(25) });
const echo: fc.Arbitrary<Echo> = fc.oneof(
  { weight: 4, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('same' as const, 'same' as const, 'different' as const, 'elsewhere' as const, 'crossed' as const), via, lag: fc.constantFrom(0, 0, 0, 1, 3) }) },
);
const customer = fc.nat(3);
const customerSpec: fc.Arbitrary<CustomerSpec> = fc.record({
  seed: fc.oneof(fc.constant(0n), cents(1, 300), cents(2_000, 10_000)),
  seedKind: fc.constantFrom('PAID' as const, 'PAID' as const, 'PROMOTIONAL' as const),
  limits: fc.tuple(fc.oneof({ weight: 2, arbitrary: fc.constant(0n) }, { weight: 1, arbitrary: cents(50, 500) }), fc.oneof(fc.constant(0n), cents(50, 500))),
});
/** Debits in attos: whole cents mostly, some with a sub-nano tail that the wallet carries. */
const debitAttos = fc.oneof(
  { weight: 4, arbitrary: cents(1, 150).map((nanos) => nanos * BILLION) },
  { weight: 1, arbitrary: fc.tuple(cents(0, 50), fc.bigInt(1n, 3n * BILLION)).map(([nanos, attos]) => nanos * BILLION + attos) },
);
/** Most ends follow their hold at once; some come later, so that holds are pending while credit expires. */
const endDelay = fc.oneof({ weight: 4, arbitrary: fc.nat(5) }, { weight: 1, arbitrary: fc.integer({ min: 200, max: 1_500 }) });
const end: fc.Arbitrary<End> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ t: fc.constant('capture' as const), amount: fc.constantFrom<CaptureAmount>('omit', 'full', 'full', 'zero', 'over', 1, 2, 3, 3), via, delay: endDelay }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('release' as const), via, delay: endDelay }) },
);
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('debit' as const), c: customer, amount: debitAttos, via, delay, echo }) },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('grant' as const), c: customer, amount: cents(1, 500), kind: fc.constantFrom('PAID' as const, 'PROMOTIONAL' as const),
      expiresIn: fc.oneof({ weight: 2, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.integer({ min: 300, max: 1_500 }) }), via, delay, echo,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('adjust' as const), c: customer, amount: fc.tuple(cents(1, 300), fc.boolean()).map(([n, negative]) => (negative ? -n : n)), kind: fc.constant('PROMOTIONAL' as const), expiresIn: fc.constant(null), via, delay, echo }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('refund' as const), c: customer, amount: cents(1, 300), kind: fc.constant('PAID' as const), expiresIn: fc.constant(null), via, delay, echo }) },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant('hold' as const), c: customer, amount: cents(1, 200), ttl: fc.constantFrom(300, 300, 300, 300, 300, 1), via, delay, echo,
      ends: fc.oneof({ weight: 1, arbitrary: fc.constant<End[]>([]) }, { weight: 6, arbitrary: fc.array(end, { minLength: 1, maxLength: 3 }) }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('limit' as const), c: customer, which: fc.constantFrom<0 | 1>(0, 1), via, delay }) },
);
const scenarioArb: fc.Arbitrary<Scenario> = fc
  .record({ customers: fc.array(customerSpec, { minLength: 2, maxLength: 4 }), ops: fc.array(op, { minLength: Math.min(40, MAX_OPS), maxLength: MAX_OPS, size: 'max' }) })
  .map(({ customers, ops }) => ({ customers, ops: ops.map((o) => ({ ...o, c: o.c % customers.length })) }));

// ------------------------------------------------------------------ GraphQL

const TX = 'id kind customerId amount { amount } balanceAfter { amount } idempotencyKey';
const LEDGER_MUTATIONS: Record<LedgerKind, { field: string; query: string }> = {
  debit: { field: 'debitCredits', query: `mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed transaction { ${TX} } } }` },
  grant: { field: 'grantCredits', query: `mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed transaction { ${TX} } } }` },
  adjust: { field: 'adjustBalance', query: `mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed transaction { ${TX} } } }` },
  refund: { field: 'refundCredits', query: `mutation ($input: RefundCreditsInput!) { refundCredits(input: $input) { replayed transaction { ${TX} } } }` },
};
const HOLD = `mutation ($input: CreateHoldInput!) { createHold(input: $input) { replayed hold { id customerId status amount { amount } expiresAt } } }`;
const CAPTURE = `mutation ($id: ID!, $amount: Decimal) { captureHold(id: $id, amount: $amount) {
  replayed hold { id status capturedAmount { amount } captureTransactionId } transaction { ${TX} } } }`;
const RELEASE = `mutation ($id: ID!) { releaseHold(id: $id) { id status } }`;
const LIMIT = `mutation ($id: ID!, $currency: String, $limit: Decimal!) { setOverdraftLimit(customerId: $id, currency: $currency, limit: $limit) { overdraftLimit { amount } } }`;
const WALLET = `query ($id: ID!) { wallet(customerId: $id) { balance { amount } available { amount } held { amount } overdraftLimit { amount }
  pending: holds(status: [PENDING], first: 100) { totalCount nodes { id amount { amount } capturedAmount { amount } } } } }`;
const HOLDS_PAGE = `query ($id: ID!, $after: String) { wallet(customerId: $id) { holds(first: 100, after: $after) {
  pageInfo { hasNextPage endCursor } nodes { id status amount { amount } capturedAmount { amount } captureTransactionId idempotencyKey } } } }`;
const TRANSACTIONS_PAGE = `query ($id: ID!, $after: String) { wallet(customerId: $id) { transactions(first: 100, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { ${TX} } } } } }`;
const INTEGRITY = '{ ledgerIntegrity { ok transactionsChecked violations } }';
const BALANCE_UPDATED = 'subscription ($id: ID!) { balanceUpdated(customerId: $id) { balance { amount currency } available { amount } transactionIds } }';

const post = (target: Via, secret: string, query: string, variables: Record<string, unknown>) => postGraphql(instances[target]!.url, secret, query, variables);
/** A read that must succeed. */
const read = (target: Via, secret: string, query: string, variables: Record<string, unknown> = {}) => readGraphql(instances[target]!.url, secret, query, variables);

async function allPages<T>(target: Via, secret: string, query: string, id: string, connection: (data: Record<string, any>) => any, node: (item: any) => T): Promise<T[]> {
  const items: T[] = [];
  let after: string | null = null;
  for (;;) {
    const page = connection(await read(target, secret, query, { id, after }));
    items.push(...(page.nodes ?? page.edges).map(node));
    if (!page.pageInfo.hasNextPage) return items;
    after = page.pageInfo.endCursor;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const TYPED_CODES: readonly string[] = ERROR_CODES.filter((code) => code !== 'INTERNAL');
const PROCESS = ['A', 'B'] as const;

// ------------------------------------------------------------------ one scenario

interface Tx {
  id: string;
  kind: string;
  customerId: string;
  amount: bigint;
  balanceAfter: bigint;
  idempotencyKey: string;
}
const txOf = (node: any): Tx => ({
  id: node.id, kind: node.kind, customerId: node.customerId, amount: toNanos(node.amount.amount), balanceAfter: toNanos(node.balanceAfter.amount), idempotencyKey: node.idempotencyKey,
});

/** One request as sent and answered. */
interface Call {
  what: string;
  /** The customer (index) the request named, and what makes its payload (same signature: a true replay). */
  c: number;
  sig: string;
  amount: bigint;
  answer: GraphqlAnswer;
  /** Its error code, or null for a success. */
  code: string | null;
}
interface HoldRun {
  key: string;
  id: string;
  c: number;
  amount: bigint;
  ttl: number;
  expiresAt: number;
  captures: (Call & { requested: bigint })[];
  releases: Call[];
}
interface RunState {
  secret: string;
  customers: string[];
  specs: CustomerSpec[];
  problems: string[];
  ledgerCalls: Map<string, (Call & { t: LedgerKind })[]>;
  holdCalls: Map<string, Call[]>;
  holds: HoldRun[];
  /** Overdraft limits set during the race (`c` the customer, `amount` the limit). */
  limitsSet: Call[];
  /** Customers given credit that expires, and when the last of it is due (epoch ms). */
  expiring: Set<number>;
  expiriesDue: number;
}

const stats = new Map<string, number>();
const count = (outcome: string) => stats.set(outcome, (stats.get(outcome) ?? 0) + 1);

/** Sends one request and checks its answer is a success or one of the `allowed` typed codes. */
async function send(run: RunState, target: Via, what: string, query: string, variables: Record<string, unknown>, field: string, allowed: readonly string[]): Promise<{ answer: GraphqlAnswer; code: string | null; describe: string }> {
  const answer = await post(target, run.secret, query, variables);
  const describe = `${what} via ${PROCESS[target]} ${JSON.stringify(variables)} → HTTP ${answer.status} ${JSON.stringify(answer.errors ?? answer.data)}`;
  if (answer.status >= 500) run.problems.push(`${describe}: a 5xx answer`);
  if (answer.errors) {
    const code = answer.errors[0]?.extensions?.code ?? 'NONE';
    if (!TYPED_CODES.includes(code)) run.problems.push(`${describe}: not a typed error (${code})`);
    else if (!allowed.includes(code)) run.problems.push(`${describe}: ${code} is not an answer this request can have`);
    if (answer.data?.[field]) run.problems.push(`${describe}: both data and errors`);
    count(`${what.split(' ')[0]} ${code}`);
    return { answer, code, describe };
  }
  if (!answer.data?.[field]) {
    run.problems.push(`${describe}: neither data nor an error`);
    return { answer, code: 'NONE', describe };
  }
  count(`${what.split(' ')[0]} ${answer.data[field].replayed ? 'replayed' : 'ok'}`);
  return { answer, code: null, describe };
}

/** INSUFFICIENT_FUNDS must agree with its own figures: what was needed exceeds what was there (plus the allowance). */
function checkRefusal(run: RunState, describe: string, answer: GraphqlAnswer, allowance: bigint): void {
  const details = answer.errors?.[0]?.extensions ?? {};
  if (typeof details.required !== 'string' || typeof details.available !== 'string') {
    run.problems.push(`${describe}: INSUFFICIENT_FUNDS without its figures`);
    return;
  }
  if (toNanos(details.required) <= toNanos(details.available) + allowance) {
    run.problems.push(`${describe}: refused although ${details.required} needed fits ${details.available} available + ${nanosText(allowance)} allowed`);
  }
}

/** The least and most overdraft a customer had during the race (its limit may change under a debit). */
const limitRange = (run: RunState, c: number) => {
  const [one, two] = run.specs[c]!.limits;
  return { least: one < two ? one : two, most: one > two ? one : two };
};

interface GrantTerms {
  kind: 'PAID' | 'PROMOTIONAL';
  expiresAt: string | null;
}
const PAID: GrantTerms = { kind: 'PAID', expiresAt: null };

/** One request of a ledger operation under `key`; checks what can be checked of its answer alone. */
async function ledgerCall(run: RunState, t: LedgerKind, c: number, amount: bigint, terms: GrantTerms, key: string, target: Via, lag: number): Promise<Call & { t: LedgerKind }> {
  if (lag) await sleep(lag);
  const { field, query } = LEDGER_MUTATIONS[t];
  const expiring = t === 'grant' && terms.expiresAt !== null;
  // A grant that expires soon is refused if it reaches the ledger (waiting for the wallet's lock) after its time.
  const allowed = t === 'debit' || t === 'refund' ? ['INSUFFICIENT_FUNDS', 'CONFLICT'] : expiring ? ['CONFLICT', 'VALIDATION'] : ['CONFLICT'];
  const input: Record<string, unknown> = { customerId: run.customers[c], amount: t === 'debit' ? attosText(amount) : nanosText(amount), idempotencyKey: key };
  if (t === 'grant') Object.assign(input, terms);
  if (t === 'adjust' || t === 'refund') input.reason = 'fuzz';
  const what = `${t} ${key}`;
  const { answer, code, describe } = await send(run, target, what, query, { input }, field, allowed);
  if (code === 'VALIDATION' && (answer.errors?.[0]?.extensions?.field !== 'expiresAt' || Date.now() < new Date(terms.expiresAt!).getTime())) {
    run.problems.push(`${describe}: refused before its expiry`);
  }
  const { least, most } = limitRange(run, c);
  if (code === 'INSUFFICIENT_FUNDS') checkRefusal(run, describe, answer, t === 'refund' ? 0n : least);
  if (code === null) {
    const tx = txOf(answer.data![field].transaction);
    if (tx.customerId !== run.customers[c]) run.problems.push(`${describe}: the transaction is another customer's`);
    if (tx.idempotencyKey !== key) run.problems.push(`${describe}: the transaction has another key`);
    if ((t === 'debit' && tx.amount < 0n && tx.balanceAfter < -most) || (t === 'refund' && tx.balanceAfter < 0n)) {
      run.problems.push(`${describe}: balanceAfter ${nanosText(tx.balanceAfter)} is past the limit`);
    }
  }
  if (code === null && t === 'grant' && terms.expiresAt) run.expiring.add(c);
  return { t, what, c, sig: JSON.stringify([t, c, amount.toString(), t === 'grant' ? terms : null]), amount, answer, code };
}

function record(run: RunState, key: string, call: Call & { t: LedgerKind }): void {
  run.ledgerCalls.set(key, [...(run.ledgerCalls.get(key) ?? []), call]);
}

async function ledgerOp(run: RunState, op: Extract<Op, { t: LedgerKind }>, key: string): Promise<void> {
  const n = run.customers.length;
  const terms: GrantTerms = op.t === 'debit' ? PAID : { kind: op.kind, expiresAt: op.expiresIn === null ? null : new Date(Date.now() + op.expiresIn).toISOString() };
  if (terms.expiresAt) run.expiriesDue = Math.max(run.expiriesDue, new Date(terms.expiresAt).getTime());
  const requests = [ledgerCall(run, op.t, op.c, op.amount, terms, key, op.via, 0)];
  const { echo } = op;
  if (echo?.kind === 'crossed') {
    // A grant under a debit's key, or a debit under the key of anything else.
    requests.push(op.t === 'debit'
      ? ledgerCall(run, 'grant', op.c, op.amount / BILLION || 1n, PAID, key, echo.via, echo.lag)
      : ledgerCall(run, 'debit', op.c, abs(op.amount) * BILLION, PAID, key, echo.via, echo.lag));
  } else if (echo) {
    const c = echo.kind === 'elsewhere' ? (op.c + 1) % n : op.c;
    requests.push(ledgerCall(run, op.t, c, echo.kind === 'different' ? op.amount * 2n : op.amount, terms, key, echo.via, echo.lag));
  }
  for (const call of await Promise.all(requests)) record(run, key, call);
}

async function limitOp(run: RunState, op: Extract<Op, { t: 'limit' }>): Promise<void> {
  const limit = run.specs[op.c]!.limits[op.which];
  const variables = { id: run.customers[op.c], limit: nanosText(limit) };
  const { answer, code, describe } = await send(run, op.via, `limit ${op.c}`, LIMIT, variables, 'setOverdraftLimit', []);
  // The wallet in the answer is read after the commit: another limit set meanwhile may show instead.
  if (code === null && !run.specs[op.c]!.limits.includes(toNanos(answer.data!.setOverdraftLimit.overdraftLimit.amount))) run.problems.push(`${describe}: the wallet answers a limit nobody set`);
  run.limitsSet.push({ what: 'limit', c: op.c, sig: limit.toString(), amount: limit, answer, code });
}

async function holdOp(run: RunState, op: Extract<Op, { t: 'hold' }>, key: string): Promise<void> {
  const n = run.customers.length;
  const { echo } = op;
  const requests = [{ c: op.c, amount: op.amount, target: op.via, lag: 0 }];
  // A debit under the hold's key: ledger transactions have keys of their own, so it is no replay.
  const crossed = echo?.kind === 'crossed' ? ledgerCall(run, 'debit', op.c, op.amount * BILLION, PAID, key, echo.via, echo.lag) : null;
  if (echo && echo.kind !== 'crossed') {
    requests.push({ c: echo.kind === 'elsewhere' ? (op.c + 1) % n : op.c, amount: echo.kind === 'different' ? op.amount * 2n : op.amount, target: echo.via, lag: echo.lag });
  }
  const calls = await Promise.all(requests.map(async ({ c, amount, target, lag }) => {
    if (lag) await sleep(lag);
    const input = { customerId: run.customers[c], amount: nanosText(amount), ttlSeconds: op.ttl, idempotencyKey: key };
    const what = `hold ${key}`;
    const { answer, code, describe } = await send(run, target, what, HOLD, { input }, 'createHold', ['INSUFFICIENT_FUNDS', 'CONFLICT']);
    if (code === 'INSUFFICIENT_FUNDS') checkRefusal(run, describe, answer, limitRange(run, c).least);
    return { what, c, sig: JSON.stringify([c, amount.toString()]), amount, answer, code };
  }));
  run.holdCalls.set(key, calls);
  if (crossed) record(run, key, await crossed);
  const made = calls.find((call) => call.code === null);
  if (!made) return;
  const answered = made.answer.data!.createHold.hold;
  // Every success under the key names one hold: checked with the key's other answers later.
  const c = run.customers.indexOf(answered.customerId);
  const hold: HoldRun = { key, id: answered.id, c, amount: toNanos(answered.amount.amount), ttl: op.ttl, expiresAt: new Date(answered.expiresAt).getTime(), captures: [], releases: [] };
  run.holds.push(hold);
  await Promise.all(op.ends.map(async (step) => {
    if (step.delay) await sleep(step.delay);
    const what = `${step.t} ${key}`;
    if (step.t === 'release') {
      const { answer, code, describe } = await send(run, step.via, what, RELEASE, { id: hold.id }, 'releaseHold', ['CONFLICT']);
      if (code === null && answer.data!.releaseHold.status !== 'RELEASED') run.problems.push(`${describe}: a release that leaves it ${answer.data!.releaseHold.status}`);
      hold.releases.push({ what, c, sig: 'release', amount: 0n, answer, code });
      return;
    }
    const requested = step.amount === 'omit' || step.amount === 'full' ? hold.amount
      : step.amount === 'zero' ? 0n
        : step.amount === 'over' ? hold.amount + CENT
          : (hold.amount * BigInt(step.amount)) / 4n;
    const variables: Record<string, unknown> = { id: hold.id };
    if (step.amount !== 'omit') variables.amount = nanosText(requested);
    const allowed = step.amount === 'over' ? ['VALIDATION'] : ['CONFLICT', 'INSUFFICIENT_FUNDS'];
    const { answer, code, describe } = await send(run, step.via, what, CAPTURE, variables, 'captureHold', allowed);
    if (code === 'INSUFFICIENT_FUNDS') checkRefusal(run, describe, answer, limitRange(run, c).least);
    if (code === null) {
      const data = answer.data!.captureHold;
      if (data.hold.status !== 'CAPTURED') run.problems.push(`${describe}: a capture that leaves it ${data.hold.status}`);
      const tx = data.transaction ? txOf(data.transaction) : null;
      if (tx && tx.amount < 0n && tx.balanceAfter < -limitRange(run, c).most) run.problems.push(`${describe}: balanceAfter ${nanosText(tx.balanceAfter)} is past the limit`);
    }
    hold.captures.push({ what, c, sig: requested.toString(), amount: requested, requested, answer, code });
  }));
}

async function runScenario(scenario: Scenario): Promise<void> {
  const began = performance.now();
  const created = await runtime.services.merchants.create({ name: `Concurrency fuzz ${randomUUID()}` });
  const secret = created.key.secret;
  const customers = await Promise.all(scenario.customers.map(async (_spec, c) => (await runtime.services.customers.create(created.merchant.id, { externalId: `c${c}` })).id));
  const run: RunState = { secret, customers, specs: scenario.customers, problems: [], ledgerCalls: new Map(), holdCalls: new Map(), holds: [], limitsSet: [], expiring: new Set(), expiriesDue: 0 };
  const seedTransactions = new Set<string>();

  // Seed credit and overdraft limits, before anyone listens.
  await Promise.all(scenario.customers.map(async (spec, c) => {
    if (spec.seed > 0n) {
      const data = await read((c % 2) as Via, secret, LEDGER_MUTATIONS.grant.query, { input: { customerId: customers[c], amount: nanosText(spec.seed), kind: spec.seedKind, idempotencyKey: `seed-${c}` } });
      seedTransactions.add(data.grantCredits.transaction.id);
    }
    if (spec.limits[0] > 0n) await read(1, secret, LIMIT, { id: customers[c], limit: nanosText(spec.limits[0]) });
  }));

  // A subscriber on A to every customer. Live once a change made on B reaches it: an overdraft
  // limit set on the customer's EUR wallet, which moves no money (and EUR events are not counted).
  const events: { balance: bigint; available: bigint; ids: string[] }[][] = customers.map(() => []);
  const euroEvents = customers.map(() => 0);
  const client = createClient({ url: instances[0]!.url.replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${secret}` }, retryAttempts: 0 });
  try {
    customers.forEach((id, c) =>
      client.subscribe(
        { query: BALANCE_UPDATED, variables: { id } },
        {
          next: (message) => {
            if (message.errors) run.problems.push(`subscriber of customer ${c}: ${JSON.stringify(message.errors)}`);
            const update = (message.data as any)?.balanceUpdated;
            if (!update) return;
            if (update.balance.currency === 'EUR') euroEvents[c]! += 1;
            else events[c]!.push({ balance: toNanos(update.balance.amount), available: toNanos(update.available.amount), ids: update.transactionIds });
          },
          error: (error) => run.problems.push(`subscriber of customer ${c} failed: ${String((error as Error)?.message ?? JSON.stringify(error))}`),
          complete: () => undefined,
        },
      ),
    );
    await Promise.all(customers.map(async (id, c) => {
      for (let attempt = 0; euroEvents[c] === 0; attempt++) {
        if (attempt > 100) throw new Error(`the subscription of customer ${c} on A never became live`);
        await read(1, secret, LIMIT, { id, currency: 'EUR', limit: '0' });
        for (let waited = 0; waited < 100 && euroEvents[c] === 0; waited += 10) await sleep(10);
      }
    }));
    for (const list of events) list.length = 0;

    // The race.
    const started = performance.now();
    await Promise.all(scenario.ops.map(async (o, index) => {
      if (o.delay) await sleep(o.delay);
      if (o.t === 'hold') await holdOp(run, o, `hold-${index}`);
      else if (o.t === 'limit') await limitOp(run, o);
      else await ledgerOp(run, o, `${o.t}-${index}`);
    }));
    const raced = performance.now() - started;
    // Holds with a one-second TTL lapse, and expiring grants come due, before the wallets are read:
    // the reads then agree with each other (the first read of a wallet expires its due grants).
    const lapse = Math.max(0, run.expiriesDue + 50 - Date.now(), ...run.holds.filter((hold) => hold.ttl < 60).map((hold) => hold.expiresAt + 50 - Date.now()));
    if (lapse > 0) await sleep(lapse);

    const settled = performance.now();
    await checkBooks(run, seedTransactions, events);
    if (process.env.FUZZ_STATS) {
      console.log(`${scenario.ops.length} operations on ${customers.length} customers: set up in ${(started - began).toFixed(0)} ms, raced in ${raced.toFixed(0)} ms, checked in ${(performance.now() - settled).toFixed(0)} ms`);
    }
  } finally {
    await client.dispose();
  }
  expect(run.problems, `${run.problems.length} problem(s)`).toEqual([]);
}

// ------------------------------------------------------------------ the invariants

async function checkBooks(run: RunState, seedTransactions: Set<string>, events: { balance: bigint; available: bigint; ids: string[] }[][]): Promise<void> {
  const { secret, customers, specs, problems } = run;
  const n = customers.length;
  const wallets = await Promise.all(customers.map(async (id, c) => {
    const target = (c % 2) as Via;
    const wallet = (await read(target, secret, WALLET, { id })).wallet;
    const holds = await allPages(target, secret, HOLDS_PAGE, id, (data) => data.wallet.holds, (node: any) => ({
      id: node.id as string, status: node.status as string, amount: toNanos(node.amount.amount), captured: toNanos(node.capturedAmount.amount),
      captureTransactionId: node.captureTransactionId as string | null, key: node.idempotencyKey as string,
    }));
    const transactions = await allPages(target, secret, TRANSACTIONS_PAGE, id, (data) => data.wallet.transactions, (edge: any) => txOf(edge.node));
    return {
      balance: toNanos(wallet.balance.amount), available: toNanos(wallet.available.amount), held: toNanos(wallet.held.amount), limit: toNanos(wallet.overdraftLimit.amount),
      pending: wallet.pending, holds, transactions,
    };
  }));
  const allTransactions = new Map(wallets.flatMap((wallet) => wallet.transactions).map((tx) => [tx.id, tx]));
  const byKey = new Map<string, Tx[]>();
  for (const tx of allTransactions.values()) byKey.set(tx.idempotencyKey, [...(byKey.get(tx.idempotencyKey) ?? []), tx]);
  const holdsById = new Map(wallets.flatMap((wallet, c) => wallet.holds.map((hold) => [hold.id, { ...hold, c }] as const)));

  // Idempotency keys of ledger transactions: money moved at most once, replays are of that very request.
  const expected = specs.map((spec) => spec.seed);
  const debited = customers.map(() => ({ attos: 0n, nanos: 0n }));
  const overdrawnByAdjustment = customers.map(() => 0n);
  for (const [key, calls] of run.ledgerCalls) {
    const fresh = calls.filter((call) => call.code === null && !call.answer.data![LEDGER_MUTATIONS[call.t].field].replayed);
    const first = fresh[0];
    const recorded = byKey.get(key) ?? [];
    const story = calls.map((call) => `${call.sig} → ${JSON.stringify(call.answer.errors?.[0]?.extensions?.code ?? call.answer.data)}`).join('; ');
    if (fresh.length > 1) problems.push(`key ${key} moved money ${fresh.length} times: ${story}`);
    if (recorded.length !== (first ? 1 : 0)) problems.push(`key ${key}: ${recorded.length} transaction(s) recorded, ${fresh.length} fresh answer(s): ${story}`);
    if (!first) {
      if (calls.some((call) => call.code === null)) problems.push(`key ${key}: answered as a replay though nothing was recorded first: ${story}`);
      if (calls.some((call) => call.code === 'CONFLICT')) problems.push(`key ${key}: CONFLICT though no other request holds the key: ${story}`);
      continue;
    }
    const tx = txOf(first.answer.data![LEDGER_MUTATIONS[first.t].field].transaction);
    if (recorded[0] && recorded[0].id !== tx.id) problems.push(`key ${key}: the fresh answer reported ${tx.id}, the wallet lists ${recorded[0].id}`);
    for (const call of calls) {
      if (call === first) continue;
      if (call.code === null) {
        const replayed = txOf(call.answer.data![LEDGER_MUTATIONS[call.t].field].transaction);
        if (call.sig !== first.sig) problems.push(`key ${key}: another request answered as a replay of the first: ${story}`);
        if (replayed.id !== tx.id || replayed.amount !== tx.amount) problems.push(`key ${key}: a replay answered with another transaction: ${story}`);
      } else if (call.code === 'CONFLICT' && call.sig === first.sig) {
        problems.push(`key ${key}: the same request answered CONFLICT instead of a replay: ${story}`);
      }
    }
    expected[first.c]! += tx.amount;
    if (first.t === 'debit') {
      debited[first.c]!.attos += first.amount;
      debited[first.c]!.nanos -= tx.amount;
      if (first.amount % BILLION === 0n && tx.amount !== -first.amount / BILLION) problems.push(`key ${key}: a debit of ${attosText(first.amount)} took ${nanosText(tx.amount)}`);
    } else {
      const moved = first.t === 'refund' ? -first.amount : first.amount;
      if (tx.amount !== moved) problems.push(`key ${key}: a ${first.t} of ${nanosText(first.amount)} moved ${nanosText(tx.amount)}`);
      if (first.t === 'adjust' && first.amount < 0n) overdrawnByAdjustment[first.c]! -= first.amount;
    }
  }

  // Idempotency keys of holds: one hold per key, replays of that very request.
  for (const [key, calls] of run.holdCalls) {
    const fresh = calls.filter((call) => call.code === null && !call.answer.data!.createHold.replayed);
    const story = calls.map((call) => `${call.sig} → ${JSON.stringify(call.answer.errors?.[0]?.extensions?.code ?? call.answer.data)}`).join('; ');
    const listed = [...holdsById.values()].filter((hold) => hold.key === key);
    if (fresh.length > 1) problems.push(`hold key ${key} made ${fresh.length} holds: ${story}`);
    if (listed.length !== Math.min(fresh.length, 1)) problems.push(`hold key ${key}: ${listed.length} hold(s) listed, ${fresh.length} fresh answer(s): ${story}`);
    const first = fresh[0];
    for (const call of calls) {
      if (call === first) continue;
      if (call.code === null && (!first || call.sig !== first.sig || call.answer.data!.createHold.hold.id !== first.answer.data!.createHold.hold.id)) {
        problems.push(`hold key ${key}: a replay that is not of the first hold: ${story}`);
      }
      if (call.code === 'CONFLICT' && (!first || call.sig === first.sig)) problems.push(`hold key ${key}: CONFLICT with no other request under the key: ${story}`);
    }
  }

  // Changes that move no money, each published once: a limit set, a hold made, released or captured for nothing.
  const quietEvents = customers.map((_id, c) => run.limitsSet.filter((call) => call.c === c && call.code === null).length);
  // Whether the limit may have moved under a pending hold (raised, spent into, lowered: then its capture may be refused).
  const lowered = customers.map((_id, c) => limitRange(run, c).least < limitRange(run, c).most && run.limitsSet.some((call) => call.c === c && call.code === null));
  // Each hold: captured or released, never both, by one fresh capture at most.
  for (const hold of run.holds) {
    const final = holdsById.get(hold.id);
    const story = [...hold.captures, ...hold.releases]
      .map((call) => `${call.what}${call.sig === 'release' ? '' : ` of ${nanosText(call.amount)}`} → ${JSON.stringify(call.answer.errors?.[0]?.extensions?.code ?? call.answer.data)}`)
      .join('; ');
    if (!final) {
      problems.push(`hold ${hold.id} (${hold.key}) is not listed in its wallet`);
      continue;
    }
    if (final.c !== hold.c || final.amount !== hold.amount) problems.push(`hold ${hold.id} is listed with customer ${final.c} and ${nanosText(final.amount)}`);
    quietEvents[hold.c]! += 1; // its creation
    count(`hold ended ${final.status}${hold.captures.length && hold.releases.length ? ', raced by capture and release' : ''}`);
    const captured = hold.captures.filter((call) => call.code === null);
    const freshCaptures = captured.filter((call) => !call.answer.data!.captureHold.replayed);
    const released = hold.releases.filter((call) => call.code === null);
    const captureTx = byKey.get(`hold-capture:${hold.id}`) ?? [];
    if (freshCaptures.length > 1) problems.push(`hold ${hold.id} captured ${freshCaptures.length} times: ${story}`);
    if (captured.length > 0 && released.length > 0) problems.push(`hold ${hold.id} both captured and released: ${story}`);
    if (captured.length > 0 && freshCaptures.length === 0) problems.push(`hold ${hold.id}: a capture replayed though none was fresh: ${story}`);
    const capture = freshCaptures[0];
    if (capture) {
      const data = capture.answer.data!.captureHold;
      if (final.status !== 'CAPTURED' || final.captured !== capture.requested) problems.push(`hold ${hold.id} captured ${nanosText(capture.requested)} but is ${final.status} with ${nanosText(final.captured)}: ${story}`);
      for (const call of captured) {
        const other = call.answer.data!.captureHold;
        if (call.requested !== capture.requested) problems.push(`hold ${hold.id}: a capture of another amount answered as a replay: ${story}`);
        if (toNanos(other.hold.capturedAmount.amount) !== capture.requested || (other.transaction?.id ?? null) !== (data.transaction?.id ?? null)) problems.push(`hold ${hold.id}: capture answers disagree: ${story}`);
      }
      if (capture.requested > 0n) {
        const tx = data.transaction ? txOf(data.transaction) : null;
        if (!tx || tx.amount !== -capture.requested) problems.push(`hold ${hold.id}: a capture of ${nanosText(capture.requested)} reported ${JSON.stringify(data.transaction)}`);
        if (captureTx.length !== 1 || captureTx[0]!.id !== tx?.id || final.captureTransactionId !== tx?.id) {
          problems.push(`hold ${hold.id}: capture transaction ${tx?.id}, hold names ${final.captureTransactionId}, wallet lists ${captureTx.map((t) => t.id).join(', ')}`);
        }
        if (tx) expected[hold.c]! += tx.amount;
      } else {
        if (data.transaction !== null || captureTx.length > 0) problems.push(`hold ${hold.id}: a capture of zero posted a transaction`);
        quietEvents[hold.c]! += 1;
      }
    } else if (captureTx.length > 0 || final.status === 'CAPTURED') {
      problems.push(`hold ${hold.id} is ${final.status} with ${captureTx.length} capture transaction(s) though no capture succeeded: ${story}`);
    }
    if (released.length > 0) {
      if (final.status !== 'RELEASED') problems.push(`hold ${hold.id} released but is ${final.status}: ${story}`);
      quietEvents[hold.c]! += 1;
    } else if (final.status === 'RELEASED') {
      problems.push(`hold ${hold.id} is RELEASED though no release succeeded: ${story}`);
    }
    if (captured.length === 0 && released.length === 0 && final.status !== 'PENDING' && !(final.status === 'EXPIRED' && hold.ttl < 60)) {
      problems.push(`hold ${hold.id} is ${final.status} though nothing ended it: ${story}`);
    }
    for (const call of hold.captures) {
      if (call.code === 'CONFLICT' && final.status === 'CAPTURED' && final.captured === call.requested) problems.push(`hold ${hold.id}: a capture of the captured amount answered CONFLICT, not a replay: ${story}`);
      if (call.code === 'CONFLICT' && final.status === 'PENDING') problems.push(`hold ${hold.id}: a capture of a pending hold answered CONFLICT: ${story}`);
      // What a hold reserves stays there for its capture: only an adjustment (or a lower limit) may take it away.
      if (call.code === 'INSUFFICIENT_FUNDS' && overdrawnByAdjustment[hold.c] === 0n && !lowered[hold.c]) problems.push(`hold ${hold.id}: its capture was refused for funds it had reserved: ${story}`);
    }
    for (const call of hold.releases) {
      if (call.code === 'CONFLICT' && final.status !== 'CAPTURED' && final.status !== 'EXPIRED') problems.push(`hold ${hold.id}: a release answered CONFLICT though the hold is ${final.status}: ${story}`);
    }
  }

  // Wallets: balances from the answers and from the transactions, limits, held and available.
  const integrity = await Promise.all([0, 1].map((target) => read(target as Via, secret, INTEGRITY)));
  let listed = 0;
  for (const [c, wallet] of wallets.entries()) {
    const { most } = limitRange(run, c);
    const label = `customer ${c} (seed ${nanosText(specs[c]!.seed)}, limits ${specs[c]!.limits.map(nanosText).join(' / ')})`;
    listed += wallet.transactions.length;
    const sum = wallet.transactions.reduce((total, tx) => total + tx.amount, 0n);
    // Expired credit is the one movement no answer reports: its transactions are taken as listed.
    const expired = wallet.transactions.filter((tx) => tx.kind === 'EXPIRY').reduce((total, tx) => total + tx.amount, 0n);
    if (expired !== 0n && !run.expiring.has(c)) problems.push(`${label}: ${nanosText(expired)} expired though no credit of it expires`);
    if (wallet.balance !== expected[c]! + expired) {
      problems.push(`${label}: balance ${nanosText(wallet.balance)}, the answers add up to ${nanosText(expected[c]!)}${expired ? ` and ${nanosText(expired)} expired` : ''}`);
    }
    if (wallet.balance !== sum) problems.push(`${label}: balance ${nanosText(wallet.balance)}, its transactions add up to ${nanosText(sum)}`);
    const limitsSet = run.limitsSet.filter((call) => call.c === c && call.code === null).map((call) => call.amount);
    if (![specs[c]!.limits[0], ...limitsSet].includes(wallet.limit)) problems.push(`${label}: overdraft limit reads ${nanosText(wallet.limit)}, which nobody set`);
    const pendingSum = wallet.pending.nodes.reduce((total: bigint, hold: any) => total + toNanos(hold.amount.amount) - toNanos(hold.capturedAmount.amount), 0n);
    if (wallet.pending.totalCount > 100) throw new Error('more pending holds than one page: the scenario is too large for this check');
    if (wallet.held !== pendingSum) problems.push(`${label}: held ${nanosText(wallet.held)}, its pending holds add up to ${nanosText(pendingSum)}`);
    if (wallet.available !== wallet.balance - wallet.held) problems.push(`${label}: available ${nanosText(wallet.available)} is not balance − held`);
    if (wallet.available < -most - overdrawnByAdjustment[c]!) {
      problems.push(`${label}: available ${nanosText(wallet.available)} is below −limit${overdrawnByAdjustment[c] ? ` less the ${nanosText(overdrawnByAdjustment[c]!)} negative adjustments took` : ''}`);
    }
    const pendingIds = new Set(wallet.pending.nodes.map((hold: any) => hold.id));
    for (const hold of wallet.holds) if ((hold.status === 'PENDING') !== pendingIds.has(hold.id)) problems.push(`${label}: hold ${hold.id} is ${hold.status} in one list and not in the other`);
    for (const tx of wallet.transactions) {
      if (tx.kind === 'EXPIRY') count(tx.idempotencyKey.startsWith('grant-keep:') ? 'expiring credit kept for a hold' : 'credit expired');
      if (!['GRANT', 'ADJUSTMENT', 'REFUND', 'USAGE', 'HOLD_CAPTURE', 'EXPIRY'].includes(tx.kind)) problems.push(`${label}: unexpected ${tx.kind} transaction ${tx.id}`);
      if ((tx.kind === 'USAGE' || tx.kind === 'HOLD_CAPTURE') && tx.amount < 0n && tx.balanceAfter < -most) problems.push(`${label}: ${tx.kind} ${tx.id} left ${nanosText(tx.balanceAfter)}`);
      if (tx.kind === 'REFUND' && tx.balanceAfter < 0n) problems.push(`${label}: refund ${tx.id} left ${nanosText(tx.balanceAfter)}`);
    }
    // Sub-nano debits: what was posted is the exact total less a carry of under one nano.
    const carry = debited[c]!.attos - debited[c]!.nanos * BILLION;
    if (carry < 0n || carry >= BILLION) problems.push(`${label}: debits of ${attosText(debited[c]!.attos)} posted ${nanosText(debited[c]!.nanos)}`);
  }
  for (const [target, data] of integrity.entries()) {
    const report = data.ledgerIntegrity;
    if (!report.ok || report.violations.length > 0) problems.push(`ledgerIntegrity on ${PROCESS[target]}: ${JSON.stringify(report.violations)}`);
    if (report.transactionsChecked !== listed) problems.push(`ledgerIntegrity on ${PROCESS[target]} checked ${report.transactionsChecked} transactions, the wallets list ${listed}`);
  }

  // Events on A: every transaction once, each event the state after its last one, one per quiet change, the last one final.
  const raced = wallets.map((wallet) => wallet.transactions.filter((tx) => !seedTransactions.has(tx.id)));
  // A quiet change's event also carries what expired on its way through the wallet's lock.
  const quietLike = (c: number) => events[c]!.filter((event) => event.ids.every((id) => allTransactions.get(id)?.kind === 'EXPIRY')).length;
  const complete = () => raced.every((list, c) => {
    const seen = new Set(events[c]!.flatMap((event) => event.ids));
    return list.every((tx) => seen.has(tx.id)) && quietLike(c) >= quietEvents[c]!;
  });
  for (const deadline = Date.now() + 5_000; !complete() && Date.now() < deadline;) await sleep(20);
  await sleep(150);
  for (let c = 0; c < n; c++) {
    const label = `events of customer ${c} on A`;
    const seen = new Map<string, number>();
    for (const [e, event] of events[c]!.entries()) {
      for (const id of event.ids) seen.set(id, (seen.get(id) ?? 0) + 1);
      const last = event.ids.length > 0 ? allTransactions.get(event.ids.at(-1)!) : undefined;
      if (event.ids.length > 0 && !last) problems.push(`${label}: an event names transactions the wallet does not list: ${event.ids.join(', ')}`);
      // Late (a newer state reached A first), it shows that newer state: the figures of the event before it.
      const before = events[c]![e - 1];
      const late = before !== undefined && before.balance === event.balance && before.available === event.available;
      if (last && last.balanceAfter !== event.balance && !late) {
        problems.push(`${label}: an event shows ${nanosText(event.balance)} after ${last.id}, whose balanceAfter is ${nanosText(last.balanceAfter)}, nor is it the state before it`);
      }
    }
    for (const tx of raced[c]!) if (seen.get(tx.id) !== 1) problems.push(`${label}: ${tx.kind} ${tx.id} (${tx.idempotencyKey}) seen ${seen.get(tx.id) ?? 0} times`);
    const quiet = events[c]!.filter((event) => event.ids.length === 0).length;
    const wallet = wallets[c]!;
    // A hold that ran out its time is marked expired when its wallet is next read or settled, in a
    // commit of its own that is announced: one more quiet change at most per such hold.
    const expiredHolds = wallet.holds.filter((hold) => hold.status === 'EXPIRED').length;
    // Fewer when one reached A after a newer state: it is dropped (see inVersionOrder).
    if (quiet > quietEvents[c]! + expiredHolds) {
      problems.push(`${label}: ${quiet} events without a transaction (${quietLike(c)} with only expiries) for ${quietEvents[c]} changes that moved no money and ${expiredHolds} holds expired`);
    }
    const last = events[c]!.at(-1);
    // A hold that runs out its time commits nothing until a read or settle of its wallet marks it
    // expired and announces the wallet: until that event arrives, the last event may still count it.
    const lapsed = wallet.holds.filter((hold) => hold.status === 'EXPIRED').reduce((total, hold) => total + hold.amount, 0n);
    if (last && (last.balance !== wallet.balance || last.available > wallet.available || last.available < wallet.available - lapsed)) {
      problems.push(`${label}: the last event shows ${nanosText(last.balance)} (available ${nanosText(last.available)}), the wallet ${nanosText(wallet.balance)} (available ${nanosText(wallet.available)}, ${nanosText(lapsed)} of it freed by lapsed holds); `
        + `the last events: ${events[c]!.slice(-4).map((event) => `${nanosText(event.balance)}/${nanosText(event.available)} [${event.ids.map((id) => allTransactions.get(id)?.kind).join(' ')}]`).join(', ')}`);
    }
    if (!last && raced[c]!.length + quietEvents[c]! > 0) problems.push(`${label}: no event at all`);
  }
}

// ------------------------------------------------------------------ the property

describe('ledger under concurrency, across two server processes', () => {
  it('random concurrent operations and same-key replays keep every ledger invariant', async () => {
    await fc.assert(fc.asyncProperty(scenarioArb, runScenario), {
      numRuns: RUNS,
      seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined,
      // Every attempt races anew, so a shrunk counterexample need not fail again: report the first.
      endOnFailure: true,
    });
    if (process.env.FUZZ_STATS) console.log([...stats].sort().map(([outcome, n]) => `${outcome}: ${n}`).join('\n'));
  }, 600_000);
});
