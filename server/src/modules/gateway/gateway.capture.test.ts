/**
 * Responses too large for the metering copy to hold whole (see Capture in forward.ts): the caller
 * gets every byte, and the call is charged the usage the provider reported, as post-request
 * metering of the same body would charge it.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDecimalAttos } from '../../shared/money.ts';
import { PROVIDER_FIXTURES, splitSseEvents } from '../../../test/fake-provider.ts';
import { gzipStream, scriptedGateway, writeAll, type Tenant } from '../../../test/scripted-gateway.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { LIST_PRICES } from '../pricing/list-prices.ts';
import { normalizeResponse } from '../usage/normalize/index.ts';
import { MAX_CAPTURE_BYTES, MAX_TAIL_RECORD_BYTES, TAIL_CAPTURE_BYTES } from './forward.ts';

const expectedUsage = JSON.parse(readFileSync(new URL('expected_usage.json', PROVIDER_FIXTURES), 'utf8')) as Record<string, { expected_cost_usd: string }>;
/** The markup every merchant here charges: 25% over provider cost. */
const withMarkup = (costAttos: bigint) => (costAttos * 125n) / 100n;
const fixtureCost = (name: string) => parseDecimalAttos('cost', expectedUsage[name]!.expected_cost_usd);

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' });
});
afterAll(async () => {
  await server?.close();
});

const { tenant, provider, call, charges } = scriptedGateway(() => server);

/** What `tokens` input tokens of `model` cost at the shipped list price (USD attos). */
function inputCost(model: string, tokens: number): bigint {
  const price = LIST_PRICES.find((row) => row.provider === 'openai' && row.model === model)!;
  return (parseDecimalAttos('price', price.perMillionTokens!.input!) * BigInt(tokens)) / 1_000_000n;
}

describe('a JSON response larger than the metering copy keeps', () => {
  const tokens = 250_000;
  const embeddingsOf = (count: number, vector: () => string | number[]) =>
    Buffer.from(
      JSON.stringify({
        object: 'list',
        data: Array.from({ length: count }, (_, index) => ({ object: 'embedding', index, embedding: vector() })),
        model: 'text-embedding-3-large',
        usage: { prompt_tokens: tokens, total_tokens: tokens },
      }),
    );
  const bodies = {
    // 2048 inputs of text-embedding-3-large (3072 dimensions) in base64, usage at the end: ~33.7 MB,
    // past the copy's head.
    base64: embeddingsOf(2048, () => randomBytes(3072 * 4).toString('base64')),
    // 1024 of them as JSON numbers: ~38 MB, past the head and a tail, so bytes between them are dropped.
    float: embeddingsOf(1024, () => Array.from({ length: 3072 }, () => Math.round((Math.random() - 0.5) * 2e9) / 1e10)),
  };

  it('are past the copy\'s head (and for floats its tail too), and post-request metering of them reads their usage', () => {
    expect(bodies.base64.length).toBeGreaterThan(MAX_CAPTURE_BYTES);
    expect(bodies.float.length).toBeGreaterThan(MAX_CAPTURE_BYTES + 2 * TAIL_CAPTURE_BYTES);
    for (const body of Object.values(bodies)) {
      const whole = normalizeResponse({ url: 'https://api.openai.com/v1/embeddings', status: 200, headers: { 'content-type': 'application/json' }, body: body.toString('utf8') });
      expect(whole).toMatchObject({ billable: true, model: 'text-embedding-3-large', inputTokens: tokens });
    }
  });

  it.each([
    ['base64', null],
    ['base64', 'gzip'],
    ['float', null],
    ['float', 'gzip'],
  ] as const)('an embeddings answer in %s (content-encoding %s) is relayed whole and charged the usage at its end', async (format, encoding) => {
    const t = await tenant('ESTIMATE');
    const sent = encoding ? gzipSync(bodies[format]) : bodies[format];
    const openai = await provider(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': sent.length, ...(encoding ? { 'content-encoding': encoding } : {}) });
      res.end(sent);
    });
    try {
      const response = await call(t, `${openai.url}/v1/embeddings`, { model: 'text-embedding-3-large', input: ['a'], encoding_format: format });
      expect(response.status).toBe(200);
      expect(response.body.equals(sent)).toBe(true);
      expect(await charges(t, 1)).toEqual([{ status: 'CHARGED', estimated: false, cut: false, charge: withMarkup(inputCost('text-embedding-3-large', tokens)) }]);
    } finally {
      await openai.close();
    }
  }, 120_000);
});

