import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { atOrAfter, earlierThan, parseIsoTime } from '../src/shared/times.ts';
import { formatAttos, parseDecimalAttos, parseDecimalNanos } from '../src/shared/money.ts';
import { SYSTEM_ACTOR } from '../src/modules/ledger/ledger.store.ts';
import { testServerWithMerchant, type TestServer } from './server.ts';

/**
 * Edges of the read side (list queries, their filters, counts and nested fields) that the
 * pagination fuzz and the tenant-isolation matrices do not reach.
 */

/** A clock that stands still: rows made in this file share one millisecond unless it is moved. */
let now = new Date('2026-07-01T09:00:00.000Z');
let server: TestServer;
let merchant: { id: string; secret: string };
const { start, close, gql, newCustomer } = testServerWithMerchant({}, { clock: () => now });

async function ok(query: string, variables: Record<string, unknown> = {}, token = merchant.secret) {
  const result = await gql(query, variables, token);
  expect(result.errors, query).toBeUndefined();
  return result.data;
}

const GRANT = 'mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }';
const DEBIT = 'mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed } }';

beforeAll(async () => ({ server, merchant } = await start()));
afterAll(close);

describe('LedgerTransaction.entries', () => {
  it('a page of transactions with their entries reads the legs in one query, each transaction its own legs', async () => {
    const customerId = await newCustomer();
    await ok(GRANT, { input: { customerId, amount: '100', kind: 'PAID', idempotencyKey: `grant-${randomUUID()}` } });
    // Two grants spent by one debit: a transaction with its legs in ledger_entries, beside two-leg ones.
    await ok(GRANT, { input: { customerId, amount: '0.25', kind: 'PROMOTIONAL', idempotencyKey: `grant-${randomUUID()}` } });
    for (let i = 0; i < 30; i++) await ok(DEBIT, { input: { customerId, amount: `0.${String(i + 1).padStart(2, '0')}`, idempotencyKey: `debit-${randomUUID()}` } });

    const reads = vi.spyOn(server.services.db, 'withConnection');
    let page;
    try {
      page = await ok('query ($c: ID) { ledgerTransactions(customerId: $c, first: 40) { edges { node { id amount { amount } entries { id walletId accountId amount { amount } } } } } }', { c: customerId });
      // One for all the page's legs (the page itself is read through Prisma).
      expect(reads).toHaveBeenCalledTimes(1);
    } finally {
      reads.mockRestore();
    }
    const nodes = page.ledgerTransactions.edges.map((edge: { node: unknown }) => edge.node);
    expect(nodes).toHaveLength(32);
    // The debit that spent the rest of the promotional grant has a leg per grant and one for revenue.
    expect(nodes.filter((node: { entries: unknown[] }) => node.entries.length > 2)).toHaveLength(1);
    for (const node of nodes) {
      // Each transaction's own legs: ids name it, they sum to zero, and its wallet legs are its amount.
      expect(node.entries.length).toBeGreaterThanOrEqual(2);
      expect(node.entries.every((entry: { id: string }) => entry.id.startsWith(`${node.id}:`))).toBe(true);
      const nanos = (amount: string) => BigInt(Math.round(Number(amount) * 1e9));
      expect(node.entries.reduce((sum: bigint, entry: { amount: { amount: string } }) => sum + nanos(entry.amount.amount), 0n)).toBe(0n);
      const walletLegs = node.entries.filter((entry: { walletId: string | null }) => entry.walletId !== null);
      expect(walletLegs.reduce((sum: bigint, entry: { amount: { amount: string } }) => sum + nanos(entry.amount.amount), 0n)).toBe(nanos(node.amount.amount));
    }
    // The same legs, in the same order, as one transaction read alone.
    const alone = await server.services.ledgerQueries.entries(merchant.id, nodes[0].id);
    expect(alone.map((entry) => `${entry.transactionId}:${entry.leg}`)).toEqual(nodes[0].entries.map((entry: { id: string }) => entry.id));
  });
});

