/**
 * Calls sent through a proxy in front of the provider that puts path segments of its own before
 * the provider's API root: Cloudflare AI Gateway (/v1/{account}/{gateway}/{provider}/…) or a
 * company gateway (/{provider}/…), with the provider named by the merchant's host rule. Such a
 * call is forwarded, held, metered, charged and refused exactly as the same call without the
 * prefix, and a job's id is read from the provider's part of the path.
 */
import { createServer, request as httpRequest, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDecimalAttos, parseDecimalNanos } from '../../shared/money.ts';
import { PROVIDER_FIXTURES, startFakeProvider, type FakeProvider } from '../../../test/fake-provider.ts';
import { listenLocally } from '../../../test/local-server.ts';
import { gatewayCallsSettled, startTestServer, type TestServer } from '../../../test/server.ts';

const expectedUsage = JSON.parse(readFileSync(new URL('expected_usage.json', PROVIDER_FIXTURES), 'utf8')) as Record<string, { expected_cost_usd?: string | null }>;
/** The markup every test merchant charges: 25% over provider cost. */
const withMarkup = (costUsd: string) => (parseDecimalAttos('cost', costUsd) * 125n) / 100n;

// ------------------------------------------------------------------ local servers

interface Local {
  url: string;
  /** `METHOD /path?query` of every request received, in order. */
  requests: string[];
  close(): Promise<void>;
}

async function listen(handler: RequestListener): Promise<Local> {
  const requests: string[] = [];
  const server = await listenLocally(createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    handler(req, res);
  }));
  return { url: `http://${server.host}`, requests, close: server.close };
}

/**
 * A proxy in front of a provider at `target`, serving it under path prefixes of its own:
 * `[prefix, root]` sends `{prefix}/rest` to `{target}{root}/rest` (Cloudflare's
 * `/v1/{account}/{gateway}/openai/chat/completions` is OpenAI's `/v1/chat/completions`).
 */
