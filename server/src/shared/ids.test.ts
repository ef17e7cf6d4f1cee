import { describe, expect, it } from 'vitest';
import { uuidv7 } from './ids.ts';
import { isUuid } from './validation.ts';

describe('uuidv7', () => {
  it('is a version-7 UUID carrying the time, strictly increasing within the process', () => {
    const before = Date.now();
    const ids = Array.from({ length: 20_000 }, () => uuidv7());
    expect(ids.every((id) => isUuid(id) && id[14] === '7' && '89ab'.includes(id[19]!))).toBe(true);
    expect(ids.every((id, i) => i === 0 || id > ids[i - 1]!)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(parseInt(ids[0]!.replace(/-/g, '').slice(0, 12), 16)).toBeGreaterThanOrEqual(before);
  });
});
