import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type GraphQLResponse, type TestServer } from './server.ts';

/**
 * Every Relay cursor connection of the API against a simple oracle.
 *
 * The data is made with many ties in the sort key (a fixed clock, batches, rows stamped alike),
 * and each connection is read whole once (pages of 100, the cap; the customers take two) for the
 * reference order, checked against the order its schema description documents (newest or oldest
 * first, ties broken by id the same way) and against the rows the database holds. Then, with
 * random filters:
 *  - a filter's rows are the reference's rows the filter admits, and totalCount their number;
 *  - walks forwards (first/after) and backwards (last/before) with random page sizes concatenate
 *    to exactly the filtered reference, no duplicate, no gap;
 *  - random mixes of both directions, starting anywhere (any row's cursor, even one the filter
 *    leaves out, works as after or before), get exactly the oracle's slice on every page, with
 *    hasNextPage (paging forwards) and hasPreviousPage (paging backwards) right, neither claiming
 *    rows before the start or after the end, and page cursors that are the rows' own cursors (an
 *    empty page: null, or the cursor it was given), each one the next request may send;
 *  - cursors that were never issued and sizes that are not sizes are a VALIDATION error naming the
 *    argument, never INTERNAL nor a 5xx; sizes above the maximum are capped at 100 rows.
 *
 * Knobs (environment): PAGINATION_FUZZ_SEED (replay), PAGINATION_FUZZ_RUNS (scales the run counts).
 */

const SEED = Number(process.env.PAGINATION_FUZZ_SEED ?? 20_260_301);
const RUNS = (n: number) => Math.max(1, Math.round(n * Number(process.env.PAGINATION_FUZZ_RUNS ?? 1)));
const MAX_PAGE = 100;

async function check<T>(name: string, arbitrary: fc.Arbitrary<T>, numRuns: number, property: (value: T) => Promise<void>): Promise<void> {
  const result = await fc.check(fc.asyncProperty(arbitrary, property), { seed: SEED, numRuns: RUNS(numRuns) });
  if (result.failed) {
    throw new Error(`${name}: failed with seed ${SEED} (replay: PAGINATION_FUZZ_SEED=${SEED}, path ${result.counterexamplePath})\n` + fc.defaultReportMessage(result) + `\n${result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)}`);
  }
}

// ------------------------------------------------------------------ the server and its data

let now = new Date('2026-03-01T10:00:00.000Z');
let server: TestServer;

const at = (base: Date, ms: number) => new Date(base.getTime() + ms);
const T = new Date('2026-03-01T10:00:00.000Z');
/** Times the ledger's rows are stamped with: each shared by many rows. */
const LEDGER_TIMES = [T, at(T, 1), at(T, 1000), at(T, 2 * 3600_000), at(T, 2 * 3600_000 + 5 * 60_000)];
const CUSTOMER_TIMES = [new Date('2026-01-10T08:00:00.000Z'), new Date('2026-01-10T08:00:00.001Z'), new Date('2026-01-10T08:00:01.000Z'), new Date('2026-01-11T08:00:00.000Z')];
const USAGE_TIMES = [new Date('2026-02-01T00:00:00.000Z'), new Date('2026-02-01T00:00:00.001Z'), new Date('2026-02-01T00:00:01.000Z'), new Date('2026-02-01T06:00:00.000Z')];

async function ok<T = any>(token: string, query: string, variables: Record<string, unknown> = {}): Promise<T> {
  const result = await server.graphql<T>(query, variables, token);
  expect(result.errors, `seed: ${query} ${JSON.stringify(variables)}`).toBeUndefined();
  return result.data!;
}

const world = {
  ledger: { secret: '', id: '', customers: [] as string[], sessions: new Map<string, string>() },
  customers: { secret: '', id: '' },
  usage: { secret: '', id: '', customers: [] as string[] },
  /** A customer of another merchant: filtering by it finds nothing. */
  foreignCustomer: '',
};

const GRANT = 'mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }';
const DEBIT = 'mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed } }';
const HOLD = 'mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }';

