import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { testServerWithMerchant, waitForSubscribers, type TestServer } from '../../../test/server.ts';
import { laneOf } from '../../shared/lanes.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR, walletTopic } from './ledger.service.ts';

/** The ledger through its GraphQL API, on a controllable clock. */
let now = new Date('2026-06-01T12:00:00Z');
let server: TestServer;
let merchant: { id: string; secret: string };
const { start, close, gql, newCustomer } = testServerWithMerchant({}, { clock: () => now });

const GRANT = `mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) {
  replayed grant { id kind remaining { amount } } transaction { id kind amount { amount currency } balanceAfter { amount } }
  wallet { balance { amount } available { amount } } } }`;
const DEBIT = `mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) {
  replayed transaction { id amount { amount } balanceAfter { amount } } wallet { balance { amount } } } }`;
const WALLET = `query ($id: ID!, $currency: String) { wallet(customerId: $id, currency: $currency) {
  id currency balance { amount currency } available { amount } held { amount } overdraftLimit { amount }
  grants(includeInactive: true, first: 100) { nodes { id kind amount { amount } remaining { amount } expiresAt expiredAt } }
  transactions(first: 50) { totalCount edges { node { id kind amount { amount } reason idempotencyKey actor { kind apiKeyId }
    entries { walletId accountId grantId amount { amount } } } } } } }`;

async function grant(customerId: string, amount: string, extra: Record<string, unknown> = {}) {
  const result = await gql(GRANT, { input: { customerId, amount, kind: 'PAID', idempotencyKey: randomUUID(), ...extra } });
  expect(result.errors).toBeUndefined();
  return result.data!.grantCredits;
}
async function debit(customerId: string, amount: string, idempotencyKey: string = randomUUID()) {
  return gql(DEBIT, { input: { customerId, amount, idempotencyKey } });
}
async function wallet(customerId: string, currency = 'USD', token = merchant.secret) {
  const result = await gql(WALLET, { id: customerId, currency }, token);
  expect(result.errors).toBeUndefined();
  return { ...result.data!.wallet, grants: result.data!.wallet.grants.nodes };
}
/** Raw SQL against the test database, for what the API does not show (storage, tampering). */
function sql<T>(text: string, params: unknown[] = []): Promise<T[]> {
  return server.services.db.withConnection((connection) => connection.query<T>(text, params));
}
/** Balance events published for a customer from now on (what balanceUpdated subscribers get). */
function balanceEvents(customerId: string) {
  const received: Record<string, any>[] = [];
  const events = server.services.pubsub.subscribe(walletTopic(customerId));
  void (async () => {
    for await (const event of events) received.push(event as Record<string, any>);
  })();
  return { received, stop: () => events.return?.(undefined) };
}
const settled = () => new Promise((resolve) => setTimeout(resolve, 50));

async function expectIntegrity() {
  const report = await gql('{ ledgerIntegrity { ok violations walletsChecked transactionsChecked } }');
  expect(report.data!.ledgerIntegrity.violations).toEqual([]);
  expect(report.data!.ledgerIntegrity.ok).toBe(true);
}

beforeAll(async () => ({ server, merchant } = await start()));
afterAll(close);

describe('credits and debits', () => {
  it('grants, charges and shows every change as a balanced double entry', async () => {
    const customerId = await newCustomer();
    const granted = await grant(customerId, '10.00');
    expect(granted.transaction).toMatchObject({ kind: 'GRANT', amount: { amount: '10.00', currency: 'USD' }, balanceAfter: { amount: '10.00' } });
    expect(granted.wallet.balance.amount).toBe('10.00');

    const charged = await debit(customerId, '2.345');
    expect(charged.errors).toBeUndefined();
    expect(charged.data!.debitCredits.transaction).toMatchObject({ amount: { amount: '-2.345' }, balanceAfter: { amount: '7.655' } });

    const view = await wallet(customerId);
    expect(view.balance).toEqual({ amount: '7.655', currency: 'USD' });
    expect(view.grants[0].remaining.amount).toBe('7.655');
    expect(view.transactions.totalCount).toBe(2);
    for (const { node } of view.transactions.edges) {
      const sum = node.entries.reduce((total: bigint, entry: any) => total + parseDecimalNanos('amount', entry.amount.amount), 0n);
      expect(node.entries.length).toBeGreaterThanOrEqual(2);
      expect(sum).toBe(0n);
      expect(node.actor).toMatchObject({ kind: 'api_key' });
      expect(node.actor.apiKeyId).toMatch(/^[0-9a-f-]{36}$/);
    }
    await expectIntegrity();
  });

  it('refuses a charge beyond available credit with INSUFFICIENT_FUNDS and moves nothing', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '1.00');
    const refused = await debit(customerId, '1.01');
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'INSUFFICIENT_FUNDS', required: '1.01', available: '1.00', currency: 'USD' });
    const view = await wallet(customerId);
    expect(view.balance.amount).toBe('1.00');
    expect(view.transactions.totalCount).toBe(1);
    // A wallet never funded refuses too.
    const empty = await debit(await newCustomer(), '0.01');
    expect(empty.errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
  });

  it('a debit refused in a currency the merchant never charged in writes nothing: no wallet, no counter-accounts', async () => {
    const accounts = async () => (await sql<{ n: number }>(`SELECT count(*)::int AS n FROM ledger_accounts WHERE merchant_id = $1`, [merchant.id]))[0]!.n;
    const customerId = await newCustomer();
    const before = await accounts();
    const refused = await gql(DEBIT, { input: { customerId, amount: '0.01', currency: 'CHF', idempotencyKey: randomUUID() } });
    expect(refused.errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    expect(await accounts()).toBe(before);
    expect(await sql(`SELECT 1 FROM wallets WHERE customer_id = $1 AND currency = 'CHF'`, [customerId])).toEqual([]);
    // The accounts come with the first change that names them, and are not remembered from the refusal.
    await grant(customerId, '1.00', { currency: 'CHF' });
    expect((await debit(customerId, '0.10')).errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    const charged = await gql(DEBIT, { input: { customerId, amount: '0.10', currency: 'CHF', idempotencyKey: randomUUID() } });
    expect(charged.errors).toBeUndefined();
    expect((await wallet(customerId, 'CHF')).balance.amount).toBe('0.90');
    // All six of the currency's accounts are kept together, so no later batch inserts them again.
    expect(await accounts()).toBe(before + 6);
  });

  it('replays an idempotency key: the first result, and nothing moves', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '5.00');
    const key = randomUUID();
    const first = await debit(customerId, '1.50', key);
    const again = await debit(customerId, '1.50', key);
    expect(first.data!.debitCredits.replayed).toBe(false);
    expect(again.data!.debitCredits.replayed).toBe(true);
    expect(again.data!.debitCredits.transaction.id).toBe(first.data!.debitCredits.transaction.id);
    expect((await wallet(customerId)).balance.amount).toBe('3.50');

    const misuse = await debit(customerId, '9.99', key);
    expect(misuse.errors?.[0]?.extensions.code).toBe('CONFLICT');
    expect((await wallet(customerId)).balance.amount).toBe('3.50');

    const grantKey = randomUUID();
    await grant(customerId, '1.00', { idempotencyKey: grantKey });
    const grantAgain = await gql(GRANT, { input: { customerId, amount: '1.00', kind: 'PAID', idempotencyKey: grantKey } });
    expect(grantAgain.data!.grantCredits.replayed).toBe(true);
    expect(grantAgain.data!.grantCredits.grant.id).toBeTruthy();
    expect((await wallet(customerId)).balance.amount).toBe('4.50');
  });

  it('keeps currencies apart', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '3.00');
    await grant(customerId, '7.00', { currency: 'eur' });
    expect((await wallet(customerId, 'EUR')).balance.amount).toBe('7.00');
    expect((await debit(customerId, '4.00')).errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    const wallets = await gql('query ($id: ID!) { wallets(customerId: $id) { currency balance { amount } } }', { id: customerId });
    expect(wallets.data!.wallets).toEqual([
      { currency: 'EUR', balance: { amount: '7.00' } },
      { currency: 'USD', balance: { amount: '3.00' } },
    ]);
    const bad = await gql(GRANT, { input: { customerId, amount: '1', kind: 'PAID', idempotencyKey: randomUUID(), currency: 'dollars' } });
    expect(bad.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'currency' });
    // Three letters, but no currency: a typo is refused, not given a wallet of its own.
    const typo = await gql(GRANT, { input: { customerId, amount: '1', kind: 'PAID', idempotencyKey: randomUUID(), currency: 'UDS' } });
    expect(typo.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'currency' });
    expect(typo.errors?.[0]?.message).toContain('UDS is not an ISO 4217 currency code');
    expect((await gql(WALLET, { id: customerId, currency: 'QQQ' })).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'currency' });
    expect((await sql<{ currency: string }>('SELECT currency FROM wallets WHERE customer_id = $1 ORDER BY currency', [customerId])).map((row) => row.currency)).toEqual(['EUR', 'USD']);
  });

  it('rejects bad amounts with VALIDATION naming the field', async () => {
    const customerId = await newCustomer();
    for (const amount of ['-1', '0', '1e3', 'ten', '0.0000000001']) {
      const result = await gql(GRANT, { input: { customerId, amount, kind: 'PAID', idempotencyKey: randomUUID() } });
      expect(result.errors?.[0]?.extensions, amount).toMatchObject({ code: 'VALIDATION', field: 'amount' });
    }
    const float = await gql(GRANT, { input: { customerId, amount: 0.1, kind: 'PAID', idempotencyKey: randomUUID() } });
    expect(float.errors?.[0]?.extensions.code).toBe('VALIDATION');
    expect((await wallet(customerId)).transactions.totalCount).toBe(0);
  });
});

describe('storage', () => {
  it('debits rewrite wallets and grants in place: no index covers a column they change, and pages keep room for the new row', async () => {
    const rows = await sql<{ indexdef: string }>(`SELECT indexdef FROM pg_indexes WHERE tablename IN ('wallets', 'credit_grants')`);
    const options = await sql<{ relname: string; reloptions: string[] | null }>(
      `SELECT relname, reloptions FROM pg_class WHERE relname IN ('wallets', 'credit_grants') ORDER BY relname`,
    );
    // A changed indexed column turns PostgreSQL's heap-only update into a write to every index.
    expect(rows.length).toBeGreaterThan(0);
    for (const { indexdef } of rows) expect(indexdef).not.toMatch(/\b(balance|fraction_carry|updated_at|remaining|expired_at)\b/);
    expect(options).toEqual([
      { relname: 'credit_grants', reloptions: ['fillfactor=80'] },
      { relname: 'wallets', reloptions: ['fillfactor=80'] },
    ]);
  });

  it('keeps the two legs of a one-grant debit on its transaction row, and shows them as entries', async () => {
    const customerId = await newCustomer();
    const granted = await grant(customerId, '5.00');
    const charged = await debit(customerId, '1.25');
    expect(charged.errors).toBeUndefined();
    const transactionId = charged.data!.debitCredits.transaction.id;
    expect(await sql(`SELECT leg FROM ledger_entries WHERE transaction_id = ANY($1::uuid[])`, [[transactionId, granted.transaction.id]])).toEqual([]);
    const [revenue] = await sql<{ id: string }>(`SELECT id FROM ledger_accounts WHERE merchant_id = $1 AND kind = 'USAGE_REVENUE' AND currency = 'USD'`, [merchant.id]);
    const [row] = await sql<{ counter_account_id: string; grant_id: string }>(`SELECT counter_account_id, grant_id FROM ledger_transactions WHERE id = $1`, [transactionId]);
    expect(row).toEqual({ counter_account_id: revenue!.id, grant_id: granted.grant.id });

    const shown = await gql(`query ($id: ID!) { wallet(customerId: $id) { id transactions(first: 1) { edges { node { id entries { id walletId accountId grantId amount { amount } } } } } } }`, { id: customerId });
    const view = shown.data!.wallet;
    expect(view.transactions.edges[0].node).toEqual({
      id: transactionId,
      entries: [
        { id: `${transactionId}:0`, walletId: view.id, accountId: null, grantId: granted.grant.id, amount: { amount: '-1.25' } },
        { id: `${transactionId}:1`, walletId: null, accountId: revenue!.id, grantId: null, amount: { amount: '1.25' } },
      ],
    });
    await expectIntegrity();

    // The integrity check notices legs stored twice.
    await sql(`INSERT INTO ledger_entries (transaction_id, leg, merchant_id, wallet_id, currency, amount) VALUES ($1, 0, $2, $3, 'USD', 0)`, [transactionId, merchant.id, view.id]);
    const report = await server.services.ledgerQueries.integrity(merchant.id);
    expect(report.violations).toEqual([`transaction ${transactionId} keeps its two legs on its row but also has entries`]);
    await sql(`DELETE FROM ledger_entries WHERE transaction_id = $1`, [transactionId]);
  });

  it('keys entries by their transaction and place in it: one index, and legs numbered in the order written', async () => {
    const indexes = await sql<{ indexdef: string }>(`SELECT indexdef FROM pg_indexes WHERE tablename = 'ledger_entries'`);
    expect(indexes.map(({ indexdef }) => indexdef.replace(/^.* USING /, ''))).toEqual(['btree (transaction_id, leg)']);

    // A debit drawing from two grants: its two wallet legs first, then the revenue leg.
    const customerId = await newCustomer();
    await grant(customerId, '1.00', { kind: 'PROMOTIONAL' });
    await grant(customerId, '5.00');
    const charged = await debit(customerId, '1.50');
    expect(charged.errors).toBeUndefined();
    const transactionId = charged.data!.debitCredits.transaction.id;
    const legs = await sql<{ leg: number; wallet: boolean; amount: string }>(
      `SELECT leg, wallet_id IS NOT NULL AS wallet, amount::text AS amount FROM ledger_entries WHERE transaction_id = $1 ORDER BY leg`, [transactionId],
    );
    expect(legs).toEqual([
      { leg: 0, wallet: true, amount: '-1000000000' },
      { leg: 1, wallet: true, amount: '-500000000' },
      { leg: 2, wallet: false, amount: '1500000000' },
    ]);
    const shown = await gql(`query ($id: ID!) { wallet(customerId: $id) { transactions(first: 1) { edges { node { id entries { id } } } } } }`, { id: customerId });
    const node = shown.data!.wallet.transactions.edges[0].node;
    expect(node.id).toBe(transactionId);
    expect(node.entries.map((entry: { id: string }) => entry.id).sort()).toEqual([0, 1, 2].map((leg) => `${transactionId}:${leg}`));
    await expectIntegrity();
  });
});

describe('idempotency across merchants', () => {
  it('a key one merchant used is a new key for another, even when both are looked up together', async () => {
    const [first, second] = [await server.createMerchant('First'), await server.createMerchant('Second')];
    const actor = { kind: 'api_key' as const, apiKeyId: null };
    const customerOf = async (merchantId: string) => {
      const customerId = (await server.services.customers.create(merchantId, { externalId: `c-${randomUUID()}` })).id;
      await server.services.ledger.grantCredits(merchantId, actor, { customerId, currency: 'USD', amountNanos: 5_000_000_000n, kind: 'PAID', idempotencyKey: randomUUID() });
      return customerId;
    };
    const [ours, theirs] = [await customerOf(first.id), await customerOf(second.id)];
    const used = await server.services.ledger.debit(first.id, actor, { customerId: ours, currency: 'USD', amountAttos: 10n ** 17n, idempotencyKey: 'shared-key' });

    // One batch over both merchants' wallets, probing both keys at once.
    const wallets = [{ merchantId: first.id, customerId: ours, currency: 'USD' }, { merchantId: second.id, customerId: theirs, currency: 'USD' }];
    const found = await server.services.ledger.runBatch(
      wallets,
      async (batch) => ({
        first: await batch.wallet(wallets[0]!).existing(['shared-key', 'unused-key']),
        second: await batch.wallet(wallets[1]!).existing(['shared-key', 'unused-key']),
      }),
      [{ merchantId: first.id, key: 'unused-key' }, { merchantId: second.id, key: 'shared-key' }],
    );
    expect([...found.first.entries()].map(([key, posted]) => [key, posted.id])).toEqual([['shared-key', used.transaction.id]]);
    expect([...found.second.keys()]).toEqual([]);

    const theirDebit = await server.services.ledger.debit(second.id, actor, { customerId: theirs, currency: 'USD', amountAttos: 10n ** 17n, idempotencyKey: 'shared-key' });
    expect(theirDebit.replayed).toBe(false);
    expect(theirDebit.transaction.id).not.toBe(used.transaction.id);
  });
});

