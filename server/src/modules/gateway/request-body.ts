/**
 * What the gateway reads from a caller's request body, and the changes it makes to it:
 *
 *   meteredRequestBody(contentType, body)   the request as the usage normalizer reads it (model,
 *                                           image size and quality, TTS text…), JSON or a form
 *   withoutJsonBom(body)                    a JSON body without the byte order mark lenient servers skip
 *   utf8JsonOf(body)                        a JSON body in UTF-16 or UTF-32 (which lenient servers read) as UTF-8
 *   parseRequestJson(body)                  a JSON body read as lenient servers read it (NaN, Infinity)
 *   withStreamUsage(provider, api, url, body)  a streamed OpenAI-shape chat or completions
 *                                           request made to ask for its usage, or null to send
 *                                           the body as it came
 *
 * None throws: a body it cannot read is forwarded as it came and metered without it.
 */
import { parseRequestJson as parseLenientJson } from '../usage/normalize/util.ts';

/** A UTF-8 byte order mark, which some callers write before their JSON. */
const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * The body without its leading UTF-8 byte order mark, when what follows it is JSON; otherwise
 * the body as it came. JSON.parse refuses a BOM, but lenient servers read past it (Python's
 * json.loads of bytes, so FastAPI and vLLM): a request the gateway could not read would skip
 * the checks that read it (its hold, a background refusal, the stream's usage) while the
 * provider runs it. The gateway then forwards the body without it, so the provider acts on the
 * very bytes that were checked and metered (as with a decoded Content-Encoding), and a strict
 * provider is not sent a mark it would refuse. Only a body starting with the mark is parsed
 * here; a binary body that happens to start with those bytes is not JSON, and is left whole.
 */
export function withoutJsonBom(body: Buffer): Buffer {
  if (body.length < UTF8_BOM.length || !body.subarray(0, UTF8_BOM.length).equals(UTF8_BOM)) return body;
  const rest = body.subarray(UTF8_BOM.length);
  return parseRequestJson(rest) === undefined ? body : rest;
}

/**
 * A JSON request body written in UTF-16 or UTF-32, re-encoded as UTF-8; null for any other body.
 * Python's json.loads of bytes reads those encodings too (json.detect_encoding: by their byte
 * order mark, or by where the NUL bytes of the first characters fall), so FastAPI and the servers
 * built on it (vLLM, self-hosted speech servers) run such a request. Read as UTF-8 it would skip
 * every check that reads the body (its hold, a background refusal, the text a speech call is
 * billed by), as a byte order mark did (withoutJsonBom): the provider is sent the UTF-8 text the
 * gateway checked instead. Only a body that then parses to a JSON object is taken, so an audio
 * upload that starts with the same bytes is left whole.
 */
export function utf8JsonOf(body: Buffer): Buffer | null {
  const wide = wideEncodingOf(body);
  // Only an object is a request: anything else (an audio upload starting with those bytes) is not decoded whole.
  if (!wide || firstCharacter(body, wide) !== 0x7b /* { */) return null;
  const text = decodedWide(body, wide);
  if (text === null) return null;
  const utf8 = Buffer.from(text, 'utf8');
  return isObject(parseRequestJson(utf8)) ? utf8 : null;
}

/** A Content-Type without its charset parameter(s), for a body re-encoded as UTF-8. */
export function withoutCharset(contentType: string): string {
  return contentType.replace(/;\s*charset\s*=\s*(?:"[^"]*"|[^;]*)/gi, '');
}

interface WideEncoding {
  /** Bytes per code unit. */
  unit: 2 | 4;
  littleEndian: boolean;
  /** Where the text starts: past its byte order mark. */
  start: number;
}

/** UTF-16 or UTF-32, told apart as json.detect_encoding does; null for a body in neither. */
function wideEncodingOf(body: Buffer): WideEncoding | null {
  if (body.length < 4) return null;
  const [b0, b1, b2, b3] = [body[0]!, body[1]!, body[2]!, body[3]!];
  // UTF-32's marks first: its little-endian one begins as UTF-16's does.
  if (b0 === 0x00 && b1 === 0x00 && b2 === 0xfe && b3 === 0xff) return { unit: 4, littleEndian: false, start: 4 };
  if (b0 === 0xff && b1 === 0xfe && b2 === 0x00 && b3 === 0x00) return { unit: 4, littleEndian: true, start: 4 };
  if (b0 === 0xfe && b1 === 0xff) return { unit: 2, littleEndian: false, start: 2 };
  if (b0 === 0xff && b1 === 0xfe) return { unit: 2, littleEndian: true, start: 2 };
  // No mark: JSON starts with an ASCII character, so the NUL bytes around it tell the encoding.
  if (b0 === 0x00) return b1 !== 0x00 ? { unit: 2, littleEndian: false, start: 0 } : { unit: 4, littleEndian: false, start: 0 };
  if (b1 === 0x00) return b2 !== 0x00 || b3 !== 0x00 ? { unit: 2, littleEndian: true, start: 0 } : { unit: 4, littleEndian: true, start: 0 };
  return null;
}

function codeAt(body: Buffer, at: number, { unit, littleEndian }: WideEncoding): number {
  if (unit === 2) return littleEndian ? body.readUInt16LE(at) : body.readUInt16BE(at);
  return littleEndian ? body.readUInt32LE(at) : body.readUInt32BE(at);
}

/** The first code unit that is not JSON whitespace, or -1. */
function firstCharacter(body: Buffer, wide: WideEncoding): number {
  for (let at = wide.start; at + wide.unit <= body.length; at += wide.unit) {
    const code = codeAt(body, at, wide);
    if (code !== 0x20 && code !== 0x09 && code !== 0x0a && code !== 0x0d) return code;
  }
  return -1;
}

/** The text past the mark, or null when cut mid-character or not a code point. */
function decodedWide(body: Buffer, wide: WideEncoding): string | null {
  const bytes = body.subarray(wide.start);
  if (bytes.length % wide.unit !== 0) return null;
  if (wide.unit === 2) return wide.littleEndian ? bytes.toString('utf16le') : Buffer.from(bytes).swap16().toString('utf16le');
  const chars: string[] = [];
  for (let at = 0; at < bytes.length; at += 4) {
    const code = codeAt(bytes, at, wide);
    if (code > 0x10ffff) return null;
    chars.push(String.fromCodePoint(code));
  }
  return chars.join('');
}

/**
 * A request body read as JSON the way lenient servers read it (bare NaN and Infinity as null),
 * or undefined when it is not JSON: the normalizers' reading (usage/normalize/util.ts), so what
 * the gateway checks is what metering reads.
 */
export function parseRequestJson(body: Buffer): unknown {
  return parseLenientJson(body.toString('utf8'));
}

/**
 * Whether a request's `stream` asks for a stream: `true`, and the values a lax server coerces
 * to true (pydantic's lax mode, behind vLLM and other Python servers: 1, and the strings "true",
 * "1", "yes", "on", "t", "y" in any case). Such a server streams, and without the option sends
 * no usage at all. Adding the option to one of these cannot break a call that works: a strict
 * provider refuses any of them but `true` whatever else the body says. Values a lax server reads
 * as false (0, "false", "no"…) are not streams, and neither are values every server refuses:
 * adding stream_options to a call that does not stream can make a provider refuse it
 * ("stream_options is only allowed when stream is true").
 */
export function asksToStream(value: unknown): boolean {
  if (value === true || value === 1) return true;
  return typeof value === 'string' && /^(?:true|1|yes|on|t|y)$/i.test(value);
}

/** JSON and text request bodies up to this size are kept as text for normalizers that read the request. */
export const MAX_REQUEST_TEXT = 1024 * 1024;
/** A form's text field longer than this is no model, size or count: it is left out. */
export const MAX_FORM_FIELD_BYTES = 4 * 1024;
/** At most this many of a form's text fields are kept. */
const MAX_FORM_FIELDS = 64;
/** A part whose headers run longer than this is not a form the gateway reads. */
const MAX_PART_HEADER_BYTES = 8 * 1024;
/** A form is read this many parts deep at most. */
const MAX_FORM_PARTS = 1000;

/**
 * The request body handed to the usage normalizer, or undefined when there is none it could
 * read. JSON and text bodies (up to MAX_REQUEST_TEXT) go as they came. A multipart/form-data
 * body (a transcription, an image edit: a file beside a few fields) is read whatever its size
 * for its small text fields, handed over as a JSON object of them.
 */
export function meteredRequestBody(contentType: string, body: Buffer): string | undefined {
  if (body.length === 0) return undefined;
  if (/^\s*multipart\/form-data\b/i.test(contentType)) {
    const fields = multipartFields(contentType, body);
    return Object.keys(fields).length > 0 ? JSON.stringify(fields) : undefined;
  }
  if (body.length > MAX_REQUEST_TEXT) return undefined;
  // A body sent with no Content-Type at all is read as JSON when it is JSON: servers that parse
  // JSON regardless (FastAPI, so vLLM and most self-hosted OpenAI-compatible servers) run it, and
  // Python's requests and httpx send none for a body given as text. Left out, a speech call
  // would be recorded free (it is billed by its request's text).
  const unlabelled = contentType.trim() === '';
  if (!unlabelled && !/json|text/i.test(contentType)) return undefined;
  if (unlabelled && parseRequestJson(body) === undefined) return undefined;
  const text = body.toString('utf8');
  // JSON with bare NaN or Infinity, which a lenient server ran, is handed over as it was read
  // (those values as null): the normalizer's strict parse would miss its model or its text.
  // Only a body naming one of them is looked at twice.
  if (!text.includes('NaN') && !text.includes('Infinity')) return text;
  try {
    JSON.parse(text);
    return text;
  } catch {
    const parsed = parseRequestJson(body);
    return parsed === undefined ? text : (stringified(parsed) ?? text);
  }
}

// ------------------------------------------------------------------ multipart/form-data

/**
 * The `boundary` parameter of a multipart content type (RFC 2046 §5.1.1: 1 to 70 characters,
 * quoted or not), or null when it has none that is valid.
 */
export function boundaryOf(contentType: string): string | null {
  const semicolon = contentType.indexOf(';');
  if (semicolon === -1) return null;
  const params = contentType.slice(semicolon);
  const pattern = /;\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)/g;
  for (let match = pattern.exec(params); match; match = pattern.exec(params)) {
    if (match[1]!.toLowerCase() !== 'boundary') continue;
    const value = unquote(match[2]!.trim());
    return value.length >= 1 && value.length <= 70 && !/[\r\n]/.test(value) ? value : null;
  }
  return null;
}

/** A header parameter's value: a quoted-string without its quotes and escapes, or the token as it is. */
function unquote(raw: string): string {
  if (!raw.startsWith('"')) return raw;
  return raw.length >= 2 && raw.endsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : '';
}

/**
 * The small text fields of a multipart/form-data body, by name: parts that are not files (no
 * `filename` in their Content-Disposition) and that name no content type other than text, up
 * to MAX_FORM_FIELD_BYTES each. A field sent twice keeps its first value. File contents are
 * skipped over, not copied, so the file's size does not matter. A body that is not such a
 * form, or stops being one part-way, gives the fields read before that (none at worst).
 * Lines end in CRLF, as RFC 7578 requires; bare LF is read too.
 */
export function multipartFields(contentType: string, body: Buffer): Record<string, string> {
  const fields = new Map<string, string>();
  const boundary = boundaryOf(contentType);
  if (!boundary) return {};
  const dashBoundary = Buffer.from(`--${boundary}`, 'latin1');
  const delimiter = Buffer.from(`\n--${boundary}`, 'latin1');
  // The first boundary starts the body, or a line after a preamble.
  let at = 0;
  if (!body.subarray(0, dashBoundary.length).equals(dashBoundary)) {
    const first = body.indexOf(delimiter);
    if (first === -1) return {};
    at = first + 1;
  }
  for (let parts = 0; parts < MAX_FORM_PARTS && fields.size < MAX_FORM_FIELDS; parts++) {
    let cursor = at + dashBoundary.length;
    // "--" right after the boundary closes the form.
    if (body[cursor] === 0x2d && body[cursor + 1] === 0x2d) break;
    cursor = lineEnd(body, cursor);
    if (cursor === -1) break;
    const headers = headersAt(body, cursor);
    if (!headers) break;
    const next = body.indexOf(delimiter, headers.end);
    if (next === -1) break;
    // The line break before the next boundary belongs to the boundary, not to the content.
    const contentEnd = Math.max(headers.end, body[next - 1] === 0x0d ? next - 1 : next);
    const name = textFieldName(headers.text);
    if (name !== null && contentEnd - headers.end <= MAX_FORM_FIELD_BYTES && !fields.has(name)) {
      const value = body.toString('utf8', headers.end, contentEnd);
      // Control characters are no model or size, and NUL could not be stored as one.
      if (!hasControlCharacters(value)) fields.set(name, value);
    }
    at = next + 1;
  }
  return Object.fromEntries(fields);
}

/** Control characters other than tab, CR and LF. */
function hasControlCharacters(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 && code !== 0x09 && code !== 0x0a && code !== 0x0d) return true;
  }
  return false;
}

