import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { active, capture, credit, DEFAULT_ORDER, draw, expire, heldOf, keptFor, live, own, settle, expectWalletView, WALLETS_QUERY, type ConsumptionKey, type OracleGrant, type OracleHold } from '../../../test/wallet-oracle.ts';
import { decimalText, decimalUnits, seededRandom, type SeededRandom } from '../../../test/seeded-random.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';

/**
 * A model test of what post-request usage charges, and from which credit, through the real API
 * (POST /v1/usage/batch and GraphQL recordUsage) on a fake clock. The pricing is kept exactly
 * predictable — a FLAT rule per QUANTITY meter, 0.01 a unit on `units` and 0.4 nano a unit on
 * `tiny` (so some charges are finer than a nano and carried), and a two-tier VOLUME rule on `bulk`
 * whose give-backs settle the month's shortfalls first and come back to the wallet as promotional
 * credit — because the subject is the wallet:
 * random grants of every kind (amounts, priorities, expiries that run out as the clock moves),
 * the merchant's consumption order, overdraft limits raised and lowered, holds placed, captured and
 * released through GraphQL, and batches (some sent at once, on disjoint wallets, which a charge lane
 * merges) of events of three customers in USD and EUR, with several
 * events of one wallet, replays of earlier keys (the customer named by id or by externalId, over
 * either transport), conflicting records under an earlier key, and a key repeated inside a batch.
 *
 * The oracle is written here from the README, in bigint nanos and attos (nothing of the
 * production code is imported): each event is checked in batch order against what its wallet has
 * left — balance less held, down to minus the overdraft limit, with the sub-nano carry — and is
 * CHARGED, or charged what was left (PARTIALLY_CHARGED / UNCHARGED) with the rest its shortfall and
 * an INSUFFICIENT_FUNDS error (required: the event's price rounded up to a nano; available: what
 * the wallet had left before it, balance less held); the credit comes from the grants in the
 * merchant's order, never from credit kept for a hold, and what they lack is owed. After every step
 * every wallet (balance, held, available, limit, carry, each grant's remaining, each hold) and the
 * integrity report are compared; at the end, every stored event.
 *
 * Knobs: USAGE_WALLETS_SEED (replay one sequence; printed on failure with the steps that led to
 * it), USAGE_WALLETS_RUNS (sequences, default 3), USAGE_WALLETS_STEPS (steps per sequence, default
 * 40), USAGE_WALLETS_STATS=1 (print the outcomes reached).
 */

const START = Date.parse('2026-06-01T12:00:00Z');
let now = new Date(START);
let server: TestServer;

beforeAll(async () => {
  // Reads of a customer's wallets with their grants and holds go past the default complexity limit.
  server = await startTestServer({ TOLLGATE_MAX_QUERY_COMPLEXITY: '100000' }, { clock: () => now });
});
afterAll(() => server?.close());

// ------------------------------------------------------------------ randomness

type Rng = SeededRandom;

// ------------------------------------------------------------------ money (never a float)

const ATTOS_PER_NANO = 1_000_000_000n;
/** A decimal string in nanos (at most 9 places). */
const toNanos = (text: string): bigint => decimalUnits(text, 9);
/** A decimal string in attos (at most 18 places). */
const toAttos = (text: string): bigint => decimalUnits(text, 18);
const fmt = (nanos: bigint) => decimalText(nanos, 9);
/** As the server formats nanos and attos: at least two places. */
const money = (nanos: bigint) => decimalText(nanos, 9, 2);
const attosText = (attos: bigint) => decimalText(attos, 18, 2);
const min = (a: bigint, b: bigint) => (a < b ? a : b);
const max = (a: bigint, b: bigint) => (a > b ? a : b);

// ------------------------------------------------------------------ the oracle

type Key = ConsumptionKey;
const CURRENCIES = ['USD', 'EUR'] as const;
/** The FLAT rules' prices per unit, in attos: 0.01 on `units`, 0.4 nano on `tiny`. */
const UNIT_ATTOS = 10_000_000n * ATTOS_PER_NANO;
const TINY_ATTOS = 400_000_000n;

interface Hold extends OracleHold {
  key: string;
  limitAtHold: bigint;
}
interface Wallet {
  customer: number;
  currency: string;
  balance: bigint;
  /** Attos charged but not yet a whole nano (0 ≤ carry < 1e9). */
  carry: bigint;
  limit: bigint;
  grants: OracleGrant[];
}
/** An event as the test sends it. */
interface UsageEvent {
  customer: number;
  /** Named by id or by externalId: the same record either way. */
  byExternalId: boolean;
  key: string;
  currency: string;
  quantities: Record<string, number>;
}
/** What an event's answer should say (amounts in attos; the error's figures in nanos). */
interface Answer {
  status: 'CHARGED' | 'PARTIALLY_CHARGED' | 'UNCHARGED' | 'NOT_BILLABLE';
  charge: bigint;
  shortfall: bigint;
  /** What a give-back of the VOLUME rule settled of the month's shortfalls instead of crediting it. */
  settled: bigint;
  error: { required: bigint; available: bigint; currency: string } | null;
  /** Its wallet's charges in its batch were posted (a net charge or give-back under a nano too, as a transaction of 0). */
  posted: boolean;
}
interface Recorded {
  event: UsageEvent;
  answer: Answer;
  /** The first answer as the API gave it, for replays to match exactly. */
  seen: string | null;
}
interface Model {
  merchant: { id: string; secret: string };
  customers: { id: string; externalId: string }[];
  wallets: Map<string, Wallet>;
  holds: Hold[];
  order: Key[];
  seq: number;
  /** Usage events recorded, by key. */
  events: Map<string, Recorded>;
  /** The VOLUME rule's month, by wallet key. */
  periods: Map<string, Period>;
  log: string[];
}

