import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { openDatabase, type Database } from './database.ts';

/**
 * An instance that freezes or is cut off mid-transaction must not hold its row locks (a wallet's,
 * say) until TCP keepalive notices, hours later: PostgreSQL ends a session of ours that sits idle
 * inside a transaction (idle_in_transaction_session_timeout), which rolls it back and frees them.
 */
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a session idle inside a transaction', () => {
  let created: Awaited<ReturnType<typeof createPostgresDatabase>>;
  let db: Database;
  let admin: pg.Client;
  beforeAll(async () => {
    created = await createPostgresDatabase();
    db = await openDatabase({ kind: 'postgres', url: created.url, poolSize: 1, idleInTransactionTimeoutMs: 1000 });
    admin = new pg.Client({ connectionString: created.url });
    await admin.connect();
    await admin.query('CREATE TABLE wallets (id int PRIMARY KEY, balance int NOT NULL)');
    await admin.query('INSERT INTO wallets VALUES (1, 10)');
  });
  afterAll(async () => {
    await admin?.end();
    await db?.close();
    await created?.drop();
  });

  it('is set before a new connection is handed out, not queued beside its first query (pg deprecates that, and pg 9 drops it); first, as pg warns once per process', async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);
    process.on('warning', onWarning);
    const fresh = await openDatabase({ kind: 'postgres', url: created.url, poolSize: 2, idleInTransactionTimeoutMs: 1000 });
    try {
      // Prisma's queries outside a transaction take a connection with pool.query, which sends its
      // query at once: on a new connection that was while the SET was still queued.
      const setting = await Promise.all([1, 2, 3].map(() => fresh.prisma.$queryRaw`SELECT current_setting('idle_in_transaction_session_timeout') AS value`));
      expect(setting).toEqual([[{ value: '1s' }], [{ value: '1s' }], [{ value: '1s' }]]);
      // Warnings are emitted on the next tick.
      await sleep(10);
    } finally {
      process.off('warning', onWarning);
      await fresh.close();
    }
    expect(warnings.filter((warning) => /already executing a query/.test(warning))).toEqual([]);
  });

  it('is ended by PostgreSQL: its locks are freed, its next query fails, and the process and the pool carry on', async () => {
    const other = new pg.Client({ connectionString: created.url });
    await other.connect();
    let locked: { rows: { balance: number }[]; waitedMs: number } | undefined;
    let outcome: unknown;
    try {
      // Without the timeout the other session would wait for the lock until this gives up.
      await other.query(`SET lock_timeout = '10s'`);
      outcome = await db
        .withConnection((connection) =>
          connection.transaction(async (tx) => {
            await tx.query('SELECT * FROM wallets WHERE id = 1 FOR UPDATE');
            // The frozen instance: nothing sent for 2 s while the lock is held. Another session
            // asks for the same row meanwhile and gets it once PostgreSQL ends this one.
            const started = Date.now();
            [locked] = await Promise.all([
              other.query('BEGIN').then(async () => {
                const { rows } = await other.query<{ balance: number }>('SELECT balance FROM wallets WHERE id = 1 FOR UPDATE');
                await other.query('UPDATE wallets SET balance = balance - 1 WHERE id = 1');
                await other.query('COMMIT');
                return { rows, waitedMs: Date.now() - started };
              }),
              sleep(2000),
            ]);
            // Back from its pause: the session is gone, and so is the transaction with it.
            await tx.query('UPDATE wallets SET balance = balance + 100 WHERE id = 1');
            return 'committed';
          }),
        )
        .then(
          (value) => value,
          (error: unknown) => error,
        );
    } finally {
      await other.end();
    }
    expect(locked?.rows).toEqual([{ balance: 10 }]);
    expect(locked?.waitedMs).toBeLessThan(5000);
    expect(String(outcome)).toMatch(/terminat|idle-in-transaction|not queryable/i);
    // Give a late 'error' from the dead socket time to arrive: it must not crash the process.
    await sleep(200);
    // The pool holds one connection: this works only if the ended one was not reused.
    expect(await db.withConnection((c) => c.query<{ balance: number }>('SELECT balance FROM wallets WHERE id = 1'))).toEqual([{ balance: 9 }]);
  });

  it('applies to every connection of the pool, Prisma\'s included, and defaults to a minute', async () => {
    const setting = (d: Database) => d.withConnection((c) => c.query<{ value: string }>('SELECT current_setting($1) AS value', ['idle_in_transaction_session_timeout']));
    expect(await setting(db)).toEqual([{ value: '1s' }]);
    expect(await db.prisma.$queryRaw`SELECT current_setting('idle_in_transaction_session_timeout') AS value`).toEqual([{ value: '1s' }]);
    const byDefault = await openDatabase({ kind: 'postgres', url: created.url, poolSize: 1 });
    try {
      expect(await setting(byDefault)).toEqual([{ value: '1min' }]);
      expect(await byDefault.prisma.$queryRaw`SELECT current_setting('idle_in_transaction_session_timeout') AS value`).toEqual([{ value: '1min' }]);
    } finally {
      await byDefault.close();
    }
  });

});
