import { describe, expect, it } from 'vitest';
import { createdKeysetPage, decodeCreatedCursor, encodeCreatedCursor } from './pagination.ts';

const id = '0192f4a8-7b1c-7000-8000-000000000001';
const cursorOf = (text: string) => Buffer.from(text).toString('base64url');

describe('created-time cursors', () => {
  it('read back exactly what they encode', () => {
    const row = { createdAt: new Date('2026-06-01T12:00:00.123Z'), id };
    expect(decodeCreatedCursor('after', encodeCreatedCursor(row))).toEqual(row);
  });

  it('refuse what this API never issued: an empty cursor, another time format, a rolled-over date, extra parts', () => {
    for (const cursor of ['', cursorOf(`1|${id}`), cursorOf(`2026-06-01|${id}`), cursorOf(`2026-02-30T00:00:00.000Z|${id}`), cursorOf(`2026-06-01T12:00:00.123Z|${id}|x`)]) {
      expect(() => createdKeysetPage({ after: cursor, inverted: false }), JSON.stringify(cursor)).toThrow(expect.objectContaining({ code: 'VALIDATION', details: expect.objectContaining({ field: 'after' }) }));
      expect(() => createdKeysetPage({ before: cursor, inverted: true }), JSON.stringify(cursor)).toThrow(expect.objectContaining({ code: 'VALIDATION' }));
    }
    expect(createdKeysetPage({ inverted: false }).where).toEqual({ AND: [] });
  });
});
