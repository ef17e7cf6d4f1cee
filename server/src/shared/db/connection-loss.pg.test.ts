import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config.ts';
import { openRuntime } from '../../runtime.ts';
import { createLogger } from '../logger.ts';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { startServerProcess, type ServerProcess } from '../../../test/processes.ts';
import { openDatabase, type Database } from './database.ts';

/**
 * A connection whose backend is terminated (pg_terminate_backend, a PostgreSQL restart or
 * failover) while it is checked out fails the work running on it, and nothing else: the
 * process survives (pg emits 'error' on the client, which must have a listener), the broken
 * connection is not reused, and the next query gets a healthy one.
 */

/** Waits for a backend of `database` other than `except` to be waiting on a lock, and answers its pid. */
async function lockWaiter(admin: pg.Client, database: string, except: number): Promise<number> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const { rows } = await admin.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> $2 AND wait_event_type = 'Lock'`,
      [database, except],
    );
    if (rows[0]) return rows[0].pid;
    if (Date.now() > deadline) throw new Error('no backend waited on the lock within 15 s');
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('a terminated connection, in process', () => {
  let created: Awaited<ReturnType<typeof createPostgresDatabase>>;
  let db: Database;
  let admin: pg.Client;
  beforeAll(async () => {
    created = await createPostgresDatabase();
    db = await openDatabase({ kind: 'postgres', url: created.url, poolSize: 1 });
    admin = new pg.Client({ connectionString: created.url });
    await admin.connect();
    await admin.query('CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)');
    await admin.query('INSERT INTO counters VALUES (1, 0)');
  });
  afterAll(async () => {
    await admin?.end();
    await db?.close();
    await created?.drop();
  });

  it('fails the transaction running on it, is not reused, and does not crash the process', async () => {
    const locker = new pg.Client({ connectionString: created.url });
    await locker.connect();
    try {
      const lockerPid = (await locker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      await locker.query('BEGIN');
      await locker.query('SELECT * FROM counters WHERE id = 1 FOR UPDATE');
      const update = db.transaction((tx) => tx.query('UPDATE counters SET n = n + 1 WHERE id = 1'));
      const settled = update.then(
        () => null,
        (error: unknown) => error,
      );
      const pid = await lockWaiter(admin, new URL(created.url).pathname.slice(1), lockerPid);
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      await locker.query('COMMIT');
      expect(String(await settled)).toMatch(/terminat/i);
    } finally {
      await locker.end();
    }
    // Give the dead socket's 'end' (and the 'error' pg emits for it) time to arrive.
    await new Promise((resolve) => setTimeout(resolve, 200));
    // The pool holds one connection: this works only if the broken one was destroyed.
    await db.transaction((tx) => tx.query('UPDATE counters SET n = n + 1 WHERE id = 1'));
    const rows = await db.withConnection((c) => c.query<{ n: number }>('SELECT n FROM counters WHERE id = 1'));
    expect(rows).toEqual([{ n: 1 }]);
  });

  it('a connection lost between queries fails the next one and is replaced', async () => {
    const failed = await db
      .withConnection(async (connection) => {
        const pid = (await connection.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'))[0]!.pid;
        await admin.query('SELECT pg_terminate_backend($1)', [pid]);
        await new Promise((resolve) => setTimeout(resolve, 200));
        return connection.query('SELECT 1');
      })
      .then(
        () => null,
        (error: unknown) => error,
      );
    expect(failed).toBeInstanceOf(Error);
    expect(await db.withConnection((c) => c.query('SELECT 1 AS one'))).toEqual([{ one: 1 }]);
  });
});

describe('a terminated connection, in the server process', () => {
  const masterKey = randomBytes(32).toString('hex');
  let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
  let server: ServerProcess;
  let runtime: Awaited<ReturnType<typeof openRuntime>>;
  let secret: string;
  let customerId: string;

  beforeAll(async () => {
    database = await createPostgresDatabase();
    const env = { DATABASE_URL: database.url, TOLLGATE_MASTER_KEY: masterKey };
    server = await startServerProcess(env);
    runtime = await openRuntime(loadConfig({ ...env, NODE_ENV: 'test' }), createLogger('silent'));
    const created = await runtime.services.merchants.create({ name: 'Terminated' });
    secret = created.key.secret;
    customerId = (await runtime.services.customers.create(created.merchant.id, { externalId: 'c' })).id;
    await runtime.services.ledger.grantCredits(created.merchant.id, { kind: 'system', apiKeyId: null }, {
      customerId, currency: 'USD', amountNanos: 10n * 1_000_000_000n, kind: 'PAID', idempotencyKey: 'seed',
    });
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
    await runtime?.close();
    await database?.drop();
  });

  async function graphql(query: string, variables: Record<string, unknown>) {
    const response = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
      body: JSON.stringify({ query, variables }),
    });
    return (await response.json()) as { data?: any; errors?: { extensions: { code: string } }[] };
  }
  const DEBIT = 'mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed transaction { id } } }';

  it('survives pg_terminate_backend of a debit waiting on the wallet lock; the retry debits once', async () => {
    const locker = new pg.Client({ connectionString: database.url });
    await locker.connect();
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    try {
      const lockerPid = (await locker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      await locker.query('BEGIN');
      await locker.query('SELECT * FROM wallets WHERE customer_id = $1 FOR UPDATE', [customerId]);
      const input = { customerId, amount: '1.00', idempotencyKey: 'terminated-debit' };
      const first = graphql(DEBIT, { input });
      const pid = await lockWaiter(admin, new URL(database.url).pathname.slice(1), lockerPid);
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      await locker.query('COMMIT');
      const answer = await first;
      expect(answer.errors?.[0]?.extensions.code).toBe('INTERNAL');

      await new Promise((resolve) => setTimeout(resolve, 300));
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      const retry = await graphql(DEBIT, { input });
      expect(retry.errors).toBeUndefined();
      expect(retry.data.debitCredits.replayed).toBe(false);
      const again = await graphql(DEBIT, { input });
      expect(again.data.debitCredits.replayed).toBe(true);
      const wallet = await graphql('query ($id: ID!) { wallet(customerId: $id) { balance { amount } } }', { id: customerId });
      expect(wallet.data.wallet.balance.amount).toBe('9.00');
    } finally {
      await locker.end();
      await admin.end();
    }
  });
});
