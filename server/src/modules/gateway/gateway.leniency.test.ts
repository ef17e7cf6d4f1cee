/**
 * Requests a lenient provider reads that a strict reading would miss: a JSON body behind a UTF-8
 * byte order mark (Python's json.loads of bytes reads past it: FastAPI, vLLM), and `stream` or
 * `background` given as values a lax server coerces ("true", 1). What the gateway checks, holds
 * for and meters must be what the provider acts on. Also: a customer session token naming its own
 * customer in x-tollgate-customer however it can be named, and the request ids a gateway answer
 * carries.
 */
import { createServer } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callGateway, gatewayTenant, recordingProvider, type GatewayAnswer, type GatewayTenant, type RecordedRequest, type RecordingProvider } from '../../../test/gateway-harness.ts';
import { listenLocally, type LocalServer } from '../../../test/local-server.ts';
import { gatewayCallsSettled, graphqlData, startTestServer, type TestServer } from '../../../test/server.ts';
import { parseRequestJson, withoutJsonBom } from './request-body.ts';

let server: TestServer;
let provider: RecordingProvider;
let upstream: LocalServer;
let seen: RecordedRequest[];

beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true', TOLLGATE_GATEWAY_TIMEOUT_MS: '1500' });
  provider = await recordingProvider();
  ({ server: upstream, seen } = provider);
});

afterAll(async () => {
  await Promise.all([server?.close(), upstream?.close()]);
});

type Tenant = GatewayTenant;

/** A merchant with the local provider allowed as OpenAI and an OpenAI key stored, and a customer holding `credit`. */
const tenant = (credit = '10', options: { reserveMaxCost?: boolean } = {}) => gatewayTenant(server, upstream.host, { credit, ...options });

/** A call through the gateway (see callGateway), its body sent as JSON. */
const call = (t: Tenant, target: string, init: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {}): Promise<GatewayAnswer> =>
  callGateway(server, t, target, { ...init, headers: { ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}), ...init.headers } });

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);
const withBom = (json: unknown) => Buffer.concat([BOM, Buffer.from(JSON.stringify(json))]);

const answerChat = () => {
  provider.handler = (_req, _body, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.end('data: [DONE]\n\n');
  };
};

describe('a JSON request body behind a UTF-8 byte order mark', () => {
  it('an OpenAI Responses create with "background": true is refused as without the mark; the provider is not called', async () => {
    const t = await tenant();
    seen.length = 0;
    const response = await call(t, `http://${upstream.host}/v1/responses`, { body: withBom({ model: 'gpt-4o-mini', input: 'hi', background: true }) });
    expect(response.status).toBe(400);
    expect(JSON.parse(response.body)).toMatchObject({ error: { code: 'BACKGROUND_NOT_METERED' } });
    expect(seen).toEqual([]);
  });

  it('a streamed chat completion is sent asking for its usage, and without the mark: the provider gets the bytes that were checked', async () => {
    const t = await tenant();
    answerChat();
    seen.length = 0;
    const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], stream: true };
    expect((await call(t, `http://${upstream.host}/v1/chat/completions`, { body: withBom(body) })).status).toBe(200);
    expect(seen).toHaveLength(1);
    const sent = seen[0]!.body;
    expect(sent.subarray(0, 3).equals(BOM)).toBe(false);
    expect(JSON.parse(sent.toString('utf8'))).toEqual({ ...body, stream_options: { include_usage: true } });
    expect(seen[0]!.headers['content-length']).toBe(String(sent.length));
  });

  it('a chat completion that is not streamed is forwarded without the mark, every other byte as sent', async () => {
    const t = await tenant();
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    };
    seen.length = 0;
    const json = '{"model":"gpt-4o-mini", "seed": 12345678901234567890,"messages":[]}';
    expect((await call(t, `http://${upstream.host}/v1/chat/completions`, { body: Buffer.concat([BOM, Buffer.from(json)]) })).status).toBe(200);
    expect(seen.map((request) => request.body.toString('utf8'))).toEqual([json]);
  });

  it('is held for at its maximum cost: a customer whose credit does not cover it is refused 402, the provider not called', async () => {
    const t = await tenant('0.01', { reserveMaxCost: true });
    answerChat();
    seen.length = 0;
    const body = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 1_000_000 };
    const refused = await call(t, `http://${upstream.host}/v1/chat/completions`, { body: withBom(body) });
    expect(refused.status).toBe(402);
    expect(JSON.parse(refused.body)).toMatchObject({ error: { code: 'INSUFFICIENT_FUNDS' } });
    expect(seen).toEqual([]);
  });

  it('of a speech call is billed by its text, as without the mark', async () => {
    const t = await tenant();
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'audio/mpeg' });
      res.end(Buffer.alloc(1024, 1));
    };
    const input = 'A sentence the customer pays for, character by character.';
    expect((await call(t, `http://${upstream.host}/v1/audio/speech`, { body: withBom({ model: 'tts-1', voice: 'alloy', input }) })).status).toBe(200);
    const [log] = await gatewayCallsSettled(server, t.merchantId, 1);
    const event = await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: log!.usageEventId! } });
    expect(event).toMatchObject({ model: 'tts-1', characters: input.length, status: 'CHARGED' });
  });

  it('only a JSON body loses the mark: a body that merely starts with those bytes is forwarded whole', () => {
    const binary = Buffer.concat([BOM, Buffer.from([0x00, 0x01, 0x02, 0x7b])]);
    expect(withoutJsonBom(binary)).toBe(binary);
    const plain = Buffer.from('{"model":"gpt-4o-mini"}');
    expect(withoutJsonBom(plain)).toBe(plain);
    expect(withoutJsonBom(Buffer.concat([BOM, plain])).equals(plain)).toBe(true);
  });
});