/** Just past the line break that ends a boundary's line at `from` (only spaces and tabs may pad it), or -1. */
function lineEnd(body: Buffer, from: number): number {
  const lf = body.indexOf(0x0a, from);
  if (lf === -1 || lf - from > 256 || !/^[ \t]*\r?$/.test(body.toString('latin1', from, lf))) return -1;
  return lf + 1;
}

/** A part's header lines starting at `from`, and where its content starts (past the blank line), or null. */
function headersAt(body: Buffer, from: number): { text: string; end: number } | null {
  const window = body.subarray(from, Math.min(body.length, from + MAX_PART_HEADER_BYTES));
  // A part with no headers starts with the blank line itself.
  if (window[0] === 0x0a) return { text: '', end: from + 1 };
  if (window[0] === 0x0d && window[1] === 0x0a) return { text: '', end: from + 2 };
  const crlf = window.indexOf('\r\n\r\n');
  const lf = window.indexOf('\n\n');
  if (crlf !== -1 && (lf === -1 || crlf < lf)) return { text: window.toString('utf8', 0, crlf), end: from + crlf + 4 };
  if (lf !== -1) return { text: window.toString('utf8', 0, lf), end: from + lf + 2 };
  return null;
}

/** The field name of a part that is text (not a file), from its header lines, or null. */
function textFieldName(headers: string): string | null {
  let disposition: string | null = null;
  for (const line of headers.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon === -1) continue;
    const header = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (header === 'content-disposition') disposition = value;
    else if (header === 'content-type' && !/^text\//i.test(value)) return null;
  }
  if (!disposition || !/^form-data\s*(;|$)/i.test(disposition)) return null;
  let name: string | null = null;
  const pattern = /;\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)/g;
  for (let match = pattern.exec(disposition); match; match = pattern.exec(disposition)) {
    const param = match[1]!.toLowerCase();
    if (param === 'filename' || param === 'filename*') return null;
    if (param === 'name') name = unquote(match[2]!.trim());
  }
  return name && name.length <= 200 ? name : null;
}

