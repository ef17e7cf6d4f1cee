import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testServerWithMerchant, type TestServer } from '../../../test/server.ts';

/**
 * A ledger change's description or reason is stored on its transaction and sent with every
 * listing and live push of it: a caller could write megabytes there (up to the body limit).
 */
let server: TestServer;
let merchant: { id: string; secret: string };
const { start, close, gql, newCustomer } = testServerWithMerchant();
beforeAll(async () => ({ server, merchant } = await start()));
afterAll(close);

const LIMIT = 1000;
const text = (length: number) => 'é'.repeat(length);

async function transactionsOf(customerId: string) {
  const answer = await gql('query ($c: ID!) { wallet(customerId: $c) { transactions(first: 10) { edges { node { kind description } } } } }', { c: customerId });
  return answer.data!.wallet.transactions.edges.map((edge: { node: unknown }) => edge.node);
}

describe('ledger text', () => {
  it('takes a description or reason of up to 1,000 characters as written, and refuses a longer one naming the field, writing nothing', async () => {
    const customerId = await newCustomer();
    const GRANT = 'mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { transaction { description } } }';
    const at = await gql(GRANT, { input: { customerId, amount: '10', kind: 'PAID', idempotencyKey: 'g1', description: text(LIMIT) } });
    expect(at.errors).toBeUndefined();
    expect(at.data!.grantCredits.transaction.description).toBe(text(LIMIT));

    const refusals = [
      [GRANT, { customerId, amount: '10', kind: 'PAID', idempotencyKey: 'g2', description: text(LIMIT + 1) }, 'description'],
      ['mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed } }', { customerId, amount: '1', idempotencyKey: 'd1', description: text(LIMIT + 1) }, 'description'],
      ['mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed } }', { customerId, amount: '1', idempotencyKey: 'a1', reason: text(LIMIT + 1) }, 'reason'],
      ['mutation ($input: RefundCreditsInput!) { refundCredits(input: $input) { replayed } }', { customerId, amount: '1', idempotencyKey: 'r1', reason: text(LIMIT + 1) }, 'reason'],
      ['mutation ($input: CreateHoldInput!) { createHold(input: $input) { replayed } }', { customerId, amount: '1', idempotencyKey: 'h1', description: text(LIMIT + 1) }, 'description'],
    ] as const;
    for (const [mutation, input, field] of refusals) {
      const refused = await gql(mutation, { input });
      expect(refused.errors?.[0]?.extensions, mutation).toMatchObject({ code: 'VALIDATION', field });
      expect(refused.errors?.[0]?.message).toContain(`at most ${LIMIT} characters`);
    }
    // Only the first grant was written.
    expect(await transactionsOf(customerId)).toEqual([{ kind: 'GRANT', description: text(LIMIT) }]);
    const holds = await server.services.prisma.hold.count({ where: { merchantId: merchant.id } });
    expect(holds).toBe(0);
  });
});
