import { randomUUID } from 'node:crypto';
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { testServerWithMerchant, type TestServer } from '../../../test/server.ts';
import { walletTopic } from './ledger.service.ts';

// Edges of the ledger's GraphQL surface that ledger.test.ts and the fuzzers do not reach.

/** A clock that stands still: every transaction of this file shares one millisecond. */
const now = new Date('2026-07-01T09:00:00.000Z');
let server: TestServer;
let merchant: { id: string; secret: string };
const { start, close, gql, newCustomer } = testServerWithMerchant({}, { clock: () => now });

const GRANT = 'mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed wallet { balance { amount currency } } } }';
const DEBIT = 'mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed } }';
const ADJUST = 'mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed } }';
const REFUND = 'mutation ($input: RefundCreditsInput!) { refundCredits(input: $input) { replayed } }';
const HOLD = 'mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }';
const CAPTURE = 'mutation ($id: ID!, $amount: Decimal) { captureHold(id: $id, amount: $amount) { replayed } }';
const OVERDRAFT = 'mutation ($id: ID!, $limit: Decimal!) { setOverdraftLimit(customerId: $id, limit: $limit) { id } }';
const TRANSACTIONS = 'query ($id: ID!) { wallet(customerId: $id) { balance { amount } transactions(first: 10) { totalCount } } }';

beforeAll(async () => ({ server, merchant } = await start()));
afterAll(close);

describe('an amount that is no decimal', () => {
  // A long run of zeros followed by anything else: the parser's fallback pattern (which tells a
  // decimal that is only too long from one that is no decimal) backtracked over every way to split
  // the zeros, in time growing with the square of their number. 200,000 of them (a fifth of the
  // body limit) held the event loop, and every other request, for half a minute.
  it('is refused at once with VALIDATION naming the field, however long a run of zeros it has', async () => {
    const customerId = await newCustomer();
    const zeros = '0'.repeat(200_000);
    const started = performance.now();
    const refused = await gql(GRANT, { input: { customerId, amount: `${zeros}x`, kind: 'PAID', idempotencyKey: randomUUID() } });
    const elapsed = performance.now() - started;
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'amount' });
    expect(refused.errors?.[0]?.message).toContain('must be a decimal number');
    // Linear, it takes milliseconds; quadratic, tens of seconds.
    expect(elapsed).toBeLessThan(5_000);

    // Each mutation that takes an amount refuses such text the same way, naming its own field.
    const text = `${'0'.repeat(20_000)}.${'0'.repeat(20_000)}!`;
    const hold = await gql(GRANT, { input: { customerId, amount: '5', kind: 'PAID', idempotencyKey: randomUUID() } });
    expect(hold.errors).toBeUndefined();
    const held = await gql(HOLD, { input: { customerId, amount: '1', idempotencyKey: randomUUID() } });
    const holdId = held.data!.createHold.hold.id;
    const answers = [
      [await gql(DEBIT, { input: { customerId, amount: text, idempotencyKey: randomUUID() } }), 'amount'],
      [await gql(ADJUST, { input: { customerId, amount: text, reason: 'r', idempotencyKey: randomUUID() } }), 'amount'],
      [await gql(REFUND, { input: { customerId, amount: text, reason: 'r', idempotencyKey: randomUUID() } }), 'amount'],
      [await gql(HOLD, { input: { customerId, amount: text, idempotencyKey: randomUUID() } }), 'amount'],
      [await gql(CAPTURE, { id: holdId, amount: text }), 'amount'],
      [await gql(OVERDRAFT, { id: customerId, limit: text }), 'limit'],
    ] as const;
    for (const [answer, field] of answers) expect(answer.errors?.[0]?.extensions, field).toMatchObject({ code: 'VALIDATION', field });
    // A decimal that is only too long is still told what is wrong with it.
    const long = await gql(GRANT, { input: { customerId, amount: `${'0'.repeat(50_000)}1234567890123`, kind: 'PAID', idempotencyKey: randomUUID() } });
    expect(long.errors?.[0]?.message).toContain('at most 12 digits before the decimal point');
    const fine = await gql(GRANT, { input: { customerId, amount: `1.${'0'.repeat(19)}`, kind: 'PAID', idempotencyKey: randomUUID() } });
    expect(fine.errors?.[0]?.message).toContain('more than 18 decimal places');
    // Nothing moved but the 5.00 granted.
    const wallet = await gql(TRANSACTIONS, { id: customerId });
    expect(wallet.data!.wallet).toEqual({ balance: { amount: '5.00' }, transactions: { totalCount: 1 } });
  });
});

