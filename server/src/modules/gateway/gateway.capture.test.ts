/**
 * Responses too large for the metering copy to hold whole (see Capture in forward.ts): the caller
 * gets every byte, and the call is charged the usage the provider reported, as post-request
 * metering of the same body would charge it.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGzip, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDecimalAttos } from '../../shared/money.ts';
import { PROVIDER_FIXTURES, splitSseEvents } from '../../../test/fake-provider.ts';
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

/** A call through the gateway, read as raw bytes: nothing on the caller's side decodes them. */
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
