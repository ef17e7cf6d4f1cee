import { describe, expect, it } from 'vitest';
import { canonicalJson } from './canonical-json.ts';

const text = (value: unknown, dropNulls = false) => JSON.stringify(canonicalJson(value, 'field', dropNulls));

describe('canonicalJson', () => {
  it('gives one text whatever order the keys came in, lists keeping theirs', () => {
    expect(text({ b: 1, a: { d: [{ y: 2, x: 1 }], c: null } })).toBe(text({ a: { c: null, d: [{ x: 1, y: 2 }] }, b: 1 }));
    expect(text({ a: [2, 1] })).not.toBe(text({ a: [1, 2] }));
  });

  it('drops null properties only when asked, at every depth', () => {
    expect(text({ a: 1, b: null, c: { d: null, e: 2 } }, true)).toBe(text({ c: { e: 2 }, a: 1 }, true));
    expect(text({ a: 1, b: null })).not.toBe(text({ a: 1 }));
  });

  it('keeps an own "__proto__" key as data, and refuses JSON nested too deep', () => {
    expect(text(JSON.parse('{"z":1,"__proto__":{"x":1}}'))).toBe('{"__proto__":{"x":1},"z":1}');
    let deep: unknown = 1;
    for (let i = 0; i < 70; i++) deep = { [`k${i % 2}`]: deep, a: 0 };
    expect(() => canonicalJson(deep, 'usage', false)).toThrow(/usage/);
  });
});