describe('grant consumption', () => {
  it('spends soonest-expiring and promotional credit before paid credit by default', async () => {
    const customerId = await newCustomer();
    const paid = await grant(customerId, '5.00', { kind: 'PAID' });
    const promoLater = await grant(customerId, '2.00', { kind: 'PROMOTIONAL', expiresAt: '2026-09-01T00:00:00Z' });
    const promoSoon = await grant(customerId, '1.00', { kind: 'PROMOTIONAL', expiresAt: '2026-07-01T00:00:00Z' });
    const promoNever = await grant(customerId, '4.00', { kind: 'PROMOTIONAL' });
    await debit(customerId, '5.50');
    const remaining = Object.fromEntries((await wallet(customerId)).grants.map((g: any) => [g.id, g.remaining.amount]));
    expect(remaining[promoSoon.grant.id]).toBe('0.00');
    expect(remaining[promoLater.grant.id]).toBe('0.00');
    expect(remaining[promoNever.grant.id]).toBe('1.50');
    expect(remaining[paid.grant.id]).toBe('5.00');
    await expectIntegrity();
  });

  it("follows the merchant's configured order", async () => {
    const other = await server.createMerchant('Priority first');
    const set = await server.graphql('mutation { setCreditConsumptionOrder(order: [PRIORITY]) }', {}, other.secret);
    expect(set.data!.setCreditConsumptionOrder).toEqual(['PRIORITY', 'EXPIRY', 'KIND', 'CREATED']);
    const customerId = (await server.services.customers.create(other.id, { externalId: 'p' })).id;
    const grantFor = (amount: string, extra: Record<string, unknown>) =>
      server.graphql<any>(GRANT, { input: { customerId, amount, kind: 'PAID', idempotencyKey: randomUUID(), ...extra } }, other.secret);
    const promo = (await grantFor('2.00', { kind: 'PROMOTIONAL', priority: 5, expiresAt: '2026-07-01T00:00:00Z' })).data!.grantCredits;
    const paidFirst = (await grantFor('2.00', { kind: 'PAID', priority: 1 })).data!.grantCredits;
    await server.graphql(DEBIT, { input: { customerId, amount: '1.00', idempotencyKey: randomUUID() } }, other.secret);
    const view = (await server.graphql<any>(WALLET, { id: customerId }, other.secret)).data!.wallet;
    const remaining = Object.fromEntries(view.grants.nodes.map((g: any) => [g.id, g.remaining.amount]));
    expect(remaining[paidFirst.grant.id]).toBe('1.00');
    expect(remaining[promo.grant.id]).toBe('2.00');

    // Changed by another instance (straight in the database here): the very next debit follows it.
    await sql(`UPDATE merchants SET credit_consumption_order = ARRAY['EXPIRY', 'KIND', 'PRIORITY', 'CREATED'] WHERE id = $1`, [other.id]);
    await server.graphql(DEBIT, { input: { customerId, amount: '1.00', idempotencyKey: randomUUID() } }, other.secret);
    const after = (await server.graphql<any>(WALLET, { id: customerId }, other.secret)).data!.wallet;
    expect(Object.fromEntries(after.grants.nodes.map((g: any) => [g.id, g.remaining.amount]))).toMatchObject({ [paidFirst.grant.id]: '1.00', [promo.grant.id]: '1.00' });
  });
});

describe('overdraft', () => {
  it('lets usage go negative only down to the limit, and new credit repays the debt first', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '1.00');
    const limited = await gql('mutation ($id: ID!) { setOverdraftLimit(customerId: $id, limit: "2.00") { overdraftLimit { amount } } }', { id: customerId });
    expect(limited.data!.setOverdraftLimit.overdraftLimit.amount).toBe('2.00');
    expect((await debit(customerId, '2.50')).errors).toBeUndefined();
    expect((await wallet(customerId)).balance.amount).toBe('-1.50');
    expect((await debit(customerId, '0.60')).errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    expect((await debit(customerId, '0.50')).errors).toBeUndefined();
    const topUp = await grant(customerId, '12.00');
    expect(topUp.grant.remaining.amount).toBe('10.00');
    expect(topUp.wallet.balance.amount).toBe('10.00');
    // Three legs (the debt repaid, the rest as credit, the payment), in the order of their amounts.
    const entries = await server.services.ledgerQueries.entries(merchant.id, topUp.transaction.id);
    expect(entries.map((entry) => [entry.amount, entry.grantId])).toEqual([
      [-12_000_000_000n, null], [2_000_000_000n, null], [10_000_000_000n, topUp.grant.id],
    ]);
    await expectIntegrity();
  });
});

describe('expiry', () => {
  it('removes what remained exactly once, on read and on schedule', async () => {
    const customerId = await newCustomer();
    const expiring = await grant(customerId, '3.00', { kind: 'PROMOTIONAL', expiresAt: new Date(now.getTime() + 3600_000).toISOString() });
    await grant(customerId, '1.00');
    await debit(customerId, '1.00');
    expect(expiring.grant.id).toBeTruthy();

    now = new Date(now.getTime() + 2 * 3600_000);
    const afterRead = await wallet(customerId);
    expect(afterRead.balance.amount).toBe('1.00');
    const expiryTxns = afterRead.transactions.edges.filter((edge: any) => edge.node.kind === 'EXPIRY');
    expect(expiryTxns).toHaveLength(1);
    expect(expiryTxns[0].node.amount.amount).toBe('-2.00');
    expect(expiryTxns[0].node.actor).toEqual({ kind: 'system', apiKeyId: null });
    expect(afterRead.grants.find((g: any) => g.id === expiring.grant.id).expiredAt).not.toBeNull();

    // The schedule (on any number of instances, as often as it likes) finds nothing more to do.
    const runs = await Promise.all([server.services.ledger.runExpiry(), server.services.ledger.runExpiry()]);
    expect(runs.map((run) => run.grantsExpired)).toEqual([0, 0]);
    expect((await wallet(customerId)).transactions.totalCount).toBe(afterRead.transactions.totalCount);
    await expectIntegrity();
  });

  it('the schedule expires grants nobody has read, and never charges expired credit', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '2.00', { kind: 'PROMOTIONAL', expiresAt: new Date(now.getTime() + 60_000).toISOString() });
    now = new Date(now.getTime() + 120_000);
    expect((await debit(customerId, '0.50')).errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    const customerB = await newCustomer();
    await grant(customerB, '2.00', { kind: 'PROMOTIONAL', expiresAt: new Date(now.getTime() + 60_000).toISOString() });
    now = new Date(now.getTime() + 120_000);
    const run = await server.services.ledger.runExpiry();
    expect(run.grantsExpired).toBeGreaterThanOrEqual(1);
    expect((await wallet(customerB)).balance.amount).toBe('0.00');
  });

  it('a used-up grant past its expiry is marked expired by whatever locks the wallet next, though nothing is posted', async () => {
    const customerId = await newCustomer();
    const promotional = await grant(customerId, '1.00', { kind: 'PROMOTIONAL', expiresAt: new Date(now.getTime() + 60_000).toISOString() });
    await grant(customerId, '5.00');
    expect((await debit(customerId, '1.00')).errors).toBeUndefined();
    now = new Date(now.getTime() + 120_000);
    const actor = { kind: 'system' as const, apiKeyId: null };
    // Each of these locks the wallet and posts nothing; each used to fail with PostgreSQL's 42P18.
    const hold = await server.services.ledger.createHold(merchant.id, actor, { customerId, currency: 'USD', amountNanos: 1_000_000_000n, ttlSeconds: 60, idempotencyKey: randomUUID() });
    expect(hold.hold.status).toBe('PENDING');
    expect((await debit(customerId, '100')).errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    const [usage] = await server.services.usage.record(merchant.id, actor, [{ customer: customerId, idempotencyKey: randomUUID(), usage: { provider: 'custom', model: 'free', requests: 1 } }]);
    expect(usage!.ok).toBe(true);
    const expired = await server.services.prisma.creditGrant.findUniqueOrThrow({ where: { id: promotional.grant.id } });
    expect(expired.expiredAt).not.toBeNull();
    await expectIntegrity();
  });

  it('announces an expiry to balanceUpdated whether a read or the schedule wrote it', async () => {
    const [readFirst, scheduled] = [await newCustomer(), await newCustomer()];
    for (const customerId of [readFirst, scheduled]) {
      await grant(customerId, '3.00', { kind: 'PROMOTIONAL', expiresAt: new Date(now.getTime() + 60_000).toISOString() });
      await grant(customerId, '1.00');
    }
    const [onRead, onSchedule] = [balanceEvents(readFirst), balanceEvents(scheduled)];
    now = new Date(now.getTime() + 120_000);
    const read = await wallet(readFirst);
    expect(read.balance.amount).toBe('1.00');
    const readExpiry = read.transactions.edges.find((edge: any) => edge.node.kind === 'EXPIRY').node.id;
    await server.services.ledger.runExpiry();
    await settled();
    expect(onRead.received).toEqual([expect.objectContaining({ balance: '1.00', available: '1.00', transactionIds: [readExpiry] })]);
    const scheduledExpiry = (await wallet(scheduled)).transactions.edges.find((edge: any) => edge.node.kind === 'EXPIRY').node.id;
    expect(onSchedule.received).toEqual([expect.objectContaining({ balance: '1.00', transactionIds: [scheduledExpiry] })]);
    await Promise.all([onRead.stop(), onSchedule.stop()]);
  });

  it('one wallet the schedule cannot settle does not stop the others, or hold expiry', async () => {
    const [wedged, other] = [await newCustomer(), await newCustomer()];
    const stuck = await grant(wedged, '1.00', { kind: 'PROMOTIONAL', expiresAt: new Date(now.getTime() + 60_000).toISOString() });
    await grant(other, '1.00', { kind: 'PROMOTIONAL', expiresAt: new Date(now.getTime() + 60_000).toISOString() });
    await grant(other, '5.00');
    const placeHold = async (customerId: string, amount: string) => (await gql('mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }', {
      input: { customerId, amount, idempotencyKey: randomUUID(), ttlSeconds: 30 },
    })).data!.createHold.hold as { id: string };
    const hold = await placeHold(other, '2.00');
    const wedgedHold = await placeHold(wedged, '0.50');
    // A transaction already holding the key the expiry writes under (from before such keys were
    // reserved) makes that wallet's expiry fail every time.
    await sql(`UPDATE ledger_transactions SET idempotency_key = $2 WHERE id = (SELECT transaction_id FROM credit_grants WHERE id = $1)`, [stuck.grant.id, `grant-expiry:${stuck.grant.id}`]);
    now = new Date(now.getTime() + 120_000);
    const run = await server.services.ledger.runExpiry();
    // The wedged wallet's hold still ends, marked expired apart from the wallet's lock.
    expect(run).toEqual({ grantsExpired: 1, holdsExpired: 2 });
    expect((await wallet(other)).balance.amount).toBe('5.00');
    for (const { id } of [hold, wedgedHold]) expect((await gql('query ($id: ID!) { hold(id: $id) { status } }', { id })).data!.hold.status).toBe('EXPIRED');
    // Reading the wedged wallet answers a typed conflict, not an internal error.
    expect((await gql(WALLET, { id: wedged })).errors?.[0]?.extensions.code).toBe('CONFLICT');
    await sql(`UPDATE ledger_transactions SET idempotency_key = $2 WHERE id = (SELECT transaction_id FROM credit_grants WHERE id = $1)`, [stuck.grant.id, randomUUID()]);
    expect((await wallet(wedged)).balance.amount).toBe('0.00');
  });
});

describe('an archived customer', () => {
  const HOLD = `mutation ($input: CreateHoldInput!) { createHold(input: $input) { replayed hold { id } } }`;

  it('is not charged nor has credit held after its archive; replays of earlier ones answer, credit can still be granted, and unarchiving lifts it', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '10.00');
    const debitKey = randomUUID();
    const holdInput = { customerId, amount: '1.00', idempotencyKey: randomUUID(), ttlSeconds: 600 };
    expect((await debit(customerId, '2.00', debitKey)).errors).toBeUndefined();
    const hold = (await gql(HOLD, { input: holdInput })).data!.createHold.hold;
    now = new Date(now.getTime() + 1000);
    const archivedAt = (await server.services.customers.archive(merchant.id, customerId)).archivedAt!;
    // Archives are stamped by the wall clock, the ledger by the test's: move the latter past it.
    now = new Date(Math.max(now.getTime(), archivedAt.getTime()) + 1000);

    const refused = await debit(customerId, '1.00');
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'FORBIDDEN', reason: 'CUSTOMER_ARCHIVED', customerId, archivedAt: archivedAt.toISOString() });
    expect((await gql(HOLD, { input: { ...holdInput, idempotencyKey: randomUUID() } })).errors?.[0]?.extensions).toMatchObject({ code: 'FORBIDDEN', reason: 'CUSTOMER_ARCHIVED' });
    // Usage from before the archive, reported late, is still charged.
    const late = await server.services.ledger.debit(merchant.id, { kind: 'api_key', apiKeyId: null }, {
      customerId, currency: 'USD', amountAttos: 500_000_000n * 1_000_000_000n, idempotencyKey: randomUUID(), occurredAt: new Date(archivedAt.getTime() - 500),
    });
    expect(late.replayed).toBe(false);
    // Retries of what was done before answer as before.
    expect((await debit(customerId, '2.00', debitKey)).data!.debitCredits.replayed).toBe(true);
    expect((await gql(HOLD, { input: holdInput })).data!.createHold).toMatchObject({ replayed: true, hold: { id: hold.id } });
    await grant(customerId, '1.00');
    expect((await wallet(customerId)).balance.amount).toBe('8.50');

    await server.services.customers.unarchive(merchant.id, customerId);
    expect((await debit(customerId, '1.00')).errors).toBeUndefined();
    expect((await wallet(customerId)).balance.amount).toBe('7.50');
    await expectIntegrity();
  });
});

