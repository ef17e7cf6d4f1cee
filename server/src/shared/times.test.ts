import { describe, expect, it } from 'vitest';
import { isoTimes } from './times.ts';

describe('isoTimes', () => {
  it('formats every time as toISOString does, repeats and returns to an earlier time included', () => {
    const times = ['2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.001Z', '2026-01-01T00:00:00.000Z', '1970-01-01T00:00:00.000Z'].map((text) => new Date(text));
    const iso = isoTimes();
    expect(times.map(iso)).toEqual(times.map((time) => time.toISOString()));
  });
});
