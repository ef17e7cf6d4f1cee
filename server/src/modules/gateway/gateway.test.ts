/**
 * The gateway end to end: a real server, fake providers serving the recorded fixtures, and the
 * official OpenAI and Anthropic SDKs pointed at the gateway with nothing changed but their
 * base URL and key. Balances must move by exactly the priced amounts.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type RequestListener } from 'node:http';
import { connect, createServer as createTcpServer } from 'node:net';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { formatAttos, parseDecimalAttos, parseDecimalNanos } from '../../shared/money.ts';
import { eventStreamFrame } from '../../../test/aws-event-stream.ts';
import { PROVIDER_FIXTURES, splitSseEvents, startFakeProvider, type FakeProvider } from '../../../test/fake-provider.ts';
import { listenLocally as listen } from '../../../test/local-server.ts';
import { gatewayCallsSettled, startTestServer, type TestServer } from '../../../test/server.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { normalizeResponse } from '../usage/normalize/index.ts';
import { BalanceCache } from './balance-cache.ts';
import { MAX_CAPTURE_BYTES, TAIL_CAPTURE_BYTES } from './forward.ts';
import { maxUsageOf } from './reserve.ts';

const expectedUsage = JSON.parse(readFileSync(new URL('expected_usage.json', PROVIDER_FIXTURES), 'utf8')) as Record<string, { expected_cost_usd?: string | null }>;
const fixture = (name: string) => readFileSync(new URL(name, PROVIDER_FIXTURES), 'utf8');
/** The markup every test merchant charges: 25% over provider cost. */
const withMarkup = (costUsd: string) => (parseDecimalAttos('cost', costUsd) * 125n) / 100n;

let server: TestServer;
let openaiFake: FakeProvider;
let anthropicFake: FakeProvider;
let geminiFake: FakeProvider;

beforeAll(async () => {
  [server, openaiFake, anthropicFake, geminiFake] = await Promise.all([
    startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true', TOLLGATE_GATEWAY_TIMEOUT_MS: '1500' }),
    startFakeProvider(),
    startFakeProvider(),
    startFakeProvider(),
  ]);
});

afterAll(async () => {
  await Promise.all([server?.close(), openaiFake?.close(), anthropicFake?.close(), geminiFake?.close()]);
});

interface Tenant {
  merchantId: string;
  secret: string;
  customerId: string;
  externalId: string;
}

async function gql<T = any>(query: string, variables: Record<string, unknown>, token: string): Promise<T> {
  const response = await server.graphql<T>(query, variables, token);
  if (response.errors) throw new Error(JSON.stringify(response.errors));
  return response.data as T;
}

/** A merchant with the three fake providers allowed, stored provider keys, a 25% markup, and a customer holding `credit`. */
async function tenant(credit = '10', options: { providerKeys?: boolean } = {}): Promise<Tenant> {
  const merchant = await server.createMerchant();
  const hosts: [FakeProvider, string][] = [[openaiFake, 'openai'], [anthropicFake, 'anthropic'], [geminiFake, 'google']];
  for (const [fake, provider] of hosts) {
    await gql(`mutation($host: String!, $provider: String!) { putGatewayHost(host: $host, provider: $provider) { id } }`, { host: new URL(fake.url).host, provider }, merchant.secret);
    if (options.providerKeys !== false) {
      await gql(`mutation($p: String!, $k: String!) { setProviderCredential(provider: $p, apiKey: $k) { id } }`, { p: provider, k: `${provider}-provider-key-0001` }, merchant.secret);
    }
  }
  await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '25' }, effectiveFrom: new Date('2026-01-01') });
  const externalId = `user-${Math.random().toString(36).slice(2)}`;
  const created = await gql(`mutation($e: String!) { createCustomer(input: { externalId: $e }) { id } }`, { e: externalId }, merchant.secret);
  const customerId = created.createCustomer.id as string;
  if (credit !== '0') {
    await gql(`mutation($c: ID!, $a: Decimal!) { grantCredits(input: { customerId: $c, amount: $a, kind: PAID, idempotencyKey: "seed" }) { __typename } }`, { c: customerId, a: credit }, merchant.secret);
  }
  return { merchantId: merchant.id, secret: merchant.secret, customerId, externalId };
}

async function balanceNanos(t: Tenant): Promise<bigint> {
  const data = await gql(`query($c: ID!) { wallet(customerId: $c) { balance { amount } } }`, { c: t.customerId }, t.secret);
  return parseDecimalNanos('balance', data.wallet.balance.amount);
}

const settled = (t: Tenant, count: number) => gatewayCallsSettled(server, t.merchantId, count);

async function chargesOf(t: Tenant) {
  const events = await server.services.prisma.usageEvent.findMany({ where: { merchantId: t.merchantId }, orderBy: { createdAt: 'asc' } });
  return events.map((event) => ({ charge: BigInt(event.chargeAttos.toFixed(0)), status: event.status, estimated: event.estimated, model: event.model }));
}

const forwardUrl = (target: string, params = '') => `${server.url}/v1/forward?u=${encodeURIComponent(target)}${params}`;
const baseUrl = (providerBase: string) => `${server.url}/v1/forward/${encodeURIComponent(providerBase)}`;

function post(url: string, headers: Record<string, string>, body: unknown, signal?: AbortSignal) {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), signal });
}

/** Balance went down by the charged attos, to within the one nano the ledger carries as a fraction. */
function expectDebited(before: bigint, after: bigint, attos: bigint) {
  const movedAttos = (before - after) * 1_000_000_000n;
  expect(movedAttos - attos <= 1_000_000_000n && attos - movedAttos <= 1_000_000_000n, `moved ${movedAttos} attos, charged ${attos}`).toBe(true);
}