async function seedLedger(): Promise<void> {
  const m = await server.createMerchant('Ledger merchant');
  Object.assign(world.ledger, m);
  const s = m.secret;
  now = LEDGER_TIMES[0]!;
  const customers: string[] = [];
  for (const name of ['a', 'b', 'c']) {
    customers.push((await ok(s, 'mutation ($e: String!) { createCustomer(input: { externalId: $e }) { id } }', { e: `ledger-${name}` })).createCustomer.id);
  }
  world.ledger.customers = customers;
  const [a, b, c] = customers as [string, string, string];
  // One `now` for all: 30 grants of A (promotional ones expire in an hour), 4 each of B and C.
  const kinds = ['PAID', 'PROMOTIONAL', 'PLAN_INCLUDED'] as const;
  const grants = [
    ...Array.from({ length: 30 }, (_, i) => ({ customerId: a, amount: '1.00', kind: kinds[i % 3]!, idempotencyKey: `grant-a-${i}`, ...(i % 3 === 1 ? { expiresAt: at(T, 3600_000).toISOString() } : {}) })),
    ...Array.from({ length: 4 }, (_, i) => ({ customerId: b, amount: '2.00', kind: 'PAID', idempotencyKey: `grant-b-${i}` })),
    ...Array.from({ length: 4 }, (_, i) => ({ customerId: c, amount: '2.00', kind: 'PAID', idempotencyKey: `grant-c-${i}` })),
  ];
  for (const input of grants) await ok(s, GRANT, { input });

  now = LEDGER_TIMES[1]!;
  // Concurrent debits go in one ledger batch.
  await Promise.all([
    // 18.00 in all: every promotional grant and some others used up.
    ...Array.from({ length: 12 }, (_, i) => ok(s, DEBIT, { input: { customerId: a, amount: '1.50', idempotencyKey: `debit-a-${i}` } })),
    ...Array.from({ length: 2 }, (_, i) => ok(s, DEBIT, { input: { customerId: b, amount: '0.50', idempotencyKey: `debit-b-${i}` } })),
    ok(s, DEBIT, { input: { customerId: c, amount: '0.50', idempotencyKey: 'debit-c-0' } }),
  ]);
  for (const [customerId, amount, key] of [[a, '2', 'adjust-a-0'], [a, '2', 'adjust-a-1'], [a, '-0.5', 'adjust-a-2'], [a, '1', 'adjust-a-3'], [a, '-0.25', 'adjust-a-4'], [b, '1', 'adjust-b-0'], [b, '-0.1', 'adjust-b-1']]) {
    await ok(s, 'mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed } }', { input: { customerId, amount, idempotencyKey: key, reason: 'test' } });
  }
  for (const key of ['refund-a-0', 'refund-a-1']) {
    await ok(s, 'mutation ($input: RefundCreditsInput!) { refundCredits(input: $input) { replayed } }', { input: { customerId: a, amount: '0.25', idempotencyKey: key, reason: 'test' } });
  }

  now = LEDGER_TIMES[2]!;
  // Promotional credit that lapses, unspent, before the expiry run below.
  for (const [customerId, n] of [[a, 5], [b, 2]] as const) {
    for (let i = 0; i < n; i++) await ok(s, GRANT, { input: { customerId, amount: '0.30', kind: 'PROMOTIONAL', expiresAt: at(T, 1800_000).toISOString(), idempotencyKey: `promo-${customerId}-${i}` } });
  }
  // 30 holds of A with one `now`, a few of B; some captured in part, some released.
  const ttls = [60, 3600, 86_400];
  const holds: string[] = [];
  for (let i = 0; i < 30; i++) {
    holds.push((await ok(s, HOLD, { input: { customerId: a, amount: '0.10', ttlSeconds: ttls[i % 3], idempotencyKey: `hold-a-${i}` } })).createHold.hold.id);
  }
  for (let i = 0; i < 3; i++) await ok(s, HOLD, { input: { customerId: b, amount: '0.10', ttlSeconds: 86_400, idempotencyKey: `hold-b-${i}` } });
  for (const id of holds.filter((_, i) => i % 6 === 2)) await ok(s, 'mutation ($id: ID!) { captureHold(id: $id, amount: "0.05") { replayed } }', { id });
  for (const id of holds.filter((_, i) => i % 6 === 5)) await ok(s, 'mutation ($id: ID!) { releaseHold(id: $id) { id } }', { id });

  // Two hours on: one expiry run stamps every lapsed grant's EXPIRY transaction with one `now`.
  now = LEDGER_TIMES[3]!;
  await server.services.ledger.runExpiry();
  for (let i = 0; i < 4; i++) await ok(s, HOLD, { input: { customerId: a, amount: '0.10', ttlSeconds: 60, idempotencyKey: `hold-a-late-${i}` } });
  // Five minutes on: those four read as EXPIRED while still stored PENDING.
  now = LEDGER_TIMES[4]!;
  for (const customerId of customers) {
    world.ledger.sessions.set(customerId, (await ok(s, 'mutation ($id: ID!) { createCustomerSession(customerId: $id) { token } }', { id: customerId })).createCustomerSession.token);
  }
}

async function seedCustomers(): Promise<void> {
  const m = await server.createMerchant('Customers merchant');
  Object.assign(world.customers, m);
  const names = ['Alice', 'Bob', 'Carol', 'alicia', 'BOBBY', null];
  const ids: string[] = [];
  // More than one page of 100.
  for (let i = 0; i < 130; i++) {
    const name = names[i % names.length];
    // Neither the email nor the externalId holds the name: a search finds each by its own field.
    const email = i % 4 === 3 ? null : `customer${i}@example.com`;
    const customer = await server.services.customers.create(m.id, { externalId: `ext-${i}`, ...(name ? { name: `${name} ${i}` } : {}), ...(email ? { email } : {}) });
    ids.push(customer.id);
  }
  // Customers are stamped by the database, not the clock: give them a few shared creation times.
  for (const [t, time] of CUSTOMER_TIMES.entries()) {
    const group = ids.filter((_, i) => (i * 7) % CUSTOMER_TIMES.length === t);
    await server.services.db.withConnection((connection) => connection.query('UPDATE customers SET created_at = $1 WHERE id = ANY($2::uuid[])', [time, `{${group.join(',')}}`]));
  }
  for (const id of ids.filter((_, i) => i % 5 === 1)) await ok(m.secret, 'mutation ($id: ID!) { archiveCustomer(id: $id) { id } }', { id });
}