describe('holds', () => {
  const CREATE = `mutation ($input: CreateHoldInput!) { createHold(input: $input) { replayed hold { id status amount { amount } expiresAt } wallet { balance { amount } available { amount } held { amount } } } }`;

  it('reserve credit, capture part of it, and free the rest', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '10.00');
    const key = randomUUID();
    const created = await gql(CREATE, { input: { customerId, amount: '6.00', idempotencyKey: key, ttlSeconds: 60 } });
    expect(created.errors).toBeUndefined();
    expect(created.data!.createHold.wallet).toEqual({ balance: { amount: '10.00' }, available: { amount: '4.00' }, held: { amount: '6.00' } });
    const replay = await gql(CREATE, { input: { customerId, amount: '6.00', idempotencyKey: key, ttlSeconds: 60 } });
    expect(replay.data!.createHold.replayed).toBe(true);
    expect((await wallet(customerId)).held.amount).toBe('6.00');

    expect((await debit(customerId, '4.50')).errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    expect((await gql(CREATE, { input: { customerId, amount: '5.00', idempotencyKey: randomUUID() } })).errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');

    const holdId = created.data!.createHold.hold.id;
    const captured = await gql('mutation ($id: ID!) { captureHold(id: $id, amount: "2.50") { replayed hold { status capturedAmount { amount } } transaction { kind amount { amount } } wallet { balance { amount } available { amount } held { amount } } } }', { id: holdId });
    expect(captured.errors).toBeUndefined();
    expect(captured.data!.captureHold).toMatchObject({
      replayed: false,
      hold: { status: 'CAPTURED', capturedAmount: { amount: '2.50' } },
      transaction: { kind: 'HOLD_CAPTURE', amount: { amount: '-2.50' } },
      wallet: { balance: { amount: '7.50' }, available: { amount: '7.50' }, held: { amount: '0.00' } },
    });
    const again = await gql('mutation ($id: ID!) { captureHold(id: $id, amount: "2.50") { replayed } }', { id: holdId });
    expect(again.data!.captureHold.replayed).toBe(true);
    const different = await gql('mutation ($id: ID!) { captureHold(id: $id, amount: "3.00") { replayed } }', { id: holdId });
    expect(different.errors?.[0]?.extensions.code).toBe('CONFLICT');
    expect((await wallet(customerId)).balance.amount).toBe('7.50');
    await expectIntegrity();
  });

  it('a retry of createHold replays it after the hold was extended, and a different TTL is still a CONFLICT', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '10.00');
    const input = { customerId, amount: '3.00', idempotencyKey: randomUUID(), ttlSeconds: 60 };
    const created = (await gql(CREATE, { input })).data!.createHold.hold;
    now = new Date(now.getTime() + 30_000);
    const extended = await server.services.ledger.extendHold(merchant.id, created.id, 120);
    expect(extended.expiresAt.getTime()).toBe(now.getTime() + 120_000);
    const retry = await gql(CREATE, { input });
    expect(retry.errors).toBeUndefined();
    expect(retry.data!.createHold).toMatchObject({ replayed: true, hold: { id: created.id, expiresAt: extended.expiresAt.toISOString() } });
    expect((await server.services.ledger.getHold(merchant.id, created.id)).requestedTtlSeconds).toBe(60);
    for (const ttlSeconds of [120, 150]) {
      expect((await gql(CREATE, { input: { ...input, ttlSeconds } })).errors?.[0]?.extensions.code).toBe('CONFLICT');
    }
    expect((await wallet(customerId)).held.amount).toBe('3.00');
  });

  it('release frees the reservation; expiry frees it by itself', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '10.00');
    const first = (await gql(CREATE, { input: { customerId, amount: '3.00', idempotencyKey: randomUUID() } })).data!.createHold.hold;
    const released = await gql('mutation ($id: ID!) { releaseHold(id: $id) { status } }', { id: first.id });
    expect(released.data!.releaseHold.status).toBe('RELEASED');
    expect((await wallet(customerId)).available.amount).toBe('10.00');
    const capturedAfterRelease = await gql('mutation ($id: ID!) { captureHold(id: $id) { replayed } }', { id: first.id });
    expect(capturedAfterRelease.errors?.[0]?.extensions.code).toBe('CONFLICT');

    const second = (await gql(CREATE, { input: { customerId, amount: '9.00', idempotencyKey: randomUUID(), ttlSeconds: 30 } })).data!.createHold.hold;
    expect((await wallet(customerId)).available.amount).toBe('1.00');
    const versionOf = async () => (await sql<{ version: string }>(`SELECT version::text FROM wallets WHERE customer_id = $1`, [customerId]))[0]!.version;
    const before = await versionOf();
    now = new Date(now.getTime() + 31_000);
    // The read finds the hold past its time and expires it under a new version of the wallet,
    // before the schedule comes round: the freed credit never shows under the version before.
    const read = (await gql('query ($id: ID!) { wallet(customerId: $id) { available { amount } version } }', { id: customerId })).data!.wallet;
    expect(read).toEqual({ available: { amount: '10.00' }, version: String(BigInt(before) + 1n) });
    expect(await versionOf()).toBe(read.version);
    expect((await gql('query ($id: ID!) { hold(id: $id) { status finalizedBy { kind } } }', { id: second.id })).data!.hold).toEqual({ status: 'EXPIRED', finalizedBy: { kind: 'system' } });
    const late = await gql('mutation ($id: ID!) { captureHold(id: $id) { replayed } }', { id: second.id });
    expect(late.errors?.[0]?.extensions.code).toBe('CONFLICT');
    // Nothing left for the schedule to do on this wallet: it is not settled again.
    await server.services.ledger.runExpiry();
    expect(await versionOf()).toBe(read.version);
  });

  it('records who placed each hold and who captured or released it (the system when it expired), for the merchant only', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '10.00');
    const placer = await server.services.apiKeys.create(merchant.id, { name: 'placer', mode: 'test' });
    const settler = await server.services.apiKeys.create(merchant.id, { name: 'settler', mode: 'test' });
    const AUDIT = 'query ($id: ID!) { hold(id: $id) { status createdBy { kind apiKeyId } finalizedAt finalizedBy { kind apiKeyId } } }';
    const place = async (ttlSeconds = 60) => {
      const created = await gql(CREATE, { input: { customerId, amount: '1.00', idempotencyKey: randomUUID(), ttlSeconds } }, placer.secret);
      expect(created.errors).toBeUndefined();
      return created.data!.createHold.hold.id as string;
    };
    const audit = async (id: string) => (await gql(AUDIT, { id })).data!.hold;
    const byPlacer = { kind: 'api_key', apiKeyId: placer.apiKey.id };
    const bySettler = { kind: 'api_key', apiKeyId: settler.apiKey.id };

    const captured = await place();
    expect(await audit(captured)).toEqual({ status: 'PENDING', createdBy: byPlacer, finalizedAt: null, finalizedBy: null });
    expect((await gql('mutation ($id: ID!) { captureHold(id: $id) { hold { finalizedBy { apiKeyId } } } }', { id: captured }, settler.secret)).data!.captureHold.hold)
      .toEqual({ finalizedBy: { apiKeyId: settler.apiKey.id } });
    expect(await audit(captured)).toEqual({ status: 'CAPTURED', createdBy: byPlacer, finalizedAt: now.toISOString(), finalizedBy: bySettler });

    const released = await place();
    expect((await gql('mutation ($id: ID!) { releaseHold(id: $id) { id } }', { id: released }, settler.secret)).errors).toBeUndefined();
    expect(await audit(released)).toEqual({ status: 'RELEASED', createdBy: byPlacer, finalizedAt: now.toISOString(), finalizedBy: bySettler });

    // Past its time it reads as expired by the system at its expiry, before the schedule marks it and after.
    const lapsed = await place(30);
    const expiresAt = new Date(now.getTime() + 30_000).toISOString();
    now = new Date(now.getTime() + 31_000);
    const system = { kind: 'system', apiKeyId: null };
    expect(await audit(lapsed)).toEqual({ status: 'EXPIRED', createdBy: byPlacer, finalizedAt: expiresAt, finalizedBy: system });
    await server.services.ledger.runExpiry();
    expect(await audit(lapsed)).toEqual({ status: 'EXPIRED', createdBy: byPlacer, finalizedAt: expiresAt, finalizedBy: system });

    // The audit trail is the merchant's: a customer token is refused it.
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    const asCustomer = await gql('query ($id: ID!) { hold(id: $id) { createdBy { kind } } }', { id: captured }, token);
    expect(asCustomer.data?.hold ?? null).toBeNull();
    expect(asCustomer.errors?.[0]?.extensions.code).toBe('FORBIDDEN');
  });

  it('lists a wallet\'s holds newest first, by status as callers see it, a page at a time; a customer token sees its own', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '10.00');
    const place = async (amount: string, ttlSeconds = 60) => {
      const created = await gql(CREATE, { input: { customerId, amount, idempotencyKey: randomUUID(), ttlSeconds } });
      expect(created.errors).toBeUndefined();
      now = new Date(now.getTime() + 1000);
      return created.data!.createHold.hold.id as string;
    };
    const lapsing = await place('1.00', 5);
    const captured = await place('2.00');
    const released = await place('0.50');
    const pending = await place('3.00');
    await gql('mutation ($id: ID!) { captureHold(id: $id) { replayed } }', { id: captured });
    await gql('mutation ($id: ID!) { releaseHold(id: $id) { id } }', { id: released });
    now = new Date(now.getTime() + 5000);
    const HOLDS = `query ($id: ID!, $status: [HoldStatus!], $first: Int, $after: String) { wallet(customerId: $id) { held { amount }
      holds(status: $status, first: $first, after: $after) { totalCount nodes { id status } pageInfo { hasNextPage endCursor } } } }`;
    const holds = async (variables: Record<string, unknown> = {}, token = merchant.secret) => {
      const result = await gql(HOLDS, { id: customerId, ...variables }, token);
      expect(result.errors).toBeUndefined();
      return result.data!.wallet;
    };

    const all = await holds();
    expect(all.holds.nodes).toEqual([
      { id: pending, status: 'PENDING' }, { id: released, status: 'RELEASED' }, { id: captured, status: 'CAPTURED' }, { id: lapsing, status: 'EXPIRED' },
    ]);
    expect(all.holds.totalCount).toBe(4);
    // What is held is exactly what the pending ones reserve; the lapsed one counts as expired before the schedule marks it.
    expect(all.held.amount).toBe('3.00');
    expect((await holds({ status: ['PENDING'] })).holds).toMatchObject({ totalCount: 1, nodes: [{ id: pending }] });
    expect((await holds({ status: ['EXPIRED'] })).holds).toMatchObject({ totalCount: 1, nodes: [{ id: lapsing }] });
    expect((await holds({ status: ['CAPTURED', 'RELEASED'] })).holds.nodes.map((x: { id: string }) => x.id)).toEqual([released, captured]);
    await server.services.ledger.runExpiry();
    expect((await holds({ status: ['EXPIRED'] })).holds).toMatchObject({ totalCount: 1, nodes: [{ id: lapsing }] });

    const first = (await holds({ first: 3 })).holds;
    expect(first.pageInfo.hasNextPage).toBe(true);
    const rest = (await holds({ first: 3, after: first.pageInfo.endCursor })).holds;
    expect([...first.nodes, ...rest.nodes].map((x: { id: string }) => x.id)).toEqual([pending, released, captured, lapsing]);
    expect(rest.pageInfo.hasNextPage).toBe(false);

    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    expect((await holds({}, token)).holds.totalCount).toBe(4);
    const otherCustomer = await newCustomer();
    expect((await gql(HOLDS, { id: otherCustomer }, token)).errors?.[0]?.extensions.code).toBe('FORBIDDEN');
  });

  it('extends a pending hold (never shortening it), so it outlives the TTL it was made with; an ended hold cannot be', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '10.00');
    const holdId = (await gql(CREATE, { input: { customerId, amount: '6.00', idempotencyKey: randomUUID(), ttlSeconds: 60 } })).data!.createHold.hold.id;
    now = new Date(now.getTime() + 50_000);
    const extended = await server.services.ledger.extendHold(merchant.id, holdId, 120);
    expect(extended.expiresAt).toEqual(new Date(now.getTime() + 120_000));
    // Asking for less than it has left changes nothing.
    expect((await server.services.ledger.extendHold(merchant.id, holdId, 1)).expiresAt).toEqual(extended.expiresAt);
    now = new Date(now.getTime() + 100_000);
    expect((await wallet(customerId)).held.amount).toBe('6.00');
    await expect(server.services.ledger.extendHold(merchant.id, holdId, 0)).rejects.toMatchObject({ code: 'VALIDATION' });
    now = new Date(now.getTime() + 30_000);
    await expect(server.services.ledger.extendHold(merchant.id, holdId, 60)).rejects.toMatchObject({ code: 'CONFLICT' });
    expect((await wallet(customerId)).held.amount).toBe('0.00');
  });

  it('announces to balanceUpdated what an expired hold frees when the schedule expires it', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '10.00');
    await gql(CREATE, { input: { customerId, amount: '4.00', idempotencyKey: randomUUID(), ttlSeconds: 30 } });
    const events = balanceEvents(customerId);
    now = new Date(now.getTime() + 31_000);
    expect((await server.services.ledger.runExpiry()).holdsExpired).toBeGreaterThanOrEqual(1);
    await settled();
    expect(events.received).toEqual([expect.objectContaining({ balance: '10.00', available: '10.00', transactionIds: [] })]);
    await events.stop();
  });

  it('releases holds inside a locked batch: only PENDING ones of the wallet named, and announces what was freed', async () => {
    const [customerId, otherId] = [await newCustomer(), await newCustomer()];
    await grant(customerId, '10.00');
    await grant(otherId, '10.00');
    const hold = (await gql(CREATE, { input: { customerId, amount: '3.00', idempotencyKey: randomUUID() } })).data!.createHold.hold;
    const others = (await gql(CREATE, { input: { customerId: otherId, amount: '2.00', idempotencyKey: randomUUID() } })).data!.createHold.hold;
    const events = balanceEvents(customerId);
    const key = { merchantId: merchant.id, customerId, currency: 'USD' };
    const release = () =>
      server.services.ledger.runBatch([key], async (batch) => {
        const own = batch.wallet(key);
        await server.services.ledger.releaseHoldsInBatch(batch, merchant.id, SYSTEM_ACTOR, [{ holdId: hold.id, wallet: own }, { holdId: others.id, wallet: own }]);
        return own.state.held;
      });
    expect(await release()).toBe(0n);
    // Released once: a second batch naming it frees nothing more.
    expect(await release()).toBe(0n);
    expect((await gql('query ($id: ID!) { hold(id: $id) { status } }', { id: hold.id })).data!.hold.status).toBe('RELEASED');
    expect((await gql('query ($id: ID!) { hold(id: $id) { status } }', { id: others.id })).data!.hold.status).toBe('PENDING');
    expect((await wallet(otherId)).held.amount).toBe('2.00');
    await settled();
    expect(events.received).toEqual([expect.objectContaining({ available: '10.00', transactionIds: [] })]);
    await events.stop();
  });
});