describe("a wallet's holds beside its held", () => {
  it('lists as pending exactly the holds `held` counts, even when one runs out between the two reads', async () => {
    const customerId = await newCustomer();
    await ok(GRANT, { input: { customerId, amount: '10', kind: 'PAID', idempotencyKey: `grant-${randomUUID()}` } });
    const start = now;
    await ok('mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }', { input: { customerId, amount: '1.25', ttlSeconds: 60, idempotencyKey: `hold-${randomUUID()}` } });
    // The wallet is read a millisecond before the hold runs out; its holds are read once it has.
    now = new Date(start.getTime() + 60_000 - 1);
    const queries = server.services.ledgerQueries as unknown as { view: (...args: unknown[]) => Promise<unknown> };
    const view = queries.view.bind(queries);
    const spy = vi.spyOn(queries, 'view').mockImplementation(async (...args) => {
      const read = await view(...args);
      now = new Date(start.getTime() + 60_000);
      return read;
    });
    let wallet;
    try {
      wallet = (await ok(`query ($c: ID!) { wallet(customerId: $c) { held { amount } available { amount }
        pending: holds(status: [PENDING]) { totalCount nodes { amount { amount } status } }
        expired: holds(status: [EXPIRED]) { totalCount } } }`, { c: customerId })).wallet;
    } finally {
      spy.mockRestore();
      now = start;
    }
    expect(wallet.held.amount).toBe('1.25');
    expect(wallet.available.amount).toBe('8.75');
    expect(wallet.pending).toEqual({ totalCount: 1, nodes: [{ amount: { amount: '1.25' }, status: 'PENDING' }] });
    expect(wallet.expired.totalCount).toBe(0);
  });
});

// A page of customers read its spend limits (and each limit its month's spend) one query per customer; `first` with `last` ignored
// `last` without a word; and a DateTime filter bound finer than a millisecond was cut to its
// millisecond, so rows on the wrong side of it matched.