// ------------------------------------------------------------------ streamed usage

/**
 * OpenAI-shape providers that document `stream_options.include_usage` on chat and completions,
 * so the gateway may add it. Left out on purpose: Mistral (it refuses unknown fields with 422,
 * and sends usage anyway), OpenRouter (always sends usage; the option does nothing there),
 * providers whose support is undocumented, and a merchant's own "openai-compatible" server:
 * vLLM and Ollama accept the option, but servers that validate strictly refuse a field they do
 * not know, and a call that worked would start failing. Those are metered by what they send.
 */
// DeepInfra and Hugging Face's router are left out until their support is confirmed (they forward to many backends).
// Anthropic: its OpenAI-compatible chat completions support stream_options fully (OpenAI SDK compatibility).
const STREAM_USAGE_PROVIDERS: ReadonlySet<string> = new Set(['openai', 'azure-openai', 'groq', 'deepseek', 'xai', 'alibaba', 'nvidia', 'anthropic']);
const STREAM_USAGE_APIS: ReadonlySet<string> = new Set(['chat.completions', 'completions']);
/** Azure OpenAI accepts stream_options from this api-version on; older ones refuse it with 400. */
const AZURE_STREAM_OPTIONS_SINCE = '2024-09-01';

/** Whether a call of `api` to `provider` at `url` may be made to ask for its stream's usage. */
export function acceptsStreamUsage(provider: string, api: string, url: URL): boolean {
  if (!STREAM_USAGE_PROVIDERS.has(provider) || !STREAM_USAGE_APIS.has(api)) return false;
  if (provider !== 'azure-openai') return true;
  // The v1 API (/openai/v1/…) takes no dated api-version, or "preview"/"latest".
  const version = url.searchParams.get('api-version');
  const dated = version === null ? null : /^(\d{4}-\d{2}-\d{2})/.exec(version);
  return !dated || dated[1]! >= AZURE_STREAM_OPTIONS_SINCE;
}