async function seedUsage(): Promise<void> {
  const m = await server.createMerchant('Usage merchant');
  Object.assign(world.usage, m);
  now = at(USAGE_TIMES[3]!, 0);
  const customers: string[] = [];
  for (const name of ['u1', 'u2', 'u3']) customers.push((await server.services.customers.create(m.id, { externalId: name })).id);
  world.usage.customers = customers;
  const batch = async (events: Record<string, unknown>[]) => {
    const response = await fetch(`${server.url}/v1/usage/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${m.secret}` },
      body: JSON.stringify({ events }),
    });
    const body = (await response.json()) as { summary: { ok: number } };
    expect(body.summary.ok, JSON.stringify(body).slice(0, 500)).toBe(events.length);
  };
  const usage = { provider: 'openai', model: 'pagination-test-model', inputTokens: 10, outputTokens: 5 };
  // A batch stamped at `now` (no timestamp) and at a second earlier; then late events, before them all.
  await batch(Array.from({ length: 50 }, (_, i) => ({ customer: customers[i % 3], idempotencyKey: `u-${i}`, usage, ...(i % 2 ? { timestamp: USAGE_TIMES[2]!.toISOString() } : {}) })));
  await batch(Array.from({ length: 40 }, (_, i) => ({ customer: customers[(i * 5) % 3], idempotencyKey: `u-late-${i}`, usage, timestamp: USAGE_TIMES[i % 2]!.toISOString() })));
  // Logged gateway calls (the gateway itself is tested elsewhere), with random ids and shared times.
  const outcomes = ['COMPLETED', 'REFUSED', 'UPSTREAM_ERROR', 'TIMEOUT', 'COMPLETED', 'CLIENT_ABORTED', 'UNREACHABLE'] as const;
  await server.services.prisma.gatewayRequest.createMany({
    data: Array.from({ length: 80 }, (_, i) => ({
      id: randomUUID(), merchantId: m.id, customerId: i % 4 === 3 ? null : customers[i % 3]!, provider: 'openai', method: 'POST', host: 'api.openai.com',
      path: '/v1/chat/completions', status: 200, outcome: outcomes[i % outcomes.length]!, latencyMs: i, createdAt: USAGE_TIMES[(i * 3) % USAGE_TIMES.length]!,
    })),
  });
}

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
  const other = await server.createMerchant('Other merchant');
  world.foreignCustomer = (await server.services.customers.create(other.id, { externalId: 'theirs' })).id;
  await seedLedger();
  await seedCustomers();
  await seedUsage();
  // Every read from here on runs at this one time: nothing lapses between two pages.
  now = LEDGER_TIMES[4]!;
}, 120_000);
afterAll(() => server?.close());

// ------------------------------------------------------------------ connections

interface Node {
  id: string;
  [field: string]: any;
}
interface PageInfo {
  hasNextPage: boolean;
  hasPreviousPage: boolean;
  startCursor: string | null;
  endCursor: string | null;
}
interface Page {
  edges: { cursor: string; node: Node }[];
  pageInfo: PageInfo;
  totalCount?: number;
  nodes?: { id: string }[];
}
interface PageArgs {
  first?: unknown;
  last?: unknown;
  after?: unknown;
  before?: unknown;
}

interface Connection<P> {
  name: string;
  /** As the schema's description of the field documents it. */
  order: 'newest first' | 'oldest first';
  time: 'createdAt' | 'occurredAt';
  counted: boolean;
  /** Random arguments (scope and filter). */
  params: fc.Arbitrary<P>;
  /** The arguments that list everything in the scope of `p`. */
  everything(p: P): P;
  /** A scope with many rows (and ties). */
  main: P;
  scope(p: P): string;
  /** The oracle: whether a row of the whole list is one the filter of `p` lists. */
  matches(node: Node, p: P): boolean;
  request(p: P, page: PageArgs): Promise<GraphQLResponse<any>>;
  select(data: any): Page | null | undefined;
  /** The ids the database holds in the scope of `p`, read apart from the API. */
  stored(p: P): Promise<string[]>;
}

const PAGE_FIELDS = 'pageInfo { hasNextPage hasPreviousPage startCursor endCursor }';
const PAGE_VARS = '$first: Int, $last: Int, $after: String, $before: String';
const PAGE_ARGS = 'first: $first, last: $last, after: $after, before: $before';

const KINDS = ['ADJUSTMENT', 'EXPIRY', 'GRANT', 'HOLD_CAPTURE', 'REFUND', 'USAGE'] as const;
const HOLD_STATUSES = ['CAPTURED', 'EXPIRED', 'PENDING', 'RELEASED'] as const;
const OUTCOMES = ['CLIENT_ABORTED', 'COMPLETED', 'REFUSED', 'TIMEOUT', 'UNREACHABLE', 'UPSTREAM_ERROR'] as const;

interface TransactionFilter {
  kinds?: string[];
  createdAfter?: string;
  createdBefore?: string;
  idempotencyKey?: string;
}

const maybe = <T,>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: undefined, freq: 2 });
/** Absent `odds` times out of `odds + 1`: a filter of many fields mostly sets one or two. */
const rarely = <T,>(arbitrary: fc.Arbitrary<T>, odds = 2) => fc.oneof({ weight: odds, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary });
const timeNear = (times: Date[]) => fc.tuple(fc.constantFrom(...times), fc.constantFrom(-1, 0, 0, 1)).map(([time, ms]) => at(time, ms).toISOString());

