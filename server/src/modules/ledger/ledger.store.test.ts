import { describe, expect, it } from 'vitest';
import type { SqlExecutor } from '../../shared/db/database.ts';
import type { WalletState } from './ledger.planner.ts';
import { LedgerBatch, WalletTransaction, type NewTransaction } from './ledger.store.ts';

/** A wallet in a batch that never reaches a database: post() only plans in memory until flush. */
function walletWith(accountId: () => Promise<string>) {
  const noDatabase = { query: () => Promise.reject(new Error('no database in this test')) } as unknown as SqlExecutor;
  const batch = new LedgerBatch(noDatabase, new Date('2026-06-01T00:00:00Z'), accountId);
  const state: WalletState = {
    id: 'wallet-1',
    balance: 100n,
    carry: 0n,
    overdraftLimit: 0n,
    version: 0n,
    held: 0n,
    grants: [
      { id: 'grant-a', kind: 'PROMOTIONAL', remaining: 40n, priority: 0, expiresAt: null, createdAt: new Date(0), holdId: null, holdLive: false },
      { id: 'grant-b', kind: 'PAID', remaining: 60n, priority: 0, expiresAt: null, createdAt: new Date(0), holdId: null, holdLive: false },
    ],
  };
  return { batch, state, wallet: new WalletTransaction(batch, 'merchant-1', 'customer-1', 'USD', state, []) };
}

const usage = (legs: NewTransaction['legs']): NewTransaction => ({
  kind: 'USAGE', idempotencyKey: 'k-1', requestHash: 'h', legs, counterAccount: 'USAGE_REVENUE', actor: { kind: 'api_key', apiKeyId: null },
});

const snapshot = (state: WalletState) => [state.balance, ...state.grants.map((grant) => grant.remaining)];

describe('WalletTransaction.post', () => {
  it('changes nothing when its counter-account cannot be had: the debits after it in the batch see the books as they were', async () => {
    const { batch, state, wallet } = walletWith(() => Promise.reject(new Error('account lookup failed')));
    await expect(wallet.post(usage([{ grantId: 'grant-a', amount: -30n }, { grantId: 'grant-b', amount: -5n }]))).rejects.toThrow('account lookup failed');
    expect(snapshot(state)).toEqual([100n, 40n, 60n]);
    expect([batch.transactions.length, batch.entries.length, batch.touchedGrants.size, wallet.posted.length]).toEqual([0, 0, 0, 0]);
  });

  it('changes nothing when a leg names a grant the wallet does not hold, even after legs it does', async () => {
    const { batch, state, wallet } = walletWith(() => Promise.resolve('account-1'));
    await expect(wallet.post(usage([{ grantId: 'grant-a', amount: -30n }, { grantId: 'grant-z', amount: -5n }]))).rejects.toThrow('grant-z');
    expect(snapshot(state)).toEqual([100n, 40n, 60n]);
    expect(batch.touchedGrants.size).toBe(0);
  });

  it('applies every leg once it posts', async () => {
    const { batch, state, wallet } = walletWith(() => Promise.resolve('account-1'));
    const posted = await wallet.post(usage([{ grantId: 'grant-a', amount: -30n }, { grantId: 'grant-b', amount: -5n }]));
    expect(snapshot(state)).toEqual([65n, 10n, 55n]);
    expect([posted.amount, posted.balanceAfter]).toEqual([-35n, 65n]);
    // Two wallet legs and the counter-account's: a transaction with its entries beside it.
    expect(batch.entries.map((entry) => [entry.grantId, entry.accountId, entry.amount])).toEqual([
      ['grant-a', null, -30n],
      ['grant-b', null, -5n],
      [null, 'account-1', 35n],
    ]);
    expect([...batch.touchedGrants.keys()]).toEqual(['grant-a', 'grant-b']);
  });
});
