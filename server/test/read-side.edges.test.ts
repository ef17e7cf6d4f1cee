import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestServer, type TestServer } from './server.ts';

/**
 * Edges of the read side (list queries, their filters, counts and nested fields) that the
 * pagination fuzz and the tenant-isolation matrices do not reach.
 */

/** A clock that stands still: rows made in this file share one millisecond unless it is moved. */
let now = new Date('2026-07-01T09:00:00.000Z');
let server: TestServer;
let merchant: { id: string; secret: string };

const gql = (query: string, variables: Record<string, unknown> = {}, token = merchant.secret) => server.graphql<any>(query, variables, token);

async function ok(query: string, variables: Record<string, unknown> = {}, token = merchant.secret) {
  const result = await gql(query, variables, token);
  expect(result.errors, query).toBeUndefined();
  return result.data;
}

const newCustomer = async () => (await server.services.customers.create(merchant.id, { externalId: `c-${randomUUID()}` })).id;

const GRANT = 'mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }';
const DEBIT = 'mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed } }';

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
  merchant = await server.createMerchant();
});
afterAll(() => server?.close());

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