describe('official SDKs through the gateway', () => {
  it('OpenAI SDK, not streaming: the response is the provider’s, the charge is cost + 25%', async () => {
    const t = await tenant();
    const before = await balanceNanos(t);
    const client = new OpenAI({ apiKey: t.secret, baseURL: baseUrl(`${openaiFake.url}/v1`), defaultHeaders: { 'x-tollgate-customer': t.externalId }, maxRetries: 0 });
    const completion = await client.chat.completions.create({ model: 'gpt-5.4-mini', messages: [{ role: 'user', content: 'hello' }] });
    const recorded = JSON.parse(fixture('openai_chat_completion.json'));
    expect(completion.id).toBe(recorded.id);
    expect(completion.choices[0]!.message.content).toBe(recorded.choices[0].message.content);
    expect(completion.usage?.prompt_tokens).toBe(recorded.usage.prompt_tokens);

    const [log] = await settled(t, 1);
    expect(log).toMatchObject({ status: 200, outcome: 'COMPLETED', provider: 'openai', path: '/v1/chat/completions', method: 'POST', streamed: false });
    expect(log!.usageEventId).not.toBeNull();
    const charges = await chargesOf(t);
    expect(charges).toHaveLength(1);
    expect(charges[0]!.charge).toBe(withMarkup(expectedUsage['openai_chat_completion.json']!.expected_cost_usd!));
    expectDebited(before, await balanceNanos(t), charges[0]!.charge);
  });

  it('OpenAI SDK, streaming with include_usage: every chunk arrives and the final usage is charged', async () => {
    const t = await tenant();
    const before = await balanceNanos(t);
    const client = new OpenAI({ apiKey: t.secret, baseURL: baseUrl(`${openaiFake.url}/v1`), defaultHeaders: { 'x-tollgate-customer': t.customerId }, maxRetries: 0 });
    const stream = await client.chat.completions.create({ model: 'gpt-5.4-mini', messages: [{ role: 'user', content: 'hello' }], stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    const expectedText = fixture('openai_chat_completion_stream_include_usage.sse')
      .split('\n')
      .filter((line) => line.startsWith('data: {'))
      .map((line) => JSON.parse(line.slice(6)).choices[0]?.delta?.content ?? '')
      .join('');
    expect(text).toBe(expectedText);
    expect(usage?.completion_tokens).toBe(246);

    const [log] = await settled(t, 1);
    expect(log).toMatchObject({ status: 200, outcome: 'COMPLETED', streamed: true });
    expect(log!.ttfbMs).not.toBeNull();
    const charges = await chargesOf(t);
    expect(charges[0]!.charge).toBe(withMarkup(expectedUsage['openai_chat_completion_stream_include_usage.sse']!.expected_cost_usd!));
    expectDebited(before, await balanceNanos(t), charges[0]!.charge);
  });

  it('Anthropic SDK with a customer session token as its API key, streaming and not', async () => {
    const t = await tenant();
    const session = await gql(`mutation($c: ID!) { createCustomerSession(customerId: $c) { token } }`, { c: t.customerId }, t.secret);
    const before = await balanceNanos(t);
    const client = new Anthropic({ apiKey: session.createCustomerSession.token, baseURL: baseUrl(anthropicFake.url), maxRetries: 0 });
    const message = await client.messages.create({ model: 'claude-opus-4-8', max_tokens: 1024, messages: [{ role: 'user', content: 'hello' }] });
    expect(message.usage.output_tokens).toBe(JSON.parse(fixture('anthropic_messages.json')).usage.output_tokens);
    const final = await client.messages.stream({ model: 'claude-sonnet-4-6', max_tokens: 1024, messages: [{ role: 'user', content: 'hello' }] }).finalMessage();
    expect(final.usage.output_tokens).toBe(689);

    await settled(t, 2);
    const charges = await chargesOf(t);
    expect(charges.map((c) => c.charge).sort()).toEqual(
      [withMarkup(expectedUsage['anthropic_messages.json']!.expected_cost_usd!), withMarkup(expectedUsage['anthropic_messages_stream.sse']!.expected_cost_usd!)].sort(),
    );
    expectDebited(before, await balanceNanos(t), charges[0]!.charge + charges[1]!.charge);
    // The audit trail names who: a customer's session, and the secret key that minted it (the two calls may share one transaction).
    const mintedBy = (await server.services.apiKeys.authenticate(t.secret))!.apiKeyId;
    const trail = await gql(`query($c: ID!) { wallet(customerId: $c) { transactions(first: 10, filter: { kinds: [USAGE] }) { edges { node { actor { kind apiKeyId } } } } } }`,
      { c: t.customerId }, t.secret);
    const actors = trail.wallet.transactions.edges.map((edge: any) => edge.node.actor);
    expect(actors.length).toBeGreaterThan(0);
    for (const actor of actors) expect(actor).toEqual({ kind: 'customer', apiKeyId: mintedBy });
    // The provider saw the merchant's Anthropic key, never the customer's Tollgate token.
    const seen = anthropicFake.requests.at(-1)!;
    expect(seen.headers['x-api-key']).toBe('anthropic-provider-key-0001');
    expect(JSON.stringify(seen.headers)).not.toContain(session.createCustomerSession.token);
  });

  it('Gemini through ?u=, JSON and an SSE stream (alt=sse passed through), charged the same', async () => {
    const t = await tenant();
    const headers = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId };
    const json = await post(forwardUrl(`${geminiFake.url}/v1beta/models/gemini-3.8-flash:generateContent`), headers, { contents: [] });
    expect(json.status).toBe(200);
    expect(await json.text()).toBe(fixture('gemini_generate_content.json'));
    const stream = await post(forwardUrl(`${geminiFake.url}/v1beta/models/gemini-3.8-flash:streamGenerateContent`, '&alt=sse'), headers, { contents: [] });
    expect(stream.headers.get('content-type')).toContain('text/event-stream');
    expect((await stream.text()).match(/^data: /gm)!.length).toBeGreaterThan(1);
    expect(geminiFake.requests.at(-1)!.path).toContain('alt=sse');
    expect(geminiFake.requests.at(-1)!.headers['x-goog-api-key']).toBe('google-provider-key-0001');

    await settled(t, 2);
    const charges = await chargesOf(t);
    const expected = withMarkup(expectedUsage['gemini_generate_content.json']!.expected_cost_usd!);
    expect(charges.map((c) => c.charge)).toEqual([expected, expected]);
  });
});

describe('forwarding', () => {
  it('relays method, path, query and headers, minus hop-by-hop and Tollgate’s own; injects the provider key', async () => {
    const t = await tenant();
    const response = await fetch(forwardUrl(`${openaiFake.url}/v1/models?limit=2`, '&extra=yes'), {
      headers: { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId, 'x-fake-echo': '1', 'openai-organization': 'org-1', 'x-tollgate-currency': 'USD', cookie: 'session=abc' },
    });
    expect(response.status).toBe(200);
    const echo = (await response.json()) as { method: string; path: string; headers: Record<string, string> };
    expect(echo.method).toBe('GET');
    expect(echo.path).toBe('/v1/models?limit=2&extra=yes');
    expect(echo.headers['openai-organization']).toBe('org-1');
    expect(openaiFake.requests.at(-1)!.headers.authorization).toBe('Bearer openai-provider-key-0001');
    // The answer echoes it back masked (key-redaction.ts): the caller never sees the merchant's key.
    expect(echo.headers.authorization).toBe(`Bearer ${'*'.repeat(20)}0001`);
    expect(echo.headers.host).toBe(new URL(openaiFake.url).host);
    expect(Object.keys(echo.headers).filter((name) => name.startsWith('x-tollgate') || name === 'cookie')).toEqual([]);
    expect(JSON.stringify(echo)).not.toContain(t.secret);
    // Listing models is not billable: logged, not charged.
    const [log] = await settled(t, 1);
    expect(log).toMatchObject({ outcome: 'COMPLETED', usageEventId: null });
  });

  it('streams chunk by chunk: the first event arrives long before the stream ends', async () => {
    const t = await tenant();
    const started = performance.now();
    const response = await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId, 'x-fake-chunk-delay-ms': '40' }, { model: 'gpt-5.4-mini', stream: true });
    const reader = response.body!.getReader();
    const first = await reader.read();
    const firstAt = performance.now() - started;
    let rest = 0;
    for (;;) {
      const next = await reader.read();
      if (next.done) break;
      rest += 1;
    }
    const endAt = performance.now() - started;
    expect(new TextDecoder().decode(first.value)).toMatch(/^data: /);
    expect(rest).toBeGreaterThan(3);
    expect(endAt - firstAt).toBeGreaterThan(120);
  });

  it('passes provider errors through unchanged and does not charge them', async () => {
    const t = await tenant();
    const before = await balanceNanos(t);
    const headers = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId, 'x-fake-status': '429' };
    const openai = await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), headers, { model: 'gpt-5.4-mini' });
    expect(openai.status).toBe(429);
    expect(await openai.text()).toBe(fixture('openai_error_429_rate_limit.json'));
    const anthropic = await post(forwardUrl(`${anthropicFake.url}/v1/messages`), { ...headers, 'x-fake-status': '529' }, { model: 'claude-opus-4-8' });
    expect(anthropic.status).toBe(529);
    expect(await anthropic.text()).toBe(fixture('anthropic_error_529_overloaded.json'));
    const logs = await settled(t, 2);
    expect(logs.map((log) => [log.outcome, log.status, log.usageEventId])).toEqual([
      ['UPSTREAM_ERROR', 429, null],
      ['UPSTREAM_ERROR', 529, null],
    ]);
    expect(await chargesOf(t)).toEqual([]);
    expect(await balanceNanos(t)).toBe(before);
  });

  it('does not follow redirects: a 307 to a metadata address goes back to the caller untouched', async () => {
    const t = await tenant();
    openaiFake.reset();
    const response = await fetch(forwardUrl(`${openaiFake.url}/v1/models`), {
      headers: { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId, 'x-fake-redirect': 'http://169.254.169.254/latest/meta-data/' },
      redirect: 'manual',
    });
    expect(response.status).toBe(307);
    expect(response.headers.get('location')).toBe('http://169.254.169.254/latest/meta-data/');
    expect(openaiFake.requests).toHaveLength(1);
  });

  it('answers 504 when the provider does not answer in time, and 502 when it cannot be reached', async () => {
    const t = await tenant();
    const headers = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId };
    const hung = await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), { ...headers, 'x-fake-hang': '1' }, { model: 'gpt-5.4-mini' });
    expect(hung.status).toBe(504);
    expect(((await hung.json()) as any).error.code).toBe('UPSTREAM_TIMEOUT');

    const closed = await startFakeProvider();
    const host = new URL(closed.url).host;
    await closed.close();
    await gql(`mutation($host: String!) { putGatewayHost(host: $host, provider: "openai-compatible") { id } }`, { host }, t.secret);
    const unreachable = await post(forwardUrl(`http://${host}/v1/chat/completions`), headers, { model: 'x' });
    expect(unreachable.status).toBe(502);
    expect(((await unreachable.json()) as any).error.code).toBe('UPSTREAM_UNREACHABLE');
    const logs = await settled(t, 2);
    expect(logs.map((log) => [log.outcome, log.status])).toEqual([
      ['TIMEOUT', 504],
      ['UNREACHABLE', 502],
    ]);
  });

  it('a caller that disconnects mid-stream aborts the provider call and is charged by estimate (ESTIMATE policy)', async () => {
    const t = await tenant();
    const abortedBefore = openaiFake.aborted;
    const controller = new AbortController();
    const response = await post(
      forwardUrl(`${openaiFake.url}/v1/chat/completions`),
      { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId, 'x-fake-chunk-delay-ms': '50' },
      { model: 'gpt-5.4-mini', stream: true, messages: [{ role: 'user', content: 'hello there' }] },
      controller.signal,
    );
    const reader = response.body!.getReader();
    await reader.read();
    await reader.read();
    controller.abort();
    const [log] = await settled(t, 1);
    expect(log!.outcome).toBe('CLIENT_ABORTED');
    const deadline = Date.now() + 5000;
    while (openaiFake.aborted === abortedBefore && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(openaiFake.aborted).toBe(abortedBefore + 1);
    const charges = await chargesOf(t);
    expect(charges).toHaveLength(1);
    expect(charges[0]).toMatchObject({ status: 'CHARGED', estimated: true });
    expect(charges[0]!.charge).toBeGreaterThan(0n);
  });

  it('a stream the provider cuts is relayed cut and not charged under the NO_CHARGE policy', async () => {
    const t = await tenant();
    await gql(`mutation { updateMerchant(incompleteStreamPolicy: NO_CHARGE) { id } }`, {}, t.secret);
    const response = await post(
      forwardUrl(`${openaiFake.url}/v1/chat/completions`),
      { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId, 'x-fake-truncate-after': '3' },
      { model: 'gpt-5.4-mini', stream: true },
    );
    await expect(response.text()).rejects.toThrow();
    const [log] = await settled(t, 1);
    expect(log!.outcome).toBe('COMPLETED');
    const charges = await chargesOf(t);
    expect(charges.every((charge) => charge.charge === 0n)).toBe(true);
  });
});