describe('an amount sent as a JSON number', () => {
  it('is refused unless a safe integer, told to send a string: as a fraction, or as a whole number too large for a double', async () => {
    const customerId = await newCustomer();
    const grant = (amount: number) => gql(GRANT, { input: { customerId, amount, kind: 'PAID', idempotencyKey: randomUUID() } });
    expect((await grant(0.15)).errors?.[0]?.message).toContain('Pass fractional Decimal values as strings');
    for (const amount of [2 ** 53, 1e21]) {
      const message = (await grant(amount)).errors?.[0]?.message ?? '';
      expect(message, String(amount)).toContain('Pass a Decimal this large as a string');
      expect(message, String(amount)).not.toContain('fractional');
    }
    expect((await grant(5)).errors).toBeUndefined();
  });
});

describe('balanceUpdated', () => {
  /** The first answer of a subscription, or its refusal; one accepted that gets no event within 3 s is `waiting`. */
  async function firstAnswer(token: string, variables: Record<string, unknown>) {
    const client = createClient({ url: server.url.replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${token}` }, retryAttempts: 0 });
    try {
      const first = client.iterate({ query: 'subscription ($id: ID!, $currency: String) { balanceUpdated(customerId: $id, currency: $currency) { balance { amount currency } } }', variables }).next();
      return await Promise.race([
        first.then(
          (result) => ({ kind: 'answer' as const, value: result.value as { data?: any; errors?: { extensions: Record<string, unknown> }[] } }),
          (error: unknown) => ({ kind: 'refused' as const, errors: error as { extensions: Record<string, unknown> }[] }),
        ),
        new Promise<{ kind: 'waiting' }>((resolve) => setTimeout(() => resolve({ kind: 'waiting' }), 3_000)),
      ]);
    } finally {
      await client.dispose();
    }
  }

  // `currency: ""` was taken as no currency at all: the subscription was accepted and pushed
  // every currency's changes, where wallet(currency: "") and every mutation refuse the same text.
  it('refuses an empty currency with VALIDATION naming it, as wallet does, instead of watching every currency', async () => {
    const customerId = await newCustomer();
    const walletAnswer = await gql('query ($id: ID!) { wallet(customerId: $id, currency: "") { id } }', { id: customerId });
    expect(walletAnswer.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'currency' });

    const empty = await firstAnswer(merchant.secret, { id: customerId, currency: '' });
    const errors = empty.kind === 'refused' ? empty.errors : empty.kind === 'answer' ? empty.value.errors : undefined;
    expect(empty.kind, 'an empty currency was accepted').not.toBe('waiting');
    expect(errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'currency' });
    expect(server.services.pubsub.subscriberCount(walletTopic(customerId))).toBe(0);
  });
});

describe('a wallet\'s transactions within one millisecond', () => {
  const LIST = `query ($id: ID!, $first: Int, $after: String, $last: Int, $before: String) { wallet(customerId: $id) {
    transactions(first: $first, after: $after, last: $last, before: $before) {
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { node { id kind createdAt amount { amount } balanceAfter { amount } } } } } }`;
  /** Exact nano-units of a decimal string the API wrote ("-1.25" → -1250000000n). */
  const exact = (amount: string) => {
    const [whole, fraction = ''] = amount.replace('-', '').split('.');
    const value = BigInt(whole!) * 1_000_000_000n + BigInt(fraction.padEnd(9, '0'));
    return amount.startsWith('-') ? -value : value;
  };

  // The existing test of one shared timestamp checks that paging loses and repeats nothing; this
  // checks the order is the order they happened, so the audit trail reads as a chain of balances.
  it('are listed newest first in the order they happened, each balanceAfter following from the one before, paged either way', async () => {
    const customerId = await newCustomer();
    const ok = (result: { errors?: unknown }) => expect(result.errors).toBeUndefined();
    ok(await gql(GRANT, { input: { customerId, amount: '10.00', kind: 'PAID', idempotencyKey: randomUUID() } }));
    for (const amount of ['0.10', '1.25', '0.000000001', '2.00']) ok(await gql(DEBIT, { input: { customerId, amount, idempotencyKey: randomUUID() } }));
    ok(await gql(ADJUST, { input: { customerId, amount: '-0.50', reason: 'duplicate', idempotencyKey: randomUUID() } }));
    ok(await gql(REFUND, { input: { customerId, amount: '1.00', reason: 'asked', idempotencyKey: randomUUID() } }));
    ok(await gql(ADJUST, { input: { customerId, amount: '3.00', reason: 'goodwill', idempotencyKey: randomUUID() } }));
    const held = await gql(HOLD, { input: { customerId, amount: '2.00', idempotencyKey: randomUUID() } });
    ok(await gql(CAPTURE, { id: held.data!.createHold.hold.id, amount: '0.75' }));
    ok(await gql(GRANT, { input: { customerId, amount: '0.40', kind: 'PROMOTIONAL', idempotencyKey: randomUUID() } }));

    const all = (await gql(LIST, { id: customerId, first: 50 })).data!.wallet.transactions.edges.map((edge: any) => edge.node);
    expect(all).toHaveLength(10);
    expect(new Set(all.map((node: any) => node.createdAt))).toEqual(new Set([now.toISOString()]));
    expect(all.map((node: any) => node.kind)).toEqual(['GRANT', 'HOLD_CAPTURE', 'ADJUSTMENT', 'REFUND', 'ADJUSTMENT', 'USAGE', 'USAGE', 'USAGE', 'USAGE', 'GRANT']);
    expect(all.map((node: any) => node.amount.amount)).toEqual(['0.40', '-0.75', '3.00', '-1.00', '-0.50', '-2.00', '-0.000000001', '-1.25', '-0.10', '10.00']);
    // Newest first: each balance is the next older one's plus this change; the oldest starts from zero.
    all.forEach((node: any, index: number) => {
      const before = index + 1 < all.length ? exact(all[index + 1].balanceAfter.amount) : 0n;
      expect(exact(node.balanceAfter.amount), `${index}: ${node.kind}`).toBe(before + exact(node.amount.amount));
    });
    expect(all[0].balanceAfter.amount).toBe('7.799999999');

    // Pages of three forwards, and backwards from the end, list them in that same order.
    const forwards: string[] = [];
    let after: string | undefined;
    for (let guard = 0; guard < 10; guard++) {
      const connection = (await gql(LIST, { id: customerId, first: 3, after })).data!.wallet.transactions;
      forwards.push(...connection.edges.map((edge: any) => edge.node.id));
      if (!connection.pageInfo.hasNextPage) break;
      after = connection.pageInfo.endCursor;
    }
    const backwards: string[] = [];
    let before: string | undefined;
    for (let guard = 0; guard < 10; guard++) {
      const connection = (await gql(LIST, { id: customerId, last: 3, before })).data!.wallet.transactions;
      backwards.unshift(...connection.edges.map((edge: any) => edge.node.id));
      if (!connection.pageInfo.hasPreviousPage) break;
      before = connection.pageInfo.startCursor;
    }
    const ids = all.map((node: any) => node.id);
    expect(forwards).toEqual(ids);
    expect(backwards).toEqual(ids);
  });
});

describe('adjustBalance', () => {
  // A positive adjustment adds a promotional grant, but its answer's `grant` was null: the
  // merchant could not see the credit it had just made (nor its id to follow it), first time or replayed.
  it('answers the grant a positive adjustment made, again when replayed; a negative one made none', async () => {
    const customerId = await newCustomer();
    const ADJUSTED = 'mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed grant { id kind amount { amount } remaining { amount } } } }';
    const input = { customerId, amount: '2.50', reason: 'goodwill', idempotencyKey: randomUUID() };
    const first = await gql(ADJUSTED, { input });
    expect(first.errors).toBeUndefined();
    const { grant } = first.data!.adjustBalance;
    expect(grant).toMatchObject({ kind: 'PROMOTIONAL', amount: { amount: '2.50' }, remaining: { amount: '2.50' } });
    const wallet = await gql('query ($id: ID!) { wallet(customerId: $id) { grants { nodes { id } } } }', { id: customerId });
    expect(wallet.data!.wallet.grants.nodes.map((listed: { id: string }) => listed.id)).toEqual([grant.id]);
    expect((await gql(ADJUSTED, { input })).data!.adjustBalance).toEqual({ replayed: true, grant });
    const taken = await gql(ADJUSTED, { input: { customerId, amount: '-1.00', reason: 'duplicate', idempotencyKey: randomUUID() } });
    expect(taken.data!.adjustBalance).toEqual({ replayed: false, grant: null });
  });
});