let lastLog: string[] = [];
const stats = new Map<string, number>();
const count = (outcome: string) => stats.set(outcome, (stats.get(outcome) ?? 0) + 1);
const wk = (customer: number, currency: string) => `${customer}:${currency}`;
function walletOf(model: Model, key: string): Wallet {
  let wallet = model.wallets.get(key);
  if (!wallet) {
    const [customer, currency] = key.split(':') as [string, string];
    model.wallets.set(key, (wallet = { customer: Number(customer), currency, balance: 0n, carry: 0n, limit: 0n, grants: [] }));
  }
  return wallet;
}

/** Charges `attos` to the wallet: whole nanos leave the balance, the rest waits in the carry. */
function chargeAttos(model: Model, wallet: Wallet, attos: bigint): void {
  const total = wallet.carry + attos;
  const nanos = total / ATTOS_PER_NANO;
  wallet.carry = total - nanos * ATTOS_PER_NANO;
  draw(wallet, own(model, wallet), nanos);
}

/** Counted as an outcome reached (USAGE_WALLETS_STATS). */
const keptForHold = () => count('credit kept for a hold');
const settleAll = (model: Model) => {
  for (const key of model.wallets.keys()) settle(model, key, now.getTime(), keptForHold);
};

/** The VOLUME rule on `bulk`: the month's units at 0.05 up to 20, all of them at 0.02 beyond. */
const volumePrice = (units: bigint) => units * (units <= 20n ? 50_000_000n : 20_000_000n) * ATTOS_PER_NANO;
/** A customer's month in one currency, as the VOLUME rule sees it (the clock never leaves June). */
interface Period {
  bulk: bigint;
  /** The month's shortfalls not yet settled by a give-back (README: "it first settles the month's shortfalls"). */
  unpaid: bigint;
}
const periodOf = (model: Model, key: string): Period => {
  let period = model.periods.get(key);
  if (!period) model.periods.set(key, (period = { bulk: 0n, unpaid: 0n }));
  return period;
};

/** What makes two records the same (README: its JSON keys in any order, its customer by id or externalId). */
const recordOf = (event: UsageEvent) => JSON.stringify([event.customer, event.currency, Object.entries(event.quantities).sort()]);

/** A wallet's charges in one batch, posted together once the batch is priced. */
interface Group {
  attos: bigint;
  answers: Answer[];
}

/**
 * A new event, checked in the order it comes against what its wallet had at the start of the batch
 * less what the batch charged it so far: the customer pays what it can, down to its floor (minus
 * its overdraft limit, below what pending holds reserve), the carry counted; the rest is the
 * shortfall. A give-back of the VOLUME rule settles the month's shortfalls first.
 */
function chargeFresh(model: Model, event: UsageEvent, groups: Map<string, Group>): Answer {
  const key = wk(event.customer, event.currency);
  const wallet = walletOf(model, key);
  const period = periodOf(model, key);
  const group = groups.get(key) ?? { attos: 0n, answers: [] };
  groups.set(key, group);
  let price = BigInt(event.quantities.units ?? 0) * UNIT_ATTOS + BigInt(event.quantities.tiny ?? 0) * TINY_ATTOS;
  let settled = 0n;
  const bulk = BigInt(event.quantities.bulk ?? 0);
  if (bulk > 0n) {
    const line = volumePrice(period.bulk + bulk) - volumePrice(period.bulk);
    period.bulk += bulk;
    price += line;
    if (line < 0n) {
      // Only what was paid comes back: the month's unpaid usage is settled first, and charged here.
      settled = min(-line, period.unpaid);
      period.unpaid -= settled;
      price += settled;
    }
  }
  const answer: Answer = { status: 'CHARGED', charge: price, shortfall: 0n, settled, error: null, posted: false };
  if (price === 0n) answer.status = 'NOT_BILLABLE';
  else {
    const held = heldOf(model, key, now.getTime());
    const floor = -wallet.limit;
    const nanos = floorDiv(wallet.carry + group.attos + price, ATTOS_PER_NANO);
    if (price > 0n && nanos > 0n && wallet.balance - held - nanos < floor) {
      // Exactly what is left down to the floor: the whole nanos it takes leave nothing spendable.
      const charged = max(min((wallet.balance - held - floor) * ATTOS_PER_NANO - wallet.carry - group.attos, price), 0n);
      const owed = floorDiv(wallet.carry + group.attos, ATTOS_PER_NANO);
      answer.status = charged > 0n ? 'PARTIALLY_CHARGED' : 'UNCHARGED';
      answer.charge = charged;
      answer.shortfall = price - charged;
      answer.error = { required: (price + ATTOS_PER_NANO - 1n) / ATTOS_PER_NANO, available: wallet.balance - held - owed, currency: event.currency };
      period.unpaid += answer.shortfall;
    }
    group.attos += answer.charge;
    if (answer.status !== 'UNCHARGED') group.answers.push(answer);
  }
  return answer;
}

