/**
 * A local fake AI provider for gateway tests and benchmarks. It serves the recorded fixture
 * bodies in shared/fixtures/providers byte for byte, with the status and headers that
 * _http_meta.json gives for each, on the paths the real providers use:
 *
 *   POST /v1/chat/completions         openai_chat_completion.json, or (`"stream": true`) the include_usage stream
 *   POST /v1/responses                openai_responses.json, or openai_responses_stream.sse
 *   POST /v1/embeddings               openai_embeddings.json
 *   POST /v1/images/generations       openai_image_generation_gpt_image.json
 *   POST /v1/messages                 anthropic_messages.json, or anthropic_messages_stream.sse
 *   POST /v1beta/models/{m}:generateContent        gemini_generate_content.json
 *   POST /v1beta/models/{m}:streamGenerateContent  ?alt=sse: an SSE stream built from that JSON
 *                                     (without alt=sse: the same chunks as a JSON array)
 *   anything else                     404 with an OpenAI-style error body
 *
 * Streams are written one SSE event per `res.write`, chunked, without content-length.
 *
 * Request headers script the behaviour (all optional):
 *   x-fake-status: N            error response: the 429 fixture on OpenAI paths, the 529 fixture on
 *                               /v1/messages (for 429 or 529), else a provider-shaped JSON error
 *   x-fake-delay-ms: N          wait before sending the response headers
 *   x-fake-chunk-delay-ms: N    wait between SSE events
 *   x-fake-truncate-after: N    SSE only: send the first N events, then cut the connection
 *   x-fake-hang: 1              read the request, never answer
 *   x-fake-redirect: <url>      307 to the url, empty body
 *   x-fake-echo: 1              200 JSON `{ method, path, headers, body }` of the request received
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type OutgoingHttpHeader, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** server/test → three levels up is the directory holding main/ and shared/. */
export const PROVIDER_FIXTURES = new URL('../../../shared/fixtures/providers/', import.meta.url);

export interface RecordedRequest {
  method: string;
  /** Path including the query string, as received. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface FakeProvider {
  /** e.g. http://127.0.0.1:43123 (no trailing slash) */
  url: string;
  port: number;
  /** Every request received, in order (bodies fully read). Stays empty with `record: false`. */
  requests: RecordedRequest[];
  /** Number of requests whose connection the client closed before the response finished. */
  aborted: number;
  /** Clears requests and aborted. */
  reset(): void;
  /** Closes the server and all open sockets. */
  close(): Promise<void>;
}

export interface FakeProviderOptions {
  port?: number;
  host?: string;
  /** Record requests in `requests` (default true; benchmarks turn it off). */
  record?: boolean;
}

// --- Canned responses, built once ---------------------------------------------------------

/** Flat [name, value, name, value, …] list, the cheapest form for writeHead. */
type HeaderList = OutgoingHttpHeader[];

interface Whole {
  status: number;
  headers: HeaderList;
  body: Buffer;
}

interface Stream {
  status: number;
  headers: HeaderList;
  /** One SSE event (with its terminating blank line) per element. */
  events: Buffer[];
}

interface Canned {
  chat: Whole;
  chatStream: Stream;
  responses: Whole;
  responsesStream: Stream;
  embeddings: Whole;
  images: Whole;
  messages: Whole;
  messagesStream: Stream;
  gemini: Whole;
  geminiStream: Stream;
  geminiArray: Whole;
  openai429: Whole;
  anthropic529: Whole;
}

interface MetaEntry {
  response: { status: number; headers?: Record<string, string> };
}

let canned: Canned | undefined;

function readFixture(name: string): Buffer {
  return readFileSync(new URL(name, PROVIDER_FIXTURES));
}

function headerList(headers: Record<string, string>, extra: Record<string, string | number> = {}, drop: string[] = []): HeaderList {
  const list: HeaderList = [];
  for (const [name, value] of Object.entries(headers)) {
    if (!drop.includes(name.toLowerCase()) && !(name.toLowerCase() in extra)) list.push(name, value);
  }
  for (const [name, value] of Object.entries(extra)) list.push(name, String(value));
  return list;
}