const ledgerKeys = [...Array.from({ length: 30 }, (_, i) => `grant-a-${i}`), 'grant-b-1', 'debit-a-3', 'debit-c-0', 'adjust-a-2', 'refund-a-1', 'adjust-b-0', 'no-such-key'];
const transactionFilter: fc.Arbitrary<TransactionFilter | undefined> = maybe(
  fc.record({
    kinds: rarely(fc.subarray([...KINDS], { minLength: 1 }), 1),
    createdAfter: rarely(timeNear(LEDGER_TIMES)),
    createdBefore: rarely(timeNear(LEDGER_TIMES)),
    // Keys are trimmed as the ledger trims them before storing.
    idempotencyKey: rarely(fc.tuple(fc.constantFrom(...ledgerKeys), fc.constantFrom('', ' ')).map(([key, pad]) => `${pad}${key}${pad}`), 3),
  }),
);

function transactionMatches(node: Node, filter: TransactionFilter | undefined): boolean {
  if (!filter) return true;
  const time = Date.parse(node.createdAt);
  return (
    (!filter.kinds || filter.kinds.includes(node.kind)) &&
    // createdAfter is inclusive, createdBefore exclusive: consecutive windows split the list.
    (!filter.createdAfter || time >= Date.parse(filter.createdAfter)) &&
    (!filter.createdBefore || time < Date.parse(filter.createdBefore)) &&
    (!filter.idempotencyKey || node.idempotencyKey === filter.idempotencyKey.trim())
  );
}

const caseOf = (id: string, upper: boolean) => (upper ? id.toUpperCase() : id);

type WalletParams<F> = { customer: number; session: boolean; filter: F };
function walletConnection<F>(
  name: string,
  field: string,
  spec: { order: Connection<unknown>['order']; args: string; vars: string; nodeFields: string; nodes: boolean; variables(f: F): Record<string, unknown>; filter: fc.Arbitrary<F>; all: F; matches(node: Node, f: F): boolean; stored(walletCustomer: string): Promise<string[]> },
): Connection<WalletParams<F>> {
  const query = `query ($c: ID!, ${PAGE_VARS}${spec.vars}) { wallet(customerId: $c) { ${field}(${PAGE_ARGS}${spec.args}) {
    totalCount ${spec.nodes ? 'nodes { id }' : ''} edges { cursor node { id createdAt ${spec.nodeFields} } } ${PAGE_FIELDS} } } }`;
  return {
    name,
    order: spec.order,
    time: 'createdAt',
    counted: true,
    params: fc.record({ customer: fc.constantFrom(0, 0, 0, 1, 2), session: fc.boolean(), filter: spec.filter }),
    everything: (p) => ({ ...p, filter: spec.all }),
    main: { customer: 0, session: false, filter: spec.all },
    scope: (p) => String(p.customer),
    matches: (node, p) => spec.matches(node, p.filter),
    request: (p, page) => {
      const customerId = world.ledger.customers[p.customer]!;
      // A customer's session token reads its own wallet as the secret key does.
      const token = p.session ? world.ledger.sessions.get(customerId)! : world.ledger.secret;
      return server.graphql(query, { c: customerId, ...page, ...spec.variables(p.filter) }, token);
    },
    select: (data) => data?.wallet?.[field],
    stored: (p) => spec.stored(world.ledger.customers[p.customer]!),
  };
}

const walletIdOf = async (customerId: string) => (await server.services.prisma.wallet.findFirstOrThrow({ where: { customerId, currency: 'USD' } })).id;

