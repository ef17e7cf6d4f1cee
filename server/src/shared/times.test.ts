import { describe, expect, it } from 'vitest';
import { isoTimes, parseIsoTime } from './times.ts';

describe('isoTimes', () => {
  it('formats every time as toISOString does, repeats and returns to an earlier time included', () => {
    const times = ['2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.001Z', '2026-01-01T00:00:00.000Z', '1970-01-01T00:00:00.000Z'].map((text) => new Date(text));
    const iso = isoTimes();
    expect(times.map(iso)).toEqual(times.map((time) => time.toISOString()));
  });
});

describe('parseIsoTime', () => {
  it('reads ISO 8601 times with their zone, a date alone as midnight UTC, and expanded years', () => {
    const cases: [string, string][] = [
      ['2026-04-01T12:00:00Z', '2026-04-01T12:00:00.000Z'],
      ['2026-04-01t12:00z', '2026-04-01T12:00:00.000Z'],
      ['2026-04-01T14:00:00+02:00', '2026-04-01T12:00:00.000Z'],
      ['2026-01-01T00:30:00-01:30', '2026-01-01T02:00:00.000Z'],
      ['2026-04-01T12:00:00.5Z', '2026-04-01T12:00:00.500Z'],
      ['2026-04-01T12:00:00.123999Z', '2026-04-01T12:00:00.123Z'],
      ['2026-04-01', '2026-04-01T00:00:00.000Z'],
      ['2024-02-29T23:59:59Z', '2024-02-29T23:59:59.000Z'],
      ['0050-03-10T08:00:00Z', '0050-03-10T08:00:00.000Z'],
      ['9999-12-31T23:59:59.999Z', '9999-12-31T23:59:59.999Z'],
      ['+010000-01-01T00:00:00Z', '+010000-01-01T00:00:00.000Z'],
      ['-000001-06-01T00:00:00Z', '-000001-06-01T00:00:00.000Z'],
    ];
    for (const [text, iso] of cases) expect(parseIsoTime(text)?.toISOString(), text).toBe(iso);
  });

  it('refuses days that do not exist, times without a zone, and anything else new Date would take', () => {
    const refused = [
      '2026-02-30T00:00:00Z', '2026-02-29', '2026-04-31', '2026-00-10', '2026-13-01', '2026-04-00',
      '2026-04-01T24:00:00Z', '2026-04-01T12:60Z', '2026-04-01T12:00:60Z', '2026-04-01T12:00:00+24:00', '2026-04-01T12:00:00+02:60',
      '2026-04-01T12:00:00', '2026-04-01T12:00', '2026-04-01 12:00:00Z', '2026-04-01T12:00:00+0200', '2026-04-01T12Z',
      '1', '2026', '2026-04', '2026-4-1', ' 2026-04-01', '2026-04-01\n', 'April 1, 2026', 'Wed, 01 Apr 2026 12:00:00 GMT', '',
      '-000000-01-01T00:00:00Z', '+999999-01-01T00:00:00Z',
    ];
    for (const text of refused) expect(parseIsoTime(text), JSON.stringify(text)).toBeNull();
  });
});