/** Splits an SSE body into its events, each keeping its terminating blank line (LF or CRLF framing). */
export function splitSseEvents(body: Buffer): Buffer[] {
  const text = body.toString('latin1'); // byte-preserving: offsets are byte offsets
  const events: Buffer[] = [];
  const blank = /\r\n\r\n|\n\n|\r\r/g;
  let start = 0;
  for (let m = blank.exec(text); m; m = blank.exec(text)) {
    const end = m.index + m[0].length;
    events.push(body.subarray(start, end));
    start = end;
  }
  // A body that ends mid-event (no blank line after it) keeps that fragment as its last event.
  if (start < body.length) events.push(body.subarray(start));
  return events;
}

/** The usageMetadata counts Gemini reports cumulatively while a stream is in flight. */
const GEMINI_COUNTS = ['promptTokenCount', 'cachedContentTokenCount', 'thoughtsTokenCount', 'toolUsePromptTokenCount'] as const;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Cuts text into `pieces` parts at spaces near even lengths (concatenating them gives the text back). */
function splitText(text: string, pieces: number): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 1; i < pieces; i++) {
    const target = Math.round((text.length * i) / pieces);
    let cut = text.indexOf(' ', target);
    if (cut === -1 || cut <= start) cut = Math.max(start, Math.min(target, text.length));
    out.push(text.slice(start, cut));
    start = cut;
  }
  out.push(text.slice(start));
  return out;
}

/**
 * The chunks Gemini streams for the generateContent fixture: the first candidate's text in
 * three pieces. Every chunk carries modelVersion and responseId, as Gemini sends them; earlier
 * chunks carry no finishReason and partial cumulative usage (prompt side and thoughts in full,
 * candidatesTokenCount so far); the last one carries finishReason and the full usageMetadata.
 */
export function geminiStreamChunks(fixture: Json): Json[] {
  const candidates = Array.isArray(fixture.candidates) ? fixture.candidates : [];
  const first: unknown = candidates[0];
  const usage = isObject(fixture.usageMetadata) ? fixture.usageMetadata : undefined;
  const content = isObject(first) && isObject(first.content) ? first.content : undefined;
  const parts = content && Array.isArray(content.parts) ? content.parts : [];
  const part: unknown = parts[0];
  if (!isObject(first) || !content || !isObject(part) || typeof part.text !== 'string' || parts.length !== 1 || candidates.length !== 1) {
    return [fixture]; // not the single-text-part shape: stream it as one chunk
  }
  const pieces = splitText(part.text, 3);
  const total = part.text.length || 1;
  const candidatesTotal = typeof usage?.candidatesTokenCount === 'number' ? usage.candidatesTokenCount : 0;
  const tail: Json = {};
  if (fixture.modelVersion !== undefined) tail.modelVersion = fixture.modelVersion;
  if (fixture.responseId !== undefined) tail.responseId = fixture.responseId;

  const chunks: Json[] = [];
  let sent = 0;
  pieces.forEach((piece, i) => {
    sent += piece.length;
    const last = i === pieces.length - 1;
    const { finishReason: _finish, ...rest } = first;
    const candidate: Json = { ...(last ? first : rest), content: { ...content, parts: [{ ...part, text: piece }] } };
    const chunk: Json = { candidates: [candidate] };
    if (last) {
      if (usage) chunk.usageMetadata = usage;
    } else if (usage) {
      const partial: Json = {};
      for (const key of GEMINI_COUNTS) if (usage[key] !== undefined) partial[key] = usage[key];
      const soFar = Math.floor((candidatesTotal * sent) / total);
      partial.candidatesTokenCount = soFar;
      let sum = soFar;
      for (const key of GEMINI_COUNTS) if (key !== 'cachedContentTokenCount' && typeof usage[key] === 'number') sum += usage[key];
      partial.totalTokenCount = sum;
      if (usage.promptTokensDetails !== undefined) partial.promptTokensDetails = usage.promptTokensDetails;
      chunk.usageMetadata = partial;
    }
    chunks.push({ ...chunk, ...tail });
  });
  return chunks;
}