describe('Customer.spendLimits', () => {
  const PAGE = '{ customers(first: 100) { edges { node { id spendLimits { customerId limit { amount currency } } } } } }';

  it("a page of customers reads their limits in one query, each customer its own and only its merchant's", async () => {
    const owner = await server.createMerchant('Limits owner');
    const other = await server.createMerchant('Limits other');
    const limits = new Map<string, string[]>();
    // Twelve customers: none, one or two limits each, in an order the page does not share.
    for (let i = 0; i < 12; i++) {
      const customerId = await newCustomer(owner.id);
      const currencies = [[], ['USD'], ['USD', 'EUR']][i % 3]!;
      for (const [k, currency] of currencies.entries()) {
        await server.services.spendLimits.set(owner.id, { customerId, amount: `${i + 1}.${k + 1}0`, currency });
      }
      // Listed by currency.
      limits.set(customerId, [...currencies].sort().map((currency) => `${currency} ${i + 1}.${currencies.indexOf(currency) + 1}0`));
    }
    // Another merchant's customers with limits of their own, read in the same tick below.
    const othersCustomer = await newCustomer(other.id);
    await server.services.spendLimits.set(other.id, { customerId: othersCustomer, amount: '99.50', currency: 'USD' });

    const reads = vi.spyOn(server.services.prisma.spendLimit, 'findMany');
    let pages;
    try {
      const alone = await gql(PAGE, {}, owner.secret);
      expect(alone.errors).toBeUndefined();
      expect(alone.data.customers.edges).toHaveLength(12);
      expect(reads).toHaveBeenCalledTimes(1);
      reads.mockClear();
      pages = await Promise.all([gql(PAGE, {}, owner.secret), gql(PAGE, {}, other.secret)]);
      // One for each merchant's page at most (two requests may land in one tick, or not).
      expect(reads.mock.calls.length).toBeGreaterThanOrEqual(1);
      expect(reads.mock.calls.length).toBeLessThanOrEqual(2);
    } finally {
      reads.mockRestore();
    }
    const [mine, theirs] = pages;
    expect(mine.errors).toBeUndefined();
    expect(theirs.errors).toBeUndefined();
    const shown = (page: any) =>
      Object.fromEntries(
        page.data.customers.edges.map(({ node }: any) => {
          for (const limit of node.spendLimits) expect(limit.customerId).toBe(node.id);
          return [node.id, node.spendLimits.map((limit: any) => `${limit.limit.currency} ${limit.limit.amount}`)];
        }),
      );
    expect(shown(mine)).toEqual(Object.fromEntries(limits));
    expect(shown(theirs)).toEqual({ [othersCustomer]: ['USD 99.50'] });
  });

  it("spentThisMonth of a page of customers' limits is read in one query, each limit its own customer's month in its own currency", async () => {
    const owner = await server.createMerchant('Spend owner');
    const { services } = server;
    await services.meters.create(owner.id, { key: 'calls', name: 'Calls', unit: 'call', source: 'REQUESTS' });
    await services.priceRules.put(owner.id, { name: 'calls', type: 'FLAT', meterKey: 'calls', config: { unitPrice: '1.25' }, effectiveFrom: new Date('2024-01-01T00:00:00Z') });
    const unit = parseDecimalAttos('price', '1.25');
    const expected = new Map<string, string[]>();
    for (let i = 0; i < 4; i++) {
      const customerId = await newCustomer(owner.id);
      const calls = { USD: i, EUR: 2 * i + 1 };
      for (const [currency, count] of Object.entries(calls)) {
        await services.ledger.grantCredits(owner.id, SYSTEM_ACTOR, { customerId, currency, amountNanos: parseDecimalNanos('amount', '100'), kind: 'PAID', idempotencyKey: `seed-${customerId}-${currency}` });
        await services.spendLimits.set(owner.id, { customerId, amount: '50', currency });
        // `count` calls this month, and one last month that the month's spend leaves out.
        const at = [...Array.from({ length: count }, () => new Date(now.getTime() - 3_600_000)), new Date('2026-06-30T23:00:00.000Z')];
        const results = await services.usage.record(owner.id, SYSTEM_ACTOR, at.map((timestamp) => ({ customer: customerId, currency, idempotencyKey: randomUUID(), usage: { provider: 'custom', model: 'm', requests: 1 }, timestamp })));
        expect(results.every((result) => result.ok)).toBe(true);
      }
      expected.set(customerId, [`EUR ${formatAttos(unit * BigInt(calls.EUR))}`, `USD ${formatAttos(unit * BigInt(calls.USD))}`]);
    }
    // Eight limits (within the complexity limit: each sum is costed as a page), one query.
    const sums = [vi.spyOn(server.services.prisma.usageEvent, 'groupBy'), vi.spyOn(server.services.prisma.usageEvent, 'aggregate')];
    let page;
    try {
      page = await gql('{ customers(first: 5) { edges { node { id spendLimits { limit { currency } spentThisMonth } } } } }', {}, owner.secret);
      expect(page.errors).toBeUndefined();
      expect(sums.reduce((calls, sum) => calls + sum.mock.calls.length, 0)).toBe(1);
    } finally {
      for (const sum of sums) sum.mockRestore();
    }
    expect(page.errors).toBeUndefined();
    const shown = new Map(page.data.customers.edges.map(({ node }: any) => [node.id, node.spendLimits.map((limit: any) => `${limit.limit.currency} ${limit.spentThisMonth}`)]));
    expect(shown).toEqual(expected);
  });

  it("batched with another merchant's load, a customer id of that merchant finds nothing", async () => {
    const other = await server.createMerchant('Limits neighbour');
    const customerId = await newCustomer(other.id);
    await server.services.spendLimits.set(other.id, { customerId, amount: '5', currency: 'USD' });
    // Both in one tick: one batch, two merchants.
    const [asStranger, asOwner] = await Promise.all([server.services.spendLimits.list(merchant.id, customerId), server.services.spendLimits.list(other.id, customerId)]);
    expect(asStranger).toEqual([]);
    expect(asOwner.map((limit) => [limit.customerId, limit.currency])).toEqual([[customerId, 'USD']]);
  });
});