const CONNECTIONS: Connection<any>[] = [
  ((): Connection<{ customer?: number; upper: boolean; filter: TransactionFilter | undefined }> => {
    const query = `query ($c: ID, $filter: LedgerTransactionFilter, ${PAGE_VARS}) { ledgerTransactions(customerId: $c, filter: $filter, ${PAGE_ARGS}) {
      totalCount edges { cursor node { id createdAt customerId kind idempotencyKey } } ${PAGE_FIELDS} } }`;
    return {
      name: 'ledgerTransactions',
      order: 'newest first',
      time: 'createdAt',
      counted: true,
      params: fc.record({ customer: maybe(fc.constantFrom(0, 1, 2)), upper: fc.boolean(), filter: transactionFilter }),
      everything: () => ({ upper: false, filter: undefined }),
      main: { upper: false, filter: undefined },
      scope: () => 'all',
      matches: (node, p) => (p.customer === undefined || node.customerId === world.ledger.customers[p.customer]) && transactionMatches(node, p.filter),
      request: (p, page) =>
        server.graphql(query, { ...page, c: p.customer === undefined ? undefined : caseOf(world.ledger.customers[p.customer]!, p.upper), filter: p.filter }, world.ledger.secret),
      select: (data) => data?.ledgerTransactions,
      stored: async () => (await server.services.prisma.ledgerTransaction.findMany({ where: { merchantId: world.ledger.id }, select: { id: true } })).map((row) => row.id),
    };
  })(),
  walletConnection<TransactionFilter | undefined>('wallet.transactions', 'transactions', {
    order: 'newest first',
    args: ', filter: $filter',
    vars: ', $filter: LedgerTransactionFilter',
    nodeFields: 'kind idempotencyKey',
    nodes: false,
    variables: (filter) => ({ filter }),
    filter: transactionFilter,
    all: undefined,
    matches: transactionMatches,
    stored: async (customerId) => (await server.services.prisma.ledgerTransaction.findMany({ where: { customerId }, select: { id: true } })).map((row) => row.id),
  }),
  walletConnection<boolean | undefined>('wallet.grants', 'grants', {
    order: 'oldest first',
    args: ', includeInactive: $inactive',
    vars: ', $inactive: Boolean',
    nodeFields: 'remaining { amount } expiresAt expiredAt',
    nodes: true,
    variables: (includeInactive) => ({ inactive: includeInactive }),
    filter: maybe(fc.boolean()),
    all: true,
    // Live: neither used up nor expired (default); includeInactive lists those too.
    matches: (node, includeInactive) =>
      includeInactive === true || (Number(node.remaining.amount) > 0 && node.expiredAt === null && (node.expiresAt === null || Date.parse(node.expiresAt) > now.getTime())),
    stored: async (customerId) => (await server.services.prisma.creditGrant.findMany({ where: { walletId: await walletIdOf(customerId) }, select: { id: true } })).map((row) => row.id),
  }),
  walletConnection<string[] | undefined>('wallet.holds', 'holds', {
    order: 'newest first',
    args: ', status: $status',
    vars: ', $status: [HoldStatus!]',
    nodeFields: 'status expiresAt',
    nodes: true,
    variables: (status) => ({ status }),
    filter: maybe(fc.subarray([...HOLD_STATUSES], { minLength: 1 })),
    all: undefined,
    matches: (node, status) => !status || status.includes(node.status),
    stored: async (customerId) => (await server.services.prisma.hold.findMany({ where: { customerId }, select: { id: true } })).map((row) => row.id),
  }),
  ((): Connection<{ filter: Record<string, unknown> | undefined }> => {
    const query = `query ($filter: CustomerFilter, ${PAGE_VARS}) { customers(filter: $filter, ${PAGE_ARGS}) {
      totalCount edges { cursor node { id createdAt name email externalId archived } } ${PAGE_FIELDS} } }`;
    const filter = fc.record({
      status: rarely(fc.constantFrom('ACTIVE', 'ALL', 'ARCHIVED'), 1),
      search: rarely(fc.constantFrom('ali', 'BOB', 'ext-1', 'Example.COM', 'MER1', 'carol 2', 'nobody')),
      email: rarely(fc.constantFrom('customer0@example.com', 'customer1@example.com', 'customer3@example.com', 'customer102@example.com', 'nobody@example.com'), 5),
      externalIds: rarely(fc.subarray(['ext-0', 'ext-1', 'ext-5', 'ext-12', 'ext-33', 'ext-41', 'ext-79', 'ext-101', 'ext-129', 'ext-missing'], { minLength: 1 }), 4),
      createdAfter: rarely(timeNear(CUSTOMER_TIMES)),
      createdBefore: rarely(timeNear(CUSTOMER_TIMES)),
    });
    const includes = (text: unknown, part: string) => typeof text === 'string' && text.toLowerCase().includes(part.toLowerCase());
    return {
      name: 'customers',
      order: 'newest first',
      time: 'createdAt',
      counted: true,
      params: fc.record({ filter: maybe(filter) }),
      everything: () => ({ filter: { status: 'ALL' } }),
      main: { filter: { status: 'ALL' } },
      scope: () => 'all',
      matches: (node, { filter: f = {} }) => {
        const status = (f.status as string | undefined) ?? 'ACTIVE';
        const time = Date.parse(node.createdAt);
        return (
          (status === 'ALL' || node.archived === (status === 'ARCHIVED')) &&
          (f.search === undefined || includes(node.name, f.search as string) || includes(node.email, f.search as string) || includes(node.externalId, f.search as string)) &&
          (f.email === undefined || node.email === f.email) &&
          (f.externalIds === undefined || (f.externalIds as string[]).includes(node.externalId)) &&
          (f.createdAfter === undefined || time >= Date.parse(f.createdAfter as string)) &&
          (f.createdBefore === undefined || time < Date.parse(f.createdBefore as string))
        );
      },
      request: (p, page) => server.graphql(query, { ...page, filter: p.filter }, world.customers.secret),
      select: (data) => data?.customers,
      stored: async () => (await server.services.prisma.customer.findMany({ where: { merchantId: world.customers.id }, select: { id: true } })).map((row) => row.id),
    };
  })(),
  ((): Connection<{ customer?: number; upper: boolean }> => {
    const query = `query ($c: ID, ${PAGE_VARS}) { usageEvents(customerId: $c, ${PAGE_ARGS}) { edges { cursor node { id occurredAt customerId } } ${PAGE_FIELDS} } }`;
    const customerOf = (i: number) => (i < 3 ? world.usage.customers[i]! : world.foreignCustomer);
    return {
      name: 'usageEvents',
      order: 'newest first',
      time: 'occurredAt',
      counted: false,
      params: fc.record({ customer: maybe(fc.constantFrom(0, 1, 2, 3)), upper: fc.boolean() }),
      everything: () => ({ upper: false }),
      main: { upper: false },
      scope: () => 'all',
      matches: (node, p) => p.customer === undefined || node.customerId === customerOf(p.customer),
      request: (p, page) => server.graphql(query, { ...page, c: p.customer === undefined ? undefined : caseOf(customerOf(p.customer), p.upper) }, world.usage.secret),
      select: (data) => data?.usageEvents,
      stored: async () => (await server.services.prisma.usageEvent.findMany({ where: { merchantId: world.usage.id }, select: { id: true } })).map((row) => row.id),
    };
  })(),
  ((): Connection<{ customer?: number; outcome?: string }> => {
    const query = `query ($c: ID, $outcome: GatewayOutcome, ${PAGE_VARS}) { gatewayRequests(customerId: $c, outcome: $outcome, ${PAGE_ARGS}) {
      edges { cursor node { id createdAt customerId outcome } } ${PAGE_FIELDS} } }`;
    const customerOf = (i: number) => (i < 3 ? world.usage.customers[i]! : world.foreignCustomer);
    return {
      name: 'gatewayRequests',
      order: 'newest first',
      time: 'createdAt',
      counted: false,
      params: fc.record({ customer: maybe(fc.constantFrom(0, 1, 2, 3)), outcome: maybe(fc.constantFrom(...OUTCOMES)) }),
      everything: () => ({}),
      main: {},
      scope: () => 'all',
      matches: (node, p) => (p.customer === undefined || node.customerId === customerOf(p.customer)) && (p.outcome === undefined || node.outcome === p.outcome),
      request: (p, page) => server.graphql(query, { ...page, c: p.customer === undefined ? undefined : customerOf(p.customer), outcome: p.outcome }, world.usage.secret),
      select: (data) => data?.gatewayRequests,
      stored: async () => (await server.services.prisma.gatewayRequest.findMany({ where: { merchantId: world.usage.id }, select: { id: true } })).map((row) => row.id),
    };
  })(),
];

