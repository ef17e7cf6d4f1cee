/**
 * Property-based fuzzing of the RESPONSE side of stream metering, through the real gateway: a
 * scripted provider answers with the recorded streaming fixtures (shared/fixtures/providers: the
 * OpenAI chat and Responses streams, the cut-off chat stream, Anthropic's Messages stream, and
 * Gemini's streamGenerateContent built from its recorded answer as the fake provider builds it,
 * both as SSE and as a JSON array; plus Bedrock ConverseStream's binary frames, which have no
 * fixture) split into random chunks — single bytes, boundaries inside multi-byte UTF-8
 * characters, inside `data:` field names, between \r and \n, with small delays between some —
 * as recorded or with CRLF line ends or multi-byte text, sent plain or gzip-, br- or
 * deflate-encoded, with or without a content-length.
 *
 * Properties, for every call:
 *   (a) the caller receives exactly the provider's bytes (of a cut stream: what was sent before the cut);
 *   (b) a whole stream is charged exactly what POST /v1/usage charges for the whole body, and the
 *       usage (and cost) EXPECTED.md gives, however it was chunked;
 *   (c) a stream cut at a random byte (the provider destroys the connection, or ends early) is
 *       recorded incomplete, never charged more than the whole stream, and under NO_CHARGE charged
 *       nothing — unless its usage had arrived before the cut (post-request metering of the bytes
 *       that arrived, decoded as far as they go, reads it), when it is charged that usage in full;
 *       no credit stays held afterwards;
 *   (d) the ledger integrity check reports no violations at the end.
 *
 * Every case draws from a PRNG seeded by STREAM_FUZZ_SEED (random when unset), the stream's name
 * and the case's number: a failure names the seed, and the same seed replays the same cases.
 * STREAM_FUZZ_CASES sets the number of cases per stream (default 12, half of them cut).
 */