function startPrefixProxy(target: string, prefixes: [prefix: string, root: string][]): Promise<Local> {
  return listen((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '/';
    const rule = prefixes.find(([prefix]) => path.startsWith(`${prefix}/`));
    if (!rule) {
      req.resume();
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"no such route on this proxy"}');
      return;
    }
    const upstream = httpRequest(`${target}${rule[1]}${path.slice(rule[0].length)}`, { method: req.method, headers: { ...req.headers, host: new URL(target).host } }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
}

/** A provider answering JSON as `script` says. */
function startScripted(script: (method: string, path: string) => { status: number; body: unknown }): Promise<Local> {
  return listen((req, res) => {
    req.resume();
    req.on('end', () => {
      const { status, body } = script(req.method ?? 'GET', new URL(req.url ?? '/', 'http://upstream').pathname);
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
    });
  });
}

const NOT_FOUND = { status: 404, body: { message: 'Not found' } };

/** Cohere's chat: 1,000 input and 200 output tokens billed. */
const cohereChat = (method: string, path: string) =>
  method === 'POST' && path === '/v2/chat'
    ? {
        status: 200,
        body: {
          id: 'c1', finish_reason: 'COMPLETE', message: { role: 'assistant', content: [{ type: 'text', text: 'ok' }] },
          usage: { billed_units: { input_tokens: 1000, output_tokens: 200 }, tokens: { input_tokens: 1200, output_tokens: 200 } },
        },
      }
    : NOT_FOUND;
/** command-r-08-2024 at $0.15 / $0.60 per million tokens, plus the 25% markup. */
const COHERE_CHARGE = withMarkup('0.00027');

/** Replicate: a create answers `starting`, a poll `succeeded` with one image. */
function replicatePredictions() {
  let next = 0;
  return (method: string, path: string) => {
    const parts = path.split('/');
    if (method === 'POST' && path === '/v1/predictions') return { status: 201, body: { id: `rp${++next}prefixjob0`, status: 'starting', output: null, error: null, metrics: {} } };
    if (method === 'GET' && parts.length === 4 && parts[2] === 'predictions') {
      return { status: 200, body: { id: parts[3], status: 'succeeded', output: ['https://replicate.delivery/out-0.webp'], error: null, metrics: { predict_time: 1.5 } } };
    }
    return NOT_FOUND;
  };
}

let server: TestServer;
let openai: FakeProvider;
let cohere: Local;
let replicate: Local;
let openaiProxy: Local;
let cohereProxy: Local;
let replicateProxy: Local;

beforeAll(async () => {
  [server, openai, cohere, replicate] = await Promise.all([
    startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true', TOLLGATE_GATEWAY_TIMEOUT_MS: '3000' }),
    startFakeProvider(),
    startScripted(cohereChat),
    startScripted(replicatePredictions()),
  ]);
  [openaiProxy, cohereProxy, replicateProxy] = await Promise.all([
    startPrefixProxy(openai.url, [['/v1/acct/gw/openai', '/v1'], ['/openai', '']]),
    startPrefixProxy(cohere.url, [['/v1/acct/gw/cohere', ''], ['/cohere', '']]),
    startPrefixProxy(replicate.url, [['/replicate', '']]),
  ]);
});

afterAll(async () => {
  await Promise.all([server?.close(), openai?.close(), cohere?.close(), replicate?.close(), openaiProxy?.close(), cohereProxy?.close(), replicateProxy?.close()]);
});

// ------------------------------------------------------------------ a merchant

async function gql<T = any>(query: string, variables: Record<string, unknown>, token: string): Promise<T> {
  const response = await server.graphql<T>(query, variables, token);
  if (response.errors) throw new Error(JSON.stringify(response.errors));
  return response.data as T;
}

interface Tenant {
  merchantId: string;
  secret: string;
  customerId: string;
}

/** A merchant with each provider allowed directly and through its proxy, a stored key for each, a 25% markup, holds on, and a customer holding `credit`. */
async function tenant(credit: string): Promise<Tenant> {
  const merchant = await server.createMerchant();
  const hosts: [Local | FakeProvider, string][] = [[openai, 'openai'], [openaiProxy, 'openai'], [cohere, 'cohere'], [cohereProxy, 'cohere']];
  for (const [local, provider] of hosts) {
    await gql(`mutation($h: String!, $p: String!) { putGatewayHost(host: $h, provider: $p) { id } }`, { h: new URL(local.url).host, p: provider }, merchant.secret);
  }
  for (const provider of ['openai', 'cohere']) {
    await gql(`mutation($p: String!, $k: String!) { setProviderCredential(provider: $p, apiKey: $k) { id } }`, { p: provider, k: `${provider}-provider-key-0001` }, merchant.secret);
  }
  await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '25' }, effectiveFrom: new Date('2026-01-01') });
  await gql(`mutation { updateGatewaySettings(reserveMaxCost: true) { gatewayReserveMaxCost } }`, {}, merchant.secret);
  const customerId = (await gql(`mutation { createCustomer(input: { externalId: "prefixed" }) { id } }`, {}, merchant.secret)).createCustomer.id as string;
  if (credit !== '0') {
    await gql(`mutation($c: ID!, $a: Decimal!) { grantCredits(input: { customerId: $c, amount: $a, kind: PAID, idempotencyKey: "seed" }) { __typename } }`, { c: customerId, a: credit }, merchant.secret);
  }
  return { merchantId: merchant.id, secret: merchant.secret, customerId };
}

