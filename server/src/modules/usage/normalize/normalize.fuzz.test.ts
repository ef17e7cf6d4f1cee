/**
 * Property-based fuzzing of the usage normalizers. Checked:
 *   - the hand-written scanners of json-scan.ts agree with JSON.parse on generated documents,
 *     embedded in NDJSON, JSON arrays and AWS event-stream frames, whole or cut off;
 *   - normalizeResponse never throws on any body sent to a supported provider, and what it
 *     returns is sane (non-negative integer counts, exact decimals, no NaN or Infinity), for
 *     mutated fixtures and for provider-shaped bodies with arbitrary values in every field;
 *   - error responses (HTTP status, error bodies, in-stream errors) are never billable;
 *   - a stream cut before its usage arrived is incomplete and never reports more than the
 *     whole stream; the whole stream's usage does not depend on its framing or on the content
 *     events a capture dropped from its middle.
 * Fixture expectations themselves are fixtures.test.ts's: the fixtures here are only seeds.
 *
 * The seed is fixed, so every run checks the same cases; on failure fast-check prints it with
 * the counterexample's path. FUZZ_SEED=<n> replays another seed (FUZZ_RUNS scales the runs).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../../shared/errors.ts';
import type { NormalizedUsage, ProviderResponse } from '../usage.types.ts';
import { detectProvider, normalizeResponse, parseSse, SUPPORTED_PROVIDERS, type SseEvent } from './index.ts';
import { countKeys, lastObjectValue, lastStringValue, objectEnd, scanJsonObjects } from './json-scan.ts';
import { takeMalformedCounts } from './util.ts';
import { fixtureMeta, fixtureResponse } from '../../../../test/provider-fixtures.ts';

const SEED = Number(process.env.FUZZ_SEED ?? 20_260_917);
const SCALE = Number(process.env.FUZZ_RUNS ?? 1);

function check<Ts>(property: fc.IRawProperty<Ts>, numRuns: number): void {
  fc.assert(property, { seed: SEED, numRuns: Math.max(1, Math.round(numRuns * SCALE)) });
}

// ---------------------------------------------------------------------------------------------
// Fixtures, as the gateway sees them (test/provider-fixtures.ts).

const meta = fixtureMeta;
const FIXTURE_NAMES = Object.keys(meta).filter((name) => typeof meta[name] === 'object');
const fixture = (name: string) => fixtureResponse(name);

const FIXTURE_RESPONSES = new Map(FIXTURE_NAMES.map((name) => [name, fixture(name)]));
const BILLABLE_FIXTURES = FIXTURE_NAMES.filter((name) => normalizeResponse(FIXTURE_RESPONSES.get(name)!).billable);
const SSE_FIXTURES = FIXTURE_NAMES.filter((name) => name.endsWith('.sse'));

// ---------------------------------------------------------------------------------------------
// One URL for every API of every supported provider (host patterns filled in with a valid label).

const PATHS = [
  '/v1/chat/completions', '/v1/completions', '/v1/fim/completions', '/v1/responses', '/v1/embeddings', '/v1/images/generations',
  '/v1/images/edits', '/v1/images/variations', '/v1/audio/transcriptions', '/v1/audio/translations', '/v1/audio/speech', '/v1/messages',
  '/openai/deployments/prod-gpt/chat/completions', '/openai/deployments/prod-gpt/audio/transcriptions',
  '/v1beta/models/gemini-3.8-flash:generateContent', '/v1beta/models/gemini-3.8-flash:streamGenerateContent',
  '/v1beta/models/imagen-4.0-generate-001:predict', '/v1beta/openai/chat/completions',
  '/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-6:streamRawPredict',
  '/v1/projects/p/locations/us-central1/publishers/meta/models/llama-4:rawPredict',
  '/v1/projects/p/locations/global/endpoints/openapi/chat/completions',
  '/model/anthropic.claude-sonnet-4-6/converse', '/model/amazon.nova-pro-v1%3A0/converse-stream', '/model/anthropic.claude-sonnet-4-6/invoke',
  '/model/anthropic.claude-sonnet-4-6/invoke-with-response-stream', '/model/meta.llama3/invoke-with-response-stream',
  '/v2/chat', '/v1/chat', '/v2/embed', '/v2/rerank', '/compatibility/v1/chat/completions',
  '/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb', '/v1/text-to-dialogue', '/v1/listen?model=nova-3&multichannel=true', '/v1/speak?model=aura-2',
  '/v2beta/stable-image/generate/core', '/v2beta/results/abc', '/v1/generation/sdxl/text-to-image',
  '/fal-ai/flux/dev', '/fal-ai/flux/requests/0f3b', '/fal-ai/flux/requests/0f3b/status',
  '/v1/predictions', '/v1/predictions/xyz', '/v1/models/black-forest-labs/flux-schnell/predictions',
  '/v1/flux-pro-1.1', '/v1/get_result', '/generate', '/v1/ideogram-v3/generate',
];

function hostFor(pattern: string): string {
  return pattern.replace('*', pattern.endsWith('.amazonaws.com') ? 'us-east-1' : 'acme');
}

const PROVIDER_URLS: { url: string; provider?: string }[] = [];
/** The URLs by provider, so that each provider is drawn as often (28 of them share one router). */
const URLS_BY_PROVIDER: { url: string; provider?: string }[][] = [];
for (const provider of SUPPORTED_PROVIDERS) {
  const first = PROVIDER_URLS.length;
  for (const path of PATHS) {
    if (provider.hosts.length === 0) {
      // Self-hosted servers are reached by naming the provider.
      if (path.startsWith('/v1/') && detectProvider(`https://api.openai.com${path}`)?.api !== 'unknown') {
        PROVIDER_URLS.push({ url: `http://localhost:8000${path}`, provider: provider.aliases[0] });
      }
      continue;
    }
    for (const host of provider.hosts) {
      const url = `https://${hostFor(host)}${path}`;
      if (detectProvider(url)?.api !== 'unknown') PROVIDER_URLS.push({ url });
    }
  }
  URLS_BY_PROVIDER.push(PROVIDER_URLS.slice(first));
}
/** The API a URL is routed to (for a named provider, as normalizeResponse routes it). */
const apiOf = (target: { url: string; provider?: string }) => detectProvider(target.url)?.api ?? normalizeResponse({ ...target, status: 200, headers: {}, body: '' }).api;
const providerUrl = fc.tuple(fc.nat(), fc.nat()).map(([p, u]) => {
  const urls = URLS_BY_PROVIDER[p % URLS_BY_PROVIDER.length]!;
  return urls[u % urls.length]!;
});

// ---------------------------------------------------------------------------------------------
// What every normalized record must satisfy, whatever the body.

