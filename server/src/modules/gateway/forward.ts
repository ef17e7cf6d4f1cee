import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import type { Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate, type Zlib } from 'node:zlib';
import { pinnedLookup, type Destination } from './destination.ts';
import { KeyRedactor, redactedHeaders } from './key-redaction.ts';

/**
 * The proxying itself: one upstream request, its response relayed to the caller as it
 * arrives (chunk by chunk, with backpressure, never buffered whole), and a copy of the text
 * kept on the side for the usage normalizer.
 */

// Connections to providers are reused across calls: a TLS handshake per call would cost more
// than everything else the gateway does.
const AGENT_OPTIONS = { keepAlive: true, keepAliveMsecs: 30_000, maxSockets: Infinity, maxFreeSockets: 1024, scheduling: 'lifo' as const };
const httpAgent = new http.Agent(AGENT_OPTIONS);
const httpsAgent = new https.Agent(AGENT_OPTIONS);

/** Connection-level headers (RFC 9110 §7.6.1) are between one client and one server; never relayed. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

const REFRAMED = new Set(['host', 'content-length', 'expect']);

/**
 * The copy kept for metering: the first MAX_CAPTURE_BYTES, and past it a rolling tail of the
 * last TAIL_CAPTURE_BYTES, since usage arrives at the end (OpenAI's usage chunk, Anthropic's
 * message_delta, Gemini's last chunk, the usage block closing a JSON document). The caller still
 * receives everything. Both count the text as decoded, when the provider compressed it.
 */
export const MAX_CAPTURE_BYTES = 32 * 1024 * 1024;
export const TAIL_CAPTURE_BYTES = 1024 * 1024;
/**
 * How far a stream's tail grows past TAIL_CAPTURE_BYTES to keep whole the record its last
 * TAIL_CAPTURE_BYTES begin in: a Responses stream's final event repeats the whole response,
 * every generated image included. A longer record is left out of the copy, as any record the
 * tail cuts is: the tail cannot grow without bound on a stream that never ends a record.
 */
export const MAX_TAIL_RECORD_BYTES = 8 * TAIL_CAPTURE_BYTES;
/**
 * A compressed stream is decoded for its copy up to this much text (about a million tokens of
 * chat chunks, several times the longest answer a model writes): past it, it is taken for a
 * decompression bomb and not decoded on.
 */
export const MAX_DECODED_BYTES = 8 * MAX_CAPTURE_BYTES;
/** How long a caller that reads nothing is waited for, when the provider's idle limit is shorter. */
export const CALLER_STALL_MS = 60_000;

/** What ends one record of a stream (an SSE event, an NDJSON line), so a gap can be cut between whole records. */
export function recordEndsOf(contentType: string): string[] | null {
  if (/event-stream/i.test(contentType)) return ['\n\n', '\r\n\r\n'];
  if (/ndjson|jsonl/i.test(contentType)) return ['\n'];
  return null;
}

export type ForwardOutcome = 'COMPLETED' | 'UPSTREAM_ERROR' | 'TIMEOUT' | 'UNREACHABLE' | 'CLIENT_ABORTED';

export interface ForwardResult {
  outcome: ForwardOutcome;
  /** Status the caller received (the provider's, or 502/504 when it never answered). */
  status: number;
  /** The provider's status, when it answered. */
  upstreamStatus: number | null;
  upstreamHeaders: Record<string, string>;
  /** Milliseconds from `startedAt` to the first body byte relayed. */
  ttfbMs: number | null;
  streamed: boolean;
  /** The response text for metering (JSON, SSE, text, decoded if compressed; a long body's head and tail, see Capture), or null for binary bodies. */
  body: string | null;
  /**
   * The response ended before the provider finished it (caller left, provider stalled or cut it),
   * or its copy could not be decoded whole (see MeteringCopy): either way, usage may be missing.
   */
  cut: boolean;
}