import { createHash, randomInt } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { brotliCompressSync, brotliDecompressSync, constants as zlib, deflateSync, gunzipSync, gzipSync, inflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { geminiStreamChunks } from '../../../test/fake-provider.ts';
import { gzipStream } from '../../../test/scripted-gateway.ts';
import { fixtureMeta, readFixture, type FixtureMeta } from '../../../test/provider-fixtures.ts';
import { graphqlData, startTestServer, unhandledRejections, type TestServer } from '../../../test/server.ts';
import { eventStreamFrame } from '../../../test/aws-event-stream.ts';
import { parseDecimalAttos } from '../../shared/money.ts';
import { normalizeResponse } from '../usage/normalize/index.ts';

const SEED = process.env.STREAM_FUZZ_SEED ? Number(process.env.STREAM_FUZZ_SEED) : randomInt(2 ** 31);
const CASES = Number(process.env.STREAM_FUZZ_CASES ?? 12);

// ------------------------------------------------------------------ the streams

type Family = 'openai' | 'anthropic' | 'google' | 'bedrock';

interface StreamFixture {
  /** The fixture it comes from (its usage is in expected_usage.json under that name). */
  fixture: string;
  label: string;
  family: Family;
  /** The provider's path and query, as called. */
  path: string;
  /** The provider URL post-request metering is given. */
  url: string;
  requestBody: Record<string, unknown>;
  headers: Record<string, string>;
  /** Exactly as recorded (or, for Gemini, as the fake provider streams the recorded answer). */
  body: Buffer;
  /** What ends a line in it, as recorded; null for binary frames, whose lengths a line end would break. */
  lineEnd: '\n' | '\r\n' | null;
  /** The usage a whole stream meters to (null: the stream never reports it), and its charge with the markup where known. */
  expected: { input: number; cached: number; output: number; charge: bigint | null } | null;
}

interface ExpectedUsage {
  billable: boolean;
  input_tokens_total: number;
  cached_input_tokens?: number;
  output_tokens: number;
  expected_cost_usd: string | null;
  expected_cost_usd_from_2027_01_01?: string;
}
const expectedUsage = JSON.parse(readFixture('expected_usage.json')) as Record<string, ExpectedUsage>;

/** expected_usage.json's usage of a fixture, and its cost with the 25% markup every tenant charges. */
function expectedOf(fixture: string): StreamFixture['expected'] {
  const e = expectedUsage[fixture]!;
  if (!e.billable) return null;
  const cost = new Date() >= new Date('2027-01-01T00:00:00Z') && e.expected_cost_usd_from_2027_01_01 ? e.expected_cost_usd_from_2027_01_01 : e.expected_cost_usd;
  return { input: e.input_tokens_total, cached: e.cached_input_tokens ?? 0, output: e.output_tokens, charge: cost === null ? null : (parseDecimalAttos('cost', cost) * 125n) / 100n };
}

function recorded(fixture: string, family: Family, path: string, extra: Record<string, unknown>): StreamFixture {
  const meta = fixtureMeta[fixture] as FixtureMeta;
  const url = new URL(meta.request.url);
  return {
    fixture, label: fixture, family, path, url: url.href, requestBody: { ...meta.request.body, ...extra }, headers: { ...meta.response.headers }, body: Buffer.from(readFixture(fixture)), lineEnd: '\n',
    expected: expectedOf(fixture),
  };
}

function gemini(): StreamFixture[] {
  const fixture = 'gemini_generate_content.json';
  const meta = fixtureMeta[fixture] as FixtureMeta;
  const chunks = geminiStreamChunks(JSON.parse(readFixture(fixture)) as Record<string, unknown>);
  const path = '/v1beta/models/gemini-3.8-flash:streamGenerateContent';
  const url = `${new URL(meta.request.url).origin}${path}`;
  const requestBody = { contents: [{ role: 'user', parts: [{ text: 'Summarize the invoice.' }] }], generationConfig: { maxOutputTokens: 2048 } };
  const headers = { ...meta.response.headers };
  return [
    // As the fake provider streams them: one `data:` event per chunk, CRLF-framed, or a pretty JSON array.
    { fixture, label: 'gemini streamGenerateContent (alt=sse)', family: 'google', path: `${path}?alt=sse`, url: `${url}?alt=sse`, requestBody, headers: { ...headers, 'content-type': 'text/event-stream' },
      body: Buffer.from(chunks.map((c) => `data: ${JSON.stringify(c)}\r\n\r\n`).join('')), lineEnd: '\r\n', expected: expectedOf(fixture) },
    { fixture, label: 'gemini streamGenerateContent (JSON array)', family: 'google', path, url, requestBody, headers, body: Buffer.from(`[${chunks.map((c) => JSON.stringify(c, null, 2)).join(',\r\n')}]`), lineEnd: '\n',
      expected: expectedOf(fixture) },
  ];
}

/**
 * Bedrock ConverseStream has no recorded fixture: its binary frames are built here, as the
 * gateway tests build them, with multi-byte text in the deltas (and bytes >= 0x80 in the CRCs).
 */
function bedrock(): StreamFixture {
  const path = '/model/us.anthropic.claude-sonnet-4-6-v1%3A0/converse-stream';
  const deltas = ['Migrate auth first — ', 'then billing (Größe: 3 Dienste), ', 'then reporting 🚀. ', 'Ça marche: 完了.'];
  const body = Buffer.concat([
    eventStreamFrame('messageStart', { p: 'abcd', role: 'assistant' }),
    ...deltas.map((text, i) => eventStreamFrame('contentBlockDelta', { contentBlockIndex: 0, delta: { text }, p: 'abcdefgh'.slice(0, 2 + i) })),
    eventStreamFrame('contentBlockStop', { contentBlockIndex: 0, p: 'ab' }),
    eventStreamFrame('messageStop', { p: 'ab', stopReason: 'end_turn' }),
    eventStreamFrame('metadata', { metrics: { latencyMs: 812 }, p: 'abcdefgh', usage: { inputTokens: 1200, cacheReadInputTokens: 300, outputTokens: 450, totalTokens: 1950 } }),
  ]);
  return {
    fixture: '(built: Bedrock ConverseStream)', label: 'bedrock converse-stream (AWS event-stream frames)', family: 'bedrock', path, url: `https://bedrock-runtime.us-east-1.amazonaws.com${path}`,
    requestBody: { messages: [{ role: 'user', content: [{ text: 'Plan the migration.' }] }], inferenceConfig: { maxTokens: 2048 } },
    headers: { 'content-type': 'application/vnd.amazon.eventstream' }, body, lineEnd: null, expected: { input: 1500, cached: 300, output: 450, charge: null },
  };
}

const MESSAGES = [{ role: 'user', content: 'Plan the migration of our three services.' }];
const STREAMS: StreamFixture[] = [
  recorded('openai_chat_completion_stream_include_usage.sse', 'openai', '/v1/chat/completions', { messages: MESSAGES, max_completion_tokens: 2048 }),
  recorded('openai_chat_completion_stream_truncated.sse', 'openai', '/v1/chat/completions', { messages: MESSAGES, max_completion_tokens: 2048 }),
  recorded('openai_responses_stream.sse', 'openai', '/v1/responses', { input: 'Plan the migration.', max_output_tokens: 2048 }),
  recorded('anthropic_messages_stream.sse', 'anthropic', '/v1/messages', { messages: MESSAGES }),
  ...gemini(),
  bedrock(),
];

// ------------------------------------------------------------------ variants and chunking

/** mulberry32: small, fast, and the same sequence for the same seed on every platform. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function caseSeed(stream: string, index: number): number {
  return createHash('sha256').update(`${SEED}:${stream}:${index}`).digest().readUInt32BE(0);
}

class Draw {
  constructor(readonly next: () => number) {}
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

/** Letters of generated text swapped for 2-, 3- and 4-byte UTF-8 characters. */
const WIDE: Record<string, string> = { a: 'ä', o: 'ø', e: '€', i: 'ï', s: '𝔰' };

/**
 * The body with the model's text (the string values of text, thinking, delta and content) made
 * multi-byte; escapes are left as they are, so the JSON stays valid and the usage unchanged.
 */
function widened(body: Buffer): Buffer {
  const text = body.toString('utf8').replace(/"(text|thinking|delta|content)":(\s*)"((?:[^"\\]|\\.)*)"/g, (_m, key: string, space: string, value: string) =>
    `"${key}":${space}"${value.replace(/\\u[0-9a-fA-F]{4}|\\.|[aoeis]/g, (c) => WIDE[c] ?? c)}"`);
  return Buffer.from(text);
}

