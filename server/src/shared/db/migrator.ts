import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sha256Hex } from '../crypto.ts';
import type { Database, SqlConnection } from './database.ts';

/**
 * Applies the SQL migrations in prisma/migrations the way `prisma migrate deploy` would,
 * without Prisma's schema engine (which cannot be downloaded here) and on PGlite too:
 * - one migration per transaction, so a failure leaves nothing half-applied;
 * - under a session advisory lock, so instances booting together apply each once;
 * - recorded in `_prisma_migrations` in Prisma's own format and checksum (SHA-256 of the
 *   file), so `prisma migrate status` agrees wherever the engine is available.
 */

export const DEFAULT_MIGRATIONS_DIR = fileURLToPath(new URL('../../../prisma/migrations', import.meta.url));

// Any fixed 64-bit number works; it only has to be the same for every instance.
const MIGRATION_LOCK_ID = 7_305_119_027_411;

export interface Migration {
  name: string;
  sql: string;
  checksum: string;
}

export function readMigrations(dir = DEFAULT_MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((entry) => statSync(path.join(dir, entry)).isDirectory())
    .sort()
    .map((name) => {
      const sql = readFileSync(path.join(dir, name, 'migration.sql'), 'utf8');
      return { name, sql, checksum: sha256Hex(sql) };
    });
}

const CREATE_MIGRATIONS_TABLE = `
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
  "id"                  VARCHAR(36) PRIMARY KEY NOT NULL,
  "checksum"            VARCHAR(64) NOT NULL,
  "finished_at"         TIMESTAMPTZ,
  "migration_name"      VARCHAR(255) NOT NULL,
  "logs"                TEXT,
  "rolled_back_at"      TIMESTAMPTZ,
  "started_at"          TIMESTAMPTZ NOT NULL DEFAULT now(),
  "applied_steps_count" INTEGER NOT NULL DEFAULT 0
)`;

interface AppliedRow {
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
}

async function appliedMigrations(connection: SqlConnection): Promise<AppliedRow[]> {
  const exists = await connection.query<{ exists: boolean }>(
    `SELECT to_regclass('"_prisma_migrations"') IS NOT NULL AS "exists"`,
  );
  if (!exists[0]?.exists) return [];
  return connection.query<AppliedRow>(
    `SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations" ORDER BY started_at`,
  );
}

export interface MigrateResult {
  applied: string[];
  alreadyApplied: string[];
}

export async function migrate(
  db: Database,
  options: { migrations?: Migration[]; log?: (message: string) => void } = {},
): Promise<MigrateResult> {
  const migrations = options.migrations ?? readMigrations();
  const log = options.log ?? (() => undefined);
  return db.withConnection(async (connection) => {
    await connection.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_ID]);
    try {
      await connection.exec(CREATE_MIGRATIONS_TABLE);
      const done = new Map<string, AppliedRow>();
      for (const row of await appliedMigrations(connection)) {
        if (row.rolled_back_at === null) done.set(row.migration_name, row);
      }
      const result: MigrateResult = { applied: [], alreadyApplied: [] };
      for (const migration of migrations) {
        const row = done.get(migration.name);
        if (row) {
          if (row.finished_at === null) {
            throw new Error(`Migration ${migration.name} is recorded as started but not finished; resolve it before starting`);
          }
          if (row.checksum !== migration.checksum) {
            throw new Error(`Migration ${migration.name} was edited after it was applied; add a new migration instead`);
          }
          result.alreadyApplied.push(migration.name);
          continue;
        }
        await applyOne(connection, migration);
        log(`applied migration ${migration.name}`);
        result.applied.push(migration.name);
      }
      return result;
    } finally {
      await connection.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_ID]);
    }
  });
}

async function applyOne(connection: SqlConnection, migration: Migration): Promise<void> {
  const id = randomUUID();
  try {
    await connection.transaction(async (tx) => {
      await tx.query(
        `INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at) VALUES ($1, $2, $3, now())`,
        [id, migration.checksum, migration.name],
      );
      await tx.exec(migration.sql);
      await tx.query(`UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1`, [id]);
    });
  } catch (error) {
    throw new Error(`Migration ${migration.name} failed and was rolled back: ${(error as Error).message}`, { cause: error });
  }
}

/** Names of migrations present on disk but not (successfully) applied; empty means up to date. */
export async function pendingMigrations(db: Database, migrations = readMigrations()): Promise<string[]> {
  const applied = await db.withConnection(appliedMigrations);
  const finished = new Set(applied.filter((row) => row.finished_at && !row.rolled_back_at).map((row) => row.migration_name));
  return migrations.map((migration) => migration.name).filter((name) => !finished.has(name));
}
