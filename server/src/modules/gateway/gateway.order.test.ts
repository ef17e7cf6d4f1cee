/**
 * The order of the gateway's checks: what needs no DNS (the customer, the endpoint, credit,
 * spend limit) is answered before the target's name is resolved, so a refused call costs no
 * lookup and a failing or slow DNS does not hide a 404, 403, 402 or 429 behind "Cannot resolve
 * host". The name is still resolved and vetted before anything is sent: a private address is
 * never connected to, and the connection goes to the address that was vetted.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { gatewayTenant, type GatewayTenant } from '../../../test/gateway-harness.ts';
import { listenLocally, type LocalServer } from '../../../test/local-server.ts';
import { graphqlData, startTestServer, type TestServer } from '../../../test/server.ts';

/** The system DNS lookup the gateway uses (destination.ts), scripted per test. */
const lookup = vi.hoisted(() => vi.fn<(hostname: string, options?: unknown) => Promise<{ address: string; family: number }[]>>());
vi.mock('node:dns/promises', async (importOriginal) => ({ ...(await importOriginal<typeof import('node:dns/promises')>()), lookup }));

/** A lookup that fails as getaddrinfo does for a name it cannot resolve. */
const notFound = (hostname: string) => Promise.reject(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }));

let strict: TestServer;
let lenient: TestServer;
let upstream: LocalServer;
/** The local provider's port. */
let port: string;
const seen: { url: string; headers: IncomingHttpHeaders }[] = [];

beforeAll(async () => {
  [strict, lenient, upstream] = await Promise.all([
    startTestServer(),
    startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' }),
    listenLocally(createServer((req, res) => {
      seen.push({ url: req.url!, headers: req.headers });
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion', model: 'gpt-4o-mini', choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } }));
      });
    })),
  ]);
  port = upstream.host.split(':')[1]!;
});

afterAll(async () => {
  await Promise.all([strict?.close(), lenient?.close(), upstream?.close()]);
});

beforeEach(() => {
  lookup.mockReset();
  lookup.mockImplementation(notFound);
  seen.length = 0;
});

let names = 0;
/** A host name of its own per test: the gateway keeps successful DNS answers for a while. */
const freshHost = () => `llm-${++names}-${Math.random().toString(36).slice(2, 8)}.order.test`;

type Tenant = GatewayTenant;

/** A merchant with `host` allowed as OpenAI and an OpenAI key stored, and a customer holding `credit`. */
const tenant = (server: TestServer, host: string, credit: string) => gatewayTenant(server, host, { credit });

async function call(server: TestServer, t: Tenant, target: string, customer = t.externalId): Promise<{ status: number; error: Record<string, unknown> }> {
  const response = await fetch(`${server.url}/v1/forward?u=${encodeURIComponent(target)}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': customer, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
  });
  const body = (await response.json()) as { error?: Record<string, unknown> };
  return { status: response.status, error: body.error ?? {} };
}

/** `promise`'s value, or 'timed out' when it takes longer than `ms`. */
const within = <T>(ms: number, promise: Promise<T>): Promise<T | 'timed out'> =>
  Promise.race([promise, new Promise<'timed out'>((resolve) => setTimeout(() => resolve('timed out'), ms).unref())]);

describe('refusals that need no DNS come before the lookup', () => {
  it('an unknown customer gets 404 while the host cannot be resolved, and no lookup is made', async () => {
    const host = freshHost();
    const t = await tenant(strict, host, '10');
    const answer = await call(strict, t, `https://${host}/v1/chat/completions`, 'nobody-by-that-name');
    expect(answer.status).toBe(404);
    expect(answer.error.code).toBe('NOT_FOUND');
    expect(lookup).not.toHaveBeenCalled();
  });

  it('an unknown customer is answered at once while the DNS lookup would hang', async () => {
    lookup.mockImplementation(() => new Promise(() => undefined));
    const host = freshHost();
    const t = await tenant(strict, host, '10');
    const answer = await within(5_000, call(strict, t, `https://${host}/v1/chat/completions`, 'nobody-by-that-name'));
    expect(answer).toMatchObject({ status: 404, error: { code: 'NOT_FOUND' } });
    expect(lookup).not.toHaveBeenCalled();
  });

  it('a blocked customer gets 403 CUSTOMER_BLOCKED and an archived one 403 CUSTOMER_ARCHIVED, with no lookup', async () => {
    const host = freshHost();
    const t = await tenant(strict, host, '10');
    await graphqlData(strict, `mutation($c: ID!) { blockCustomer(id: $c, reason: "chargeback") { blocked } }`, { c: t.customerId }, t.secret);
    expect(await call(strict, t, `https://${host}/v1/chat/completions`)).toMatchObject({ status: 403, error: { code: 'CUSTOMER_BLOCKED' } });
    await graphqlData(strict, `mutation($c: ID!) { unblockCustomer(id: $c) { blocked } }`, { c: t.customerId }, t.secret);
    await graphqlData(strict, `mutation($c: ID!) { archiveCustomer(id: $c) { archived } }`, { c: t.customerId }, t.secret);
    expect(await call(strict, t, `https://${host}/v1/chat/completions`)).toMatchObject({ status: 403, error: { code: 'CUSTOMER_ARCHIVED' } });
    expect(lookup).not.toHaveBeenCalled();
  });

  it('an endpoint the gateway cannot meter gets 403 ENDPOINT_NOT_METERED, with no lookup', async () => {
    const host = freshHost();
    const t = await tenant(strict, host, '10');
    expect(await call(strict, t, `https://${host}/v1/files`)).toMatchObject({ status: 403, error: { code: 'ENDPOINT_NOT_METERED' } });
    expect(lookup).not.toHaveBeenCalled();
  });

  it('a customer with no credit gets 402 INSUFFICIENT_FUNDS, with no lookup', async () => {
    const host = freshHost();
    const t = await tenant(strict, host, '0');
    expect(await call(strict, t, `https://${host}/v1/chat/completions`)).toMatchObject({ status: 402, error: { code: 'INSUFFICIENT_FUNDS' } });
    expect(lookup).not.toHaveBeenCalled();
  });

  it('a customer at its spend limit gets 429 SPEND_LIMIT_REACHED, with no lookup', async () => {
    const host = freshHost();
    const t = await tenant(strict, host, '10');
    // Spent this month already: more than the limit set next.
    const recorded = await fetch(`${strict.url}/v1/usage`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.secret}`, 'content-type': 'application/json' },
      body: JSON.stringify({ customer: t.customerId, idempotencyKey: 'spent', usage: { provider: 'openai', model: 'gpt-4o-mini', inputTokens: 100_000, outputTokens: 100_000 } }),
    });
    expect(recorded.status).toBe(200);
    await graphqlData(strict, `mutation($c: ID!) { setSpendLimit(customerId: $c, amount: "0.000001") { id } }`, { c: t.customerId }, t.secret);
    expect(await call(strict, t, `https://${host}/v1/chat/completions`)).toMatchObject({ status: 429, error: { code: 'SPEND_LIMIT_REACHED' } });
    expect(lookup).not.toHaveBeenCalled();
  });
});