/**
 * The body of a streamed chat or completions request that does not ask for its usage
 * (`"stream": true`, or a value a lax server reads as true, without `stream_options.include_usage: true`, the OpenAI SDK's default),
 * changed to ask for it; null when it already does, does not stream, is not a JSON object or
 * goes where the option is not accepted (acceptsStreamUsage). Without it OpenAI sends no usage at
 * all and the call could only be estimated. The caller's `include_usage: false` is overridden
 * too: the gateway must know what it charges. Every other byte stays as sent: the option is
 * written into the text (no re-serializing that would round a 64-bit `seed` or change escapes),
 * keeping the caller's other stream_options.
 */
export function withStreamUsage(provider: string, api: string, url: URL, body: Buffer): Buffer | null {
  // Parsed only when it may stream: the key named plainly, or written with \u escapes ("strea\u006d"), which the provider reads as the plain key.
  if (!acceptsStreamUsage(provider, api, url) || (!body.includes('"stream"') && !body.includes('\\u'))) return null;
  const parsed = parseRequestJson(body);
  if (!isObject(parsed) || !asksToStream(parsed.stream)) return null;
  const options = parsed.stream_options;
  if (isObject(options) && options.include_usage === true) return null;
  // Any other stream_options than an object or null is refused by the provider as it is.
  if (options !== undefined && options !== null && !isObject(options)) return null;
  const object = topLevelMembers(body);
  if (!object) return null;
  const written = stringified({ ...(isObject(options) ? options : {}), include_usage: true });
  // Nested deeper than JSON.stringify can write (JSON.parse reads any depth): sent as it came, as a body it cannot read is.
  if (written === null) return null;
  const asking = Buffer.from(written);
  const given = object.members.filter((member) => member.key === 'stream_options');
  if (given.length === 0) {
    // After the opening brace: the object has members ("stream" at least), so a comma follows.
    const after = object.open + 1;
    return Buffer.concat([body.subarray(0, after), Buffer.from('"stream_options":'), asking, Buffer.from(','), body.subarray(after)]);
  }
  // Every occurrence, should the key be repeated: parsers differ on which one counts.
  const pieces: Buffer[] = [];
  let from = 0;
  for (const member of given) {
    pieces.push(body.subarray(from, member.valueStart), asking);
    from = member.valueEnd;
  }
  pieces.push(body.subarray(from));
  return Buffer.concat(pieces);
}