// ------------------------------------------------------------------ the oracle

interface Reference {
  /** The arguments it was read with. */
  all: unknown;
  nodes: Node[];
  cursors: string[];
  /** A cursor's place in the whole list. */
  place: Map<string, number>;
}
const references = new Map<string, Reference>();

async function fetchPage<P>(conn: Connection<P>, p: P, args: PageArgs): Promise<Page> {
  const result = await conn.request(p, args);
  expect(result.errors, `${conn.name} ${JSON.stringify({ p, args })}`).toBeUndefined();
  const page = conn.select(result.data);
  expect(page, `${conn.name}: no connection in ${JSON.stringify(result.data)}`).toBeTruthy();
  return page!;
}

/** The whole list of a scope, read once in pages of 100 (the most a page holds), and checked against the documented order and the database. */
async function reference<P>(conn: Connection<P>, p: P): Promise<Reference> {
  const key = `${conn.name}/${conn.scope(p)}`;
  const known = references.get(key);
  if (known) return known;
  const all = conn.everything(p);
  const readAll = async () => {
    const edges: Page['edges'] = [];
    const totals: (number | undefined)[] = [];
    for (let after: string | null = null; ; ) {
      const page: Page = await fetchPage(conn, all, { first: MAX_PAGE, after });
      if (after === null) expect(page.pageInfo.hasPreviousPage).toBe(false);
      edges.push(...page.edges);
      totals.push(page.totalCount);
      if (!page.pageInfo.hasNextPage) return { edges, totals };
      // Only a full page has more after it.
      expect(page.edges.length, `${key}: a page with more after it`).toBe(MAX_PAGE);
      after = page.pageInfo.endCursor;
      expect(edges.length, `${key}: a list that does not end`).toBeLessThan(1000);
    }
  };
  const page = await readAll();
  const nodes = page.edges.map((edge) => edge.node);
  const cursors = page.edges.map((edge) => edge.cursor);
  // totalCount: the whole list's, on every page of it.
  if (conn.counted) expect(page.totals, `${key}: totalCount`).toEqual(page.totals.map(() => nodes.length));
  // The rows the database holds, each once.
  expect(new Set(nodes.map((node) => node.id)).size).toBe(nodes.length);
  expect(nodes.map((node) => node.id).sort(), `${key}: rows listed vs stored`).toEqual((await conn.stored(all)).sort());
  expect(new Set(cursors).size, `${key}: cursors are unique`).toBe(cursors.length);
  // The documented order, ties in one stable order (by id, the same way as time).
  const sign = conn.order === 'newest first' ? -1 : 1;
  for (let i = 1; i < nodes.length; i++) {
    const [a, b] = [nodes[i - 1]!, nodes[i]!];
    const dt = Math.sign(Date.parse(b[conn.time]) - Date.parse(a[conn.time]));
    const ordered = dt === sign || (dt === 0 && Math.sign(b.id < a.id ? -1 : 1) === sign);
    expect(ordered, `${key}: ${conn.order}, ties by id: row ${i - 1} ${a[conn.time]} ${a.id} then ${b[conn.time]} ${b.id}`).toBe(true);
  }
  // Read again: the same rows in the same order, with the same cursors.
  expect((await readAll()).edges).toEqual(page.edges);
  const ref = { all, nodes, cursors, place: new Map(cursors.map((cursor, i) => [cursor, i])) };
  references.set(key, ref);
  return ref;
}

interface Expected {
  ref: Reference;
  /** Places (in the whole list) of the rows the filter admits, in order. */
  rows: number[];
}

async function expected<P>(conn: Connection<P>, p: P): Promise<Expected> {
  const ref = await reference(conn, p);
  return { ref, rows: ref.nodes.flatMap((node, i) => (conn.matches(node, p) ? [i] : [])) };
}

/**
 * Fetches one page and checks it against the oracle: the rows the filter admits strictly between
 * `after` and `before` (their places in the whole list), the first or last `size` of them (at most
 * 100); pageInfo right in the direction of travel and never claiming rows beyond an end.
 */