function crlf(body: Buffer): Buffer {
  return Buffer.from(body.toString('utf8').replace(/\r?\n/g, '\r\n'));
}

/** Offsets where a cut or a chunk boundary is most likely to trip a reader. */
function interestingOffsets(body: Buffer): number[] {
  const at: number[] = [];
  for (let i = 1; i < body.length; i++) {
    const byte = body[i]!;
    if (byte >= 0x80 && byte < 0xc0) at.push(i); // inside a multi-byte character
    if (body[i - 1] === 0x0d && byte === 0x0a) at.push(i); // between \r and \n
    if (body[i - 1] === 0x0a) at.push(i); // a line starts
  }
  for (let i = body.indexOf('data:'); i !== -1; i = body.indexOf('data:', i + 1)) for (let k = 1; k <= 5; k++) at.push(i + k);
  for (let i = body.indexOf('"usage'); i !== -1; i = body.indexOf('"usage', i + 1)) at.push(i, i + 3);
  return [...new Set(at)].filter((i) => i > 0 && i < body.length).sort((a, b) => a - b);
}

interface Piece {
  bytes: Buffer;
  /** Waited before it is written: null writes it at once, 0 waits a turn of the event loop. */
  delayMs: number | null;
}

type Chunking = 'bytewise' | 'tiny' | 'mixed' | 'interesting' | 'few';

/** `wire` in pieces: boundaries as the chunking says, some of them after a short wait. */
function chunked(d: Draw, wire: Buffer, interesting: number[], kind: Chunking): Piece[] {
  const cuts = new Set<number>();
  switch (kind) {
    case 'bytewise':
      for (let i = 1; i < wire.length; i++) cuts.add(i);
      break;
    case 'tiny':
      for (let i = d.int(1, 4); i < wire.length; i += d.int(1, 4)) cuts.add(i);
      break;
    case 'mixed':
      for (let i = d.int(1, 64); i < wire.length; i += d.chance(0.3) ? d.int(1, 3) : d.int(1, 700)) cuts.add(i);
      break;
    case 'interesting':
      for (const i of interesting) if (d.chance(0.5)) cuts.add(i);
      for (let n = d.int(0, 8); n > 0; n--) cuts.add(d.int(1, Math.max(1, wire.length - 1)));
      break;
    case 'few':
      for (let n = d.int(0, 2); n > 0; n--) cuts.add(d.int(1, Math.max(1, wire.length - 1)));
      break;
  }
  const ordered = [...cuts].filter((i) => i > 0 && i < wire.length).sort((a, b) => a - b);
  // A wait makes the boundary one the gateway sees (without one, TCP joins the writes); a few dozen keep a case fast.
  const waitChance = Math.min(kind === 'interesting' ? 0.8 : 0.3, 40 / Math.max(1, ordered.length));
  const pieces: Piece[] = [];
  let start = 0;
  for (const end of [...ordered, wire.length]) {
    pieces.push({ bytes: wire.subarray(start, end), delayMs: start > 0 && d.chance(waitChance) ? d.int(0, 3) : null });
    start = end;
  }
  return pieces;
}

