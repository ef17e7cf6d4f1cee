import { afterEach, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../../test/databases.ts';
import { sha256Hex } from '../crypto.ts';
import { migrate, pendingMigrations, readMigrations, type Migration } from './migrator.ts';

const open: TestDatabase[] = [];
async function freshDatabase() {
  const database = await createTestDatabase();
  open.push(database);
  return database.db;
}
afterEach(async () => {
  await Promise.all(open.splice(0).map((database) => database.close()));
});

const migration = (name: string, sql: string): Migration => ({ name, sql, checksum: sha256Hex(sql) });

describe('migrator', () => {
  it('applies every migration once and records it in Prisma\'s format', async () => {
    const db = await freshDatabase();
    const files = readMigrations();
    expect(files.length).toBeGreaterThan(0);
    expect(await pendingMigrations(db)).toEqual(files.map((file) => file.name));

    const first = await migrate(db);
    expect(first.applied).toEqual(files.map((file) => file.name));
    expect(await pendingMigrations(db)).toEqual([]);

    const again = await migrate(db);
    expect(again.applied).toEqual([]);
    expect(again.alreadyApplied).toEqual(first.applied);

    const rows = await db.withConnection((connection) =>
      connection.query<{ migration_name: string; checksum: string; finished_at: Date | null; applied_steps_count: number; id: string }>(
        'SELECT id, migration_name, checksum, finished_at, applied_steps_count FROM "_prisma_migrations" ORDER BY migration_name',
      ),
    );
    expect(rows.map((row) => row.migration_name)).toEqual(files.map((file) => file.name));
    for (const [index, row] of rows.entries()) {
      expect(row.checksum).toBe(files[index]!.checksum);
      expect(row.checksum).toMatch(/^[0-9a-f]{64}$/);
      expect(row.finished_at).not.toBeNull();
      expect(row.applied_steps_count).toBe(1);
      expect(row.id).toMatch(/^[0-9a-f-]{36}$/);
    }
    // The schema really exists: Prisma can use it.
    expect(await db.prisma.merchant.count()).toBe(0);
  });

  it('rolls a failing migration back completely and records nothing for it', async () => {
    const db = await freshDatabase();
    const good = migration('20000101000000_good', 'CREATE TABLE good_one (id int);');
    const bad = migration('20000101000001_bad', 'CREATE TABLE half_done (id int);\nSELECT * FROM table_that_does_not_exist;');
    await expect(migrate(db, { migrations: [good, bad] })).rejects.toThrow(/20000101000001_bad failed and was rolled back/);

    const tables = await db.withConnection((connection) =>
      connection.query<{ name: string }>("SELECT tablename AS name FROM pg_tables WHERE tablename IN ('good_one', 'half_done')"),
    );
    expect(tables.map((table) => table.name)).toEqual(['good_one']);
    expect(await pendingMigrations(db, [good, bad])).toEqual(['20000101000001_bad']);

    // Fixed and re-run, it applies.
    const fixed = migration('20000101000001_bad', 'CREATE TABLE half_done (id int);');
    expect((await migrate(db, { migrations: [good, fixed] })).applied).toEqual(['20000101000001_bad']);
  });

  it('refuses to start when an applied migration was edited afterwards', async () => {
    const db = await freshDatabase();
    await migrate(db, { migrations: [migration('20000101000000_a', 'CREATE TABLE a (id int);')] });
    await expect(migrate(db, { migrations: [migration('20000101000000_a', 'CREATE TABLE a (id bigint);')] })).rejects.toThrow(
      /was edited after it was applied/,
    );
  });
});