describe('enforcement before the provider is called', () => {
  const chat = (t: Tenant, headers: Record<string, string> = {}) =>
    post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId, ...headers }, { model: 'gpt-5.4-mini' });

  async function refused(response: Response, status: number, code: string) {
    expect(response.status).toBe(status);
    expect(response.headers.get('content-type')).toContain('application/json');
    const body = (await response.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe(code);
    expect(body.error.message.length).toBeGreaterThan(10);
    return body.error;
  }

  it('refuses missing and bad credentials (401), unknown customers (404), other customers (403)', async () => {
    const t = await tenant();
    openaiFake.reset();
    await refused(await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), {}, {}), 401, 'UNAUTHENTICATED');
    await refused(await chat({ ...t, secret: 'sk_test_notarealkey000000000000000000' }), 401, 'UNAUTHENTICATED');
    await refused(await chat({ ...t, externalId: 'nobody' }), 404, 'NOT_FOUND');
    await refused(await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), { authorization: `Bearer ${t.secret}` }, {}), 400, 'VALIDATION');
    const other = await tenant();
    // Another merchant's customer is simply not found for this merchant.
    await refused(await chat({ ...t, externalId: other.externalId }), 404, 'NOT_FOUND');
    const session = await gql(`mutation($c: ID!) { createCustomerSession(customerId: $c) { token } }`, { c: t.customerId }, t.secret);
    const mine = await gql(`mutation { createCustomer(input: { externalId: "second" }) { id } }`, {}, t.secret);
    await refused(
      await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), { authorization: `Bearer ${session.createCustomerSession.token}`, 'x-tollgate-customer': mine.createCustomer.id }, {}),
      403,
      'FORBIDDEN',
    );
    expect(openaiFake.requests).toEqual([]);
  });

  it('refuses a customer session token once the secret key that minted it is revoked, at once though the token was cached', async () => {
    const t = await tenant();
    const minted = await server.services.apiKeys.create(t.merchantId, { name: 'minting', mode: 'test' });
    const session = await gql(`mutation($c: ID!) { createCustomerSession(customerId: $c) { token } }`, { c: t.customerId }, minted.secret);
    const call = () => post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), { authorization: `Bearer ${session.createCustomerSession.token}` }, { model: 'gpt-5.4-mini' });
    expect((await call()).status).toBe(200);
    await gatewayCallsSettled(server, t.merchantId, 1);
    await gql('mutation ($id: ID!) { revokeApiKey(id: $id) { id } }', { id: minted.apiKey.id }, t.secret);
    openaiFake.reset();
    expect((await refused(await call(), 401, 'UNAUTHENTICATED')).message).toContain('revoked');
    expect(openaiFake.requests).toEqual([]);
  });

  it('refuses bad targets: missing or malformed u (400), hosts off the allow-list (403)', async () => {
    const t = await tenant();
    const headers = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId };
    await refused(await fetch(`${server.url}/v1/forward`, { headers }), 400, 'VALIDATION');
    await refused(await fetch(`${server.url}/v1/forward?u=not%20a%20url`, { headers }), 400, 'VALIDATION');
    await refused(await fetch(forwardUrl('file:///etc/passwd'), { headers }), 400, 'VALIDATION');
    await refused(await fetch(forwardUrl('https://evil.example.com/v1/chat/completions'), { headers }), 403, 'FORBIDDEN');
    await refused(await fetch(forwardUrl('http://169.254.169.254/latest/meta-data/'), { headers }), 403, 'FORBIDDEN');
  });

  it('refuses a blocked or archived customer with 403 and never calls the provider', async () => {
    const t = await tenant();
    openaiFake.reset();
    await gql(`mutation($c: ID!) { blockCustomer(id: $c, reason: "chargeback") { blocked } }`, { c: t.customerId }, t.secret);
    const error = await refused(await chat(t), 403, 'CUSTOMER_BLOCKED');
    expect(error.message).toContain('chargeback');
    await gql(`mutation($c: ID!) { unblockCustomer(id: $c) { blocked } }`, { c: t.customerId }, t.secret);
    await gql(`mutation($c: ID!) { archiveCustomer(id: $c) { archived } }`, { c: t.customerId }, t.secret);
    await refused(await chat(t), 403, 'CUSTOMER_ARCHIVED');
    expect(openaiFake.requests).toEqual([]);
    const logs = await settled(t, 2);
    expect(logs.map((log) => [log.outcome, log.errorCode])).toEqual([
      ['REFUSED', 'CUSTOMER_BLOCKED'],
      ['REFUSED', 'CUSTOMER_ARCHIVED'],
    ]);
  });

  it('a customer archived behind the gate\'s back (its cached view still active) is refused 403 by the hold, not a 500', async () => {
    const t = await tenant();
    await gql(`mutation { updateGatewaySettings(reserveMaxCost: true) { gatewayReserveMaxCost } }`, {}, t.secret);
    expect((await chat(t)).status).toBe(200);
    openaiFake.reset();
    // Straight in the database: no change event reaches the gate's cache.
    await server.services.prisma.customer.update({ where: { id: t.customerId }, data: { archivedAt: new Date() } });
    await refused(await chat(t), 403, 'CUSTOMER_ARCHIVED');
    expect(openaiFake.requests).toEqual([]);
  });

  it('402 without credit, before the provider is called; a top-up lets the next call through at once', async () => {
    const t = await tenant('0');
    openaiFake.reset();
    const error = await refused(await chat(t), 402, 'INSUFFICIENT_FUNDS');
    expect(error).toMatchObject({ customerId: t.customerId, currency: 'USD' });
    expect(openaiFake.requests).toEqual([]);
    await gql(`mutation($c: ID!) { grantCredits(input: { customerId: $c, amount: "5", kind: PAID, idempotencyKey: "top-up" }) { __typename } }`, { c: t.customerId }, t.secret);
    expect((await chat(t)).status).toBe(200);
    expect(openaiFake.requests).toHaveLength(1);
  });

  it('402 once the only credit has expired, before the expiry job runs, whether the balance was cached or not; the provider is not called', async () => {
    const [warm, cold] = await Promise.all([tenant('0'), tenant('0')]);
    const expiresAt = new Date(Date.now() + 1500);
    for (const t of [warm, cold]) {
      await server.services.ledger.grantCredits(t.merchantId, SYSTEM_ACTOR, { customerId: t.customerId, currency: 'USD', amountNanos: 5_000_000_000n, kind: 'PROMOTIONAL', expiresAt, idempotencyKey: 'expiring' });
    }
    openaiFake.reset();
    // Caches warm's balance while the credit is still good.
    expect((await chat(warm)).status).toBe(200);
    await settled(warm, 1);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt.getTime() - Date.now()) + 50));
    await refused(await chat(warm), 402, 'INSUFFICIENT_FUNDS');
    await refused(await chat(cold), 402, 'INSUFFICIENT_FUNDS');
    expect(openaiFake.requests).toHaveLength(1);
  });

  it('a customer whose credit runs out mid-way is stopped at the next call; the ledger never overdraws', async () => {
    // Less than one call's price: the first call is allowed (credit > 0) and takes what is left…
    const t = await tenant('0.0001');
    expect((await chat(t)).status).toBe(200);
    await settled(t, 1);
    const charges = await chargesOf(t);
    expect(charges[0]).toMatchObject({ status: 'PARTIALLY_CHARGED', charge: parseDecimalAttos('x', '0.0001') });
    expect(await balanceNanos(t)).toBe(0n);
    // …and the cache, told by the ledger's event or confirming in the database, stops the next.
    await refused(await chat(t), 402, 'INSUFFICIENT_FUNDS');
  });

  it('429 once the month’s charges reach the customer’s spend limit', async () => {
    const t = await tenant();
    await expect(server.graphql(`mutation($c: ID!) { setSpendLimit(customerId: $c, amount: "-1") { id } }`, { c: t.customerId }, t.secret)).resolves.toMatchObject({
      errors: [{ extensions: { code: 'VALIDATION', field: 'amount' } }],
    });
    await gql(`mutation($c: ID!) { setSpendLimit(customerId: $c, amount: "0.001") { id } }`, { c: t.customerId }, t.secret);
    expect((await chat(t)).status).toBe(200); // 0.0041… charged: over the limit from now on
    const spent = formatAttos(withMarkup(expectedUsage['openai_chat_completion.json']!.expected_cost_usd!));
    await settled(t, 1);
    await new Promise((resolve) => setTimeout(resolve, 1100)); // the gateway re-reads month-to-date spend each second
    const error = await refused(await chat(t), 429, 'SPEND_LIMIT_REACHED');
    expect(error).toMatchObject({ limit: '0.001', spent });
    const data = await gql(`query($c: ID!) { customer(id: $c) { spendLimits { limit { amount currency } spentThisMonth resetsAt } } }`, { c: t.customerId }, t.secret);
    expect(data.customer.spendLimits).toEqual([{ limit: { amount: '0.001', currency: 'USD' }, spentThisMonth: spent, resetsAt: expect.any(String) }]);
    await gql(`mutation($c: ID!) { removeSpendLimit(customerId: $c) }`, { c: t.customerId }, t.secret);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect((await chat(t)).status).toBe(200);
  });

  it('needs a stored provider key for a known provider unless callers may bring their own', async () => {
    const t = await tenant('10', { providerKeys: false });
    await refused(await chat(t), 400, 'PROVIDER_KEY_MISSING');
    await refused(await chat(t, { 'x-tollgate-provider-key': 'sk-callers-own-key' }), 403, 'FORBIDDEN');
    await gql(`mutation { updateGatewaySettings(callerProviderKeys: true) { gatewayCallerProviderKeys } }`, {}, t.secret);
    const response = await chat(t, { 'x-tollgate-provider-key': 'sk-callers-own-key', 'x-fake-echo': '1' });
    expect(response.status).toBe(200);
    expect(openaiFake.requests.at(-1)!.headers.authorization).toBe('Bearer sk-callers-own-key');
  });
});