describe('a JSON request body with bare NaN or Infinity values, which Python\'s json module reads', () => {
  it('an OpenAI Responses create with "background": true is refused; the provider is not called', async () => {
    const t = await tenant();
    seen.length = 0;
    const response = await call(t, `http://${upstream.host}/v1/responses`, { body: '{"model":"gpt-4o-mini","input":"hi","temperature":NaN,"background":true}' });
    expect(response.status).toBe(400);
    expect(JSON.parse(response.body)).toMatchObject({ error: { code: 'BACKGROUND_NOT_METERED' } });
    expect(seen).toEqual([]);
  });

  it('a streamed chat completion is sent asking for its usage, the rest of it as it came', async () => {
    const t = await tenant();
    answerChat();
    seen.length = 0;
    const body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"NaN"}],"top_p":-Infinity,"stream":true}';
    expect((await call(t, `http://${upstream.host}/v1/chat/completions`, { body })).status).toBe(200);
    expect(seen.map((request) => request.body.toString('utf8'))).toEqual([body.replace('{', '{"stream_options":{"include_usage":true},')]);
  });

  it('is held for at its maximum cost: a customer whose credit does not cover it is refused 402, the provider not called', async () => {
    const t = await tenant('0.01', { reserveMaxCost: true });
    seen.length = 0;
    const refused = await call(t, `http://${upstream.host}/v1/chat/completions`, { body: '{"model":"gpt-4o-mini","messages":[],"temperature":Infinity,"max_tokens":1000000}' });
    expect(refused.status).toBe(402);
    expect(JSON.parse(refused.body)).toMatchObject({ error: { code: 'INSUFFICIENT_FUNDS' } });
    expect(seen).toEqual([]);
  });

  it('of a speech call is billed by its text', async () => {
    const t = await tenant();
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'audio/mpeg' });
      res.end(Buffer.alloc(1024, 1));
    };
    const input = 'A sentence the customer pays for, character by character.';
    const body = `{"model":"tts-1","voice":"alloy","speed":NaN,"input":${JSON.stringify(input)}}`;
    expect((await call(t, `http://${upstream.host}/v1/audio/speech`, { body })).status).toBe(200);
    const [log] = await gatewayCallsSettled(server, t.merchantId, 1);
    const event = await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: log!.usageEventId! } });
    expect(event).toMatchObject({ model: 'tts-1', characters: input.length, status: 'CHARGED' });
  });

  it('reads them as null, leaving strings that spell them alone; what is not JSON even so is not read', () => {
    expect(parseRequestJson(Buffer.from('{"a":NaN,"b":[Infinity,-Infinity],"c":"NaN \\" Infinity","d":1}'))).toEqual({ a: null, b: [null, null], c: 'NaN " Infinity', d: 1 });
    expect(parseRequestJson(Buffer.from('{"a":NaNa}'))).toBeUndefined();
    expect(parseRequestJson(Buffer.from('{"a":-NaN}'))).toBeUndefined();
    expect(parseRequestJson(Buffer.from('{"a":1,}'))).toBeUndefined();
  });
});

