import { invalidField } from '../../shared/errors.ts';
import { formatScaled, parseDecimalAttos } from '../../shared/money.ts';

/** Exact rational helpers shared by cost and rules: every amount is a bigint, never a float. */

/** Nearest integer to num/den, halves rounded up; num ≥ 0, den > 0. */
export function roundHalfUp(num: bigint, den: bigint): bigint {
  return (2n * num + den) / (2n * den);
}

export function ceilDiv(num: bigint, den: bigint): bigint {
  return (num + den - 1n) / den;
}

const parsedPrices = new Map<string, bigint>();

/** A price priceAttos has parsed before, or undefined: lets a hot caller skip naming its field. */
export function knownPriceAttos(text: string): bigint | undefined {
  return parsedPrices.get(text);
}

/**
 * A price as configs write it: a decimal string ("0.15"), or a whole number, which JSON and YAML
 * hold exactly (`unitPrice: 2`). A number with a fraction is refused: it went through a binary
 * float and may already have lost digits.
 */
export type PriceText = string | number;

/** A non-negative price as attos; the field name travels into the VALIDATION error. */
export function priceAttos(field: string, value: PriceText): bigint {
  let text = value;
  if (typeof text === 'number') {
    // A whole number past doubles' exact range is past any price's 12 digits too: text would not help.
    if (Number.isInteger(text) && !Number.isSafeInteger(text)) throw invalidField(field, 'is too large: at most 12 digits before the decimal point');
    if (!Number.isSafeInteger(text)) throw invalidField(field, `must be a decimal string such as "0.15", not a JSON number: ${text} may already have lost digits`);
    text = String(text);
  }
  if (typeof text !== 'string') throw invalidField(field, 'must be a decimal string such as "0.15"');
  // A price list has a few hundred distinct rates, each parsed for every event it prices: parse each once.
  const known = parsedPrices.get(text);
  if (known !== undefined) return known;
  const attos = parseDecimalAttos(field, text);
  if (attos < 0n) throw invalidField(field, 'must not be negative');
  if (parsedPrices.size >= 10_000) parsedPrices.clear();
  parsedPrices.set(text, attos);
  return attos;
}

/** Quantities are held scaled by 1e18 so fractional units (audio seconds) stay exact. */
export const QUANTITY_SCALE = 10n ** 18n;

/**
 * A quantity already scaled by QUANTITY_SCALE: period totals and the steps events make in them
 * travel between the meter and the rules in this form, instead of being written out as decimal
 * text and parsed back for every event. Prints as its decimal.
 */
export class ScaledQuantity {
  constructor(readonly scaled: bigint) {}

  toString(): string {
    return formatScaledQuantity(this.scaled);
  }

  toJSON(): string {
    return this.toString();
  }
}

export type Quantity = bigint | number | string | ScaledQuantity;

/** A quantity scaled by QUANTITY_SCALE, as the shortest exact decimal string. */
export function formatScaledQuantity(value: bigint): string {
  // Most quantities are whole (tokens, requests): no need to write out eighteen zeros to trim.
  return value % QUANTITY_SCALE === 0n ? (value / QUANTITY_SCALE).toString() : formatScaled(value, 18, 0);
}

/**
 * Why a whole JSON number past Number.MAX_SAFE_INTEGER is refused as a quantity: JSON.parse has
 * already rounded it (9007199254740993 arrives as 9007199254740992), so only its text is exact.
 */
const BEYOND_DOUBLES = `is larger than ${Number.MAX_SAFE_INTEGER}, the largest whole number a JSON number holds exactly, so it may already have lost digits: send it as a decimal string, e.g. "9007199254740993"`;

const QUANTITY = /^(\d+)(?:\.(\d{1,18}))?$/;

/** A non-negative quantity scaled by QUANTITY_SCALE. Numbers must be safe integers: no floats. */
export function scaledQuantity(field: string, value: Quantity): bigint {
  if (value instanceof ScaledQuantity) {
    if (value.scaled < 0n) throw invalidField(field, 'must not be negative');
    return value.scaled;
  }
  if (typeof value === 'bigint') {
    if (value < 0n) throw invalidField(field, 'must not be negative');
    return value * QUANTITY_SCALE;
  }
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value > Number.MAX_SAFE_INTEGER) throw invalidField(field, BEYOND_DOUBLES);
    if (!Number.isInteger(value)) throw invalidField(field, 'must be a whole number; pass fractional quantities as decimal strings');
    if (value < 0) throw invalidField(field, 'must not be negative');
    return BigInt(value) * QUANTITY_SCALE;
  }
  const match = typeof value === 'string' ? QUANTITY.exec(value.trim()) : null;
  if (!match) throw invalidField(field, 'must be a non-negative decimal such as "12.5" (up to 18 decimal places)');
  return BigInt(match[1]!) * QUANTITY_SCALE + BigInt((match[2] ?? '').padEnd(18, '0'));
}

/** A count that must be a non-negative safe integer (tokens, images, requests). */
export function count(field: string, value: number): bigint {
  if (Number.isInteger(value) && value > Number.MAX_SAFE_INTEGER) throw invalidField(field, `must be a whole number ≥ 0 and at most ${Number.MAX_SAFE_INTEGER}`);
  if (!Number.isSafeInteger(value) || value < 0) throw invalidField(field, 'must be a whole number ≥ 0');
  return BigInt(value);
}
