/**
 * Property-based fuzzing of what a caller of POST /v1/forward controls: the request body sent
 * to the endpoints Tollgate meters (random JSON, mutated valid requests, invalid JSON, empty and
 * large bodies), the provider URL in `u` (encoded paths, dot segments, fragments, ports, case),
 * and the headers (content-type, content-encoding, x-tollgate-customer). Half the runs go to a
 * merchant reserving each call's maximum cost, whose hold is computed from the request body.
 *
 * Properties, for every call:
 *   - the gateway answers no 5xx of its own making (a 5xx is fine only when the fake provider
 *     was told to answer it and did), and every 4xx carries a JSON error body;
 *   - the connection is never cut and no promise rejection goes unhandled;
 *   - once the call settles, the customer's wallet holds nothing (held = 0.00);
 *   - a call answered with anything but 2xx is never charged;
 * and at the end the ledger integrity check reports no violations.
 */
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeProvider, type FakeProvider } from '../../../test/fake-provider.ts';
import { graphqlData, startTestServer, unhandledRejections, type TestServer } from '../../../test/server.ts';

let server: TestServer;
let openaiFake: FakeProvider;
let anthropicFake: FakeProvider;
let geminiFake: FakeProvider;

interface Tenant {
  merchantId: string;
  secret: string;
  customerId: string;
  externalId: string;
  reserving: boolean;
}

let plain: Tenant;
let reserving: Tenant;

const rejections = unhandledRejections();
const unhandled = rejections.seen;

const gql = <T = any>(query: string, variables: Record<string, unknown>, token: string) => graphqlData<T>(server, query, variables, token);

/** As gateway.test.ts's tenant(): the three fakes allowed with stored keys, a 25% markup, a customer with credit. */
async function tenant(credit: string, reserveMaxCost: boolean): Promise<Tenant> {
  const merchant = await server.createMerchant();
  const hosts: [FakeProvider, string][] = [[openaiFake, 'openai'], [anthropicFake, 'anthropic'], [geminiFake, 'google']];
  for (const [fake, provider] of hosts) {
    await gql(`mutation($host: String!, $provider: String!) { putGatewayHost(host: $host, provider: $provider) { id } }`, { host: new URL(fake.url).host, provider }, merchant.secret);
    await gql(`mutation($p: String!, $k: String!) { setProviderCredential(provider: $p, apiKey: $k) { id } }`, { p: provider, k: `${provider}-provider-key-0001` }, merchant.secret);
  }
  await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '25' }, effectiveFrom: new Date('2026-01-01') });
  const externalId = `user-${Math.random().toString(36).slice(2)}`;
  const created = await gql(`mutation($e: String!) { createCustomer(input: { externalId: $e }) { id } }`, { e: externalId }, merchant.secret);
  const customerId = created.createCustomer.id as string;
  await gql(`mutation($c: ID!, $a: Decimal!) { grantCredits(input: { customerId: $c, amount: $a, kind: PAID, idempotencyKey: "seed" }) { __typename } }`, { c: customerId, a: credit }, merchant.secret);
  if (reserveMaxCost) await gql(`mutation { updateGatewaySettings(reserveMaxCost: true) { gatewayReserveMaxCost } }`, {}, merchant.secret);
  return { merchantId: merchant.id, secret: merchant.secret, customerId, externalId, reserving: reserveMaxCost };
}

beforeAll(async () => {
  rejections.start();
  [server, openaiFake, anthropicFake, geminiFake] = await Promise.all([
    startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true', TOLLGATE_GATEWAY_TIMEOUT_MS: '5000' }),
    startFakeProvider({ record: true }),
    startFakeProvider({ record: true }),
    startFakeProvider({ record: true }),
  ]);
  [plain, reserving] = await Promise.all([tenant('1000', false), tenant('1000', true)]);
});

afterAll(async () => {
  rejections.stop();
  await Promise.all([server?.close(), openaiFake?.close(), anthropicFake?.close(), geminiFake?.close()]);
});

// ------------------------------------------------------------------ what a caller sends

type Fake = 'openai' | 'anthropic' | 'gemini';

interface Endpoint {
  name: string;
  fake: Fake;
  path: string;
  /** Appended to the forward URL (Gemini's alt=sse). */
  params?: string;
  body: Record<string, unknown>;
}