const floorDiv = (a: bigint, b: bigint) => (a >= 0n ? a / b : -((-a + b - 1n) / b));

/**
 * A batch's charges to each wallet: a net charge draws whole nanos from its own credit in the
 * merchant's order (what it lacks is owed) and carries the rest; a net give-back settles the carry
 * first and comes back, rounded up to a nano, as promotional credit that repays any debt first.
 */
function post(model: Model, groups: Map<string, Group>): void {
  for (const [key, group] of groups) {
    const wallet = walletOf(model, key);
    const heldNow = heldOf(model, key, now.getTime());
    const aboveFloor = wallet.balance - heldNow >= -wallet.limit;
    const posted = group.answers.length > 0;
    if (group.attos >= 0n) chargeAttos(model, wallet, group.attos);
    else {
      const beyond = -group.attos - wallet.carry;
      if (beyond <= 0n) {
        wallet.carry = -beyond;
        count('give-back under a nano (a transaction of 0)');
      } else {
        const nanos = (beyond + ATTOS_PER_NANO - 1n) / ATTOS_PER_NANO;
        wallet.carry = nanos * ATTOS_PER_NANO - beyond;
        count('volume credit');
        credit(model, wallet, { kind: 'PROMOTIONAL', amount: nanos, priority: 0, expiresAt: null }, now.getTime());
      }
    }
    for (const answer of group.answers) answer.posted = posted;
    // A batch never takes a wallet below its floor (only sub-nano amounts wait in the carry).
    if (aboveFloor) expect(wallet.balance - heldNow >= -wallet.limit, `oracle: ${key} stays above its floor`).toBe(true);
  }
}

type Expected = { replayed: boolean; answer: Answer; key: string } | { conflict: true };

/**
 * The answers to a batch (README: each event answers for itself, in order, against what its
 * customer has left; the same record again, in the batch or after it, answers its first result;
 * another record under a used key is a CONFLICT).
 */
function expectBatch(model: Model, events: UsageEvent[]): Expected[] {
  const expected: Expected[] = new Array(events.length);
  const fresh = new Map<string, Recorded>();
  const firstOfKey = new Map<string, number>();
  const later: [number, number][] = [];
  const answerOne = (event: UsageEvent, inBatch: Map<string, Recorded>, groups: Map<string, Group>): Expected => {
    const prior = model.events.get(event.key) ?? inBatch.get(event.key);
    if (prior) return recordOf(prior.event) === recordOf(event) ? { replayed: true, answer: prior.answer, key: event.key } : { conflict: true };
    const answer = chargeFresh(model, event, groups);
    inBatch.set(event.key, { event, answer, seen: null });
    return { replayed: false, answer, key: event.key };
  };
  const groups = new Map<string, Group>();
  events.forEach((event, index) => {
    const first = firstOfKey.get(event.key);
    if (first === undefined) firstOfKey.set(event.key, index);
    else if (events[first]!.customer !== event.customer) {
      // Another customer's key earlier in the batch: answered from that event once the batch is charged.
      later.push([index, first]);
      return;
    }
    expected[index] = answerOne(event, fresh, groups);
  });
  post(model, groups);
  for (const [key, recorded] of fresh) model.events.set(key, recorded);
  const again = new Map<string, Group>();
  for (const [index, first] of later) {
    // The first recorded something: this one is a key used twice in the batch. Else it goes on its own.
    expected[index] = 'conflict' in expected[first]! ? answerOne(events[index]!, model.events, again) : { conflict: true };
  }
  post(model, again);
  return expected;
}

// ------------------------------------------------------------------ requests

const OP = 'replayed transaction { id amount { amount currency } } grant { id kind remaining { amount currency } }';
const Q = {
  grant: `mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { ${OP} } }`,
  hold: `mutation ($input: CreateHoldInput!) { createHold(input: $input) { replayed hold { id status amount { amount currency } expiresAt } } }`,
  capture: `mutation ($id: ID!, $amount: Decimal) { captureHold(id: $id, amount: $amount) {
    replayed hold { id status capturedAmount { amount currency } } transaction { id amount { amount currency } } } }`,
  release: `mutation ($id: ID!) { releaseHold(id: $id) { id status } }`,
  overdraft: `mutation ($customerId: ID!, $currency: String, $limit: Decimal!) {
    setOverdraftLimit(customerId: $customerId, currency: $currency, limit: $limit) { currency overdraftLimit { amount currency } } }`,
  order: `mutation ($order: [CreditConsumptionKey!]!) { setCreditConsumptionOrder(order: $order) }`,
  usage: `mutation ($input: RecordUsageInput!) { recordUsage(input: $input) {
    replayed chargeError { code message } event { id idempotencyKey customerId status charge shortfall shortfallSettled currency ledgerTransactionId } } }`,
};
const EVENTS = `query ($after: String) { usageEvents(first: 100, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { idempotencyKey customerId currency status charge shortfall shortfallSettled } } } }`;

