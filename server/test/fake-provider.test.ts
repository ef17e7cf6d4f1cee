/**
 * The fake AI provider serves the recorded fixtures byte for byte, streams SSE event by event,
 * and obeys its x-fake-* control headers; its synthesized Gemini stream meters like the JSON.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { normalizeResponse } from '../src/modules/usage/normalize/index.ts';
import { PROVIDER_FIXTURES, splitSseEvents, startFakeProvider, type FakeProvider } from './fake-provider.ts';

const fixture = (name: string) => readFileSync(new URL(name, PROVIDER_FIXTURES));
const meta = JSON.parse(fixture('_http_meta.json').toString('utf8')) as Record<
  string,
  { response: { status: number; headers?: Record<string, string> } }
>;

let fake: FakeProvider;

beforeAll(async () => {
  fake = await startFakeProvider({ port: 0 });
});
afterAll(async () => {
  await fake.close();
});
beforeEach(() => fake.reset());

function post(path: string, body: unknown = {}, headers: Record<string, string> = {}, init: RequestInit = {}) {
  return fetch(`${fake.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  });
}

async function bytes(response: Response): Promise<Buffer> {
  return Buffer.from(await response.arrayBuffer());
}

/** Reads a body chunk by chunk; a cut connection ends the read with `error` set. */
async function readChunks(response: Response): Promise<{ chunks: Buffer[]; error: unknown }> {
  const reader = response.body!.getReader();
  const chunks: Buffer[] = [];
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { chunks, error: undefined };
      if (value.length > 0) chunks.push(Buffer.from(value));
    }
  } catch (error) {
    return { chunks, error };
  }
}