const ENDPOINTS: Endpoint[] = [
  { name: 'chat', fake: 'openai', path: '/v1/chat/completions', body: { model: 'gpt-5.4-mini', max_tokens: 100, messages: [{ role: 'user', content: 'hello' }] } },
  { name: 'chat-stream', fake: 'openai', path: '/v1/chat/completions', body: { model: 'gpt-5.4-mini', stream: true, max_completion_tokens: 100, messages: [{ role: 'user', content: 'hello' }] } },
  { name: 'responses', fake: 'openai', path: '/v1/responses', body: { model: 'gpt-5.4-mini', input: 'hello', max_output_tokens: 100 } },
  { name: 'responses-stream', fake: 'openai', path: '/v1/responses', body: { model: 'gpt-5.4-mini', input: 'hello', stream: true } },
  { name: 'embeddings', fake: 'openai', path: '/v1/embeddings', body: { model: 'text-embedding-3-small', input: 'hello' } },
  { name: 'images', fake: 'openai', path: '/v1/images/generations', body: { model: 'gpt-image-1', prompt: 'a cat', n: 1, size: '1024x1024', quality: 'low' } },
  { name: 'speech', fake: 'openai', path: '/v1/audio/speech', body: { model: 'gpt-4o-mini-tts', input: 'hello there', voice: 'alloy' } },
  { name: 'messages', fake: 'anthropic', path: '/v1/messages', body: { model: 'claude-opus-4-8', max_tokens: 1024, messages: [{ role: 'user', content: 'hello' }] } },
  { name: 'messages-stream', fake: 'anthropic', path: '/v1/messages', body: { model: 'claude-sonnet-4-6', max_tokens: 1024, stream: true, messages: [{ role: 'user', content: 'hello' }] } },
  { name: 'gemini', fake: 'gemini', path: '/v1beta/models/gemini-3.8-flash:generateContent', body: { contents: [{ parts: [{ text: 'hi' }] }], generationConfig: { maxOutputTokens: 100, candidateCount: 1 } } },
  { name: 'gemini-stream', fake: 'gemini', path: '/v1beta/models/gemini-3.8-flash:streamGenerateContent', params: '&alt=sse', body: { contents: [{ parts: [{ text: 'hi' }] }] } },
];

/** Stands in for a raw JSON token that JSON.stringify cannot write (1e400, -0, a 30-digit integer…). */
const RAW = '\u0001RAW\u0001';

const weirdValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.constantFrom<unknown>(
    -1, 0, 1, -0.5, 1.5, 4096.0001, 1e308, -1e308, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, 2 ** 31, 2 ** 63, 128, 129, 100000,
    '100', '-5', '1e9', '00100', ' 100', '9'.repeat(30), 'true', true, false, null, [], {}, [1, 2], { value: 1 }, '', ' ', 'x'.repeat(10_000),
    '模型-🤖', '\u0000', 'gpt-5.4-mini\u0000', 'gpt-5.4-mini ', 'GPT-5.4-MINI', 'claude-opus-4-8', 'gemini-3.8-flash', '../../etc/passwd', '%00', '\ud800',
    { role: 'user' }, [{ role: 'user' }], [{ content: 'x' }], [{ role: 42, content: { nested: [null, { deeper: [] }] } }], [[[[[[[[[[[]]]]]]]]]]],
  ), weight: 5 },
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 2 },
  { arbitrary: fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), weight: 1 },
  { arbitrary: fc.double(), weight: 1 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 1 },
  { arbitrary: fc.constantFrom('1e400', '-0', '123456789012345678901234567890', '1.0', '-1e-400', '0.0000001').map((raw) => ({ [RAW]: raw })), weight: 1 },
);

const KEYS = [
  'model', 'max_tokens', 'max_completion_tokens', 'max_output_tokens', 'maxTokens', 'messages', 'stream', 'stream_options', 'n', 'best_of', 'input', 'prompt',
  'size', 'quality', 'voice', 'background', 'temperature', 'seed', 'contents', 'generationConfig', 'generation_config', 'inferenceConfig', 'tools', 'system',
  '__proto__', 'constructor', 'toString',
] as const;
const NESTED = [
  ['messages', 0, 'content'], ['messages', 0, 'role'], ['messages', 0], ['generationConfig', 'maxOutputTokens'], ['generationConfig', 'candidateCount'],
  ['generationConfig', 'max_output_tokens'], ['stream_options', 'include_usage'], ['contents', 0, 'parts'], ['inferenceConfig', 'maxTokens'],
] as const;

type Mutation = { op: 'set'; path: readonly (string | number)[]; value: unknown } | { op: 'delete'; path: readonly (string | number)[] };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('set' as const), path: fc.constantFrom(...KEYS).map((key) => [key] as const), value: weirdValue }),
  fc.record({ op: fc.constant('set' as const), path: fc.constantFrom(...NESTED), value: weirdValue }),
  fc.record({ op: fc.constant('delete' as const), path: fc.constantFrom(...KEYS.map((key) => [key] as const), ...NESTED) }),
);

function isRecord(value: unknown): value is Record<string | number, unknown> {
  return typeof value === 'object' && value !== null;
}