describe('first together with last', () => {
  it('is refused as VALIDATION naming both, on every connection; either alone (or the other null) still pages', async () => {
    const customerId = await newCustomer();
    await ok(GRANT, { input: { customerId, amount: '5', kind: 'PAID', idempotencyKey: `grant-${randomUUID()}` } });
    const connections: [string, string][] = [
      ['customers', 'customers(PAGE) { edges { node { id } } }'],
      ['ledgerTransactions', 'ledgerTransactions(PAGE) { edges { node { id } } }'],
      ['usageEvents', 'usageEvents(PAGE) { edges { node { id } } }'],
      ['gatewayRequests', 'gatewayRequests(PAGE) { edges { node { id } } }'],
      ['wallet.grants', 'wallet(customerId: $c) { grants(PAGE) { edges { node { id } } } }'],
      ['wallet.holds', 'wallet(customerId: $c) { holds(PAGE) { edges { node { id } } } }'],
      ['wallet.transactions', 'wallet(customerId: $c) { transactions(PAGE) { edges { node { id } } } }'],
    ];
    for (const [name, selection] of connections) {
      const query = (args: string) => {
        const body = selection.replace('PAGE', args);
        // Only the variables the operation uses: an unused one is refused as VALIDATION too.
        const declared = [['$c', 'ID!'], ['$f', 'Int'], ['$l', 'Int']].filter(([name]) => body.includes(name!)).map(([name, type]) => `${name}: ${type}`);
        return `query ${declared.length ? `(${declared.join(', ')})` : ''} { ${body} }`;
      };
      for (const [args, variables] of [
        ['first: 1, last: 1', {}],
        ['last: 2, first: 5', {}],
        ['first: $f, last: $l', { f: 0, l: 3 }],
      ] as const) {
        const result = await gql(query(args), { ...(selection.includes('$c') ? { c: customerId } : {}), ...variables });
        const label = `${name}(${args}) ${JSON.stringify(variables)}`;
        expect(result.status, label).toBeLessThan(500);
        expect(result.errors?.[0]?.extensions, label).toMatchObject({ code: 'VALIDATION', field: 'last' });
        expect(result.errors?.[0]?.message, label).toMatch(/\bfirst\b.*\blast\b|\blast\b.*\bfirst\b/);
      }
      for (const [args, variables] of [
        ['first: 1', {}],
        ['last: 1', {}],
        ['first: $f, last: $l', { f: null, l: 1 }],
        ['first: $f, last: $l', { f: 1, l: null }],
        ['first: $f, last: $l', { f: 1 }],
      ] as const) {
        const result = await gql(query(args), { ...(selection.includes('$c') ? { c: customerId } : {}), ...variables });
        expect(result.errors, `${name}(${args}) ${JSON.stringify(variables)}`).toBeUndefined();
      }
    }
  });
});

