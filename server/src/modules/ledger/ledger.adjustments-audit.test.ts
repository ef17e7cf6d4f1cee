import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testServerWithMerchant, type TestServer } from '../../../test/server.ts';
import type { Actor } from './ledger.service.ts';

// The ledger's merchant operations and audit trail: what an earlier review found them to miss.

const now = new Date('2026-08-01T12:00:00.000Z');
let server: TestServer;
let merchant: { id: string; secret: string };
const { start, close, gql, newCustomer } = testServerWithMerchant({}, { clock: () => now });

const ACTOR: Actor = { kind: 'api_key', apiKeyId: null };
const transactionsOf = (customerId: string) =>
  server.services.prisma.ledgerTransaction.findMany({ where: { customerId }, orderBy: { createdAt: 'asc' }, select: { kind: true, amount: true } });

beforeAll(async () => ({ server, merchant } = await start()));
afterAll(close);

describe('a positive adjustment with an expiry', () => {
  const adjust = (customerId: string, idempotencyKey: string, expiresAt?: Date | null) =>
    server.services.ledger.adjustBalance(merchant.id, ACTOR, { customerId, currency: 'USD', amountNanos: 5_000_000_000n, reason: 'goodwill', idempotencyKey, expiresAt });

  // It granted credit already expired: the adjustment and its expiry were both written, for a
  // request that should have been refused (as grantCredits refuses one) and written nothing.
  it('is refused with VALIDATION when the expiry is not in the future (or comes with a removal), and writes nothing', async () => {
    const customerId = await newCustomer();
    await expect(adjust(customerId, randomUUID(), new Date(now.getTime() - 1000))).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'expiresAt' } });
    await expect(adjust(customerId, randomUUID(), now)).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'expiresAt' } });
    // Nor is one taken for a removal, where it would mean nothing (it was ignored, unsaid).
    const removal = server.services.ledger.adjustBalance(merchant.id, ACTOR, {
      customerId, currency: 'USD', amountNanos: -1_000_000_000n, reason: 'correction', idempotencyKey: randomUUID(), expiresAt: new Date(now.getTime() + 3_600_000),
    });
    await expect(removal).rejects.toMatchObject({ code: 'VALIDATION', details: { field: 'expiresAt' } });
    expect(await transactionsOf(customerId)).toEqual([]);
  });

  // The request hash left the expiry out: a key reused with another expiry (or none) replayed
  // the first adjustment silently, though the credit the caller asked for was not what it got.
  it('retried under its key with another expiry, or none, is a CONFLICT; sent again as it was, a replay', async () => {
    const customerId = await newCustomer();
    const key = randomUUID();
    const expiresAt = new Date(now.getTime() + 3_600_000);
    expect((await adjust(customerId, key, expiresAt)).replayed).toBe(false);
    expect((await adjust(customerId, key, new Date(expiresAt.getTime()))).replayed).toBe(true);
    await expect(adjust(customerId, key, new Date(expiresAt.getTime() + 1000))).rejects.toMatchObject({ code: 'CONFLICT' });
    await expect(adjust(customerId, key)).rejects.toMatchObject({ code: 'CONFLICT' });
    // One without an expiry still replays as it did (its hash as before), whether sent with null or without.
    const plain = randomUUID();
    expect((await adjust(customerId, plain)).replayed).toBe(false);
    expect((await adjust(customerId, plain, null)).replayed).toBe(true);
    await expect(adjust(customerId, plain, expiresAt)).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(await transactionsOf(customerId)).toEqual([
      { kind: 'ADJUSTMENT', amount: 5_000_000_000n },
      { kind: 'ADJUSTMENT', amount: 5_000_000_000n },
    ]);
  });
});

describe('adjustBalance over GraphQL', () => {
  const ADJUST = 'mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed } }';
  const GRANTS = 'query ($id: ID!) { wallet(customerId: $id) { grants(first: 10) { nodes { kind remaining { amount } expiresAt } } } }';

  // The service took an expiry for the credit an adjustment adds, but the API had no field for it.
  it('takes expiresAt for the credit it adds, and refuses it in the past or with a removal, naming the field', async () => {
    const customerId = await newCustomer();
    const expiresAt = new Date(now.getTime() + 86_400_000).toISOString();
    expect((await gql(ADJUST, { input: { customerId, amount: '4', reason: 'outage credit', idempotencyKey: randomUUID(), expiresAt } })).errors).toBeUndefined();
    const grants = (await gql(GRANTS, { id: customerId })).data!.wallet.grants.nodes;
    expect(grants).toEqual([{ kind: 'PROMOTIONAL', remaining: { amount: '4.00' }, expiresAt }]);
    for (const input of [
      { amount: '1', expiresAt: new Date(now.getTime() - 1000).toISOString() },
      { amount: '-1', expiresAt },
    ]) {
      const refused = await gql(ADJUST, { input: { customerId, reason: 'x', idempotencyKey: randomUUID(), ...input } });
      expect(refused.errors?.[0]?.extensions, JSON.stringify(input)).toMatchObject({ code: 'VALIDATION', field: 'expiresAt' });
    }
    expect(await transactionsOf(customerId)).toHaveLength(1);
  });
});