const COUNT_FIELDS = ['inputTokens', 'cachedInputTokens', 'cacheWriteTokens', 'outputTokens', 'reasoningTokens', 'characters', 'images', 'requests'] as const;
/** Exact decimal text as a provider wrote it; a negative one is left as sent, for metering to refuse. */
const DECIMAL = /^-?\d+(\.\d+)?$/;
/** Details that hold decimal text (seconds, costs) rather than counts. */
const DECIMAL_DETAIL = /(_seconds|_usd|_credits|_megapixels)$/;
const NUMBER_LITERAL = /-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

/**
 * Whether every number written in the response is below 2^40, so that sums of counts stay safe
 * integers. Counts near 2^53 can only come from a provider sending them, and metering refuses
 * anything above 2^31 − 1 anyway (usage.service), so only then is safety required.
 */
function boundedNumbers(response: ProviderResponse): boolean {
  const text = `${response.body} ${Object.values(response.headers ?? {}).join(' ')}`;
  for (const literal of text.match(NUMBER_LITERAL) ?? []) if (!(Math.abs(Number(literal)) < 2 ** 40)) return false;
  return true;
}

function expectSane(u: NormalizedUsage, response: ProviderResponse, bounded = boundedNumbers(response)): void {
  for (const field of COUNT_FIELDS) {
    const n = u[field];
    expect(Number.isInteger(n) && n >= 0, `${field} = ${n}`).toBe(true);
    if (bounded) expect(Number.isSafeInteger(n), `${field} = ${n}`).toBe(true);
  }
  expect(u.cachedInputTokens + u.cacheWriteTokens).toBeLessThanOrEqual(u.inputTokens);
  expect(u.reasoningTokens).toBeLessThanOrEqual(u.outputTokens);
  expect(u.requests).toBe(u.billable ? 1 : 0);
  if (u.incomplete) expect(u.billable).toBe(false);
  if (u.streamedText !== null) expect(u.incomplete).toBe(true);
  if (u.audioSeconds !== null) expect(u.audioSeconds, 'audioSeconds').toMatch(DECIMAL);
  if (u.providerReportedCostUsd !== null) expect(u.providerReportedCostUsd, 'providerReportedCostUsd').toMatch(DECIMAL);
  for (const [key, value] of Object.entries(u.details)) {
    if (typeof value === 'number') expect(Number.isInteger(value) && value >= 0, `details.${key} = ${value}`).toBe(true);
    else if (DECIMAL_DETAIL.test(key)) expect(value, `details.${key}`).toMatch(DECIMAL);
    else expect(typeof value, `details.${key}`).toBe('string');
  }
  if (response.status < 200 || response.status >= 300) expect(u.billable, 'a non-2xx answer is billed').toBe(false);
}

/** Normalizes, failing on any throw: the gateway meters nothing for a response whose normalization throws. */
function normalizeSane(response: ProviderResponse, bounded?: boolean): NormalizedUsage {
  let u: NormalizedUsage;
  try {
    u = normalizeResponse(response);
  } catch (error) {
    throw new Error(`normalizeResponse threw for ${response.url}: ${String(error)}`, { cause: error });
  }
  expectSane(u, response, bounded);
  return u;
}

const counts = (u: NormalizedUsage) => ({
  inputTokens: u.inputTokens, cachedInputTokens: u.cachedInputTokens, cacheWriteTokens: u.cacheWriteTokens,
  outputTokens: u.outputTokens, reasoningTokens: u.reasoningTokens, audioSeconds: u.audioSeconds, characters: u.characters, images: u.images,
});

// ---------------------------------------------------------------------------------------------
// Generators of awkward text.

/** Characters that trip scanners: JSON syntax, escapes, SSE syntax, control bytes, surrogates. */
const trickyChar = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('{', '}', '[', ']', '"', '\\', ':', ',', ' ', '\n', '\r', 'a', '0', 'é', '\u2014', '😀', '\ud800', '\udc00', '\u0000', '\u0007', '\ufeff', '\u2028') },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
);
const trickyText = fc.string({ unit: trickyChar, maxLength: 12 });

/** Keys the scanners look for, the same keys with escaped quotes around them, and any text. */
const SCANNED_KEYS = ['usage', 'model', 'size', 'url'] as const;
const scanKey = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...SCANNED_KEYS, 'b64_json', 'quality', 'data', 'a') },
  { weight: 2, arbitrary: fc.tuple(trickyText, fc.constantFrom(...SCANNED_KEYS), fc.constantFrom('', '"', '\\', '"x')).map(([pre, key, post]) => `${pre}"${key}${post}`) },
  { weight: 1, arbitrary: trickyText },
);
/** String values, including ones that spell a key and its value inside them. */
const scanString = fc.oneof(
  trickyText,
  fc.constantFrom('"usage": {"prompt_tokens": 9}', '\\"model\\": \\"x\\"', 'model', '"url":', '{"usage":{}}', '}', '{'),
);

const jsonDoc: fc.Arbitrary<Record<string, unknown>> = fc.letrec<{ value: unknown; object: Record<string, unknown> }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    scanString,
    fc.integer(),
    // JSON has no -0: it would come back as 0.
    fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => (Object.is(d, -0) ? 0 : d)),
    fc.constantFrom(null, true, false),
    fc.array(tie('value'), { maxLength: 3 }),
    tie('object'),
  ),
  object: fc.array(fc.tuple(scanKey, tie('value')), { maxLength: 5 }).map((pairs) => {
    const out: Record<string, unknown> = {};
    // Own data properties only ("__proto__" included), as JSON.parse builds them.
    for (const [key, value] of pairs) Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
    return out;
  }),
})).object;

/**
 * A document as JSON text, with whitespace between tokens. Around a colon it stays within the
 * 8 characters the scanners look past a key for its value (json-scan.ts): printers write ":" or
 * ": ", nobody writes a line break there.
 */
function render(value: unknown, gaps: readonly string[]): string {
  let k = 0;
  const gap = () => (gaps.length === 0 ? '' : gaps[k++ % gaps.length]!);
  const colonGap = () => (gaps.length === 0 ? '' : ['', ' ', '  ', '\t'][k++ % 4]!);
  const write = (v: unknown): string => {
    if (Array.isArray(v)) return `[${gap()}${v.map((item) => write(item)).join(`${gap()},${gap()}`)}${gap()}]`;
    if (v !== null && typeof v === 'object') {
      const entries = Object.entries(v).map(([key, item]) => `${JSON.stringify(key)}${colonGap()}:${colonGap()}${write(item)}`);
      return `{${gap()}${entries.join(`${gap()},${gap()}`)}${gap()}}`;
    }
    return JSON.stringify(v);
  };
  return write(value);
}
const gaps = fc.array(fc.constantFrom('', '', ' ', '\n', '  ', '\t', '\r\n', '\n    '), { maxLength: 6 });

