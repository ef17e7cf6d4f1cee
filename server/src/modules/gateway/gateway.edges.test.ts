/**
 * Edges of the gateway found by adversarial review: a request body refused part-way (413) must
 * not leave its connection waiting behind bytes nobody reads, and fields the gateway decides on
 * (a Responses "background", a chat "stream") count however the JSON spells their keys.
 */
import { Agent } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callGateway, gatewayTenant, recordingProvider, type GatewayTenant, type RecordedRequest, type RecordingProvider } from '../../../test/gateway-harness.ts';
import type { LocalServer } from '../../../test/local-server.ts';
import { gatewayCallsSettled, graphqlData, startTestServer, type TestServer } from '../../../test/server.ts';

/** The gateway's request size limit here: small, so that a body over it is quick to send. */
const MAX_REQUEST_BYTES = 64 * 1024;

let server: TestServer;
let provider: RecordingProvider;
let upstream: LocalServer;
let seen: RecordedRequest[];

beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true', TOLLGATE_GATEWAY_TIMEOUT_MS: '1500', TOLLGATE_GATEWAY_MAX_REQUEST_SIZE: `${MAX_REQUEST_BYTES}` });
  provider = await recordingProvider();
  ({ server: upstream, seen } = provider);
});

afterAll(async () => {
  await Promise.all([server?.close(), upstream?.close()]);
});

type Tenant = GatewayTenant;

/** A merchant with the local provider allowed as OpenAI and an OpenAI key stored, and a customer holding `credit`. */
const tenant = (credit = '10') => gatewayTenant(server, upstream.host, { credit });

const call = (t: Tenant, target: string, init: Parameters<typeof callGateway>[3] = {}) => callGateway(server, t, target, init);

/** `promise`'s value, or 'timed out' when it takes longer than `ms`. */
const within = <T>(ms: number, promise: Promise<T>): Promise<T | 'timed out'> =>
  Promise.race([promise, new Promise<'timed out'>((resolve) => setTimeout(() => resolve('timed out'), ms).unref())]);

describe('a request body over TOLLGATE_GATEWAY_MAX_REQUEST_SIZE', () => {
  it('sent chunked, is answered 413 as JSON and its connection closed: the caller\'s next call on a kept-alive connection is answered', async () => {
    const t = await tenant();
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"object":"list","data":[]}');
    };
    seen.length = 0;
    // One connection, kept alive: what an SDK's HTTP client does.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const tooLarge = await call(t, `http://${upstream.host}/v1/chat/completions`, {
        agent, headers: { 'content-type': 'application/json' }, body: Array.from({ length: 8 }, () => Buffer.alloc(MAX_REQUEST_BYTES / 4, 'a')),
      });
      expect(tooLarge.status).toBe(413);
      expect(JSON.parse(tooLarge.body)).toMatchObject({ error: { code: 'VALIDATION' } });
      const next = await within(5_000, call(t, `http://${upstream.host}/v1/models`, { agent, method: 'GET' }));
      expect(next === 'timed out' ? next : next.status).toBe(200);
      expect(tooLarge.headers.connection).toBe('close');
      expect(seen.map((request) => request.url)).toEqual(['/v1/models']);
    } finally {
      agent.destroy();
    }
  });

  it('declared in its content-length, is answered 413 at once and its connection closed, the rest of it never waited for', async () => {
    const t = await tenant();
    seen.length = 0;
    const [host, port] = new URL(server.url).host.split(':');
    const socket = connect(Number(port), host!);
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    // Declares 100 MB, sends the headers and a first kilobyte: no caller should have to send the rest to be told no.
    socket.write(
      `POST /v1/forward?u=${encodeURIComponent(`http://${upstream.host}/v1/chat/completions`)} HTTP/1.1\r\nhost: ${new URL(server.url).host}\r\n` +
        `authorization: Bearer ${t.secret}\r\nx-tollgate-customer: ${t.customerId}\r\ncontent-type: application/json\r\ncontent-length: ${100 * 1024 * 1024}\r\n\r\n`,
    );
    socket.write(Buffer.alloc(1024, 'a'));
    try {
      expect(await within(5_000, closed)).toBeUndefined();
    } finally {
      socket.destroy();
    }
    const answer = Buffer.concat(received).toString('utf8');
    expect(answer).toMatch(/^HTTP\/1\.1 413 /);
    expect(answer).toMatch(/\r\nconnection: close\r\n/i);
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: { code: 'VALIDATION' } });
    expect(seen).toEqual([]);
  });
});

/** A JSON key written with a \u escape for one of its letters: any JSON parser (a provider's) reads it as the plain key. */
const escapedKey = (key: string) => `${key.slice(0, -1)}\\u${key.charCodeAt(key.length - 1).toString(16).padStart(4, '0')}`;

