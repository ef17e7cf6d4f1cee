import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config.ts';
import { openRuntime } from '../../runtime.ts';
import { openDatabase, type Database } from '../../shared/db/database.ts';
import { createLogger } from '../../shared/logger.ts';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { LedgerStore, SYSTEM_ACTOR } from './ledger.store.ts';

/**
 * Lock order on PostgreSQL. New wallets are created in one order by every batch. Another transaction (a batch on another
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

/** Until some session of the database waits for a lock (10 s at most). */
async function waitForLockWait(client: pg.Client): Promise<void> {
  for (let tries = 0; tries < 200; tries++) {
    const waiting = await client.query(`SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted AND a.datname = current_database()`);
    if (waiting.rowCount) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('nothing waited for a lock');
}

describe('creating wallets', () => {
  it('a wallet created by several requests at the same moment is created once, and none of them fails', async () => {
    const { merchant } = await runtime.services.merchants.create({ name: 'wallet race' });
    // The race is inside one INSERT (both find no row, both insert), so it is tried many times over.
    const failures: unknown[] = [];
    for (let round = 0; round < 40; round++) {
      const customerId = (await runtime.services.customers.create(merchant.id, { externalId: `race-${round}` })).id;
      const settled = await Promise.allSettled(Array.from({ length: 8 }, () => runtime.services.ledger.setOverdraftLimit(merchant.id, customerId, 'USD', 3_000_000_000n)));
      failures.push(...settled.filter((one) => one.status === 'rejected').map((one) => (one as PromiseRejectedResult).reason));
    }
    expect(failures).toEqual([]);
    const wallets = await db.withConnection((c) => c.query<{ n: number }>('SELECT count(*)::int AS n FROM wallets WHERE merchant_id = $1', [merchant.id]));
    expect(wallets[0]!.n).toBe(40);
  });

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
      // Once the batch waits on the wallet the other transaction holds, that one takes the second too.
      await waitForLockWait(other);
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

describe("creating a merchant's counter-accounts", () => {
  it('two first batches in two currencies, each needing them in the other order, do not deadlock', async () => {
    const { merchant } = await runtime.services.merchants.create({ name: 'accounts order' });
    const [one, two] = [(await runtime.services.customers.create(merchant.id, { externalId: 'one' })).id, (await runtime.services.customers.create(merchant.id, { externalId: 'two' })).id];
    const store = new LedgerStore(db);
    const pause = () => new Promise((resolve) => setTimeout(resolve, 300));
    // Each asks for one currency's account, pauses while the other asks for the other's, then asks for the second.
    const batch = (customerId: string, currencies: [string, string]) =>
      store.withWallets(currencies.map((currency) => ({ merchantId: merchant.id, customerId, currency })), new Date(), async (locked) => {
        const first = await locked.accountId(merchant.id, currencies[0], 'USAGE_REVENUE');
        await pause();
        return [first, await locked.accountId(merchant.id, currencies[1], 'USAGE_REVENUE')];
      });
    const [usdFirst, eurFirst] = await Promise.all([batch(one, ['USD', 'EUR']), batch(two, ['EUR', 'USD'])]);
    // Both finished (no deadlock), each with an account per currency.
    expect([new Set(usdFirst.result).size, new Set(eurFirst.result).size]).toEqual([2, 2]);
    // Neither posted anything, so neither keeps the accounts it made (a refused operation writes nothing).
    const accounts = await db.withConnection((connection) => connection.query(`SELECT currency, kind::text FROM ledger_accounts WHERE merchant_id = $1`, [merchant.id]));
    expect(accounts).toEqual([]);
  });
});

describe('scheduled hold expiry', () => {
  it('skips a due hold another transaction has locked instead of waiting for it, and expires it on the next run', async () => {
    const { merchant } = await runtime.services.merchants.create({ name: 'hold expiry' });
    const customer = await runtime.services.customers.create(merchant.id, { externalId: 'holder' });
    await runtime.services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, {
      customerId: customer.id, currency: 'USD', amountNanos: 10n * 1_000_000_000n, kind: 'PAID', idempotencyKey: 'seed',
    });
    const { hold } = await runtime.services.ledger.createHold(merchant.id, SYSTEM_ACTOR, {
      customerId: customer.id, currency: 'USD', amountNanos: 4n * 1_000_000_000n, ttlSeconds: 60, idempotencyKey: 'hold',
    });
    const holdId = hold.id;
    const config = loadConfig({ DATABASE_URL: database.url, TOLLGATE_MASTER_KEY: randomBytes(32).toString('hex'), NODE_ENV: 'test' });
    const later = await openRuntime(config, createLogger('silent'), { clock: () => new Date(Date.now() + 120_000) });
    const other = new pg.Client({ connectionString: database.url });
    await other.connect();
    try {
      // Another transaction (a batch capturing or releasing it) holds the hold's row.
      await other.query('BEGIN');
      await other.query(`SELECT id FROM holds WHERE id = $1 FOR UPDATE`, [holdId]);
      const skipped = await Promise.race([later.services.ledger.runExpiry(), new Promise<'waited'>((resolve) => setTimeout(() => resolve('waited'), 5000))]);
      expect(skipped).toEqual({ grantsExpired: 0, holdsExpired: 0 });
      await other.query('COMMIT');
      expect(await later.services.ledger.runExpiry()).toEqual({ grantsExpired: 0, holdsExpired: 1 });
      const [row] = (await other.query(`SELECT status FROM holds WHERE id = $1`, [holdId])).rows as [{ status: string }];
      expect(row.status).toBe('EXPIRED');
    } finally {
      await other.end();
      await later.close();
    }
  });
});

describe('a wallet a batch inserted and left unchanged', () => {
  const newWallet = async (name: string) => {
    const { merchant } = await runtime.services.merchants.create({ name });
    const customerId = (await runtime.services.customers.create(merchant.id, { externalId: name })).id;
    return { merchantId: merchant.id, customerId, currency: 'EUR' };
  };
  const insertWallet = (client: pg.Client, key: { merchantId: string; customerId: string; currency: string }) =>
    client.query(`INSERT INTO wallets (id, merchant_id, customer_id, currency, updated_at) VALUES (gen_random_uuid(), $1, $2, $3, now())
      ON CONFLICT (customer_id, currency) DO NOTHING RETURNING id`, [key.merchantId, key.customerId, key.currency]);
  const storedIds = async (client: pg.Client, customerId: string) => (await client.query(`SELECT id FROM wallets WHERE customer_id = $1`, [customerId])).rows.map((row) => row.id as string);

  it('is deleted before COMMIT, and an insert of the same wallet that waited on it stores its own', async () => {
    const key = await newWallet('dropped');
    const [other, watcher] = [new pg.Client({ connectionString: database.url }), new pg.Client({ connectionString: database.url })];
    await Promise.all([other.connect(), watcher.connect()]);
    try {
      let entered: () => void = () => undefined;
      let release: () => void = () => undefined;
      const inside = new Promise<void>((resolve) => (entered = resolve));
      const gate = new Promise<void>((resolve) => (release = resolve));
      const batch = new LedgerStore(db).withWallets([key], new Date(), async () => {
        entered();
        await gate;
      });
      await inside;
      // Another transaction (a batch on another instance) inserts the same wallet meanwhile: it waits on ours.
      await other.query('BEGIN');
      const inserting = insertWallet(other, key);
      // Awaited below; should the batch fail first, closing the connection must not also report it.
      inserting.catch(() => undefined);
      await waitForLockWait(watcher);
      release();
      expect([...(await batch).batch.dropped]).toEqual([`${key.customerId}:EUR`]);
      const theirs = await inserting;
      expect(theirs.rowCount).toBe(1);
      await other.query('COMMIT');
      expect(await storedIds(watcher, key.customerId)).toEqual([theirs.rows[0].id]);
    } finally {
      await Promise.all([other.end(), watcher.end()]);
    }
  });

  it('is never one another transaction inserted first, even when the batch waited on it and posted nothing', async () => {
    const key = await newWallet('kept');
    const other = new pg.Client({ connectionString: database.url });
    await other.connect();
    try {
      await other.query('BEGIN');
      const theirs = await insertWallet(other, key);
      const batch = new LedgerStore(db).withWallets([key], new Date(), async (locked) => locked.wallets.size);
      await waitForLockWait(other);
      await other.query('COMMIT');
      const { result, batch: done } = await batch;
      expect([result, done.created.size, done.dropped.size]).toEqual([1, 0, 0]);
      expect(await storedIds(other, key.customerId)).toEqual([theirs.rows[0].id]);
    } finally {
      await other.end();
    }
  });
});