describe('reserving the maximum cost (updateGatewaySettings(reserveMaxCost: true))', () => {
  const request = { model: 'gpt-5.4-mini', max_tokens: 2000, messages: [{ role: 'user', content: 'hello' }] };
  const headersFor = (t: Tenant, extra: Record<string, string> = {}) => ({ authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId, ...extra });

  async function reserving(credit: string) {
    const t = await tenant(credit);
    await gql(`mutation { updateGatewaySettings(reserveMaxCost: true) { gatewayReserveMaxCost } }`, {}, t.secret);
    const usage = maxUsageOf('openai', new URL(`${openaiFake.url}/v1/chat/completions`), Buffer.from(JSON.stringify(request)))!;
    const { chargeAttos } = await server.services.usage.quote(t.merchantId, usage);
    return { t, holdNanos: (chargeAttos + 999_999_999n) / 1_000_000_000n };
  }

  it('holds the maximum while the call runs, then charges what was used and releases the rest', async () => {
    const { t, holdNanos } = await reserving('10');
    expect(holdNanos).toBeGreaterThan(0n);
    const call = post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), headersFor(t, { 'x-fake-delay-ms': '400' }), request);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const during = await gql(`query($c: ID!) { wallet(customerId: $c) { available { amount } held { amount } } }`, { c: t.customerId }, t.secret);
    expect(parseDecimalNanos('held', during.wallet.held.amount)).toBe(holdNanos);
    expect((await call).status).toBe(200);
    await settled(t, 1);
    const after = await gql(`query($c: ID!) { wallet(customerId: $c) { balance { amount } held { amount } } }`, { c: t.customerId }, t.secret);
    expect(after.wallet.held.amount).toBe('0.00');
    const [charge] = await chargesOf(t);
    expect(charge).toMatchObject({ status: 'CHARGED', charge: withMarkup(expectedUsage['openai_chat_completion.json']!.expected_cost_usd!) });
    expectDebited(parseDecimalNanos('x', '10'), parseDecimalNanos('x', after.wallet.balance.amount), charge!.charge);
    // Placed and released in the name of the key that made the call.
    const viewer = await server.services.viewers.resolve(`Bearer ${t.secret}`);
    const caller = { kind: 'api_key', apiKeyId: viewer.kind === 'merchant' ? viewer.apiKeyId : 'not a secret key' };
    const [hold] = await server.services.db.withConnection((sql) => sql.query<{ id: string }>(`SELECT id FROM holds WHERE customer_id = $1`, [t.customerId]));
    expect(await server.services.ledger.getHold(t.merchantId, hold!.id)).toMatchObject({ status: 'RELEASED', createdBy: caller, finalizedBy: caller });
  });

  it('calls in flight together never reserve more than the customer has: the third of three gets 402', async () => {
    const { t, holdNanos } = await reserving('0');
    const credit = holdNanos * 2n + holdNanos / 2n;
    await gql(`mutation($c: ID!, $a: Decimal!) { grantCredits(input: { customerId: $c, amount: $a, kind: PAID, idempotencyKey: "two-and-a-half" }) { __typename } }`, { c: t.customerId, a: formatAttos(credit * 1_000_000_000n) }, t.secret);
    openaiFake.reset();
    const statuses = await Promise.all([0, 1, 2].map(() => post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), headersFor(t, { 'x-fake-delay-ms': '300' }), request).then((r) => r.status)));
    expect(statuses.sort()).toEqual([200, 200, 402]);
    expect(openaiFake.requests).toHaveLength(2);
  });

  it('the reservation is released with the charge, not before it: a call arriving while another settles cannot take its credit', async () => {
    const { t, holdNanos } = await reserving('0');
    // Credit for one reservation and 10 nanos: while call A's hold stands, call B cannot be held.
    const credit = holdNanos + 10n;
    await gql(`mutation($c: ID!, $a: Decimal!) { grantCredits(input: { customerId: $c, amount: $a, kind: PAID, idempotencyKey: "hold-and-a-bit" }) { __typename } }`, { c: t.customerId, a: formatAttos(credit * 1_000_000_000n) }, t.secret);
    // Call B arrives in the window between A's response and A's charge.
    const usage = server.services.usage;
    const record = usage.record.bind(usage);
    let second: number | null = null;
    const spy = vi.spyOn(usage, 'record').mockImplementation(async (...args) => {
      if (second === null) {
        second = -1;
        second = (await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), headersFor(t), request)).status;
      }
      return record(...args);
    });
    try {
      expect((await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), headersFor(t), request)).status).toBe(200);
      await settled(t, 2);
      await server.services.gateway.drain();
    } finally {
      spy.mockRestore();
    }
    expect(second).toBe(402);
    const charges = await chargesOf(t);
    const price = withMarkup(expectedUsage['openai_chat_completion.json']!.expected_cost_usd!);
    expect(charges).toEqual([expect.objectContaining({ status: 'CHARGED', charge: price })]);
    const after = await gql(`query($c: ID!) { wallet(customerId: $c) { balance { amount } held { amount } } }`, { c: t.customerId }, t.secret);
    expect(after.wallet.held.amount).toBe('0.00');
    const balance = parseDecimalNanos('x', after.wallet.balance.amount);
    expect(balance).toBeGreaterThanOrEqual(0n);
    expectDebited(credit, balance, price);
    expect((await server.services.ledgerQueries.integrity(t.merchantId)).violations).toEqual([]);
  });

  it('a caller that leaves while being admitted: the provider is not called, the hold is released, the call is logged as aborted', async () => {
    const { t } = await reserving('10');
    openaiFake.reset();
    const get = BalanceCache.prototype.get;
    let arrive!: () => void;
    let release!: () => void;
    const arrived = new Promise<void>((resolve) => (arrive = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    // The credit check is where the caller hangs up.
    const spy = vi.spyOn(BalanceCache.prototype, 'get').mockImplementationOnce(async function (this: BalanceCache, ...args) {
      arrive();
      await released;
      return get.apply(this, args);
    });
    const controller = new AbortController();
    const call = post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), headersFor(t), request, controller.signal).catch(() => null);
    try {
      await arrived;
      controller.abort();
      expect(await call).toBeNull();
      await new Promise((resolve) => setTimeout(resolve, 200));
    } finally {
      release();
      spy.mockRestore();
    }
    const [log] = await settled(t, 1);
    expect(log).toMatchObject({ outcome: 'CLIENT_ABORTED', status: 499, usageEventId: null });
    expect(openaiFake.requests).toEqual([]);
    expect(await chargesOf(t)).toEqual([]);
    const holds = await server.services.prisma.hold.findMany({ where: { customerId: t.customerId } });
    expect(holds.map((hold) => hold.status)).toEqual(['RELEASED']);
  });

  it('a % escape in the model, in the body or in the path, is reserved for like any unknown model, not a 500', async () => {
    const { t } = await reserving('10');
    const inBody = await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), headersFor(t), { ...request, model: '%ZZ' });
    expect(inBody.status).toBe(200);
    const inPath = await post(forwardUrl(`${geminiFake.url}/v1beta/models/gemini-2.5-flash%ZZ:generateContent`), headersFor(t), { contents: [] });
    expect(inPath.status).toBe(200);
  });

  it('n choices are reserved n times: credit for exactly one choice’s maximum gets 402 for n: 4, the provider not called, and is enough for n: 1', async () => {
    const { t } = await reserving('0');
    // n: 1 and n: 4 are requests of the same length, so their prompts are counted alike.
    const oneChoice = { ...request, n: 1 };
    const usage = maxUsageOf('openai', new URL(`${openaiFake.url}/v1/chat/completions`), Buffer.from(JSON.stringify(oneChoice)))!;
    const { chargeAttos } = await server.services.usage.quote(t.merchantId, usage);
    const oneChoiceNanos = (chargeAttos + 999_999_999n) / 1_000_000_000n;
    await gql(`mutation($c: ID!, $a: Decimal!) { grantCredits(input: { customerId: $c, amount: $a, kind: PAID, idempotencyKey: "one-choice" }) { __typename } }`, { c: t.customerId, a: formatAttos(oneChoiceNanos * 1_000_000_000n) }, t.secret);
    openaiFake.reset();
    const fourChoices = await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), headersFor(t), { ...oneChoice, n: 4 });
    expect(fourChoices.status).toBe(402);
    const body = (await fourChoices.json()) as any;
    expect(body.error).toMatchObject({ code: 'INSUFFICIENT_FUNDS', customerId: t.customerId });
    expect(parseDecimalNanos('required', body.error.required)).toBeGreaterThan(oneChoiceNanos);
    expect(openaiFake.requests).toEqual([]);
    expect((await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), headersFor(t), oneChoice)).status).toBe(200);
  });

  it('402 with the amount required when the credit does not cover the maximum; the provider is not called', async () => {
    const { t } = await reserving('0.0001');
    openaiFake.reset();
    const response = await post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), headersFor(t), { ...request, max_tokens: 100_000 });
    expect(response.status).toBe(402);
    const body = (await response.json()) as any;
    expect(body.error).toMatchObject({ code: 'INSUFFICIENT_FUNDS', customerId: t.customerId });
    expect(parseDecimalNanos('required', body.error.required)).toBeGreaterThan(parseDecimalNanos('x', '0.0001'));
    expect(openaiFake.requests).toEqual([]);
  });
});