describe('"background" and "stream" given as values a lax server coerces', () => {
  it('an OpenAI Responses create with any "background" but absent, null or false is refused 400 BACKGROUND_NOT_METERED; the provider is not called', async () => {
    const t = await tenant();
    seen.length = 0;
    for (const background of ['true', 1, 'yes', 'false', 0, {}]) {
      const response = await call(t, `http://${upstream.host}/v1/responses`, { body: JSON.stringify({ model: 'gpt-4o-mini', input: 'hi', background }) });
      expect({ background, status: response.status, code: (JSON.parse(response.body) as { error?: { code?: string } }).error?.code }).toEqual({ background, status: 400, code: 'BACKGROUND_NOT_METERED' });
    }
    expect(seen).toEqual([]);
  });

  it('an OpenAI Responses create with "background" false or null goes through', async () => {
    const t = await tenant();
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    };
    seen.length = 0;
    for (const background of [false, null]) {
      expect((await call(t, `http://${upstream.host}/v1/responses`, { body: JSON.stringify({ model: 'gpt-4o-mini', input: 'hi', background }) })).status).toBe(200);
    }
    expect(seen).toHaveLength(2);
  });

  it('a chat completion whose "stream" a lax server reads as true is sent asking for its usage; one it reads as false is sent as it came', async () => {
    const t = await tenant();
    answerChat();
    seen.length = 0;
    const streams = [1, 'true', 'True', 'yes', 'on', '1'];
    const notStreams = [false, 0, 'false', 'no', '0', 'maybe'];
    for (const stream of [...streams, ...notStreams]) {
      const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], stream });
      expect((await call(t, `http://${upstream.host}/v1/chat/completions`, { body })).status).toBe(200);
    }
    const sent = seen.map((request) => JSON.parse(request.body.toString('utf8')) as { stream: unknown; stream_options?: unknown });
    expect(sent.map((body) => [body.stream, body.stream_options ?? null])).toEqual([
      ...streams.map((stream) => [stream, { include_usage: true }]),
      ...notStreams.map((stream) => [stream, null]),
    ]);
  });
});

describe('a customer session token naming a customer in x-tollgate-customer', () => {
  async function session(t: Tenant, customerId = t.customerId): Promise<string> {
    const data = await graphqlData(server, `mutation($c: ID!) { createCustomerSession(customerId: $c) { token } }`, { c: customerId }, t.secret);
    return data.createCustomerSession.token as string;
  }

  it('is let through when it names its own customer by id (in any case) or by externalId, and charges that customer', async () => {
    const t = await tenant();
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"object":"list","data":[]}');
    };
    const token = await session(t);
    seen.length = 0;
    for (const named of [t.customerId, t.customerId.toUpperCase(), t.externalId]) {
      const response = await call(t, `http://${upstream.host}/v1/models`, { method: 'GET', headers: { authorization: `Bearer ${token}`, 'x-tollgate-customer': named } });
      expect({ named, status: response.status }).toEqual({ named, status: 200 });
    }
    expect(seen).toHaveLength(3);
    const logs = await gatewayCallsSettled(server, t.merchantId, 3);
    expect(logs.map((log) => log.customerId)).toEqual([t.customerId, t.customerId, t.customerId]);
  });

  it('is refused 403 FORBIDDEN when it names another customer (by id or externalId) or one that does not exist; the provider is not called', async () => {
    const t = await tenant();
    const other = await graphqlData(server, `mutation { createCustomer(input: { externalId: "someone-else" }) { id } }`, {}, t.secret);
    const otherId = other.createCustomer.id as string;
    const token = await session(t);
    seen.length = 0;
    for (const named of [otherId, otherId.toUpperCase(), 'someone-else', 'nobody-at-all', '00000000-0000-4000-8000-000000000000']) {
      const response = await call(t, `http://${upstream.host}/v1/models`, { method: 'GET', headers: { authorization: `Bearer ${token}`, 'x-tollgate-customer': named } });
      expect({ named, status: response.status, code: (JSON.parse(response.body) as { error: { code: string } }).error.code }).toEqual({ named, status: 403, code: 'FORBIDDEN' });
    }
    expect(seen).toEqual([]);
  });
});

