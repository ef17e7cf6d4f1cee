/**
 * Asynchronous provider jobs through the gateway (Replicate predictions, fal queue requests,
 * Stability and Black Forest Labs generations): a job is created for one customer, then polled
 * and cancelled by its id. A customer session token may reach only the jobs the gateway created
 * for its own customer; a secret key may poll any job id, except one created for another customer
 * than the one it names. Refused polls never reach the provider.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AppError } from '../../shared/errors.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { listenLocally } from '../../../test/local-server.ts';
import { gatewayCallsSettled, startTestServer, type TestServer } from '../../../test/server.ts';
import { definitionForName, findProviderPath, route, splitUrl } from '../usage/normalize/registry.ts';
import type { UsageRecordInput } from '../usage/usage.service.ts';
import { replayable } from './gateway.settlement.ts';
import { createdJobId, jobCallOf } from './jobs.ts';

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true', TOLLGATE_GATEWAY_TIMEOUT_MS: '3000' });
});

afterAll(async () => {
  await server?.close();
});

async function gql<T = any>(query: string, variables: Record<string, unknown>, token: string): Promise<T> {
  const response = await server.graphql<T>(query, variables, token);
  if (response.errors) throw new Error(JSON.stringify(response.errors));
  return response.data as T;
}

// ------------------------------------------------------------------ a scripted provider

interface Upstream {
  url: string;
  /** `METHOD /path?query` of every request received, in order. */
  requests: string[];
  close(): Promise<void>;
}

type Answer = { status: number; body: unknown };
type Script = (method: string, path: string, url: URL) => Answer;

/** A local HTTP provider answering JSON as `script` says, and recording what it was asked. */
async function startUpstream(script: Script): Promise<Upstream> {
  const requests: string[] = [];
  const server = await listenLocally(createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    req.on('end', () => {
      requests.push(`${req.method} ${req.url}`);
      const url = new URL(req.url ?? '/', 'http://upstream');
      const { status, body } = script(req.method ?? 'GET', url.pathname, url);
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  }));
  return { url: `http://${server.host}`, requests, close: server.close };
}

const notFoundAnswer: Answer = { status: 404, body: { detail: 'Not found' } };

/** Replicate: creates answer `starting` with a fresh id; a poll answers `succeeded` with one image; a cancel answers `canceled`. */
function replicateScript(): Script {
  let next = 0;
  return (method, path) => {
    const parts = path.split('/');
    if (method === 'POST' && (path === '/v1/predictions' || /^\/v1\/models\/[^/]+\/[^/]+\/predictions$/.test(path))) {
      const id = `rp${++next}q7d3k2mbx0rgt8a`;
      return { status: 201, body: { id, model: 'black-forest-labs/flux-schnell', version: 'v1', input: { prompt: 'a fox' }, status: 'starting', output: null, error: null, metrics: {} } };
    }
    if (method === 'GET' && parts.length === 4 && parts[2] === 'predictions') {
      return {
        status: 200,
        body: { id: parts[3], model: 'black-forest-labs/flux-schnell', version: 'v1', status: 'succeeded', output: ['https://replicate.delivery/out-0.webp'], error: null, metrics: { predict_time: 1.5 } },
      };
    }
    if (method === 'POST' && parts.length === 5 && parts[4] === 'cancel') return { status: 200, body: { id: parts[3], status: 'canceled', output: null, error: null, metrics: {} } };
    return notFoundAnswer;
  };
}

/** fal's queue: a submit answers a request_id; status, result (one image) and cancel by that id. */
function falScript(): Script {
  let next = 0;
  return (method, path) => {
    const at = path.indexOf('/requests/');
    if (at === -1 && method === 'POST') {
      const id = `0b6e1c52-7f0a-4d7e-9d1b-00000000000${++next}`;
      return { status: 200, body: { request_id: id, status: 'IN_QUEUE', response_url: `https://queue.fal.run/fal-ai/flux/requests/${id}`, status_url: `https://queue.fal.run/fal-ai/flux/requests/${id}/status` } };
    }
    if (path.endsWith('/status') && method === 'GET') return { status: 200, body: { status: 'COMPLETED' } };
    if (path.endsWith('/cancel') && method === 'PUT') return { status: 400, body: { status: 'ALREADY_COMPLETED' } };
    if (method === 'GET') return { status: 200, body: { images: [{ url: 'https://v3.fal.media/out.jpg', width: 1024, height: 768 }], timings: { inference: 1.2 }, seed: 7 } };
    return notFoundAnswer;
  };
}