interface Case {
  stream: StreamFixture;
  index: number;
  lines: 'recorded' | 'crlf';
  text: 'recorded' | 'multibyte';
  encoding: Encoding;
  chunking: Chunking;
  /** Declared content-length (the whole body's, even when cut). */
  contentLength: boolean;
  /** The decoded body the provider streams. */
  body: Buffer;
  /** What goes on the wire: the body, or its encoding. */
  wire: Buffer;
  /** Bytes of `wire` sent before the provider stops, and how it stops; null sends it whole. */
  cut: { at: number; how: 'destroy' | 'end-early' } | null;
  pieces: Piece[];
  tenant: TenantKind;
}

type Encoding = 'identity' | 'gzip' | 'br' | 'deflate';

type TenantKind = 'estimate' | 'estimate-reserving' | 'no-charge' | 'no-charge-reserving';
const TENANT_KINDS: TenantKind[] = ['estimate', 'estimate-reserving', 'no-charge', 'no-charge-reserving'];

async function drawCase(stream: StreamFixture, index: number, cut: boolean): Promise<Case> {
  const d = new Draw(prng(caseSeed(stream.label, index)));
  const lines = stream.lineEnd === '\n' && d.chance(0.4) ? 'crlf' : 'recorded';
  const text = stream.lineEnd !== null && d.chance(0.4) ? 'multibyte' : 'recorded';
  const encoding: Encoding = d.chance(0.6) ? 'identity' : d.pick(['gzip', 'gzip', 'br', 'deflate'] as const);
  let body = stream.body;
  if (text === 'multibyte') body = widened(body);
  if (lines === 'crlf') body = crlf(body);
  // Compressed in one piece, or flushed at random points as a streaming server does.
  const wire = await encoded(d, body, encoding);
  const interesting = encoding !== 'identity' ? [] : interestingOffsets(wire);
  const chunking = d.pick<Chunking>(encoding !== 'identity' ? ['tiny', 'mixed', 'few', 'bytewise'] : ['bytewise', 'tiny', 'mixed', 'interesting', 'interesting', 'few']);
  const contentLength = d.chance(0.2);
  // Cuts fall anywhere, often where a reader may trip, near the end, or after the usage arrived
  // and before the stream ended (in a compressed body: within its last block and trailer).
  let at: number | null = null;
  if (cut) {
    const arrived = usageArrival(stream, encoding, wire);
    const r = d.next();
    if (r < 0.4 && arrived !== null) at = d.int(arrived, wire.length - 1);
    else if (r < 0.6 && interesting.length > 0) at = d.pick(interesting);
    else if (r < 0.8) at = d.int(Math.floor(wire.length * 0.8), wire.length - 1);
    else at = d.int(0, wire.length - 1);
  }
  const how = d.chance(0.5) ? 'destroy' : 'end-early';
  const sent = at === null ? wire : wire.subarray(0, at);
  return {
    stream, index, lines, text, encoding, chunking, contentLength, body, wire,
    cut: at === null ? null : { at, how },
    pieces: chunked(d, sent, interesting.filter((i) => i < sent.length), chunking),
    tenant: d.pick(TENANT_KINDS),
  };
}