/** Every (key, value) pair of a parsed document, in the order their keys appear in its text. */
function pairsOf(value: unknown, out: [string, unknown][] = []): [string, unknown][] {
  if (Array.isArray(value)) for (const item of value) pairsOf(item, out);
  else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      out.push([key, item]);
      pairsOf(item, out);
    }
  }
  return out;
}
const isPlainObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Bytes around payloads in AWS event-stream framing (lengths, CRCs), biased to JSON's syntax bytes. */
const byte = fc.oneof(fc.nat({ max: 255 }), fc.constantFrom(0x7b, 0x7d, 0x22, 0x5c, 0x00));
/** Four bytes can spell `{}` themselves: an object in the noise that no scanner could tell from a payload. */
const spellsObject = (bytes: readonly number[]) => /\{\s*\}/.test(String.fromCharCode(...bytes));
const crcBytes = fc.array(byte, { minLength: 8, maxLength: 8 }).filter((crc) => !spellsObject(crc.slice(0, 4)) && !spellsObject(crc.slice(4)));

function eventStreamHeader(name: string, value: string): Buffer {
  const n = Buffer.from(name);
  const v = Buffer.from(value);
  const out = Buffer.alloc(1 + n.length + 3 + v.length);
  out.writeUInt8(n.length, 0);
  n.copy(out, 1);
  out.writeUInt8(7, 1 + n.length); // string value type
  out.writeUInt16BE(v.length, 2 + n.length);
  v.copy(out, 4 + n.length);
  return out;
}

/** One AWS event-stream frame: prelude, headers, JSON payload, CRC (its bytes arbitrary: nobody checks them). */
function eventStreamFrame(eventType: string, payload: string, crc: readonly number[]): { bytes: Buffer; payloadEnd: number } {
  const headers = Buffer.concat([eventStreamHeader(':event-type', eventType), eventStreamHeader(':content-type', 'application/json'), eventStreamHeader(':message-type', 'event')]);
  const body = Buffer.from(payload);
  const prelude = Buffer.alloc(8);
  prelude.writeUInt32BE(12 + headers.length + body.length + 4, 0);
  prelude.writeUInt32BE(headers.length, 4);
  const bytes = Buffer.concat([prelude, Buffer.from(crc.slice(0, 4)), headers, body, Buffer.from(crc.slice(4, 8))]);
  return { bytes, payloadEnd: 12 + headers.length + body.length };
}

/** Frames read as text, as the gateway captures a body (UTF-8, binary bytes and all). */
const asText = (bytes: Buffer) => bytes.toString('utf8');

// ---------------------------------------------------------------------------------------------