/** Applies mutations to a deep copy; `__proto__` and friends become own, enumerable members. */
function mutate(base: Record<string, unknown>, mutations: Mutation[]): unknown {
  const copy = structuredClone(base) as Record<string, unknown>;
  for (const m of mutations) {
    let at: unknown = copy;
    for (const step of m.path.slice(0, -1)) {
      if (!isRecord(at)) break;
      const own = Object.prototype.hasOwnProperty.call(at, step) ? (at as Record<string | number, unknown>)[step] : undefined;
      if (!isRecord(own)) Object.defineProperty(at, step, { value: typeof m.path[m.path.indexOf(step) + 1] === 'number' ? [] : {}, enumerable: true, writable: true, configurable: true });
      at = (at as Record<string | number, unknown>)[step];
    }
    if (!isRecord(at)) continue;
    const last = m.path.at(-1)!;
    if (m.op === 'delete') delete (at as Record<string | number, unknown>)[last];
    else Object.defineProperty(at, last, { value: m.value, enumerable: true, writable: true, configurable: true });
  }
  return copy;
}

/** JSON text, with RAW placeholders written as the raw tokens they stand for. */
function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (isRecord(v) && !Array.isArray(v) && typeof (v as Record<string, unknown>)[RAW] === 'string' ? `${RAW}${(v as Record<string, string>)[RAW]}${RAW}` : v))
    .replace(new RegExp(`"${RAW}(.*?)${RAW}"`, 'g'), '$1');
}

type BodyKind = { kind: 'mutated'; mutations: Mutation[] } | { kind: 'json'; value: unknown } | { kind: 'text'; text: string } | { kind: 'bytes'; bytes: Uint8Array }
  | { kind: 'empty' } | { kind: 'truncated'; mutations: Mutation[]; cut: number } | { kind: 'duplicateKeys'; first: unknown; second: unknown; key: string }
  | { kind: 'large'; bytes: number };

const bodyKind: fc.Arbitrary<BodyKind> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('mutated' as const), mutations: fc.array(mutation, { minLength: 0, maxLength: 4 }) }), weight: 10 },
  { arbitrary: fc.record({ kind: fc.constant('json' as const), value: fc.jsonValue({ maxDepth: 4 }) }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('text' as const), text: fc.oneof(fc.string({ maxLength: 60 }), fc.constantFrom('{', '[', '{"model":', '{"model":"gpt-5.4-mini",}', 'null', 'NaN', '{"stream":true', '\uFEFF{"model":"gpt-5.4-mini"}', '{"a":1}{"b":2}', '  ', 'undefined')) }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('bytes' as const), bytes: fc.uint8Array({ maxLength: 64 }) }), weight: 1 },
  { arbitrary: fc.constant({ kind: 'empty' as const }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('truncated' as const), mutations: fc.array(mutation, { maxLength: 2 }), cut: fc.nat() }), weight: 1 },
  {
    arbitrary: fc.record({ kind: fc.constant('duplicateKeys' as const), key: fc.constantFrom('stream', 'model', 'max_tokens', 'stream_options', 'background', 'n'), first: weirdValue, second: weirdValue }),
    weight: 2,
  },
  // Above the 1 MiB kept as text for metering, far under the 32 MiB request limit.
  { arbitrary: fc.record({ kind: fc.constant('large' as const), bytes: fc.constantFrom(300_000, 1_100_000, 1_600_000) }), weight: 1 },
);

function bodyBytes(endpoint: Endpoint, kind: BodyKind): Buffer {
  switch (kind.kind) {
    case 'mutated':
      return Buffer.from(toJson(mutate(endpoint.body, kind.mutations)));
    case 'json':
      return Buffer.from(JSON.stringify(kind.value) ?? '');
    case 'text':
      return Buffer.from(kind.text);
    case 'bytes':
      return Buffer.from(kind.bytes);
    case 'empty':
      return Buffer.alloc(0);
    case 'truncated': {
      const text = toJson(mutate(endpoint.body, kind.mutations));
      return Buffer.from(text.slice(0, kind.cut % Math.max(1, text.length)));
    }
    case 'duplicateKeys': {
      const text = toJson(endpoint.body);
      return Buffer.from(`{${JSON.stringify(kind.key)}:${toJson(kind.first)},${text.slice(1, -1)},${JSON.stringify(kind.key)}:${toJson(kind.second)}}`);
    }
    case 'large': {
      const padded = structuredClone(endpoint.body);
      padded.padding = 'lorem ipsum '.repeat(Math.ceil(kind.bytes / 12));
      return Buffer.from(JSON.stringify(padded));
    }
  }
}

const PATH_VARIANTS = ['plain', 'trailing-slash', 'dot-segment', 'dotdot-segment', 'encoded-dotdot', 'encoded-letter', 'encoded-slash', 'double-slash', 'uppercase-path', 'fragment', 'query', 'semicolon', 'encoded-colon'] as const;
const HOST_VARIANTS = ['plain', 'uppercase-scheme', 'localhost', 'userinfo', 'leading-zero-port', 'trailing-dot', 'hex-ip', 'no-port', 'other-port', 'ipv6-mapped'] as const;
const QUERY_VARIANTS = ['', '&x=1', '&alt=json', '&u=http://example.com/', '&%75=http://example.com/', '&=&&', '&u', '#frag', '&key=secret&api-version=2024-01-01'] as const;
const FORMS = ['query', 'base-url'] as const;