async function gql(model: Model, query: string, variables: Record<string, unknown>, line: string): Promise<{ data: any; code: string | null; raw: string }> {
  const response = await server.graphql<Record<string, any>>(query, variables, model.merchant.secret);
  const code = response.errors ? (response.errors[0]?.extensions.code ?? 'NONE') : null;
  const raw = JSON.stringify(response.errors ?? response.data);
  model.log.push(`${line} → ${raw}`);
  return { data: response.data ? Object.values(response.data)[0] : null, code, raw };
}

function wire(model: Model, event: UsageEvent): Record<string, unknown> {
  const customer = model.customers[event.customer]!;
  return { customer: event.byExternalId ? customer.externalId : customer.id, idempotencyKey: event.key, currency: event.currency, quantities: event.quantities };
}

// ------------------------------------------------------------------ checks

/** Every wallet of every customer, as the API shows it, against the model; and the books. */
async function checkAll(model: Model, label: string): Promise<void> {
  const at = now.getTime();
  for (const [customer, { id }] of model.customers.entries()) {
    const response = await server.graphql<{ wallets: any[] }>(WALLETS_QUERY, { id }, model.merchant.secret);
    expect(response.errors, `${label}: reading wallets`).toBeUndefined();
    const seen = new Set<string>();
    for (const view of response.data!.wallets) {
      const key = wk(customer, view.currency);
      seen.add(view.currency);
      const wallet = model.wallets.get(key);
      if (!wallet) throw new Error(`${label}: wallet ${key} exists but the model never touched it`);
      expectWalletView(model, wallet, key, view, `${label} ${key}`, at);
    }
    for (const [key, wallet] of model.wallets) {
      if (wallet.customer !== customer || seen.has(wallet.currency)) continue;
      // Not stored (nothing ever moved it): it must be empty in the model too.
      expect({ balance: wallet.balance, carry: wallet.carry, limit: wallet.limit, holds: model.holds.filter((h) => h.wallet === key).length }, `${label} ${key}: unstored wallet`)
        .toEqual({ balance: 0n, carry: 0n, limit: 0n, holds: 0 });
    }
  }
  // The sub-nano carry is not in the API: read from the table.
  const carries = await server.services.db.withConnection((sql) =>
    sql.query<{ customer_id: string; currency: string; carry: string }>(`SELECT customer_id, currency, fraction_carry::text AS carry FROM wallets WHERE merchant_id = $1`, [model.merchant.id]));
  const actualCarry = Object.fromEntries(carries.map((row) => [wk(model.customers.findIndex((c) => c.id === row.customer_id), row.currency.trim()), row.carry]));
  const expectedCarry = Object.fromEntries([...model.wallets].filter(([key]) => key in actualCarry).map(([key, wallet]) => [key, wallet.carry.toString()]));
  expect(actualCarry, `${label}: carries`).toEqual(expectedCarry);
  const report = await server.services.ledgerQueries.integrity(model.merchant.id);
  expect(report.violations, `${label}: ledger integrity`).toEqual([]);
}


/** At the end: every stored event is the one the model recorded, with its first answer's figures. */
async function checkEvents(model: Model): Promise<void> {
  const stored = new Map<string, string>();
  let after: string | null = null;
  for (;;) {
    const response: any = await server.graphql(EVENTS, { after }, model.merchant.secret);
    expect(response.errors).toBeUndefined();
    const page = response.data.usageEvents;
    for (const { node } of page.edges) {
      stored.set(node.idempotencyKey, `${node.customerId} ${node.currency} ${node.status} ${attosText(toAttos(node.charge))} short ${attosText(toAttos(node.shortfall))} settled ${attosText(toAttos(node.shortfallSettled))}`);
    }
    if (!page.pageInfo.hasNextPage) break;
    after = page.pageInfo.endCursor;
  }
  const expected = new Map([...model.events].map(([key, { event, answer }]) =>
    [key, `${model.customers[event.customer]!.id} ${event.currency} ${answer.status} ${attosText(answer.charge)} short ${attosText(answer.shortfall)} settled ${attosText(answer.settled)}`]));
  expect(Object.fromEntries(stored), 'stored usage events').toEqual(Object.fromEntries(expected));
}

// ------------------------------------------------------------------ usage

/** The answer as the model expects to read it, transport aside. */
function answerText(answer: Answer): Record<string, unknown> {
  return {
    status: answer.status, charge: attosText(answer.charge), shortfall: attosText(answer.shortfall), settled: attosText(answer.settled),
    error: answer.error ? `INSUFFICIENT_FUNDS: Insufficient credit: ${money(answer.error.required)} ${answer.error.currency} needed, ${money(answer.error.available)} available` : null,
  };
}

