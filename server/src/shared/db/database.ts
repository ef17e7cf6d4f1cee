import { createHash } from 'node:crypto';
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { PrismaPGlite } from 'pglite-prisma-adapter';
import { PrismaClient } from '../../generated/prisma/client.ts';
import { lockDataDir } from './data-dir-lock.ts';

/** Raw SQL on one session. BIGINT columns should be selected as text (`::text`) and parsed. */
export interface SqlExecutor {
  query<Row = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<Row[]>;
  /** Runs a script of one or more statements. */
  exec(sql: string): Promise<void>;
}

/** One connection that stays on a single session (advisory locks, migrations). */
export interface SqlConnection extends SqlExecutor {
  /** BEGIN … COMMIT on this session; rolls back when `work` throws. */
  transaction<T>(work: (tx: SqlExecutor) => Promise<T>): Promise<T>;
}

export interface Database {
  kind: 'pglite' | 'postgres';
  prisma: PrismaClient;
  withConnection<T>(work: (connection: SqlConnection) => Promise<T>): Promise<T>;
  /** A raw-SQL transaction, for hot paths that Prisma's interactive transactions make too slow. */
  transaction<T>(work: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export type DatabaseOptions =
  | {
      kind: 'postgres';
      url: string;
      poolSize?: number;
      connectTimeoutMs?: number;
      /** How long a session may sit idle inside a transaction before PostgreSQL ends it (0: never). Tests shorten it. */
      idleInTransactionTimeoutMs?: number;
    }
  /** `dataDir` undefined keeps the database in memory (tests). */
  | { kind: 'pglite'; dataDir: string | undefined };

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  return options.kind === 'postgres'
    ? openPostgres(options.url, options.poolSize ?? 10, options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS, options.idleInTransactionTimeoutMs ?? IDLE_IN_TRANSACTION_TIMEOUT_MS)
    : openPglite(options.dataDir);
}

/**
 * Names for parameterized raw statements, so each connection parses and plans one once and
 * then only binds values: on the ledger's hot path planning cost more than executing. Bounded:
 * past `limit` distinct texts (SQL built at run time, say) statements go unnamed, as before.
 */
export class StatementNames {
  private readonly names = new Map<string, string>();

  constructor(private readonly limit = 500) {}