/** `value` as JSON text, or null when it is nested too deep for JSON.stringify (which recurses, and overflows the stack). */
function stringified(value: unknown): string | null {
  try {
    return JSON.stringify(value);
  } catch {
    return null;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

interface Member {
  key: string;
  valueStart: number;
  valueEnd: number;
}

/**
 * Where each top-level member's value lies in the text of a JSON object already known to parse,
 * and where its opening brace is. Structural characters are ASCII and never part of a UTF-8
 * sequence, so the bytes are scanned as they are.
 */
function topLevelMembers(body: Buffer): { open: number; members: Member[] } | null {
  const open = skipSpace(body, 0);
  if (body[open] !== 0x7b /* { */) return null;
  const members: Member[] = [];
  let i = open + 1;
  for (;;) {
    i = skipSpace(body, i);
    const c = body[i];
    if (c === undefined || c === 0x7d /* } */) return { open, members };
    if (c === 0x2c /* , */) {
      i++;
      continue;
    }
    if (c !== 0x22 /* " */) return null;
    const keyEnd = stringEnd(body, i);
    const key = JSON.parse(body.toString('utf8', i, keyEnd)) as string;
    i = skipSpace(body, keyEnd);
    if (body[i] !== 0x3a /* : */) return null;
    const valueStart = skipSpace(body, i + 1);
    const valueEnd = valueEndAt(body, valueStart);
    members.push({ key, valueStart, valueEnd });
    i = valueEnd;
  }
}

function skipSpace(body: Buffer, i: number): number {
  while (body[i] === 0x20 || body[i] === 0x09 || body[i] === 0x0a || body[i] === 0x0d) i++;
  return i;
}

/** Just past the closing quote of the string that opens at `i`. */
function stringEnd(body: Buffer, i: number): number {
  for (let j = i + 1; j < body.length; j++) {
    if (body[j] === 0x5c /* \ */) j++;
    else if (body[j] === 0x22) return j + 1;
  }
  return body.length;
}

/** Just past the value that starts at `i`. */
function valueEndAt(body: Buffer, i: number): number {
  const c = body[i];
  if (c === 0x22) return stringEnd(body, i);
  if (c === 0x7b || c === 0x5b /* [ */) {
    let depth = 0;
    for (let j = i; j < body.length; j++) {
      const d = body[j];
      if (d === 0x22) j = stringEnd(body, j) - 1;
      else if (d === 0x7b || d === 0x5b) depth++;
      else if (d === 0x7d || d === 0x5d /* ] */) {
        depth--;
        if (depth === 0) return j + 1;
      }
    }
    return body.length;
  }
  // A number, true, false or null: up to the next separator.
  let j = i;
  while (j < body.length && body[j] !== 0x2c && body[j] !== 0x7d && body[j] !== 0x20 && body[j] !== 0x09 && body[j] !== 0x0a && body[j] !== 0x0d) j++;
  return j;
}