async function checkedPage<P>(conn: Connection<P>, p: P, e: Expected, args: { first?: number; last?: number; after?: string | null; before?: string | null }): Promise<Page> {
  const label = `${conn.name} ${JSON.stringify(p)} ${JSON.stringify(args)}`;
  const placeOf = (cursor: string) => {
    const place = e.ref.place.get(cursor);
    expect(place, `${label}: a cursor this connection issued`).toBeDefined();
    return place!;
  };
  const lo = args.after == null ? 0 : placeOf(args.after) + 1;
  const hi = args.before == null ? e.ref.nodes.length : placeOf(args.before);
  const between = e.rows.filter((i) => i >= lo && i < hi);
  const forwards = args.first != null;
  const size = Math.min(forwards ? args.first! : args.last!, MAX_PAGE);
  const want = forwards ? between.slice(0, size) : between.slice(Math.max(0, between.length - size));
  const page = await fetchPage(conn, p, args);
  const got = page.edges.map((edge) => edge.node.id);
  expect(got, label).toEqual(want.map((i) => e.ref.nodes[i]!.id));
  // A row's cursor is the same on every page it is on.
  expect(page.edges.map((edge) => edge.cursor), `${label}: cursors`).toEqual(want.map((i) => e.ref.cursors[i]));
  if (page.nodes) expect(page.nodes.map((node) => node.id), `${label}: nodes`).toEqual(got);
  if (conn.counted) expect(page.totalCount, `${label}: totalCount`).toBe(e.rows.length);
  const { hasNextPage, hasPreviousPage, startCursor, endCursor } = page.pageInfo;
  if (forwards) expect(hasNextPage, `${label}: hasNextPage`).toBe(between.length > want.length);
  else expect(hasPreviousPage, `${label}: hasPreviousPage`).toBe(between.length > want.length);
  // The other side, as Relay has it: paging forwards from `after`, hasPreviousPage may say whether
  // anything lies before it (here: always true); from the start of the list, nothing does.
  // Likewise hasNextPage paging backwards.
  if (forwards && args.after == null) expect(hasPreviousPage, `${label}: hasPreviousPage at the start`).toBe(false);
  if (!forwards && args.before == null) expect(hasNextPage, `${label}: hasNextPage at the end`).toBe(false);
  if (want.length) {
    expect(startCursor, `${label}: startCursor`).toBe(page.edges[0]!.cursor);
    expect(endCursor, `${label}: endCursor`).toBe(page.edges.at(-1)!.cursor);
  } else {
    // An empty page has no cursor of its own: null, or a cursor it was given back. Either is
    // one a client may send next as after or before.
    for (const cursor of [startCursor, endCursor]) {
      expect(cursor === null || cursor === args.after || cursor === args.before, `${label}: an empty page's cursor ${JSON.stringify(cursor)}`).toBe(true);
    }
  }
  return page;
}

// ------------------------------------------------------------------ properties

const pageSize = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 15 }) }, { weight: 1, arbitrary: fc.constantFrom(0, 1, 2, 99, 100, 101, 500) });
type Start = { kind: 'first' | 'last' } | { kind: 'after' | 'before'; at: number };
const start: fc.Arbitrary<Start> = fc.oneof(
  fc.record({ kind: fc.constantFrom('first' as const, 'last' as const) }),
  fc.record({ kind: fc.constantFrom('after' as const, 'before' as const), at: fc.nat(10_000) }),
);

const b64 = (text: string) => Buffer.from(text).toString('base64url');
const someId = '0192f4a8-7b1c-7000-8000-000000000001';

