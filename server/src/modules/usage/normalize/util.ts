/**
 * Small helpers shared by the normalizers: tolerant readers for parsed JSON, exact decimal
 * extraction from the JSON text, and builders for the common result shapes.
 */
import { blankUsage, type NormalizedUsage, type ProviderResponse } from '../usage.types.ts';

export type Obj = Record<string, unknown>;

/** What a normalizer knows besides the body: who answered, which API, and the request. */
export interface Ctx {
  provider: string;
  api: string;
  /** A model named by the URL (Gemini, Vertex, Bedrock, fal, Deepgram's `model=`), if any. */
  urlModel: string | null;
  /** What the URL names in place of a model (an Azure deployment): the model when nothing else names one. */
  fallbackModel: string | null;
  /** The URL path, without query. */
  path: string;
  response: ProviderResponse;
  request: Obj | undefined;
}

export type Normalizer = (ctx: Ctx) => NormalizedUsage;

export function isObj(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function obj(value: unknown): Obj | undefined {
  return isObj(value) ? value : undefined;
}

export function arr(value: unknown): unknown[] | undefined {
  return Array.isArray(value) ? value : undefined;
}

const DIGITS = /^\d+$/;

/**
 * Counts sent that were not whole non-negative numbers since the last takeMalformedCounts().
 * Normalizing a response is synchronous, so the count belongs to the response just read.
 */
let malformedCounts = 0;

/** How many counts of the last normalized response were not whole non-negative numbers; resets. */
export function takeMalformedCounts(): number {
  const taken = malformedCounts;
  malformedCounts = 0;
  return taken;
}

/**
 * A non-negative integer count: a whole number, or digits as text. Absent or null is 0. Anything
 * else sent (negative, fractional, non-finite, other text, another type) is counted as malformed,
 * so that post-request metering refuses the response rather than read it as 0 tokens; the gateway,
 * which has already relayed it, meters what can be read (rounded, or nothing below zero).
 */
export function int(value: unknown): number {
  if (value === undefined || value === null) return 0;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value;
  if (typeof value === 'string' && DIGITS.test(value)) return Number(value);
  malformedCounts++;
  // Capped, so that the sums normalizers make of counts (input plus cache reads…) stay finite.
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? Math.min(Math.round(value), Number.MAX_SAFE_INTEGER) : 0;
}

/**
 * True when the provider sent this count (so 0 is meaningful, and another field is not read in
 * its place): any value but absent or null. int() then reads it, or counts it as malformed.
 */
export function hasCount(value: unknown): boolean {
  return value !== undefined && value !== null;
}

export function str(value: unknown): string | null {
  return typeof value === 'string' && value !== '' ? value : null;
}

export function parseJson(text: string): unknown {
  // A cut-off object or array is refused without a thrown SyntaxError, which costs more than
  // a whole parse (the truncated tail of a stream is the common case).
  const first = firstChar(text);
  if (first === 123 || first === 91) {
    let last = text.length - 1;
    let c = text.charCodeAt(last);
    while (c === 32 || c === 10 || c === 13 || c === 9) c = text.charCodeAt(--last);
    if (c !== (first === 123 ? 125 : 93)) return undefined;
  }
  try {
    // A byte-order mark is skipped when the body is sniffed (firstChar), but JSON.parse refuses it.
    return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch {
    return undefined;
  }
}

/**
 * A request body read as JSON the way lenient servers read it, or undefined when it is not
 * JSON. JSON.parse first; a body it refuses that writes NaN, Infinity or -Infinity as bare
 * values, which Python's json module accepts (so FastAPI and vLLM run such a request), is read
 * with each of them as null: they are no value any field read from a request may take (a cap, a
 * count, "stream", "background", a TTS text), and the provider refuses them there too. Only a
 * body JSON.parse refused, naming one of them, is read twice. The gateway reads requests with it
 * (request-body.ts) and so do the normalizers, so a request is metered as it was checked.
 */
export function parseRequestJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    if (!text.includes('NaN') && !text.includes('Infinity')) return undefined;
  }
  try {
    return JSON.parse(nonFiniteAsNull(text)) as unknown;
  } catch {
    return undefined;
  }
}

/** `text` with NaN, Infinity and -Infinity outside strings written as null. */
function nonFiniteAsNull(text: string): string {
  const pieces: string[] = [];
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) === 0x22 /* " */) {
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c /* \ */) i++;
      continue;
    }
    const length = text.startsWith('NaN', i) ? 3 : text.startsWith('Infinity', i) ? 8 : text.startsWith('-Infinity', i) ? 9 : 0;
    if (length === 0) continue;
    pieces.push(text.slice(from, i), 'null');
    i += length - 1;
    from = i + 1;
  }
  pieces.push(text.slice(from));
  return pieces.join('');
}

/** First non-whitespace character code of the body, or -1 when it is blank. */
export function firstChar(text: string): number {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 32 && c !== 10 && c !== 13 && c !== 9 && c !== 0xfeff) return c;
  }
  return -1;
}

