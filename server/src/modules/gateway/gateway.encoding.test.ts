/**
 * A provider that answers compressed although the gateway asks for `accept-encoding: identity`
 * (a CDN in front of it, a merchant's own OpenAI-compatible server): the caller gets the bytes
 * and the content-encoding as sent, and the call is charged as if it had come uncompressed.
 */
import { readFileSync } from 'node:fs';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDecimalAttos } from '../../shared/money.ts';
import { PROVIDER_FIXTURES, splitSseEvents } from '../../../test/fake-provider.ts';
import { gzipStream, scriptedGateway, writeAll } from '../../../test/scripted-gateway.ts';
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

const { tenant, provider, call, charges } = scriptedGateway(() => server);

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