  nameOf(sql: string): string | undefined {
    let name = this.names.get(sql);
    if (name === undefined && this.names.size < this.limit) {
      name = `tg_${createHash('sha256').update(sql).digest('hex').slice(0, 32)}`;
      this.names.set(sql, name);
    }
    return name;
  }
}

/**
 * How long a query waits for a connection (a new one, or a free one from the pool) before it
 * fails: pg waits forever by default, so a database that stops answering (packets dropped, not
 * refused) would hang every request and /readyz instead of failing them.
 */
const CONNECT_TIMEOUT_MS = 30_000;

/**
 * How long one of our sessions may sit idle inside a transaction before PostgreSQL ends it
 * (`idle_in_transaction_session_timeout`). An instance that freezes (a stopped VM, a GC stall
 * gone wrong) or is cut off from the database mid-transaction would otherwise keep its row locks
 * until TCP keepalive gives up on it, hours later, and every debit of a wallet it had locked
 * waits on every other instance meanwhile. Ending the session rolls the transaction back and
 * frees its locks. Our transactions never wait on anything but the database between two of
 * their statements (no provider call, no prompt, no other service; the timer restarts with each
 * statement, so a long transaction such as a pricing import is not affected), so a gap of a
 * minute means the client is gone, not slow.
 */
const IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000;

function openPostgres(url: string, poolSize: number, connectTimeoutMs: number, idleInTransactionTimeoutMs: number): Database {
  const pool = new pg.Pool({
    connectionString: url,
    max: poolSize,
    connectionTimeoutMillis: connectTimeoutMs,
    // Set on each new session, awaited before the pool hands it out (queued beside the first
    // query instead, pg warns of a deprecated query queue), rather than as a startup option: that
    // would replace `options` given in DATABASE_URL or PGOPTIONS, and poolers such as PgBouncer
    // refuse startup options they do not know. A session that cannot take it (a pooler refusing
    // SET) works on without it.
    onConnect: async (client) => {
      await client.query(`SET idle_in_transaction_session_timeout = ${Math.max(0, Math.floor(idleInTransactionTimeoutMs))}`).catch(() => undefined);
    },
  });
  const statements = new StatementNames();
  // An idle client losing its server (restart, failover) must not crash the process. Checked-out
  // clients need a listener of their own: Prisma's adapter adds one to those it takes (pool.query,
  // its transactions), withConnection below to its own.
  pool.on('error', () => undefined);
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  return {
    kind: 'postgres',
    prisma,
    async withConnection(work) {
      const client = await pool.connect();
      let broken = false;
      // pg-pool listens for a client's 'error' only while it is idle. A checked-out client whose
      // server connection ends (pg_terminate_backend, a restart, a failover) emits 'error' too,
      // often after the failed query has already rejected; with no listener that event would
      // crash the process. The failure reaches `work` through its query; here the client is
      // only marked so that it is destroyed instead of going back to the pool.
      const onError = () => {
        broken = true;
      };
      client.on('error', onError);
      const executor: SqlExecutor = {
        query: async (sql, params) => (await client.query(params?.length ? { name: statements.nameOf(sql), text: sql, values: params } : sql)).rows,
        exec: async (sql) => {
          await client.query(sql);
        },
      };
      try {
        return await work({
          ...executor,
          async transaction(inner) {
            await client.query('BEGIN');
            try {
              const result = await inner(executor);
              await client.query('COMMIT');
              return result;
            } catch (error) {
              await client.query('ROLLBACK').catch(() => {
                broken = true;
              });
              throw error;
            }
          },
        });
      } finally {
        // A connection that failed, or whose ROLLBACK failed (it may be mid-transaction), is
        // never reused. Once released, the pool's own idle listener catches a late 'error'.
        client.removeListener('error', onError);
        client.release(broken);
      }
    },
    transaction(work) {
      return this.withConnection((connection) => connection.transaction(work));
    },
    close: once(async () => {
      await prisma.$disconnect();
      await pool.end();
    }),
  };
}

async function openPglite(dataDir: string | undefined): Promise<Database> {
  if (dataDir) mkdirSync(path.dirname(dataDir), { recursive: true });
  const unlock = dataDir ? lockDataDir(dataDir) : () => {};
  let pglite: PGlite;
  try {
    pglite = await PGlite.create(dataDir);
  } catch (error) {
    unlock();
    throw error;
  }
  const prisma = new PrismaClient({ adapter: new PrismaPGlite(pglite) });
  const withConnection: Database['withConnection'] = (work) =>
    work({
      query: async <Row>(sql: string, params?: unknown[]) => (await pglite.query<Row>(sql, params)).rows,
      exec: async (sql) => {
        await pglite.exec(sql);
      },
      // PGlite's own transaction() holds its single connection exclusively, so queries from
      // elsewhere (Prisma) wait instead of landing inside this transaction.
      transaction: (inner) =>
        pglite.transaction((tx) =>
          inner({
            query: async <Row>(sql: string, params?: unknown[]) => (await tx.query<Row>(sql, params)).rows,
            exec: async (sql) => {
              await tx.exec(sql);
            },
          }),
        ),
    });
  return {
    kind: 'pglite',
    prisma,
    withConnection,
    transaction: (work) => withConnection((connection) => connection.transaction(work)),
    close: once(async () => {
      try {
        await prisma.$disconnect();
        await pglite.close();
      } finally {
        unlock();
      }
    }),
  };
}

/** Closing is idempotent: a runtime and a test harness may both close the same database. */
function once(close: () => Promise<void>): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () => (closing ??= close());
}
