import { readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROVIDER_FIXTURES, startFakeProvider, type FakeProvider } from '../../../test/fake-provider.ts';
import type { Destination } from './destination.ts';
import { forward, type ForwardResult } from './forward.ts';

let provider: FakeProvider;
beforeAll(async () => {
  provider = await startFakeProvider();
});
afterAll(async () => {
  await provider?.close();
});

function destinationOf(url: string): Destination {
  const parsed = new URL(url);
  return { url: parsed, hostname: parsed.hostname, port: Number(parsed.port), provider: 'openai', viaMerchantHost: false, address: { address: parsed.hostname, family: 4 } };
}

/**
 * A server that reads the caller's request, waits until the caller has hung up, and only then
 * forwards it: the response it relays into is already destroyed.
 */
async function forwardAfterCallerLeft(target: string, body: unknown): Promise<ForwardResult> {
  let server: Server | undefined;
  const result = new Promise<ForwardResult>((resolve, reject) => {
    server = createServer((req, res) => {
      void (async () => {
        const chunks: Buffer[] = [];
        for await (const chunk of req) chunks.push(chunk as Buffer);
        if (!res.destroyed) await new Promise((closed) => res.once('close', closed));
        const payload = Buffer.concat(chunks);
        resolve(await forward({ destination: destinationOf(target), method: 'POST', headers: { 'content-type': 'application/json' }, body: payload, timeoutMs: 2000, idleTimeoutMs: 2000, startedAt: performance.now() }, res, () => undefined));
      })().catch(reject);
    });
    server.listen(0, '127.0.0.1', () => {
      const caller = httpRequest({ port: (server!.address() as AddressInfo).port, host: '127.0.0.1', method: 'POST', headers: { 'content-type': 'application/json' } });
      caller.on('error', () => undefined);
      caller.end(JSON.stringify(body), () => setTimeout(() => caller.destroy(), 20));
    });
  });
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('forward() never resolved')), 4000));
  try {
    return await Promise.race([result, timeout]);
  } finally {
    server?.closeAllConnections();
    server?.close();
  }
}

describe('forward() into a response whose caller already left', () => {
  it('a JSON answer resolves as CLIENT_ABORTED with the body kept for metering, instead of waiting for a drain that never comes', async () => {
    const result = await forwardAfterCallerLeft(`${provider.url}/v1/chat/completions`, { model: 'gpt-5.4-mini' });
    expect(result).toMatchObject({ outcome: 'CLIENT_ABORTED', upstreamStatus: 200, cut: true, streamed: false });
    expect(result.body).toBe(readFileSync(new URL('openai_chat_completion.json', PROVIDER_FIXTURES), 'utf8'));
  });

  it('a stream resolves the same way', async () => {
    const result = await forwardAfterCallerLeft(`${provider.url}/v1/chat/completions`, { model: 'gpt-5.4-mini', stream: true });
    expect(result).toMatchObject({ outcome: 'CLIENT_ABORTED', upstreamStatus: 200, cut: true, streamed: true });
  });
});
