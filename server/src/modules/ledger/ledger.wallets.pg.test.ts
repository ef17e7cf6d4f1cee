import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config.ts';
import { openRuntime } from '../../runtime.ts';
import { openDatabase, type Database } from '../../shared/db/database.ts';
import { createLogger } from '../../shared/logger.ts';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { LedgerStore } from './ledger.store.ts';

/**
 * New wallets are created in one order by every batch. Another transaction (a batch on another
 * instance) holds wallet `first` uncommitted; a batch listing [second, first] must wait for it
 * without holding `second`, or the other transaction's insert of `second` deadlocks with it.
 */
let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
let db: Database;
let runtime: Awaited<ReturnType<typeof openRuntime>>;

beforeAll(async () => {
  database = await createPostgresDatabase();
  db = await openDatabase({ kind: 'postgres', url: database.url });
  runtime = await openRuntime(loadConfig({ DATABASE_URL: database.url, TOLLGATE_MASTER_KEY: randomBytes(32).toString('hex'), NODE_ENV: 'test' }), createLogger('silent'), { db });
}, 60_000);

afterAll(async () => {
  await runtime?.close();
  await database?.drop();
});

describe('creating wallets', () => {
  it('waits for a wallet another transaction is creating without holding one that transaction needs next', async () => {
    const { merchant } = await runtime.services.merchants.create({ name: 'wallet order' });
    const ids = [(await runtime.services.customers.create(merchant.id, { externalId: 'a' })).id, (await runtime.services.customers.create(merchant.id, { externalId: 'b' })).id].sort();
    const [first, second] = ids as [string, string];
    const other = new pg.Client({ connectionString: database.url });
    await other.connect();
    const insertWallet = (customerId: string) =>
      other.query(`INSERT INTO wallets (id, merchant_id, customer_id, currency, updated_at) VALUES (gen_random_uuid(), $1, $2, 'USD', now())`, [merchant.id, customerId]);
    try {
      await other.query('BEGIN');
      await insertWallet(first);
      const store = new LedgerStore(db);
      const batch = store.withWallets(
        [{ merchantId: merchant.id, customerId: second, currency: 'USD' }, { merchantId: merchant.id, customerId: first, currency: 'USD' }],
        new Date(),
        async (locked) => locked.wallets.size,
      );
      // Let the batch reach the wallet the other transaction holds, then take the second one too.
      await new Promise((resolve) => setTimeout(resolve, 300));
      await insertWallet(second);
      await other.query('COMMIT');
      expect((await batch).result).toBe(2);
      const rows = await other.query(`SELECT customer_id FROM wallets WHERE merchant_id = $1 ORDER BY customer_id`, [merchant.id]);
      expect(rows.rows.map((row) => row.customer_id)).toEqual([first, second]);
    } finally {
      await other.end();
    }
  });
});