function pathVariant(path: string, variant: (typeof PATH_VARIANTS)[number]): string {
  switch (variant) {
    case 'plain': return path;
    case 'trailing-slash': return `${path}/`;
    case 'dot-segment': return path.replace('/v1', '/v1/.');
    case 'dotdot-segment': return path.replace(/^\/(v1\w*)\//, '/$1/junk/../');
    case 'encoded-dotdot': return path.replace(/^\/(v1\w*)\//, '/$1/junk/%2e%2E/');
    case 'encoded-letter': return path.replace(/\/([a-z])/, (_m, c: string) => `/%${c.charCodeAt(0).toString(16)}`);
    case 'encoded-slash': return path.replace(/\/([^/]*)$/, '%2F$1');
    case 'double-slash': return `/${path}`;
    case 'uppercase-path': return path.toUpperCase();
    case 'fragment': return `${path}#frag`;
    case 'query': return `${path}?foo=bar&u=x`;
    case 'semicolon': return `${path};jsessionid=1`;
    case 'encoded-colon': return path.replace(':', '%3A');
  }
}

function hostVariant(url: string, variant: (typeof HOST_VARIANTS)[number]): string {
  const { port } = new URL(url);
  switch (variant) {
    case 'plain': return url;
    case 'uppercase-scheme': return url.replace('http://', 'HTTP://');
    case 'localhost': return `http://LOCALHOST:${port}`;
    case 'userinfo': return `http://user:pass@127.0.0.1:${port}`;
    case 'leading-zero-port': return `http://127.0.0.1:00${port}`;
    case 'trailing-dot': return `http://127.0.0.1.:${port}`;
    case 'hex-ip': return `http://0x7f.0.0.1:${port}`;
    case 'no-port': return 'http://127.0.0.1';
    case 'other-port': return `http://127.0.0.1:${Number(port) === 1 ? 2 : 1}`;
    case 'ipv6-mapped': return `http://[::ffff:127.0.0.1]:${port}`;
  }
}

const CONTENT_TYPES = [
  'application/json', 'application/json; charset=utf-8', 'APPLICATION/JSON', 'application/json; charset=utf-16', 'text/plain', 'text/plain;charset=UTF-8',
  'application/x-www-form-urlencoded', 'multipart/form-data; boundary=xyz', 'multipart/form-data', 'application/octet-stream', 'application/problem+json',
  ' application/json ', 'json', '*/*', null,
] as const;
const CONTENT_ENCODINGS = ['none', 'identity', 'gzip', 'x-gzip', 'br', 'deflate', 'gzip, br', 'GZIP', ' gzip ', 'gzip (not really)', 'compress', 'zstd', 'identity, identity', ','] as const;
const CUSTOMERS = ['externalId', 'id', 'ID', 'padded', 'none', 'empty', 'unknown', 'unknown-uuid', 'long', 'latin1', 'both'] as const;
const CURRENCIES = [null, 'USD', 'usd', ' USD ', 'EUR', 'XXX', 'US', 'USDT', '', '\u00dcSD', '12345'] as const;
const FAKE_STATUSES = [null, null, null, null, 201, 204, 301, 400, 401, 404, 422, 429, 500, 503, 529] as const;

interface Call {
  endpoint: Endpoint;
  body: BodyKind;
  form: (typeof FORMS)[number];
  path: (typeof PATH_VARIANTS)[number];
  host: (typeof HOST_VARIANTS)[number];
  query: (typeof QUERY_VARIANTS)[number];
  contentType: (typeof CONTENT_TYPES)[number];
  encoding: (typeof CONTENT_ENCODINGS)[number];
  customer: (typeof CUSTOMERS)[number];
  fakeStatus: (typeof FAKE_STATUSES)[number];
  currency: (typeof CURRENCIES)[number];
  /** Sent in pieces with Transfer-Encoding: chunked (no Content-Length). */
  chunked: boolean;
  reserve: boolean;
}

/** Most calls are well-formed but for one or two things, so they reach the provider. */
const call: fc.Arbitrary<Call> = fc.record({
  endpoint: fc.constantFrom(...ENDPOINTS),
  body: bodyKind,
  form: fc.constantFrom(...FORMS),
  path: fc.oneof({ arbitrary: fc.constant('plain' as const), weight: 4 }, { arbitrary: fc.constantFrom(...PATH_VARIANTS), weight: 1 }),
  host: fc.oneof({ arbitrary: fc.constant('plain' as const), weight: 6 }, { arbitrary: fc.constantFrom(...HOST_VARIANTS), weight: 1 }),
  query: fc.oneof({ arbitrary: fc.constant('' as const), weight: 4 }, { arbitrary: fc.constantFrom(...QUERY_VARIANTS), weight: 1 }),
  contentType: fc.oneof({ arbitrary: fc.constant('application/json' as const), weight: 4 }, { arbitrary: fc.constantFrom(...CONTENT_TYPES), weight: 1 }),
  encoding: fc.oneof({ arbitrary: fc.constant('none' as const), weight: 5 }, { arbitrary: fc.constantFrom(...CONTENT_ENCODINGS), weight: 1 }),
  customer: fc.oneof({ arbitrary: fc.constant('externalId' as const), weight: 5 }, { arbitrary: fc.constantFrom(...CUSTOMERS), weight: 1 }),
  fakeStatus: fc.constantFrom(...FAKE_STATUSES),
  currency: fc.oneof({ arbitrary: fc.constant(null), weight: 6 }, { arbitrary: fc.constantFrom(...CURRENCIES), weight: 1 }),
  chunked: fc.boolean(),
  reserve: fc.boolean(),
});

function encode(body: Buffer, encoding: Call['encoding']): Buffer {
  switch (encoding) {
    case 'gzip': case 'x-gzip': case 'GZIP': case ' gzip ': return gzipSync(body);
    case 'br': return brotliCompressSync(body);
    case 'deflate': return deflateSync(body);
    // Codings are listed in the order applied: gzip first, then br.
    case 'gzip, br': return brotliCompressSync(gzipSync(body));
    default: return body; // identity, or a coding the body does not really have
  }
}

function customerHeader(t: Tenant, which: Call['customer']): string | undefined {
  switch (which) {
    case 'externalId': return t.externalId;
    case 'id': return t.customerId;
    case 'ID': return t.customerId.toUpperCase();
    case 'padded': return `  ${t.externalId}\t`;
    case 'none': return undefined;
    case 'empty': return '';
    case 'unknown': return 'nobody-at-all';
    case 'unknown-uuid': return '00000000-0000-4000-8000-000000000000';
    case 'long': return 'c'.repeat(8000);
    case 'latin1': return 'caf\u00e9-\u00ff';
    case 'both': return `${t.customerId}, ${t.externalId}`;
  }
}

function fakeOf(name: Fake): FakeProvider {
  return name === 'openai' ? openaiFake : name === 'anthropic' ? anthropicFake : geminiFake;
}

function describeCall(c: Call): string {
  return JSON.stringify({ ...c, endpoint: c.endpoint.name }, (_k, v: unknown) => (typeof v === 'string' && v.length > 200 ? `${v.slice(0, 200)}…(${v.length})` : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));
}

interface Observed {
  status: number;
  text: string;
  requestId: string | null;
  reachedProvider: boolean;
  newUsageEvents: number;
  held: string;
  log: { status: number; outcome: string; usageEventId: string | null } | null;
}

/** The customer's USD wallet's held amount, and any hold still pending in another currency. */
async function heldOf(t: Tenant): Promise<string> {
  const data = await gql(`query($c: ID!) { wallet(customerId: $c) { held { amount } } }`, { c: t.customerId }, t.secret);
  const pending = await server.services.prisma.hold.count({ where: { customerId: t.customerId, status: 'PENDING' } });
  return pending > 0 ? `${data.wallet.held.amount as string} (${pending} hold(s) pending)` : (data.wallet.held.amount as string);
}

/** A request body stream of a few pieces, so fetch sends it chunked. */
function inPieces(bytes: Uint8Array): ReadableStream<Uint8Array> {
  const size = Math.max(1, Math.ceil(bytes.length / 3));
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) controller.close();
      else controller.enqueue(bytes.subarray(at, (at += size)));
    },
  });
}

