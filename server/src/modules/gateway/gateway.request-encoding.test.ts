/**
 * A caller that compresses its request body (Content-Encoding: gzip, deflate, br): the gateway
 * decodes it before deciding anything from it, so the call is reserved, refused or charged
 * exactly as the same request sent plain, and the provider gets the plain body it was metered on.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scriptedGateway, type Tenant } from '../../../test/scripted-gateway.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';

/** The gateway's request size limit here: small, so that a compression bomb is quick to build. */
const MAX_REQUEST_BYTES = 256 * 1024;

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true', TOLLGATE_GATEWAY_MAX_REQUEST_SIZE: `${MAX_REQUEST_BYTES}` });
});
afterAll(async () => {
  await server?.close();
});

const { gql, tenant, provider, charges } = scriptedGateway(() => server);

interface Received {
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A provider that records what it was sent and answers `answer`. */
async function recordingProvider(t: Tenant, answer: { type: string; body: Buffer | string }) {
  const received: Received[] = [];
  const scripted = await provider(t, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(200, { 'content-type': answer.type });
      res.end(answer.body);
    });
  });
  return { ...scripted, received };
}

/** POSTs raw bytes through the gateway with the given Content-Encoding (none when undefined). */
function send(t: Tenant, target: string, body: Buffer, contentEncoding?: string): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(`${server.url}/v1/forward?u=${encodeURIComponent(target)}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json', authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.customerId,
        ...(contentEncoding ? { 'content-encoding': contentEncoding } : {}),
      },
    });
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown = null;
        try {
          json = JSON.parse(text);
        } catch {
          // not JSON (audio): the status is what the test reads
        }
        resolve({ status: response.statusCode!, json });
      });
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(body);
  });
}

const CHAT_ANSWER = {
  type: 'application/json',
  body: JSON.stringify({
    id: 'chatcmpl-1', object: 'chat.completion', model: 'gpt-5.4-mini',
    choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 },
  }),
};

const CODINGS: [string, (body: Buffer) => Buffer][] = [
  ['gzip', gzipSync],
  ['x-gzip', gzipSync],
  ['deflate', deflateSync],
  ['br', brotliCompressSync],
  ['gzip, br', (body) => brotliCompressSync(gzipSync(body))],
];

/** Takes `amount` USD off the credit of the tenant's customer (it starts with 10). */
async function takeCredit(t: Tenant, amount: string) {
  await gql(
    `mutation($c: ID!, $a: Decimal!) { adjustBalance(input: { customerId: $c, amount: $a, reason: "test", idempotencyKey: "take" }) { __typename } }`,
    { c: t.customerId, a: `-${amount}` },
    t.secret,
  );
}

describe('a compressed request body', () => {
  it.each(CODINGS)('in %s is reserved for as the plain request is: 402 when the credit does not cover its maximum, the provider not called', async (coding, encode) => {
    const t = await tenant();
    await gql(`mutation { updateGatewaySettings(reserveMaxCost: true) { gatewayReserveMaxCost } }`, {}, t.secret);
    await takeCredit(t, '9.9999');
    const openai = await recordingProvider(t, CHAT_ANSWER);
    try {
      const request = Buffer.from(JSON.stringify({ model: 'gpt-5.4-mini', max_tokens: 100_000, messages: [{ role: 'user', content: 'hello' }] }));
      const plain = await send(t, `${openai.url}/v1/chat/completions`, request);
      const compressed = await send(t, `${openai.url}/v1/chat/completions`, encode(request), coding);
      expect(plain).toMatchObject({ status: 402, json: { error: { code: 'INSUFFICIENT_FUNDS' } } });
      expect(compressed).toEqual(plain);
      expect(openai.received).toEqual([]);
    } finally {
      await openai.close();
    }
  });

  it.each(CODINGS)('in %s reaches the provider decoded, without its Content-Encoding, and is charged as the plain one', async (coding, encode) => {
    const t = await tenant();
    const openai = await recordingProvider(t, CHAT_ANSWER);
    try {
      const request = Buffer.from(JSON.stringify({ model: 'gpt-5.4-mini', messages: [{ role: 'user', content: 'hello' }] }));
      expect((await send(t, `${openai.url}/v1/chat/completions`, request)).status).toBe(200);
      expect((await send(t, `${openai.url}/v1/chat/completions`, encode(request), coding)).status).toBe(200);
      const [plain, decoded] = openai.received;
      expect(decoded!.body.equals(request)).toBe(true);
      expect(decoded!.headers['content-encoding']).toBeUndefined();
      expect(decoded!.headers['content-length']).toBe(String(request.length));
      expect(plain!.body.equals(request)).toBe(true);
      const [first, second] = await charges(t, 2);
      expect(first!.charge).toBeGreaterThan(0n);
      expect(second).toEqual(first);
    } finally {
      await openai.close();
    }
  });

  it('of a speech call is billed by its text as the plain one is', async () => {
    const t = await tenant();
    const openai = await recordingProvider(t, { type: 'audio/mpeg', body: Buffer.alloc(2048, 1) });
    try {
      const request = Buffer.from(JSON.stringify({ model: 'tts-1', voice: 'alloy', input: 'A sentence the customer pays for, character by character.' }));
      expect((await send(t, `${openai.url}/v1/audio/speech`, request)).status).toBe(200);
      expect((await send(t, `${openai.url}/v1/audio/speech`, gzipSync(request), 'gzip')).status).toBe(200);
      const [plain, compressed] = await charges(t, 2);
      expect(plain).toMatchObject({ status: 'CHARGED' });
      expect(plain!.charge).toBeGreaterThan(0n);
      expect(compressed).toEqual(plain);
    } finally {
      await openai.close();
    }
  });

  it('of an OpenAI Responses call with "background": true is refused as the plain one is', async () => {
    const t = await tenant();
    const openai = await recordingProvider(t, CHAT_ANSWER);
    try {
      const request = Buffer.from(JSON.stringify({ model: 'gpt-5.4-mini', input: 'hello', background: true }));
      const compressed = await send(t, `${openai.url}/v1/responses`, gzipSync(request), 'gzip');
      expect(compressed).toMatchObject({ status: 400, json: { error: { code: 'BACKGROUND_NOT_METERED' } } });
      expect(openai.received).toEqual([]);
    } finally {
      await openai.close();
    }
  });

  it('in a coding the gateway cannot read is refused with 415, naming the codings it reads; the provider not called', async () => {
    const t = await tenant();
    const openai = await recordingProvider(t, CHAT_ANSWER);
    try {
      const request = Buffer.from(JSON.stringify({ model: 'gpt-5.4-mini', messages: [] }));
      for (const coding of ['zstd', 'gzip, compress']) {
        const refused = await send(t, `${openai.url}/v1/chat/completions`, request, coding);
        expect(refused.status).toBe(415);
        expect(refused.json.error).toMatchObject({ code: 'VALIDATION', reason: 'UNSUPPORTED_ENCODING', supported: ['gzip', 'x-gzip', 'deflate', 'br'] });
        expect(refused.json.error.message).toContain(coding.includes('compress') ? '"compress"' : '"zstd"');
      }
      expect(openai.received).toEqual([]);
      expect(await charges(t, 2)).toEqual([]);
    } finally {
      await openai.close();
    }
  });

  it('that is not what its Content-Encoding says is refused with 400; one that inflates past the size limit with 413', async () => {
    const t = await tenant();
    const openai = await recordingProvider(t, CHAT_ANSWER);
    try {
      const request = Buffer.from(JSON.stringify({ model: 'gpt-5.4-mini', messages: [] }));
      const corrupt = await send(t, `${openai.url}/v1/chat/completions`, request, 'gzip');
      expect(corrupt).toMatchObject({ status: 400, json: { error: { code: 'VALIDATION', contentEncoding: 'gzip' } } });
      const truncated = gzipSync(request);
      expect((await send(t, `${openai.url}/v1/chat/completions`, truncated.subarray(0, truncated.length - 8), 'gzip')).status).toBe(400);
      // A few hundred bytes that inflate to more than the gateway takes.
      const bomb = gzipSync(Buffer.concat([Buffer.from('{"model":"gpt-5.4-mini","messages":[],"pad":"'), Buffer.alloc(MAX_REQUEST_BYTES, 'a'), Buffer.from('"}')]));
      expect(bomb.length).toBeLessThan(2048);
      const tooLarge = await send(t, `${openai.url}/v1/chat/completions`, bomb, 'gzip');
      expect(tooLarge).toMatchObject({ status: 413, json: { error: { code: 'VALIDATION' } } });
      expect(openai.received).toEqual([]);
    } finally {
      await openai.close();
    }
  });

  it('an identity coding, or a coding named on an empty body, is sent on as it came', async () => {
    const t = await tenant();
    const openai = await recordingProvider(t, CHAT_ANSWER);
    try {
      const request = Buffer.from(JSON.stringify({ model: 'gpt-5.4-mini', messages: [] }));
      expect((await send(t, `${openai.url}/v1/chat/completions`, request, 'identity')).status).toBe(200);
      expect(openai.received[0]!.body.equals(request)).toBe(true);
      expect(openai.received[0]!.headers['content-encoding']).toBe('identity');
      expect((await send(t, `${openai.url}/v1/chat/completions`, Buffer.alloc(0), 'gzip')).status).toBe(200);
      expect(openai.received[1]!.body.length).toBe(0);
      expect(openai.received[1]!.headers['content-encoding']).toBe('gzip');
    } finally {
      await openai.close();
    }
  });
});