export interface ForwardRequest {
  destination: Destination;
  method: string;
  headers: OutgoingHttpHeaders;
  body: Buffer;
  timeoutMs: number;
  idleTimeoutMs: number;
  /** How long a caller that reads nothing is waited for: by default the longer of idleTimeoutMs and CALLER_STALL_MS. */
  callerStallMs?: number;
  startedAt: number;
  /** The provider key the gateway set on the request: masked wherever the answer quotes it (see key-redaction.ts). */
  providerKey?: string | null;
}

/** Request headers to send upstream: the caller's, minus hop-by-hop ones and `drop`. */
export function upstreamHeaders(incoming: IncomingHttpHeaders, drop: (name: string) => boolean): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const listed = connectionListed(incoming.connection);
  for (const [name, value] of Object.entries(incoming)) {
    // The body is sent whole with its own length, so framing headers and Expect are not copied.
    if (value === undefined || HOP_BY_HOP.has(name) || listed.has(name) || REFRAMED.has(name) || drop(name)) continue;
    out[name] = value;
  }
  return out;
}

function connectionListed(connection: string | undefined): Set<string> {
  return new Set((connection ?? '').split(',').map((token) => token.trim().toLowerCase()).filter(Boolean));
}

/**
 * Response headers a provider may not set: the gateway's own (x-tollgate-request-id…), cookies,
 * since the gateway answers on the merchant's domain, and CORS headers: which browser origins
 * may read the answer is Tollgate's setting (TOLLGATE_CORS_ORIGINS), not the provider's.
 */
function isGatewayOwned(name: string): boolean {
  return name.startsWith('x-tollgate-') || name === 'set-cookie' || name.startsWith('access-control-');
}

