import { PGlite } from '@electric-sql/pglite';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pgArray } from './arrays.ts';

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