function call(t: Tenant, method: string, target: string, body?: unknown, token = t.secret) {
  return fetch(`${server.url}/v1/forward?u=${encodeURIComponent(target)}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'x-tollgate-customer': t.customerId, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

/** The hold a call took before the provider was called (by its request id), as it stands after settlement. */
async function holdOf(t: Tenant, response: Response) {
  const idempotencyKey = `gateway-hold:${response.headers.get('x-tollgate-request-id')}`;
  const hold = await server.services.prisma.hold.findFirst({ where: { merchantId: t.merchantId, idempotencyKey } });
  return hold && { amount: hold.amount, captured: hold.capturedAmount, status: hold.status };
}

async function chargesOf(t: Tenant) {
  const events = await server.services.prisma.usageEvent.findMany({ where: { merchantId: t.merchantId }, orderBy: { createdAt: 'asc' } });
  return events.map((event) => ({ charge: BigInt(event.chargeAttos.toFixed(0)), status: event.status, provider: event.provider, api: event.api, model: event.model }));
}

async function balanceNanos(t: Tenant): Promise<bigint> {
  const data = await gql(`query($c: ID!) { wallet(customerId: $c) { balance { amount } held { amount } } }`, { c: t.customerId }, t.secret);
  expect(data.wallet.held.amount).toBe('0.00');
  return parseDecimalNanos('balance', data.wallet.balance.amount);
}

/** A refusal, with the path it names put back to the unprefixed one, so the two compare whole. */
async function refusalOf(response: Response, prefixedPath?: string, unprefixedPath?: string): Promise<Record<string, unknown> & { status: number }> {
  const { error } = (await response.json()) as { error?: Record<string, unknown> & { message: string } };
  if (!error) return { status: response.status };
  const unprefix = (text: string) => (prefixedPath && unprefixedPath ? text.replaceAll(prefixedPath, unprefixedPath) : text);
  return { status: response.status, ...error, message: unprefix(error.message), ...(typeof error.path === 'string' ? { path: unprefix(error.path) } : {}) };
}

// ------------------------------------------------------------------ the calls

const openaiRequest = { model: 'gpt-5.4-mini', max_tokens: 2000, messages: [{ role: 'user', content: 'hello' }] };
const cohereRequest = { model: 'command-r-08-2024', max_tokens: 2000, messages: [{ role: 'user', content: 'hello' }] };

describe('a provider behind a proxy with a path prefix of its own', () => {
  it('Cohere chat through Cloudflare AI Gateway and a company gateway: forwarded to the provider’s path, held, metered and charged as the call without the prefix', async () => {
    const t = await tenant('10');
    const targets = [`${cohere.url}/v2/chat`, `${cohereProxy.url}/v1/acct/gw/cohere/v2/chat`, `${cohereProxy.url}/cohere/v2/chat`];
    cohere.requests.length = 0;
    const responses = [];
    for (const target of targets) {
      const response = await call(t, 'POST', target, cohereRequest);
      expect(response.status, target).toBe(200);
      expect(((await response.json()) as { id: string }).id).toBe('c1');
      responses.push(response);
    }
    expect(cohere.requests).toEqual(Array(3).fill('POST /v2/chat'));
    await gatewayCallsSettled(server, t.merchantId, 3);

    const holds = await Promise.all(responses.map((response) => holdOf(t, response)));
    // More than the call used: its output cap was reserved, then the charge replaced the hold.
    expect(holds[0]!.amount * 1_000_000_000n).toBeGreaterThan(COHERE_CHARGE);
    expect(holds).toEqual([holds[0], holds[0], holds[0]]);
    const charge = { charge: COHERE_CHARGE, status: 'CHARGED', provider: 'cohere', api: 'chat', model: 'command-r-08-2024' };
    expect(await chargesOf(t)).toEqual([charge, charge, charge]);
    const moved = parseDecimalNanos('x', '10') - (await balanceNanos(t));
    expect(moved * 1_000_000_000n - 3n * COHERE_CHARGE).toBeLessThanOrEqual(1_000_000_000n);
  });

  it('OpenAI chat through Cloudflare AI Gateway and a company gateway: held, metered and charged as the call without the prefix', async () => {
    const t = await tenant('10');
    const targets = [`${openai.url}/v1/chat/completions`, `${openaiProxy.url}/v1/acct/gw/openai/chat/completions`, `${openaiProxy.url}/openai/v1/chat/completions`];
    openai.reset();
    const responses = [];
    for (const target of targets) {
      const response = await call(t, 'POST', target, openaiRequest);
      expect(response.status, target).toBe(200);
      responses.push(response);
    }
    expect(openai.requests.map((seen) => `${seen.method} ${seen.path}`)).toEqual(Array(3).fill('POST /v1/chat/completions'));
    await gatewayCallsSettled(server, t.merchantId, 3);

    const holds = await Promise.all(responses.map((response) => holdOf(t, response)));
    expect(holds[0]!.amount).toBeGreaterThan(0n);
    expect(holds).toEqual([holds[0], holds[0], holds[0]]);
    const price = withMarkup(expectedUsage['openai_chat_completion.json']!.expected_cost_usd!);
    expect((await chargesOf(t)).map((c) => [c.status, c.charge])).toEqual(Array(3).fill(['CHARGED', price]));
  });

  it('402 when the credit cannot cover the reservation: the same amount required with and without the prefix, and the provider is not called', async () => {
    const t = await tenant('0.0001');
    const cases: [string[], unknown][] = [
      [[`${cohere.url}/v2/chat`, `${cohereProxy.url}/v1/acct/gw/cohere/v2/chat`, `${cohereProxy.url}/cohere/v2/chat`], { ...cohereRequest, max_tokens: 100_000 }],
      [[`${openai.url}/v1/chat/completions`, `${openaiProxy.url}/v1/acct/gw/openai/chat/completions`], { ...openaiRequest, max_tokens: 100_000 }],
    ];
    for (const local of [cohere, cohereProxy, openaiProxy]) local.requests.length = 0;
    openai.reset();
    for (const [[unprefixed, ...prefixed], body] of cases) {
      const expected = await refusalOf(await call(t, 'POST', unprefixed!, body));
      expect(expected).toMatchObject({ status: 402, code: 'INSUFFICIENT_FUNDS', customerId: t.customerId });
      expect(parseDecimalNanos('required', expected.required as string)).toBeGreaterThan(parseDecimalNanos('x', '0.0001'));
      for (const target of prefixed) expect(await refusalOf(await call(t, 'POST', target, body)), target).toEqual(expected);
    }
    expect([...cohere.requests, ...openai.requests, ...cohereProxy.requests, ...openaiProxy.requests]).toEqual([]);
  });

  it('refused as the call without the prefix: the wrong method on a metered path, a path the gateway cannot meter, a background response; a free read goes through', async () => {
    const t = await tenant('10');
    cohereProxy.requests.length = 0;
    openaiProxy.requests.length = 0;
    const cases: [string, string, string, string, unknown?][] = [
      // [method, provider base, its path, the proxy's prefixed form, body]
      ['GET', cohere.url, '/v2/chat', `${cohereProxy.url}/v1/acct/gw/cohere/v2/chat`],
      ['GET', cohere.url, '/v2/chat', `${cohereProxy.url}/cohere/v2/chat`],
      ['POST', cohere.url, '/v2/datasets', `${cohereProxy.url}/v1/acct/gw/cohere/v2/datasets`, {}],
      ['GET', openai.url, '/v1/chat/completions', `${openaiProxy.url}/v1/acct/gw/openai/chat/completions`],
      ['POST', openai.url, '/v1/batches', `${openaiProxy.url}/v1/acct/gw/openai/batches`, {}],
      ['POST', openai.url, '/v1/responses', `${openaiProxy.url}/openai/v1/responses`, { model: 'gpt-5.4', input: 'hi', background: true }],
    ];
    for (const [method, base, path, prefixed, body] of cases) {
      const expected = await refusalOf(await call(t, method, `${base}${path}`, body));
      expect(expected.status, `${method} ${path}`).toBeGreaterThanOrEqual(400);
      expect(['ENDPOINT_NOT_METERED', 'BACKGROUND_NOT_METERED']).toContain(expected.code);
      const prefixedPath = new URL(prefixed).pathname;
      expect(await refusalOf(await call(t, method, prefixed, body), prefixedPath, path), `${method} ${prefixed}`).toEqual(expected);
    }
    expect([...cohereProxy.requests, ...openaiProxy.requests]).toEqual([]);

    // Listing models costs nothing: forwarded through the prefix as without it.
    const models = await fetch(`${server.url}/v1/forward?u=${encodeURIComponent(`${openaiProxy.url}/v1/acct/gw/openai/models`)}`, {
      headers: { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.customerId, 'x-fake-echo': '1' },
    });
    expect(models.status).toBe(200);
    expect(((await models.json()) as { path: string }).path).toBe('/v1/models');
  });
});

describe('a polled job behind a proxy with a path prefix of its own', () => {
  it('a Replicate prediction created through the prefix is its customer’s: another customer’s token cannot poll it, the owner’s polls are charged once', async () => {
    const merchant = await server.createMerchant();
    for (const local of [replicate, replicateProxy]) {
      await gql(`mutation($h: String!) { putGatewayHost(host: $h, provider: "replicate") { id } }`, { h: new URL(local.url).host }, merchant.secret);
    }
    await gql(`mutation { setProviderCredential(provider: "replicate", apiKey: "replicate-provider-key-0001") { id } }`, {}, merchant.secret);
    await server.services.meters.create(merchant.id, { key: 'images', name: 'Images', unit: 'image', source: 'IMAGES' });
    await server.services.priceRules.put(merchant.id, { name: 'images', type: 'FLAT', meterKey: 'images', config: { unitPrice: '0.05' }, effectiveFrom: new Date('2026-01-01') });
    const customer = async (externalId: string) => {
      const id = (await gql(`mutation($e: String!) { createCustomer(input: { externalId: $e }) { id } }`, { e: externalId }, merchant.secret)).createCustomer.id as string;
      await gql(`mutation($c: ID!, $k: String!) { grantCredits(input: { customerId: $c, amount: "10", kind: PAID, idempotencyKey: $k }) { __typename } }`, { c: id, k: `seed-${externalId}` }, merchant.secret);
      const token = (await gql(`mutation($c: ID!) { createCustomerSession(customerId: $c) { token } }`, { c: id }, merchant.secret)).createCustomerSession.token as string;
      return { merchantId: merchant.id, secret: merchant.secret, customerId: id, token };
    };
    const [a, b] = [await customer('a'), await customer('b')];

    const created = await call(a, 'POST', `${replicateProxy.url}/replicate/v1/predictions`, { version: 'v1', input: { prompt: 'a fox' } }, a.token);
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    await server.services.gateway.drain();
    replicate.requests.length = 0;

    const poll = `${replicateProxy.url}/replicate/v1/predictions/${id}`;
    const byOther = await call(b, 'GET', poll, undefined, b.token);
    expect(byOther.status).toBe(404);
    expect(await refusalOf(byOther)).toMatchObject({ code: 'NOT_FOUND', provider: 'replicate', jobId: id });
    expect(replicate.requests).toEqual([]);
    for (let i = 0; i < 2; i++) expect((await call(a, 'GET', poll, undefined, a.token)).status).toBe(200);
    expect(replicate.requests).toEqual([`GET /v1/predictions/${id}`, `GET /v1/predictions/${id}`]);

    await gatewayCallsSettled(server, merchant.id, 4);
    const charged = await server.services.prisma.usageEvent.findMany({ where: { merchantId: merchant.id, status: 'CHARGED' } });
    expect(charged.map((event) => [event.customerId, event.chargeAttos.toFixed(0)])).toEqual([[a.customerId, (parseDecimalNanos('x', '0.05') * 1_000_000_000n).toString()]]);
    expect(await balanceNanos(a)).toBe(parseDecimalNanos('x', '9.95'));
    expect(await balanceNanos(b)).toBe(parseDecimalNanos('x', '10'));
  });
});
