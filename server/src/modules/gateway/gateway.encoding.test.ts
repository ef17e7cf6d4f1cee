/**
 * A provider that answers compressed although the gateway asks for `accept-encoding: identity`
 * (a CDN in front of it, a merchant's own OpenAI-compatible server): the caller gets the bytes
 * and the content-encoding as sent, and the call is charged as if it had come uncompressed.
 */
import { readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { brotliCompressSync, createGzip, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDecimalAttos } from '../../shared/money.ts';
import { PROVIDER_FIXTURES, splitSseEvents } from '../../../test/fake-provider.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { MAX_CAPTURE_BYTES, TAIL_CAPTURE_BYTES } from './forward.ts';

const expectedUsage = JSON.parse(readFileSync(new URL('expected_usage.json', PROVIDER_FIXTURES), 'utf8')) as Record<string, { expected_cost_usd: string }>;
const fixture = (name: string) => readFileSync(new URL(name, PROVIDER_FIXTURES));
/** The markup every merchant here charges: 25% over provider cost. */
const withMarkup = (costUsd: string) => (parseDecimalAttos('cost', costUsd) * 125n) / 100n;
const chatJson = fixture('openai_chat_completion.json');
const chatEvents = splitSseEvents(fixture('openai_chat_completion_stream_include_usage.sse'));

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' });
});
afterAll(async () => {
  await server?.close();
});

interface Tenant {
  merchantId: string;
  secret: string;
  customerId: string;
}

async function gql(query: string, variables: Record<string, unknown>, token: string): Promise<any> {
  const response = await server.graphql(query, variables, token);
  if (response.errors) throw new Error(JSON.stringify(response.errors));
  return response.data;
}

/** A merchant charging 25% over cost, with an OpenAI key stored and a customer holding credit. */
async function tenant(policy: 'ESTIMATE' | 'NO_CHARGE' = 'ESTIMATE'): Promise<Tenant> {
  const merchant = await server.createMerchant();
  await gql(`mutation($p: String!, $k: String!) { setProviderCredential(provider: $p, apiKey: $k) { id } }`, { p: 'openai', k: 'openai-provider-key-0001' }, merchant.secret);
  await gql(`mutation($policy: IncompleteStreamPolicy!) { updateMerchant(incompleteStreamPolicy: $policy) { id } }`, { policy }, merchant.secret);
  await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '25' }, effectiveFrom: new Date('2026-01-01') });
  const created = await gql(`mutation { createCustomer(input: { externalId: "user-1" }) { id } }`, {}, merchant.secret);
  const customerId = created.createCustomer.id as string;
  await gql(`mutation($c: ID!) { grantCredits(input: { customerId: $c, amount: "10", kind: PAID, idempotencyKey: "seed" }) { __typename } }`, { c: customerId }, merchant.secret);
  return { merchantId: merchant.id, secret: merchant.secret, customerId };
}

/** A scripted OpenAI provider on a local port, allowed for the tenant. */
async function provider(t: Tenant, handler: RequestListener): Promise<{ url: string; close: () => Promise<void> }> {
  const scripted = createServer((req, res) => {
    req.resume();
    handler(req, res);
  });
  await new Promise<void>((resolve) => scripted.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(scripted.address() as AddressInfo).port}`;
  await gql(`mutation($host: String!) { putGatewayHost(host: $host, provider: "openai") { id } }`, { host }, t.secret);
  return {
    url: `http://${host}`,
    close: () => {
      scripted.closeAllConnections();
      return new Promise((resolve) => scripted.close(() => resolve()));
    },
  };
}

/** Writes `chunks` one after the other, each once the previous one drained. */
async function writeAll(res: NodeJS.WritableStream, chunks: Buffer[]): Promise<void> {
  for (const chunk of chunks) {
    if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
  }
}

/** `events` gzip-compressed as a provider streams them: flushed after each, so each decodes on arrival. */
async function gzipStream(events: Buffer[]): Promise<Buffer[]> {
  const gzip = createGzip();
  const pieces: Buffer[] = [];
  let current: Buffer[] = [];
  gzip.on('data', (data: Buffer) => current.push(data));
  for (const event of events) {
    gzip.write(event);
    await new Promise<void>((resolve) => gzip.flush(() => resolve()));
    pieces.push(Buffer.concat(current));
    current = [];
  }
  await new Promise((ended) => {
    gzip.once('end', ended);
    gzip.end();
  });
  pieces.push(Buffer.concat(current));
  return pieces;
}