async function send(c: Call): Promise<Observed> {
  const t = c.reserve ? reserving : plain;
  const fake = fakeOf(c.endpoint.fake);
  const target = `${hostVariant(fake.url, c.host)}${pathVariant(c.endpoint.path, c.path)}`;
  const params = `${c.endpoint.params ?? ''}${c.query}`;
  const url = c.form === 'query'
    ? `${server.url}/v1/forward?u=${encodeURIComponent(target)}${params}`
    : `${server.url}/v1/forward/${encodeURIComponent(hostVariant(fake.url, c.host))}${pathVariant(c.endpoint.path, c.path)}${params.replace(/^&/, c.endpoint.path.includes('?') ? '&' : '?')}`;
  const headers: Record<string, string> = { authorization: `Bearer ${t.secret}` };
  if (c.contentType !== null) headers['content-type'] = c.contentType;
  if (c.encoding !== 'none') headers['content-encoding'] = c.encoding;
  const customer = customerHeader(t, c.customer);
  if (customer !== undefined) headers['x-tollgate-customer'] = customer;
  if (c.fakeStatus !== null) headers['x-fake-status'] = String(c.fakeStatus);
  if (c.currency !== null) headers['x-tollgate-currency'] = c.currency;
  const bytes = new Uint8Array(encode(bodyBytes(c.endpoint, c.body), c.encoding));

  const eventsBefore = await server.services.prisma.usageEvent.count({ where: { merchantId: t.merchantId } });
  const seenBefore = fake.requests.length;
  const response = await fetch(url, c.chunked ? { method: 'POST', headers, body: inPieces(bytes), duplex: 'half' } as RequestInit : { method: 'POST', headers, body: bytes });
  const text = await response.text(); // throws if the gateway cut the connection
  await server.services.gateway.drain();
  const requestId = response.headers.get('x-tollgate-request-id');
  let log: Observed['log'] = null;
  if (requestId) {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const row = await server.services.prisma.gatewayRequest.findFirst({ where: { id: requestId } });
      if (row) {
        log = { status: row.status, outcome: row.outcome, usageEventId: row.usageEventId };
        break;
      }
      if (Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
      await server.services.gateway.drain();
    }
  }
  const eventsAfter = await server.services.prisma.usageEvent.count({ where: { merchantId: t.merchantId } });
  return {
    status: response.status,
    text,
    requestId,
    reachedProvider: fake.requests.length > seenBefore,
    newUsageEvents: eventsAfter - eventsBefore,
    held: await heldOf(t),
    log,
  };
}