function relayedHeaders(upstream: IncomingMessage): { headers: OutgoingHttpHeaders; flat: Record<string, string> } {
  const headers: OutgoingHttpHeaders = {};
  const flat: Record<string, string> = {};
  const listed = connectionListed(typeof upstream.headers.connection === 'string' ? upstream.headers.connection : undefined);
  for (const [name, value] of Object.entries(upstream.headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || listed.has(name) || isGatewayOwned(name)) continue;
    headers[name] = value;
    flat[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return { headers, flat };
}

/**
 * The provider's headers, with what the gateway already set in `Vary` (Origin, when CORS answers
 * name the origin) kept beside the provider's: writeHead would replace it, and a shared cache
 * could then serve one origin's answer to another.
 */
function withOwnVary(res: ServerResponse, headers: OutgoingHttpHeaders): OutgoingHttpHeaders {
  const own = res.getHeader('vary');
  if (own === undefined || headers.vary === undefined) return headers;
  return { ...headers, vary: [own, headers.vary].flat().join(', ') };
}

/** Bodies kept for metering: text, and AWS's binary event stream (Bedrock's ConverseStream), whose frames carry JSON. */
const TEXTUAL = /json|event-stream|text\/|ndjson|xml|vnd\.amazon\.eventstream/i;

/**
 * Put between a document's head and tail where bytes between them were dropped. U+0000 may stand
 * neither inside a JSON string nor between tokens, so no JSON text spanning the gap parses: a
 * usage block the gap cuts is not read (its numbers could be joined across the gap into others),
 * while one wholly in the tail is, by the normalizers that read a large body's trailing usage
 * block on its own (lastObjectValue in usage/normalize/json-scan.ts). It holds no brace, bracket
 * or quote, so it opens or closes nothing either.
 */
export const CAPTURE_GAP = '\u0000';

/** One piece of a tail: its bytes, where they start in the body, and where the first record starting in them does (null if none). */
interface TailChunk {
  bytes: Buffer;
  start: number;
  recordStart: number | null;
}

/**
 * The response text kept for metering: a head of MAX_CAPTURE_BYTES and, past it, a rolling tail
 * of TAIL_CAPTURE_BYTES. Where bytes between them were dropped, a stream of records is joined
 * between whole records, so the normalizer reads valid events; its tail reaches back to the start
 * of the record its last TAIL_CAPTURE_BYTES begin in (within MAX_TAIL_RECORD_BYTES), so a final
 * event longer than the tail is kept whole. A document (one JSON body) is joined with CAPTURE_GAP
 * between head and tail: it no longer parses whole, but its usage block, at its end, is in the tail.
 */
export class Capture {
  private readonly head: Buffer[] = [];
  private headBytes = 0;
  private tail: TailChunk[] = [];
  private tailBytes = 0;
  private dropped = 0;
  private received = 0;
  /** The last bytes received, to find a record end split between two chunks. */
  private carry = Buffer.alloc(0);
  private readonly longestEnd: number;

  constructor(private readonly recordEnds: string[] | null) {
    this.longestEnd = Math.max(0, ...(recordEnds ?? []).map((end) => end.length));
  }

  add(chunk: Buffer): void {
    const start = this.received;
    this.received += chunk.length;
    if (this.headBytes < MAX_CAPTURE_BYTES) {
      this.head.push(chunk);
      this.headBytes += chunk.length;
      this.keepCarry(chunk);
      return;
    }
    const recordStart = this.firstRecordStart(chunk, start);
    this.keepCarry(chunk);
    this.tail.push({ bytes: chunk, start, recordStart });
    this.tailBytes += chunk.length;
    this.trim();
  }

  /** Drops the oldest chunks the tail no longer needs, keeping at least TAIL_CAPTURE_BYTES. */
  private trim(): void {
    while (this.tail.length > 1) {
      const oldest = this.tail[0]!;
      if (this.tailBytes - oldest.bytes.length < TAIL_CAPTURE_BYTES) return;
      // A stream keeps its oldest chunk while no later one starts a record early enough to hold
      // the last TAIL_CAPTURE_BYTES: dropping it would cut the record they begin in (unless the
      // tail has grown past MAX_TAIL_RECORD_BYTES).
      if (this.recordEnds && this.tailBytes <= MAX_TAIL_RECORD_BYTES && !this.recordStartsAfterOldestBy(this.received - TAIL_CAPTURE_BYTES)) return;
      this.tail.shift();
      this.tailBytes -= oldest.bytes.length;
      this.dropped += oldest.bytes.length;
    }
  }

  /** Whether some record starts in the tail after its oldest chunk, at or before `offset`. */
  private recordStartsAfterOldestBy(offset: number): boolean {
    for (let i = 1; i < this.tail.length; i++) {
      const recordStart = this.tail[i]!.recordStart;
      if (recordStart !== null) return recordStart <= offset;
    }
    return false;
  }

  /**
   * Where the first record starting in `chunk` (received at `start`) starts: just after a
   * record end, which may have begun in the chunk before (carry). A record end closing the
   * chunk starts a record in the next one, and is found there.
   */
  private firstRecordStart(chunk: Buffer, start: number): number | null {
    if (!this.recordEnds) return null;
    const edge = Buffer.concat([this.carry, chunk.subarray(0, this.longestEnd - 1)]);
    let first: number | null = null;
    for (const end of this.recordEnds) {
      // In the edge, only an end finishing in this chunk or exactly at its start counts.
      const inEdge = edge.indexOf(end, Math.max(0, this.carry.length - end.length));
      const inChunk = inEdge === -1 ? chunk.indexOf(end) : -1;
      const at = inEdge !== -1 ? start - this.carry.length + inEdge + end.length : inChunk !== -1 ? start + inChunk + end.length : null;
      if (at !== null && at < start + chunk.length && (first === null || at < first)) first = at;
    }
    return first;
  }

  private keepCarry(chunk: Buffer): void {
    if (!this.recordEnds) return;
    const recent = chunk.length >= this.longestEnd ? chunk : Buffer.concat([this.carry, chunk]);
    this.carry = Buffer.from(recent.subarray(Math.max(0, recent.length - this.longestEnd)));
  }

  /** How many bytes it holds. */
  get keptBytes(): number {
    return this.headBytes + this.tailBytes;
  }

  text(): string {
    const head = Buffer.concat(this.head);
    const tail = Buffer.concat(this.tail.map((piece) => piece.bytes));
    if (this.dropped === 0) return Buffer.concat([head, tail]).toString('utf8');
    if (!this.recordEnds) return `${head.toString('utf8')}${CAPTURE_GAP}${tail.toString('utf8')}`;
    const first = this.tail.find((piece) => piece.recordStart !== null)?.recordStart;
    const from = first == null ? tail.length : first - this.tail[0]!.start;
    return Buffer.concat([head.subarray(0, lastRecordEnd(head, this.recordEnds)), tail.subarray(from)]).toString('utf8');
  }
}

/** Where the last whole record of `head` ends (0 when none does). */
function lastRecordEnd(head: Buffer, recordEnds: string[]): number {
  return Math.max(0, ...recordEnds.map((end) => {
    const at = head.lastIndexOf(end);
    return at === -1 ? 0 : at + end.length;
  }));
}

/** Content codings (RFC 9110 §8.4) the copy is decoded from. */
const DECODERS: Readonly<Record<string, () => Transform & Zlib>> = {
  gzip: createGunzip,
  'x-gzip': createGunzip,
  deflate: createInflate,
  br: createBrotliDecompress,
};

/**
 * The Capture of a response that may come compressed although the gateway asked for identity
 * (a CDN, a merchant's own server): only the copy is decoded, as it arrives; the caller gets
 * the bytes as sent. A copy that cannot be read whole (a coding not in DECODERS such as zstd or
 * compress, codings stacked, a corrupt body, a stream inflating past MAX_DECODED_BYTES) is
 * `unreadable`: the call is then metered like a cut response, on the text decoded before the
 * trouble, so the merchant's incomplete-stream policy decides its charge.
 */
class MeteringCopy {
  private readonly capture: Capture;
  private readonly decoder: (Transform & Zlib) | null;
  private fed = false;
  private decodedBytes = 0;
  unreadable = false;

  constructor(contentEncoding: string | undefined, recordEnds: string[] | null) {
    this.capture = new Capture(recordEnds);
    const codings = (contentEncoding ?? '').split(',').map((coding) => coding.trim().toLowerCase()).filter((coding) => coding !== '' && coding !== 'identity');
    const decoder = codings.length === 1 ? DECODERS[codings[0]!] : undefined;
    this.decoder = decoder ? decoder() : null;
    if (codings.length > 0 && !decoder) this.unreadable = true;
    this.decoder?.on('data', (text: Buffer) => this.keep(text));
    this.decoder?.on('error', () => {
      this.unreadable = true;
    });
  }

  add(chunk: Buffer): void {
    if (this.decoder) {
      this.fed = true;
      if (!this.decoder.destroyed) this.decoder.write(chunk);
    } else if (!this.unreadable) {
      this.capture.add(chunk);
    }
  }

  private keep(text: Buffer): void {
    this.decodedBytes += text.length;
    if (this.decodedBytes > MAX_DECODED_BYTES) {
      this.unreadable = true;
      this.decoder!.destroy();
      return;
    }
    this.capture.add(text);
  }

  /** Resolves once the decoder has handed over the text of every byte it was given. */
  async close(): Promise<void> {
    const decoder = this.decoder;
    if (!decoder || decoder.destroyed) return;
    // An empty body (a HEAD, a 204) has nothing to decode; ended unfed, a decoder reports an error.
    if (!this.fed) {
      decoder.destroy();
      return;
    }
    const closed = new Promise((resolve) => decoder.once('close', resolve));
    // Flushed first: ending a body cut short reports the cut as an error and drops the text its
    // last bytes decoded to (zlib's final call fails, output and all), which may hold the usage.
    await Promise.race([new Promise<void>((flushed) => decoder.flush(() => flushed())), closed]);
    if (!decoder.destroyed) decoder.end();
    await closed;
  }

  text(): string {
    return this.capture.text();
  }
}

export function forward(request: ForwardRequest, res: ServerResponse, onGatewayError: (status: 502 | 504, message: string) => void): Promise<ForwardResult> {
  const { destination } = request;
  const secure = destination.url.protocol === 'https:';
  return new Promise<ForwardResult>((resolve) => {
    let copy: MeteringCopy | null = null;
    let ttfbMs: number | null = null;
    let upstreamStatus: number | null = null;
    let flat: Record<string, string> = {};
    let streamed = false;
    let settled = false;
    let upstreamResponse: IncomingMessage | undefined;
    const callerStallMs = request.callerStallMs ?? Math.max(request.idleTimeoutMs, CALLER_STALL_MS);

    const finish = (outcome: ForwardOutcome, status: number, cut: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(headerTimer);
      const result = { outcome, status, upstreamStatus, upstreamHeaders: flat, ttfbMs, streamed, cut };
      if (!copy) return resolve({ ...result, body: null });
      const kept = copy;
      void kept.close().then(() => resolve({ ...result, body: kept.text(), cut: cut || kept.unreadable }));
    };

    const open = () =>
      (secure ? https : http).request({
        protocol: destination.url.protocol,
        hostname: destination.hostname,
        port: destination.port,
        path: `${destination.url.pathname}${destination.url.search}`,
        method: request.method,
        headers: {
          ...request.headers,
          host: destination.url.host,
          // The body was read whole, so its length is known; a bodiless GET stays bodiless.
          ...(request.body.length > 0 || !['GET', 'HEAD'].includes(request.method) ? { 'content-length': String(request.body.length) } : {}),
        },
        agent: secure ? httpsAgent : httpAgent,
        lookup: pinnedLookup(destination.address) as never,
        // TLS names the host for SNI and certificate checks; an IP literal is not a valid server name.
        ...(secure && isIP(destination.hostname) === 0 ? { servername: destination.hostname } : {}),
      });
    let upstream = open();
    let retried = false;

    const headerTimer = setTimeout(() => {
      if (upstreamStatus !== null) return;
      upstream.destroy();
      onGatewayError(504, `The provider did not answer within ${request.timeoutMs} ms`);
      finish('TIMEOUT', 504, false);
    }, request.timeoutMs);

    // The caller went away: stop the provider's work too, and meter what was produced.
    const clientAborted = () => {
      if (settled) return;
      upstream.destroy();
      upstreamResponse?.destroy();
      finish('CLIENT_ABORTED', upstreamStatus ?? 499, true);
    };
    res.on('close', () => {
      if (!res.writableFinished) clientAborted();
    });

    const onError = (error: NodeJS.ErrnoException) => {
      if (settled || upstreamStatus !== null) return;
      // A pooled connection the provider closed just as we reused it: the request never reached
      // it, so sending it once more on a fresh connection is safe (Node's documented pattern).
      if (!retried && upstream.reusedSocket && (error.code === 'ECONNRESET' || error.code === 'EPIPE')) {
        retried = true;
        upstream = open();
        attach(upstream);
        upstream.end(request.body);
        return;
      }
      onGatewayError(502, `The provider could not be reached (${error.code ?? 'connection error'})`);
      finish('UNREACHABLE', 502, false);
    };

    // Closed with no response and no error: Node drops a 101 (an upgrade nobody asked for) this
    // way. Nothing more will come, so the caller is answered now rather than at the timeout.
    const onClose = (outgoing: http.ClientRequest) => {
      if (settled || upstreamStatus !== null || outgoing !== upstream) return;
      onGatewayError(502, 'The provider closed the connection without an HTTP response');
      finish('UNREACHABLE', 502, false);
    };

    const attach = (outgoing: http.ClientRequest) => {
      // Each relayed chunk should leave at once, not wait for Nagle's algorithm to fill a packet.
      outgoing.setNoDelay(true);
      outgoing.on('error', onError);
      outgoing.on('response', onResponse);
      outgoing.on('close', () => onClose(outgoing));
    };

    const onResponse = (response: IncomingMessage) => {
      upstreamResponse = response;
      upstreamStatus = response.statusCode ?? 502;
      clearTimeout(headerTimer);
      const relayed = relayedHeaders(response);
      flat = relayed.flat;
      const contentType = flat['content-type'] ?? '';
      streamed = /event-stream|ndjson|vnd\.amazon\.eventstream/i.test(contentType) || !flat['content-length'];
      if (TEXTUAL.test(contentType) || contentType === '') copy = new MeteringCopy(flat['content-encoding'], recordEndsOf(contentType));
      const outcome: ForwardOutcome = upstreamStatus >= 400 ? 'UPSTREAM_ERROR' : 'COMPLETED';
      // The key the gateway sent is masked wherever the answer quotes it. A compressed body is
      // relayed as it came (the gateway asks for none: accept-encoding identity).
      const masking = KeyRedactor.applies(request.providerKey);
      const identity = !flat['content-encoding'] || flat['content-encoding'].trim().toLowerCase() === 'identity';
      const redactor = masking && identity ? new KeyRedactor(request.providerKey!) : null;
      res.writeHead(upstreamStatus, withOwnVary(res, masking ? redactedHeaders(relayed.headers, request.providerKey!) : relayed.headers));
      if (streamed) res.flushHeaders();

      // A provider that stalls mid-response is cut, so neither side waits forever. The timer runs
      // only while the gateway reads: time paused for a slow caller is not the provider's stall.
      // Cut short, the caller still gets every byte that came, what the key check held back too:
      // written, then the connection cut once it has left (destroying at once would drop it).
      const cutCaller = () => {
        const held = redactor?.end();
        if (!held?.length || res.destroyed) return void res.destroy();
        const stalled = setTimeout(() => res.destroy(), callerStallMs);
        res.write(held, () => {
          clearTimeout(stalled);
          res.destroy();
        });
      };
      response.setTimeout(request.idleTimeoutMs, () => {
        response.destroy();
        cutCaller();
        finish('TIMEOUT', upstreamStatus!, true);
      });
      response.on('data', (chunk: Buffer) => {
        if (ttfbMs === null) ttfbMs = Math.round(performance.now() - request.startedAt);
        copy?.add(chunk);
        // A caller gone before its 'close' was heard (or before this call began): no 'drain' will come.
        if (res.destroyed) {
          clientAborted();
          return;
        }
        const relayedChunk = redactor ? redactor.push(chunk) : chunk;
        if (relayedChunk.length > 0 && !res.write(relayedChunk)) {
          // A slow reader is not a failed call: the provider's idle timer stops while the caller
          // catches up. One that reads nothing for CALLER_STALL_MS (at least the provider's idle
          // limit) is let go as CLIENT_ABORTED, never the provider's TIMEOUT, so it cannot hold
          // a provider connection open for ever.
          response.pause();
          response.socket?.setTimeout(0);
          const stalled = setTimeout(() => {
            res.destroy();
            clientAborted();
          }, callerStallMs);
          const gone = () => clearTimeout(stalled);
          res.once('close', gone);
          res.once('drain', () => {
            clearTimeout(stalled);
            res.off('close', gone);
            response.socket?.setTimeout(request.idleTimeoutMs);
            response.resume();
          });
        }
      });
      response.on('end', () => {
        // Ending a destroyed response never calls back.
        if (res.destroyed) {
          clientAborted();
          return;
        }
        const held = redactor?.end();
        if (held?.length) res.end(held, () => finish(outcome, upstreamStatus!, false));
        else res.end(() => finish(outcome, upstreamStatus!, false));
        // The last bytes may wait in the socket for a caller that reads nothing more, below the
        // mark where write() asks to wait: 'finish' never comes, so such a caller is let go as
        // one stalled mid-body is (metered from the whole copy).
        if (res.writableFinished) return;
        const stalled = setTimeout(() => {
          res.destroy();
          clientAborted();
        }, callerStallMs);
        res.once('finish', () => clearTimeout(stalled));
        res.once('close', () => clearTimeout(stalled));
      });
      response.on('close', () => {
        if (response.complete || settled) return;
        // The provider cut the connection mid-body: end the caller's response the same way.
        cutCaller();
        finish(outcome, upstreamStatus!, true);
      });
      response.on('error', () => undefined); // 'close' above handles it
    };

    attach(upstream);
    upstream.end(request.body);
  });
}
