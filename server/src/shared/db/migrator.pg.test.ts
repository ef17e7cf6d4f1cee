import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { openDatabase, type Database } from './database.ts';
import { migrate, readMigrations } from './migrator.ts';

/**
 * Two server instances booting at once against one PostgreSQL database must apply each
 * migration exactly once. Proven both with two pools in this process and with two processes.
 */
const serverDir = fileURLToPath(new URL('../../..', import.meta.url));

function runMigrateProcess(url: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/migrate.ts'], {
      cwd: serverDir,
      env: { ...process.env, DATABASE_URL: url, TOLLGATE_MASTER_KEY: '0'.repeat(64) },
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('close', (code) => resolve({ code, output }));
  });
}

describe('migrators racing on PostgreSQL', () => {
  let created: Awaited<ReturnType<typeof createPostgresDatabase>>;
  beforeAll(async () => {
    created = await createPostgresDatabase();
  });
  afterAll(() => created?.drop());

  it('two processes started together apply each migration once', async () => {
    const [a, b] = await Promise.all([runMigrateProcess(created.url), runMigrateProcess(created.url)]);
    expect(a.code, a.output).toBe(0);
    expect(b.code, b.output).toBe(0);
    const total = readMigrations().length;
    // One applied everything; the other found it done.
    expect([a.output, b.output].map((out) => /(\d+) applied/.exec(out)?.[1]).sort()).toEqual(['0', String(total)]);

    const db = await openDatabase({ kind: 'postgres', url: created.url });
    try {
      const rows = await db.withConnection((c) => c.query<{ n: string }>('SELECT count(*)::text AS n FROM "_prisma_migrations"'));
      expect(rows[0]!.n).toBe(String(total));
    } finally {
      await db.close();
    }
  });

  it('many migrators in one process on separate pools do not collide', async () => {
    const fresh = await createPostgresDatabase();
    const dbs: Database[] = [];
    try {
      for (let i = 0; i < 4; i++) dbs.push(await openDatabase({ kind: 'postgres', url: fresh.url, poolSize: 2 }));
      const results = await Promise.all(dbs.map((db) => migrate(db)));
      expect(results.reduce((sum, result) => sum + result.applied.length, 0)).toBe(readMigrations().length);
      const names = await dbs[0]!.withConnection((c) => c.query<{ migration_name: string }>('SELECT migration_name FROM "_prisma_migrations"'));
      expect(new Set(names.map((row) => row.migration_name)).size).toBe(names.length);
    } finally {
      await Promise.all(dbs.map((db) => db.close()));
      await fresh.drop();
    }
  });
});
