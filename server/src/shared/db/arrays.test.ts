import { PGlite } from '@electric-sql/pglite';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BulkColumns, pgArray } from './arrays.ts';

describe('pgArray', () => {
  let db: PGlite;
  beforeAll(async () => {
    db = await PGlite.create();
  });
  afterAll(() => db.close());

  it('round-trips awkward text through a text[] parameter', async () => {
    const values = ['a', 'quote"d', 'back\\slash', '', 'NULL', 'NULL', 'null', 'nUlL', null, null, '{x,y}', '{x,y}', ' spaced ', 'tab\there', 'line\nbreak', '\u00a0', 'a,b', '{', '}', 'é😀', '{"a": "b\\"c"}'];
    const { rows } = await db.query<{ v: string | null }>('SELECT unnest($1::text[]) AS v', [pgArray(values)]);
    expect(rows.map((row) => row.v)).toEqual(values);
  });

  it('round-trips any text', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.option(fc.string({ unit: 'grapheme' }), { nil: null }), { maxLength: 20 }), async (values) => {
        const { rows } = await db.query<{ v: string | null }>('SELECT unnest($1::text[]) AS v', [pgArray(values)]);
        expect(rows.map((row) => row.v)).toEqual(values);
      }),
      { numRuns: 300 },
    );
  });

  it('encodes numbers, bigints, booleans, dates and nulls for typed arrays', async () => {
    const at = new Date('2026-06-15T12:34:56.789Z');
    const { rows } = await db.query<{ n: string | null; t: Date | null; b: boolean | null; j: unknown }>(
      'SELECT unnest($1::bigint[])::text AS n, unnest($2::timestamptz[]) AS t, unnest($3::bool[]) AS b, unnest($4::text[])::jsonb AS j',
      [pgArray([1234567890123456789n, -2, null]), pgArray([at, null, at]), pgArray([true, false, null]), pgArray([JSON.stringify({ a: 'x"y\\z' }), '{}', null])],
    );
    expect(rows).toEqual([
      { n: '1234567890123456789', t: at, b: true, j: { a: 'x"y\\z' } },
      { n: '-2', t: null, b: false, j: {} },
      { n: null, t: at, b: null, j: null },
    ]);
  });
});

describe('BulkColumns', () => {
  let db: PGlite;
  beforeAll(async () => {
    db = await PGlite.create();
    await db.exec(`CREATE TYPE kind AS ENUM ('A', 'B'); CREATE TABLE t (id int PRIMARY KEY, who uuid, kind kind, at timestamptz, note text, doc jsonb)`);
  });
  afterAll(() => db.close());

  interface Row { id: number; who: string | null; kind: 'A' | 'B'; at: Date; note?: string | null; doc: string }
  const insert = async (rows: Row[]) => {
    const params: unknown[] = [];
    const bulk = new BulkColumns(rows, params)
      .column('id', 'int', (row) => row.id)
      .column('who', 'uuid', (row) => row.who)
      .column('kind', 'text', (row) => row.kind, 'kind')
      .column('at', 'timestamptz', (row) => row.at)
      .column('note', 'text', (row) => row.note)
      .column('doc', 'text', (row) => row.doc, 'jsonb');
    await db.query(`INSERT INTO t (${bulk.names}) SELECT ${bulk.select} FROM ${bulk.from}`, params);
    return params;
  };
  const stored = async (ids: number[]) =>
    (await db.query<{ id: number; who: string | null; kind: string; at: Date; note: string | null; doc: unknown }>(`SELECT * FROM t WHERE id = ANY($1) ORDER BY id`, [ids])).rows;

  it('sends a column that is the same on every row once, as a scalar, and stores every row', async () => {
    const who = '0190a6f0-0000-7000-8000-000000000001';
    // Equal times from different Date objects count as one value; null and undefined too.
    const rows: Row[] = [1, 2, 3].map((id) => ({ id, who, kind: 'A', at: new Date('2026-01-01T00:00:00Z'), note: id === 2 ? undefined : null, doc: '{"a":1}' }));
    const params = await insert(rows);
    // Only the ids went as an array; every other column is its one value.
    expect(params).toEqual(['{1,2,3}', who, 'A', rows[0]!.at, null, '{"a":1}']);
    expect(await stored([1, 2, 3])).toEqual(rows.map((row) => ({ id: row.id, who, kind: 'A', at: row.at, note: null, doc: { a: 1 } })));
  });

  it('sends columns that differ as arrays, row by row in order', async () => {
    const rows: Row[] = [
      { id: 10, who: null, kind: 'A', at: new Date('2026-01-01T00:00:00Z'), note: 'x, "y"', doc: '{}' },
      { id: 11, who: '0190a6f0-0000-7000-8000-000000000002', kind: 'B', at: new Date('2026-01-02T00:00:00Z'), note: null, doc: '[1]' },
    ];
    await insert(rows);
    expect(await stored([10, 11])).toEqual(rows.map((row) => ({ id: row.id, who: row.who, kind: row.kind, at: row.at, note: row.note ?? null, doc: JSON.parse(row.doc) })));
  });

  it('keeps the first column an array, so a single row inserts one row', async () => {
    await insert([{ id: 20, who: null, kind: 'B', at: new Date('2026-03-01T00:00:00Z'), note: 'only', doc: '{}' }]);
    expect((await stored([20])).map((row) => row.note)).toEqual(['only']);
  });

  it('refuses an empty batch', () => {
    expect(() => new BulkColumns([], [])).toThrow(/at least one row/);
  });
});
