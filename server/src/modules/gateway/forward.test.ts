import { readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROVIDER_FIXTURES, startFakeProvider, type FakeProvider } from '../../../test/fake-provider.ts';
import type { Destination } from './destination.ts';
import { normalizeResponse, parseSse } from '../usage/normalize/index.ts';
import { Capture, CAPTURE_GAP, forward, MAX_CAPTURE_BYTES, MAX_DECODED_BYTES, MAX_TAIL_RECORD_BYTES, recordEndsOf, TAIL_CAPTURE_BYTES, type ForwardResult } from './forward.ts';

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

  it('lets go of a caller that stops reading with the last bytes still unsent (under the mark where write() asks to wait): never left open', async () => {
    let gatewayRes!: ServerResponse;
    let forwarded!: Promise<ForwardResult>;
    const chunk = Buffer.from(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'y'.repeat(1000) } }] })}\n\n`);
    // The provider streams until the gateway holds bytes the caller has not taken, then ends with the usage.
    const provider = await listen((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      void (async () => {
        while (!gatewayRes || gatewayRes.writableLength === 0) {
          if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
          await new Promise((resolve) => setImmediate(resolve));
        }
        res.end(streamFixture);
      })();
    });
    const gateway = await listen((req, res) => {
      req.resume();
      gatewayRes = res;
      forwarded = forward(
        { destination: destinationOf(provider.url), method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.from('{}'), timeoutMs: 5000, idleTimeoutMs: 5000, callerStallMs: 300, startedAt: performance.now() },
        res,
        () => undefined,
      );
    });
    // A caller that reads nothing, ever (its socket paused), and never hangs up.
    const caller = netConnect(Number(new URL(gateway.url).port), '127.0.0.1', () => {
      caller.write('POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}');
      caller.pause();
    });
    try {
      while (!forwarded) await new Promise((resolve) => setTimeout(resolve, 10));
      const result = await Promise.race([forwarded, new Promise<null>((resolve) => setTimeout(() => resolve(null), 4000))]);
      expect(result).toMatchObject({ outcome: 'CLIENT_ABORTED', upstreamStatus: 200 });
      // Metered from the provider's whole answer, its usage included.
      expect(normalizeResponse({ url: 'https://api.openai.com/v1/chat/completions', status: 200, headers: {}, body: result!.body! })).toMatchObject({ billable: true, inputTokens: 1184 });
    } finally {
      caller.destroy();
      await gateway.close();
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

/** `bytes` fed to a Capture in chunks of `size`, the first one `first` bytes long. */
function captured(contentType: string, head: Buffer, bytes: Buffer, size: number, first = size): Capture {
  const capture = new Capture(recordEndsOf(contentType));
  capture.add(head);
  for (let at = 0, next = first; at < bytes.length; at = next, next += size) capture.add(bytes.subarray(at, next));
  return capture;
}

describe('the metering copy (Capture) of a body longer than its head and tail', () => {
  // A head of whole small records, past which the copy keeps a tail.
  const sseHead = Buffer.from(`data: ${JSON.stringify({ choices: [{ delta: { content: 'x'.repeat(1000) } }] })}\n\n`.repeat(Math.ceil(MAX_CAPTURE_BYTES / 1040)));
  const small = (i: number, end: string) => `data: {"i":${i}}${end}`;

  it.each([
    ['LF', '\n\n'],
    ['CRLF', '\r\n\r\n'],
  ])('keeps whole a last event longer than TAIL_CAPTURE_BYTES, wherever the chunks split the end before it (%s)', (_label, end) => {
    const smalls = Array.from({ length: Math.ceil((2 * TAIL_CAPTURE_BYTES) / 12) }, (_, i) => small(i, end)).join('');
    const last = `data: {"last":"${'b'.repeat(1.5 * 1024 * 1024)}"}${end}`;
    const body = Buffer.from(smalls + last);
    // Chunks of 64 KiB, offset so that a chunk boundary falls before, inside and after the end preceding the last event.
    for (let shift = -end.length - 1; shift <= 1; shift++) {
      const first = (Buffer.byteLength(smalls) + shift) % 65_536 || 65_536;
      const capture = captured('text/event-stream', sseHead, body, 65_536, first);
      const events = parseSse(capture.text());
      expect(events.at(-1)!.data).toBe(last.slice('data: '.length, -end.length));
      // Joined between whole events: no fragment of one is read as an event.
      expect(events.every((event) => /^\{"(i|choices|last)":/.test(event.data))).toBe(true);
    }
  });

  it('keeps whole an NDJSON last line longer than TAIL_CAPTURE_BYTES, chunked byte by byte around its start', () => {
    const lines = Array.from({ length: Math.ceil((2 * TAIL_CAPTURE_BYTES) / 10) }, (_, i) => `{"i":${i}}\n`).join('');
    const last = `{"last":"${'b'.repeat(1.5 * 1024 * 1024)}"}\n`;
    const capture = new Capture(recordEndsOf('application/x-ndjson'));
    capture.add(Buffer.from('{"head":1}\n'.repeat(Math.ceil(MAX_CAPTURE_BYTES / 11))));
    const body = Buffer.from(lines + last);
    const start = Buffer.byteLength(lines);
    capture.add(body.subarray(0, start - 3));
    for (let at = start - 3; at < start + 3; at++) capture.add(body.subarray(at, at + 1));
    capture.add(body.subarray(start + 3));
    expect(capture.text().endsWith(`\n${last}`)).toBe(true);
  });

  it('past MAX_TAIL_RECORD_BYTES lets the last event go as before, and holds no more than that while a record never ends', () => {
    const never = Buffer.alloc(3 * MAX_TAIL_RECORD_BYTES, 'b');
    const capture = captured('text/event-stream', sseHead, Buffer.concat([Buffer.from(`${small(1, '\n\n')}data: "`), never]), 65_536);
    expect(capture.keptBytes).toBeLessThanOrEqual(sseHead.length + MAX_TAIL_RECORD_BYTES + 65_536);
    capture.add(Buffer.from('"\n\n'));
    // The head up to its last whole event, and nothing of the record the tail could not keep whole.
    expect(capture.text()).toBe(sseHead.toString('utf8'));
  });

  it('keeps ordinary small events as before: the tail stays near TAIL_CAPTURE_BYTES and ends with the last events', () => {
    const smalls = Array.from({ length: Math.ceil((4 * TAIL_CAPTURE_BYTES) / 12) }, (_, i) => small(i, '\n\n')).join('');
    const capture = captured('text/event-stream', sseHead, Buffer.from(smalls), 65_536);
    expect(capture.keptBytes).toBeLessThanOrEqual(sseHead.length + TAIL_CAPTURE_BYTES + 2 * 65_536);
    const events = parseSse(capture.text());
    expect(events.at(-1)!.data).toBe(`{"i":${Math.ceil((4 * TAIL_CAPTURE_BYTES) / 12) - 1}}`);
    expect(events.every((event) => event.data.startsWith('{'))).toBe(true);
  });

  describe('of a JSON document', () => {
    const url = 'https://api.openai.com/v1/embeddings';
    const normalized = (body: string) => normalizeResponse({ url, status: 200, headers: { 'content-type': 'application/json' }, body });
    const vectors = (bytes: number) => `{"object":"list","data":[${'{"object":"embedding","index":0,"embedding":"AAAA"},'.repeat(Math.ceil(bytes / 51))}{"object":"embedding","index":1,"embedding":"AAAA"}]`;

    it('keeps its head and its last TAIL_CAPTURE_BYTES, CAPTURE_GAP between them, and its usage block is read from the tail', () => {
      const document = Buffer.from(`${vectors(MAX_CAPTURE_BYTES + 2 * TAIL_CAPTURE_BYTES)},"model":"text-embedding-3-large","usage":{"prompt_tokens":250000,"total_tokens":250000}}`);
      const text = captured('application/json', Buffer.alloc(0), document, 65_536).text();
      const [head, tail, ...more] = text.split(CAPTURE_GAP);
      expect(more).toEqual([]);
      expect(document.toString('utf8').startsWith(head!)).toBe(true);
      expect(head!.length).toBeGreaterThanOrEqual(MAX_CAPTURE_BYTES);
      expect(document.toString('utf8').endsWith(tail!)).toBe(true);
      expect(tail!.length).toBeGreaterThanOrEqual(TAIL_CAPTURE_BYTES);
      expect(normalized(text)).toMatchObject({ billable: true, inputTokens: 250_000 });
    });

    it('does not read a usage block the gap cuts: the call is metered as one whose usage is lost, not from a fragment', () => {
      // A usage block from before the end of the head to the end of the body, so the gap falls inside it.
      const document = Buffer.from(`${vectors(MAX_CAPTURE_BYTES - TAIL_CAPTURE_BYTES)},"model":"text-embedding-3-large","usage":{"prompt_tokens":250000,"padding":[${'1,'.repeat(2 * TAIL_CAPTURE_BYTES)}1],"total_tokens":250000}}`);
      expect(normalized(document.toString('utf8'))).toMatchObject({ billable: true, inputTokens: 250_000 });
      for (const size of [16_384, 65_536, 65_537]) {
        const text = captured('application/json', Buffer.alloc(0), document, size).text();
        expect(text).toContain(CAPTURE_GAP);
        expect(normalized(text)).toMatchObject({ billable: false, incomplete: true, inputTokens: 0 });
      }
    });
  });
});