describe('provider endpoints the gateway cannot meter', () => {
  const expectRefused = async (response: Response, status: number, code: string) => {
    expect(response.status).toBe(status);
    expect(response.headers.get('content-type')).toContain('application/json');
    const body = (await response.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe(code);
    expect(body.error.message.length).toBeGreaterThan(10);
  };

  it('refuses unrecognised paths of a known provider with 403, before the provider is called (secret key or session token alone)', async () => {
    const t = await tenant();
    const headers = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId };
    const session = await gql(`mutation($c: ID!) { createCustomerSession(customerId: $c) { token } }`, { c: t.customerId }, t.secret);
    const token = { authorization: `Bearer ${session.createCustomerSession.token}`, 'anthropic-version': '2023-06-01' };
    const before = await balanceNanos(t);
    openaiFake.reset();
    anthropicFake.reset();
    await expectRefused(await post(forwardUrl(`${openaiFake.url}/v1/batches`), headers, { input_file_id: 'file-1', endpoint: '/v1/chat/completions', completion_window: '24h' }), 403, 'ENDPOINT_NOT_METERED');
    await expectRefused(await post(forwardUrl(`${openaiFake.url}/v1/fine_tuning/jobs`), headers, { model: 'gpt-5.4-mini', training_file: 'file-1' }), 403, 'ENDPOINT_NOT_METERED');
    await expectRefused(await fetch(forwardUrl(`${openaiFake.url}/v1/files`), { headers }), 403, 'ENDPOINT_NOT_METERED');
    await expectRefused(await fetch(forwardUrl(`${openaiFake.url}/v1/responses/resp_123`), { headers }), 403, 'ENDPOINT_NOT_METERED');
    await expectRefused(await post(forwardUrl(`${anthropicFake.url}/v1/messages/batches`), token, { requests: [] }), 403, 'ENDPOINT_NOT_METERED');
    expect(openaiFake.requests).toEqual([]);
    expect(anthropicFake.requests).toEqual([]);
    const logs = await settled(t, 5);
    expect(logs.map((log) => [log.outcome, log.status, log.errorCode])).toEqual(Array(5).fill(['REFUSED', 403, 'ENDPOINT_NOT_METERED']));
    expect(await balanceNanos(t)).toBe(before);
  });

  it('forwards the free reads of the allow-list: listing and describing models, counting tokens', async () => {
    const t = await tenant();
    const headers = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId, 'x-fake-echo': '1' };
    openaiFake.reset();
    anthropicFake.reset();
    expect((await fetch(forwardUrl(`${openaiFake.url}/v1/models`), { headers })).status).toBe(200);
    expect((await fetch(forwardUrl(`${openaiFake.url}/v1/models/gpt-5.4-mini`), { headers })).status).toBe(200);
    expect((await post(forwardUrl(`${anthropicFake.url}/v1/messages/count_tokens`), headers, { model: 'claude-x', messages: [] })).status).toBe(200);
    expect(openaiFake.requests).toHaveLength(2);
    expect(anthropicFake.requests).toHaveLength(1);
    // A write to the model list is no free read.
    await expectRefused(await fetch(forwardUrl(`${openaiFake.url}/v1/models/ft:gpt-5.4-mini:org:1`), { method: 'DELETE', headers }), 403, 'ENDPOINT_NOT_METERED');
  });

  it("forwards Vertex AI's Claude count-tokens as the free read it is (Google charges nothing for it): nothing is recorded or charged", async () => {
    const t = await tenant();
    const received: string[] = [];
    const vertex = await listen(
      createHttpServer((req, res) => {
        req.resume();
        req.on('end', () => {
          received.push(`${req.method} ${req.url}`);
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end('{"input_tokens":14}');
        });
      }),
    );
    try {
      await gql(`mutation($host: String!) { putGatewayHost(host: $host, provider: "vertex") { id } }`, { host: vertex.host }, t.secret);
      await gql(`mutation { setProviderCredential(provider: "vertex", apiKey: "vertex-provider-key-0001") { id } }`, {}, t.secret);
      const before = await balanceNanos(t);
      const path = '/v1/projects/p/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict';
      const headers = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId };
      const response = await post(forwardUrl(`http://${vertex.host}${path}`), headers, { model: 'claude-sonnet-4-6@20260101', messages: [{ role: 'user', content: 'how many tokens?' }] });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ input_tokens: 14 });
      expect(received).toEqual([`POST ${path}`]);
      const [log] = await settled(t, 1);
      expect(log).toMatchObject({ outcome: 'COMPLETED', status: 200, provider: 'vertex', usageEventId: null });
      expect(await chargesOf(t)).toEqual([]);
      expect(await balanceNanos(t)).toBe(before);
    } finally {
      await vertex.close();
    }
  });

  it('refuses any method but the metered one on a metered path: listing stored chat completions or predictions with a session token never reaches the provider', async () => {
    const t = await tenant();
    const replicateFake = await startFakeProvider();
    try {
      await gql(`mutation($host: String!) { putGatewayHost(host: $host, provider: "replicate") { id } }`, { host: new URL(replicateFake.url).host }, t.secret);
      await gql(`mutation { setProviderCredential(provider: "replicate", apiKey: "replicate-provider-key-0001") { id } }`, {}, t.secret);
      const session = await gql(`mutation($c: ID!) { createCustomerSession(customerId: $c) { token } }`, { c: t.customerId }, t.secret);
      const headers = { authorization: `Bearer ${session.createCustomerSession.token}` };
      openaiFake.reset();
      // Each lists every customer's stored data under the merchant's provider key.
      await expectRefused(await fetch(forwardUrl(`${openaiFake.url}/v1/chat/completions?limit=100`), { headers }), 403, 'ENDPOINT_NOT_METERED');
      await expectRefused(await fetch(forwardUrl(`${replicateFake.url}/v1/predictions`), { headers }), 403, 'ENDPOINT_NOT_METERED');
      for (const method of ['DELETE', 'PATCH', 'PUT']) {
        await expectRefused(await fetch(forwardUrl(`${openaiFake.url}/v1/chat/completions`), { method, headers }), 403, 'ENDPOINT_NOT_METERED');
        await expectRefused(await fetch(forwardUrl(`${replicateFake.url}/v1/predictions`), { method, headers }), 403, 'ENDPOINT_NOT_METERED');
      }
      await expectRefused(await fetch(forwardUrl(`${replicateFake.url}/v1/models/owner/name/predictions`), { headers }), 403, 'ENDPOINT_NOT_METERED');
      expect(openaiFake.requests).toEqual([]);
      expect(replicateFake.requests).toEqual([]);
      // Creating a prediction, polling it by id (charged once it has succeeded) and cancelling it still go through
      // (a job created elsewhere is polled with the secret key: a token reaches only its own, see gateway.jobs.test.ts).
      const backend = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.customerId };
      await post(forwardUrl(`${replicateFake.url}/v1/predictions`), headers, { version: 'v1', input: {} });
      await fetch(forwardUrl(`${replicateFake.url}/v1/predictions/p123`), { headers: backend });
      await fetch(forwardUrl(`${replicateFake.url}/v1/predictions/p123/cancel`), { method: 'POST', headers: backend });
      expect(replicateFake.requests.map((request) => `${request.method} ${request.path}`)).toEqual(['POST /v1/predictions', 'GET /v1/predictions/p123', 'POST /v1/predictions/p123/cancel']);
    } finally {
      await replicateFake.close();
    }
  });

  it('still forwards the job polls it meters by GET, and their cancels by their own method: fal, Stability, Black Forest Labs', async () => {
    const t = await tenant();
    const fakes = await Promise.all([startFakeProvider(), startFakeProvider(), startFakeProvider()]);
    const [fal, stability, bfl] = fakes;
    try {
      for (const [fake, provider] of [[fal, 'fal'], [stability, 'stability'], [bfl, 'bfl']] as const) {
        await gql(`mutation($host: String!, $provider: String!) { putGatewayHost(host: $host, provider: $provider) { id } }`, { host: new URL(fake.url).host, provider }, t.secret);
        await gql(`mutation($p: String!) { setProviderCredential(provider: $p, apiKey: "provider-key-0001") { id } }`, { p: provider }, t.secret);
      }
      const headers = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId };
      const calls: [FakeProvider, string, string][] = [
        [fal, 'POST', '/fal-ai/flux/dev'],
        [fal, 'GET', '/fal-ai/flux/requests/r1/status'],
        [fal, 'GET', '/fal-ai/flux/requests/r1'],
        [fal, 'PUT', '/fal-ai/flux/requests/r1/cancel'],
        [stability, 'GET', '/v2beta/results/g1'],
        [bfl, 'GET', '/v1/get_result?id=b1'],
      ];
      for (const [fake, method, path] of calls) {
        const response = await fetch(forwardUrl(`${fake.url}${path}`), { method, headers, ...(method === 'GET' ? {} : { body: '{}' }) });
        expect(response.status, `${method} ${path}`).not.toBe(403);
      }
      // …but not a create asked for with another method.
      await expectRefused(await fetch(forwardUrl(`${fal.url}/fal-ai/flux/dev`), { headers }), 403, 'ENDPOINT_NOT_METERED');
      await expectRefused(await fetch(forwardUrl(`${bfl.url}/v1/flux-pro-1.1`), { headers }), 403, 'ENDPOINT_NOT_METERED');
      expect(fakes.flatMap((fake) => fake.requests.map((request) => `${request.method} ${request.path}`))).toEqual(calls.map(([, method, path]) => `${method} ${path}`));
    } finally {
      await Promise.all(fakes.map((fake) => fake.close()));
    }
  });

  it('refuses an OpenAI Responses create with background: true (it cannot be metered); the same request in the foreground is charged', async () => {
    const t = await tenant();
    const headers = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId };
    openaiFake.reset();
    await expectRefused(await post(forwardUrl(`${openaiFake.url}/v1/responses`), headers, { model: 'gpt-5.4-mini', input: 'hello', background: true }), 400, 'BACKGROUND_NOT_METERED');
    expect(openaiFake.requests).toEqual([]);
    expect((await post(forwardUrl(`${openaiFake.url}/v1/responses`), headers, { model: 'gpt-5.4-mini', input: 'hello', background: false })).status).toBe(200);
    expect(openaiFake.requests).toHaveLength(1);
    await settled(t, 2);
    expect(await chargesOf(t)).toEqual([expect.objectContaining({ status: 'CHARGED' })]);
  });

  it('leaves a merchant’s own OpenAI-compatible host as it was: any path is forwarded', async () => {
    const t = await tenant();
    const own = await startFakeProvider();
    try {
      await gql(`mutation($host: String!) { putGatewayHost(host: $host, provider: "openai-compatible") { id } }`, { host: new URL(own.url).host }, t.secret);
      const response = await post(forwardUrl(`${own.url}/v1/batches`), { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId, 'x-fake-echo': '1' }, {});
      expect(response.status).toBe(200);
      expect(own.requests).toHaveLength(1);
    } finally {
      await own.close();
    }
  });
});