async function encoded(d: Draw, body: Buffer, encoding: Encoding): Promise<Buffer> {
  if (encoding === 'identity') return body;
  if (encoding === 'br') return brotliCompressSync(body);
  if (encoding === 'deflate') return deflateSync(body);
  if (d.chance(0.5)) return gzipSync(body);
  // Flushed at random points, as a server compressing a stream does: each part decodes on arrival.
  const parts: Buffer[] = [];
  for (let start = 0; start < body.length; ) {
    const end = Math.min(body.length, start + d.int(1, 900));
    parts.push(body.subarray(start, end));
    start = end;
  }
  return Buffer.concat(await gzipStream(parts));
}

function describeCase(c: Case): string {
  const sizes = c.pieces.map((p) => `${p.bytes.length}${p.delayMs === null ? '' : `+${p.delayMs}ms`}`);
  return JSON.stringify({
    seed: SEED, stream: c.stream.label, case: c.index, tenant: c.tenant, lines: c.lines, text: c.text, encoding: c.encoding, chunking: c.chunking, contentLength: c.contentLength,
    cut: c.cut, wireBytes: c.wire.length, pieces: sizes.length > 60 ? [...sizes.slice(0, 60), `… ${sizes.length} in all`] : sizes,
  });
}

// ------------------------------------------------------------------ the scripted provider

/** What the provider answers the call carrying `x-stream-case: <id>`. */
const scripts = new Map<string, Case>();

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => (ms === 0 ? setImmediate(resolve) : setTimeout(resolve, ms)));
}

async function play(c: Case, res: ServerResponse): Promise<void> {
  const headers: OutgoingHttpHeaders = { ...c.stream.headers, 'cache-control': 'no-cache' };
  if (c.encoding !== 'identity') headers['content-encoding'] = c.encoding;
  if (c.contentLength) headers['content-length'] = c.wire.length;
  res.writeHead(200, headers);
  res.flushHeaders();
  for (const piece of c.pieces) {
    if (piece.delayMs !== null) await sleep(piece.delayMs);
    if (res.destroyed) return;
    if (piece.bytes.length > 0 && !res.write(piece.bytes)) await new Promise((resolve) => res.once('drain', resolve));
  }
  if (c.cut?.how === 'destroy') {
    // Flushes what was written, then drops the connection mid-body (the fake provider's cut()).
    const socket = res.socket!;
    socket.end();
    if (socket.writableFinished) socket.destroy();
    else socket.once('finish', () => socket.destroy());
  } else if (c.contentLength && c.cut) {
    // A declared length cannot end early cleanly: the connection closes short of it.
    res.socket?.destroySoon();
  } else {
    res.end();
  }
}

async function startProvider(): Promise<{ server: Server; host: string }> {
  const server = createServer({ noDelay: true }, (req, res) => {
    req.resume();
    req.on('end', () => {
      const c = scripts.get(String(req.headers['x-stream-case']));
      if (!c) {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"message":"no such case"}}');
        return;
      }
      play(c, res).catch(() => res.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, host: `127.0.0.1:${(server.address() as AddressInfo).port}` };
}

// ------------------------------------------------------------------ tenants, calls, charges

let server: TestServer;
const providers = new Map<Family, { server: Server; host: string }>();

interface Tenant {
  kind: TenantKind;
  merchantId: string;
  secret: string;
  customerId: string;
  /** A second customer, charged by POST /v1/usage for the reference. */
  referenceCustomerId: string;
}
const tenants = new Map<TenantKind, Tenant>();

const rejections = unhandledRejections();
const unhandled = rejections.seen;

const gql = <T = any>(query: string, variables: Record<string, unknown>, token: string) => graphqlData<T>(server, query, variables, token);

async function tenant(kind: TenantKind): Promise<Tenant> {
  const merchant = await server.createMerchant(`stream fuzz ${kind}`);
  for (const [family, provider] of providers) {
    await gql(`mutation($host: String!, $provider: String!) { putGatewayHost(host: $host, provider: $provider) { id } }`, { host: provider.host, provider: family }, merchant.secret);
    await gql(`mutation($p: String!, $k: String!) { setProviderCredential(provider: $p, apiKey: $k) { id } }`, { p: family, k: `${family}-provider-key-0001` }, merchant.secret);
  }
  await gql(`mutation($policy: IncompleteStreamPolicy!) { updateMerchant(incompleteStreamPolicy: $policy) { id } }`, { policy: kind.startsWith('estimate') ? 'ESTIMATE' : 'NO_CHARGE' }, merchant.secret);
  if (kind.endsWith('reserving')) await gql(`mutation { updateGatewaySettings(reserveMaxCost: true) { gatewayReserveMaxCost } }`, {}, merchant.secret);
  await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '25' }, effectiveFrom: new Date('2026-01-01') });
  const customers: string[] = [];
  for (const externalId of ['caller', 'reference']) {
    const created = await gql(`mutation($e: String!) { createCustomer(input: { externalId: $e }) { id } }`, { e: externalId }, merchant.secret);
    const customerId = created.createCustomer.id as string;
    await gql(`mutation($c: ID!, $k: String!) { grantCredits(input: { customerId: $c, amount: "1000", kind: PAID, idempotencyKey: $k }) { __typename } }`, { c: customerId, k: `seed-${externalId}` }, merchant.secret);
    customers.push(customerId);
  }
  return { kind, merchantId: merchant.id, secret: merchant.secret, customerId: customers[0]!, referenceCustomerId: customers[1]! };
}

