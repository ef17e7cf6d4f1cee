import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testServerWithMerchant, type TestServer } from '../../../test/server.ts';
import type { Actor } from './ledger.service.ts';

/** Edges of holds as the audit trail records them, on a controllable clock. */
let now = new Date('2026-06-01T12:00:00Z');
let server: TestServer;
let merchant: { id: string; secret: string };
const { start, close, gql, newCustomer } = testServerWithMerchant({}, { clock: () => now });

const GRANT = `mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }`;
const CREATE = `mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id expiresAt } } }`;
const HOLD = `query ($id: ID!) { hold(id: $id) { status finalizedAt finalizedBy { kind apiKeyId } } }`;
const WALLET = `query ($id: ID!) { wallet(customerId: $id) { balance { amount } available { amount } held { amount } } }`;

beforeAll(async () => ({ server, merchant } = await start()));
afterAll(close);

describe('a hold past its time, named by a batch that releases holds (the gateway settling its call)', () => {
  // It read EXPIRED (at its expiry, by the system) until usage naming it was charged, then
  // RELEASED by the caller at the time of the charge: its audit trail changed after the fact.
  it('stays expired, at its expiry and by the system, as it read before: the batch does not rewrite it as released by the caller', async () => {
    const customerId = await newCustomer();
    expect((await gql(GRANT, { input: { customerId, amount: '10.00', kind: 'PAID', idempotencyKey: randomUUID() } })).errors).toBeUndefined();
    const hold = (await gql(CREATE, { input: { customerId, amount: '3.00', idempotencyKey: randomUUID(), ttlSeconds: 10 } })).data!.createHold.hold;
    now = new Date(now.getTime() + 20_000);
    const expired = { status: 'EXPIRED', finalizedAt: hold.expiresAt, finalizedBy: { kind: 'system', apiKeyId: null } };
    expect((await gql(HOLD, { id: hold.id })).data!.hold).toEqual(expired);

    const key = { merchantId: merchant.id, customerId, currency: 'USD' };
    const caller: Actor = { kind: 'customer', apiKeyId: null };
    await server.services.ledger.runBatch([key], (batch) =>
      server.services.ledger.releaseHoldsInBatch(batch, merchant.id, caller, [{ holdId: hold.id, wallet: batch.wallet(key) }]),
    );
    expect((await gql(HOLD, { id: hold.id })).data!.hold).toEqual(expired);
    // Releasing it by hand is refused as for any expired hold, and the schedule still marks it so.
    expect((await gql('mutation ($id: ID!) { releaseHold(id: $id) { status } }', { id: hold.id })).errors?.[0]?.extensions.code).toBe('CONFLICT');
    expect((await server.services.ledger.runExpiry()).holdsExpired).toBe(1);
    expect((await gql(HOLD, { id: hold.id })).data!.hold).toEqual(expired);
    expect((await gql(WALLET, { id: customerId })).data!.wallet).toEqual({ balance: { amount: '10.00' }, available: { amount: '10.00' }, held: { amount: '0.00' } });
  });
});