describe('private networks', () => {
  it('are refused unless the server explicitly allows them, even for a host the merchant added', async () => {
    const strict = await startTestServer();
    try {
      const merchant = await strict.createMerchant();
      await strict.graphql(`mutation($h: String!) { putGatewayHost(host: $h, provider: "openai") { id } }`, { h: new URL(openaiFake.url).host }, merchant.secret);
      await strict.graphql(`mutation { createCustomer(input: { externalId: "c" }) { id } }`, {}, merchant.secret);
      openaiFake.reset();
      const response = await fetch(`${strict.url}/v1/forward?u=${encodeURIComponent(`${openaiFake.url}/v1/chat/completions`)}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${merchant.secret}`, 'x-tollgate-customer': 'c' },
        body: '{}',
      });
      expect(response.status).toBe(403);
      expect(((await response.json()) as any).error.code).toBe('FORBIDDEN');
      expect(openaiFake.requests).toEqual([]);
    } finally {
      await strict.close();
    }
  });
});

/** An HTTP provider scripted by `handler`, allowed for the tenant as `provider`. */
async function upstream(t: Tenant, provider: string, handler: RequestListener) {
  const server = await listen(createHttpServer(handler));
  await gql(`mutation($host: String!, $provider: String!) { putGatewayHost(host: $host, provider: $provider) { id } }`, { host: server.host, provider }, t.secret);
  return { url: `http://${server.host}`, close: server.close };
}

describe('what a provider sends back', () => {
  it('a stream longer than the metering copy is charged the usage reported at its end', async () => {
    const t = await tenant();
    await gql(`mutation { updateMerchant(incompleteStreamPolicy: NO_CHARGE) { id } }`, {}, t.secret);
    const events = splitSseEvents(Buffer.from(fixture('openai_chat_completion_stream_include_usage.sse')));
    const filler = Buffer.from(`data: ${JSON.stringify({ id: 'chatcmpl-filler', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'x'.repeat(64 * 1024) } }], usage: null })}\n\n`);
    const fillers = Math.ceil((MAX_CAPTURE_BYTES + 2 * TAIL_CAPTURE_BYTES) / filler.length);
    const provider = await upstream(t, 'openai', (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      void (async () => {
        // The first event, then more than the metering copy holds, then the rest with its usage chunk.
        for (const event of [events[0]!, ...Array<Buffer>(fillers).fill(filler), ...events.slice(1)]) {
          if (!res.write(event)) await new Promise((resolve) => res.once('drain', resolve));
        }
        res.end();
      })();
    });
    try {
      const response = await post(forwardUrl(`${provider.url}/v1/chat/completions`), { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId }, { model: 'gpt-5.4-mini', stream: true });
      let received = 0;
      for await (const chunk of response.body!) received += (chunk as Uint8Array).length;
      expect(received).toBeGreaterThan(MAX_CAPTURE_BYTES + TAIL_CAPTURE_BYTES);
      await settled(t, 1);
      const charges = await chargesOf(t);
      expect(charges).toEqual([expect.objectContaining({ status: 'CHARGED', estimated: false, charge: withMarkup(expectedUsage['openai_chat_completion_stream_include_usage.sse']!.expected_cost_usd!) })]);
    } finally {
      await provider.close();
    }
  }, 30_000);

  it('a redirect is relayed, never charged: speech, billed by its request text, included', async () => {
    const t = await tenant();
    const provider = await upstream(t, 'openai', (req, res) => {
      req.resume();
      res.writeHead(307, { location: 'https://elsewhere.example/v1/audio/speech', 'content-length': 0 });
      res.end();
    });
    try {
      const response = await fetch(forwardUrl(`${provider.url}/v1/audio/speech`), {
        method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/json', authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId },
        body: JSON.stringify({ model: 'tts-1', input: 'hello world '.repeat(1000), voice: 'alloy' }),
      });
      expect(response.status).toBe(307);
      expect(response.headers.get('location')).toBe('https://elsewhere.example/v1/audio/speech');
      const [log] = await settled(t, 1);
      expect(log).toMatchObject({ status: 307, usageEventId: null });
      expect(await chargesOf(t)).toEqual([]);
    } finally {
      await provider.close();
    }
  });

  it('Bedrock ConverseStream (application/vnd.amazon.eventstream, binary frames) is metered from its frames', async () => {
    const t = await tenant();
    await gql(`mutation($p: String!, $k: String!) { setProviderCredential(provider: $p, apiKey: $k) { id } }`, { p: 'bedrock', k: 'bedrock-provider-key-0001' }, t.secret);
    const provider = await upstream(t, 'bedrock', (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream' });
      res.write(eventStreamFrame('messageStart', { p: 'abcd', role: 'assistant' }));
      res.write(eventStreamFrame('contentBlockDelta', { contentBlockIndex: 0, delta: { text: 'Hello there' }, p: 'ab' }));
      res.write(eventStreamFrame('messageStop', { p: 'ab', stopReason: 'end_turn' }));
      res.end(eventStreamFrame('metadata', { metrics: { latencyMs: 455 }, p: 'abcdefgh', usage: { inputTokens: 1000, outputTokens: 500, totalTokens: 1500 } }));
    });
    try {
      const response = await post(forwardUrl(`${provider.url}/model/amazon.nova-lite-v1%3A0/converse-stream`), { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId }, {
        messages: [{ role: 'user', content: [{ text: 'hi' }] }], inferenceConfig: { maxTokens: 1000 },
      });
      expect(response.status).toBe(200);
      await response.arrayBuffer();
      const [log] = await settled(t, 1);
      const event = await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: log!.usageEventId! } });
      expect(event).toMatchObject({ provider: 'bedrock', model: 'amazon.nova-lite-v1:0', inputTokens: 1000, outputTokens: 500, estimated: false });
    } finally {
      await provider.close();
    }
  });

  it('cannot set the gateway’s own x-tollgate-* headers or cookies on the merchant’s domain', async () => {
    const t = await tenant();
    const provider = await upstream(t, 'openai-compatible', (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json', 'x-tollgate-request-id': 'forged', 'x-tollgate-charged': '0', 'set-cookie': ['session=evil; Path=/', 'other=1'], 'x-request-id': 'provider-1' });
      res.end('{}');
    });
    try {
      const response = await fetch(forwardUrl(`${provider.url}/v1/models`), { headers: { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId } });
      expect(response.status).toBe(200);
      const [log] = await settled(t, 1);
      expect(response.headers.get('x-tollgate-request-id')).toBe(log!.id);
      expect(response.headers.get('x-tollgate-charged')).toBeNull();
      expect(response.headers.getSetCookie()).toEqual([]);
      expect(response.headers.get('x-request-id')).toBe('provider-1');
    } finally {
      await provider.close();
    }
  });

  it('a 101 and a closed connection is answered 502 at once, not 504 at the timeout', async () => {
    const t = await tenant();
    const provider = await listen(
      createTcpServer((socket) => socket.once('data', () => socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'))),
    );
    try {
      await gql(`mutation($host: String!) { putGatewayHost(host: $host, provider: "openai-compatible") { id } }`, { host: provider.host }, t.secret);
      const started = performance.now();
      const response = await post(forwardUrl(`http://${provider.host}/v1/chat/completions`), { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId }, { model: 'x' });
      expect(response.status).toBe(502);
      expect(((await response.json()) as any).error.code).toBe('UPSTREAM_UNREACHABLE');
      expect(performance.now() - started).toBeLessThan(server.config.gateway.timeoutMs);
      const [log] = await settled(t, 1);
      expect(log).toMatchObject({ outcome: 'UNREACHABLE', status: 502 });
    } finally {
      await provider.close();
    }
  });
});