// ------------------------------------------------------------------ a merchant with two customers

interface Customer {
  id: string;
  externalId: string;
  /** A customer session token, as the customer's browser holds it. */
  token: string;
}

interface Tenant {
  merchantId: string;
  secret: string;
  a: Customer;
  b: Customer;
}

/** A merchant charging 0.05 per image, with `upstream` allowed as `provider` and a stored key for it, and two customers with 10 of credit each. */
async function tenant(provider: string, upstream: Upstream): Promise<Tenant> {
  const merchant = await server.createMerchant();
  await gql(`mutation($host: String!, $p: String!) { putGatewayHost(host: $host, provider: $p) { id } }`, { host: new URL(upstream.url).host, p: provider }, merchant.secret);
  await gql(`mutation($p: String!) { setProviderCredential(provider: $p, apiKey: "provider-key-0001") { id } }`, { p: provider }, merchant.secret);
  await server.services.meters.create(merchant.id, { key: 'images', name: 'Images', unit: 'image', source: 'IMAGES' });
  await server.services.priceRules.put(merchant.id, { name: 'images', type: 'FLAT', meterKey: 'images', config: { unitPrice: '0.05' }, effectiveFrom: new Date('2026-01-01') });
  const customer = async (): Promise<Customer> => {
    const externalId = `user-${Math.random().toString(36).slice(2)}`;
    const id = (await gql(`mutation($e: String!) { createCustomer(input: { externalId: $e }) { id } }`, { e: externalId }, merchant.secret)).createCustomer.id as string;
    await gql(`mutation($c: ID!, $k: String!) { grantCredits(input: { customerId: $c, amount: "10", kind: PAID, idempotencyKey: $k }) { __typename } }`, { c: id, k: `seed-${id}` }, merchant.secret);
    const token = (await gql(`mutation($c: ID!) { createCustomerSession(customerId: $c) { token } }`, { c: id }, merchant.secret)).createCustomerSession.token as string;
    return { id, externalId, token };
  };
  return { merchantId: merchant.id, secret: merchant.secret, a: await customer(), b: await customer() };
}