describe('credit kept for pending holds past its expiry', () => {
  const CREATE = `mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }`;
  const CAPTURE = `mutation ($id: ID!, $amount: Decimal) { captureHold(id: $id, amount: $amount) { transaction { amount { amount } entries { grantId amount { amount } } } wallet { balance { amount } available { amount } held { amount } } } }`;
  const hours = (n: number) => new Date(now.getTime() + n * 3600_000).toISOString();
  async function hold(customerId: string, amount: string, ttlSeconds = 7200): Promise<string> {
    const created = await gql(CREATE, { input: { customerId, amount, idempotencyKey: randomUUID(), ttlSeconds } });
    expect(created.errors).toBeUndefined();
    return created.data!.createHold.hold.id;
  }
  const liveGrants = async (customerId: string) => (await gql(`query ($id: ID!) { wallet(customerId: $id) { grants(first: 100) { nodes { kind remaining { amount } holdId } } } }`, { id: customerId })).data!.wallet.grants.nodes;

  it('a hold stays capturable when the credit behind it expires first: what it needs is kept, the rest expires, and its capture spends it', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '5.00', { kind: 'PROMOTIONAL', expiresAt: hours(1) });
    const holdId = await hold(customerId, '4.00');
    now = new Date(now.getTime() + 3600_000 + 1000);
    // 4.00 kept for the hold, 1.00 expired: the balance keeps what the hold may still capture.
    expect(await wallet(customerId)).toMatchObject({ balance: { amount: '4.00' }, available: { amount: '0.00' }, held: { amount: '4.00' } });
    expect(await liveGrants(customerId)).toEqual([{ kind: 'PROMOTIONAL', remaining: { amount: '4.00' }, holdId }]);
    await expectIntegrity();
    const captured = await gql(CAPTURE, { id: holdId, amount: '3.00' });
    expect(captured.errors).toBeUndefined();
    expect(captured.data!.captureHold.transaction.amount.amount).toBe('-3.00');
    // What the capture left of the kept credit expires with it.
    expect(captured.data!.captureHold.wallet).toEqual({ balance: { amount: '0.00' }, available: { amount: '0.00' }, held: { amount: '0.00' } });
    expect(await liveGrants(customerId)).toEqual([]);
    const kinds = (await wallet(customerId)).transactions.edges.map((edge: any) => [edge.node.kind, edge.node.amount.amount]);
    expect(kinds).toEqual([['EXPIRY', '-1.00'], ['HOLD_CAPTURE', '-3.00'], ['EXPIRY', '-1.00'], ['EXPIRY', '0.00'], ['GRANT', '5.00']]);
    await expectIntegrity();
  });

  it('lasting credit covers holds first; only what they lack beyond it is kept', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '3.00');
    await grant(customerId, '5.00', { kind: 'PROMOTIONAL', expiresAt: hours(1) });
    const holdId = await hold(customerId, '4.00');
    now = new Date(now.getTime() + 3600_000 + 1000);
    expect(await wallet(customerId)).toMatchObject({ balance: { amount: '4.00' }, available: { amount: '0.00' } });
    expect(await liveGrants(customerId)).toEqual([
      { kind: 'PAID', remaining: { amount: '3.00' }, holdId: null },
      { kind: 'PROMOTIONAL', remaining: { amount: '1.00' }, holdId },
    ]);
    const captured = await gql(CAPTURE, { id: holdId, amount: '4.00' });
    expect(captured.errors).toBeUndefined();
    expect(captured.data!.captureHold.wallet.balance.amount).toBe('0.00');
    await expectIntegrity();
  });

  it('no other charge spends kept credit: a debit under overdraft owes instead, a top-up repays that first, and a release expires what was kept', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '4.00', { kind: 'PROMOTIONAL', expiresAt: hours(1) });
    const holdId = await hold(customerId, '4.00');
    await gql('mutation ($id: ID!) { setOverdraftLimit(customerId: $id, limit: "10.00") { overdraftLimit { amount } } }', { id: customerId });
    now = new Date(now.getTime() + 3600_000 + 1000);
    const charged = await debit(customerId, '2.00');
    expect(charged.errors).toBeUndefined();
    // 4.00 kept for the hold and 2.00 owed.
    expect(await wallet(customerId)).toMatchObject({ balance: { amount: '2.00' }, available: { amount: '-2.00' } });
    expect(await liveGrants(customerId)).toEqual([{ kind: 'PROMOTIONAL', remaining: { amount: '4.00' }, holdId }]);
    await expectIntegrity();
    await grant(customerId, '3.00');
    expect(await liveGrants(customerId)).toEqual([
      { kind: 'PROMOTIONAL', remaining: { amount: '4.00' }, holdId },
      { kind: 'PAID', remaining: { amount: '1.00' }, holdId: null },
    ]);
    expect(await wallet(customerId)).toMatchObject({ balance: { amount: '5.00' }, available: { amount: '1.00' } });
    await expectIntegrity();
    expect((await gql('mutation ($id: ID!) { releaseHold(id: $id) { status } }', { id: holdId })).errors).toBeUndefined();
    expect(await wallet(customerId)).toMatchObject({ balance: { amount: '1.00' }, available: { amount: '1.00' }, held: { amount: '0.00' } });
    await expectIntegrity();
  });

  it('a hold that runs out its time lets what was kept for it expire on schedule, and such wallets do not starve the schedule', async () => {
    const kept = await newCustomer();
    await grant(kept, '2.00', { kind: 'PROMOTIONAL', expiresAt: hours(1) });
    await hold(kept, '2.00', 3 * 3600);
    now = new Date(now.getTime() + 3600_000 + 1000);
    expect((await wallet(kept)).balance.amount).toBe('2.00');
    // Another wallet's grant due now is expired even by a run that takes one wallet at a time.
    const other = await newCustomer();
    await grant(other, '1.00', { kind: 'PROMOTIONAL', expiresAt: hours(0.5) });
    now = new Date(now.getTime() + 3600_000);
    expect((await server.services.ledger.runExpiry(1)).grantsExpired).toBe(1);
    expect((await sql<{ remaining: string }>(`SELECT remaining::text FROM credit_grants WHERE customer_id = $1 AND expired_at IS NULL`, [other]))).toEqual([]);
    now = new Date(now.getTime() + 3600_000);
    const run = await server.services.ledger.runExpiry();
    expect(run.holdsExpired).toBeGreaterThanOrEqual(1);
    expect(await wallet(kept)).toMatchObject({ balance: { amount: '0.00' }, held: { amount: '0.00' } });
    await expectIntegrity();
  });

  it('in a wallet that owes beside it, what was kept still pays its hold\'s capture, and its leaving adds no debt the integrity check could blame', async () => {
    const setup = async () => {
      const customerId = await newCustomer();
      await grant(customerId, '4.00', { kind: 'PROMOTIONAL', expiresAt: hours(1) });
      const holdId = await hold(customerId, '4.00');
      now = new Date(now.getTime() + 3600_000 + 1000);
      // A correction does not spend kept credit: 1.00 is owed beside the 4.00 kept.
      const adjusted = await gql(`mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { transaction { id } } }`,
        { input: { customerId, amount: '-1.00', reason: 'correction', idempotencyKey: randomUUID() } });
      expect(adjusted.errors).toBeUndefined();
      expect(await wallet(customerId)).toMatchObject({ balance: { amount: '3.00' } });
      return { customerId, holdId };
    };
    const captured = await setup();
    const capture = await gql(CAPTURE, { id: captured.holdId, amount: '4.00' });
    expect(capture.errors).toBeUndefined();
    expect(capture.data!.captureHold.wallet.balance.amount).toBe('-1.00');
    await expectIntegrity();
    const partly = await setup();
    expect((await gql(CAPTURE, { id: partly.holdId, amount: '1.50' })).errors).toBeUndefined();
    expect((await wallet(partly.customerId)).balance.amount).toBe('-1.00');
    await expectIntegrity();
    const released = await setup();
    expect((await gql('mutation ($id: ID!) { releaseHold(id: $id) { status } }', { id: released.holdId })).errors).toBeUndefined();
    expect((await wallet(released.customerId)).balance.amount).toBe('-1.00');
    await expectIntegrity();
  });

  it('credit kept for a hold and ended in one transaction is stored expired', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '4.00', { kind: 'PROMOTIONAL', expiresAt: hours(1) });
    const holdId = await hold(customerId, '4.00');
    now = new Date(now.getTime() + 3600_000 + 1000);
    // No read in between: the capture's own lock keeps the credit, and the capture ends the hold.
    await server.services.ledger.captureHold(merchant.id, { kind: 'system', apiKeyId: null }, holdId, 3_000_000_000n);
    expect(await sql(`SELECT remaining::text AS remaining, expired_at IS NOT NULL AS expired FROM credit_grants WHERE hold_id = $1`, [holdId])).toEqual([{ remaining: '0', expired: true }]);
  });

  it('two holds: credit is kept oldest hold first, each capture spends only its own', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '5.00', { kind: 'PROMOTIONAL', expiresAt: hours(1) });
    const first = await hold(customerId, '2.00');
    const second = await hold(customerId, '2.00');
    await grant(customerId, '1.00');
    now = new Date(now.getTime() + 3600_000 + 1000);
    // 1.00 of paid credit lasts: it covers the first hold's first 1.00.
    expect(await liveGrants(customerId)).toEqual([
      { kind: 'PAID', remaining: { amount: '1.00' }, holdId: null },
      { kind: 'PROMOTIONAL', remaining: { amount: '1.00' }, holdId: first },
      { kind: 'PROMOTIONAL', remaining: { amount: '2.00' }, holdId: second },
    ]);
    const capturedSecond = await gql(CAPTURE, { id: second, amount: '2.00' });
    expect(capturedSecond.data!.captureHold.wallet).toEqual({ balance: { amount: '2.00' }, available: { amount: '0.00' }, held: { amount: '2.00' } });
    const capturedFirst = await gql(CAPTURE, { id: first, amount: '2.00' });
    expect(capturedFirst.errors).toBeUndefined();
    expect(capturedFirst.data!.captureHold.wallet.balance.amount).toBe('0.00');
    await expectIntegrity();
  });
});

describe('keys and text the ledger cannot take', () => {
  it('refuses caller keys in the namespaces the ledger writes under itself', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '5.00');
    const before = await wallet(customerId);
    for (const prefix of ['grant-expiry:', 'grant-keep:', 'hold-capture:', 'usage:']) {
      const key = `${prefix}${randomUUID()}`;
      const attempts = [
        await debit(customerId, '1.00', key),
        await gql(GRANT, { input: { customerId, amount: '1.00', kind: 'PAID', idempotencyKey: key } }),
        await gql('mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed } }', { input: { customerId, amount: '1.00', reason: 'goodwill', idempotencyKey: key } }),
        await gql('mutation ($input: RefundCreditsInput!) { refundCredits(input: $input) { replayed } }', { input: { customerId, amount: '1.00', reason: 'refund', idempotencyKey: key } }),
      ];
      for (const attempt of attempts) {
        expect(attempt.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'idempotencyKey' });
        expect(attempt.errors?.[0]?.message).toContain(prefix);
      }
    }
    // Only a prefix is reserved: the same words elsewhere in a key are fine.
    expect((await debit(customerId, '1.00', `my-usage:${randomUUID()}`)).errors).toBeUndefined();
    expect((await wallet(customerId)).transactions.totalCount).toBe(before.transactions.totalCount + 1);
  });

  it('refuses text PostgreSQL cannot store (NUL, a lone surrogate), naming the field', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '5.00');
    const refusals = [
      [await debit(customerId, '1.00', `nul\u0000key`), 'idempotencyKey'],
      [await gql(DEBIT, { input: { customerId, amount: '1.00', idempotencyKey: randomUUID(), description: 'a\u0000b' } }), 'description'],
      [await gql(DEBIT, { input: { customerId, amount: '1.00', idempotencyKey: randomUUID(), metadata: { deep: ['ok', { 'k\u0000': 1 }] } } }), 'metadata'],
      [await gql(GRANT, { input: { customerId, amount: '1.00', kind: 'PAID', idempotencyKey: randomUUID(), metadata: { note: '\u0000' } } }), 'metadata'],
      [await gql('mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed } }', { input: { customerId, amount: '1.00', reason: 'why\u0000', idempotencyKey: randomUUID() } }), 'reason'],
      // A UTF-16 surrogate without its pair: jsonb refuses it.
      [await gql(DEBIT, { input: { customerId, amount: '1.00', idempotencyKey: randomUUID(), metadata: { text: 'x\ud800' } } }), 'metadata'],
    ] as const;
    for (const [result, field] of refusals) expect(result.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field });
    expect((await wallet(customerId)).balance.amount).toBe('5.00');
  });

  it('a debit whose data the database refuses fails alone: the debits batched with it are charged', async () => {
    const [good, bad] = [await newCustomer(), await newCustomer()];
    await grant(good, '10.00');
    await grant(bad, '10.00');
    const actor = { kind: 'api_key' as const, apiKeyId: null };
    const charge = (customerId: string, occurredAt: Date | null) =>
      server.services.ledger.debit(merchant.id, actor, { customerId, currency: 'USD', amountAttos: 10n ** 18n, idempotencyKey: randomUUID(), occurredAt }).then(
        () => 'charged',
        (error: { code?: string }) => error.code,
      );
    // A time JavaScript has but PostgreSQL's timestamps do not (they start in 4713 BC).
    const outcomes = await Promise.all([...Array.from({ length: 5 }, () => charge(good, null)), charge(bad, new Date('-005000-01-01T00:00:00Z'))]);
    expect(outcomes).toEqual(['charged', 'charged', 'charged', 'charged', 'charged', 'VALIDATION']);
    expect((await wallet(good)).balance.amount).toBe('5.00');
    expect((await wallet(bad)).balance.amount).toBe('10.00');
    await expectIntegrity();
  });
});

describe('corrections', () => {
  it('adjustments and refunds need a reason and leave an audit trail', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '5.00', { kind: 'PAID' });
    await grant(customerId, '5.00', { kind: 'PROMOTIONAL' });
    const noReason = await gql('mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed } }', {
      input: { customerId, amount: '1.00', reason: ' ', idempotencyKey: randomUUID() },
    });
    expect(noReason.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'reason' });

    const adjusted = await gql('mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { transaction { kind reason amount { amount } } wallet { balance { amount } } } }', {
      input: { customerId, amount: '-1.25', reason: 'Duplicate charge on invoice 42', idempotencyKey: randomUUID() },
    });
    expect(adjusted.data!.adjustBalance).toMatchObject({
      transaction: { kind: 'ADJUSTMENT', reason: 'Duplicate charge on invoice 42', amount: { amount: '-1.25' } },
      wallet: { balance: { amount: '8.75' } },
    });

    const tooMuch = await gql('mutation ($input: RefundCreditsInput!) { refundCredits(input: $input) { replayed } }', {
      input: { customerId, amount: '6.00', reason: 'Customer asked', idempotencyKey: randomUUID() },
    });
    expect(tooMuch.errors?.[0]?.extensions).toMatchObject({ code: 'INSUFFICIENT_FUNDS', available: '5.00' });
    const refunded = await gql('mutation ($input: RefundCreditsInput!) { refundCredits(input: $input) { transaction { kind amount { amount } } wallet { balance { amount } } } }', {
      input: { customerId, amount: '5.00', reason: 'Customer asked', idempotencyKey: randomUUID() },
    });
    expect(refunded.data!.refundCredits.wallet.balance.amount).toBe('3.75');

    const audit = await gql('query ($id: ID!) { ledgerTransactions(customerId: $id, filter: { kinds: [ADJUSTMENT, REFUND] }) { totalCount edges { node { kind reason actor { kind apiKeyId } idempotencyKey createdAt } } } }', { id: customerId });
    expect(audit.data!.ledgerTransactions.totalCount).toBe(2);
    for (const { node } of audit.data!.ledgerTransactions.edges) {
      expect(node.reason).toBeTruthy();
      expect(node.actor.apiKeyId).toMatch(/^[0-9a-f-]{36}$/);
      expect(node.idempotencyKey).toBeTruthy();
    }
    await expectIntegrity();
  });
});

describe('integrity check', () => {
  // Entries carry no foreign keys: the check must catch what the keys used to refuse.
  it('reports entries whose transaction, wallet or grant does not resolve', async () => {
    const other = await server.createMerchant('Tampered books');
    const customerOf = async () => (await server.services.customers.create(other.id, { externalId: `c-${randomUUID()}` })).id;
    const [alice, bob] = [await customerOf(), await customerOf()];
    for (const customerId of [alice, bob]) {
      // Two grants, so the debit draws on both and its three legs are rows of ledger_entries.
      await server.services.ledger.grantCredits(other.id, { kind: 'system', apiKeyId: null }, { customerId, currency: 'USD', amountNanos: 500_000_000n, kind: 'PROMOTIONAL', idempotencyKey: randomUUID() });
      await server.services.ledger.grantCredits(other.id, { kind: 'system', apiKeyId: null }, { customerId, currency: 'USD', amountNanos: 5_000_000_000n, kind: 'PAID', idempotencyKey: randomUUID() });
      await server.services.ledger.debit(other.id, { kind: 'api_key', apiKeyId: null }, { customerId, currency: 'USD', amountAttos: 10n ** 18n, idempotencyKey: `d-${customerId}` });
    }
    const violations = async () => (await server.services.ledgerQueries.integrity(other.id)).violations;
    expect(await violations()).toEqual([]);

    // Two legs that balance each other but name a transaction nobody wrote.
    const [revenue] = await sql<{ id: string }>(`SELECT id FROM ledger_accounts WHERE merchant_id = $1 AND kind = 'USAGE_REVENUE'`, [other.id]);
    const nobody = randomUUID();
    await sql(`INSERT INTO ledger_entries (transaction_id, leg, merchant_id, account_id, currency, amount) SELECT $1, u.leg, $2, $3, 'USD', u.amount
      FROM unnest(ARRAY[0, 1]::smallint[], ARRAY[7, -7]::bigint[]) AS u(leg, amount)`, [nobody, other.id, revenue!.id]);
    expect((await violations()).sort()).toEqual([0, 1].map((leg) => `entry ${nobody}:${leg} names a transaction that does not exist`));
    await sql(`DELETE FROM ledger_entries WHERE transaction_id = $1`, [nobody]);

    // Alice's debit leg moved onto Bob's wallet.
    const [leg] = await sql<{ transaction_id: string; leg: number; wallet_id: string }>(
      `SELECT e.transaction_id, e.leg, e.wallet_id FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
       WHERE t.merchant_id = $1 AND t.idempotency_key = $2 AND e.wallet_id IS NOT NULL`, [other.id, `d-${alice}`]);
    const moved = [leg!.transaction_id, leg!.leg];
    await sql(`UPDATE ledger_entries SET wallet_id = (SELECT id FROM wallets WHERE customer_id = $3) WHERE transaction_id = $1 AND leg = $2`, [...moved, bob]);
    expect(await violations()).toContain(`entry ${leg!.transaction_id}:${leg!.leg} names a wallet other than its transaction's`);
    await sql(`UPDATE ledger_entries SET wallet_id = $3 WHERE transaction_id = $1 AND leg = $2`, [...moved, leg!.wallet_id]);
    expect(await violations()).toEqual([]);

    // A two-leg debit (its legs on its own row) whose counter-account is gone.
    const { transaction } = await server.services.ledger.debit(other.id, { kind: 'api_key', apiKeyId: null }, { customerId: alice, currency: 'USD', amountAttos: 10n ** 17n, idempotencyKey: `small-${alice}` });
    await sql(`UPDATE ledger_transactions SET counter_account_id = $2 WHERE id = $1`, [transaction.id, nobody]);
    expect(await violations()).toEqual([`entry ${transaction.id}:1 names a counter-account that does not exist`]);
    await sql(`UPDATE ledger_transactions SET counter_account_id = $2 WHERE id = $1`, [transaction.id, revenue!.id]);
    expect(await violations()).toEqual([]);
  });

  it('compares cached balances and grants with their legs, for this merchant only, wherever a leg says it belongs', async () => {
    const other = await server.createMerchant('Cached books');
    const customerId = (await server.services.customers.create(other.id, { externalId: `c-${randomUUID()}` })).id;
    await server.services.ledger.grantCredits(other.id, { kind: 'system', apiKeyId: null }, { customerId, currency: 'USD', amountNanos: 500_000_000n, kind: 'PROMOTIONAL', idempotencyKey: randomUUID() });
    await server.services.ledger.grantCredits(other.id, { kind: 'system', apiKeyId: null }, { customerId, currency: 'USD', amountNanos: 5_000_000_000n, kind: 'PAID', idempotencyKey: randomUUID() });
    await server.services.ledger.debit(other.id, { kind: 'api_key', apiKeyId: null }, { customerId, currency: 'USD', amountAttos: 10n ** 18n, idempotencyKey: `d-${customerId}` });
    const violations = async (merchantId = other.id) => (await server.services.ledgerQueries.integrity(merchantId)).violations.sort();
    expect(await violations()).toEqual([]);
    const [wallet] = await sql<{ id: string }>(`SELECT id FROM wallets WHERE customer_id = $1`, [customerId]);
    const [paid] = await sql<{ id: string }>(`SELECT id FROM credit_grants WHERE customer_id = $1 AND kind = 'PAID'`, [customerId]);

    // A cached balance off by one nano: wrong against its entries and against its grants.
    await sql(`UPDATE wallets SET balance = balance + 1 WHERE id = $1`, [wallet!.id]);
    expect(await violations()).toEqual([
      `wallet ${wallet!.id} balance 4500000001 but its grants hold 4500000000`,
      `wallet ${wallet!.id} caches balance 4500000001 but its entries sum to 4500000000`,
    ]);
    // Another merchant's report does not read this merchant's wallets.
    expect((await server.services.ledgerQueries.integrity(merchant.id)).violations.filter((v) => v.includes(wallet!.id))).toEqual([]);
    await sql(`UPDATE wallets SET balance = balance - 1 WHERE id = $1`, [wallet!.id]);

    // A grant's cached remaining off by one.
    await sql(`UPDATE credit_grants SET remaining = remaining - 1 WHERE id = $1`, [paid!.id]);
    expect(await violations()).toEqual([
      `grant ${paid!.id} caches remaining 4499999999 but its entries sum to 4500000000`,
      `wallet ${wallet!.id} balance 4500000000 but its grants hold 4499999999`,
    ]);
    await sql(`UPDATE credit_grants SET remaining = remaining + 1 WHERE id = $1`, [paid!.id]);

    // A leg relabelled as another merchant's: here its transaction no longer balances, but it
    // still counts in its wallet's and grant's sums (no cached total looks wrong); the other
    // merchant's report names the leg.
    const [leg] = await sql<{ transaction_id: string; leg: number; amount: string }>(
      `SELECT transaction_id, leg, amount::text FROM ledger_entries WHERE wallet_id = $1 AND grant_id = $2`, [wallet!.id, paid!.id]);
    await sql(`UPDATE ledger_entries SET merchant_id = $3 WHERE transaction_id = $1 AND leg = $2`, [leg!.transaction_id, leg!.leg, merchant.id]);
    expect(await violations()).toEqual([`transaction ${leg!.transaction_id} entries sum to ${-BigInt(leg!.amount)}, not 0`]);
    expect(await violations(merchant.id)).toContain(`entry ${leg!.transaction_id}:${leg!.leg} belongs to another merchant than its transaction`);
    await sql(`UPDATE ledger_entries SET merchant_id = $3 WHERE transaction_id = $1 AND leg = $2`, [leg!.transaction_id, leg!.leg, other.id]);
    expect(await violations()).toEqual([]);
  });
});

