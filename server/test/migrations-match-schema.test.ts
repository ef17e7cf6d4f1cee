import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diffSchemas } from '../scripts/prisma6-diff.ts';
import { migrate } from '../src/shared/db/migrator.ts';
import { catalogSnapshot } from './catalog.ts';
import { createTestDatabase, type TestDatabase } from './databases.ts';

/**
 * The committed migrations must produce exactly the database schema.prisma describes.
 * One database is built by running the migrations; another from the SQL Prisma's own
 * (offline) differ writes for schema.prisma from scratch; their catalogs must be equal.
 * A forgotten `npm run db:diff` after editing schema.prisma fails here.
 */
const schemaFile = fileURLToPath(new URL('../prisma/schema.prisma', import.meta.url));

describe('migrations match schema.prisma', () => {
  let migrated: TestDatabase;
  let fromSchema: TestDatabase;

  beforeAll(async () => {
    const sqlFromSchema = diffSchemas(null, readFileSync(schemaFile, 'utf8'));
    [migrated, fromSchema] = await Promise.all([createTestDatabase(), createTestDatabase()]);
    await migrate(migrated.db);
    await fromSchema.db.withConnection((connection) => connection.exec(sqlFromSchema));
  }, 120_000);

  afterAll(async () => {
    await Promise.all([migrated?.close(), fromSchema?.close()]);
  });

  it('builds the same tables, columns, indexes, constraints and enums', async () => {
    const [fromMigrations, expected] = await Promise.all([catalogSnapshot(migrated.db), catalogSnapshot(fromSchema.db)]);
    expect(fromMigrations.columns.length).toBeGreaterThan(10);
    expect(fromMigrations).toEqual(expected);
  });

  it('notices drift: one extra column makes the catalogs differ', async () => {
    await fromSchema.db.withConnection((connection) => connection.exec('ALTER TABLE customers ADD COLUMN drift_probe integer'));
    try {
      expect(await catalogSnapshot(migrated.db)).not.toEqual(await catalogSnapshot(fromSchema.db));
    } finally {
      await fromSchema.db.withConnection((connection) => connection.exec('ALTER TABLE customers DROP COLUMN drift_probe'));
    }
  });
});