/** Compares a recorded event's answer (either transport) with the model's, and a replay with the first answer. */
function checkAnswer(model: Model, event: UsageEvent, expected: Extract<Expected, { key: string }>, got: { replayed: boolean; event: any; error: { code: string; message: string } | null }, line: string): void {
  expect(got.replayed, `${line}: replayed`).toBe(expected.replayed);
  expect({
    status: got.event.status, charge: attosText(toAttos(got.event.charge)), shortfall: attosText(toAttos(got.event.shortfall)), settled: attosText(toAttos(got.event.shortfallSettled)),
    error: got.error ? `${got.error.code}: ${got.error.message}` : null,
  }, line).toEqual(answerText(expected.answer));
  expect({ key: got.event.idempotencyKey, customer: got.event.customerId, currency: got.event.currency }, line)
    .toEqual({ key: event.key, customer: model.customers[model.events.get(event.key)!.event.customer]!.id, currency: event.currency });
  expect(got.event.ledgerTransactionId !== null, `${line}: a ledger transaction iff charged`).toBe(expected.answer.posted);
  // A replay answers what the first answer said (the event's id and transaction included).
  const recorded = model.events.get(event.key)!;
  const text = JSON.stringify([got.event.id, got.event.status, got.event.charge, got.event.shortfall, got.event.ledgerTransactionId, got.error?.message ?? null]);
  if (recorded.seen === null) recorded.seen = text;
  else expect(text, `${line}: as first answered`).toBe(recorded.seen);
}

/**
 * Sends batches at once (wallets disjoint, so any order of charging gives the same answers: a lane
 * charges batches that arrive while it is busy together, as one) and checks each answer.
 */
async function sendBatches(model: Model, batches: UsageEvent[][], label: string): Promise<void> {
  settleAll(model);
  const before = new Map([...model.wallets].map(([key, wallet]) => [key, wallet.balance - heldOf(model, key, now.getTime())]));
  const expectations = batches.map((events) => expectBatch(model, events));
  const bodies = await Promise.all(batches.map(async (events) => {
    const response = await fetch(`${server.url}/v1/usage/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${model.merchant.secret}` },
      body: JSON.stringify({ events: events.map((event) => wire(model, event)) }),
    });
    return { status: response.status, raw: await response.text() };
  }));
  const lines = batches.map((events, b) => {
    const line = `${label}${batches.length > 1 ? ` (at once, ${b})` : ''}: batch ${JSON.stringify(events.map((e) => [e.customer, e.currency, e.key.slice(0, 10), e.quantities, e.byExternalId ? 'ext' : 'id']))} → ${bodies[b]!.raw}`;
    model.log.push(line);
    return line;
  });
  batches.forEach((events, b) => checkBatch(model, events, expectations[b]!, bodies[b]!, lines[b]!));
  // None went below its floor.
  for (const [key, wallet] of model.wallets) {
    if ((before.get(key) ?? 0n) >= -wallet.limit) expect(wallet.balance - heldOf(model, key, now.getTime()) >= -wallet.limit, `${label}: ${key} above its floor`).toBe(true);
  }
}

function checkBatch(model: Model, events: UsageEvent[], expected: Expected[], { status, raw }: { status: number; raw: string }, line: string): void {
  expect(status, line).toBe(200);
  const body = JSON.parse(raw);
  expect(body.results.map((r: any) => r.index), line).toEqual(events.map((_e, index) => index));
  const conflicts = expected.filter((e) => 'conflict' in e).length;
  const replays = expected.filter((e) => !('conflict' in e) && e.replayed).length;
  expect(body.summary, line).toEqual({ received: events.length, ok: events.length - conflicts, failed: conflicts, replayed: replays });
  // The events of a wallet charged in this batch go in one ledger transaction; each wallet its own.
  const transactions = new Map<string, Set<string>>();
  events.forEach((event, index) => {
    const result = body.results[index];
    const want = expected[index]!;
    const at = `${line}\n  event ${index}`;
    if ('conflict' in want) {
      count('batch CONFLICT');
      expect({ ok: result.ok, code: result.error?.code, field: result.error?.field }, at).toEqual({ ok: false, code: 'CONFLICT', field: 'idempotencyKey' });
      return;
    }
    count(`batch ${want.replayed ? 'replay ' : ''}${want.answer.status}${want.answer.charge < 0n ? ' (a give-back)' : ''}${want.answer.settled > 0n ? ' (settling shortfalls)' : ''}`);
    expect(result.ok, at).toBe(true);
    const error = result.chargeError ? { code: result.chargeError.code, message: result.chargeError.message } : null;
    checkAnswer(model, event, want, { replayed: result.replayed, event: result.event, error }, at);
    if (want.answer.error) {
      // The details an app acts on: the event's price in whole nanos, and what the wallet had left.
      expect({ required: result.chargeError.required, available: result.chargeError.available, currency: result.chargeError.currency }, at)
        .toEqual({ required: money(want.answer.error.required), available: money(want.answer.error.available), currency: want.answer.error.currency });
    }
    if (!want.replayed && result.event.ledgerTransactionId) {
      const key = wk(event.customer, event.currency);
      transactions.set(key, (transactions.get(key) ?? new Set()).add(result.event.ledgerTransactionId));
    }
  });
  for (const [key, ids] of transactions) expect(ids.size, `${line}: one transaction for ${key}`).toBe(1);
  expect(new Set([...transactions.values()].flatMap((ids) => [...ids])).size, `${line}: a transaction per wallet`).toBe(transactions.size);
}