function loadCanned(): Canned {
  if (canned) return canned;
  const meta = JSON.parse(readFixture('_http_meta.json').toString('utf8')) as Record<string, MetaEntry | string>;
  const headersOf = (name: string): { status: number; headers: Record<string, string> } => {
    const entry = meta[name];
    if (typeof entry !== 'object') throw new Error(`fake provider: no _http_meta.json entry for ${name}`);
    return { status: entry.response.status, headers: entry.response.headers ?? {} };
  };
  const whole = (name: string): Whole => {
    const body = readFixture(name);
    const { status, headers } = headersOf(name);
    return { status, headers: headerList(headers, { 'content-length': body.length }, ['content-length']), body };
  };
  const stream = (name: string): Stream => {
    const { status, headers } = headersOf(name);
    return { status, headers: headerList(headers, { 'cache-control': 'no-cache' }, ['content-length']), events: splitSseEvents(readFixture(name)) };
  };

  const geminiName = 'gemini_generate_content.json';
  const gemini = whole(geminiName);
  const chunks = geminiStreamChunks(JSON.parse(gemini.body.toString('utf8')) as Json);
  const geminiHeaders = headersOf(geminiName).headers;
  const arrayBody = Buffer.from(`[${chunks.map((c) => JSON.stringify(c, null, 2)).join(',\r\n')}]`);

  canned = {
    chat: whole('openai_chat_completion.json'),
    chatStream: stream('openai_chat_completion_stream_include_usage.sse'),
    responses: whole('openai_responses.json'),
    responsesStream: stream('openai_responses_stream.sse'),
    embeddings: whole('openai_embeddings.json'),
    images: whole('openai_image_generation_gpt_image.json'),
    messages: whole('anthropic_messages.json'),
    messagesStream: stream('anthropic_messages_stream.sse'),
    gemini,
    geminiStream: {
      status: 200,
      headers: headerList(geminiHeaders, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' }, ['content-length']),
      events: chunks.map((c) => Buffer.from(`data: ${JSON.stringify(c)}\r\n\r\n`)),
    },
    geminiArray: { status: 200, headers: headerList(geminiHeaders, { 'content-length': arrayBody.length }, ['content-length']), body: arrayBody },
    openai429: whole('openai_error_429_rate_limit.json'),
    anthropic529: whole('anthropic_error_529_overloaded.json'),
  };
  return canned;
}

// --- Routing ------------------------------------------------------------------------------

type Family = 'openai' | 'anthropic' | 'gemini' | 'unknown';

type Route =
  | { kind: 'plain'; family: Family; response: Whole }
  | { kind: 'choice'; family: Family; whole: Whole; stream: Stream }
  | { kind: 'stream'; family: Family; response: Stream }
  | { kind: 'none'; family: Family };

const GEMINI_PATH = /^\/v1(?:beta|alpha)?\/models\/[^/]+(?::|%3A)(generateContent|streamGenerateContent)$/i;

function route(c: Canned, method: string, path: string, query: string): Route {
  let family: Family = 'unknown';
  let found: Route | undefined;
  switch (path) {
    case '/v1/chat/completions':
      family = 'openai';
      found = { kind: 'choice', family, whole: c.chat, stream: c.chatStream };
      break;
    case '/v1/responses':
      family = 'openai';
      found = { kind: 'choice', family, whole: c.responses, stream: c.responsesStream };
      break;
    case '/v1/embeddings':
      family = 'openai';
      found = { kind: 'plain', family, response: c.embeddings };
      break;
    case '/v1/images/generations':
      family = 'openai';
      found = { kind: 'plain', family, response: c.images };
      break;
    case '/v1/messages':
      family = 'anthropic';
      found = { kind: 'choice', family, whole: c.messages, stream: c.messagesStream };
      break;
    default: {
      const m = GEMINI_PATH.exec(path);
      if (m) {
        family = 'gemini';
        if (m[1]!.toLowerCase() === 'generatecontent') found = { kind: 'plain', family, response: c.gemini };
        else if (/(?:^|&)alt=sse(?:&|$)/.test(query)) found = { kind: 'stream', family, response: c.geminiStream };
        else found = { kind: 'plain', family, response: c.geminiArray };
      }
    }
  }
  if (!found || method !== 'POST') return { kind: 'none', family };
  return found;
}

/** `"stream": true` at the top level of a JSON request body (parsed only when the key appears). */
function wantsStream(body: string): boolean {
  if (!body.includes('"stream"')) return false;
  try {
    const parsed: unknown = JSON.parse(body);
    return isObject(parsed) && parsed.stream === true;
  } catch {
    return false;
  }
}

// --- Error bodies -------------------------------------------------------------------------

const GOOGLE_STATUS: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  429: 'RESOURCE_EXHAUSTED',
  499: 'CANCELLED',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
};