describe('DateTime filter bounds finer than a millisecond', () => {
  /** Rows are stored to the millisecond (timestamptz(3)): this one sits exactly on a millisecond. */
  const T = '2030-01-01T00:00:00.000Z';
  /**
   * createdAfter is inclusive, createdBefore exclusive. Whether a row stamped T matches each, per
   * bound: a bound inside T's millisecond (after T) excludes it from createdAfter and includes it
   * in createdBefore.
   */
  const bounds: [string, { after: boolean; before: boolean }][] = [
    ['2030-01-01T00:00:00.000Z', { after: true, before: false }],
    ['2030-01-01T00:00:00.0005Z', { after: false, before: true }],
    ['2030-01-01T00:00:00.000000001Z', { after: false, before: true }],
    ['2030-01-01T00:00:00.000000Z', { after: true, before: false }],
    // Python's datetime.isoformat(): microseconds and +00:00.
    ['2030-01-01T00:00:00.000001+00:00', { after: false, before: true }],
    ['2030-01-01T01:00:00.0009+01:00', { after: false, before: true }],
    ['2029-12-31T23:59:59.9995Z', { after: true, before: false }],
    ['2029-12-31T23:59:59.999999-00:00', { after: true, before: false }],
    ['2030-01-01T00:00:00.001Z', { after: false, before: true }],
    ['2030-01-01T00:00:00.0010001Z', { after: false, before: true }],
  ];

  it('customers: compare the bound as written, in a variable or in the query', async () => {
    const owner = await server.createMerchant('Filter bounds');
    const customerId = await newCustomer(owner.id);
    await server.services.prisma.customer.update({ where: { id: customerId }, data: { createdAt: new Date(T) } });
    const LIST = 'query ($filter: CustomerFilter) { customers(filter: $filter) { totalCount edges { node { id } } } }';
    for (const [bound, expected] of bounds) {
      for (const [side, field] of [['after', 'createdAfter'], ['before', 'createdBefore']] as const) {
        const label = `${field}: ${bound}`;
        const viaVariable = await gql(LIST, { filter: { [field]: bound } }, owner.secret);
        expect(viaVariable.errors, label).toBeUndefined();
        expect(viaVariable.data.customers.edges.map(({ node }: any) => node.id), label).toEqual(expected[side] ? [customerId] : []);
        expect(viaVariable.data.customers.totalCount, label).toBe(expected[side] ? 1 : 0);
        const inline = await gql(`{ customers(filter: { ${field}: "${bound}" }) { totalCount } }`, {}, owner.secret);
        expect(inline.errors, label).toBeUndefined();
        expect(inline.data.customers.totalCount, `${label} (inline)`).toBe(expected[side] ? 1 : 0);
      }
    }
  });

  it("ledger transactions: the merchant's list and a wallet's", async () => {
    const customerId = await newCustomer();
    const before = now;
    now = new Date(T);
    try {
      await ok(GRANT, { input: { customerId, amount: '5', kind: 'PAID', idempotencyKey: `grant-${randomUUID()}` } });
    } finally {
      now = before;
    }
    const LIST = `query ($c: ID!, $filter: LedgerTransactionFilter) {
      ledgerTransactions(customerId: $c, filter: $filter) { totalCount edges { node { createdAt } } }
      wallet(customerId: $c) { transactions(filter: $filter) { totalCount edges { node { createdAt } } } } }`;
    for (const [bound, expected] of bounds) {
      for (const [side, field] of [['after', 'createdAfter'], ['before', 'createdBefore']] as const) {
        const label = `${field}: ${bound}`;
        const data = await ok(LIST, { c: customerId, filter: { [field]: bound } });
        const want = expected[side] ? [{ node: { createdAt: T } }] : [];
        expect(data.ledgerTransactions.edges, label).toEqual(want);
        expect(data.ledgerTransactions.totalCount, label).toBe(want.length);
        expect(data.wallet.transactions.edges, label).toEqual(want);
        expect(data.wallet.transactions.totalCount, label).toBe(want.length);
      }
    }
  });

  it('a window inside one millisecond holds nothing; one across it holds its row', async () => {
    const owner = await server.createMerchant('Filter windows');
    const customerId = await newCustomer(owner.id);
    await server.services.prisma.customer.update({ where: { id: customerId }, data: { createdAt: new Date(T) } });
    const count = async (createdAfter: string, createdBefore: string) =>
      (await ok('query ($filter: CustomerFilter) { customers(filter: $filter) { totalCount } }', { filter: { createdAfter, createdBefore } }, owner.secret)).customers.totalCount;
    expect(await count('2030-01-01T00:00:00.0001Z', '2030-01-01T00:00:00.0009Z')).toBe(0);
    expect(await count('2030-01-01T00:00:00.000Z', '2030-01-01T00:00:00.0001Z')).toBe(1);
    expect(await count('2029-12-31T23:59:59.9999Z', '2030-01-01T00:00:00.000001Z')).toBe(1);
    // Windows that meet split the list: the row is in exactly one of two that share a bound.
    for (const edge of ['2030-01-01T00:00:00.0005Z', '2030-01-01T00:00:00.000Z', '2029-12-31T23:59:59.9995Z']) {
      expect((await count('2029-01-01T00:00:00Z', edge)) + (await count(edge, '2031-01-01T00:00:00Z')), edge).toBe(1);
    }
  });

  it('the conditions: a bound cut from finer digits moves to the other side of its millisecond; any other keeps its own', () => {
    expect(atOrAfter(parseIsoTime('2030-01-01T00:00:00.0005Z')!)).toEqual({ gt: new Date(T) });
    expect(earlierThan(parseIsoTime('2030-01-01T00:00:00.000001+00:00')!)).toEqual({ lte: new Date(T) });
    for (const exact of [parseIsoTime('2030-01-01T00:00:00.000000Z')!, parseIsoTime(T)!, new Date(T)]) {
      expect(atOrAfter(exact)).toEqual({ gte: new Date(T) });
      expect(earlierThan(exact)).toEqual({ lt: new Date(T) });
    }
  });

  it('other DateTime inputs take sub-millisecond digits as before: cut to the millisecond', async () => {
    await server.services.plans.put(merchant.id, { key: 'pro', name: 'Pro' });
    const customerId = await newCustomer();
    await ok('mutation ($c: ID!, $from: DateTime) { setCustomerPlan(customerId: $c, planKey: "pro", effectiveFrom: $from) { id } }', { c: customerId, from: '2026-07-01T09:00:00.123456+00:00' });
    const [row] = await server.services.prisma.customerPlan.findMany({ where: { customerId } });
    expect(row!.effectiveFrom.toISOString()).toBe('2026-07-01T09:00:00.123Z');
  });
});