const sendBatch = (model: Model, events: UsageEvent[], label: string) => sendBatches(model, [events], label);

async function sendOne(model: Model, event: UsageEvent, label: string): Promise<void> {
  settleAll(model);
  const [want] = expectBatch(model, [event]);
  const { data, code } = await gql(model, Q.usage, { input: wire(model, event) }, `${label}: recordUsage ${JSON.stringify(wire(model, event))}`);
  const line = model.log[model.log.length - 1]!;
  if ('conflict' in want!) {
    count('recordUsage CONFLICT');
    expect(code, line).toBe('CONFLICT');
    return;
  }
  count(`recordUsage ${want!.replayed ? 'replay ' : ''}${want!.answer.status}`);
  expect(code, line).toBeNull();
  checkAnswer(model, event, want!, { replayed: data.replayed, event: data.event, error: data.chargeError }, line);
}

// ------------------------------------------------------------------ random steps

const ORDERS: Key[] = ['EXPIRY', 'KIND', 'PRIORITY', 'CREATED'];

function amountText(rng: Rng, maxCents: number): string {
  const nanos = rng.chance(0.1) ? BigInt(rng.int(1, 999_999)) : BigInt(rng.int(1, maxCents)) * 10_000_000n;
  return fmt(nanos);
}

function newEvent(model: Model, rng: Rng): UsageEvent {
  // Customer 0 in USD most often, so that its events meet in batches, run its credit out and overdraw it.
  const customer = rng.chance(0.4) ? 0 : rng.int(0, model.customers.length - 1);
  const currency = customer === 0 && rng.chance(0.5) ? 'USD' : rng.pick(CURRENCIES);
  const quantities: Record<string, number> = { units: rng.chance(0.05) ? 0 : rng.int(1, rng.pick([5, 30, 150])) };
  if (rng.chance(0.3)) quantities.tiny = rng.int(1, 9);
  if (rng.chance(0.3)) quantities.bulk = rng.int(1, 12);
  if (quantities.tiny !== undefined && rng.chance(0.15)) delete quantities.units;
  return { customer, byExternalId: rng.chance(0.3), key: `u-${randomUUID()}`, currency, quantities };
}

/** An earlier event again: the same record (perhaps naming its customer the other way), or another record under its key. */
function again(model: Model, rng: Rng, sameRecord: boolean): UsageEvent | null {
  if (model.events.size === 0) return null;
  const { event } = rng.pick([...model.events.values()]);
  if (sameRecord) return { ...event, byExternalId: rng.chance(0.5) };
  const other = newEvent(model, rng);
  if (recordOf({ ...other, key: event.key }) === recordOf(event)) other.quantities = { units: (event.quantities.units ?? 0) + 1 };
  return { ...other, key: event.key };
}

function batchOf(model: Model, rng: Rng): UsageEvent[] {
  const events: UsageEvent[] = [];
  const size = rng.int(1, 6);
  for (let i = 0; i < size; i++) {
    const roll = rng.next();
    let event: UsageEvent | null = null;
    if (roll < 0.1) event = again(model, rng, true);
    else if (roll < 0.14) event = again(model, rng, false);
    else if (roll < 0.22 && events.length > 0) {
      // A key already in this batch: the same record, another record of the same customer, or another customer's.
      const earlier = rng.pick(events);
      const how = rng.int(0, 2);
      if (how === 0) event = { ...earlier, byExternalId: rng.chance(0.5) };
      else if (how === 1) event = { ...earlier, quantities: { units: (earlier.quantities.units ?? 0) + 1 } };
      else event = { ...newEvent(model, rng), key: earlier.key };
    }
    events.push(event ?? newEvent(model, rng));
  }
  return events;
}

async function grant(model: Model, rng: Rng, label: string, customer: number, currency: string, expiresIn: number | null): Promise<void> {
  const key = wk(customer, currency);
  const kind = rng.pick(['PAID', 'PROMOTIONAL', 'PLAN_INCLUDED'] as const);
  const input: Record<string, unknown> = { customerId: model.customers[customer]!.id, currency, amount: amountText(rng, 1500), kind, idempotencyKey: `g-${randomUUID()}` };
  if (expiresIn !== null) input.expiresAt = new Date(now.getTime() + expiresIn * 1000).toISOString();
  if (rng.chance(0.5)) input.priority = rng.int(-2, 3);
  settle(model, key, now.getTime(), keptForHold);
  const { data, code, raw } = await gql(model, Q.grant, { input }, `${label}: grantCredits ${JSON.stringify(input)}`);
  expect(code, raw).toBeNull();
  expect({ replayed: data.replayed, amount: fmt(toNanos(data.transaction.amount.amount)) }, raw).toEqual({ replayed: false, amount: input.amount });
  credit(model, walletOf(model, key), { kind, amount: toNanos(input.amount as string), priority: (input.priority as number | undefined) ?? 0, expiresAt: input.expiresAt ? Date.parse(input.expiresAt as string) : null }, now.getTime());
}

