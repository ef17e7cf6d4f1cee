import { invalidField } from './errors.ts';

/**
 * Money is never a float. Balances and ledger amounts are BIGINT nano-units (1e-9 of the
 * currency's major unit): one token at $0.15 per million is 150 nano-dollars, exactly.
 * Charges computed by pricing may be finer still; they arrive as exact decimals and are
 * held in atto-units (1e-18) until posted, with the sub-nano remainder carried per wallet.
 * Amounts cross the API as decimal strings.
 */
export const NANOS_PER_UNIT = 1_000_000_000n;
export const ATTOS_PER_NANO = 1_000_000_000n;
/** 1e9 major units: far beyond any one balance, and safely inside BIGINT's 9.2e18 nanos. */
export const MAX_AMOUNT_NANOS = 1_000_000_000n * NANOS_PER_UNIT;

const DECIMAL = /^(-)?(\d{1,12})(?:\.(\d{1,18}))?$/;
/**
 * Any length of digits, to tell a decimal that only runs too long. One way to match each text:
 * a pattern that could split leading zeros two ways (`0*(\d+?)`) backtracked over every split,
 * so a long run of zeros that was no decimal took time in the square of its length (a request
 * of 100,000 of them held the event loop for seconds).
 */
const LONG_DECIMAL = /^(-)?(\d+)(?:\.(\d+))?$/;

/**
 * An exact decimal string as atto-units (1e-18). Rejects floats' exponent notation, >18 places and
 * more than 12 digits before the point; zeros leading them do not count ("0000000000001.5" is 1.5).
 */
export function parseDecimalAttos(field: string, text: string): bigint {
  const trimmed = String(text).trim();
  const match = DECIMAL.exec(trimmed) ?? longDecimal(field, trimmed);
  const [, sign, whole, fraction = ''] = match;
  const attos = BigInt(whole!) * NANOS_PER_UNIT * ATTOS_PER_NANO + BigInt(fraction.padEnd(18, '0'));
  return sign ? -attos : attos;
}

/**
 * A decimal DECIMAL does not match: read when only zeros leading it make it long, else refused
 * for what is wrong with it. One that only runs too long is told so, not shown an example of
 * what it already is.
 */
function longDecimal(field: string, trimmed: string): RegExpExecArray {
  const digits = LONG_DECIMAL.exec(trimmed);
  if (!digits) throw invalidField(field, 'must be a decimal number such as "12.50" (up to 18 decimal places)');
  if ((digits[3]?.length ?? 0) > 18) throw invalidField(field, 'has more than 18 decimal places');
  if (significantDigits(digits[2]!) > 12) throw invalidField(field, 'is too large: at most 12 digits before the decimal point');
  return digits;
}

/** How many digits a whole number's text has without its leading zeros (at least one). */
function significantDigits(whole: string): number {
  let start = 0;
  while (start < whole.length - 1 && whole.charCodeAt(start) === 48 /* 0 */) start++;
  return whole.length - start;
}

/** An exact decimal string as nano-units; more than 9 decimal places is refused, not rounded. */
export function parseDecimalNanos(field: string, text: string): bigint {
  const attos = parseDecimalAttos(field, text);
  if (attos % ATTOS_PER_NANO !== 0n) throw invalidField(field, 'may have at most 9 decimal places');
  const nanos = attos / ATTOS_PER_NANO;
  if (nanos > MAX_AMOUNT_NANOS || nanos < -MAX_AMOUNT_NANOS) throw invalidField(field, 'is too large');
  return nanos;
}

const FORMATTED_NANOS = /^(-)?(\d+)(?:\.(\d{1,9}))?$/;

/**
 * The inverse of formatNanos, for amounts the server wrote itself (balance events): exact, and
 * not held to MAX_AMOUNT_NANOS, which limits what a caller may send, not what a wallet may hold.
 */
export function parseFormattedNanos(text: string): bigint {
  const match = FORMATTED_NANOS.exec(text);
  if (!match) throw new Error(`not an amount formatNanos wrote: ${JSON.stringify(text)}`);
  const [, sign, whole, fraction = ''] = match;
  const nanos = BigInt(whole!) * NANOS_PER_UNIT + BigInt(fraction.padEnd(9, '0'));
  return sign ? -nanos : nanos;
}

export function requirePositiveNanos(field: string, text: string): bigint {
  const nanos = parseDecimalNanos(field, text);
  if (nanos <= 0n) throw invalidField(field, 'must be greater than zero');
  return nanos;
}

export function requirePositiveAttos(field: string, text: string): bigint {
  const attos = parseDecimalAttos(field, text);
  if (attos <= 0n) throw invalidField(field, 'must be greater than zero');
  if (attos > MAX_AMOUNT_NANOS * ATTOS_PER_NANO) throw invalidField(field, 'is too large');
  return attos;
}

/** `value` ÷ 10^scale, exact, trailing zeros trimmed down to `minDecimals` decimals. */
export function formatScaled(value: bigint, scale: number, minDecimals: number): string {
  return value < 0n ? formatDigits(true, (-value).toString(), scale, minDecimals) : formatDigits(false, value.toString(), scale, minDecimals);
}

/** `digits` (a whole number's decimal digits, no sign) ÷ 10^scale, trailing zeros trimmed down to minDecimals. */
function formatDigits(negative: boolean, digits: string, scale: number, minDecimals: number): string {
  if (digits.length <= scale) digits = digits.padStart(scale + 1, '0');
  const point = digits.length - scale;
  let end = digits.length;
  while (end > point + minDecimals && digits.charCodeAt(end - 1) === 48 /* 0 */) end--;
  const fraction = end > point ? digits.slice(point, end) : '';
  return (negative ? '-' : '') + digits.slice(0, point) + (fraction ? '.' + fraction : '');
}

const INTEGER_TEXT = /^-?\d+$/;

/** formatAttos of an amount already in text (a numeric column read as text), without a bigint. */
export function formatAttosText(attos: string): string {
  if (!INTEGER_TEXT.test(attos)) throw new Error(`not a whole number of attos: ${attos}`);
  const negative = attos.charCodeAt(0) === 45; /* - */
  let digits = negative ? attos.slice(1) : attos;
  let start = 0;
  while (start < digits.length - 1 && digits.charCodeAt(start) === 48) start++;
  if (start > 0) digits = digits.slice(start);
  return formatDigits(negative && digits !== '0', digits, 18, 2);
}

/** "12.50", "0.00000015", "-3.00": exact, at least two decimal places. */
export function formatNanos(nanos: bigint): string {
  return formatScaled(nanos, 9, 2);
}

export function formatAttos(attos: bigint): string {
  return formatScaled(attos, 18, 2);
}

/** Floor division that also works for negative numbers (BigInt `/` truncates toward zero). */
export function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? q - 1n : q;
}

const CURRENCY = /^[A-Z]{3}$/;
/**
 * The ISO 4217 codes in use, as the runtime's ICU data lists them: a typo ("UDS") is refused
 * instead of opening a wallet of its own that no price, plan or payment ever reaches.
 */
const ISO_CURRENCIES: ReadonlySet<string> = new Set(Intl.supportedValuesOf('currency'));

export function parseCurrency(field: string, text: string | null | undefined, fallback = 'USD'): string {
  const code = (text ?? fallback).trim().toUpperCase();
  if (!CURRENCY.test(code)) throw invalidField(field, 'must be a three-letter ISO 4217 code such as USD');
  if (!ISO_CURRENCIES.has(code)) throw invalidField(field, `${code} is not an ISO 4217 currency code in use`);
  return code;
}