describe('a stream longer than the metering copy keeps', () => {
  const events = splitSseEvents(readFileSync(new URL('openai_responses_stream.sse', PROVIDER_FIXTURES)));
  const completedAt = events.findIndex((event) => event.toString('utf8').startsWith('event: response.completed\n'));
  /** The fixture's terminal event, with a generated image of `bytes` base64 characters added to its output. */
  const completedWithImage = (bytes: number): Buffer => {
    const [, data] = /^event: response\.completed\ndata: (.*)\n\n$/s.exec(events[completedAt]!.toString('utf8'))!;
    const completed = JSON.parse(data!) as { response: { output: unknown[] } };
    completed.response.output.push({ id: 'ig_06d2b7e41f9a0c3d0068ba5249d5e01', type: 'image_generation_call', status: 'completed', result: 'iVBORw0KGgo'.padEnd(bytes, 'A') });
    return Buffer.from(`event: response.completed\ndata: ${JSON.stringify(completed)}\n\n`);
  };
  /** Partial images streamed while the image is drawn: enough of them to pass the head and two tails. */
  const partial = Buffer.from(
    `event: response.image_generation_call.partial_image\ndata: ${JSON.stringify({ type: 'response.image_generation_call.partial_image', item_id: 'ig_06d2b7e41f9a0c3d0068ba5249d5e01', output_index: 2, partial_image_index: 0, partial_image_b64: 'A'.repeat(64 * 1024), sequence_number: 4 })}\n\n`,
  );
  const padded = (last: Buffer): Buffer[] => [
    ...events.slice(0, completedAt),
    ...Array<Buffer>(Math.ceil((MAX_CAPTURE_BYTES + 2 * TAIL_CAPTURE_BYTES) / partial.length)).fill(partial),
    last,
    ...events.slice(completedAt + 1),
  ];
  const responsesCost = withMarkup(fixtureCost('openai_responses_stream.sse'));

  async function streamThrough(t: Tenant, sent: Buffer[], encoding: string | null) {
    const openai = await provider(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', ...(encoding ? { 'content-encoding': encoding } : {}) });
      void writeAll(res, sent).then(() => res.end());
    });
    try {
      const response = await call(t, `${openai.url}/v1/responses`, { model: 'gpt-5.4-mini', stream: true, tools: [{ type: 'image_generation' }] });
      expect(response.body.equals(Buffer.concat(sent))).toBe(true);
      return await charges(t, 1);
    } finally {
      await openai.close();
    }
  }

  it('with ordinary small events is charged the usage of its last event', async () => {
    const sent = padded(events[completedAt]!);
    expect(Buffer.concat(sent).length).toBeGreaterThan(MAX_CAPTURE_BYTES + 2 * TAIL_CAPTURE_BYTES);
    expect(await streamThrough(await tenant('NO_CHARGE'), sent, null)).toEqual([{ status: 'CHARGED', estimated: false, cut: false, charge: responsesCost }]);
  }, 120_000);

  it.each([
    ['uncompressed', null],
    ['gzip', 'gzip'],
  ])('whose last event is larger than TAIL_CAPTURE_BYTES (%s) is charged the usage in that event', async (_label, encoding) => {
    // response.completed carries the whole response, the finished image (1.5 MB of base64) with it.
    const last = completedWithImage(1.5 * 1024 * 1024);
    expect(last.length).toBeGreaterThan(TAIL_CAPTURE_BYTES);
    const events = padded(last);
    const sent = encoding ? await gzipStream(events) : events;
    expect(await streamThrough(await tenant('NO_CHARGE'), sent, encoding)).toEqual([{ status: 'CHARGED', estimated: false, cut: false, charge: responsesCost }]);
  }, 120_000);

  it('whose last event is larger than MAX_TAIL_RECORD_BYTES is metered without it, as one whose usage is lost (the copy stays bounded)', async () => {
    const last = completedWithImage(MAX_TAIL_RECORD_BYTES + TAIL_CAPTURE_BYTES);
    expect(await streamThrough(await tenant('NO_CHARGE'), padded(last), null)).toEqual([{ status: 'NOT_BILLABLE', estimated: false, cut: false, charge: 0n }]);
  }, 120_000);
});