async function placeHold(model: Model, rng: Rng, label: string, customer: number, currency: string): Promise<void> {
  const key = wk(customer, currency);
  settle(model, key, now.getTime(), keptForHold);
  const wallet = walletOf(model, key);
  const available = wallet.balance - heldOf(model, key, now.getTime());
  // Mostly within what is available (so that it is placed), sometimes beyond it.
  const amount = rng.chance(0.8) && available + wallet.limit > 1n ? BigInt(rng.int(1, 100)) * (available + wallet.limit) / 100n || 1n : toNanos(amountText(rng, 300));
  const ttlSeconds = rng.pick([30, 600, 3600, 7200]);
  const input = { customerId: model.customers[customer]!.id, currency, amount: fmt(amount), ttlSeconds, idempotencyKey: `h-${randomUUID()}` };
  const { data, code, raw } = await gql(model, Q.hold, { input }, `${label}: createHold ${JSON.stringify(input)}`);
  if (available - amount < -wallet.limit) {
    count('hold INSUFFICIENT_FUNDS');
    expect(code, raw).toBe('INSUFFICIENT_FUNDS');
    return;
  }
  count('hold placed');
  expect(code, raw).toBeNull();
  expect(fmt(toNanos(data.hold.amount.amount)), raw).toBe(fmt(amount));
  model.holds.push({ id: data.hold.id, key: input.idempotencyKey, wallet: key, amount, status: 'PENDING', captured: 0n, expiresAt: now.getTime() + ttlSeconds * 1000, seq: model.seq++, limitAtHold: wallet.limit });
}

async function finishHold(model: Model, rng: Rng, label: string): Promise<void> {
  const pending = model.holds.filter((h) => live(h, now.getTime()));
  if (pending.length === 0) return;
  const hold = rng.pick(pending);
  settle(model, hold.wallet, now.getTime(), keptForHold);
  const wallet = walletOf(model, hold.wallet);
  if (rng.chance(0.4)) {
    const { data, code, raw } = await gql(model, Q.release, { id: hold.id }, `${label}: releaseHold ${hold.id}`);
    expect({ code, status: data?.status }, raw).toEqual({ code: null, status: 'RELEASED' });
    hold.status = 'RELEASED';
    for (const grant of active(wallet).filter((g) => g.holdId === hold.id)) expire(wallet, grant);
    return;
  }
  const amount = rng.chance(0.5) ? hold.amount : BigInt(rng.int(0, 100)) * hold.amount / 100n;
  const available = wallet.balance - heldOf(model, hold.wallet, now.getTime());
  const { data, code, raw } = await gql(model, Q.capture, { id: hold.id, amount: fmt(amount) }, `${label}: captureHold ${hold.id} ${fmt(amount)}`);
  const kept = keptFor(wallet, hold.id);
  if (amount > 0n && amount > kept && available + hold.amount - amount < -max(hold.limitAtHold, wallet.limit)) {
    expect(code, raw).toBe('INSUFFICIENT_FUNDS');
    return;
  }
  expect(code, raw).toBeNull();
  expect(fmt(toNanos(data.hold.capturedAmount.amount)), raw).toBe(fmt(amount));
  capture(model, wallet, hold, amount);
}

async function advance(model: Model, rng: Rng, label: string, seconds: number): Promise<void> {
  now = new Date(now.getTime() + seconds * 1000);
  model.log.push(`${label}: advance ${seconds}s to ${now.toISOString()}`);
  if (rng.chance(0.3)) {
    await server.services.ledger.runExpiry();
    model.log.push(`${label}: runExpiry`);
  }
  settleAll(model);
}