const ANTHROPIC_TYPE: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  529: 'overloaded_error',
};

function jsonResponse(status: number, value: unknown): Whole {
  const body = Buffer.from(JSON.stringify(value));
  return { status, headers: ['content-type', 'application/json', 'content-length', String(body.length)], body };
}

function genericError(family: Family, status: number, message: string): Whole {
  if (family === 'anthropic') {
    return jsonResponse(status, { type: 'error', error: { type: ANTHROPIC_TYPE[status] ?? 'api_error', message } });
  }
  if (family === 'gemini') {
    return jsonResponse(status, { error: { code: status, message, status: GOOGLE_STATUS[status] ?? (status >= 500 ? 'INTERNAL' : 'FAILED_PRECONDITION') } });
  }
  const type = status >= 500 ? 'server_error' : 'invalid_request_error';
  return jsonResponse(status, { error: { message, type, param: null, code: null } });
}

function scriptedError(c: Canned, family: Family, status: number): Whole {
  if (family === 'openai' && status === 429) return c.openai429;
  if (family === 'anthropic' && (status === 429 || status === 529)) return c.anthropic529;
  return genericError(family, status, `Fake provider error (x-fake-status: ${status}).`);
}

function notFound(method: string, path: string): Whole {
  return jsonResponse(404, {
    error: { message: `Invalid URL (${method} ${path})`, type: 'invalid_request_error', param: null, code: null },
  });
}

// --- Server -------------------------------------------------------------------------------

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** A non-negative integer header value, or -1 when absent or malformed. */
function count(value: string | string[] | undefined): number {
  const text = header(value);
  if (text === undefined || text === '') return -1;
  const n = Number(text);
  return Number.isInteger(n) && n >= 0 ? n : -1;
}

function truthy(value: string | string[] | undefined): boolean {
  const text = header(value);
  return text !== undefined && text !== '' && text !== '0' && text.toLowerCase() !== 'false';
}

/** Resolves after `ms`, or as soon as the response closes (the client left, or close()). */
function wait(ms: number, res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      res.off('close', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    res.on('close', done);
  });
}

function sendWhole(res: ServerResponse, response: Whole): void {
  res.writeHead(response.status, response.status === 529 ? 'Overloaded' : undefined, response.headers);
  res.end(response.body);
}

/** Ends the connection mid-response: what was written is flushed, then the socket is destroyed. */
function cut(res: ServerResponse): void {
  const socket = res.socket;
  if (!socket) return;
  res.flushHeaders(); // sends the head if nothing was written yet (headersSent is already true after writeHead)
  socket.end();
  if (socket.writableFinished) socket.destroy();
  else socket.once('finish', () => socket.destroy());
}

interface Exchange {
  /** The server itself ended the connection (truncation, close()): not a client abort. */
  cutByUs: boolean;
}

