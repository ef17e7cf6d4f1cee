import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { openDatabase, type Database } from './database.ts';

/** Parameterized raw SQL is prepared once per connection, then only bound; plain scripts are not. */
describe('raw SQL on PostgreSQL', () => {
  let created: Awaited<ReturnType<typeof createPostgresDatabase>>;
  let db: Database;
  beforeAll(async () => {
    created = await createPostgresDatabase();
    db = await openDatabase({ kind: 'postgres', url: created.url, poolSize: 1 });
  });
  afterAll(async () => {
    await db?.close();
    await created?.drop();
  });

  it('prepares a parameterized statement once and reuses it, in and out of transactions', async () => {
    const sql = 'SELECT $1::int + 1 AS n';
    const answers: number[] = [];
    for (const value of [1, 2]) answers.push(...(await db.withConnection((c) => c.query<{ n: number }>(sql, [value]))).map((row) => row.n));
    answers.push(...(await db.transaction((tx) => tx.query<{ n: number }>(sql, [41]))).map((row) => row.n));
    expect(answers).toEqual([2, 3, 42]);
    const prepared = await db.withConnection((c) => c.query<{ name: string; statement: string }>('SELECT name, statement FROM pg_prepared_statements'));
    expect(prepared).toEqual([{ name: expect.stringMatching(/^tg_/), statement: sql }]);
  });
});