async function randomStep(model: Model, rng: Rng, index: number): Promise<void> {
  const label = `#${index}`;
  const customer = rng.chance(0.5) ? 0 : rng.int(0, model.customers.length - 1);
  const currency = customer === 0 && rng.chance(0.5) ? 'USD' : rng.pick(CURRENCIES);
  const key = wk(customer, currency);
  const customerId = model.customers[customer]!.id;
  const roll = rng.next();
  if (roll < 0.22) return grant(model, rng, label, customer, currency, rng.chance(0.6) ? rng.pick([1, 60, 600, 1800, 3600, 7200]) : null);
  if (roll < 0.27) {
    // Credit about to run out under a hold that outlives it, then usage of that wallet: what the
    // hold lacks is kept for it, and no event may spend that.
    await grant(model, rng, label, customer, currency, 60);
    await placeHold(model, rng, `${label}'`, customer, currency);
    await advance(model, rng, `${label}''`, 61);
    await checkAll(model, `${label}'' (after the credit expired)`);
    const events = batchOf(model, rng).map((event) => (model.events.has(event.key) ? event : { ...event, customer, currency }));
    return sendBatch(model, events, `${label}'''`);
  }
  if (roll < 0.54) return sendBatch(model, batchOf(model, rng), label);
  if (roll < 0.62) {
    // Batches at once, each on its own customer's wallets (replays of earlier events aside).
    const batches = [0, 1, 2].slice(0, rng.int(2, 3)).map((owner) =>
      batchOf(model, rng).map((event) => (model.events.has(event.key) ? event : { ...event, customer: owner })));
    const keys = batches.map((events) => new Set(events.filter((e) => !model.events.has(e.key)).map((e) => e.key)));
    // A new key in two of them would make the answers depend on which is charged first.
    if (keys.some((set, i) => keys.some((other, j) => i !== j && [...set].some((key) => other.has(key))))) return;
    return sendBatches(model, batches, label);
  }
  if (roll < 0.7) {
    const event = (rng.chance(0.25) ? again(model, rng, rng.chance(0.6)) : null) ?? newEvent(model, rng);
    return sendOne(model, event, label);
  }
  if (roll < 0.75) {
    settle(model, key, now.getTime(), keptForHold);
    const limit = rng.pick(['0', '0', '0.5', '3', '10']);
    const { data, code, raw } = await gql(model, Q.overdraft, { customerId, currency, limit }, `${label}: setOverdraftLimit ${key} ${limit}`);
    expect(code, raw).toBeNull();
    expect(fmt(toNanos(data.overdraftLimit.amount)), raw).toBe(fmt(toNanos(limit)));
    walletOf(model, key).limit = toNanos(limit);
    return;
  }
  if (roll < 0.78) {
    const order = ORDERS.filter(() => rng.chance(0.6)).sort(() => rng.next() - 0.5);
    if (order.length === 0) order.push(rng.pick(ORDERS));
    const { data, code, raw } = await gql(model, Q.order, { order }, `${label}: setCreditConsumptionOrder ${order.join(',')}`);
    expect(code, raw).toBeNull();
    model.order = [...order, ...DEFAULT_ORDER.filter((k) => !order.includes(k))];
    expect(data, raw).toEqual(model.order);
    return;
  }
  if (roll < 0.86) return placeHold(model, rng, label, customer, currency);
  if (roll < 0.9) return finishHold(model, rng, label);
  return advance(model, rng, label, rng.pick([1, 30, 60, 600, 1800, 3600, 7200]));
}

async function runSequence(seed: number, steps: number): Promise<void> {
  now = new Date(START);
  const rng = seededRandom(seed);
  const merchant = await server.createMerchant(`Usage wallets ${seed}`);
  const since = new Date('2024-01-01T00:00:00Z');
  await server.services.meters.create(merchant.id, { key: 'units', name: 'Units', unit: 'unit', source: 'QUANTITY' });
  await server.services.meters.create(merchant.id, { key: 'tiny', name: 'Tiny units', unit: 'unit', source: 'QUANTITY' });
  await server.services.meters.create(merchant.id, { key: 'bulk', name: 'Bulk units', unit: 'unit', source: 'QUANTITY' });
  await server.services.priceRules.put(merchant.id, { name: 'units', type: 'FLAT', meterKey: 'units', config: { unitPrice: attosText(UNIT_ATTOS) }, effectiveFrom: since });
  await server.services.priceRules.put(merchant.id, { name: 'tiny', type: 'FLAT', meterKey: 'tiny', config: { unitPrice: decimalText(TINY_ATTOS, 18, 0) }, effectiveFrom: since });
  await server.services.priceRules.put(merchant.id, {
    name: 'bulk', type: 'VOLUME', meterKey: 'bulk', config: { tiers: [{ upTo: 20, unitPrice: '0.05' }, { upTo: null, unitPrice: '0.02' }] }, effectiveFrom: since,
  });
  const customers: Model['customers'] = [];
  for (let i = 0; i < 3; i++) {
    const externalId = `c${i}-${randomUUID()}`;
    customers.push({ id: (await server.services.customers.create(merchant.id, { externalId })).id, externalId });
  }
  const model: Model = { merchant, customers, wallets: new Map(), holds: [], order: [...DEFAULT_ORDER], seq: 0, events: new Map(), periods: new Map(), log: [] };
  try {
    for (let index = 0; index < steps; index++) {
      await randomStep(model, rng, index);
      await checkAll(model, `#${index} (after)`);
    }
    await checkEvents(model);
    lastLog = model.log;
  } catch (error) {
    (error as Error).message += `\n--- USAGE_WALLETS_SEED=${seed} (${steps} steps) ---\n${model.log.join('\n')}`;
    throw error;
  }
}

describe('usage charging wallets, against a model', () => {
  it('every event is charged from the right credit, down to its floor; every wallet matches after every step', async () => {
    const runs = Number(process.env.USAGE_WALLETS_RUNS ?? 3);
    const steps = Number(process.env.USAGE_WALLETS_STEPS ?? 40);
    const first = process.env.USAGE_WALLETS_SEED ? Number(process.env.USAGE_WALLETS_SEED) : Math.floor(Math.random() * 2 ** 31);
    for (let run = 0; run < (process.env.USAGE_WALLETS_SEED ? 1 : runs); run++) await runSequence(first + run, steps);
    if (process.env.USAGE_WALLETS_LOG) console.log(lastLog.join("\n"));
    if (process.env.USAGE_WALLETS_STATS) console.log([...stats].sort().map(([o, n]) => `${o}: ${n}`).join('\n'));
  }, 120_000);
});
