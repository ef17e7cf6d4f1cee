import { describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH, nestsDeeperThan, requireJsonObject, requireStorableText } from './validation.ts';

/** `levels` objects and lists nested, alternating from an object outermost, with `leaf` at the bottom. */
function nested(levels: number, leaf: unknown = 'x'): unknown {
  let value = leaf;
  for (let level = 0; level < levels; level++) value = (levels - level) % 2 ? { a: value } : [value];
  return value;
}

describe('JSON nesting', () => {
  it('counts objects and lists as levels, at any depth without overflowing', () => {
    expect(nestsDeeperThan('text', 0)).toBe(false);
    expect(nestsDeeperThan({}, 0)).toBe(true);
    expect(nestsDeeperThan({ a: [1, { b: null }] }, 3)).toBe(false);
    expect(nestsDeeperThan({ a: [1, { b: null }] }, 2)).toBe(true);
    expect(nestsDeeperThan(nested(20_000), MAX_JSON_DEPTH)).toBe(true);
  });

  it('refuses JSON deeper than the limit, naming the field, before anything recursive walks it', () => {
    const refusal = { code: 'VALIDATION', details: { field: 'metadata' } };
    expect(() => requireJsonObject('metadata', nested(20_000))).toThrow(expect.objectContaining(refusal));
    expect(() => requireStorableText('metadata', nested(20_000))).toThrow(expect.objectContaining(refusal));
    expect(() => requireJsonObject('metadata', nested(MAX_JSON_DEPTH + 1))).toThrow(/metadata: must not nest/);
    expect(requireJsonObject('metadata', nested(MAX_JSON_DEPTH))).toEqual(nested(MAX_JSON_DEPTH));
    // Deep enough to walk, then the text check still applies.
    expect(() => requireStorableText('metadata', nested(MAX_JSON_DEPTH, 'x\u0000'))).toThrow(/metadata: must not contain the NUL/);
  });
});

describe('JSON stored as given', () => {
  const refusal = (message: RegExp) => expect.objectContaining({ code: 'VALIDATION', details: { field: 'metadata' }, message: expect.stringMatching(message) });

  it('refuses an own __proto__ key at any depth: it would be dropped on the way to the database', () => {
    for (const text of ['{"__proto__":{"x":1},"plan":"pro"}', '{"a":[{"b":{"__proto__":null}}]}']) {
      expect(() => requireJsonObject('metadata', JSON.parse(text)), text).toThrow(refusal(/__proto__/));
    }
    // A key that only names the prototype in text is an ordinary key.
    expect(requireJsonObject('metadata', JSON.parse('{"proto":1,"constructor":{"prototype":2}}'))).toEqual({ proto: 1, constructor: { prototype: 2 } });
  });

  it('refuses numbers JSON cannot carry (1e400 parses as Infinity, stored as null)', () => {
    for (const text of ['{"seats":1e400}', '{"a":[1,-1e400]}']) {
      expect(() => requireJsonObject('metadata', JSON.parse(text)), text).toThrow(refusal(/finite/));
    }
    expect(() => requireJsonObject('metadata', { a: { b: Number.NaN } })).toThrow(refusal(/finite/));
    expect(requireJsonObject('metadata', { seats: 1e300, ratio: -0.5 })).toEqual({ seats: 1e300, ratio: -0.5 });
  });
});