/** Every property of one call; returns the list of what went wrong (empty when nothing did). */
function violations(c: Call, o: Observed): string[] {
  const problems: string[] = [];
  // The fake answers x-fake-status with an error of its own (Anthropic's 429 is its recorded 529):
  // a 5xx it sent is relayed, not the gateway's, and carries none of the gateway's error codes.
  const gatewayShaped = /"code":"(INTERNAL|UPSTREAM_UNREACHABLE|UPSTREAM_TIMEOUT)"/.test(o.text);
  const relayedServerError = o.reachedProvider && c.fakeStatus !== null && c.fakeStatus >= 400 && !gatewayShaped;
  if (o.status >= 500 && !relayedServerError) problems.push(`gateway answered ${o.status} of its own: ${o.text.slice(0, 300)}`);
  if (o.status >= 400 && o.status < 500) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(o.text);
    } catch {
      parsed = undefined;
    }
    if (!isRecord(parsed) || !('error' in parsed)) problems.push(`${o.status} without a JSON error body: ${o.text.slice(0, 200)}`);
  }
  if (o.held !== '0.00') problems.push(`credit still held after the call settled: ${o.held}`);
  const success = o.status >= 200 && o.status < 300;
  if (!success && o.newUsageEvents > 0) problems.push(`answered ${o.status} yet charged (${o.newUsageEvents} usage event(s))`);
  if (o.newUsageEvents > 1) problems.push(`one call charged ${o.newUsageEvents} times`);
  if (o.log && !success && o.log.usageEventId !== null) problems.push(`log of a ${o.log.status} call names usage event ${o.log.usageEventId}`);
  if (!o.requestId) problems.push('no x-tollgate-request-id on the response');
  else if (!o.log) problems.push(`call ${o.requestId} never logged`);
  if (unhandled.length > 0) problems.push(`unhandled rejection(s): ${unhandled.map(String).join('; ')}`);
  return problems;
}

/** What the calls came to, so a run shows it reached the provider and was charged, not only refused. */
const outcomes = new Map<string, number>();
const tally = (key: string) => outcomes.set(key, (outcomes.get(key) ?? 0) + 1);

async function check(c: Call): Promise<void> {
  let observed: Observed;
  try {
    observed = await send(c);
  } catch (error) {
    throw new Error(`call failed on the caller's side (${(error as Error).message}${(error as { cause?: Error }).cause ? `: ${(error as { cause: Error }).cause.message}` : ''}) for ${describeCall(c)}`, { cause: error });
  }
  tally(`${observed.status}${observed.reachedProvider ? ' via provider' : ''}${observed.newUsageEvents > 0 ? ' charged' : ''}`);
  const problems = violations(c, observed);
  if (problems.length > 0) throw new Error(`${problems.join('\n')}\nfor ${describeCall(c)}`);
}

// ------------------------------------------------------------------ the hold, read from the request

/** Priced models, as the fixtures name them, decorated the ways a caller might. */
const PRICED = { openai: 'gpt-5.4-mini', anthropic: 'claude-opus-4-8', gemini: 'gemini-3.8-flash' } as const;
const MODEL_DECORATIONS = [
  (m: string) => m, (m: string) => `${m}\u0000`, (m: string) => `${m}\u0000x`, (m: string) => ` ${m} `, (m: string) => m.toUpperCase(), (m: string) => `${m}-2026-01-01`,
  (m: string) => `openai/${m}`, (m: string) => `${m}\ud800`, (m: string) => `${m}\u202e`, (m: string) => `${m}\n`, (m: string) => `${m}é`, (m: string) => `${m}${'x'.repeat(5000)}`,
  (m: string) => `${m}%00`, (m: string) => `${m}\\`, (m: string) => `${m}'; --`,
];
/** Model names put into Gemini's path, already percent-encoded as a caller would write them. */
const PATH_MODELS = ['gemini-3.8-flash', 'gemini-3.8-flash%00', 'gemini-3.8-flash%C3%A9', 'gemini-3.8-flash%FF', 'gemini-3.8-flash%2F..', 'gemini-3.8-flash%25', 'GEMINI-3.8-FLASH', '%20gemini-3.8-flash', 'gemini-3.8-flash%0A', 'gemini-3.8-flash%E2%80%AE', 'x'.repeat(3000)] as const;
const CAPS = fc.constantFrom<unknown>(1, 100, 4096, 128_000, 1_000_000, 2 ** 31, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, 1e308, -1, 0, 1.5, '100', '999999999999', '1e6', null, true, [], {});