const forwardUrl = (target: string) => `${server.url}/v1/forward?u=${encodeURIComponent(target)}`;
const asToken = (customer: Customer) => ({ authorization: `Bearer ${customer.token}` });
const asBackend = (t: Tenant, customer: Customer) => ({ authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': customer.externalId });

function call(method: string, target: string, headers: Record<string, string>, body?: unknown) {
  return fetch(forwardUrl(target), {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

const settled = (t: Tenant, count: number) => gatewayCallsSettled(server, t.merchantId, count);

async function balance(t: Tenant, customer: Customer): Promise<bigint> {
  const data = await gql(`query($c: ID!) { wallet(customerId: $c) { balance { amount } } }`, { c: customer.id }, t.secret);
  return parseDecimalNanos('balance', data.wallet.balance.amount);
}

async function chargesOf(t: Tenant) {
  const events = await server.services.prisma.usageEvent.findMany({ where: { merchantId: t.merchantId, status: 'CHARGED' }, orderBy: { createdAt: 'asc' } });
  return events.map((event) => ({ customerId: event.customerId, charge: event.chargeAttos.toFixed(0) }));
}

const FIVE_CENTS_ATTOS = (parseDecimalNanos('x', '0.05') * 1_000_000_000n).toString();

async function expectNotYours(response: Response) {
  expect(response.status).toBe(404);
  expect(response.headers.get('content-type')).toContain('application/json');
  const body = (await response.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe('NOT_FOUND');
  expect(body.error.message).toMatch(/not one this customer created through the gateway/);
}

async function expectOtherCustomers(response: Response) {
  expect(response.status).toBe(403);
  const body = (await response.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe('FORBIDDEN');
  expect(body.error.message).toMatch(/another customer/);
}

// ------------------------------------------------------------------ Replicate

describe('Replicate predictions', () => {
  let upstream: Upstream;
  beforeAll(async () => {
    upstream = await startUpstream(replicateScript());
  });
  afterAll(async () => {
    await upstream?.close();
  });

  it("a customer token cannot poll or cancel another customer's prediction: 404, and the provider is never called; the owner's polls pass and are charged once", async () => {
    const t = await tenant('replicate', upstream);
    const created = await call('POST', `${upstream.url}/v1/predictions`, asToken(t.a), { version: 'v1', input: { prompt: 'a fox' } });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    upstream.requests.length = 0;

    await expectNotYours(await call('GET', `${upstream.url}/v1/predictions/${id}`, asToken(t.b)));
    await expectNotYours(await call('POST', `${upstream.url}/v1/predictions/${id}/cancel`, asToken(t.b), {}));
    // Spelled differently, it is still not B's.
    await expectNotYours(await call('GET', `${upstream.url}/v1/predictions/${id.toUpperCase()}`, asToken(t.b)));
    await expectNotYours(await call('GET', `${upstream.url}/v1/predictions/%${id.charCodeAt(0).toString(16)}${id.slice(1)}`, asToken(t.b)));
    expect(upstream.requests).toEqual([]);

    for (let poll = 0; poll < 2; poll++) {
      const response = await call('GET', `${upstream.url}/v1/predictions/${id}`, asToken(t.a));
      expect(response.status).toBe(200);
      expect(((await response.json()) as { status: string }).status).toBe('succeeded');
    }
    expect((await call('POST', `${upstream.url}/v1/predictions/${id}/cancel`, asToken(t.a), {})).status).toBe(200);
    expect(upstream.requests).toEqual([`GET /v1/predictions/${id}`, `GET /v1/predictions/${id}`, `POST /v1/predictions/${id}/cancel`]);

    const logs = await settled(t, 8);
    expect(logs.filter((log) => log.outcome === 'REFUSED').map((log) => [log.status, log.errorCode, log.customerId])).toEqual(Array(4).fill([404, 'NOT_FOUND', t.b.id]));
    expect(await chargesOf(t)).toEqual([{ customerId: t.a.id, charge: FIVE_CENTS_ATTOS }]);
    expect(await balance(t, t.a)).toBe(parseDecimalNanos('x', '9.95'));
    expect(await balance(t, t.b)).toBe(parseDecimalNanos('x', '10'));
  });

  it('a secret key naming another customer than the one a prediction was created for is refused; naming the right one, or a job never seen, it is forwarded', async () => {
    const t = await tenant('replicate', upstream);
    // Created by the backend for A, through a model's own endpoint.
    const created = await call('POST', `${upstream.url}/v1/models/black-forest-labs/flux-schnell/predictions`, asBackend(t, t.a), { input: { prompt: 'a fox' } });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    upstream.requests.length = 0;

    await expectOtherCustomers(await call('GET', `${upstream.url}/v1/predictions/${id}`, asBackend(t, t.b)));
    await expectOtherCustomers(await call('POST', `${upstream.url}/v1/predictions/${id}/cancel`, asBackend(t, t.b), {}));
    await expectOtherCustomers(await call('GET', `${upstream.url}/v1/predictions/${id.toUpperCase()}`, asBackend(t, t.b)));
    // By the customer's id instead of its externalId: the same customer, the same refusal.
    await expectOtherCustomers(await call('GET', `${upstream.url}/v1/predictions/${id}`, { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.b.id }));
    expect(upstream.requests).toEqual([]);

    // A's own token reaches it (the backend created it for A).
    expect((await call('GET', `${upstream.url}/v1/predictions/${id}`, asToken(t.a))).status).toBe(200);
    expect((await call('GET', `${upstream.url}/v1/predictions/${id}`, asBackend(t, t.a))).status).toBe(200);

    // A prediction the backend created directly with Replicate: a secret key polls it as before; no token does.
    const outside = 'outsidegatewayjob0001';
    await expectNotYours(await call('GET', `${upstream.url}/v1/predictions/${outside}`, asToken(t.b)));
    expect((await call('GET', `${upstream.url}/v1/predictions/${outside}`, asBackend(t, t.b))).status).toBe(200);
    expect(upstream.requests).toEqual([`GET /v1/predictions/${id}`, `GET /v1/predictions/${id}`, `GET /v1/predictions/${outside}`]);

    await settled(t, 9);
    expect(await chargesOf(t)).toEqual([{ customerId: t.a.id, charge: FIVE_CENTS_ATTOS }, { customerId: t.b.id, charge: FIVE_CENTS_ATTOS }]);
  });

  it('a create the provider refused records nothing, and a create whose record cannot be written still answers the caller', async () => {
    const t = await tenant('replicate', upstream);
    const refusing = await startUpstream(() => ({ status: 422, body: { id: 'refusedjob0001', detail: 'invalid version' } }));
    try {
      await gql(`mutation($host: String!) { putGatewayHost(host: $host, provider: "replicate") { id } }`, { host: new URL(refusing.url).host }, t.secret);
      expect((await call('POST', `${refusing.url}/v1/predictions`, asToken(t.a), { version: 'nope' })).status).toBe(422);
      await server.services.gateway.drain();
      expect(await server.services.prisma.gatewayJob.findMany({ where: { merchantId: t.merchantId } })).toEqual([]);
    } finally {
      await refusing.close();
    }

    const failing = vi.spyOn(server.services.prisma.gatewayJob, 'createMany').mockRejectedValue(new Error('database unavailable'));
    try {
      const created = await call('POST', `${upstream.url}/v1/predictions`, asToken(t.a), { version: 'v1', input: {} });
      expect(created.status).toBe(201);
      const { id } = (await created.json()) as { id: string };
      await server.services.gateway.drain();
      expect(failing).toHaveBeenCalled();
      // Unrecorded, it is nobody's: the token is refused rather than trusted.
      await expectNotYours(await call('GET', `${upstream.url}/v1/predictions/${id}`, asToken(t.a)));
    } finally {
      failing.mockRestore();
    }
  });
});

// ------------------------------------------------------------------ fal

describe('job records past their retention', () => {
  it('are pruned in batches, newer ones kept, and a pruned job is then unknown to a customer token', async () => {
    const merchant = await server.createMerchant();
    const customer = (await server.services.customers.create(merchant.id, { externalId: 'prune' })).id;
    const day = 24 * 3600 * 1000;
    const old = new Date(Date.now() - 31 * day);
    await server.services.prisma.gatewayJob.createMany({
      data: [
        ...Array.from({ length: 5 }, (_, i) => ({ merchantId: merchant.id, provider: 'replicate', jobId: `old-${i}`, customerId: customer, createdAt: old })),
        { merchantId: merchant.id, provider: 'replicate', jobId: 'recent', customerId: customer, createdAt: new Date(Date.now() - 29 * day) },
      ],
    });
    expect(await server.services.gateway.jobs.prune(new Date(Date.now() - 30 * day), 2)).toBe(5);
    const left = await server.services.prisma.gatewayJob.findMany({ where: { merchantId: merchant.id }, select: { jobId: true } });
    expect(left.map((row) => row.jobId)).toEqual(['recent']);
    expect([...(await server.services.gateway.jobs.records(merchant.id, 'replicate', ['old-0', 'recent'])).keys()]).toEqual(['recent']);
    expect(await server.services.gateway.jobs.prune(new Date(Date.now() - 30 * day))).toBe(0);
  });
});

describe('fal queue requests', () => {
  let upstream: Upstream;
  beforeAll(async () => {
    upstream = await startUpstream(falScript());
  });
  afterAll(async () => {
    await upstream?.close();
  });

  it("a customer token cannot read the status or result of another customer's request, nor cancel it; the owner can, and its result is charged once", async () => {
    const t = await tenant('fal', upstream);
    const created = await call('POST', `${upstream.url}/fal-ai/flux/dev`, asToken(t.a), { prompt: 'a fox' });
    expect(created.status).toBe(200);
    const { request_id: id } = (await created.json()) as { request_id: string };
    upstream.requests.length = 0;
    const base = `${upstream.url}/fal-ai/flux/requests/${id}`;

    await expectNotYours(await call('GET', `${base}/status`, asToken(t.b)));
    await expectNotYours(await call('GET', `${base}/status/stream`, asToken(t.b)));
    await expectNotYours(await call('GET', base, asToken(t.b)));
    await expectNotYours(await call('PUT', `${base}/cancel`, asToken(t.b), {}));
    // B's own request id first, A's after it: every id in the path must be B's.
    const own = ((await (await call('POST', `${upstream.url}/fal-ai/flux/dev`, asToken(t.b), { prompt: 'mine' })).json()) as { request_id: string }).request_id;
    await expectNotYours(await call('GET', `${upstream.url}/fal-ai/flux/requests/${own}/requests/${id}`, asToken(t.b)));
    expect(upstream.requests).toEqual(['POST /fal-ai/flux/dev']);
    upstream.requests.length = 0;

    expect((await call('GET', `${base}/status`, asToken(t.a))).status).toBe(200);
    for (let fetches = 0; fetches < 2; fetches++) expect((await call('GET', base, asToken(t.a))).status).toBe(200);
    expect((await call('PUT', `${base}/cancel`, asToken(t.a), {})).status).toBe(400);
    expect(upstream.requests).toEqual([`GET /fal-ai/flux/requests/${id}/status`, `GET /fal-ai/flux/requests/${id}`, `GET /fal-ai/flux/requests/${id}`, `PUT /fal-ai/flux/requests/${id}/cancel`]);

    await settled(t, 11);
    expect(await chargesOf(t)).toEqual([{ customerId: t.a.id, charge: FIVE_CENTS_ATTOS }]);
    expect(await balance(t, t.b)).toBe(parseDecimalNanos('x', '10'));
  });

  it('a result is charged for the model its submit named, priced by a rule for that model: its URL names only the app', async () => {
    const t = await tenant('fal', upstream);
    // flux/dev costs more than the flat rate for images: a rule for the model, not the app.
    await server.services.priceRules.put(t.merchantId, { name: 'flux-dev', type: 'FLAT', meterKey: 'images', model: 'fal-ai/flux/dev', config: { unitPrice: '0.25' }, effectiveFrom: new Date('2026-01-01') });
    const created = await call('POST', `${upstream.url}/fal-ai/flux/dev`, asToken(t.a), { prompt: 'a fox' });
    const { request_id: id } = (await created.json()) as { request_id: string };
    expect((await call('GET', `${upstream.url}/fal-ai/flux/requests/${id}`, asToken(t.a))).status).toBe(200);
    await settled(t, 2);
    const events = await server.services.prisma.usageEvent.findMany({ where: { merchantId: t.merchantId, status: 'CHARGED' } });
    expect(events.map((event) => [event.model, event.chargeAttos.toFixed(0)])).toEqual([['fal-ai/flux/dev', (parseDecimalNanos('x', '0.25') * 1_000_000_000n).toString()]]);
    // A request the gateway never saw created is charged as its URL names it.
    const outside = '6e7f8a90-1a2b-4c3d-8e9f-0a1b2c3d4e5f';
    expect((await call('GET', `${upstream.url}/fal-ai/flux/requests/${outside}`, asBackend(t, t.b))).status).toBe(200);
    await settled(t, 3);
    const outsideEvent = await server.services.prisma.usageEvent.findFirst({ where: { merchantId: t.merchantId, customerId: t.b.id } });
    expect(outsideEvent?.model).toBe('fal-ai/flux');
  });

  it('a result the gateway gave up charging is logged with the model its submit named, so replaying the log line charges what the gateway would have', async () => {
    const t = await tenant('fal', upstream);
    await server.services.priceRules.put(t.merchantId, { name: 'flux-dev', type: 'FLAT', meterKey: 'images', model: 'fal-ai/flux/dev', config: { unitPrice: '0.25' }, effectiveFrom: new Date('2026-01-01') });
    const created = await call('POST', `${upstream.url}/fal-ai/flux/dev`, asToken(t.a), { prompt: 'a fox' });
    const { request_id: id } = (await created.json()) as { request_id: string };
    await server.services.gateway.drain();
    // Its charge fails: what the gateway handed to be charged is the record its log line holds.
    const given: UsageRecordInput[] = [];
    const charging = vi.spyOn(server.services.usage, 'record').mockImplementation(async (_merchantId, _actor, records) => {
      given.push(...records);
      return records.map(() => ({ ok: false as const, error: new AppError('INTERNAL', 'not charged (test)') }));
    });
    try {
      expect((await call('GET', `${upstream.url}/fal-ai/flux/requests/${id}`, asToken(t.a))).status).toBe(200);
      await settled(t, 2);
    } finally {
      charging.mockRestore();
    }
    expect(given).toHaveLength(1);
    expect(await chargesOf(t)).toEqual([]);

    const logged = JSON.parse(JSON.stringify(replayable(given[0]!))) as { response: { model?: string } };
    expect(logged.response.model).toBe('fal-ai/flux/dev');
    const replayed = await fetch(`${server.url}/v1/usage`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${t.secret}` }, body: JSON.stringify(logged),
    });
    expect(replayed.status).toBe(200);
    const events = await server.services.prisma.usageEvent.findMany({ where: { merchantId: t.merchantId, status: 'CHARGED' } });
    expect(events.map((event) => [event.customerId, event.model, event.chargeAttos.toFixed(0)])).toEqual([[t.a.id, 'fal-ai/flux/dev', (parseDecimalNanos('x', '0.25') * 1_000_000_000n).toString()]]);
  });

  it("a secret key naming another customer is refused on status, result and cancel; a request never seen is forwarded", async () => {
    const t = await tenant('fal', upstream);
    const created = await call('POST', `${upstream.url}/fal-ai/flux/dev`, asBackend(t, t.a), { prompt: 'a fox' });
    const { request_id: id } = (await created.json()) as { request_id: string };
    upstream.requests.length = 0;
    const base = `${upstream.url}/fal-ai/flux/requests/${id}`;

    await expectOtherCustomers(await call('GET', `${base}/status`, asBackend(t, t.b)));
    await expectOtherCustomers(await call('GET', base, asBackend(t, t.b)));
    await expectOtherCustomers(await call('PUT', `${base}/cancel`, asBackend(t, t.b), {}));
    expect(upstream.requests).toEqual([]);

    expect((await call('GET', base, asBackend(t, t.a))).status).toBe(200);
    const outside = '5d7e8f90-1a2b-4c3d-8e9f-0a1b2c3d4e5f';
    await expectNotYours(await call('GET', `${upstream.url}/fal-ai/flux/requests/${outside}`, asToken(t.b)));
    expect((await call('GET', `${upstream.url}/fal-ai/flux/requests/${outside}/status`, asBackend(t, t.b))).status).toBe(200);
    expect((await call('GET', `${upstream.url}/fal-ai/flux/requests/${outside}`, asBackend(t, t.b))).status).toBe(200);
    expect((await call('PUT', `${upstream.url}/fal-ai/flux/requests/${outside}/cancel`, asBackend(t, t.b), {})).status).toBe(400);
    expect(upstream.requests).toEqual([
      `GET /fal-ai/flux/requests/${id}`,
      `GET /fal-ai/flux/requests/${outside}/status`,
      `GET /fal-ai/flux/requests/${outside}`,
      `PUT /fal-ai/flux/requests/${outside}/cancel`,
    ]);
    await settled(t, 9);
    expect(await chargesOf(t)).toEqual([{ customerId: t.a.id, charge: FIVE_CENTS_ATTOS }, { customerId: t.b.id, charge: FIVE_CENTS_ATTOS }]);
  });
});

// ------------------------------------------------------------------ Stability and Black Forest Labs

describe('Stability and Black Forest Labs generations', () => {
  it("a customer token reaches only its own customer's results", async () => {
    const stability = await startUpstream((method, path) => {
      if (method === 'POST' && path.startsWith('/v2beta/stable-image/upscale/')) return { status: 200, body: { id: 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90' } };
      if (method === 'GET' && path.startsWith('/v2beta/results/')) return { status: 202, body: { id: path.slice('/v2beta/results/'.length), status: 'in-progress' } };
      return notFoundAnswer;
    });
    const bfl = await startUpstream((method, path, url) => {
      if (method === 'POST' && path === '/v1/flux-pro-1.1') return { status: 200, body: { id: '7c0f6a3e-2b1d-4e5f-9a8b-0c1d2e3f4a5b', polling_url: 'https://api.bfl.ai/v1/get_result?id=7c0f6a3e-2b1d-4e5f-9a8b-0c1d2e3f4a5b', cost: 4 } };
      if (method === 'GET' && path === '/v1/get_result') return { status: 200, body: { id: url.searchParams.get('id'), status: 'Pending' } };
      return notFoundAnswer;
    });
    try {
      const t = await tenant('stability', stability);
      await gql(`mutation($host: String!) { putGatewayHost(host: $host, provider: "bfl") { id } }`, { host: new URL(bfl.url).host }, t.secret);
      await gql(`mutation { setProviderCredential(provider: "bfl", apiKey: "provider-key-0001") { id } }`, {}, t.secret);

      const generation = (await (await call('POST', `${stability.url}/v2beta/stable-image/upscale/creative`, asToken(t.a), { prompt: 'a fox' })).json()) as { id: string };
      const job = (await (await call('POST', `${bfl.url}/v1/flux-pro-1.1`, asToken(t.a), { prompt: 'a fox' })).json()) as { id: string };
      stability.requests.length = 0;
      bfl.requests.length = 0;

      await expectNotYours(await call('GET', `${stability.url}/v2beta/results/${generation.id}`, asToken(t.b)));
      await expectNotYours(await call('GET', `${bfl.url}/v1/get_result?id=${job.id}`, asToken(t.b)));
      // A parameter name spelled with an escape still names the id; two ids must both be B's.
      await expectNotYours(await call('GET', `${bfl.url}/v1/get_result?i%64=${job.id}`, asToken(t.b)));
      await expectNotYours(await call('GET', `${bfl.url}/v1/get_result`, asToken(t.b)));
      await expectOtherCustomers(await call('GET', `${bfl.url}/v1/get_result?id=unknown-job&id=${job.id}`, asBackend(t, t.b)));
      expect([...stability.requests, ...bfl.requests]).toEqual([]);

      expect((await call('GET', `${stability.url}/v2beta/results/${generation.id}`, asToken(t.a))).status).toBe(202);
      expect((await call('GET', `${bfl.url}/v1/get_result?id=${job.id}`, asToken(t.a))).status).toBe(200);
      expect((await call('GET', `${bfl.url}/v1/get_result?id=never-seen-0001`, asBackend(t, t.b))).status).toBe(200);
      expect([...stability.requests, ...bfl.requests]).toEqual([`GET /v2beta/results/${generation.id}`, `GET /v1/get_result?id=${job.id}`, 'GET /v1/get_result?id=never-seen-0001']);
    } finally {
      await Promise.all([stability.close(), bfl.close()]);
    }
  });
});

// ------------------------------------------------------------------ which calls are job calls

describe('jobCallOf', () => {
  const of = (provider: string, method: string, url: string) => {
    const parts = splitUrl(url);
    const match = route(definitionForName(provider)!, parts);
    return match ? jobCallOf(provider, parts, match, method) : 'unrouted';
  };

  it('leaves every other API alone', () => {
    expect(of('openai', 'POST', 'https://api.openai.com/v1/chat/completions')).toBeNull();
    expect(of('anthropic', 'POST', 'https://api.anthropic.com/v1/messages')).toBeNull();
    expect(of('google', 'POST', 'https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent')).toBeNull();
  });

  it('knows the creates, and the ids a poll or cancel names (percent-decoded, lower-case)', () => {
    expect(of('replicate', 'POST', 'https://api.replicate.com/v1/predictions')).toEqual({ kind: 'create', provider: 'replicate' });
    expect(of('replicate', 'POST', 'https://api.replicate.com/v1/deployments/acme/flux/predictions')).toEqual({ kind: 'create', provider: 'replicate' });
    expect(of('replicate', 'GET', 'https://api.replicate.com/v1/predictions/AbC%31')).toEqual({ kind: 'byId', provider: 'replicate', ids: ['abc1'] });
    expect(of('replicate', 'POST', 'https://api.replicate.com/v1/predictions/abc/cancel')).toEqual({ kind: 'byId', provider: 'replicate', ids: ['abc'] });
    // Behind Cloudflare AI Gateway, whose …/replicate stands for https://api.replicate.com/v1.
    const cloudflare = (method: string, path: string) => {
      const found = findProviderPath(definitionForName('replicate')!, splitUrl(`https://gateway.ai.cloudflare.com/v1/acct/gw/replicate${path}`));
      return found ? jobCallOf('replicate', found.parts, found.match, method) : 'unrouted';
    };
    expect(cloudflare('POST', '/predictions')).toEqual({ kind: 'create', provider: 'replicate' });
    expect(cloudflare('GET', '/predictions/AbC%31')).toEqual({ kind: 'byId', provider: 'replicate', ids: ['abc1'] });
    expect(cloudflare('POST', '/predictions/abc/cancel')).toEqual({ kind: 'byId', provider: 'replicate', ids: ['abc'] });
    expect(of('fal', 'POST', 'https://queue.fal.run/fal-ai/flux/dev')).toEqual({ kind: 'create', provider: 'fal' });
    expect(of('fal', 'GET', 'https://queue.fal.run/fal-ai/flux/requests/r1/status/stream')).toEqual({ kind: 'byId', provider: 'fal', ids: ['r1'] });
    expect(of('fal', 'PUT', 'https://queue.fal.run/fal-ai/flux/requests/r1/cancel')).toEqual({ kind: 'byId', provider: 'fal', ids: ['r1'] });
    expect(of('fal', 'GET', 'https://queue.fal.run/a/requests/r1/requests/r2')).toEqual({ kind: 'byId', provider: 'fal', ids: ['r1', 'r2'] });
    expect(of('stability', 'POST', 'https://api.stability.ai/v2beta/stable-image/upscale/creative')).toEqual({ kind: 'create', provider: 'stability' });
    expect(of('stability', 'GET', 'https://api.stability.ai/v2beta/results/G1')).toEqual({ kind: 'byId', provider: 'stability', ids: ['g1'] });
    expect(of('bfl', 'POST', 'https://api.bfl.ai/v1/flux-pro-1.1')).toEqual({ kind: 'create', provider: 'bfl' });
    expect(of('bfl', 'GET', 'https://api.bfl.ai/v1/get_result?i%64=B1&x=1&id=b2')).toEqual({ kind: 'byId', provider: 'bfl', ids: ['b1', 'b2'] });
    expect(of('bfl', 'GET', 'https://api.bfl.ai/v1/get_result')).toEqual({ kind: 'byId', provider: 'bfl', ids: [] });
  });

  it('reads the id a create answered with', () => {
    expect(createdJobId('replicate', JSON.stringify({ id: 'Ufawqhfynnddngldkgtslldrkq', status: 'starting' }))).toBe('ufawqhfynnddngldkgtslldrkq');
    expect(createdJobId('fal', JSON.stringify({ request_id: '764cabcf-b745-4b3e-ae38-1200304cf45b', id: 'other' }))).toBe('764cabcf-b745-4b3e-ae38-1200304cf45b');
    expect(createdJobId('bfl', ' {"id": "b1", "polling_url": "https://api.bfl.ai/v1/get_result?id=b1"}')).toBe('b1');
    for (const body of [null, '', 'data: {"id":"x"}\n\n', '{"id":', '[{"id":"x"}]', '{"id":7}', '{"id":""}', JSON.stringify({ id: 'x'.repeat(201) }), JSON.stringify({ id: 'a b' })]) {
      expect(createdJobId('stability', body)).toBeNull();
    }
  });
});