/** `{` or `[` starts a JSON document; anything else non-blank is taken as an event stream. */
export function isJsonBody(text: string): boolean {
  const c = firstChar(text);
  return c === 123 || c === 91;
}

function skipWs(text: string, i: number): number {
  let c = text.charCodeAt(i);
  while (c === 32 || c === 10 || c === 13 || c === 9) c = text.charCodeAt(++i);
  return i;
}

/**
 * Index just past `"key":` (and whitespace) for the first occurrence at or after `from`, or -1.
 * Searching the raw text for the quoted key is safe: quotes inside JSON strings are escaped,
 * so `"key"` followed by a colon only occurs as a real key.
 */
export function valueAt(text: string, key: string, from = 0): number {
  const needle = `"${key}"`;
  let at = text.indexOf(needle, from);
  while (at !== -1) {
    const i = skipWs(text, at + needle.length);
    // A quote after a backslash is inside a string: the end of a key such as "x\"usage", not a key of its own.
    if (text.charCodeAt(i) === 58 && text.charCodeAt(at - 1) !== 92) return skipWs(text, i + 1);
    at = text.indexOf(needle, at + needle.length);
  }
  return -1;
}

/** Whether some `"key":` in the text has an object value (cheap pre-filter before parsing). */
export function hasObjectValue(text: string, key: string): boolean {
  const needle = `"${key}"`;
  let at = text.indexOf(needle);
  while (at !== -1) {
    let i = skipWs(text, at + needle.length);
    if (text.charCodeAt(i) === 58) {
      i = skipWs(text, i + 1);
      if (text.charCodeAt(i) === 123) return true;
    }
    at = text.indexOf(needle, at + needle.length);
  }
  return false;
}

/** Whether some `"key":` in the text has a value other than `null`. */
export function hasNonNullValue(text: string, key: string): boolean {
  const needle = `"${key}"`;
  let at = text.indexOf(needle);
  while (at !== -1) {
    let i = skipWs(text, at + needle.length);
    if (text.charCodeAt(i) === 58) {
      i = skipWs(text, i + 1);
      if (text.charCodeAt(i) !== 110 /* n */) return true;
    }
    at = text.indexOf(needle, at + needle.length);
  }
  return false;
}

function isNumberChar(c: number): boolean {
  return (c >= 48 && c <= 57) || c === 46 || c === 45 || c === 43 || c === 101 || c === 69;
}

/** The number literal starting at `at` ("" when there is none, or `at` is -1). */
export function numberLiteralAt(text: string, at: number): string {
  if (at < 0) return '';
  let end = at;
  while (end < text.length && isNumberChar(text.charCodeAt(end))) end++;
  return text.slice(at, end);
}

/**
 * The provider's own decimal text for a number: the literal after `"key":` whose value equals
 * `value` (what JSON.parse produced), so "25.933313" stays "25.933313" and never passes
 * through binary floating point. Falls back to formatting the double when the literal is
 * not found (the body was re-serialised, say).
 */
export function exactDecimal(text: string, key: string, value: number): string {
  let at = valueAt(text, key);
  while (at !== -1) {
    const literal = numberLiteralAt(text, at);
    if (literal !== '' && Number(literal) === value) return plainDecimal(literal);
    at = valueAt(text, key, at);
  }
  return plainDecimal(String(value));
}

/** A non-negative number sent as text: digits, with a fraction and an exponent if any ("0.0047625", "2.5e-7"). */
const DECIMAL_TEXT = /^\d+(\.\d+)?([eE][+-]?\d+)?$/;

/**
 * An amount a provider reports (a cost), kept exactly as written, or null when none was sent. A
 * JSON number keeps its own digits (exactDecimal); one that a proxy or SDK re-serialized as text
 * is read as int() reads a count as text: a non-negative number (DECIMAL_TEXT) is taken digit
 * for digit (exponent expanded), and any other text ("abc", "-1", "1e400") is counted as
 * malformed, so that post-request metering refuses the response, and left out here. Other types
 * are no amount (a provider's cost object is read for its parts by the caller).
 */
export function reportedDecimal(source: string, key: string, value: unknown): string | null {
  if (typeof value === 'number') return exactDecimal(source, key, value);
  if (typeof value !== 'string') return null;
  if (DECIMAL_TEXT.test(value) && Number.isFinite(Number(value))) return plainDecimal(value);
  int(value);
  return null;
}