describe('a request body that names a field with a \\u escape in its key', () => {
  it('an OpenAI Responses create with "background": true so written is refused as the plain one is; the provider is not called', async () => {
    const t = await tenant();
    seen.length = 0;
    const body = `{"model":"gpt-4o-mini","input":"hi","${escapedKey('background')}":true}`;
    expect(JSON.parse(body)).toMatchObject({ background: true });
    const response = await call(t, `http://${upstream.host}/v1/responses`, { headers: { 'content-type': 'application/json' }, body });
    expect(response.status).toBe(400);
    expect(JSON.parse(response.body)).toMatchObject({ error: { code: 'BACKGROUND_NOT_METERED' } });
    expect(seen).toEqual([]);
  });

  it('a streamed chat completion with "stream": true so written is sent asking for its usage, as the plain one is', async () => {
    const t = await tenant();
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end('data: [DONE]\n\n');
    };
    seen.length = 0;
    const body = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"${escapedKey('stream')}":true}`;
    expect(JSON.parse(body)).toMatchObject({ stream: true });
    expect((await call(t, `http://${upstream.host}/v1/chat/completions`, { headers: { 'content-type': 'application/json' }, body })).status).toBe(200);
    expect(seen).toHaveLength(1);
    expect(JSON.parse(seen[0]!.body.toString('utf8'))).toMatchObject({ stream: true, stream_options: { include_usage: true } });
  });
});

/** `{"a":{"a":…}}` nested `depth` deep: JSON.parse reads it, JSON.stringify overflows the stack writing it again. */
const deeplyNested = (depth: number) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;

describe('a request body nested deeper than JSON.stringify can write', () => {
  it('in the stream_options of a streamed chat completion is forwarded as it came, not answered 500 by the gateway', async () => {
    const t = await tenant();
    provider.handler = (_req, _body, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end('{"error":{"message":"Unrecognized request argument supplied: stream_options.a","type":"invalid_request_error"}}');
    };
    seen.length = 0;
    const body = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":${deeplyNested(8_000)}}`;
    const response = await call(t, `http://${upstream.host}/v1/chat/completions`, { headers: { 'content-type': 'application/json' }, body });
    // The provider's own answer to what it was sent, relayed; the gateway did not fail on its side.
    expect(response.status).toBe(400);
    expect(seen.map((request) => request.body.toString('utf8'))).toEqual([body]);
  });
});

describe('a call refused because its customer is blocked or archived', () => {
  it('is logged under that customer, so gatewayRequests(customerId) lists it', async () => {
    const t = await tenant();
    seen.length = 0;
    const chat = () => call(t, `http://${upstream.host}/v1/chat/completions`, { headers: { 'content-type': 'application/json' }, body: '{"model":"gpt-4o-mini","messages":[]}' });
    await graphqlData(server, `mutation($c: ID!) { blockCustomer(id: $c, reason: "chargeback") { blocked } }`, { c: t.customerId }, t.secret);
    expect((await chat()).status).toBe(403);
    await graphqlData(server, `mutation($c: ID!) { unblockCustomer(id: $c) { blocked } }`, { c: t.customerId }, t.secret);
    await graphqlData(server, `mutation($c: ID!) { archiveCustomer(id: $c) { archived } }`, { c: t.customerId }, t.secret);
    expect((await chat()).status).toBe(403);
    expect(seen).toEqual([]);
    await gatewayCallsSettled(server, t.merchantId, 2);
    const data = await graphqlData(server, `query($c: ID!) { gatewayRequests(customerId: $c, first: 10) { edges { node { customerId outcome errorCode } } } }`, { c: t.customerId }, t.secret);
    expect(data.gatewayRequests.edges.map((edge: { node: unknown }) => edge.node)).toEqual([
      { customerId: t.customerId, outcome: 'REFUSED', errorCode: 'CUSTOMER_ARCHIVED' },
      { customerId: t.customerId, outcome: 'REFUSED', errorCode: 'CUSTOMER_BLOCKED' },
    ]);
  });
});

describe('a TRACE request', () => {
  it('is refused 405 before any provider is called: a server that echoes it would hand back the provider key the gateway injects', async () => {
    const merchant = await server.createMerchant();
    // A merchant's own server, whose stored key the gateway sends on every method it forwards.
    await graphqlData(server, `mutation($host: String!) { putGatewayHost(host: $host, provider: "openai-compatible") { id } }`, { host: upstream.host }, merchant.secret);
    await graphqlData(server, `mutation { setProviderCredential(provider: "openai-compatible", apiKey: "sk-self-hosted-secret-0001") { id } }`, {}, merchant.secret);
    const created = await graphqlData(server, `mutation { createCustomer(input: { externalId: "trace" }) { id } }`, {}, merchant.secret);
    const t = { merchantId: merchant.id, secret: merchant.secret, customerId: created.createCustomer.id as string, externalId: 'trace' };
    await graphqlData(server, `mutation($c: ID!) { grantCredits(input: { customerId: $c, amount: "1", kind: PAID, idempotencyKey: "seed" }) { __typename } }`, { c: t.customerId }, t.secret);
    // What TRACE means (RFC 9110 §9.3.8): the request received, sent back as the body.
    provider.handler = (req, _body, res) => {
      res.writeHead(200, { 'content-type': 'message/http' });
      res.end(`${req.method} ${req.url} HTTP/1.1\r\n${Object.entries(req.headers).map(([name, value]) => `${name}: ${String(value)}`).join('\r\n')}\r\n\r\n`);
    };
    seen.length = 0;
    expect((await call(t, `http://${upstream.host}/v1/chat/completions`, { method: 'GET' })).status).toBe(200); // the host is reachable
    const response = await call(t, `http://${upstream.host}/v1/chat/completions`, { method: 'TRACE' });
    expect(response.body).not.toContain('sk-self-hosted-secret-0001');
    expect(response.status).toBe(405);
    expect(JSON.parse(response.body)).toMatchObject({ error: { code: 'VALIDATION', method: 'TRACE' } });
    expect(seen.map((request) => request.method)).toEqual(['GET']);
  });
});