describe('json-scan agrees with JSON.parse', () => {
  it('objectEnd finds the closing brace of any object, whatever surrounds it, and none in a cut one', () => {
    check(
      fc.property(jsonDoc, gaps, trickyText, trickyText, fc.nat(), (doc, ws, before, after, cutAt) => {
        const text = render(doc, ws);
        expect(JSON.parse(text)).toEqual(doc);
        expect(objectEnd(before + text + after, before.length)).toBe(before.length + text.length - 1);
        const cut = text.slice(0, 1 + (cutAt % (text.length - 1)));
        expect(objectEnd(cut, 0)).toBe(-1);
      }),
      400,
    );
  });

  it('lastObjectValue, lastStringValue and countKeys read a document as JSON.parse does', () => {
    check(
      fc.property(jsonDoc, gaps, fc.constantFrom(...SCANNED_KEYS), (doc, ws, key) => {
        const text = render(doc, ws);
        const pairs = pairsOf(JSON.parse(text)).filter(([k]) => k === key);
        const objects = pairs.map(([, v]) => v).filter(isPlainObject);
        expect(lastObjectValue(text, key)).toEqual(objects.at(-1));
        // The last string value; null when reading it would need unescaping.
        const strings = pairs.map(([, v]) => v).filter((v): v is string => typeof v === 'string');
        const last = strings.at(-1);
        expect(lastStringValue(text, key)).toBe(last !== undefined && JSON.stringify(last) === `"${last}"` ? last : null);
        expect(countKeys(text, key)).toBe(pairs.length);
      }),
      500,
    );
  });

  it('scanJsonObjects finds exactly the whole documents in NDJSON, arrays and event-stream frames, never parts of a cut one', () => {
    const framing = fc.constantFrom('ndjson', 'array', 'frames');
    check(
      fc.property(fc.array(fc.tuple(jsonDoc, gaps, crcBytes), { maxLength: 5 }), framing, fc.option(fc.tuple(jsonDoc, gaps, fc.nat())), (docs, how, tail) => {
        const texts = docs.map(([doc, ws]) => render(doc, ws));
        let body: string;
        if (how === 'ndjson') body = texts.map((t) => `${t}\n`).join('');
        else if (how === 'array') body = `[${texts.join(',\r\n')}${texts.length > 0 && tail ? ',' : ''}`;
        else body = asText(Buffer.concat(docs.map(([, , crc], i) => eventStreamFrame('chunk', texts[i]!, crc).bytes)));
        if (tail) {
          // A last document cut off anywhere inside: the scanner must not report it, or any object within it.
          const text = render(tail[0], tail[1]);
          body += text.slice(0, 1 + (tail[2] % (text.length - 1)));
        }
        expect(scanJsonObjects(body, how === 'array' ? 1 : 0)).toEqual(texts.map((text) => JSON.parse(text)));
      }),
      400,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Mutations of real bodies.

/** Values a count (or any number) may be replaced with: out of range, fractional, quoted, another type. */
const ODD_NUMBERS = [
  '-1', '-2471', '-0', '0', '2147483648', '9007199254740993', '1e21', '1e400', '-1e400', '1.5', '0.1', '1e-20', '1.0000000000000000001', '4.2E+1',
  '"12"', '"12.5"', '"-3"', '"abc"', '""', 'null', 'true', '{}', '[]', '[7]',
];
const INSERTS = ['\u0000', '\ufeff', '"', '\\', '{', '}', '}}', 'é', '\ud800', '😀', '\r', '\n', '\n\n', 'data: ', 'event: error\n', ': ping\n\n', 'data: [DONE]\n\n'];

type Mutation =
  | { kind: 'truncate'; at: number }
  | { kind: 'deleteLine' | 'duplicateLine'; at: number }
  | { kind: 'swapLines'; at: number; other: number }
  | { kind: 'flipDigit'; at: number; digit: number }
  | { kind: 'replaceNumber'; at: number; by: string }
  | { kind: 'insert'; at: number; text: string }
  | { kind: 'crlf' };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constantFrom('deleteLine' as const, 'duplicateLine' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('swapLines' as const), at: fc.nat(), other: fc.nat() }),
  fc.record({ kind: fc.constant('flipDigit' as const), at: fc.nat(), digit: fc.nat({ max: 9 }) }),
  fc.record({ kind: fc.constant('replaceNumber' as const), at: fc.nat(), by: fc.constantFrom(...ODD_NUMBERS) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: fc.oneof(fc.constantFrom(...INSERTS), trickyText) }),
  fc.constant({ kind: 'crlf' as const }),
);

/** Start and end of every number written as a JSON value (after a colon, bracket or comma). */
function numberValues(body: string): [number, number][] {
  const out: [number, number][] = [];
  for (const match of body.matchAll(/([:[,]\s*)(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g)) {
    const start = match.index + match[1]!.length;
    out.push([start, start + match[2]!.length]);
  }
  return out;
}

/** The values of keys that name a quantity (most numbers in a body, in vectors, timestamps or segments, are none), with the key. */
function quantityValues(body: string): [number, number, string][] {
  const out: [number, number, string][] = [];
  for (const [start, end] of numberValues(body)) {
    const key = /"([^"]*)"\s*:\s*$/.exec(body.slice(Math.max(0, start - 60), start))?.[1];
    if (key !== undefined && /token|count|seconds|duration|units|images|cost/i.test(key)) out.push([start, end, key]);
  }
  return out;
}

function mutate(body: string, m: Mutation): string {
  const lines = body.split('\n');
  switch (m.kind) {
    case 'truncate':
      return body.slice(0, m.at % (body.length + 1));
    case 'deleteLine':
      return lines.filter((_, i) => i !== m.at % lines.length).join('\n');
    case 'duplicateLine':
      return lines.flatMap((line, i) => (i === m.at % lines.length ? [line, line] : [line])).join('\n');
    case 'swapLines': {
      const a = m.at % lines.length;
      const b = m.other % lines.length;
      [lines[a], lines[b]] = [lines[b]!, lines[a]!];
      return lines.join('\n');
    }
    case 'flipDigit': {
      const digits = [...body.matchAll(/\d/g)].map((match) => match.index);
      if (digits.length === 0) return body;
      const at = digits[m.at % digits.length]!;
      return body.slice(0, at) + String(m.digit) + body.slice(at + 1);
    }
    case 'replaceNumber': {
      const numbers = numberValues(body);
      if (numbers.length === 0) return body;
      const [start, end] = numbers[m.at % numbers.length]!;
      return body.slice(0, start) + m.by + body.slice(end);
    }
    case 'insert': {
      const at = m.at % (body.length + 1);
      return body.slice(0, at) + m.text + body.slice(at);
    }
    case 'crlf':
      return body.replace(/\r?\n/g, '\r\n');
  }
}

describe('normalizeResponse on mutated fixtures', () => {
  it('never throws and always returns a sane record, sent to its own API or any other', () => {
    check(
      fc.property(
        fc.constantFrom(...FIXTURE_NAMES),
        fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
        fc.option(providerUrl, { freq: 4 }),
        fc.constantFrom(200, 200, 200, 201, 204, 302, 400, 429, 500, 529),
        (name, mutations, elsewhere, status) => {
          const base = FIXTURE_RESPONSES.get(name)!;
          const body = mutations.reduce(mutate, base.body);
          normalizeSane({ ...base, ...(elsewhere ?? {}), status, body });
        },
      ),
      1500,
    );
  });

  it('a quantity replaced by a malformed value is reported as malformed, or changes nothing billed', () => {
    // int() counts what is not a whole non-negative number, so that metering refuses the response
    // rather than reading it as 0 (see util.ts); metering refuses audio outside RESPONSE_AUDIO (usage.service).
    const malformed = fc.constantFrom('-1', '-2471', '1.5', '"abc"', '"-3"', 'true', '{}', '[7]', '1e400');
    const readsAsRefused = (u: NormalizedUsage) => !u.billable || (u.audioSeconds !== null && !/^\d{1,15}(\.\d{1,18})?$/.test(u.audioSeconds));
    check(
      fc.property(fc.constantFrom(...BILLABLE_FIXTURES), fc.nat(), malformed, (name, at, by) => {
        const base = FIXTURE_RESPONSES.get(name)!;
        const whole = normalizeResponse(base);
        const quantities = quantityValues(base.body);
        if (quantities.length === 0) return;
        const [start, end, key] = quantities[at % quantities.length]!;
        // A fraction is a valid number of seconds or dollars.
        if (by === '1.5' && /seconds|duration|cost/.test(key)) return;
        const body = base.body.slice(0, start) + by + base.body.slice(end);
        takeMalformedCounts();
        const u = normalizeSane({ ...base, body });
        const flagged = takeMalformedCounts() > 0;
        if (!flagged && !readsAsRefused(u)) expect(counts(u)).toEqual(counts(whole));
      }),
      600,
    );
  });
});

describe('count headers', () => {
  const bedrock = 'https://bedrock-runtime.us-east-1.amazonaws.com/model/meta.llama3-70b-instruct-v1%3A0/invoke';
  const withHeaders: ProviderResponse[] = [
    FIXTURE_RESPONSES.get('elevenlabs_tts_response_head.txt')!,
    { url: 'https://api.deepgram.com/v1/speak?model=aura-2', status: 200, headers: { 'dg-char-count': '42' }, body: '', requestBody: { text: 'Hello' } },
    {
      url: bedrock, status: 200, body: '{"generation":"Hi","prompt_token_count":null}',
      headers: { 'x-amzn-bedrock-input-token-count': '120', 'x-amzn-bedrock-output-token-count': '30', 'x-amzn-bedrock-cache-read-input-token-count': '64' },
    },
  ];

  it('one sent malformed is reported as malformed, or changes nothing billed', () => {
    // usage.service refuses a response whose counts, "in its body or headers", are malformed.
    check(
      fc.property(fc.constantFrom(...withHeaders), fc.nat(), fc.constantFrom('-5', '1.5', 'abc', '1e400', 'Infinity', '12 tokens', '-0.4', '1e21'), (base, at, by) => {
        const names = Object.keys(base.headers).filter((name) => /count|cost/.test(name));
        const whole = normalizeResponse(base);
        takeMalformedCounts();
        const u = normalizeSane({ ...base, headers: { ...base.headers, [names[at % names.length]!]: by } });
        if (takeMalformedCounts() === 0 && u.billable) expect(counts(u), `${names[at % names.length]}: ${by}`).toEqual(counts(whole));
      }),
      150,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Provider-shaped bodies with arbitrary values in every field.

/** A number spelled exactly as given in the JSON text (JSON.stringify cannot write 1e400 or -0). */
const RAW = '\u0000raw';
const raw = (literal: string) => ({ [RAW]: literal });
const stringify = (value: unknown) => JSON.stringify(value).replace(/\{"\\u0000raw":"((?:[^"\\]|\\.)*)"\}/g, (_, literal: string) => JSON.parse(`"${literal}"`) as string);

const hole: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 8, arbitrary: fc.nat({ max: 5000 }) },
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.constantFrom(...ODD_NUMBERS).map(raw) },
  { weight: 1, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
  { weight: 1, arbitrary: fc.constantFrom(2_147_483_647, Number.MAX_SAFE_INTEGER, 25.933313, 42.52000045776367, 0.000015, -0.5) },
  // Decimals as a provider may spell them: many digits, far from the point either way.
  { weight: 2, arbitrary: fc.tuple(fc.bigInt({ min: 0n, max: 10n ** 25n }), fc.integer({ min: -30, max: 30 })).map(([digits, exponent]) => raw(`${digits}e${exponent}`)) },
  { weight: 1, arbitrary: trickyText },
);

/** Bodies in each API's shape, their fields filled from `v` (values in order, reused cyclically). */
type Shape = (v: () => unknown) => string;
const sse = (events: unknown[], named = false) =>
  events.map((e) => `${named && isPlainObject(e) && typeof e.type === 'string' ? `event: ${e.type}\n` : ''}data: ${stringify(e)}\n\n`).join('');

const chatUsage = (v: () => unknown) => ({
  prompt_tokens: v(), completion_tokens: v(), total_tokens: v(), prompt_cache_hit_tokens: v(), prompt_cache_miss_tokens: v(), cost: v(), reasoning_tokens: v(),
  prompt_tokens_details: { cached_tokens: v(), audio_tokens: v(), cache_write_tokens: v(), cache_creation_input_tokens: v() },
  completion_tokens_details: { reasoning_tokens: v(), audio_tokens: v(), image_tokens: v() }, prompt_audio_seconds: v(), is_byok: v(),
  cost_details: { upstream_inference_cost: v() }, estimated_cost: v(),
});
const anthropicUsage = (v: () => unknown) => ({
  input_tokens: v(), cache_creation_input_tokens: v(), cache_read_input_tokens: v(), output_tokens: v(),
  cache_creation: { ephemeral_5m_input_tokens: v(), ephemeral_1h_input_tokens: v() }, output_tokens_details: { thinking_tokens: v() },
  server_tool_use: { web_search_requests: v() }, iterations: [{ input_tokens: v(), output_tokens: v(), model: v() }, { input_tokens: v(), cache_creation_input_tokens: v() }],
});
const geminiChunk = (v: () => unknown, finish: boolean) => ({
  candidates: [{ content: { parts: [{ text: v() }, { functionCall: { name: 'f', args: { a: v() } } }] }, ...(finish ? { finishReason: 'STOP' } : {}) }],
  usageMetadata: {
    promptTokenCount: v(), cachedContentTokenCount: v(), candidatesTokenCount: v(), thoughtsTokenCount: v(), toolUsePromptTokenCount: v(), totalTokenCount: v(),
    promptTokensDetails: [{ modality: 'AUDIO', tokenCount: v() }],
  },
  modelVersion: v(),
});

const SHAPES: Record<string, Shape[]> = {
  chat: [
    (v) => stringify({ model: v(), choices: [{ message: { content: v() }, finish_reason: 'stop' }], usage: chatUsage(v), x_groq: { usage: chatUsage(v) } }),
    (v) => sse([{ model: v(), choices: [{ delta: { content: v() }, finish_reason: null }], usage: null }, { choices: [], usage: chatUsage(v) }]) + 'data: [DONE]\n\n',
  ],
  responses: [
    (v) => stringify({ status: v(), model: v(), output: [{ type: 'web_search_call' }], usage: { input_tokens: v(), input_tokens_details: { cached_tokens: v(), cache_write_tokens: v() }, output_tokens: v(), output_tokens_details: { reasoning_tokens: v() }, cost: v() } }),
    (v) => sse([{ type: 'response.created', response: { model: v() } }, { type: 'response.completed', response: { status: 'completed', usage: { input_tokens: v(), output_tokens: v(), output_tokens_details: { reasoning_tokens: v() } } } }], true),
  ],
  embeddings: [(v) => stringify({ data: [{ embedding: [v(), v()] }], model: v(), usage: { prompt_tokens: v(), total_tokens: v(), input_tokens: v(), cost: v() } })],
  images: [
    (v) => stringify({ data: [{ b64_json: 'AAAA' }, { url: v() }], size: v(), quality: v(), usage: { input_tokens: v(), output_tokens: v(), input_tokens_details: { text_tokens: v(), image_tokens: v(), cached_tokens: v() }, output_tokens_details: { image_tokens: v(), text_tokens: v() } } }),
    (v) => sse([{ type: 'image_generation.completed', b64_json: 'AAAA', size: v(), usage: { input_tokens: v(), output_tokens: v(), output_tokens_details: { text_tokens: v() } } }], true),
  ],
  transcription: [
    (v) => stringify({ text: v(), duration: v(), usage: { type: 'duration', seconds: v() } }),
    (v) => stringify({ text: v(), duration: v() }),
    (v) => stringify({ text: v(), usage: { type: 'tokens', input_tokens: v(), output_tokens: v(), prompt_audio_seconds: v(), input_token_details: { audio_tokens: v(), text_tokens: v() } } }),
    (v) => sse([{ type: 'transcript.text.done', text: v(), usage: { type: 'tokens', input_tokens: v(), output_tokens: v() } }], true),
  ],
  speech: [() => '', (v) => sse([{ type: 'speech.audio.done', usage: { input_tokens: v(), output_tokens: v() } }], true)],
  messages: [
    (v) => stringify({ type: 'message', model: v(), content: [{ type: 'text', text: v() }], usage: anthropicUsage(v) }),
    (v) => sse([{ type: 'message_start', message: { model: v(), usage: anthropicUsage(v) } }, { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: anthropicUsage(v) }, { type: 'message_stop' }], true),
  ],
  gemini: [
    (v) => stringify(geminiChunk(v, true)),
    (v) => sse([geminiChunk(v, false), geminiChunk(v, true)]),
    (v) => stringify([geminiChunk(v, false), geminiChunk(v, true)]),
  ],
  imagen: [(v) => stringify({ predictions: [{ bytesBase64Encoded: v() }, { gcsUri: v() }] })],
  converse: [(v) => stringify({ usage: { inputTokens: v(), outputTokens: v(), cacheReadInputTokens: v(), cacheWriteInputTokens: v(), cacheDetails: [{ ttl: '1h', inputTokens: v() }, { ttl: '5m', inputTokens: v() }] } })],
  'converse-stream': [(v) => [{ contentBlockDelta: { delta: { text: v() } } }, { metadata: { usage: { inputTokens: v(), outputTokens: v(), cacheReadInputTokens: v() } } }].map(stringify).join('\n')],
  invoke: [
    (v) => stringify({ model: v(), usage: anthropicUsage(v) }),
    (v) => stringify({ prompt_token_count: v(), generation_token_count: v(), results: [{ tokenCount: v() }] }),
    (v) => stringify({ usage: { inputTokens: v(), outputTokens: v() } }),
  ],
  'invoke-with-response-stream': [
    (v) => [{ type: 'message_start', message: { usage: anthropicUsage(v) } }, { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: v() } }]
      .map((e) => stringify({ chunk: { bytes: Buffer.from(stringify(e)).toString('base64') } })).join('\n'),
    (v) => stringify({ bytes: Buffer.from(stringify({ generation: v(), 'amazon-bedrock-invocationMetrics': { inputTokenCount: v(), outputTokenCount: v(), cacheReadInputTokenCount: v() } })).toString('base64') }),
  ],
  cohere: [
    (v) => stringify({ usage: { billed_units: { input_tokens: v(), output_tokens: v(), search_units: v(), images: v() }, tokens: { input_tokens: v() }, cached_tokens: v() } }),
    (v) => [{ event_type: 'text-generation', text: v() }, { event_type: 'stream-end', response: { meta: { billed_units: { input_tokens: v(), output_tokens: v() } } } }].map(stringify).join('\n'),
  ],
  audio: [() => ''],
  listen: [(v) => stringify({ metadata: { duration: v(), channels: v(), model_info: { k: { name: v() } }, summary_info: { input_tokens: v(), output_tokens: v() } }, results: { channels: [{}, {}] } })],
  images_other: [
    (v) => stringify({ images: [{}, {}], status: v(), timings: { inference: v() }, request_id: v() }),
    (v) => stringify({ status: 'succeeded', id: v(), output: [v(), 'https://x/a.mp4'], metrics: { predict_time: v(), input_token_count: v(), image_count: v() } }),
    (v) => stringify({ id: v(), cost: v(), output_mp: v() }),
    (v) => stringify({ data: [{}, {}], artifacts: [v()], image: v() }),
  ],
};

function familyOf(api: string): string {
  if (api === 'chat.completions' || api === 'completions' || api === 'fim.completions') return 'chat';
  if (api === 'audio.transcriptions' || api === 'audio.translations') return 'transcription';
  if (api === 'audio.speech') return 'speech';
  if (api.startsWith('images.')) return 'images';
  if (api === 'generateContent' || api === 'streamGenerateContent') return 'gemini';
  if (api === 'predict') return 'imagen';
  if (api === 'chat' || api === 'embed' || api === 'rerank') return 'cohere';
  if (api === 'text-to-speech' || api === 'text-to-dialogue' || api === 'speak') return 'audio';
  if (api in SHAPES) return api;
  return 'images_other';
}

const COUNT_HEADERS = ['character-cost', 'x-character-count', 'dg-char-count', 'x-amzn-bedrock-input-token-count', 'x-amzn-bedrock-output-token-count', 'x-amzn-bedrock-cache-read-input-token-count'];
const headerValue = fc.oneof(fc.nat({ max: 5000 }).map(String), fc.constantFrom('-5', '1.5', '1e400', ' 7 ', '', 'abc', '0x10', 'Infinity', '1e21'));
const headersArb = fc.dictionary(fc.constantFrom(...COUNT_HEADERS, 'finish-reason', 'dg-model-name'), headerValue, { maxKeys: 4 });
const requestArb = fc.option(
  fc.record({ model: fc.oneof(fc.constant('gpt-5.4-mini'), trickyText), input: trickyText, text: trickyText, size: fc.constantFrom('1024x1024', ''), quality: fc.constantFrom('high', '') }, { requiredKeys: [] }),
  { nil: undefined },
);

describe('normalizeResponse on provider-shaped bodies for every supported provider', () => {
  it('covers every supported provider', () => {
    const covered = new Set(PROVIDER_URLS.map(({ url, provider }) => (provider ? 'openai-compatible' : detectProvider(url)!.provider)));
    expect([...covered].sort()).toEqual(SUPPORTED_PROVIDERS.map((p) => p.id).sort());
  });

  it('never throws and always returns a sane record', () => {
    check(
      fc.property(
        providerUrl,
        fc.nat(),
        fc.array(hole, { minLength: 1, maxLength: 40 }),
        fc.constantFrom(200, 200, 200, 201, 400, 404, 429, 500, 503),
        headersArb,
        requestArb,
        (target, shapeAt, values, status, headers, requestBody) => {
          const family = familyOf(apiOf(target));
          const shapes = SHAPES[family]!;
          let k = 0;
          const body = shapes[shapeAt % shapes.length]!(() => values[k++ % values.length]);
          // Bodies may hide their numbers from boundedNumbers (base64 in Bedrock's frames): judge by the values.
          const bounded = [...values, ...Object.values(headers)].every((v) => {
            const n = isPlainObject(v) ? Number(v[RAW]) : typeof v === 'string' ? Number(v) : v;
            return typeof n !== 'number' || Number.isNaN(n) || Math.abs(n) < 2 ** 40;
          });
          normalizeSane({ ...target, status, headers, body, requestBody }, bounded);
        },
      ),
      1500,
    );
  });
});

// ---------------------------------------------------------------------------------------------

/** Provider errors as their APIs send them in a 2xx body, and as the last event of a stream. */
const ERROR_BODIES = [
  '{"error":{"message":"Rate limit reached","type":"tokens","param":null,"code":"rate_limit_exceeded"}}',
  '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}',
  '{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}',
  '{"error":"upstream failed"}',
  '{"type":"error","code":"server_error","message":"The server had an error processing your request"}',
  '[{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}]',
];
const STREAM_ERRORS: Record<string, string[]> = {
  'openai_chat_completion_stream_include_usage.sse': ['data: {"error":{"message":"Upstream error","code":"server_error"}}\n\n'],
  'openai_chat_completion_stream_truncated.sse': ['\n\ndata: {"error":{"message":"Upstream error","code":502}}\n\n'],
  'openai_responses_stream.sse': ['event: error\ndata: {"type":"error","code":"server_error","message":"The server had an error"}\n\n'],
  'anthropic_messages_stream.sse': ['event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'],
};
/** APIs whose body is audio (or an image): only their HTTP status can say they failed. */
const BODY_IS_MEDIA = new Set(['audio.speech', 'text-to-speech', 'text-to-dialogue', 'speak']);

describe('error responses are never billable', () => {
  it('a non-2xx status with any body, even a billable one', () => {
    check(
      fc.property(fc.constantFrom(...FIXTURE_NAMES), fc.oneof(fc.integer({ min: 400, max: 599 }), fc.integer({ min: 100, max: 199 }), fc.integer({ min: 300, max: 399 })), (name, status) => {
        const u = normalizeSane({ ...FIXTURE_RESPONSES.get(name)!, status });
        expect(u).toMatchObject({ billable: false, incomplete: false, requests: 0 });
      }),
      200,
    );
  });

  it('a 2xx error body, for every API that has a body to read', () => {
    check(
      fc.property(fc.constantFrom(...PROVIDER_URLS.filter((target) => !BODY_IS_MEDIA.has(apiOf(target)))), fc.constantFrom(...ERROR_BODIES), requestArb, (target, body, requestBody) => {
        const u = normalizeSane({ ...target, status: 200, headers: {}, body, requestBody });
        expect(u.billable, `${u.provider} ${u.api}`).toBe(false);
        expect(u.inputTokens + u.outputTokens + u.characters + u.images).toBe(0);
      }),
      400,
    );
  });

  it('an error event ends a stream: nothing billed, however much usage came before it', () => {
    check(
      fc.property(fc.constantFrom(...SSE_FIXTURES), fc.boolean(), (name, beforeDone) => {
        const base = FIXTURE_RESPONSES.get(name)!;
        const error = STREAM_ERRORS[name]![0]!;
        const done = base.body.lastIndexOf('data: [DONE]');
        const body = beforeDone && done !== -1 ? base.body.slice(0, done) + error + base.body.slice(done) : base.body + error;
        const u = normalizeSane({ ...base, body });
        expect(u).toMatchObject({ billable: false, incomplete: false, requests: 0 });
        expect(typeof u.details.error).toBe('string');
      }),
      40,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Streams: where their usage ends, so that a cut before it can be told from one after it.

interface Stream {
  response: ProviderResponse;
  /** Index just past the last character of the record that carries the final usage. */
  usageEnd: number;
}

/** A fixture stream; `marker` is found in the data line that carries its usage. */
function fixtureStream(name: string, marker: string): Stream {
  const response = FIXTURE_RESPONSES.get(name)!;
  const line = response.body.lastIndexOf(marker);
  return { response, usageEnd: response.body.lastIndexOf('}', response.body.indexOf('\n', line)) + 1 };
}
const FIXTURE_STREAMS: Stream[] = [
  fixtureStream('openai_chat_completion_stream_include_usage.sse', '"choices":[]'),
  fixtureStream('openai_responses_stream.sse', 'data: {"type":"response.completed"'),
  fixtureStream('anthropic_messages_stream.sse', 'data: {"type":"message_delta"'),
];

/**
 * Model output inside stream records: text, and tool arguments, which are arbitrary JSON objects
 * the model wrote, so they may well hold keys that mean something to a normalizer at top level.
 */
const MEANINGFUL_KEYS = ['error', 'type', 'usage', 'usageMetadata', 'promptTokenCount', 'candidates', 'finishReason', 'event_type', 'response', 'meta', 'billed_units', 'input_tokens', 'ValidationException', 'text'];
const toolArgs: fc.Arbitrary<Record<string, unknown>> = fc.letrec<{ value: unknown; object: Record<string, unknown> }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom('error', 'STOP', 'stream-end', 'message-end', 'x'),
    fc.nat({ max: 10 ** 6 }),
    trickyText,
    fc.array(tie('value'), { maxLength: 2 }),
    tie('object'),
  ),
  object: fc.dictionary(fc.oneof(fc.constantFrom(...MEANINGFUL_KEYS), trickyText), tie('value'), { maxKeys: 4 }),
})).object;

/** Cumulative counts, one set per chunk, never decreasing (as Gemini reports them). */
const cumulative = (steps: number[]) => steps.reduce<number[]>((out, step) => [...out, (out.at(-1) ?? 0) + step], []);

const streamPieces = fc.record({
  text: fc.array(trickyText, { minLength: 1, maxLength: 4 }),
  args: fc.array(toolArgs, { maxLength: 2 }),
  steps: fc.array(fc.nat({ max: 500 }), { minLength: 3, maxLength: 3 }),
  crc: fc.array(crcBytes, { minLength: 8, maxLength: 8 }),
});
type Pieces = typeof streamPieces extends fc.Arbitrary<infer P> ? P : never;

/** Generated streams of the APIs whose records are JSON found by scanning or by SSE. */
function generatedStream(kind: string, p: Pieces): Stream {
  const [prompt, cached, output] = [1000 + p.steps[0]!, p.steps[0]!, p.steps[2]!];
  const outs = cumulative(p.text.map((_, i) => (i === 0 ? 0 : Math.round(output / p.text.length))));
  switch (kind) {
    case 'gemini-sse':
    case 'gemini-array': {
      const chunks = p.text.map((text, i) => ({
        candidates: [{ content: { parts: [{ text }, ...p.args.map((args) => ({ functionCall: { name: 'report', args } }))], role: 'model' }, index: 0 }],
        usageMetadata: { promptTokenCount: prompt, cachedContentTokenCount: cached, candidatesTokenCount: outs[i] },
        modelVersion: 'gemini-3.8-flash',
      }));
      const last = { candidates: [{ content: { parts: [{ text: '' }], role: 'model' }, finishReason: 'STOP', index: 0 }], usageMetadata: { promptTokenCount: prompt, cachedContentTokenCount: cached, candidatesTokenCount: output + outs.at(-1)!, thoughtsTokenCount: p.steps[1] }, modelVersion: 'gemini-3.8-flash' };
      const url = `https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash:streamGenerateContent${kind === 'gemini-sse' ? '?alt=sse' : ''}`;
      if (kind === 'gemini-sse') {
        const head = chunks.map((c) => `data: ${JSON.stringify(c)}\r\n\r\n`).join('') + `data: ${JSON.stringify(last)}`;
        return { response: { url, status: 200, headers: {}, body: `${head}\r\n\r\n` }, usageEnd: head.length };
      }
      const head = `[${[...chunks, last].map((c) => JSON.stringify(c, null, 2)).join(',\r\n')}`;
      return { response: { url, status: 200, headers: {}, body: `${head}]` }, usageEnd: head.length };
    }
    case 'cohere-ndjson': {
      const lines = [
        ...p.text.map((text) => ({ is_finished: false, event_type: 'text-generation', text })),
        ...p.args.map((parameters) => ({ is_finished: false, event_type: 'tool-calls-generation', tool_calls: [{ name: 'report', parameters }] })),
      ].map((e) => JSON.stringify(e));
      const end = JSON.stringify({ is_finished: true, event_type: 'stream-end', finish_reason: 'COMPLETE', response: { meta: { billed_units: { input_tokens: prompt, output_tokens: output } } } });
      const head = `${lines.map((l) => `${l}\n`).join('')}${end}`;
      return { response: { url: 'https://api.cohere.com/v1/chat', status: 200, headers: {}, body: `${head}\n` }, usageEnd: head.length };
    }
    case 'bedrock-frames':
    case 'bedrock-sdk-json': {
      const events: [string, Record<string, unknown>][] = [
        ['messageStart', { role: 'assistant' }],
        ...p.text.map((text): [string, Record<string, unknown>] => ['contentBlockDelta', { contentBlockIndex: 0, delta: { text } }]),
        ...p.args.map((args): [string, Record<string, unknown>] => ['contentBlockDelta', { contentBlockIndex: 1, delta: { toolUse: { input: JSON.stringify(args) } } }]),
        ['messageStop', { stopReason: 'end_turn' }],
        // Converse's inputTokens leaves out cache reads.
        ['metadata', { usage: { inputTokens: prompt - cached, outputTokens: output, cacheReadInputTokens: cached }, metrics: { latencyMs: 300 } }],
      ];
      const url = 'https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-pro-v1%3A0/converse-stream';
      if (kind === 'bedrock-sdk-json') {
        const text = events.map(([type, payload]) => JSON.stringify({ [type]: payload })).join('\n');
        return { response: { url, status: 200, headers: {}, body: text }, usageEnd: text.length };
      }
      // Raw frames carry the payload's fields at top level, with a padding field `p`.
      const frames = events.map(([type, payload], i) => eventStreamFrame(type, JSON.stringify({ ...payload, p: 'abcdefgh'.slice(0, 1 + i) }), p.crc[i % p.crc.length]!));
      const before = Buffer.concat(frames.slice(0, -1).map((f) => f.bytes));
      const usageEnd = asText(Buffer.concat([before, frames.at(-1)!.bytes.subarray(0, frames.at(-1)!.payloadEnd)])).length;
      return { response: { url, status: 200, headers: {}, body: asText(Buffer.concat([before, frames.at(-1)!.bytes])) }, usageEnd };
    }
    default:
      throw new Error(`no stream of kind ${kind}`);
  }
}
const STREAM_KINDS = ['gemini-sse', 'gemini-array', 'cohere-ndjson', 'bedrock-frames', 'bedrock-sdk-json'] as const;

const streamArb: fc.Arbitrary<Stream> = fc.oneof(
  fc.constantFrom(...FIXTURE_STREAMS),
  fc.tuple(fc.constantFrom(...STREAM_KINDS), streamPieces).map(([kind, pieces]) => generatedStream(kind, pieces)),
);

describe('streams', () => {
  it('whole generated streams are billed as generated', () => {
    check(
      fc.property(fc.constantFrom(...STREAM_KINDS), streamPieces, (kind, pieces) => {
        const u = normalizeSane(generatedStream(kind, pieces).response);
        expect(u).toMatchObject({ billable: true, incomplete: false, inputTokens: 1000 + pieces.steps[0]! });
      }),
      150,
    );
  });

  it('cut anywhere: incomplete until the usage has arrived, whole after, never more than the whole stream', () => {
    check(
      fc.property(streamArb, fc.nat(), (stream, at) => {
        const { response, usageEnd } = stream;
        const whole = normalizeResponse(response);
        const cut = at % response.body.length;
        const u = normalizeSane({ ...response, body: response.body.slice(0, cut) });
        if (cut < usageEnd) expect(u, `cut at ${cut} of ${response.body.length}, usage ends at ${usageEnd}`).toMatchObject({ billable: false, incomplete: true });
        if (u.billable) expect(counts(u)).toEqual(counts(whole));
        else expect(u.incomplete, `cut at ${cut}: ${String(u.details.error ?? u.details.reason)}`).toBe(true);
        for (const field of ['inputTokens', 'cachedInputTokens', 'cacheWriteTokens', 'outputTokens', 'reasoningTokens'] as const) {
          expect(u[field], field).toBeLessThanOrEqual(whole[field]);
        }
      }),
      800,
    );
  });

  /** An SSE body written out again: other line ends, comments and ids between events, data split over lines. */
  function reframe(events: SseEvent[], eol: string, noise: readonly number[], dropEventLines: boolean): string {
    let k = 0;
    const next = () => noise[k++ % noise.length] ?? 0;
    let out = '';
    for (const event of events) {
      const n = next();
      if (n % 5 === 0) out += `: keep-alive${eol}`;
      if (n % 7 === 0) out += `id: ${n}${eol}retry: 1000${eol}`;
      // Without an event line, the type comes from the data's "type" (how the SDKs' mocks write streams).
      const typed = event.data.startsWith(`{"type":"${event.event}"`);
      if (event.event !== '' && !(dropEventLines && typed)) out += `event:${n % 2 === 0 ? ' ' : ''}${event.event}${eol}`;
      for (const line of splitData(event.data, next)) out += `data:${line.startsWith(' ') || n % 3 !== 0 ? ' ' : ''}${line}${eol}`;
      out += eol;
    }
    return out;
  }

  /** Data split into lines after structural characters outside strings, so it still parses as the same JSON. */
  function splitData(data: string, next: () => number): string[] {
    const lines: string[] = [];
    let start = 0;
    let inString = false;
    for (let i = 0; i < data.length; i++) {
      const c = data[i];
      if (inString) {
        if (c === '\\') i++;
        else if (c === '"') inString = false;
      } else if (c === '"') inString = true;
      else if ((c === ',' || c === ':' || c === '{' || c === '[') && next() % 4 === 0) {
        lines.push(data.slice(start, i + 1));
        start = i + 1;
      }
    }
    lines.push(data.slice(start));
    return lines;
  }

  it('a stream’s usage does not depend on its framing', () => {
    const streams = [...SSE_FIXTURES.map((name) => FIXTURE_RESPONSES.get(name)!)];
    check(
      fc.property(
        fc.oneof(fc.constantFrom(...streams), fc.tuple(fc.constantFrom('gemini-sse' as const), streamPieces).map(([kind, p]) => generatedStream(kind, p).response)),
        fc.constantFrom('\n', '\r\n', '\r'),
        fc.array(fc.nat({ max: 1000 }), { minLength: 1, maxLength: 20 }),
        fc.boolean(),
        (response, eol, noise, dropEventLines) => {
          const whole = normalizeResponse(response);
          const body = reframe(parseSse(response.body), eol, noise, dropEventLines);
          expect(normalizeSane({ ...response, body })).toEqual(whole);
        },
      ),
      300,
    );
  });

  it('dropping content events from the middle of a whole stream (a capture that kept head and tail) bills the same', () => {
    const whole = SSE_FIXTURES.map((name) => FIXTURE_RESPONSES.get(name)!).filter((r) => normalizeResponse(r).billable);
    check(
      fc.property(fc.constantFrom(...whole), fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }), (response, keep) => {
        const events = parseSse(response.body);
        // The first event names the model; the last three carry usage, finish and terminator.
        const kept = events.filter((_, i) => i === 0 || i >= events.length - 3 || keep[i % keep.length]);
        const body = reframe(kept, '\n', [1], false);
        expect(normalizeSane({ ...response, body })).toEqual(normalizeResponse(response));
      }),
      100,
    );
  });
});

describe('typed errors only', () => {
  it('headers in any shape: shaped, or refused with an AppError', () => {
    const anyHeaders = fc.oneof(
      fc.dictionary(fc.constantFrom('Character-Cost', 'character-cost', 'X-Character-Count', 'DG-Char-Count'), fc.oneof(fc.nat().map(String), fc.nat(), fc.array(fc.nat()), fc.constant(null), fc.constant({}))),
      fc.constantFrom(null, undefined, 'text', 5, [], ['a']),
    );
    check(
      fc.property(fc.constantFrom(...FIXTURE_NAMES), anyHeaders, (name, headers) => {
        const response = { ...FIXTURE_RESPONSES.get(name)!, headers: headers as Record<string, string> };
        let u: NormalizedUsage;
        try {
          u = normalizeResponse(response);
        } catch (error) {
          expect(error).toBeInstanceOf(AppError);
          return;
        }
        expectSane(u, { ...response, headers: {} });
      }),
      200,
    );
  });
});