describe('concurrency in one process', () => {
  it('200 simultaneous debits against credit for 150: exactly 150 succeed, no overdraft, replays harmless', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '1.50');
    const keys = Array.from({ length: 200 }, () => randomUUID());
    const results = await Promise.all(keys.map((key) => server.services.ledger.debit(merchant.id, { kind: 'api_key', apiKeyId: null }, {
      customerId, currency: 'USD', amountAttos: 10_000_000n * 1_000_000_000n, idempotencyKey: key,
    }).then(() => 'ok', (error: any) => error.code)));
    expect(results.filter((r) => r === 'ok')).toHaveLength(150);
    expect(results.filter((r) => r === 'INSUFFICIENT_FUNDS')).toHaveLength(50);
    const replays = await Promise.all(keys.slice(0, 100).map((key) => server.services.ledger.debit(merchant.id, { kind: 'api_key', apiKeyId: null }, {
      customerId, currency: 'USD', amountAttos: 10_000_000n * 1_000_000_000n, idempotencyKey: key,
    }).then((r) => (r.replayed ? 'replayed' : 'charged'), (error: any) => error.code)));
    expect(replays.filter((r) => r === 'charged')).toHaveLength(0);
    expect((await wallet(customerId)).balance.amount).toBe('0.00');
    await expectIntegrity();
  });
});

describe('replays inside a batch of new debits', () => {
  type Lanes = { lanes: { replaySeenAt: number }[] };
  const debit = (customerId: string, key: string, cents: bigint) => server.services.ledger.debit(merchant.id, { kind: 'api_key', apiKeyId: null }, {
    customerId, currency: 'USD', amountAttos: cents * 10_000_000n * 1_000_000_000n, idempotencyKey: key,
  }).then((r) => (r.replayed ? `replayed ${r.transaction.id}` : `charged ${r.transaction.balanceAfter}`), (error: any) => error.code);

  it('are answered from the first result while the others are charged once, whether the keys were taken as new or read first', async () => {
    const lanes = (server.services.ledger as unknown as Lanes).lanes;
    for (const lane of lanes) lane.replaySeenAt = -Infinity;
    const customerId = await newCustomer();
    await grant(customerId, '1.00');
    const [first, second] = [randomUUID(), randomUUID()];
    const earlier = await Promise.all([debit(customerId, first, 10n), debit(customerId, second, 10n)]);
    expect(earlier.every((result) => result.startsWith('charged'))).toBe(true);
    const ids = await Promise.all([first, second].map(async (key) => (await server.services.ledger.debit(merchant.id, { kind: 'api_key', apiKeyId: null }, {
      customerId, currency: 'USD', amountAttos: 10n * 10_000_000n * 1_000_000_000n, idempotencyKey: key,
    })).transaction.id));
    // One batch: two new debits around a replay and a key reused for another amount.
    const mixed = await Promise.all([debit(customerId, randomUUID(), 5n), debit(customerId, first, 10n), debit(customerId, second, 20n), debit(customerId, randomUUID(), 5n)]);
    expect(mixed[1]).toBe(`replayed ${ids[0]}`);
    expect(mixed[2]).toBe('CONFLICT');
    expect([mixed[0], mixed[3]].sort()).toEqual(['charged 700000000', 'charged 750000000']);
    // The lane met a used key, so its next batches read their keys first: the same answers.
    expect(lanes.some((lane) => lane.replaySeenAt > -Infinity)).toBe(true);
    const again = await Promise.all([debit(customerId, first, 10n), debit(customerId, randomUUID(), 5n), debit(customerId, second, 20n)]);
    expect(again).toEqual([`replayed ${ids[0]}`, 'charged 650000000', 'CONFLICT']);
    expect((await wallet(customerId)).balance.amount).toBe('0.65');
    await expectIntegrity();
  });

  it('are answered from the first result when the credit is gone, instead of being refused as new debits', async () => {
    const lanes = (server.services.ledger as unknown as Lanes).lanes;
    const customerId = await newCustomer();
    await grant(customerId, '0.30');
    const [first, second] = [randomUUID(), randomUUID()];
    const charged = await Promise.all([debit(customerId, first, 10n), debit(customerId, second, 20n)]);
    expect(charged.every((result) => result.startsWith('charged'))).toBe(true);
    for (const lane of lanes) lane.replaySeenAt = -Infinity;
    // Nothing left: taken as new, the replays would not fit; their keys are read and they replay.
    const again = await Promise.all([debit(customerId, first, 10n), debit(customerId, randomUUID(), 1n), debit(customerId, second, 5n)]);
    expect(again[0]).toMatch(/^replayed /);
    expect(again.slice(1)).toEqual(['INSUFFICIENT_FUNDS', 'CONFLICT']);
    expect((await wallet(customerId)).balance.amount).toBe('0.00');
    await expectIntegrity();
  });
});

describe('customers not seen before', () => {
  it('a burst for a customer not yet cached is checked once for all and charged; callers of another merchant all get NOT_FOUND', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '1.00');
    const fresh = server.services.ledger;
    (fresh as unknown as { knownCustomers: Map<string, string> }).knownCustomers.clear();
    const charge = (id: string, merchantId = merchant.id) => fresh.debit(merchantId, { kind: 'api_key', apiKeyId: null }, {
      customerId: id, currency: 'USD', amountAttos: 1_000_000n * 1_000_000_000n, idempotencyKey: randomUUID(),
    }).then(() => 'ok', (error: any) => error.code);
    expect(new Set(await Promise.all(Array.from({ length: 50 }, () => charge(customerId))))).toEqual(new Set(['ok']));
    const other = await server.createMerchant(`other-${randomUUID().slice(0, 8)}`);
    expect(new Set(await Promise.all(Array.from({ length: 20 }, () => charge(customerId, other.id))))).toEqual(new Set(['NOT_FOUND']));
    expect(new Set(await Promise.all(Array.from({ length: 5 }, () => charge(randomUUID()))))).toEqual(new Set(['NOT_FOUND']));
    expect((await wallet(customerId)).balance.amount).toBe('0.95');
    await expectIntegrity();
  });
});

describe('grants, page by page', () => {
  const PAGE = `query ($id: ID!, $first: Int, $after: String, $last: Int, $all: Boolean) { wallet(customerId: $id) {
    grants(first: $first, after: $after, last: $last, includeInactive: $all) { totalCount pageInfo { hasNextPage endCursor } nodes { id } edges { node { id } } } } }`;

  it('are a connection, oldest first: every grant once over the pages, however many a wallet has had', async () => {
    const customerId = await newCustomer();
    const ids: string[] = [];
    for (let n = 0; n < 25; n++) ids.push((await grant(customerId, '0.10')).grant.id);
    await debit(customerId, '0.10'); // the oldest is used up: live grants are the other 24
    const seen: string[] = [];
    let after: string | null = null;
    for (let pages = 0; pages < 3; pages++) {
      const result = await gql<{ wallet: any }>(PAGE, { id: customerId, first: 10, after, all: true });
      expect(result.errors).toBeUndefined();
      const grants: { totalCount: number; pageInfo: { hasNextPage: boolean; endCursor: string }; nodes: { id: string }[]; edges: { node: { id: string } }[] } = result.data!.wallet.grants;
      expect(grants.totalCount).toBe(25);
      expect(grants.nodes).toEqual(grants.edges.map((edge) => edge.node));
      seen.push(...grants.nodes.map((node) => node.id));
      expect(grants.pageInfo.hasNextPage).toBe(pages < 2);
      after = grants.pageInfo.endCursor;
    }
    expect(seen).toEqual(ids);
    const live = (await gql(PAGE, { id: customerId, first: 100 })).data!.wallet.grants;
    expect(live.totalCount).toBe(24);
    expect(live.nodes.map((node: { id: string }) => node.id)).toEqual(ids.slice(1));
    expect((await gql(PAGE, { id: customerId, last: 2, all: true })).data!.wallet.grants.nodes.map((node: { id: string }) => node.id)).toEqual(ids.slice(-2));
  });

  it('are costed by their page: a customer token cannot have hundreds of aliases each list every grant', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '1.00');
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    const aliases = Array.from({ length: 400 }, (_, n) => `w${n}: wallet(customerId: $id) { grants(includeInactive: true) { nodes { id } } }`).join('\n');
    const refused = await gql(`query ($id: ID!) { ${aliases} }`, { id: customerId }, token);
    expect(refused.data).toBeUndefined();
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_COMPLEX' });
  });
});

describe('access', () => {
  it('a customer token reads its own wallet only, and cannot move money', async () => {
    const customerId = await newCustomer();
    const otherId = await newCustomer();
    await grant(customerId, '2.00');
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    const OWN = `query ($id: ID!) { wallet(customerId: $id) { balance { amount } transactions(first: 5) { edges { node { kind amount { amount } description } } } } }`;
    const own = await gql(OWN, { id: customerId }, token);
    expect(own.errors).toBeUndefined();
    expect(own.data!.wallet).toEqual({ balance: { amount: '2.00' }, transactions: { edges: [{ node: { kind: 'GRANT', amount: { amount: '2.00' }, description: 'paid credits' } }] } });
    // The audit trail's merchant-side fields are refused to the customer, each by name.
    for (const field of ['reason', 'metadata', 'actor { kind }', 'entries { amount { amount } }']) {
      const refused = await gql(`query ($id: ID!) { wallet(customerId: $id) { transactions(first: 5) { edges { node { ${field} } } } } }`, { id: customerId }, token);
      expect(refused.errors?.[0]?.extensions.code, field).toBe('FORBIDDEN');
    }
    expect((await wallet(customerId, 'USD')).transactions.edges[0].node.actor).toEqual({ kind: 'api_key', apiKeyId: expect.any(String) });
    // Nor do they reach the customer through the grants: an adjustment's reason stays on its
    // transaction, and a grant's metadata (its transaction's) is the merchant's.
    const adjusted = await gql('mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { transaction { reason } } }', {
      input: { customerId, amount: '0.50', reason: 'goodwill: customer complained twice', idempotencyKey: randomUUID() },
    });
    expect(adjusted.data!.adjustBalance.transaction.reason).toBe('goodwill: customer complained twice');
    await grant(customerId, '1.00', { metadata: { internalNote: 'churn risk' } });
    const grants = await gql(`query ($id: ID!) { wallet(customerId: $id) { grants { nodes { kind description amount { amount } } } } }`, { id: customerId }, token);
    expect(grants.data!.wallet.grants.nodes).toEqual(expect.arrayContaining([
      { kind: 'PROMOTIONAL', description: 'Balance adjustment', amount: { amount: '0.50' } },
      { kind: 'PAID', description: null, amount: { amount: '1.00' } },
    ]));
    expect(JSON.stringify(grants.data)).not.toContain('complained');
    const metadata = await gql(`query ($id: ID!) { wallet(customerId: $id) { grants { nodes { metadata } } } }`, { id: customerId }, token);
    expect(metadata.errors?.[0]?.extensions.code).toBe('FORBIDDEN');
    expect((await wallet(customerId)).grants.length).toBe(3);
    expect((await gql(WALLET, { id: otherId }, token)).errors?.[0]?.extensions.code).toBe('FORBIDDEN');
    expect((await gql(DEBIT, { input: { customerId, amount: '1', idempotencyKey: 'x' } }, token)).errors?.[0]?.extensions.code).toBe('FORBIDDEN');
    const stranger = await server.createMerchant('Stranger');
    expect((await gql(WALLET, { id: customerId }, stranger.secret)).errors?.[0]?.extensions.code).toBe('NOT_FOUND');
    expect((await gql(GRANT, { input: { customerId, amount: '1', kind: 'PAID', idempotencyKey: 'y' } }, stranger.secret)).errors?.[0]?.extensions.code).toBe('NOT_FOUND');
  });

  it('reading a wallet not used yet writes nothing: it reads as empty under the id its first credit stores it with', async () => {
    const customerId = await newCustomer();
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    const storedWallets = async () => (await sql<{ currency: string; id: string }>('SELECT currency, id FROM wallets WHERE customer_id = $1 ORDER BY currency', [customerId]));
    const OWN = `query ($id: ID!, $currency: String) { wallet(customerId: $id, currency: $currency) {
      id currency balance { amount } available { amount } held { amount } grants { nodes { id } } transactions(first: 5) { totalCount } } }`;
    const read = async (currency: string) => (await gql(OWN, { id: customerId, currency }, token)).data!.wallet;
    const unused = await Promise.all(['USD', 'EUR', 'JPY', 'GBP'].map(read));
    expect(unused.map((read) => [read.currency, read.balance.amount, read.available.amount, read.held.amount, read.grants.nodes, read.transactions.totalCount])).toEqual([
      ['USD', '0.00', '0.00', '0.00', [], 0],
      ['EUR', '0.00', '0.00', '0.00', [], 0],
      ['JPY', '0.00', '0.00', '0.00', [], 0],
      ['GBP', '0.00', '0.00', '0.00', [], 0],
    ]);
    expect(new Set(unused.map((read) => read.id)).size).toBe(4);
    expect((await gql('query ($id: ID!) { wallets(customerId: $id) { currency } }', { id: customerId }, token)).data!.wallets).toEqual([]);
    expect(await storedWallets()).toEqual([]);

    const granted = await gql(`mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { wallet { id balance { amount } } } }`, {
      input: { customerId, amount: '1.50', kind: 'PAID', currency: 'EUR', idempotencyKey: randomUUID() },
    });
    expect(granted.data!.grantCredits.wallet).toEqual({ id: unused[1].id, balance: { amount: '1.50' } });
    expect(await storedWallets()).toEqual([{ currency: 'EUR', id: unused[1].id }]);
    expect((await read('EUR')).id).toBe(unused[1].id);
    // Another customer's wallet in the same currency is another id.
    expect((await wallet(await newCustomer(), 'EUR')).id).not.toBe(unused[1].id);
  });

  it('the migration relabels the grants of adjustments written before, and only those', async () => {
    const customerId = await newCustomer();
    await gql('mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed } }', {
      input: { customerId, amount: '0.25', reason: 'old reason', idempotencyKey: randomUUID() },
    });
    await grant(customerId, '1.00', { description: 'Welcome bonus' });
    // As the earlier code wrote it: the reason as the grant's description.
    await sql(`UPDATE credit_grants SET description = 'old reason' WHERE customer_id = $1 AND kind = 'PROMOTIONAL'`, [customerId]);
    const migration = readFileSync(new URL('../../../prisma/migrations/20261202220000_adjustment_grants_neutral_label/migration.sql', import.meta.url), 'utf8');
    await server.services.db.withConnection((connection) => connection.exec(migration));
    const labels = await sql<{ kind: string; description: string }>('SELECT kind::text AS kind, description FROM credit_grants WHERE customer_id = $1 ORDER BY kind::text', [customerId]);
    expect(labels).toEqual([{ kind: 'PROMOTIONAL', description: 'Balance adjustment' }, { kind: 'PAID', description: 'Welcome bonus' }].sort((a, b) => a.kind.localeCompare(b.kind)));
  });

  it('balanceUpdated pushes each committed change to the customer', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '3.00');
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    const client = createClient({ url: server.url.replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${token}` }, retryAttempts: 0 });
    try {
      const events = client.iterate({ query: 'subscription ($id: ID!) { balanceUpdated(customerId: $id) { customerId balance { amount currency } available { amount } transactionIds wallet { balance { amount } } } }', variables: { id: customerId } });
      const next = events.next();
      await waitForSubscribers(server, walletTopic(customerId), 1);
      const charged = await debit(customerId, '1.25');
      const event = (await next).value as any;
      expect(event.data.balanceUpdated).toEqual({
        customerId,
        balance: { amount: '1.75', currency: 'USD' },
        available: { amount: '1.75' },
        transactionIds: [charged.data!.debitCredits.transaction.id],
        wallet: { balance: { amount: '1.75' } },
      });
      await events.return?.();
    } finally {
      await client.dispose();
    }
  });

  it('balanceUpdated refuses a customer token watching another customer (FORBIDDEN) and another merchant (NOT_FOUND)', async () => {
    const [customerId, otherId] = [await newCustomer(), await newCustomer()];
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    const stranger = await server.createMerchant('Other');
    const subscribe = async (credential: string, id: string) => {
      const client = createClient({ url: server.url.replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${credential}` }, retryAttempts: 0 });
      try {
        // Accepted, it would wait for a change that never comes: a refusal answers at once.
        const first = client.iterate({ query: 'subscription ($id: ID!) { balanceUpdated(customerId: $id) { customerId balance { amount } } }', variables: { id } }).next();
        const outcome = await Promise.race([
          first.then((value) => ({ value }), (error: unknown) => ({ error })),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no refusal within 5 s')), 5000)),
        ]);
        const errors = 'error' in outcome ? (outcome.error as { extensions?: { code?: string } }[]) : (outcome.value.value as { errors?: { extensions: { code: string } }[] }).errors;
        return { errors, data: 'value' in outcome ? (outcome.value.value as { data?: unknown }).data : undefined };
      } finally {
        await client.dispose();
      }
    };
    const forbidden = await subscribe(token, otherId);
    expect(forbidden.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(forbidden.data ?? null).toBeNull();
    // Another merchant's key: the customer is not found, exactly as one that does not exist.
    const foreign = await subscribe(stranger.secret, customerId);
    expect(foreign.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    expect(foreign.data ?? null).toBeNull();
    expect((await subscribe(stranger.secret, randomUUID())).errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    // Nothing was left listening on the refused topics.
    expect(server.services.pubsub.subscriberCount(walletTopic(otherId))).toBe(0);
    expect(server.services.pubsub.subscriberCount(walletTopic(customerId))).toBe(0);
  });
});