interface Received {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The response ended as HTTP ends one (not cut off). */
  complete: boolean;
}

/** One call through the gateway, read as raw bytes (nothing decodes them), to its end or its cut. */
function callGateway(t: Tenant, c: Case, id: string): Promise<Received> {
  const target = `http://${providers.get(c.stream.family)!.host}${c.stream.path}`;
  return new Promise((resolve, reject) => {
    const request = httpRequest(`${server.url}/v1/forward?u=${encodeURIComponent(target)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.customerId, 'x-stream-case': id },
    });
    let answered = false;
    request.on('response', (response) => {
      answered = true;
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', () => undefined); // a cut stream: 'close' reports it
      response.on('close', () => resolve({ status: response.statusCode!, headers: response.headers, body: Buffer.concat(chunks), complete: response.complete }));
    });
    request.on('error', (error) => {
      if (!answered) reject(error);
    });
    request.end(JSON.stringify(c.stream.requestBody));
  });
}

interface Charged {
  outcome: string;
  status: number;
  event: { chargeAttos: bigint; status: string; estimated: boolean; incomplete: boolean; cut: boolean | undefined; inputTokens: number; cachedInputTokens: number; outputTokens: number } | null;
}

/** The call's log row (waiting until the gateway has written it) and the usage event it names. */
async function chargedFor(requestId: string): Promise<Charged> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    await server.services.gateway.drain();
    const row = await server.services.prisma.gatewayRequest.findFirst({ where: { id: requestId } });
    if (row) {
      const event = row.usageEventId ? await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: row.usageEventId } }) : null;
      const metadata = (event?.metadata ?? {}) as { incomplete?: boolean; cut?: boolean };
      return {
        outcome: row.outcome,
        status: row.status,
        event: event && {
          chargeAttos: BigInt(event.chargeAttos.toFixed(0)), status: event.status, estimated: event.estimated, incomplete: metadata.incomplete === true, cut: metadata.cut,
          inputTokens: event.inputTokens, cachedInputTokens: event.cachedInputTokens, outputTokens: event.outputTokens,
        },
      };
    }
    if (Date.now() > deadline) throw new Error(`gateway call ${requestId} never logged`);
    await sleep(20);
  }
}

/** The customer's held credit, and any hold still pending. */
async function heldOf(t: Tenant): Promise<string> {
  const data = await gql(`query($c: ID!) { wallet(customerId: $c) { held { amount } } }`, { c: t.customerId }, t.secret);
  const pending = await server.services.prisma.hold.count({ where: { customerId: t.customerId, status: 'PENDING' } });
  return pending > 0 ? `${data.wallet.held.amount as string} (${pending} hold(s) pending)` : (data.wallet.held.amount as string);
}

/** What post-request metering (POST /v1/usage) charges for a whole body, per tenant and body. */
const references = new Map<string, bigint>();

async function referenceCharge(t: Tenant, stream: StreamFixture, body: Buffer): Promise<bigint> {
  const key = `${t.kind}:${createHash('sha256').update(body).digest('hex')}`;
  const known = references.get(key);
  if (known !== undefined) return known;
  const response = await fetch(`${server.url}/v1/usage`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${t.secret}` },
    body: JSON.stringify({
      customer: t.referenceCustomerId, idempotencyKey: `reference:${key}`,
      response: { url: stream.url, status: 200, headers: stream.headers, body: body.toString('utf8'), requestBody: stream.requestBody },
    }),
  });
  const answer = (await response.json()) as { event?: { id: string }; error?: unknown };
  if (response.status !== 200 || !answer.event) throw new Error(`POST /v1/usage refused the whole ${stream.label}: ${JSON.stringify(answer)}`);
  const event = await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: answer.event.id } });
  const charge = BigInt(event.chargeAttos.toFixed(0));
  references.set(key, charge);
  return charge;
}