/** A chat completion through the gateway, read as raw bytes: nothing on the caller's side decodes them. */
function call(t: Tenant, target: string, body: unknown): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(`${server.url}/v1/forward?u=${encodeURIComponent(target)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.customerId },
    });
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, body: Buffer.concat(chunks) }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(JSON.stringify(body));
  });
}

/** The tenant's usage events, once its `count` calls are logged and charged. */
async function charges(t: Tenant, count: number) {
  const deadline = Date.now() + 10_000;
  while ((await server.services.prisma.gatewayRequest.count({ where: { merchantId: t.merchantId } })) < count) {
    if (Date.now() > deadline) throw new Error(`expected ${count} logged gateway calls`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await server.services.gateway.drain();
  const events = await server.services.prisma.usageEvent.findMany({ where: { merchantId: t.merchantId }, orderBy: { createdAt: 'asc' } });
  return events.map((event) => ({ charge: BigInt(event.chargeAttos.toFixed(0)), status: event.status, estimated: event.estimated, cut: (event.metadata as { cut?: boolean }).cut }));
}

describe('a provider answering compressed', () => {
  it.each([
    ['gzip', gzipSync(chatJson)],
    ['x-gzip', gzipSync(chatJson)],
    ['deflate', deflateSync(chatJson)],
    ['br', brotliCompressSync(chatJson)],
  ])('a JSON body in %s is relayed byte for byte and charged like the uncompressed one', async (encoding, compressed) => {
    const t = await tenant();
    const openai = await provider(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': encoding, 'content-length': compressed.length });
      res.end(compressed);
    });
    try {
      const response = await call(t, `${openai.url}/v1/chat/completions`, { model: 'gpt-5.4-mini' });
      expect(response).toMatchObject({ status: 200, headers: { 'content-encoding': encoding } });
      expect(response.body.equals(compressed)).toBe(true);
      expect(await charges(t, 1)).toEqual([{ status: 'CHARGED', estimated: false, cut: false, charge: withMarkup(expectedUsage['openai_chat_completion.json']!.expected_cost_usd) }]);
    } finally {
      await openai.close();
    }
  });

  it('an SSE stream in gzip, flushed event by event, is relayed as sent and charged the usage at its end', async () => {
    const t = await tenant();
    const pieces = await gzipStream(chatEvents);
    const openai = await provider(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' });
      void writeAll(res, pieces).then(() => res.end());
    });
    try {
      const response = await call(t, `${openai.url}/v1/chat/completions`, { model: 'gpt-5.4-mini', stream: true });
      expect(response.body.equals(Buffer.concat(pieces))).toBe(true);
      expect(await charges(t, 1)).toEqual([{ status: 'CHARGED', estimated: false, cut: false, charge: withMarkup(expectedUsage['openai_chat_completion_stream_include_usage.sse']!.expected_cost_usd) }]);
    } finally {
      await openai.close();
    }
  });

  it('a gzip stream that decodes to more than the metering copy holds is charged the usage reported at its end', async () => {
    const t = await tenant('NO_CHARGE');
    const filler = Buffer.from(`data: ${JSON.stringify({ id: 'chatcmpl-filler', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'x'.repeat(64 * 1024) } }], usage: null })}\n\n`);
    const fillers = Math.ceil((MAX_CAPTURE_BYTES + 2 * TAIL_CAPTURE_BYTES) / filler.length);
    const pieces = await gzipStream([chatEvents[0]!, ...Array<Buffer>(fillers).fill(filler), ...chatEvents.slice(1)]);
    const openai = await provider(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' });
      void writeAll(res, pieces).then(() => res.end());
    });
    try {
      const response = await call(t, `${openai.url}/v1/chat/completions`, { model: 'gpt-5.4-mini', stream: true });
      expect(response.body.equals(Buffer.concat(pieces))).toBe(true);
      expect(await charges(t, 1)).toEqual([{ status: 'CHARGED', estimated: false, cut: false, charge: withMarkup(expectedUsage['openai_chat_completion_stream_include_usage.sse']!.expected_cost_usd) }]);
    } finally {
      await openai.close();
    }
  }, 30_000);

  it('a gzip stream corrupt after some events is relayed as sent and charged like a stream the provider cut there (incomplete-stream policy)', async () => {
    const readable = 8;
    const pieces = await gzipStream(chatEvents);
    // After the first events, bytes no deflate stream may hold (a reserved block type).
    const corrupt = [...pieces.slice(0, readable), Buffer.alloc(64, 0xff), ...pieces.slice(readable)];
    const [damaged, cutShort] = await Promise.all([tenant('ESTIMATE'), tenant('ESTIMATE')]);
    const corrupting = await provider(damaged, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' });
      void writeAll(res, corrupt).then(() => res.end());
    });
    const cutting = await provider(cutShort, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      void writeAll(res, chatEvents.slice(0, readable)).then(() => res.destroy());
    });
    try {
      const response = await call(damaged, `${corrupting.url}/v1/chat/completions`, { model: 'gpt-5.4-mini', stream: true });
      expect(response.body.equals(Buffer.concat(corrupt))).toBe(true);
      await expect(call(cutShort, `${cutting.url}/v1/chat/completions`, { model: 'gpt-5.4-mini', stream: true })).rejects.toThrow();
      const [cut] = await charges(cutShort, 1);
      expect(cut).toMatchObject({ status: 'CHARGED', estimated: true, cut: true });
      expect(cut!.charge).toBeGreaterThan(0n);
      expect(await charges(damaged, 1)).toEqual([cut]);
    } finally {
      await Promise.all([corrupting.close(), cutting.close()]);
    }
  });

  it('an encoding the gateway cannot decode (zstd) is relayed as sent; the call is recorded as one whose usage could not be read', async () => {
    const t = await tenant('ESTIMATE');
    // A zstd frame's magic number, then bytes that mean nothing without a zstd decoder.
    const body = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.from(chatJson).reverse()]);
    const openai = await provider(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'zstd', 'content-length': body.length });
      res.end(body);
    });
    try {
      const response = await call(t, `${openai.url}/v1/chat/completions`, { model: 'gpt-5.4-mini' });
      expect(response).toMatchObject({ status: 200, headers: { 'content-encoding': 'zstd' } });
      expect(response.body.equals(body)).toBe(true);
      // Nothing was readable, so even the ESTIMATE policy has no output to charge for.
      expect(await charges(t, 1)).toEqual([{ status: 'NOT_BILLABLE', estimated: false, cut: true, charge: 0n }]);
    } finally {
      await openai.close();
    }
  });
});
