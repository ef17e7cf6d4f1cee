import { readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROVIDER_FIXTURES, startFakeProvider, type FakeProvider } from '../../../test/fake-provider.ts';
import type { Destination } from './destination.ts';
import { forward, MAX_DECODED_BYTES, type ForwardResult } from './forward.ts';

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

/** A local HTTP server on a free port. */
async function listen(handler: RequestListener): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Serves `chunks` as an SSE stream, each written once the previous one drained; `stall` leaves it open after them. */
function streaming(chunks: Buffer[], headers: Record<string, string> = {}, stall = false): RequestListener {
  return (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/event-stream', ...headers });
    void (async () => {
      for (const chunk of chunks) {
        if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
      }
      if (!stall) res.end();
    })();
  };
}

/** One call forwarded to `target` by a local server; `read` is how the caller consumes the response. */
async function forwardCall(
  target: string,
  idleTimeoutMs: number,
  read: (response: IncomingMessage) => Promise<Buffer>,
  callerStallMs?: number,
): Promise<{ result: ForwardResult; received: Buffer }> {
  let forwarded!: Promise<ForwardResult>;
  const gateway = await listen((req, res) => {
    req.resume();
    forwarded = forward(
      { destination: destinationOf(target), method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.from('{}'), timeoutMs: 2000, idleTimeoutMs, callerStallMs, startedAt: performance.now() },
      res,
      () => undefined,
    );
  });
  try {
    const received = await new Promise<Buffer>((resolve, reject) => {
      const caller = httpRequest(`${gateway.url}/`, { method: 'POST' }, (response) => read(response).then(resolve, reject));
      caller.on('error', reject);
      caller.end('{}');
    });
    return { result: await forwarded, received };
  } finally {
    await gateway.close();
  }
}

/** Everything the caller received, whether the response ended or was cut. */
function readAll(response: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    response.on('data', (chunk: Buffer) => chunks.push(chunk));
    response.on('end', () => resolve(Buffer.concat(chunks)));
    response.on('error', reject);
  });
}

/** Reads the first chunk, then nothing for `ms`, then the rest; resolves with what arrived, even if cut. */
function readAfterPause(ms: number) {
  return (response: IncomingMessage): Promise<Buffer> => {
    const chunks: Buffer[] = [];
    response.on('data', (chunk: Buffer) => chunks.push(chunk));
    response.once('data', () => {
      response.pause();
      setTimeout(() => response.resume(), ms);
    });
    response.on('error', () => undefined);
    return new Promise((resolve) => response.on('close', () => resolve(Buffer.concat(chunks))));
  };
}

const streamFixture = readFileSync(new URL('openai_chat_completion_stream_include_usage.sse', PROVIDER_FIXTURES));

describe('forward() relaying to a caller that reads slowly', () => {
  const filler = Buffer.from(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'x'.repeat(60 * 1024) } }] })}\n\n`);

  it('waits for the caller instead of timing the provider out: every byte arrives and the call completes', async () => {
    const sent = [...Array<Buffer>(300).fill(filler), streamFixture];
    const provider = await listen(streaming(sent));
    try {
      // Three idle timeouts without reading.
      const { result, received } = await forwardCall(provider.url, 500, readAfterPause(1500));
      expect(result).toMatchObject({ outcome: 'COMPLETED', cut: false });
      expect(received.equals(Buffer.concat(sent))).toBe(true);
    } finally {
      await provider.close();
    }
  });

  it('lets go of a caller that reads nothing for callerStallMs, as CLIENT_ABORTED: the provider is not kept waiting for ever', async () => {
    const sent = [...Array<Buffer>(300).fill(filler), streamFixture];
    const provider = await listen(streaming(sent));
    try {
      const { result, received } = await forwardCall(provider.url, 5000, readAfterPause(3000), 300);
      expect(result).toMatchObject({ outcome: 'CLIENT_ABORTED', cut: true });
      expect(received.length).toBeLessThan(Buffer.concat(sent).length);
    } finally {
      await provider.close();
    }
  });

  it('still cuts a provider that stalls once the caller has caught up, as TIMEOUT', async () => {
    const sent = Array<Buffer>(300).fill(filler);
    const provider = await listen(streaming(sent, {}, true));
    try {
      const { result, received } = await forwardCall(provider.url, 500, readAfterPause(1500));
      expect(received.equals(Buffer.concat(sent))).toBe(true);
      expect(result).toMatchObject({ outcome: 'TIMEOUT', cut: true });
    } finally {
      await provider.close();
    }
  });
});

describe('forward() with a compressed response', () => {
  it('an empty body labelled gzip (nothing to decode) is not taken for a corrupt one', async () => {
    const provider = await listen((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': 0 });
      res.end();
    });
    try {
      const { result, received } = await forwardCall(provider.url, 5000, readAll);
      expect(received.length).toBe(0);
      expect(result).toMatchObject({ outcome: 'COMPLETED', cut: false, body: '' });
    } finally {
      await provider.close();
    }
  });

  it('stops decoding a stream that inflates past MAX_DECODED_BYTES: the copy is marked cut, the caller still gets every byte', async () => {
    // 16 MiB of SSE comments in a few KB: enough such gzip members to pass the limit, then the usage.
    const comments = Buffer.from(`: ${'x'.repeat(1020)}\n\n`.repeat(16 * 1024));
    const member = gzipSync(comments, { level: 9 });
    const sent = [...Array<Buffer>(Math.ceil(MAX_DECODED_BYTES / comments.length) + 1).fill(member), gzipSync(streamFixture)];
    const provider = await listen(streaming(sent, { 'content-encoding': 'gzip' }));
    try {
      const { result, received } = await forwardCall(provider.url, 5000, readAll);
      expect(received.equals(Buffer.concat(sent))).toBe(true);
      expect(result).toMatchObject({ outcome: 'COMPLETED', cut: true });
      expect(result.body).not.toContain('"usage":{');
    } finally {
      await provider.close();
    }
  }, 60_000);
});