for (const conn of CONNECTIONS) {
  describe(`${conn.name} (${conn.order})`, () => {
    it('reads whole in the documented order, ties broken stably, and the filters are the oracle', async () => {
      const ref = await reference(conn, conn.main);
      // Enough ties to matter: a time shared by at least five rows.
      const perTime = new Map<string, number>();
      for (const node of ref.nodes) perTime.set(node[conn.time], (perTime.get(node[conn.time]) ?? 0) + 1);
      expect(Math.max(...perTime.values()), `${conn.name}: rows per time ${JSON.stringify([...perTime])}`).toBeGreaterThanOrEqual(5);
      await check(`${conn.name} filters`, conn.params, 40, async (p) => {
        const e = await expected(conn, p);
        await checkedPage(conn, p, e, { first: MAX_PAGE });
      });
    });

    it('walks forwards and backwards to exactly the filtered list, with random page sizes', async () => {
      await check(`${conn.name} walks`, fc.tuple(conn.params, fc.array(pageSize, { minLength: 1, maxLength: 8 }), fc.boolean()), 8, async ([p, sizes, forwards]) => {
        const e = await expected(conn, p);
        // At most about a dozen pages.
        const floor = Math.ceil(e.rows.length / 12);
        const collected: string[] = [];
        let cursor: string | null = null;
        for (let step = 0; ; step++) {
          const size = Math.max(sizes[step % sizes.length]!, floor, 1);
          const page: Page = forwards ? await checkedPage(conn, p, e, { first: size, after: cursor }) : await checkedPage(conn, p, e, { last: size, before: cursor });
          const ids = page.edges.map((edge) => edge.node.id);
          if (forwards) collected.push(...ids);
          else collected.unshift(...ids);
          const more = forwards ? page.pageInfo.hasNextPage : page.pageInfo.hasPreviousPage;
          if (!more) break;
          cursor = forwards ? page.pageInfo.endCursor : page.pageInfo.startCursor;
          expect(step, 'a walk that does not end').toBeLessThan(200);
        }
        expect(collected).toEqual(e.rows.map((i) => e.ref.nodes[i]!.id));
      });
    });

    it('mixes directions from any starting row: every page is the slice the oracle gives', async () => {
      const plan = fc.record({ p: conn.params, start, first: pageSize, steps: fc.array(fc.tuple(fc.boolean(), pageSize), { minLength: 1, maxLength: 6 }), window: fc.tuple(fc.nat(10_000), fc.nat(10_000)) });
      await check(`${conn.name} mixed walks`, plan, 10, async ({ p, start, first, steps, window }) => {
        const e = await expected(conn, p);
        const all = e.ref.cursors;
        // Any row's cursor, the filter's or not.
        const anchor = 'at' in start && all.length ? all[start.at % all.length]! : null;
        const page =
          start.kind === 'first' ? await checkedPage(conn, p, e, { first })
          : start.kind === 'last' ? await checkedPage(conn, p, e, { last: first })
          : start.kind === 'after' ? await checkedPage(conn, p, e, { first, after: anchor })
          : await checkedPage(conn, p, e, { last: first, before: anchor });
        let { startCursor, endCursor } = page.pageInfo;
        for (const [forwards, size] of steps) {
          if (forwards) endCursor = (await checkedPage(conn, p, e, { first: size, after: endCursor })).pageInfo.endCursor;
          else startCursor = (await checkedPage(conn, p, e, { last: size, before: startCursor })).pageInfo.startCursor;
        }
        // A window between two cursors, from either end.
        if (all.length >= 2) {
          const [i, j] = window.map((w) => w % all.length).sort((x, y) => x - y) as [number, number];
          await checkedPage(conn, p, e, { first, after: all[i], before: all[j] });
          await checkedPage(conn, p, e, { last: first, after: all[i], before: all[j] });
        }
      });
    });

    it('refuses cursors it never issued and sizes that are not sizes as VALIDATION, never INTERNAL', async () => {
      const ref = await reference(conn, conn.main);
      const real = ref.cursors[0] ?? b64(`2026-03-01T10:00:00.000Z|${someId}`);
      const [iso, id] = Buffer.from(real, 'base64url').toString('utf8').split('|') as [string, string];
      const refused = async (p: unknown, args: PageArgs, which: string) => {
        const result = await conn.request(p, args);
        const label = `${conn.name} ${JSON.stringify(args)}`;
        expect(result.status, label).toBeLessThan(500);
        expect(result.errors?.[0]?.extensions, label).toMatchObject({ code: 'VALIDATION', field: which });
        expect(conn.select(result.data) ?? null, label).toBeNull();
      };
      // Made to look issued, each once: the wrong parts, a time not as toISOString writes it, and
      // the base64 of a real cursor with what a decoder skips (not what this API wrote).
      const crafted = [
        '',
        'null',
        b64(`${iso}|not-a-uuid`),
        b64(`${iso}|${id}|x`),
        b64(`${iso}`),
        b64(`${iso}|`),
        b64(`|${id}`),
        b64(`${iso.slice(0, 10)}|${id}`),
        b64(`2026-02-30T00:00:00.000Z|${id}`),
        b64(`2026-13-01T00:00:00.000Z|${id}`),
        b64(`+010000-01-01T00:00:00.000Z|${id}`),
        b64(`${iso.replace('Z', '+00:00')}|${id}`),
        b64(`${Date.parse(iso)}|${id}`),
        b64(`${iso}|${id.slice(0, -1)}`),
        b64(`${iso}|${id}\u0000`),
        b64('OffsetConnection:3'),
        `${real}|`,
        `${real}=`,
        ` ${real}`,
        `${real.slice(0, 10)}\n${real.slice(10)}`,
      ];
      for (const [i, cursor] of crafted.entries()) {
        const which = i % 2 ? 'before' : 'after';
        await refused(conn.main, { [which]: cursor, [i % 3 ? 'first' : 'last']: i % 4 }, which);
      }
      const badCursor = fc.oneof(
        fc.string({ maxLength: 40 }),
        fc.string({ maxLength: 40, unit: 'grapheme' }).map(b64),
        // A real cursor with a character no base64 has, or padding, put in anywhere.
        fc.tuple(fc.constantFrom(...ref.cursors.slice(0, 20), real), fc.nat(200), fc.constantFrom('|', '!', '=', ' ', '.', '\t', '\u00e9')).map(([cursor, at, junk]) => {
          const place = at % (cursor.length + 1);
          return cursor.slice(0, place) + junk + cursor.slice(place);
        }),
      );
      await check(`${conn.name} bad cursors`, fc.tuple(conn.params, badCursor, fc.constantFrom('after', 'before'), fc.boolean(), fc.integer({ min: 0, max: 20 })), 10, async ([p, cursor, which, forwards, size]) => {
        fc.pre(!ref.place.has(cursor));
        await refused(p, { [which]: cursor, [forwards ? 'first' : 'last']: size }, which);
      });
      const badSize = fc.oneof(fc.integer({ min: -(2 ** 31), max: -1 }), fc.constantFrom(2 ** 31, -(2 ** 31) - 1, 1e12, 1.5, -0.5, '10', 'ten', true, [10]));
      await check(`${conn.name} bad sizes`, fc.tuple(conn.params, badSize, fc.constantFrom('first', 'last')), 10, async ([p, size, which]) => {
        await refused(p, { [which]: size }, which);
      });
    });
  });
}

describe('the data stays put', () => {
  it('every list reads the same after all the walks', async () => {
    for (const conn of CONNECTIONS) {
      for (const [key, ref] of references) {
        if (!key.startsWith(`${conn.name}/`)) continue;
        const page = await fetchPage(conn, ref.all, { first: MAX_PAGE });
        expect(page.edges.map((edge) => edge.cursor), key).toEqual(ref.cursors.slice(0, MAX_PAGE));
      }
    }
  });
});