describe('the audit trail', () => {
  const AUDIT = `query ($id: ID!, $filter: LedgerTransactionFilter) { ledgerTransactions(customerId: $id, first: 50, filter: $filter) {
    totalCount edges { node { kind reason idempotencyKey actor { kind apiKeyId } } } } }`;

  // Every transaction records who made it, but the filter had no field for it: "what did this
  // key do?" (a leaked or retired key, one support agent's corrections) meant reading everything.
  it('filters by the key that made each change, and by the kind of actor (the system: expiry)', async () => {
    const customerId = await newCustomer();
    const second = await gql<{ createApiKey: { apiKey: { id: string }; secret: string } }>('mutation { createApiKey(name: "support") { apiKey { id } secret } }');
    expect(second.errors).toBeUndefined();
    const support = second.data!.createApiKey;
    const first = (await server.services.prisma.apiKey.findFirstOrThrow({ where: { merchantId: merchant.id, id: { not: support.apiKey.id } } })).id;
    const GRANT = 'mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }';
    const ADJUST = 'mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed } }';
    expect((await gql(GRANT, { input: { customerId, amount: '10', kind: 'PAID', idempotencyKey: 'g-1' } })).errors).toBeUndefined();
    expect((await gql(ADJUST, { input: { customerId, amount: '-2', reason: 'duplicate charge', idempotencyKey: 'a-1' } }, support.secret)).errors).toBeUndefined();
    expect((await gql(ADJUST, { input: { customerId, amount: '3', reason: 'outage credit', idempotencyKey: 'a-2' } }, support.secret)).errors).toBeUndefined();
    expect((await gql(GRANT, { input: { customerId, amount: '1', kind: 'PROMOTIONAL', idempotencyKey: 'g-2', expiresAt: new Date(now.getTime() + 60_000).toISOString() } })).errors).toBeUndefined();
    // The promotional grant expires (the system's transaction), seen by the settle a schedule runs.
    await server.services.ledger.settleWallet(merchant.id, customerId, 'USD', new Date(now.getTime() + 120_000));

    const keysOf = async (filter: Record<string, unknown>) => {
      const answer = await gql(AUDIT, { id: customerId, filter });
      expect(answer.errors, JSON.stringify(filter)).toBeUndefined();
      return answer.data!.ledgerTransactions.edges.map((edge: any) => edge.node.idempotencyKey).sort();
    };
    expect(await keysOf({ actorApiKeyId: support.apiKey.id })).toEqual(['a-1', 'a-2']);
    expect(await keysOf({ actorApiKeyId: first.toUpperCase() })).toEqual(['g-1', 'g-2']);
    expect(await keysOf({ actorApiKeyId: support.apiKey.id, kinds: ['ADJUSTMENT'], createdAfter: now.toISOString() })).toEqual(['a-1', 'a-2']);
    expect(await keysOf({ actorKind: 'SYSTEM' })).toEqual([expect.stringMatching(/^grant-expiry:/)]);
    expect(await keysOf({ actorKind: 'API_KEY' })).toEqual(['a-1', 'a-2', 'g-1', 'g-2']);
    // Another merchant filtering on this merchant's key finds nothing of it.
    const stranger = await server.createMerchant('Stranger');
    const across = await gql('query ($filter: LedgerTransactionFilter) { ledgerTransactions(first: 5, filter: $filter) { totalCount } }', { filter: { actorApiKeyId: support.apiKey.id } }, stranger.secret);
    expect(across.data?.ledgerTransactions.totalCount).toBe(0);
    // A key id that is no id, and a kind no actor has, are told as such, naming the field.
    expect((await gql(AUDIT, { id: customerId, filter: { actorApiKeyId: 'nope' } })).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'filter.actorApiKeyId' });
    expect((await gql(AUDIT, { id: customerId, filter: { actorKind: 'ROBOT' } })).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION' });
    // A blank key names no transaction: refused, rather than read as no filter (every transaction).
    for (const blank of ['', '   ']) {
      expect((await gql(AUDIT, { id: customerId, filter: { idempotencyKey: blank } })).errors?.[0]?.extensions, `"${blank}"`).toMatchObject({ code: 'VALIDATION', field: 'filter.idempotencyKey' });
    }

    // Who made a change is the merchant's (the actor field is secret-key only): a customer token
    // may not learn it by filtering its own wallet's transactions on it either.
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    const OWN = 'query ($id: ID!, $filter: LedgerTransactionFilter) { wallet(customerId: $id) { transactions(first: 50, filter: $filter) { totalCount } } }';
    expect((await gql(OWN, { id: customerId, filter: { kinds: ['ADJUSTMENT'] } }, token)).data?.wallet.transactions.totalCount).toBe(2);
    for (const filter of [{ actorApiKeyId: support.apiKey.id }, { actorKind: 'SYSTEM' }]) {
      expect((await gql(OWN, { id: customerId, filter }, token)).errors?.[0]?.extensions.code, JSON.stringify(filter)).toBe('FORBIDDEN');
    }
    // The merchant filters its wallets' transactions on it as on the audit trail.
    const mine = await gql(OWN, { id: customerId, filter: { actorApiKeyId: support.apiKey.id } });
    expect(mine.data?.wallet.transactions.totalCount).toBe(2);
  });
});