describe('a caller that hangs up while sending its request body', () => {
  it('is logged as a client abort (499), not as a gateway failure', async () => {
    const t = await tenant();
    const errors = vi.spyOn(server.services.logger, 'error');
    try {
      const { port } = new URL(server.url);
      const socket = connect(Number(port), '127.0.0.1');
      socket.on('error', () => undefined);
      await new Promise((resolve) => socket.once('connect', resolve));
      const target = encodeURIComponent(`${openaiFake.url}/v1/chat/completions`);
      socket.write(
        `POST /v1/forward?u=${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${t.secret}\r\nx-tollgate-customer: ${t.externalId}\r\n` +
          'Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{"model":',
      );
      await new Promise((resolve) => setTimeout(resolve, 100));
      socket.destroy();
      const [log] = await settled(t, 1);
      expect(log).toMatchObject({ outcome: 'CLIENT_ABORTED', status: 499, errorCode: null });
      expect(errors).not.toHaveBeenCalled();
    } finally {
      errors.mockRestore();
    }
  });
});

describe('which customer a call is charged to', () => {
  it("is the token's own customer, and the customer whose id the header names, even when an older customer's externalId is that id", async () => {
    const base = await tenant('0');
    const create = async (externalId: string) => (await gql(`mutation($e: String!) { createCustomer(input: { externalId: $e }) { id } }`, { e: externalId }, base.secret)).createCustomer.id as string;
    const grant = (customerId: string) => gql(`mutation($c: ID!, $k: String!) { grantCredits(input: { customerId: $c, amount: "1", kind: PAID, idempotencyKey: $k }) { __typename } }`, { c: customerId, k: `seed-${customerId}` }, base.secret);
    // The older customer is created first; later its externalId becomes the newer one's id.
    const olderId = await create(`older-${Math.random()}`);
    const t = { ...base, customerId: await create(`newer-${Math.random()}`) };
    await server.services.customers.update(t.merchantId, olderId, { externalId: t.customerId });
    await grant(olderId);
    await grant(t.customerId);
    const session = await gql(`mutation($c: ID!) { createCustomerSession(customerId: $c) { token } }`, { c: t.customerId }, t.secret);
    const target = forwardUrl(`${openaiFake.url}/v1/chat/completions`);
    const callers: Record<string, string>[] = [{ authorization: `Bearer ${session.createCustomerSession.token}` }, { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.customerId }];
    for (const headers of callers) {
      expect((await post(target, headers, { model: 'gpt-5.4-mini', messages: [] })).status).toBe(200);
    }
    await settled(t, 2);
    const charged = await server.services.prisma.usageEvent.findMany({ where: { merchantId: t.merchantId }, select: { customerId: true } });
    expect(charged.map((event) => event.customerId)).toEqual([t.customerId, t.customerId]);
    expect(await balanceNanos({ ...t, customerId: olderId })).toBe(parseDecimalNanos('x', '1'));
    // Its own id still reaches the older customer.
    expect((await post(target, { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': olderId }, { model: 'gpt-5.4-mini', messages: [] })).status).toBe(200);
    await settled(t, 3);
    expect((await server.services.prisma.usageEvent.findMany({ where: { merchantId: t.merchantId, customerId: olderId } })).length).toBe(1);
  });
});

describe('a secret key rotated while the gateway has it cached', () => {
  const call = (t: Tenant, secret: string) =>
    post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), { authorization: `Bearer ${secret}`, 'x-tollgate-customer': t.externalId }, { model: 'gpt-5.4-mini' });

  it('with no grace period is refused at once; with one, from the moment it ends', async () => {
    const t = await tenant();
    const old = await server.services.apiKeys.create(t.merchantId, { name: 'rotated now', mode: 'live' });
    expect((await call(t, old.secret)).status).toBe(200);
    await server.services.apiKeys.rotate(t.merchantId, old.apiKey.id, 0);
    expect((await call(t, old.secret)).status).toBe(401);

    const graced = await server.services.apiKeys.create(t.merchantId, { name: 'rotated with grace', mode: 'live' });
    expect((await call(t, graced.secret)).status).toBe(200);
    const replacement = await server.services.apiKeys.rotate(t.merchantId, graced.apiKey.id, 1);
    expect((await call(t, graced.secret)).status).toBe(200);
    // Past the grace period, well within the gateway's 5 s cache of the key's check.
    await new Promise((resolve) => setTimeout(resolve, 1200));
    openaiFake.reset();
    expect((await call(t, graced.secret)).status).toBe(401);
    expect(openaiFake.requests).toEqual([]);
    expect((await call(t, replacement.secret)).status).toBe(200);
  });
});

describe('a customer blocked, unblocked or archived while the gateway has it cached', () => {
  it('is refused, let through again, and refused, each from the next call', async () => {
    const t = await tenant();
    const call = () => post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId }, { model: 'gpt-5.4-mini' });
    expect((await call()).status).toBe(200);
    await server.services.customers.block(t.merchantId, t.customerId, 'chargeback');
    const blocked = await call();
    expect(blocked.status).toBe(403);
    expect(((await blocked.json()) as any).error.code).toBe('CUSTOMER_BLOCKED');
    await server.services.customers.unblock(t.merchantId, t.customerId);
    expect((await call()).status).toBe(200);
    await server.services.customers.archive(t.merchantId, t.customerId);
    const archived = await call();
    expect(archived.status).toBe(403);
    expect(((await archived.json()) as any).error.code).toBe('CUSTOMER_ARCHIVED');
  });
});