async function until(check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const GEMINI = 'https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash';

describe('fake provider: routes serve the fixtures', () => {
  it('listens on a random local port', () => {
    expect(fake.port).toBeGreaterThan(0);
    expect(fake.url).toBe(`http://127.0.0.1:${fake.port}`);
  });

  const whole: [string, unknown, string][] = [
    ['/v1/chat/completions', { model: 'gpt-5.4-mini', stream: false }, 'openai_chat_completion.json'],
    ['/v1/chat/completions', { model: 'gpt-5.4-mini' }, 'openai_chat_completion.json'],
    ['/v1/responses', { model: 'gpt-5.4' }, 'openai_responses.json'],
    ['/v1/embeddings', { model: 'text-embedding-3-small', input: ['a'] }, 'openai_embeddings.json'],
    ['/v1/images/generations', { model: 'gpt-image-1.5', prompt: 'x' }, 'openai_image_generation_gpt_image.json'],
    ['/v1/messages', { model: 'claude-opus-4-8', max_tokens: 10, stream: false }, 'anthropic_messages.json'],
    ['/v1beta/models/gemini-3.8-flash:generateContent', { contents: [] }, 'gemini_generate_content.json'],
    ['/v1beta/models/gemini-3.8-flash:generateContent?key=abc', { contents: [] }, 'gemini_generate_content.json'],
  ];

  it.each(whole)('POST %s %j → %s', async (path, body, name) => {
    const response = await post(path, body);
    const m = meta[name]!.response;
    expect(response.status).toBe(m.status);
    expect(response.headers.get('content-type')).toBe(m.headers!['content-type']);
    const got = await bytes(response);
    expect(got.equals(fixture(name))).toBe(true);
    expect(response.headers.get('content-length')).toBe(String(got.length));
  });

  const streams: [string, unknown, string][] = [
    ['/v1/chat/completions', { model: 'gpt-5.4-mini', stream: true, stream_options: { include_usage: true } }, 'openai_chat_completion_stream_include_usage.sse'],
    ['/v1/responses', { model: 'gpt-5.4-mini', stream: true }, 'openai_responses_stream.sse'],
    ['/v1/messages', { model: 'claude-sonnet-4-6', max_tokens: 10, stream: true }, 'anthropic_messages_stream.sse'],
  ];

  it.each(streams)('POST %s (stream) → %s', async (path, body, name) => {
    const response = await post(path, body);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe(meta[name]!.response.headers!['content-type']);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(response.headers.get('content-length')).toBeNull();
    expect(response.headers.get('transfer-encoding')).toBe('chunked');
    expect((await bytes(response)).equals(fixture(name))).toBe(true);
  });

  it('"stream" only counts at the top level of the request body', async () => {
    const nested = await post('/v1/chat/completions', { model: 'm', messages: [{ role: 'user', content: '"stream": true' }], metadata: { stream: true } });
    expect((await bytes(nested)).equals(fixture('openai_chat_completion.json'))).toBe(true);
    const broken = await post('/v1/chat/completions', '{"stream": true');
    expect((await bytes(broken)).equals(fixture('openai_chat_completion.json'))).toBe(true);
  });

  it('unknown paths and wrong methods get an OpenAI-style 404', async () => {
    const response = await post('/v1/nope', {});
    expect(response.status).toBe(404);
    expect(response.headers.get('content-type')).toBe('application/json');
    const body = (await response.json()) as { error: { message: string; type: string } };
    expect(body.error.type).toBe('invalid_request_error');
    expect(body.error.message).toContain('/v1/nope');
    const get = await fetch(`${fake.url}/v1/chat/completions`);
    expect(get.status).toBe(404);
    await get.arrayBuffer();
  });

  it('splitSseEvents keeps every byte and one event per element', () => {
    const body = fixture('openai_chat_completion_stream_include_usage.sse');
    const events = splitSseEvents(body);
    expect(Buffer.concat(events).equals(body)).toBe(true);
    expect(events.length).toBeGreaterThan(3);
    for (const event of events) expect(event.toString('utf8')).toMatch(/^data: .*\n\n$/s);
    const cut = fixture('openai_chat_completion_stream_truncated.sse');
    const cutEvents = splitSseEvents(cut);
    expect(Buffer.concat(cutEvents).equals(cut)).toBe(true);
    expect(cutEvents.at(-1)!.toString('utf8').endsWith('\n')).toBe(false);
  });
});

describe('fake provider: streaming behaviour', () => {
  it('sends an SSE response event by event (several reads with a chunk delay)', async () => {
    const name = 'openai_responses_stream.sse';
    const events = splitSseEvents(fixture(name));
    const started = Date.now();
    const response = await post('/v1/responses', { stream: true }, { 'x-fake-chunk-delay-ms': '15' });
    const { chunks, error } = await readChunks(response);
    expect(error).toBeUndefined();
    expect(chunks.length).toBeGreaterThan(1);
    expect(Buffer.concat(chunks).equals(fixture(name))).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(15 * (events.length - 1) - 20);
  });

  it('the first event arrives before the stream is done', async () => {
    const response = await post('/v1/messages', { stream: true }, { 'x-fake-chunk-delay-ms': '200' });
    const reader = response.body!.getReader();
    const started = Date.now();
    const first = await reader.read();
    expect(Date.now() - started).toBeLessThan(150);
    expect(Buffer.from(first.value!).toString('utf8')).toMatch(/^event: message_start\n/);
    await reader.cancel();
    await until(() => fake.aborted === 1); // leaving mid-stream is an abort
  });

  it('truncates after N events and cuts the connection (not counted as a client abort)', async () => {
    const name = 'openai_chat_completion_stream_include_usage.sse';
    const events = splitSseEvents(fixture(name));
    for (const n of [0, 1, 3]) {
      const response = await post('/v1/chat/completions', { stream: true }, { 'x-fake-truncate-after': String(n), 'x-fake-chunk-delay-ms': '5' });
      expect(response.status).toBe(200);
      const { chunks, error } = await readChunks(response);
      expect(error).toBeDefined();
      expect(Buffer.concat(chunks).equals(Buffer.concat(events.slice(0, n)))).toBe(true);
    }
    // Without a chunk delay too.
    const response = await post('/v1/responses', { stream: true }, { 'x-fake-truncate-after': '2' });
    const { chunks, error } = await readChunks(response);
    expect(error).toBeDefined();
    expect(Buffer.concat(chunks).equals(Buffer.concat(splitSseEvents(fixture('openai_responses_stream.sse')).slice(0, 2)))).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(fake.aborted).toBe(0);
  });

  it('a truncated stream normalizes as incomplete', async () => {
    const response = await post('/v1/chat/completions', { stream: true }, { 'x-fake-truncate-after': '4' });
    const { chunks } = await readChunks(response);
    const usage = normalizeResponse({ url: 'https://api.openai.com/v1/chat/completions', status: 200, headers: {}, body: Buffer.concat(chunks).toString('utf8') });
    expect(usage).toMatchObject({ billable: false, incomplete: true });
  });

  it('x-fake-delay-ms holds the response headers back', async () => {
    const started = Date.now();
    const response = await post('/v1/embeddings', {}, { 'x-fake-delay-ms': '150' });
    expect(response.status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    await response.arrayBuffer();
  });
});

describe('fake provider: scripted errors, redirects, echo', () => {
  it('x-fake-status: 429 on OpenAI paths serves the rate-limit fixture with its headers', async () => {
    for (const path of ['/v1/chat/completions', '/v1/responses', '/v1/embeddings']) {
      const response = await post(path, { stream: true }, { 'x-fake-status': '429' });
      expect(response.status).toBe(429);
      expect(response.headers.get('content-type')).toBe('application/json');
      expect(response.headers.get('retry-after')).toBe('1');
      expect((await bytes(response)).equals(fixture('openai_error_429_rate_limit.json'))).toBe(true);
    }
  });

  it('on /v1/messages it serves the 529 overloaded fixture', async () => {
    for (const status of ['429', '529']) {
      const response = await post('/v1/messages', { stream: true }, { 'x-fake-status': status });
      expect(response.status).toBe(529);
      expect(response.headers.get('x-should-retry')).toBe('true');
      expect((await bytes(response)).equals(fixture('anthropic_error_529_overloaded.json'))).toBe(true);
    }
  });

  it('other statuses get a provider-shaped JSON error', async () => {
    const openai = await post('/v1/chat/completions', {}, { 'x-fake-status': '503' });
    expect(openai.status).toBe(503);
    expect(await openai.json()).toMatchObject({ error: { type: 'server_error', code: null } });
    const anthropic = await post('/v1/messages', {}, { 'x-fake-status': '500' });
    expect(anthropic.status).toBe(500);
    expect(await anthropic.json()).toMatchObject({ type: 'error', error: { type: 'api_error' } });
    const gemini = await post('/v1beta/models/gemini-3.8-flash:generateContent', {}, { 'x-fake-status': '429' });
    expect(gemini.status).toBe(429);
    const body = await gemini.text();
    expect(JSON.parse(body)).toMatchObject({ error: { code: 429, status: 'RESOURCE_EXHAUSTED' } });
    expect(normalizeResponse({ url: `${GEMINI}:generateContent`, status: 429, headers: {}, body })).toMatchObject({ billable: false });
    const unknown = await post('/v1/whatever', {}, { 'x-fake-status': '400' });
    expect(unknown.status).toBe(400);
    expect(await unknown.json()).toMatchObject({ error: { type: 'invalid_request_error' } });
  });

  it('x-fake-redirect answers 307 with Location and an empty body', async () => {
    const response = await post('/v1/chat/completions', {}, { 'x-fake-redirect': 'http://example.invalid/elsewhere' }, { redirect: 'manual' });
    expect(response.status).toBe(307);
    expect(response.headers.get('location')).toBe('http://example.invalid/elsewhere');
    expect((await bytes(response)).length).toBe(0);
  });

  it('x-fake-echo returns what was received', async () => {
    const response = await post('/v1/chat/completions?x=1&y=2', { model: 'gpt-5.4-mini', stream: true }, { 'x-fake-echo': '1', authorization: 'Bearer sk-test', 'x-custom': 'abc' });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/json');
    const echo = (await response.json()) as { method: string; path: string; headers: Record<string, string>; body: string };
    expect(echo).toMatchObject({ method: 'POST', path: '/v1/chat/completions?x=1&y=2', body: '{"model":"gpt-5.4-mini","stream":true}' });
    expect(echo.headers).toMatchObject({ authorization: 'Bearer sk-test', 'x-custom': 'abc', 'x-fake-echo': '1', 'content-type': 'application/json' });
  });
});

describe('fake provider: recording and aborts', () => {
  it('records every request in order, with query, headers and the full body', async () => {
    const big = 'x'.repeat(200_000);
    await (await post('/v1/embeddings?a=b', { input: big }, { 'x-trace': 't1' })).arrayBuffer();
    await (await fetch(`${fake.url}/v1/nope`, { method: 'DELETE' })).arrayBuffer();
    expect(fake.requests).toHaveLength(2);
    expect(fake.requests[0]).toMatchObject({ method: 'POST', path: '/v1/embeddings?a=b', body: JSON.stringify({ input: big }) });
    expect(fake.requests[0]!.headers['x-trace']).toBe('t1');
    expect(fake.requests[1]).toMatchObject({ method: 'DELETE', path: '/v1/nope', body: '' });
    const held = fake.requests;
    fake.reset();
    expect(fake.requests).toHaveLength(0);
    expect(held).toBe(fake.requests);
  });

  it('x-fake-hang never answers; the client giving up counts as aborted', async () => {
    const controller = new AbortController();
    const pending = post('/v1/chat/completions', {}, { 'x-fake-hang': '1' }, { signal: controller.signal });
    await until(() => fake.requests.length === 1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(fake.aborted).toBe(0);
    controller.abort();
    await expect(pending).rejects.toThrow();
    await until(() => fake.aborted === 1);
  });

  it('a client leaving mid-stream counts as aborted; finished responses do not', async () => {
    await (await post('/v1/messages', { stream: true })).arrayBuffer();
    await (await post('/v1/messages', {})).arrayBuffer();
    expect(fake.aborted).toBe(0);
    const response = await post('/v1/messages', { stream: true }, { 'x-fake-chunk-delay-ms': '100' });
    const reader = response.body!.getReader();
    await reader.read();
    await reader.cancel();
    await until(() => fake.aborted === 1);
    fake.reset();
    expect(fake.aborted).toBe(0);
  });

  it('record: false stores nothing; close() ends hanging requests', async () => {
    const quiet = await startFakeProvider({ record: false });
    try {
      const response = await fetch(`${quiet.url}/v1/embeddings`, { method: 'POST', body: '{}' });
      expect((await bytes(response)).equals(fixture('openai_embeddings.json'))).toBe(true);
      const outcome = (headers: Record<string, string>) =>
        fetch(`${quiet.url}/v1/chat/completions`, { method: 'POST', body: '{}', headers }).then(
          () => 'answered',
          () => 'failed',
        );
      const hanging = outcome({ 'x-fake-hang': '1' });
      const delayed = outcome({ 'x-fake-delay-ms': '60000' });
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(quiet.requests).toHaveLength(0);
      await quiet.close();
      expect(await hanging).toBe('failed');
      expect(await delayed).toBe('failed');
      expect(quiet.aborted).toBe(0);
    } finally {
      await quiet.close();
    }
  });
});

describe('fake provider: Gemini streamGenerateContent', () => {
  const json = fixture('gemini_generate_content.json').toString('utf8');
  const parsed = JSON.parse(json) as { usageMetadata: Record<string, unknown>; modelVersion: string; candidates: { content: { parts: { text: string }[] } }[] };

  async function stream() {
    const response = await post('/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse', { contents: [] }, { 'x-fake-chunk-delay-ms': '10' });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    expect(response.headers.get('content-length')).toBeNull();
    const { chunks, error } = await readChunks(response);
    expect(error).toBeUndefined();
    return { chunks, body: Buffer.concat(chunks).toString('utf8') };
  }

  it('streams 2–3 CRLF-framed data chunks; only the last carries the full usage and finishReason', async () => {
    const { chunks, body } = await stream();
    expect(chunks.length).toBeGreaterThan(1);
    const events = body.split('\r\n\r\n');
    expect(events.pop()).toBe('');
    expect(events.length).toBeGreaterThanOrEqual(2);
    expect(events.length).toBeLessThanOrEqual(3);
    const parsedChunks = events.map((event) => {
      expect(event.startsWith('data: {')).toBe(true);
      expect(event).not.toContain('\n');
      return JSON.parse(event.slice('data: '.length)) as {
        candidates: { content: { parts: { text: string }[] }; finishReason?: string }[];
        usageMetadata?: Record<string, unknown>;
        modelVersion?: string;
      };
    });
    const last = parsedChunks.at(-1)!;
    expect(last.usageMetadata).toEqual(parsed.usageMetadata);
    expect(last.modelVersion).toBe(parsed.modelVersion);
    expect(last.candidates[0]!.finishReason).toBe('STOP');
    for (const early of parsedChunks.slice(0, -1)) {
      expect(early.candidates[0]!.finishReason).toBeUndefined();
      expect(early.usageMetadata).not.toEqual(parsed.usageMetadata);
      expect(Number(early.usageMetadata?.candidatesTokenCount ?? 0)).toBeLessThan(Number(parsed.usageMetadata.candidatesTokenCount));
    }
    const text = parsedChunks.map((c) => c.candidates[0]!.content.parts.map((p) => p.text).join('')).join('');
    expect(text).toBe(parsed.candidates[0]!.content.parts[0]!.text);
  });

  it('meters to the same usage as the JSON fixture', async () => {
    const { body } = await stream();
    const fromStream = normalizeResponse({ url: `${GEMINI}:streamGenerateContent?alt=sse`, status: 200, headers: { 'content-type': 'text/event-stream' }, body });
    const fromJson = normalizeResponse({ url: `${GEMINI}:generateContent`, status: 200, headers: { 'content-type': 'application/json' }, body: json });
    expect(fromStream.api).toBe('streamGenerateContent');
    expect({ ...fromStream, api: 'x' }).toEqual({ ...fromJson, api: 'x' });
    expect(fromStream).toMatchObject({ billable: true, incomplete: false, model: 'gemini-3.8-flash', inputTokens: 14212, cachedInputTokens: 12288, outputTokens: 1305, reasoningTokens: 893 });
  });

  it('without alt=sse it answers the same chunks as a JSON array, metering the same', async () => {
    const response = await post('/v1beta/models/gemini-3.8-flash:streamGenerateContent', {});
    expect(response.headers.get('content-type')).toBe(meta['gemini_generate_content.json']!.response.headers!['content-type']);
    const body = await response.text();
    expect(Array.isArray(JSON.parse(body))).toBe(true);
    const fromArray = normalizeResponse({ url: `${GEMINI}:streamGenerateContent`, status: 200, headers: {}, body });
    const fromJson = normalizeResponse({ url: `${GEMINI}:generateContent`, status: 200, headers: {}, body: json });
    expect({ ...fromArray, api: 'x' }).toEqual({ ...fromJson, api: 'x' });
  });

  it('a truncated Gemini stream is incomplete', async () => {
    const response = await post('/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse', {}, { 'x-fake-truncate-after': '1' });
    const { chunks, error } = await readChunks(response);
    expect(error).toBeDefined();
    const usage = normalizeResponse({ url: `${GEMINI}:streamGenerateContent?alt=sse`, status: 200, headers: {}, body: Buffer.concat(chunks).toString('utf8') });
    expect(usage).toMatchObject({ billable: false, incomplete: true });
  });
});