interface HoldCall {
  endpoint: Endpoint;
  model: number;
  pathModel: (typeof PATH_MODELS)[number];
  caps: Partial<Record<'max_tokens' | 'max_completion_tokens' | 'max_output_tokens' | 'maxTokens' | 'n' | 'maxOutputTokens' | 'candidateCount', unknown>>;
}

const TEXT_ENDPOINTS = ENDPOINTS.filter((e) => ['chat', 'chat-stream', 'responses', 'responses-stream', 'messages', 'messages-stream', 'gemini', 'gemini-stream'].includes(e.name));

const holdCall: fc.Arbitrary<HoldCall> = fc.record({
  endpoint: fc.constantFrom(...TEXT_ENDPOINTS),
  model: fc.nat({ max: MODEL_DECORATIONS.length - 1 }),
  pathModel: fc.constantFrom(...PATH_MODELS),
  caps: fc.record(
    { max_tokens: CAPS, max_completion_tokens: CAPS, max_output_tokens: CAPS, maxTokens: CAPS, n: CAPS, maxOutputTokens: CAPS, candidateCount: CAPS },
    { requiredKeys: [] },
  ),
});

function holdBody(c: HoldCall): Buffer {
  const body = structuredClone(c.endpoint.body);
  const named = PRICED[c.endpoint.fake];
  body.model = MODEL_DECORATIONS[c.model]!(named);
  const { maxOutputTokens, candidateCount, ...top } = c.caps;
  Object.assign(body, top);
  if (maxOutputTokens !== undefined || candidateCount !== undefined) {
    body.generationConfig = { ...(isRecord(body.generationConfig) ? body.generationConfig : {}), ...(maxOutputTokens !== undefined ? { maxOutputTokens } : {}), ...(candidateCount !== undefined ? { candidateCount } : {}) };
  }
  return Buffer.from(JSON.stringify(body));
}

async function checkHold(c: HoldCall): Promise<void> {
  const t = reserving;
  const fake = fakeOf(c.endpoint.fake);
  const path = c.endpoint.fake === 'gemini' ? c.endpoint.path.replace('gemini-3.8-flash', c.pathModel) : c.endpoint.path;
  const url = `${server.url}/v1/forward?u=${encodeURIComponent(`${fake.url}${path}`)}${c.endpoint.params ?? ''}`;
  const eventsBefore = await server.services.prisma.usageEvent.count({ where: { merchantId: t.merchantId } });
  const seenBefore = fake.requests.length;
  const describe = () => JSON.stringify({ ...c, endpoint: c.endpoint.name, model: MODEL_DECORATIONS[c.model]!(PRICED[c.endpoint.fake]).slice(0, 80) });
  let observed: Observed;
  try {
    const response = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId, 'content-type': 'application/json' }, body: new Uint8Array(holdBody(c)) });
    const text = await response.text();
    await server.services.gateway.drain();
    const requestId = response.headers.get('x-tollgate-request-id');
    const row = requestId ? await server.services.prisma.gatewayRequest.findFirst({ where: { id: requestId } }) : null;
    observed = {
      status: response.status, text, requestId, reachedProvider: fake.requests.length > seenBefore,
      newUsageEvents: (await server.services.prisma.usageEvent.count({ where: { merchantId: t.merchantId } })) - eventsBefore,
      held: await heldOf(t), log: row && { status: row.status, outcome: row.outcome, usageEventId: row.usageEventId },
    };
  } catch (error) {
    throw new Error(`call failed on the caller's side (${(error as Error).message}) for ${describe()}`, { cause: error });
  }
  tally(`hold ${observed.status}${observed.newUsageEvents > 0 ? ' charged' : ''}`);
  const problems = violations({ fakeStatus: null } as Call, observed);
  if (problems.length > 0) throw new Error(`${problems.join('\n')}\nfor ${describe()}`);
}

// ------------------------------------------------------------------ calls in flight together

/**
 * A few calls of one customer at once (half of them reserving): each is checked by its own log
 * row (its status, the usage event it names), and the wallet once they have all settled.
 */
