/**
 * JSON request bodies that a lenient server reads and a strict reading would miss, beyond the
 * byte order mark and NaN of gateway.leniency.test.ts: a body sent with no Content-Type at all,
 * and one written in UTF-16 or UTF-32. Python's json.loads of bytes reads both (FastAPI, so vLLM
 * and self-hosted speech servers, parse a body as JSON whatever its Content-Type, and detect
 * those encodings), and Python's requests and httpx send no Content-Type for a body given as
 * text. What the gateway holds for and meters must be what such a provider runs: a speech call is
 * billed by its request's text, and a call whose body the gateway cannot read is not held for.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scriptedGateway, type Tenant } from '../../../test/scripted-gateway.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { meteredRequestBody, utf8JsonOf } from './request-body.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' });
});
afterAll(async () => {
  await server?.close();
});

const { gql, tenant, provider, charges } = scriptedGateway(() => server);

/** POSTs `body` through the gateway with exactly `headers` besides the credentials; answers the status and the JSON body, if any. */
function send(t: Tenant, target: string, body: Buffer, headers: Record<string, string>): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(`${server.url}/v1/forward?u=${encodeURIComponent(target)}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.customerId, ...headers },
    });
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        let json: unknown = null;
        try {
          json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          // audio: the status is what the test reads
        }
        resolve({ status: response.statusCode!, json });
      });
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(body);
  });
}

/** A local speech server (allowed as OpenAI) answering audio, keeping what it was sent. */
async function speechServer(t: Tenant) {
  const received: { headers: IncomingHttpHeaders; body: Buffer }[] = [];
  const scripted = await provider(t, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(200, { 'content-type': 'audio/mpeg' });
      res.end(Buffer.alloc(2048, 1));
    });
  });
  return { ...scripted, received };
}

const SPEECH = JSON.stringify({ model: 'tts-1', voice: 'alloy', input: 'A sentence the customer pays for, character by character: é, 日本, 🎧.' });

/** `text` in UTF-16 or UTF-32, with or without a byte order mark, as Python's str.encode writes it. */
function encoded(text: string, encoding: 'utf-16le' | 'utf-16be' | 'utf-32le' | 'utf-32be', mark: boolean): Buffer {
  const units = encoding.startsWith('utf-16') ? 2 : 4;
  const littleEndian = encoding.endsWith('le');
  const codes = units === 2 ? Array.from({ length: text.length }, (_, i) => text.charCodeAt(i)) : [...text].map((char) => char.codePointAt(0)!);
  const out = Buffer.alloc((codes.length + (mark ? 1 : 0)) * units);
  [...(mark ? [0xfeff] : []), ...codes].forEach((code, i) => {
    if (units === 2) {
      if (littleEndian) out.writeUInt16LE(code, i * 2);
      else out.writeUInt16BE(code, i * 2);
    } else if (littleEndian) out.writeUInt32LE(code, i * 4);
    else out.writeUInt32BE(code, i * 4);
  });
  return out;
}

describe('a JSON request body sent with no Content-Type', () => {
  it('of a speech call is billed by its text, as the same call labelled application/json is', async () => {
    const t = await tenant();
    const tts = await speechServer(t);
    try {
      const request = Buffer.from(SPEECH);
      expect((await send(t, `${tts.url}/v1/audio/speech`, request, { 'content-type': 'application/json' })).status).toBe(200);
      expect((await send(t, `${tts.url}/v1/audio/speech`, request, {})).status).toBe(200);
      // Forwarded as it came: the gateway adds no Content-Type of its own.
      expect(tts.received.map((got) => got.headers['content-type'])).toEqual(['application/json', undefined]);
      const [labelled, unlabelled] = await charges(t, 2);
      expect(labelled).toMatchObject({ status: 'CHARGED' });
      expect(labelled!.charge).toBeGreaterThan(0n);
      expect(unlabelled).toEqual(labelled);
    } finally {
      await tts.close();
    }
  });

  it('is handed to metering only when it is JSON; a body labelled as something else is not', () => {
    const json = Buffer.from('{"model":"tts-1","input":"hi","speed":NaN}');
    expect(meteredRequestBody('', json)).toBe('{"model":"tts-1","input":"hi","speed":null}');
    expect(meteredRequestBody('', Buffer.from([0xff, 0xfb, 0x90, 0x00]))).toBeUndefined();
    expect(meteredRequestBody('application/octet-stream', json)).toBeUndefined();
  });
});

describe('a JSON request body written in UTF-16 or UTF-32', () => {
  const FORMS = [['utf-16le', true], ['utf-16be', false], ['utf-32le', true], ['utf-32be', false]] as const;

  it('of a speech call is billed by its text as the UTF-8 one is, and the provider is sent the UTF-8 text that was metered', async () => {
    const t = await tenant();
    const tts = await speechServer(t);
    try {
      expect((await send(t, `${tts.url}/v1/audio/speech`, Buffer.from(SPEECH), { 'content-type': 'application/json' })).status).toBe(200);
      for (const [encoding, mark] of FORMS) {
        const answer = await send(t, `${tts.url}/v1/audio/speech`, encoded(SPEECH, encoding, mark), { 'content-type': `application/json; charset=${encoding}` });
        expect({ encoding, status: answer.status }).toEqual({ encoding, status: 200 });
      }
      // The charset named no longer applies to what is sent: it goes, the rest of the type stays.
      expect(tts.received.map((got) => [got.body.toString('utf8'), got.headers['content-type']])).toEqual([
        [SPEECH, 'application/json'],
        ...FORMS.map(() => [SPEECH, 'application/json']),
      ]);
      const [utf8, ...wide] = await charges(t, 1 + FORMS.length);
      expect(utf8).toMatchObject({ status: 'CHARGED' });
      expect(utf8!.charge).toBeGreaterThan(0n);
      expect(wide).toEqual(FORMS.map(() => utf8));
    } finally {
      await tts.close();
    }
  });

  it('is held for at its maximum cost: a customer whose credit does not cover it is refused 402, the provider not called', async () => {
    const t = await tenant();
    await gql(`mutation { updateGatewaySettings(reserveMaxCost: true) { gatewayReserveMaxCost } }`, {}, t.secret);
    const chat = await speechServer(t);
    try {
      const request = JSON.stringify({ model: 'gpt-5.4-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100_000_000 });
      for (const body of [Buffer.from(request), encoded(request, 'utf-16le', true)]) {
        const refused = await send(t, `${chat.url}/v1/chat/completions`, body, { 'content-type': 'application/json' });
        expect(refused).toMatchObject({ status: 402, json: { error: { code: 'INSUFFICIENT_FUNDS' } } });
      }
      expect(chat.received).toEqual([]);
    } finally {
      await chat.close();
    }
  });

  it('is told apart from a body that only starts with the same bytes: that is left whole', () => {
    const object = '{"model":"tts-1"}';
    for (const [encoding, mark] of [...FORMS, ['utf-16le', false], ['utf-32be', true]] as const) {
      expect({ encoding, mark, text: utf8JsonOf(encoded(object, encoding, mark))?.toString('utf8') }).toEqual({ encoding, mark, text: object });
    }
    expect(utf8JsonOf(Buffer.from(object))).toBeNull();
    // An MPEG audio frame starts with 0xFF 0xFE as UTF-16LE's mark does; odd lengths and non-objects are not taken either.
    expect(utf8JsonOf(Buffer.from([0xff, 0xfe, 0x90, 0x00, 0x12, 0x34]))).toBeNull();
    expect(utf8JsonOf(Buffer.concat([encoded(object, 'utf-16le', true), Buffer.from([0x7d])]))).toBeNull();
    expect(utf8JsonOf(encoded('[1,2]', 'utf-16le', true))).toBeNull();
    // Raw audio starting in silence (NUL bytes) is not a UTF-32 text to decode.
    expect(utf8JsonOf(Buffer.alloc(4 * 1024 * 1024))).toBeNull();
  });
});