describe('balanceUpdated for every kind of wallet change', () => {
  const HOLD = `mutation ($input: CreateHoldInput!) { createHold(input: $input) { replayed hold { id } } }`;
  const CAPTURE = 'mutation ($id: ID!, $amount: Decimal) { captureHold(id: $id, amount: $amount) { replayed transaction { id kind } } }';
  const RELEASE = 'mutation ($id: ID!) { releaseHold(id: $id) { status } }';
  const ADJUST = 'mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed transaction { id kind } } }';
  const REFUND = 'mutation ($input: RefundCreditsInput!) { refundCredits(input: $input) { replayed transaction { id kind } } }';

  it('grants, adjustments both ways, refunds and holds (created, captured, released) each publish one event with the new amounts', async () => {
    const [customerId, bystander] = [await newCustomer(), await newCustomer()];
    const events = balanceEvents(customerId);
    const elsewhere = balanceEvents(bystander);
    const expected: Record<string, unknown>[] = [];
    /** Runs one operation and checks it published exactly one more event, for this customer's USD wallet. */
    const step = async <T>(run: () => Promise<T>, event: (result: T) => { balance: string; available: string; transactionIds: string[] }) => {
      const result = await run();
      await settled();
      expected.push({ customerId, currency: 'USD', overdraftLimit: '0.00', ...event(result) });
      expect(events.received).toEqual(expected.map((fields) => expect.objectContaining(fields)));
      return result;
    };
    const ok = (result: { errors?: unknown; data?: Record<string, any> | null }) => {
      expect(result.errors).toBeUndefined();
      return result.data!;
    };

    const grantKey = randomUUID();
    const granted = await step(() => grant(customerId, '10.00', { idempotencyKey: grantKey }), (r) => ({ balance: '10.00', available: '10.00', transactionIds: [r.transaction.id] }));
    expect(granted.transaction.kind).toBe('GRANT');

    const added = await step(
      async () => ok(await gql(ADJUST, { input: { customerId, amount: '2.50', reason: 'Goodwill', idempotencyKey: randomUUID() } })).adjustBalance,
      (r) => ({ balance: '12.50', available: '12.50', transactionIds: [r.transaction.id] }),
    );
    expect(added.transaction.kind).toBe('ADJUSTMENT');
    const removed = await step(
      async () => ok(await gql(ADJUST, { input: { customerId, amount: '-1.50', reason: 'Correction', idempotencyKey: randomUUID() } })).adjustBalance,
      (r) => ({ balance: '11.00', available: '11.00', transactionIds: [r.transaction.id] }),
    );
    expect(removed.transaction.kind).toBe('ADJUSTMENT');
    expect(removed.transaction.id).not.toBe(added.transaction.id);

    const refunded = await step(
      async () => ok(await gql(REFUND, { input: { customerId, amount: '3.00', reason: 'Customer asked', idempotencyKey: randomUUID() } })).refundCredits,
      (r) => ({ balance: '8.00', available: '8.00', transactionIds: [r.transaction.id] }),
    );
    expect(refunded.transaction.kind).toBe('REFUND');

    // A hold moves no money: the balance stays, what is available drops, no transaction.
    const held = await step(
      async () => ok(await gql(HOLD, { input: { customerId, amount: '5.00', idempotencyKey: randomUUID() } })).createHold,
      () => ({ balance: '8.00', available: '3.00', transactionIds: [] }),
    );
    const captured = await step(
      async () => ok(await gql(CAPTURE, { id: held.hold.id, amount: '2.00' })).captureHold,
      (r) => ({ balance: '6.00', available: '6.00', transactionIds: [r.transaction.id] }),
    );
    expect(captured.transaction.kind).toBe('HOLD_CAPTURE');

    const second = await step(
      async () => ok(await gql(HOLD, { input: { customerId, amount: '4.00', idempotencyKey: randomUUID() } })).createHold,
      () => ({ balance: '6.00', available: '2.00', transactionIds: [] }),
    );
    await step(
      async () => ok(await gql(RELEASE, { id: second.hold.id })).releaseHold,
      () => ({ balance: '6.00', available: '6.00', transactionIds: [] }),
    );

    // Nothing moved, nothing published: a replayed grant, a refused refund, a hold released again.
    const replayed = await gql(GRANT, { input: { customerId, amount: '10.00', kind: 'PAID', idempotencyKey: grantKey } });
    expect(replayed.data!.grantCredits).toMatchObject({ replayed: true, transaction: { id: granted.transaction.id } });
    expect((await gql(REFUND, { input: { customerId, amount: '99.00', reason: 'Too much', idempotencyKey: randomUUID() } })).errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    expect(ok(await gql(RELEASE, { id: second.hold.id })).releaseHold.status).toBe('RELEASED');
    await settled();
    expect(events.received).toHaveLength(expected.length);
    expect(elsewhere.received).toEqual([]);
    expect((await wallet(customerId)).balance.amount).toBe('6.00');
    await events.stop();
    await elsewhere.stop();
  });

  it('an expiry a hold or overdraft operation writes on its way is announced with its transaction, even when the operation itself changes nothing', async () => {
    const ok = (result: { errors?: unknown; data?: Record<string, any> | null }) => {
      expect(result.errors).toBeUndefined();
      return result.data!;
    };
    /** 3.00 of promotional credit that expires in a minute, beside 1.00 paid. */
    const expiringCustomer = async () => {
      const customerId = await newCustomer();
      await grant(customerId, '3.00', { kind: 'PROMOTIONAL', expiresAt: new Date(now.getTime() + 60_000).toISOString() });
      await grant(customerId, '1.00');
      return customerId;
    };
    const [releasedAgain, holding, replayingHold, replayingCapture, limiting] = [
      await expiringCustomer(), await expiringCustomer(), await expiringCustomer(), await expiringCustomer(), await expiringCustomer(),
    ];
    const released = ok(await gql(HOLD, { input: { customerId: releasedAgain, amount: '0.50', idempotencyKey: randomUUID() } })).createHold.hold;
    ok(await gql(RELEASE, { id: released.id }));
    const holdInput = { customerId: replayingHold, amount: '0.50', ttlSeconds: 3600, idempotencyKey: randomUUID() };
    ok(await gql(HOLD, { input: holdInput }));
    const toCapture = ok(await gql(HOLD, { input: { customerId: replayingCapture, amount: '0.50', ttlSeconds: 3600, idempotencyKey: randomUUID() } })).createHold.hold;
    ok(await gql(CAPTURE, { id: toCapture.id, amount: '0.50' }));
    const customers = [releasedAgain, holding, replayingHold, replayingCapture, limiting];
    const events = customers.map((customerId) => balanceEvents(customerId));
    now = new Date(now.getTime() + 120_000);

    expect(ok(await gql(RELEASE, { id: released.id })).releaseHold.status).toBe('RELEASED');
    ok(await gql(HOLD, { input: { customerId: holding, amount: '0.25', idempotencyKey: randomUUID() } }));
    expect(ok(await gql(HOLD, { input: holdInput })).createHold.replayed).toBe(true);
    expect(ok(await gql(CAPTURE, { id: toCapture.id, amount: '0.50' })).captureHold.replayed).toBe(true);
    ok(await gql('mutation ($id: ID!) { setOverdraftLimit(customerId: $id, limit: "1.00") { id } }', { id: limiting }));
    await settled();

    const expiryOf = async (customerId: string) => (await wallet(customerId)).transactions.edges.find((edge: any) => edge.node.kind === 'EXPIRY').node.id;
    const expected = [
      { balance: '1.00', available: '1.00' },
      { balance: '1.00', available: '0.75' },
      { balance: '1.00', available: '0.50' },
      // The capture spent the promotional credit first: 2.50 of it expired.
      { balance: '1.00', available: '1.00' },
      { balance: '1.00', available: '1.00', overdraftLimit: '1.00' },
    ];
    for (const [n, customerId] of customers.entries()) {
      expect(events[n]!.received, customerId).toEqual([expect.objectContaining({ ...expected[n], transactionIds: [await expiryOf(customerId)] })]);
    }
    await Promise.all(events.map((subscription) => subscription.stop()));
  });
});

describe('wallet transactions', () => {
  const PAGE = `query ($id: ID!, $first: Int, $after: String, $last: Int, $before: String, $filter: LedgerTransactionFilter) { wallet(customerId: $id) {
    transactions(first: $first, after: $after, last: $last, before: $before, filter: $filter) {
      totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id kind walletId createdAt } } } } }`;
  const tick = (ms = 1000) => {
    now = new Date(now.getTime() + ms);
  };
  async function page(customerId: string, args: Record<string, unknown>) {
    const result = await gql(PAGE, { id: customerId, ...args });
    expect(result.errors).toBeUndefined();
    return result.data!.wallet.transactions;
  }
  /** Follows `after` from the first page to the last, returning each page's ids and flags. */
  async function pageThrough(customerId: string, first: number, filter?: Record<string, unknown>) {
    const pages: { ids: string[]; hasNextPage: boolean; totalCount: number }[] = [];
    let after: string | undefined;
    for (let guard = 0; guard < 50; guard++) {
      const connection = await page(customerId, { first, after, filter });
      const ids = connection.edges.map((edge: any) => edge.node.id);
      pages.push({ ids, hasNextPage: connection.pageInfo.hasNextPage, totalCount: connection.totalCount });
      if (ids.length > 0) expect(connection.pageInfo.endCursor).toBe(connection.edges.at(-1).cursor);
      if (!connection.pageInfo.hasNextPage) return pages;
      after = connection.pageInfo.endCursor;
    }
    throw new Error('paging did not end');
  }

  it('pages newest first through every kind of transaction, each exactly once, and filters by kind, key and time', async () => {
    const [customerId, otherId] = [await newCustomer(), await newCustomer()];
    const ok = (result: { errors?: unknown; data?: Record<string, any> | null }) => {
      expect(result.errors).toBeUndefined();
      return result.data!;
    };
    const made: { id: string; kind: string; at: Date }[] = [];
    const record = (id: string, kind: string) => {
      made.push({ id, kind, at: now });
      tick();
    };
    const usageKey = randomUUID();

    record((await grant(customerId, '10.00')).transaction.id, 'GRANT');
    record((await grant(customerId, '1.00', { kind: 'PROMOTIONAL', expiresAt: new Date(now.getTime() + 30_000).toISOString() })).transaction.id, 'GRANT');
    record(ok(await debit(customerId, '0.50', usageKey)).debitCredits.transaction.id, 'USAGE');
    tick(60_000);
    // Reading the wallet expires the promotional credit left over, as an EXPIRY of its own.
    const expiry = (await page(customerId, { first: 5, filter: { kinds: ['EXPIRY'] } })).edges;
    expect(expiry).toHaveLength(1);
    record(expiry[0].node.id, 'EXPIRY');
    const adjust = (amount: string) => gql('mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { transaction { id } } }', {
      input: { customerId, amount, reason: 'Correction', idempotencyKey: randomUUID() },
    });
    record(ok(await adjust('2.00')).adjustBalance.transaction.id, 'ADJUSTMENT');
    record(ok(await adjust('-0.25')).adjustBalance.transaction.id, 'ADJUSTMENT');
    record(ok(await gql('mutation ($input: RefundCreditsInput!) { refundCredits(input: $input) { transaction { id } } }', {
      input: { customerId, amount: '1.00', reason: 'Customer asked', idempotencyKey: randomUUID() },
    })).refundCredits.transaction.id, 'REFUND');
    const hold = ok(await gql('mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }', { input: { customerId, amount: '3.00', idempotencyKey: randomUUID() } })).createHold.hold;
    record(ok(await gql('mutation ($id: ID!) { captureHold(id: $id, amount: "1.00") { transaction { id } } }', { id: hold.id })).captureHold.transaction.id, 'HOLD_CAPTURE');
    record(ok(await debit(customerId, '0.10')).debitCredits.transaction.id, 'USAGE');
    // Neither another customer's nor another currency's transactions belong to this wallet.
    await grant(otherId, '1.00');
    await grant(customerId, '4.00', { currency: 'EUR' });

    const newestFirst = [...made].reverse().map((t) => t.id);
    expect(new Set(newestFirst).size).toBe(9);
    const all = await page(customerId, { first: 100 });
    expect(all.totalCount).toBe(9);
    expect(all.edges.map((edge: any) => edge.node.id)).toEqual(newestFirst);
    expect(all.edges.map((edge: any) => edge.node.kind)).toEqual([...made].reverse().map((t) => t.kind));
    expect(new Set(all.edges.map((edge: any) => edge.node.walletId)).size).toBe(1);
    expect(all.pageInfo.hasNextPage).toBe(false);

    // Pages of 4 (4, 4, 1) and of 3 (an exact fit: the last full page has no next page).
    for (const [size, shape] of [[4, [4, 4, 1]], [3, [3, 3, 3]], [9, [9]], [8, [8, 1]]] as const) {
      const pages = await pageThrough(customerId, size);
      expect(pages.map((p) => p.ids.length), `first: ${size}`).toEqual(shape);
      expect(pages.map((p) => p.hasNextPage), `first: ${size}`).toEqual(shape.map((_, i) => i < shape.length - 1));
      expect(pages.flatMap((p) => p.ids), `first: ${size}`).toEqual(newestFirst);
      expect(pages.every((p) => p.totalCount === 9)).toBe(true);
    }
    // Any edge's cursor resumes right after that edge.
    const third = all.edges[2].cursor;
    expect((await page(customerId, { first: 2, after: third })).edges.map((edge: any) => edge.node.id)).toEqual(newestFirst.slice(3, 5));
    expect((await page(customerId, { first: 5, after: all.edges[8].cursor })).edges).toEqual([]);
    // Backwards from the end: the oldest, still newest first.
    const oldest = await page(customerId, { last: 2 });
    expect(oldest.edges.map((edge: any) => edge.node.id)).toEqual(newestFirst.slice(7));
    expect(oldest.pageInfo.hasPreviousPage).toBe(true);
    expect((await page(customerId, { last: 3, before: oldest.pageInfo.startCursor })).edges.map((edge: any) => edge.node.id)).toEqual(newestFirst.slice(4, 7));

    // Filters: only the kinds asked for, in the same order, paged and counted the same way.
    const ofKinds = (...kinds: string[]) => [...made].reverse().filter((t) => kinds.includes(t.kind)).map((t) => t.id);
    for (const kinds of [['USAGE'], ['ADJUSTMENT', 'REFUND'], ['EXPIRY', 'HOLD_CAPTURE'], ['GRANT', 'USAGE']]) {
      const pages = await pageThrough(customerId, 2, { kinds });
      const expected = ofKinds(...kinds);
      expect(pages.flatMap((p) => p.ids), kinds.join()).toEqual(expected);
      expect(pages.map((p) => p.ids.length), kinds.join()).toEqual(Array.from({ length: Math.ceil(expected.length / 2) }, (_, i) => Math.min(2, expected.length - 2 * i)));
      expect(pages.every((p) => p.totalCount === expected.length)).toBe(true);
      expect(pages.at(-1)!.hasNextPage).toBe(false);
    }
    const byKey = await page(customerId, { first: 10, filter: { idempotencyKey: usageKey } });
    expect(byKey.edges.map((edge: any) => edge.node.id)).toEqual([made[2]!.id]);
    expect(byKey.totalCount).toBe(1);
    expect((await page(customerId, { first: 10, filter: { idempotencyKey: randomUUID() } })).totalCount).toBe(0);
    // createdAfter and createdBefore: a window strictly between transactions 3 and 7 (the 4th to 7th made).
    const window = { createdAfter: new Date(made[3]!.at.getTime() - 500).toISOString(), createdBefore: new Date(made[6]!.at.getTime() + 500).toISOString() };
    const inWindow = await pageThrough(customerId, 3, window);
    expect(inWindow.flatMap((p) => p.ids)).toEqual(made.slice(3, 7).reverse().map((t) => t.id));
    expect(inWindow.map((p) => p.hasNextPage)).toEqual([true, false]);
    const windowedRefunds = await page(customerId, { first: 10, filter: { ...window, kinds: ['REFUND', 'USAGE'] } });
    expect(windowedRefunds.edges.map((edge: any) => edge.node.id)).toEqual([made[6]!.id]);
  });

  it('pages transactions sharing one timestamp without losing or repeating any', async () => {
    const customerId = await newCustomer();
    const ids = [(await grant(customerId, '5.00')).transaction.id];
    for (let i = 0; i < 6; i++) {
      const charged = await debit(customerId, '0.10');
      expect(charged.errors).toBeUndefined();
      ids.push(charged.data!.debitCredits.transaction.id);
    }
    expect(new Set((await page(customerId, { first: 10 })).edges.map((edge: any) => edge.node.createdAt)).size).toBe(1);
    const listed = (await page(customerId, { first: 10 })).edges.map((edge: any) => edge.node.id);
    expect([...listed].sort()).toEqual([...ids].sort());
    for (const size of [1, 2, 3]) {
      const pages = await pageThrough(customerId, size);
      expect(pages.flatMap((p) => p.ids), `first: ${size}`).toEqual(listed);
      expect(pages.at(-1)!.hasNextPage).toBe(false);
      expect(pages.slice(0, -1).every((p) => p.hasNextPage && p.ids.length === size)).toBe(true);
    }
  });

  it('the key filter finds a transaction by the key as its caller sent it, spaces included', async () => {
    const customerId = await newCustomer();
    const key = ` topup-${randomUUID()} `;
    const granted = await grant(customerId, '1.00', { idempotencyKey: key });
    await grant(customerId, '2.00');
    const found = await page(customerId, { first: 10, filter: { idempotencyKey: key } });
    expect(found.totalCount).toBe(1);
    expect(found.edges.map((edge: any) => edge.node.id)).toEqual([granted.transaction.id]);
    const everywhere = await gql('query ($filter: LedgerTransactionFilter) { ledgerTransactions(first: 5, filter: $filter) { totalCount edges { node { id idempotencyKey } } } }', { filter: { idempotencyKey: key } });
    expect(everywhere.data!.ledgerTransactions).toEqual({ totalCount: 1, edges: [{ node: { id: granted.transaction.id, idempotencyKey: key.trim() } }] });
  });
});

describe('a customer id given in upper case', () => {
  it('is the same customer to every ledger operation, read and subscription, and never fails a batch it shares with others', async () => {
    const customerId = await newCustomer();
    const upper = customerId.toUpperCase();
    const client = createClient({ url: server.url.replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${merchant.secret}` }, retryAttempts: 0 });
    try {
      const events = client.iterate({ query: 'subscription ($id: ID!) { balanceUpdated(customerId: $id) { customerId balance { amount } } }', variables: { id: upper } });
      const next = events.next();
      await waitForSubscribers(server, walletTopic(customerId), 1);
      const granted = await gql(GRANT, { input: { customerId: upper, amount: '5.00', kind: 'PAID', idempotencyKey: randomUUID() } });
      expect(granted.errors).toBeUndefined();
      expect(((await next).value as any).data.balanceUpdated).toEqual({ customerId, balance: { amount: '5.00' } });
      await events.return?.();
    } finally {
      await client.dispose();
    }

    const charged = await debit(upper, '1.00', 'upper-debit');
    expect(charged.errors).toBeUndefined();
    // The same debit named by the id in lower case is its replay, not a second charge.
    const replay = await debit(customerId, '1.00', 'upper-debit');
    expect(replay.data!.debitCredits).toMatchObject({ replayed: true, transaction: { id: charged.data!.debitCredits.transaction.id } });
    const adjusted = await gql(`mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { transaction { id } } }`, {
      input: { customerId: upper, amount: '-0.50', reason: 'correction', idempotencyKey: randomUUID() },
    });
    expect(adjusted.errors).toBeUndefined();
    const held = await gql(`mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }`, {
      input: { customerId: upper, amount: '0.25', ttlSeconds: 60, idempotencyKey: randomUUID() },
    });
    expect(held.errors).toBeUndefined();
    const limited = await gql(`mutation ($id: ID!) { setOverdraftLimit(customerId: $id, limit: "2") { customerId overdraftLimit { amount } } }`, { id: upper });
    expect(limited.errors).toBeUndefined();
    expect(limited.data!.setOverdraftLimit).toEqual({ customerId, overdraftLimit: { amount: '2.00' } });
    const wallet = await gql(WALLET, { id: upper });
    expect(wallet.data!.wallet).toMatchObject({ balance: { amount: '3.50' }, available: { amount: '3.25' }, held: { amount: '0.25' } });

    // Another merchant's debit queued beside it in the same lane is charged too.
    const other = await server.createMerchant();
    const otherCustomer = (await server.services.customers.create(other.id, { externalId: 'beside' })).id;
    await server.services.ledger.grantCredits(other.id, { kind: 'system', apiKeyId: null }, { customerId: otherCustomer, currency: 'USD', amountNanos: 10n ** 9n, kind: 'PAID', idempotencyKey: 'seed' });
    const actor = { kind: 'api_key' as const, apiKeyId: null };
    const results = await Promise.allSettled([
      server.services.ledger.debit(merchant.id, actor, { customerId: upper, currency: 'USD', amountAttos: 10n ** 17n, idempotencyKey: 'side-by-side-1' }),
      server.services.ledger.debit(other.id, actor, { customerId: otherCustomer, currency: 'USD', amountAttos: 10n ** 17n, idempotencyKey: 'side-by-side-2' }),
    ]);
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'fulfilled']);
    expect((await server.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);
  });

  it("is the customer's own to a customer token: wallet, wallets and balanceUpdated", async () => {
    const customerId = await newCustomer();
    const upper = customerId.toUpperCase();
    expect(upper).not.toBe(customerId);
    await grant(customerId, '2.00');
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    const own = await gql('query ($id: ID!) { wallet(customerId: $id) { customerId balance { amount } } }', { id: upper }, token);
    expect(own.errors).toBeUndefined();
    expect(own.data!.wallet).toEqual({ customerId, balance: { amount: '2.00' } });
    const all = await gql('query ($id: ID!) { wallets(customerId: $id) { currency balance { amount } } }', { id: upper }, token);
    expect(all.errors).toBeUndefined();
    expect(all.data!.wallets).toEqual([{ currency: 'USD', balance: { amount: '2.00' } }]);
    const client = createClient({ url: server.url.replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${token}` }, retryAttempts: 0 });
    try {
      const events = client.iterate({ query: 'subscription ($id: ID!) { balanceUpdated(customerId: $id) { customerId balance { amount } } }', variables: { id: upper } });
      const next = events.next();
      await waitForSubscribers(server, walletTopic(customerId), 1);
      await grant(customerId, '1.00');
      expect((await next).value).toEqual({ data: { balanceUpdated: { customerId, balance: { amount: '3.00' } } } });
      await events.return?.();
    } finally {
      await client.dispose();
    }
    // Another customer's id, in either case, is still refused.
    const otherId = await newCustomer();
    for (const id of [otherId, otherId.toUpperCase()]) {
      expect((await gql('query ($id: ID!) { wallet(customerId: $id) { id } }', { id }, token)).errors?.[0]?.extensions.code).toBe('FORBIDDEN');
    }
  });
});