describe('a call that passes those checks is resolved and vetted before it goes out', () => {
  it('a host that cannot be resolved still gets 400 naming it, once the customer may call', async () => {
    const host = freshHost();
    const t = await tenant(strict, host, '10');
    const answer = await call(strict, t, `https://${host}/v1/chat/completions`);
    expect(answer.status).toBe(400);
    expect(answer.error).toMatchObject({ code: 'VALIDATION', field: 'u', host });
    expect(String(answer.error.message)).toContain('Cannot resolve host');
    expect(lookup).toHaveBeenCalledTimes(1);
    expect(lookup.mock.calls[0]![0]).toBe(host);
  });

  it('a name resolving to a private address is refused 403 and nothing is sent to it', async () => {
    const host = freshHost();
    // The name's answer is the local provider: reachable, but never to be reached from here.
    lookup.mockImplementation(async () => [{ address: '127.0.0.1', family: 4 }]);
    const t = await tenant(strict, `${host}:${port}`, '10');
    const answer = await call(strict, t, `http://${host}:${port}/v1/chat/completions`);
    expect(answer).toMatchObject({ status: 403, error: { code: 'FORBIDDEN', host } });
    expect(String(answer.error.message)).toContain('private or reserved address');
    expect(lookup).toHaveBeenCalledTimes(1);
    expect(seen).toEqual([]);
  });

  it('a name resolving to public and private addresses alike is refused: every answer is vetted', async () => {
    const host = freshHost();
    lookup.mockImplementation(async () => [{ address: '8.8.8.8', family: 4 }, { address: '169.254.169.254', family: 4 }]);
    const t = await tenant(strict, host, '10');
    expect(await call(strict, t, `https://${host}/v1/chat/completions`)).toMatchObject({ status: 403, error: { code: 'FORBIDDEN', host } });
    expect(seen).toEqual([]);
  });

  it('an IP address that is not public is refused before the customer is looked up (no DNS to wait for)', async () => {
    const t = await tenant(strict, `127.0.0.1:${port}`, '10');
    expect(await call(strict, t, `http://127.0.0.1:${port}/v1/chat/completions`, 'nobody-by-that-name')).toMatchObject({ status: 403, error: { code: 'FORBIDDEN' } });
    expect(lookup).not.toHaveBeenCalled();
    expect(seen).toEqual([]);
  });

  it('the connection goes to the address the lookup answered and the gateway vetted (pinned), under the name asked for', async () => {
    const host = freshHost();
    lookup.mockImplementation(async () => [{ address: '127.0.0.1', family: 4 }]);
    const t = await tenant(lenient, `${host}:${port}`, '10');
    const answer = await call(lenient, t, `http://${host}:${port}/v1/chat/completions`);
    expect(answer.status).toBe(200);
    expect(lookup).toHaveBeenCalledTimes(1);
    expect(lookup.mock.calls[0]![0]).toBe(host);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.headers.host).toBe(`${host}:${port}`);
  });
});