/** The body the gateway could read of a cut wire: decoded as far as the bytes go. */
function decodedPrefix(encoding: Encoding, sent: Buffer): string {
  try {
    switch (encoding) {
      case 'identity':
        return sent.toString('utf8');
      case 'gzip':
        return gunzipSync(sent, { finishFlush: zlib.Z_SYNC_FLUSH }).toString('utf8');
      case 'deflate':
        return inflateSync(sent, { finishFlush: zlib.Z_SYNC_FLUSH }).toString('utf8');
      case 'br':
        return brotliDecompressSync(sent, { finishFlush: zlib.BROTLI_OPERATION_FLUSH }).toString('utf8');
    }
  } catch {
    return '';
  }
}

/** Post-request metering's reading of what the caller could decode of a cut wire. */
function readPrefix(stream: StreamFixture, encoding: Encoding, sent: Buffer) {
  return normalizeResponse({ url: stream.url, status: 200, headers: stream.headers, body: decodedPrefix(encoding, sent), requestBody: stream.requestBody });
}

/** The fewest bytes of `wire` whose decodable text holds the stream's usage, or null when only the whole does. */
function usageArrival(stream: StreamFixture, encoding: Encoding, wire: Buffer): number | null {
  if (!readPrefix(stream, encoding, wire.subarray(0, wire.length - 1)).billable) return null;
  let lo = 0;
  let hi = wire.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (readPrefix(stream, encoding, wire.subarray(0, mid)).billable) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

// ------------------------------------------------------------------ one case

const tally = new Map<string, number>();

async function check(c: Case): Promise<void> {
  const t = tenants.get(c.tenant)!;
  const id = `${SEED}-${c.stream.label}-${c.index}`;
  scripts.set(id, c);
  const problems: string[] = [];
  try {
    const received = await callGateway(t, c, id);
    const requestId = received.headers['x-tollgate-request-id'];
    if (typeof requestId !== 'string') throw new Error(`no x-tollgate-request-id (status ${received.status}): ${received.body.toString('utf8').slice(0, 300)}`);
    const charged = await chargedFor(requestId);
    const held = await heldOf(t);
    const whole = await referenceCharge(t, c.stream, c.body);
    const sent = c.cut ? c.wire.subarray(0, c.cut.at) : c.wire;
    const event = charged.event;

    // (a) byte for byte
    if (received.status !== 200) problems.push(`caller got ${received.status}`);
    if (!received.body.equals(sent)) {
      problems.push(`caller received ${received.body.length} bytes, not the ${sent.length} the provider sent${received.body.length <= sent.length && received.body.equals(sent.subarray(0, received.body.length)) ? ' (a prefix of them)' : ''}`);
    }
    const cutShort = c.cut !== null && (c.cut.how === 'destroy' || c.contentLength);
    if (received.complete === cutShort) problems.push(cutShort ? 'the caller saw a cut stream end as a whole one' : 'the caller saw a whole stream cut off');

    if (!c.cut) {
      // (b) whole: charged as post-request metering of the whole body, and as EXPECTED.md says
      if (!event) problems.push('a whole stream was not charged at all');
      else {
        if (event.chargeAttos !== whole) problems.push(`charged ${event.chargeAttos} attos, POST /v1/usage charges the whole body ${whole}`);
        const expected = c.stream.expected;
        if (expected) {
          if (expected.charge !== null && event.chargeAttos !== expected.charge) problems.push(`charged ${event.chargeAttos} attos, EXPECTED.md's cost with the markup is ${expected.charge}`);
          const metered = { input: event.inputTokens, cached: event.cachedInputTokens, output: event.outputTokens };
          const { charge: _charge, ...usage } = expected;
          if (JSON.stringify(metered) !== JSON.stringify(usage)) problems.push(`metered ${JSON.stringify(metered)}, expected ${JSON.stringify(usage)}`);
          if (event.incomplete || event.estimated) problems.push('a whole stream with its usage was recorded incomplete or estimated');
          if (event.chargeAttos <= 0n) problems.push('a whole stream was charged nothing');
        } else {
          // The recorded cut-off stream: incomplete by itself, charged nothing under NO_CHARGE.
          if (!event.incomplete) problems.push('the recorded cut-off stream was not recorded incomplete');
          if (c.tenant.startsWith('no-charge') && event.chargeAttos !== 0n) problems.push(`NO_CHARGE charged the recorded cut-off stream ${event.chargeAttos} attos`);
        }
      }
    } else {
      // (c) cut: incomplete unless its usage had arrived; never more than whole; nothing under NO_CHARGE
      const read = readPrefix(c.stream, c.encoding, sent);
      const charge = event?.chargeAttos ?? 0n;
      if (charge > whole) problems.push(`a cut stream was charged ${charge} attos, more than the whole stream's ${whole}`);
      if (read.billable) {
        // Cut after the usage arrived (in [DONE], message_stop…): charged that usage, in full.
        if (!event || charge !== whole) problems.push(`cut after its usage arrived, yet charged ${charge} attos, not the whole stream's ${whole}`);
      } else {
        if (!event) problems.push('a cut stream was not recorded');
        else if (!event.incomplete) problems.push(`a cut stream was recorded as complete (${event.status})`);
        if (c.tenant.startsWith('no-charge') && charge !== 0n) problems.push(`NO_CHARGE charged a cut stream ${charge} attos`);
      }
      if (c.cut.how === 'destroy' && event && event.cut !== true) problems.push('a connection cut mid-body is not marked cut');
    }
    if (held !== '0.00') problems.push(`credit still held after the call settled: ${held}`);
    const outcome = `${c.cut ? `cut ${c.cut.how}` : 'whole'} ${c.encoding} ${event ? event.status : 'unrecorded'}${event?.estimated ? ' estimated' : ''}`;
    tally.set(outcome, (tally.get(outcome) ?? 0) + 1);
  } catch (error) {
    problems.push(`failed: ${(error as Error).stack ?? String(error)}`);
  } finally {
    scripts.delete(id);
  }
  if (unhandled.length > 0) problems.push(`unhandled rejection(s): ${unhandled.map(String).join('; ')}`);
  if (problems.length > 0) {
    throw new Error(`${problems.join('\n')}\nfor ${describeCase(c)}\nreplay: STREAM_FUZZ_SEED=${SEED} npx vitest run src/modules/gateway/gateway.stream-chunks.fuzz.test.ts`);
  }
}

// ------------------------------------------------------------------ properties

beforeAll(async () => {
  rejections.start();
  server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true', TOLLGATE_GATEWAY_TIMEOUT_MS: '5000', TOLLGATE_GATEWAY_IDLE_TIMEOUT_MS: '5000' });
  for (const family of ['openai', 'anthropic', 'google', 'bedrock'] as const) providers.set(family, await startProvider());
  for (const t of await Promise.all(TENANT_KINDS.map(tenant))) tenants.set(t.kind, t);
});

afterAll(async () => {
  rejections.stop();
  for (const { server: provider } of providers.values()) {
    provider.closeAllConnections();
    await new Promise((resolve) => provider.close(resolve));
  }
  await server?.close();
});

describe(`gateway stream metering fuzz: a provider's stream in random chunks (seed ${SEED})`, () => {
  it.each(STREAMS.map((stream) => [stream.label, stream] as const))('%s', async (_label, stream) => {
    for (let index = 0; index < CASES; index++) await check(await drawCase(stream, index, index % 2 === 1));
  }, 60_000);

  it('the ledger integrity check finds no violation, and no credit is held, after all those calls', async () => {
    await server.services.gateway.drain();
    for (const t of tenants.values()) {
      expect((await server.services.ledgerQueries.integrity(t.merchantId)).violations).toEqual([]);
      expect(await heldOf(t)).toBe('0.00');
    }
    expect(unhandled).toEqual([]);
    if (process.env.FUZZ_STATS) console.log(Object.fromEntries([...tally].sort()));
  });
});