describe('edges found by audit', () => {
  const CREATE = `mutation ($input: CreateHoldInput!) { createHold(input: $input) { replayed hold { id status } } }`;

  it('a hold past its time reads as expired everywhere: a replay says EXPIRED, and releasing it is a CONFLICT, as after the schedule ran', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '10.00');
    const input = { customerId, amount: '3.00', idempotencyKey: randomUUID(), ttlSeconds: 30, description: 'call' };
    const hold = (await gql(CREATE, { input })).data!.createHold.hold;
    // A replay must name the same hold: another time to live or description is another request.
    for (const changed of [{ ttlSeconds: 31 }, { description: 'other' }, { description: null }]) {
      expect((await gql(CREATE, { input: { ...input, ...changed } })).errors?.[0]?.extensions.code, JSON.stringify(changed)).toBe('CONFLICT');
    }
    now = new Date(now.getTime() + 31_000);
    expect((await gql(CREATE, { input })).data!.createHold).toEqual({ replayed: true, hold: { id: hold.id, status: 'EXPIRED' } });
    const release = await gql('mutation ($id: ID!) { releaseHold(id: $id) { status } }', { id: hold.id });
    expect(release.errors?.[0]?.extensions.code).toBe('CONFLICT');
    expect(release.errors?.[0]?.message).toContain('expired');
    expect((await gql('query ($id: ID!) { hold(id: $id) { status } }', { id: hold.id })).data!.hold.status).toBe('EXPIRED');
    await expectIntegrity();
  });

  it('a change that would take a balance past what BIGINT holds is refused with VALIDATION, and nothing moves', async () => {
    const customerId = await newCustomer();
    for (let i = 0; i < 9; i++) await grant(customerId, '1000000000');
    const over = await gql(GRANT, { input: { customerId, amount: '1000000000', kind: 'PAID', idempotencyKey: randomUUID() } });
    expect(over.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'amount' });
    expect((await wallet(customerId)).balance.amount).toBe('9000000000.00');

    const indebted = await newCustomer();
    const adjust = () => gql(`mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { transaction { id } } }`, {
      input: { customerId: indebted, amount: '-1000000000', reason: 'test', idempotencyKey: randomUUID() },
    });
    for (let i = 0; i < 9; i++) expect((await adjust()).errors).toBeUndefined();
    expect((await adjust()).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'amount' });
    await expectIntegrity();
  });
});

