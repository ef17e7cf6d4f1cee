import { describe, expect, it } from 'vitest';
import { StatementNames } from './database.ts';

describe('StatementNames', () => {
  it('gives one text one name, and different texts different names', () => {
    const names = new StatementNames();
    const first = names.nameOf('SELECT $1::int');
    expect(first).toMatch(/^tg_[0-9a-f]{32}$/);
    expect(names.nameOf('SELECT $1::int')).toBe(first);
    expect(names.nameOf('SELECT $1::text')).not.toBe(first);
  });

  it('stops naming new texts past its limit, so SQL built at run time cannot grow every connection without bound', () => {
    const names = new StatementNames(2);
    const a = names.nameOf('SELECT 1 WHERE $1');
    const b = names.nameOf('SELECT 2 WHERE $1');
    expect(names.nameOf('SELECT 3 WHERE $1')).toBeUndefined();
    // Texts named before the limit keep their names.
    expect(names.nameOf('SELECT 1 WHERE $1')).toBe(a);
    expect(names.nameOf('SELECT 2 WHERE $1')).toBe(b);
  });
});
