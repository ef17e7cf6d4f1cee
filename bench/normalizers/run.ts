/**
 * bench/normalizers: provider responses normalized per second on one core (this process's
 * main thread), next to a baseline measured in the same run: plain JSON.parse of the same
 * bodies (for event streams, JSON.parse of every `data:` payload after splitting the lines,
 * which is what a naive meter does). Prints figures and ratios; asserts nothing.
 *
 *   npx tsx bench/normalizers/run.ts        (from the repository root)
 *
 * Sets: the recorded fixtures in shared/fixtures/providers (non-stream JSON and SSE streams
 * separately); synthetic long streams (hundreds of chunks, whole and cut off) to show the SSE
 * path scales; synthetic large bodies (a 1.5 MB base64 image, 32 × 1536 embeddings) where only
 * a small usage block matters.
 * Knob: BENCH_MS (default 1000), the measuring time per figure.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { normalizeResponse } from '../../server/src/modules/usage/normalize/index.ts';
import type { ProviderResponse } from '../../server/src/modules/usage/usage.types.ts';

const MS = Number(process.env.BENCH_MS ?? 1000);
const FIXTURES = new URL('../../../shared/fixtures/providers/', import.meta.url);
const read = (name: string) => readFileSync(new URL(name, FIXTURES), 'utf8');

interface Meta {
  request: { url: string; body?: unknown; form?: unknown };
  response: { status: number; headers?: Record<string, string> };
}
const meta = JSON.parse(read('_http_meta.json')) as Record<string, Meta>;

function fixture(name: string): ProviderResponse {
  const m = meta[name]!;
  const response: ProviderResponse = { url: m.request.url, status: m.response.status, headers: m.response.headers ?? {}, body: read(name), requestBody: m.request.body ?? m.request.form };
  if (name.endsWith('_response_head.txt')) {
    // Status line and headers of a binary (audio) response; the body is not recorded.
    const lines = response.body.split('\r\n');
    response.status = Number(lines[0]!.split(' ')[1]);
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon > 0) response.headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    response.body = '';
  }
  return response;
}

const names = readdirSync(fileURLToPath(FIXTURES)).filter((f) => meta[f] !== undefined && !f.startsWith('_'));
const nonStream = names.filter((f) => f.endsWith('.json')).map(fixture);
const stream = names.filter((f) => f.endsWith('.sse')).map(fixture);
const headerOnly = names.filter((f) => f.endsWith('_response_head.txt')).map(fixture);

// --- synthetic long streams -------------------------------------------------------------------

function openaiStream(chunks: number): ProviderResponse {
  let body = '';
  const head = '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1786543390,"model":"gpt-5.4-mini-2026-03-17","service_tier":"default","choices":[{"index":0,"delta":{"content":';
  for (let i = 0; i < chunks; i++) body += `data: ${head}${JSON.stringify(` word${i}`)}},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"Xk3p"}\n\n`;
  body += `data: ${head}""},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n`;
  body += 'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1786543390,"model":"gpt-5.4-mini-2026-03-17","choices":[],"usage":{"prompt_tokens":1184,"completion_tokens":246,"total_tokens":1430,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":128,"audio_tokens":0}}}\n\ndata: [DONE]\n\n';
  return { url: 'https://api.openai.com/v1/chat/completions', status: 200, headers: {}, body };
}

function anthropicStream(deltas: number): ProviderResponse {
  let body = 'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-sonnet-4-6","id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":2204,"cache_creation_input_tokens":0,"cache_read_input_tokens":14336,"output_tokens":2}}}\n\n';
  for (let i = 0; i < deltas; i++) body += `event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":${JSON.stringify(` word${i}`)}}}\n\n`;
  body += 'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":2204,"cache_read_input_tokens":14336,"output_tokens":689}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n';
  return { url: 'https://api.anthropic.com/v1/messages', status: 200, headers: {}, body };
}

function geminiStream(chunks: number): ProviderResponse {
  let body = '';
  for (let i = 0; i < chunks; i++) {
    const last = i === chunks - 1;
    body += `data: {"candidates":[{"content":{"parts":[{"text":" word${i}"}],"role":"model"}${last ? ',"finishReason":"STOP"' : ''},"index":0}],"usageMetadata":{"promptTokenCount":14212,"candidatesTokenCount":${i + 1},"totalTokenCount":${14213 + i},"cachedContentTokenCount":12288},"modelVersion":"gemini-3.8-flash"}\r\n\r\n`;
  }
  return { url: 'https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse', status: 200, headers: {}, body };
}

function truncated(response: ProviderResponse): ProviderResponse {
  return { ...response, body: response.body.slice(0, Math.floor(response.body.length * 0.8)) };
}

const long = [openaiStream(400), anthropicStream(400), geminiStream(100)];
const longCut = long.map(truncated);

// --- synthetic large bodies: bulk data beside a small usage block ---------------------------

const imageBody = JSON.stringify({
  created: 1,
  data: [{ b64_json: 'iVBORw0KGgo'.padEnd(1_500_000, 'A') }],
  output_format: 'png',
  quality: 'high',
  size: '1024x1024',
  usage: { input_tokens: 52, input_tokens_details: { image_tokens: 0, text_tokens: 52 }, output_tokens: 4160, total_tokens: 4212 },
});
const embeddingBody = JSON.stringify({
  object: 'list',
  data: Array.from({ length: 32 }, (_, index) => ({ object: 'embedding', index, embedding: Array.from({ length: 1536 }, (__, j) => Math.sin(index * 1536 + j) / 7) })),
  model: 'text-embedding-3-small',
  usage: { prompt_tokens: 2048, total_tokens: 2048 },
});
const large: ProviderResponse[] = [
  { url: 'https://api.openai.com/v1/images/generations', status: 200, headers: {}, body: imageBody, requestBody: { model: 'gpt-image-1.5' } },
  { url: 'https://api.openai.com/v1/embeddings', status: 200, headers: {}, body: embeddingBody },
];

// --- measurement --------------------------------------------------------------------------------

let sink = 0;

function naiveParse(body: string): void {
  if (body.startsWith('{') || body.startsWith('[')) {
    sink += JSON.parse(body) === null ? 0 : 1;
    return;
  }
  for (const line of body.split('\n')) {
    const data = line.startsWith('data:') ? line.slice(5).trim() : '';
    if (data === '' || data === '[DONE]') continue;
    try {
      const parsed: unknown = JSON.parse(data);
      sink += parsed === null ? 0 : 1;
    } catch {
      // a truncated last line
    }
  }
}

/** Calls per second of `work` over `items` round-robin, after a warm-up. */
function measure<T>(items: T[], work: (item: T) => void): number {
  const run = (ms: number) => {
    let calls = 0;
    const started = performance.now();
    let now = started;
    while (now - started < ms) {
      for (let i = 0; i < 200; i++) work(items[(calls + i) % items.length]!);
      calls += 200;
      now = performance.now();
    }
    return calls / ((now - started) / 1000);
  };
  run(Math.min(300, MS));
  return run(MS);
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US').padStart(12);
const kb = (items: ProviderResponse[]) => (items.reduce((s, r) => s + r.body.length, 0) / items.length / 1024).toFixed(1);

function row(label: string, items: ProviderResponse[]): void {
  const normalized = measure(items, (r) => {
    sink += normalizeResponse(r).inputTokens;
  });
  const baseline = measure(items, (r) => naiveParse(r.body));
  console.log(`${label.padEnd(40)} ${String(items.length).padStart(3)} ${kb(items).padStart(7)} ${fmt(normalized)} ${fmt(baseline)} ${(normalized / baseline).toFixed(2).padStart(7)}×`);
}

console.log(`Node ${process.version}, one thread, ${MS} ms per figure\n`);
console.log(`${'set'.padEnd(40)} ${'n'.padStart(3)} ${'avg KiB'.padStart(7)} ${'normalize/s'.padStart(12)} ${'JSON.parse/s'.padStart(12)} ${'ratio'.padStart(8)}`);
row('fixtures, non-stream JSON', nonStream);
row('fixtures, SSE streams', stream);
row('fixtures, all', [...nonStream, ...stream]);
row('synthetic long streams (100-400 ev)', long);
row('synthetic long streams, cut at 80%', longCut);
row('synthetic large bodies (image, embed)', large);
const tts = measure(headerOnly, (r) => {
  sink += normalizeResponse(r).characters;
});
console.log(`${'header-only TTS (no body to parse)'.padEnd(40)} ${String(headerOnly.length).padStart(3)} ${'0.0'.padStart(7)} ${fmt(tts)}`);

console.log('\nper fixture:');
for (const name of names) {
  const r = fixture(name);
  const normalized = measure([r], (x) => {
    sink += normalizeResponse(x).inputTokens;
  });
  // Header-only TTS responses have no body to parse: no baseline.
  const baseline = r.body === '' ? NaN : measure([r], (x) => naiveParse(x.body));
  const ratio = Number.isNaN(baseline) ? '' : `${(normalized / baseline).toFixed(2).padStart(7)}×`;
  console.log(`  ${name.padEnd(50)} ${fmt(normalized)} ${Number.isNaN(baseline) ? '           –' : fmt(baseline)} ${ratio}`);
}
if (sink === Number.MIN_SAFE_INTEGER) console.log(sink); // keeps the work observable