describe('overdraft limits over time', () => {
  it('lowering a limit below what the customer owes stops further overdraft without breaking the integrity check, which still catches a debit past the limit of its time', async () => {
    const customerId = await newCustomer();
    const setLimit = (limit: string) => gql('mutation ($id: ID!, $limit: Decimal!) { setOverdraftLimit(customerId: $id, limit: $limit) { balance { amount } } }', { id: customerId, limit });
    expect((await setLimit('5.00')).errors).toBeUndefined();
    expect((await debit(customerId, '4.00')).errors).toBeUndefined();
    now = new Date(now.getTime() + 1000);
    expect((await setLimit('0')).errors).toBeUndefined();
    expect((await debit(customerId, '0.01')).errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    await expectIntegrity();

    // The same debit dated after the limit was set (written behind the ledger's back) breaks it, and is reported.
    const walletId = (await wallet(customerId)).id as string;
    const sql = (text: string, params: unknown[]) => server.services.db.withConnection((connection) => connection.query<{ id: string; created_at: Date }>(text, params));
    const [debited] = await sql(`SELECT id, created_at FROM ledger_transactions WHERE wallet_id = $1 AND amount < 0`, [walletId]);
    await sql(`UPDATE ledger_transactions SET created_at = $2 WHERE id = $1`, [debited!.id, now]);
    const report = await gql('{ ledgerIntegrity { ok violations } }');
    expect(report.data!.ledgerIntegrity.violations).toContain(`wallet ${walletId} was debited past its overdraft limit`);
    await sql(`UPDATE ledger_transactions SET created_at = $2 WHERE id = $1`, [debited!.id, debited!.created_at]);
    await expectIntegrity();
  });

  it('a limit cut in the same millisecond as a debit it allowed is no violation; a debit past it afterwards still is', async () => {
    const customerId = await newCustomer();
    const setLimit = (limit: string) => gql('mutation ($id: ID!, $limit: Decimal!) { setOverdraftLimit(customerId: $id, limit: $limit) { id } }', { id: customerId, limit });
    // The clock stands still: all three share one timestamp.
    expect((await setLimit('5')).errors).toBeUndefined();
    expect((await debit(customerId, '4')).errors).toBeUndefined();
    expect((await setLimit('0')).errors).toBeUndefined();
    await expectIntegrity();

    // A debit posted past the new limit (written behind the ledger's back, dated when the limit was set) is reported.
    const walletId = (await wallet(customerId)).id as string;
    const [debited] = await sql<{ id: string; created_at: Date }>(`SELECT id, created_at FROM ledger_transactions WHERE wallet_id = $1 AND amount < 0`, [walletId]);
    await sql(`UPDATE ledger_transactions SET created_at = (SELECT overdraft_limit_set_at FROM wallets WHERE id = $2) WHERE id = $1`, [debited!.id, walletId]);
    const report = await gql('{ ledgerIntegrity { ok violations } }');
    expect(report.data!.ledgerIntegrity.violations).toContain(`wallet ${walletId} was debited past its overdraft limit`);
    await sql(`UPDATE ledger_transactions SET created_at = $2 WHERE id = $1`, [debited!.id, debited!.created_at]);
    await expectIntegrity();
  });
});

describe('a hold under a limit lowered since', () => {
  const HOLD = `mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }`;
  const CAPTURE = 'mutation ($id: ID!, $amount: Decimal) { captureHold(id: $id, amount: $amount) { hold { status } transaction { balanceAfter { amount } } } }';
  const setLimit = (customerId: string, limit: string) => gql('mutation ($id: ID!, $limit: Decimal!) { setOverdraftLimit(customerId: $id, limit: $limit) { id } }', { id: customerId, limit });

  it('stays capturable down to the limit it was placed under (a reservation, as a card authorization); new spending meets the new limit, and the integrity check agrees', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '1.00');
    expect((await setLimit(customerId, '5.00')).errors).toBeUndefined();
    const held = await gql(HOLD, { input: { customerId, amount: '4.00', idempotencyKey: randomUUID(), ttlSeconds: 600 } });
    expect(held.errors).toBeUndefined();
    now = new Date(now.getTime() + 1000);
    expect((await setLimit(customerId, '0')).errors).toBeUndefined();
    // New spending stops at the new limit...
    expect((await debit(customerId, '0.01')).errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    // ...while what the hold reserved is captured in full, taking the wallet to -3.00.
    now = new Date(now.getTime() + 1000);
    const captured = await gql(CAPTURE, { id: held.data!.createHold.hold.id });
    expect(captured.errors).toBeUndefined();
    expect(captured.data!.captureHold).toEqual({ hold: { status: 'CAPTURED' }, transaction: { balanceAfter: { amount: '-3.00' } } });
    await expectIntegrity();
    // A debit written past the new limit behind the ledger's back is still caught; the capture is not.
    const walletId = (await wallet(customerId)).id as string;
    const [tampered] = await sql<{ id: string }>(`SELECT id FROM ledger_transactions WHERE wallet_id = $1 AND kind = 'HOLD_CAPTURE'`, [walletId]);
    await sql(`UPDATE ledger_transactions SET kind = 'USAGE' WHERE id = $1`, [tampered!.id]);
    expect((await gql('{ ledgerIntegrity { violations } }')).data!.ledgerIntegrity.violations).toContain(`wallet ${walletId} was debited past its overdraft limit`);
    await sql(`UPDATE ledger_transactions SET kind = 'HOLD_CAPTURE' WHERE id = $1`, [tampered!.id]);
    await expectIntegrity();
  });

  it('does not reach below the limit it was placed under when the credit it counted on was adjusted away; a limit raised since counts', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '5.00');
    const held = await gql(HOLD, { input: { customerId, amount: '4.00', idempotencyKey: randomUUID(), ttlSeconds: 600 } });
    const adjusted = await gql('mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { transaction { id } } }',
      { input: { customerId, amount: '-3.00', reason: 'Chargeback', idempotencyKey: randomUUID() } });
    expect(adjusted.errors).toBeUndefined();
    // Placed under no overdraft: the 4.00 would now take the wallet to -2.00.
    expect((await gql(CAPTURE, { id: held.data!.createHold.hold.id })).errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    expect((await setLimit(customerId, '2.00')).errors).toBeUndefined();
    const captured = await gql(CAPTURE, { id: held.data!.createHold.hold.id });
    expect(captured.data!.captureHold.transaction.balanceAfter.amount).toBe('-2.00');
    await expectIntegrity();
  });
});

describe('balances beyond what one request may move', () => {
  it('balanceUpdated sends a balance past 1e9 major units (the most one amount given may be), as the wallet holds it', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '1000000000', { currency: 'VND' });
    const client = createClient({ url: server.url.replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${merchant.secret}` }, retryAttempts: 0 });
    try {
      const events = client.iterate({
        query: 'subscription ($id: ID!) { balanceUpdated(customerId: $id, currency: "VND") { balance { amount currency } available { amount } } }',
        variables: { id: customerId },
      });
      const next = events.next();
      await waitForSubscribers(server, walletTopic(customerId), 1);
      await grant(customerId, '500000000', { currency: 'VND' });
      expect((await next).value).toEqual({ data: { balanceUpdated: { balance: { amount: '1500000000.00', currency: 'VND' }, available: { amount: '1500000000.00' } } } });
      await events.return?.();
    } finally {
      await client.dispose();
    }
    expect((await wallet(customerId, 'VND')).balance.amount).toBe('1500000000.00');
  });
});

describe('idempotent grants', () => {
  const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
  const grantAgain = (input: Record<string, unknown>) => gql(GRANT, { input: { kind: 'PAID', ...input } });

  it('a retry that sends optional fields as null, or as their defaults, instead of leaving them out is a replay; one that changes a field is a conflict', async () => {
    const customerId = await newCustomer();
    const key = randomUUID();
    const first = await grant(customerId, '2.00', { idempotencyKey: key });
    for (const retry of [{ priority: null, description: null, expiresAt: null, metadata: null }, { priority: 0 }, { metadata: {} }]) {
      const again = await grantAgain({ customerId, amount: '2.00', idempotencyKey: key, ...retry });
      expect(again.errors, JSON.stringify(retry)).toBeUndefined();
      expect(again.data!.grantCredits, JSON.stringify(retry)).toMatchObject({ replayed: true, transaction: { id: first.transaction.id } });
    }
    // The other way round: first sent with the defaults, retried without them.
    const explicitKey = randomUUID();
    const explicit = await grant(customerId, '1.00', { idempotencyKey: explicitKey, priority: 0, description: null, expiresAt: null, metadata: {} });
    expect((await grantAgain({ customerId, amount: '1.00', idempotencyKey: explicitKey })).data!.grantCredits).toMatchObject({ replayed: true, transaction: { id: explicit.transaction.id } });
    const later = new Date(now.getTime() + 3600_000).toISOString();
    for (const changed of [{ priority: 1 }, { description: '' }, { expiresAt: later }, { metadata: { campaign: 'spring' } }, { amount: '2.01' }, { kind: 'PROMOTIONAL' }]) {
      const conflicting = await grantAgain({ customerId, amount: '2.00', idempotencyKey: key, ...changed });
      expect(conflicting.errors?.[0]?.extensions.code, JSON.stringify(changed)).toBe('CONFLICT');
    }
    expect((await wallet(customerId)).balance.amount).toBe('3.00');
  });

  it('a grant retried with its metadata keys in another order is a replay', async () => {
    const customerId = await newCustomer();
    const key = randomUUID();
    const first = await grant(customerId, '2.00', { idempotencyKey: key, metadata: { invoice: 'inv-1', source: { system: 'stripe', id: 7 } } });
    const again = await grantAgain({ customerId, amount: '2.00', idempotencyKey: key, metadata: { source: { id: 7, system: 'stripe' }, invoice: 'inv-1' } });
    expect(again.errors).toBeUndefined();
    expect(again.data!.grantCredits).toMatchObject({ replayed: true, transaction: { id: first.transaction.id } });
    expect((await grantAgain({ customerId, amount: '2.00', idempotencyKey: key, metadata: { invoice: 'inv-2', source: { id: 7, system: 'stripe' } } })).errors?.[0]?.extensions.code).toBe('CONFLICT');
    expect((await wallet(customerId)).balance.amount).toBe('2.00');
  });

  it('a grant recorded under the earlier request hash still replays when sent exactly as before, and still conflicts when changed', async () => {
    const customerId = await newCustomer();
    const key = randomUUID();
    const sent = { customerId, amount: '2.00', idempotencyKey: key, priority: null, description: 'top-up' };
    const first = await grant(customerId, '2.00', sent);
    // What the earlier version stored: the input as the resolver built it, fields left out omitted.
    const earlier = sha256(JSON.stringify({ op: 'grant', customerId, currency: 'USD', amountNanos: '2000000000', kind: 'PAID', priority: null, description: 'top-up' }));
    await sql('UPDATE ledger_transactions SET request_hash = $2 WHERE id = $1', [first.transaction.id, earlier]);
    const again = await grantAgain(sent);
    expect(again.errors).toBeUndefined();
    expect(again.data!.grantCredits).toMatchObject({ replayed: true, transaction: { id: first.transaction.id } });
    for (const changed of [{ description: 'other' }, { amount: '2.01' }]) {
      expect((await grantAgain({ ...sent, ...changed })).errors?.[0]?.extensions.code, JSON.stringify(changed)).toBe('CONFLICT');
    }
    expect((await wallet(customerId)).balance.amount).toBe('2.00');
  });
  it('a grant retried after its expiresAt has passed replays (or conflicts) instead of failing VALIDATION; a new key with a past time still fails it', async () => {
    const customerId = await newCustomer();
    const sent = { customerId, amount: '2.00', idempotencyKey: randomUUID(), kind: 'PROMOTIONAL', expiresAt: new Date(now.getTime() + 60_000).toISOString() };
    const first = await grant(customerId, '2.00', sent);
    now = new Date(now.getTime() + 120_000);
    const again = await grantAgain(sent);
    expect(again.errors).toBeUndefined();
    expect(again.data!.grantCredits).toMatchObject({ replayed: true, transaction: { id: first.transaction.id } });
    expect((await grantAgain({ ...sent, amount: '3.00' })).errors?.[0]?.extensions.code).toBe('CONFLICT');
    expect((await grantAgain({ ...sent, idempotencyKey: randomUUID() })).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'expiresAt' });
    expect((await wallet(customerId)).balance.amount).toBe('0.00');
  });
});

describe('grants created back to back', () => {
  it('are spent in the order they were created, even within one millisecond', async () => {
    // The test clock stands still: both grants carry one creation time, so only their ids can order them.
    for (let n = 0; n < 12; n++) {
      const customerId = await newCustomer();
      const first = await grant(customerId, '1.00');
      const second = await grant(customerId, '1.00');
      expect((await debit(customerId, '0.50')).errors).toBeUndefined();
      const remaining = Object.fromEntries((await wallet(customerId)).grants.map((g: any) => [g.id, g.remaining.amount]));
      expect(remaining, `customer ${n}`).toEqual({ [first.grant.id]: '0.50', [second.grant.id]: '1.00' });
    }
  });
});

describe('idempotent debits', () => {
  const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
  const actor = { kind: 'api_key' as const, apiKeyId: null };
  const debitAgain = (input: Record<string, unknown>) => gql(DEBIT, { input });

  it('a key reused with another description or metadata is a CONFLICT; the same metadata in another key order, or null for none, replays', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '5.00');
    const key = randomUUID();
    const sent = { customerId, amount: '1.00', idempotencyKey: key, description: 'run 1', metadata: { run: 1, source: { system: 'batch', id: 7 } } };
    const first = await debitAgain(sent);
    expect(first.errors).toBeUndefined();
    const again = await debitAgain({ ...sent, metadata: { source: { id: 7, system: 'batch' }, run: 1 } });
    expect(again.errors).toBeUndefined();
    expect(again.data!.debitCredits).toMatchObject({ replayed: true, transaction: { id: first.data!.debitCredits.transaction.id } });
    for (const changed of [{ description: 'run 2' }, { description: null }, { metadata: { run: 2, source: { system: 'batch', id: 7 } } }, { metadata: null }]) {
      const conflicting = await debitAgain({ ...sent, ...changed });
      expect(conflicting.errors?.[0]?.extensions.code, JSON.stringify(changed)).toBe('CONFLICT');
    }
    // No metadata, null and {} are one request.
    const bareKey = randomUUID();
    const bare = await debitAgain({ customerId, amount: '0.50', idempotencyKey: bareKey });
    for (const metadata of [null, {}]) {
      expect((await debitAgain({ customerId, amount: '0.50', idempotencyKey: bareKey, metadata })).data!.debitCredits, JSON.stringify(metadata))
        .toMatchObject({ replayed: true, transaction: { id: bare.data!.debitCredits.transaction.id } });
    }
    expect((await wallet(customerId)).balance.amount).toBe('3.50');
  });

  it('a key reused with another sourceRef is a CONFLICT', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '5.00');
    const input = { customerId, currency: 'USD', amountAttos: 10n ** 18n, idempotencyKey: randomUUID(), sourceRef: 'job-1' };
    const first = await server.services.ledger.debit(merchant.id, actor, input);
    expect((await server.services.ledger.debit(merchant.id, actor, input)).transaction.id).toBe(first.transaction.id);
    for (const sourceRef of ['job-2', null]) {
      await expect(server.services.ledger.debit(merchant.id, actor, { ...input, sourceRef }), String(sourceRef)).rejects.toMatchObject({ code: 'CONFLICT' });
    }
    expect((await wallet(customerId)).balance.amount).toBe('4.00');
  });

  it('a debit recorded under the earlier request hash still replays when sent again, and still conflicts with another amount', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '5.00');
    const sent = { customerId, amount: '1.50', idempotencyKey: randomUUID(), description: 'call 9', metadata: { b: 1, a: 2 } };
    const first = await debitAgain(sent);
    expect(first.errors).toBeUndefined();
    // What the earlier version stored: neither description, metadata nor sourceRef counted.
    const earlier = sha256(JSON.stringify({ op: 'debit', customerId, currency: 'USD', attos: '1500000000000000000' }));
    await server.services.db.prisma.ledgerTransaction.update({ where: { id: first.data!.debitCredits.transaction.id }, data: { requestHash: earlier } });
    const again = await debitAgain(sent);
    expect(again.errors).toBeUndefined();
    expect(again.data!.debitCredits).toMatchObject({ replayed: true, transaction: { id: first.data!.debitCredits.transaction.id } });
    expect((await debitAgain({ ...sent, amount: '1.51' })).errors?.[0]?.extensions.code).toBe('CONFLICT');
    expect((await wallet(customerId)).balance.amount).toBe('3.50');
  });
});

describe('a debit refused on a wallet not stored yet', () => {
  const actor = { kind: 'api_key' as const, apiKeyId: null };
  const storedCurrencies = async (customerId: string) =>
    (await gql('query ($id: ID!) { wallets(customerId: $id) { currency } }', { id: customerId })).data!.wallets.map((row: { currency: string }) => row.currency);

  it('stores no wallet, and the first credit in that currency later stores it', async () => {
    const customerId = await newCustomer();
    await grant(customerId, '1.00');
    const refused = await gql(DEBIT, { input: { customerId, amount: '1', currency: 'EUR', idempotencyKey: randomUUID() } });
    expect(refused.errors?.[0]?.extensions.code).toBe('INSUFFICIENT_FUNDS');
    expect(await storedCurrencies(customerId)).toEqual(['USD']);
    await expectIntegrity();
    const granted = await grant(customerId, '2.00', { currency: 'EUR' });
    expect(granted.wallet.balance.amount).toBe('2.00');
    expect(await storedCurrencies(customerId)).toEqual(['EUR', 'USD']);
    expect((await debit(customerId, '0.50')).errors).toBeUndefined();
    await expectIntegrity();
  });

  it('leaves the debits batched with it charged', async () => {
    const refusedCustomer = await newCustomer();
    // A customer whose EUR wallet shares the refused one's debit lane (PostgreSQL has two, PGlite one).
    let paying = await newCustomer();
    while (laneOf(`${paying}:EUR`, 2) !== laneOf(`${refusedCustomer}:EUR`, 2)) paying = await newCustomer();
    await grant(paying, '3.00', { currency: 'EUR' });
    // Both customers known to the ledger, so both debits queue before the lane's batch starts.
    for (const customerId of [refusedCustomer, paying]) await server.services.ledger.assertCustomer(merchant.id, customerId);
    const batches = vi.spyOn(server.services.ledger.store, 'withWallets');
    try {
      const results = await Promise.allSettled([
        server.services.ledger.debit(merchant.id, actor, { customerId: refusedCustomer, currency: 'EUR', amountAttos: 10n ** 18n, idempotencyKey: randomUUID() }),
        server.services.ledger.debit(merchant.id, actor, { customerId: paying, currency: 'EUR', amountAttos: 10n ** 18n, idempotencyKey: randomUUID() }),
      ]);
      expect(batches).toHaveBeenCalledTimes(1);
      expect(results[0]).toMatchObject({ status: 'rejected', reason: { code: 'INSUFFICIENT_FUNDS' } });
      expect(results[1]).toMatchObject({ status: 'fulfilled', value: { replayed: false } });
    } finally {
      batches.mockRestore();
    }
    expect(await storedCurrencies(refusedCustomer)).toEqual([]);
    expect((await wallet(paying, 'EUR')).balance.amount).toBe('2.00');
    await expectIntegrity();
  });
});