async function checkTogether(calls: Call[]): Promise<void> {
  const reserve = calls[0]!.reserve;
  const t = reserve ? reserving : plain;
  const together = calls.map((c) => ({ ...c, reserve, chunked: false }));
  const eventsBefore = await server.services.prisma.usageEvent.count({ where: { merchantId: t.merchantId } });
  let answers: { status: number; text: string; requestId: string | null }[];
  try {
    answers = await Promise.all(together.map(async (c) => {
      const fake = fakeOf(c.endpoint.fake);
      const url = `${server.url}/v1/forward?u=${encodeURIComponent(`${hostVariant(fake.url, c.host)}${pathVariant(c.endpoint.path, c.path)}`)}${c.endpoint.params ?? ''}${c.query}`;
      const headers: Record<string, string> = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId };
      if (c.contentType !== null) headers['content-type'] = c.contentType;
      if (c.fakeStatus !== null) headers['x-fake-status'] = String(c.fakeStatus);
      const response = await fetch(url, { method: 'POST', headers, body: new Uint8Array(bodyBytes(c.endpoint, c.body)) });
      return { status: response.status, text: await response.text(), requestId: response.headers.get('x-tollgate-request-id') };
    }));
  } catch (error) {
    throw new Error(`a call failed on the caller's side (${(error as Error).message}) for ${together.map(describeCall).join('\n')}`, { cause: error });
  }
  await server.services.gateway.drain();
  const held = await heldOf(t);
  const problems: string[] = [];
  let linked = 0;
  for (const [i, answer] of answers.entries()) {
    const row = answer.requestId ? await server.services.prisma.gatewayRequest.findFirst({ where: { id: answer.requestId } }) : null;
    if (row?.usageEventId) linked++;
    const observed: Observed = {
      ...answer, reachedProvider: row?.outcome === 'COMPLETED' || row?.outcome === 'UPSTREAM_ERROR', newUsageEvents: row?.usageEventId ? 1 : 0, held,
      log: row && { status: row.status, outcome: row.outcome, usageEventId: row.usageEventId },
    };
    tally(`together ${answer.status}${row?.usageEventId ? ' charged' : ''}`);
    problems.push(...violations(together[i]!, observed).map((problem) => `call ${i}: ${problem}`));
  }
  const events = (await server.services.prisma.usageEvent.count({ where: { merchantId: t.merchantId } })) - eventsBefore;
  if (events !== linked) problems.push(`${events} usage event(s) recorded for ${linked} call(s) logged as charged`);
  if (problems.length > 0) throw new Error(`${[...new Set(problems)].join('\n')}\nfor ${together.map(describeCall).join('\n')}`);
}

// ------------------------------------------------------------------ properties

/**
 * Modest by default, so the file runs in well under 90 s on PGlite; each property also stops at
 * its time limit. Longer hunts: FUZZ_RUNS=2500 FUZZ_HOLD_RUNS=600 FUZZ_TOGETHER_RUNS=400
 * FUZZ_TIME_LIMIT_MS=300000 (and FUZZ_STATS=1 to print what the calls came to).
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 250);
const HOLD_RUNS = Number(process.env.FUZZ_HOLD_RUNS ?? 100);
const TOGETHER_RUNS = Number(process.env.FUZZ_TOGETHER_RUNS ?? 40);
const timeLimit = (ms: number) => Number(process.env.FUZZ_TIME_LIMIT_MS ?? ms);

describe('gateway fuzz: what a caller controls', () => {
  it('never a 5xx of its own, never a cut connection, never credit left held, never a charge for an error answer', async () => {
    await fc.assert(fc.asyncProperty(call, check), { numRuns: RUNS, endOnFailure: false, interruptAfterTimeLimit: timeLimit(40_000) });
  }, timeLimit(40_000) + 60_000);

  it('reserving the maximum cost: odd models and output caps in the request never fail the call or leave credit held', async () => {
    await fc.assert(fc.asyncProperty(holdCall, checkHold), { numRuns: HOLD_RUNS, endOnFailure: false, interruptAfterTimeLimit: timeLimit(15_000) });
  }, timeLimit(15_000) + 60_000);

  it('calls in flight together: each is answered, settled and charged on its own, and nothing stays held', async () => {
    await fc.assert(fc.asyncProperty(fc.array(call, { minLength: 2, maxLength: 5 }), checkTogether), { numRuns: TOGETHER_RUNS, endOnFailure: false, interruptAfterTimeLimit: timeLimit(10_000) });
  }, timeLimit(10_000) + 60_000);

  it('the ledger integrity check finds no violation after all those calls', async () => {
    await server.services.gateway.drain();
    for (const t of [plain, reserving]) {
      expect((await server.services.ledgerQueries.integrity(t.merchantId)).violations).toEqual([]);
      expect(await heldOf(t)).toBe('0.00');
    }
    expect(unhandled).toEqual([]);
    if (process.env.FUZZ_STATS) console.log(Object.fromEntries([...outcomes].sort()));
    // The generators are tuned so that many calls get through and are charged: a fuzz that only
    // met refusals would prove little.
    const total = [...outcomes.values()].reduce((a, b) => a + b, 0);
    const charged = [...outcomes].filter(([key]) => key.endsWith('charged')).reduce((a, [, n]) => a + n, 0);
    if (total >= 50) {
      expect(charged).toBeGreaterThan(total / 10);
      // And the reserving merchant's calls were really held, so "nothing left held" means something.
      expect(await server.services.prisma.hold.count({ where: { customerId: reserving.customerId } })).toBeGreaterThan(0);
    }
  });
});