describe('a customer session token in the header a provider SDK sends its API key in', () => {
  it('is read from ElevenLabs\' xi-api-key and Black Forest Labs\' x-key as from the others, and reaches no provider', async () => {
    const t = await tenant();
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"object":"list","data":[]}');
    };
    const data = await graphqlData(server, `mutation($c: ID!) { createCustomerSession(customerId: $c) { token } }`, { c: t.customerId }, t.secret);
    const token = data.createCustomerSession.token as string;
    seen.length = 0;
    // An SDK pointed at the gateway as its base URL, the session token as its API key: nothing else is sent.
    for (const name of ['xi-api-key', 'x-key', 'x-api-key']) {
      const response = await fetch(`${server.url}/v1/forward?u=${encodeURIComponent(`http://${upstream.host}/v1/models`)}`, { headers: { [name]: token } });
      expect({ name, status: response.status }).toEqual({ name, status: 200 });
    }
    expect(seen).toHaveLength(3);
    for (const request of seen) {
      expect(request.headers.authorization).toBe('Bearer sk-provider-secret-0001');
      expect(JSON.stringify(request.headers)).not.toContain(token);
    }
    const logs = await gatewayCallsSettled(server, t.merchantId, 3);
    expect(logs.map((log) => log.customerId)).toEqual([t.customerId, t.customerId, t.customerId]);
  });
});

describe('request ids on gateway answers', () => {
  it('an answer of Tollgate\'s own (a refusal) carries its request id as x-request-id too, the id gatewayRequest(id) finds', async () => {
    const t = await tenant('0');
    seen.length = 0;
    const refused = await call(t, `http://${upstream.host}/v1/chat/completions`, { body: JSON.stringify({ model: 'gpt-4o-mini', messages: [] }) });
    expect(refused.status).toBe(402);
    const requestId = refused.headers['x-tollgate-request-id'];
    expect(typeof requestId).toBe('string');
    expect(refused.headers['x-request-id']).toBe(requestId);
    await gatewayCallsSettled(server, t.merchantId, 1);
    const data = await graphqlData(server, `query($id: ID!) { gatewayRequest(id: $id) { outcome errorCode } }`, { id: requestId }, t.secret);
    expect(data.gatewayRequest).toEqual({ outcome: 'REFUSED', errorCode: 'INSUFFICIENT_FUNDS' });
  });

  it('a provider that cannot be reached is answered 502 with Tollgate\'s request id as x-request-id', async () => {
    const t = await tenant();
    const closed = await listenLocally(createServer());
    const host = closed.host;
    await closed.close();
    await graphqlData(server, `mutation($host: String!) { putGatewayHost(host: $host, provider: "openai") { id } }`, { host }, t.secret);
    const response = await call(t, `http://${host}/v1/chat/completions`, { body: JSON.stringify({ model: 'gpt-4o-mini', messages: [] }) });
    expect(response.status).toBe(502);
    expect(response.headers['x-request-id']).toBe(response.headers['x-tollgate-request-id']);
  });

  it('a provider\'s answer is relayed with its own x-request-id, or none when it sent none; Tollgate\'s is in x-tollgate-request-id', async () => {
    const t = await tenant();
    let providerId: string | null = 'req_provider_1';
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/json', ...(providerId ? { 'x-request-id': providerId } : {}) });
      res.end('{"object":"list","data":[]}');
    };
    const relayed = await call(t, `http://${upstream.host}/v1/models`, { method: 'GET' });
    expect(relayed.headers['x-request-id']).toBe('req_provider_1');
    expect(relayed.headers['x-tollgate-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    providerId = null;
    const bare = await call(t, `http://${upstream.host}/v1/models`, { method: 'GET' });
    expect(bare.status).toBe(200);
    expect(bare.headers['x-request-id']).toBeUndefined();
    expect(bare.headers['x-tollgate-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });
});