/** Expands exponent notation ("2.5e-7" → "0.00000025") by moving digits, never by arithmetic. */
export function plainDecimal(literal: string): string {
  let e = literal.indexOf('e');
  if (e === -1) e = literal.indexOf('E');
  if (e === -1) return literal;
  let mantissa = literal.slice(0, e);
  const exponent = Number(literal.slice(e + 1));
  let sign = '';
  if (mantissa.startsWith('-')) {
    sign = '-';
    mantissa = mantissa.slice(1);
  }
  const dot = mantissa.indexOf('.');
  const whole = dot === -1 ? mantissa : mantissa.slice(0, dot);
  const digits = whole + (dot === -1 ? '' : mantissa.slice(dot + 1));
  const point = whole.length + exponent;
  let out: string;
  if (point <= 0) out = `0.${'0'.repeat(-point)}${digits}`;
  else if (point >= digits.length) out = digits + '0'.repeat(point - digits.length);
  else out = `${digits.slice(0, point)}.${digits.slice(point)}`;
  out = out.replace(LEADING_ZEROS, '');
  if (out.startsWith('.') || out === '') out = `0${out}`;
  return sign + out;
}
const LEADING_ZEROS = /^0+(?=\d)/;

/** Characters as people count them (code points), which is what per-character TTS bills. */
export function codePoints(text: string): number {
  let count = text.length;
  for (let i = 0; i < text.length - 1; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        count--;
        i++;
      }
    }
  }
  return count;
}

export function requestString(ctx: Ctx, key: string): string | null {
  return str(ctx.request?.[key]);
}

/** The body's model when it names one, else the URL's, else the request's, else the URL's stand-in (an Azure deployment). */
export function pickModel(ctx: Ctx, fromBody: unknown): string | null {
  return str(fromBody) ?? ctx.urlModel ?? requestString(ctx, 'model') ?? requestString(ctx, 'model_id') ?? ctx.fallbackModel;
}

export function result(ctx: Ctx, model: string | null): NormalizedUsage {
  return blankUsage({ provider: ctx.provider, api: ctx.api, model, requests: 1 });
}

/**
 * The start every JSON normalizer shares: the parsed body and the model it names, or the
 * finished answer when the body cannot be parsed or is a provider error.
 */
export function openJson(ctx: Ctx, body: string): { o: Obj; model: string | null } | NormalizedUsage {
  const o = obj(parseJson(body));
  if (!o) return incomplete(ctx, pickModel(ctx, undefined), null, 'unparseable_body');
  const model = pickModel(ctx, o.model);
  const error = errorCode(o);
  return error ? failed(ctx, model, error) : { o, model };
}

/** Tells openJson's two answers apart. */
export const isUsage = (value: { o: Obj } | NormalizedUsage): value is NormalizedUsage => !('o' in value);

/** A provider error (HTTP status, error body or in-stream error event): never charged. */
export function failed(ctx: Ctx, model: string | null, error: string): NormalizedUsage {
  const out = result(ctx, model);
  out.billable = false;
  out.requests = 0;
  out.details.error = error;
  if (ctx.response.status >= 400) out.details.http_status = ctx.response.status;
  return out;
}

/**
 * No usage arrived: a stream cut off (or one that never carried usage), or a body without
 * its usage block. Metering's incomplete-usage policy decides; `text` lets it estimate output.
 */
export function incomplete(ctx: Ctx, model: string | null, text: string | null, reason: string): NormalizedUsage {
  const out = result(ctx, model);
  out.billable = false;
  out.requests = 0;
  out.incomplete = true;
  out.streamedText = text;
  out.details.reason = reason;
  return out;
}

/** Nothing to charge yet: a queued job or a poll of one (the result is billed once, when it lands). */
export function pending(ctx: Ctx, model: string | null, status: string): NormalizedUsage {
  const out = result(ctx, model);
  out.billable = false;
  out.requests = 0;
  out.details.status = status;
  return out;
}

/** The provider's error code/type in a parsed body, or null when the body is not an error. */
export function errorCode(body: unknown): string | null {
  const o = obj(body);
  if (!o) return null;
  const error = o.error;
  if (typeof error === 'string' && error !== '') return error;
  const e = obj(error);
  if (e) return str(e.code) ?? str(e.type) ?? str(e.status) ?? (typeof e.code === 'number' ? String(e.code) : 'error');
  if (o.type === 'error') return str(o.code) ?? 'error';
  // Mistral's error body, and older vLLM's in-stream error: the error's fields at the top level.
  if (o.object === 'error') return str(o.type) ?? str(o.code) ?? (typeof o.code === 'number' ? String(o.code) : 'error');
  return null;
}

/** Sets a count in details only when the provider sent it and it is non-zero. */
export function detail(out: NormalizedUsage, key: string, value: unknown): void {
  const n = int(value);
  if (n > 0) out.details[key] = n;
}

/** Appends text pieces without building intermediate arrays. */
export class TextSink {
  text = '';
  otherChars = 0;
  add(piece: unknown): void {
    if (typeof piece === 'string') this.text += piece;
  }
  /** Output that is not visible text (reasoning, tool arguments): counted, not kept. */
  other(piece: unknown): void {
    if (typeof piece === 'string') this.otherChars += piece.length;
  }
  finish(out: NormalizedUsage): NormalizedUsage {
    if (this.otherChars > 0) out.details.streamed_other_chars = this.otherChars;
    return out;
  }
}