async function sendStream(res: ServerResponse, response: Stream, chunkDelay: number, truncateAfter: number, exchange: Exchange): Promise<void> {
  const events = response.events;
  res.writeHead(response.status, response.headers);
  if (chunkDelay <= 0 && truncateAfter < 0) {
    for (const event of events) res.write(event);
    res.end();
    return;
  }
  const n = truncateAfter >= 0 ? Math.min(truncateAfter, events.length) : events.length;
  for (let i = 0; i < n; i++) {
    if (i > 0 && chunkDelay > 0) await wait(chunkDelay, res);
    if (res.destroyed) return;
    res.write(events[i]!);
  }
  if (res.destroyed) return;
  if (truncateAfter >= 0) {
    exchange.cutByUs = true;
    cut(res);
  } else res.end();
}

export async function startFakeProvider(options: FakeProviderOptions = {}): Promise<FakeProvider> {
  const c = loadCanned();
  const record = options.record ?? true;
  const host = options.host ?? '127.0.0.1';
  const sockets = new Set<Socket>();
  let closing = false;

  // Filled in once listening; the handlers below only run after that.
  const state: FakeProvider = {
    url: '',
    port: 0,
    requests: [],
    aborted: 0,
    reset() {
      state.requests.length = 0; // in place: callers may hold the array
      state.aborted = 0;
    },
    close() {
      closing = true;
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        for (const socket of sockets) socket.destroy();
      });
    },
  };

  async function respond(req: IncomingMessage, res: ServerResponse, body: string, exchange: Exchange): Promise<void> {
    const h = req.headers;
    const method = req.method ?? 'GET';
    const fullPath = req.url ?? '/';
    if (record) state.requests.push({ method, path: fullPath, headers: { ...h }, body });

    if (truthy(h['x-fake-hang'])) return; // until the client leaves, or close()

    const delay = count(h['x-fake-delay-ms']);
    if (delay > 0) {
      await wait(delay, res);
      if (res.destroyed) return;
    }

    const redirect = header(h['x-fake-redirect']);
    if (redirect) {
      res.writeHead(307, ['location', redirect, 'content-length', '0']);
      res.end();
      return;
    }
    if (truthy(h['x-fake-echo'])) {
      sendWhole(res, jsonResponse(200, { method, path: fullPath, headers: h, body }));
      return;
    }

    const q = fullPath.indexOf('?');
    const path = q === -1 ? fullPath : fullPath.slice(0, q);
    const r = route(c, method, path, q === -1 ? '' : fullPath.slice(q + 1));

    const status = count(h['x-fake-status']);
    if (status >= 200 && status <= 599 && status !== 200) {
      sendWhole(res, scriptedError(c, r.family, status));
      return;
    }

    switch (r.kind) {
      case 'none':
        sendWhole(res, notFound(method, path));
        return;
      case 'plain':
        sendWhole(res, r.response);
        return;
      case 'choice':
        if (!wantsStream(body)) {
          sendWhole(res, r.whole);
          return;
        }
        return sendStream(res, r.stream, count(h['x-fake-chunk-delay-ms']), count(h['x-fake-truncate-after']), exchange);
      case 'stream':
        return sendStream(res, r.response, count(h['x-fake-chunk-delay-ms']), count(h['x-fake-truncate-after']), exchange);
    }
  }

  const server = createServer({ noDelay: true }, (req, res) => {
    const exchange: Exchange = { cutByUs: false };
    res.on('close', () => {
      if (!res.writableFinished && !exchange.cutByUs && !closing) state.aborted++;
    });
    req.on('error', () => {}); // a client that leaves mid-upload: counted by the close above
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = chunks.length === 0 ? '' : chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
      respond(req, res, body, exchange).catch(() => {
        if (!res.headersSent && !res.destroyed) sendWhole(res, genericError('unknown', 500, 'fake provider failure'));
        else res.destroy();
      });
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  state.port = port;
  state.url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  return state;
}
