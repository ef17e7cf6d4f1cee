import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatAttos, formatAttosText, formatNanos, MAX_AMOUNT_NANOS, parseDecimalAttos, parseFormattedNanos } from './money.ts';

/** The plain way to write value ÷ 10^scale with at least two decimals: the reference for the fast one. */
function reference(value: bigint, scale: number): string {
  const negative = value < 0n;
  const digits = (negative ? -value : value).toString().padStart(scale + 1, '0');
  let fraction = digits.slice(digits.length - scale).replace(/0+$/, '');
  if (fraction.length < 2) fraction = fraction.padEnd(2, '0');
  return `${negative ? '-' : ''}${digits.slice(0, digits.length - scale)}.${fraction}`;
}

describe('formatting amounts', () => {
  it('writes attos and nanos exactly, trimming zeros to two decimals', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 40n), max: 10n ** 40n }), (value) => {
        expect(formatAttos(value)).toBe(reference(value, 18));
        expect(formatNanos(value)).toBe(reference(value, 9));
      }),
      { numRuns: 3000 },
    );
    expect(formatAttos(0n)).toBe('0.00');
    expect(formatAttos(-1n)).toBe('-0.000000000000000001');
    expect(formatNanos(12_500_000_000n)).toBe('12.50');
  });

  it('formats amounts given as text the same as the bigint, leading zeros and negative zero included', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 40n), max: 10n ** 40n }), (value) => {
        expect(formatAttosText(value.toString())).toBe(formatAttos(value));
      }),
      { numRuns: 3000 },
    );
    expect(formatAttosText('-000')).toBe('0.00');
    expect(formatAttosText('00150000000000000000')).toBe('0.15');
    expect(() => formatAttosText('1.5')).toThrow(/whole number/);
  });
});

describe('reading amounts the server formatted', () => {
  it('is the exact inverse of formatNanos, past the input limit up to what a wallet holds', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(2n ** 63n - 1n), max: 2n ** 63n - 1n }), (value) => {
        expect(parseFormattedNanos(formatNanos(value))).toBe(value);
      }),
      { numRuns: 3000 },
    );
    expect(parseFormattedNanos('1500000000.00')).toBe(1_500_000_000n * 1_000_000_000n);
    expect(parseFormattedNanos(formatNanos(MAX_AMOUNT_NANOS + 1n))).toBe(MAX_AMOUNT_NANOS + 1n);
    for (const text of ['', '1e9', '1.0000000001', ' 1.00', 'NaN']) expect(() => parseFormattedNanos(text), text).toThrow(/formatNanos/);
  });
});

describe('reading decimal amounts', () => {
  it('says what is wrong with a decimal that only runs too long, and reads the longest ones it holds', () => {
    const reason = (text: string) => {
      try {
        parseDecimalAttos('price', text);
        return 'read';
      } catch (error) {
        return (error as Error).message;
      }
    };
    expect(reason('1234567890123')).toMatch(/too large: at most 12 digits before the decimal point/);
    expect(reason('-1234567890123.5')).toMatch(/too large/);
    expect(reason('0.1234567890123456789')).toMatch(/more than 18 decimal places/);
    expect(reason('1e3')).toMatch(/must be a decimal number such as "12.50"/);
    expect(reason('12,5')).toMatch(/must be a decimal number such as "12.50"/);
    expect(parseDecimalAttos('price', '999999999999.999999999999999999')).toBe(10n ** 30n - 1n);
    expect(parseDecimalAttos('price', '-0.000000000000000001')).toBe(-1n);
  });

  it('reads zeros leading a decimal as nothing, however many: only the digits after them count toward the 12', () => {
    expect(parseDecimalAttos('price', '0000000000001.5')).toBe(15n * 10n ** 17n);
    expect(parseDecimalAttos('price', `-${'0'.repeat(40)}.25`)).toBe(-25n * 10n ** 16n);
    expect(parseDecimalAttos('price', '0000999999999999.5')).toBe(999_999_999_999n * 10n ** 18n + 5n * 10n ** 17n);
    expect(() => parseDecimalAttos('price', '00001234567890123')).toThrow(/too large: at most 12 digits before the decimal point/);
    expect(() => parseDecimalAttos('price', '0000000000001.1234567890123456789')).toThrow(/more than 18 decimal places/);
  });
});