describe('a customer created just after the gateway answered that it does not exist', () => {
  it('is let through from the next call, while other customers stay cached', async () => {
    const t = await tenant();
    const externalId = `late-${Math.random().toString(36).slice(2)}`;
    const call = (customer: string) => post(forwardUrl(`${openaiFake.url}/v1/chat/completions`), { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': customer }, { model: 'gpt-5.4-mini' });
    expect((await call(t.externalId)).status).toBe(200);
    const missing = await call(externalId);
    expect(missing.status).toBe(404);
    const created = await gql(`mutation($e: String!) { createCustomer(input: { externalId: $e }) { id } }`, { e: externalId }, t.secret);
    await gql(`mutation($c: ID!) { grantCredits(input: { customerId: $c, amount: "1", kind: PAID, idempotencyKey: "seed-late" }) { __typename } }`, { c: created.createCustomer.id }, t.secret);
    expect((await call(externalId)).status).toBe(200);
    // The existing customer's entry was kept: blocking it in the database behind the cache's back is not seen yet.
    await server.services.prisma.customer.update({ where: { id: t.customerId }, data: { blockedAt: new Date() } });
    expect((await call(t.externalId)).status).toBe(200);
  });
});

/** The whole body of a request a scripted provider received. */
async function bodyOf(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('a multipart/form-data request: the form’s fields price the response that lacks them', () => {
  const transcription = fixture('openai_transcription_whisper_1_verbose.json');
  const edited = JSON.stringify({ created: 1786543390, data: [{ url: 'https://images.example.com/edit-1.png' }] });

  /** OpenAI answering a transcription (the fixture: no model in it) or a DALL·E 2 image edit (no model, no size), keeping what it received. */
  async function openaiForms(t: Tenant) {
    const received: { path: string; contentType: string; contentLength: string | undefined; body: Buffer }[] = [];
    const provider = await upstream(t, 'openai', (req, res) => {
      void bodyOf(req).then((body) => {
        received.push({ path: req.url ?? '', contentType: String(req.headers['content-type']), contentLength: req.headers['content-length'], body });
        const answer = req.url === '/v1/audio/transcriptions' ? transcription : edited;
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(answer) });
        res.end(answer);
      });
    });
    return { ...provider, received };
  }

  function form(fields: Record<string, string>, file: { field: string; name: string; type: string; bytes: Buffer }): FormData {
    const data = new FormData();
    for (const [name, value] of Object.entries(fields)) data.append(name, value);
    data.append(file.field, new Blob([new Uint8Array(file.bytes)], { type: file.type }), file.name);
    return data;
  }

  /** What post-request metering charges for the same response, told the request's fields. */
  async function postRequestCharge(t: Tenant, path: string, body: string, requestBody: Record<string, string>) {
    const normalized = normalizeResponse({ url: `https://api.openai.com${path}`, status: 200, headers: { 'content-type': 'application/json' }, body, requestBody });
    return { normalized, charge: (await server.services.usage.quote(t.merchantId, normalized, t.customerId)).chargeAttos };
  }

  it('a transcription is charged its audio seconds at the form’s model, as post-request metering charges it, whether its file is small or over 1 MB', async () => {
    const t = await tenant();
    const provider = await openaiForms(t);
    try {
      const headers = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId };
      const files = [randomBytes(300 * 1024), randomBytes(1536 * 1024)];
      for (const bytes of files) {
        const body = form({ model: 'whisper-1', response_format: 'verbose_json' }, { field: 'file', name: 'call.mp3', type: 'audio/mpeg', bytes });
        const response = await fetch(forwardUrl(`${provider.url}/v1/audio/transcriptions`), { method: 'POST', headers, body });
        expect(response.status).toBe(200);
        expect(await response.text()).toBe(transcription);
      }
      await settled(t, 2);
      const { normalized, charge } = await postRequestCharge(t, '/v1/audio/transcriptions', transcription, { model: 'whisper-1' });
      expect(normalized).toMatchObject({ model: 'whisper-1', audioSeconds: '43' });
      expect(charge).toBe(withMarkup(expectedUsage['openai_transcription_whisper_1_verbose.json']!.expected_cost_usd!));
      expect(await chargesOf(t)).toEqual([
        { status: 'CHARGED', estimated: false, model: 'whisper-1', charge },
        { status: 'CHARGED', estimated: false, model: 'whisper-1', charge },
      ]);
      // The provider got the form as it was sent: its boundary, its file byte for byte, its length.
      provider.received.forEach((request, i) => {
        expect(request.contentType).toMatch(/^multipart\/form-data; boundary=/);
        expect(request.body.includes(files[i]!)).toBe(true);
        expect(Number(request.contentLength)).toBe(request.body.length);
      });
    } finally {
      await provider.close();
    }
  });

  it('an image edit is charged at the form’s model and size (DALL·E 2, 512x512)', async () => {
    const t = await tenant();
    const provider = await openaiForms(t);
    try {
      const fields = { model: 'dall-e-2', prompt: 'Add a green check mark', size: '512x512', n: '1', response_format: 'url' };
      const body = form(fields, { field: 'image', name: 'invoice.png', type: 'image/png', bytes: randomBytes(200 * 1024) });
      const response = await fetch(forwardUrl(`${provider.url}/v1/images/edits`), { method: 'POST', headers: { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId }, body });
      expect(response.status).toBe(200);
      await settled(t, 1);
      const { normalized, charge } = await postRequestCharge(t, '/v1/images/edits', edited, fields);
      expect(normalized).toMatchObject({ model: 'dall-e-2', images: 1, details: { size: '512x512' } });
      expect(charge).toBe(withMarkup('0.018'));
      expect(await chargesOf(t)).toEqual([{ status: 'CHARGED', estimated: false, model: 'dall-e-2', charge }]);
    } finally {
      await provider.close();
    }
  });

  it('a form the gateway cannot read is forwarded all the same, as it came', async () => {
    const t = await tenant();
    const provider = await openaiForms(t);
    try {
      const headers = { authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId };
      const garbled = Buffer.concat([Buffer.from('--other\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1'), randomBytes(4096)]);
      for (const contentType of ['multipart/form-data; boundary=nowhere', 'multipart/form-data', 'multipart/form-data; boundary="']) {
        const response = await fetch(forwardUrl(`${provider.url}/v1/audio/transcriptions`), { method: 'POST', headers: { ...headers, 'content-type': contentType }, body: garbled });
        expect(response.status).toBe(200);
      }
      const logs = await settled(t, 3);
      expect(logs.map((log) => log.outcome)).toEqual(['COMPLETED', 'COMPLETED', 'COMPLETED']);
      expect(provider.received.map((request) => request.body.equals(garbled))).toEqual([true, true, true]);
    } finally {
      await provider.close();
    }
  });
});

describe('a streamed chat completion that does not ask for usage (the OpenAI SDK’s default)', () => {
  const events = splitSseEvents(Buffer.from(fixture('openai_chat_completion_stream_include_usage.sse')));
  const fullUsage = () => withMarkup(expectedUsage['openai_chat_completion_stream_include_usage.sse']!.expected_cost_usd!);

  /**
   * A provider streaming as OpenAI does: the usage chunk (`choices: []`) only when the request
   * asked for it with stream_options.include_usage, and no `usage` key on the other chunks then.
   */
  async function streaming(t: Tenant, provider = 'openai') {
    const received: { body: string; contentLength: string | undefined }[] = [];
    const scripted = await upstream(t, provider, (req, res) => {
      void bodyOf(req).then((raw) => {
        const body = raw.toString('utf8');
        received.push({ body, contentLength: req.headers['content-length'] });
        const request = JSON.parse(body) as { stream?: boolean; stream_options?: { include_usage?: boolean } | null };
        const withUsage = request.stream_options?.include_usage === true;
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8' });
        for (const event of events) {
          const text = event.toString('utf8');
          if (text.includes('"choices":[]')) {
            if (withUsage) res.write(event);
          } else {
            res.write(withUsage ? event : text.replace(',"usage":null', ''));
          }
        }
        res.end();
      });
    });
    return { ...scripted, received };
  }

  const headersFor = (t: Tenant) => ({ authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.externalId });

  it('is sent to OpenAI asking for usage, every other field as it was, and charged the full usage, not an estimate', async () => {
    const t = await tenant();
    const provider = await streaming(t);
    try {
      const client = new OpenAI({ apiKey: t.secret, baseURL: baseUrl(`${provider.url}/v1`), defaultHeaders: { 'x-tollgate-customer': t.externalId }, maxRetries: 0 });
      const request = { model: 'gpt-5.4-mini', messages: [{ role: 'user' as const, content: 'hello' }], temperature: 0.2, max_completion_tokens: 512, stream: true as const };
      const stream = await client.chat.completions.create(request);
      let text = '';
      let usage: OpenAI.CompletionUsage | null | undefined;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? '';
        if (chunk.usage) usage = chunk.usage;
      }
      expect(text.length).toBeGreaterThan(0);
      await settled(t, 1);
      expect(await chargesOf(t)).toEqual([expect.objectContaining({ status: 'CHARGED', estimated: false, charge: fullUsage() })]);
      // The caller gets the extra usage chunk too.
      expect(usage?.prompt_tokens).toBe(1184);
      const [sent] = provider.received;
      expect(JSON.parse(sent!.body)).toEqual({ ...request, stream_options: { include_usage: true } });
      expect(Number(sent!.contentLength)).toBe(Buffer.byteLength(sent!.body));
    } finally {
      await provider.close();
    }
  });

  it('include_usage: false is overridden (billing needs the usage), the caller’s other stream_options kept; the body is changed nowhere else, byte for byte', async () => {
    const t = await tenant();
    const provider = await streaming(t);
    try {
      const url = forwardUrl(`${provider.url}/v1/chat/completions`);
      const optedOut = await post(url, headersFor(t), { model: 'gpt-5.4-mini', messages: [], stream: true, stream_options: { include_usage: false, include_obfuscation: false } });
      await optedOut.text();
      // A seed beyond 2^53, spacing and escapes that re-serializing would change.
      const raw = '{ "model" : "gpt-5.4-mini",\n  "seed": 12345678901234567890, "messages": [{"role": "user", "content": "h\\u00e9llo \u00e9"}], "stream": true }';
      const response = await fetch(url, { method: 'POST', headers: { ...headersFor(t), 'content-type': 'application/json' }, body: raw });
      await response.text();
      await settled(t, 2);
      expect(await chargesOf(t)).toEqual([
        expect.objectContaining({ status: 'CHARGED', estimated: false, charge: fullUsage() }),
        expect.objectContaining({ status: 'CHARGED', estimated: false, charge: fullUsage() }),
      ]);
      expect(JSON.parse(provider.received[0]!.body)).toEqual({ model: 'gpt-5.4-mini', messages: [], stream: true, stream_options: { include_usage: true, include_obfuscation: false } });
      expect(provider.received[1]!.body).toBe(`{"stream_options":{"include_usage":true},${raw.slice(1)}`);
      expect(Number(provider.received[1]!.contentLength)).toBe(Buffer.byteLength(provider.received[1]!.body));
    } finally {
      await provider.close();
    }
  });

  it('is left as it came when it asks for usage already, does not stream, or goes to a provider not known to accept stream_options', async () => {
    const t = await tenant();
    await gql(`mutation { setProviderCredential(provider: "mistral", apiKey: "mistral-provider-key-0001") { id } }`, {}, t.secret);
    const [openai, mistral, own] = await Promise.all([streaming(t), streaming(t, 'mistral'), streaming(t, 'openai-compatible')]);
    try {
      const asking = JSON.stringify({ model: 'gpt-5.4-mini', messages: [], stream: true, stream_options: { include_usage: true } });
      const whole = JSON.stringify({ model: 'gpt-5.4-mini', messages: [], stream: false });
      const silent = JSON.stringify({ model: 'mistral-small-latest', messages: [], stream: true });
      const calls: [string, string][] = [[`${openai.url}/v1/chat/completions`, asking], [`${openai.url}/v1/chat/completions`, whole], [`${mistral.url}/v1/chat/completions`, silent], [`${own.url}/v1/chat/completions`, silent]];
      for (const [target, body] of calls) {
        const response = await fetch(forwardUrl(target), { method: 'POST', headers: { ...headersFor(t), 'content-type': 'application/json' }, body });
        await response.text();
      }
      expect([...openai.received, ...mistral.received, ...own.received].map((request) => request.body)).toEqual(calls.map(([, body]) => body));
    } finally {
      await Promise.all([openai.close(), mistral.close(), own.close()]);
    }
  });
});
