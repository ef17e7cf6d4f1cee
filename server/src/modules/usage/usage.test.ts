import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { ATTOS_PER_NANO, parseDecimalAttos, parseDecimalNanos } from '../../shared/money.ts';

/** Post-request metering end to end: raw provider responses in, exact charges through the ledger out. */
const FIXTURES = new URL('../../../../../shared/fixtures/providers/', import.meta.url);
const fixture = (name: string) => readFileSync(new URL(name, FIXTURES), 'utf8');
const meta = JSON.parse(fixture('_http_meta.json')) as Record<string, { request: { url: string; body?: Record<string, unknown>; form?: Record<string, unknown> }; response: { status: number; headers?: Record<string, string> } }>;
const expected = JSON.parse(fixture('expected_usage.json')) as Record<string, { expected_cost_usd: string | null }>;

const now = new Date('2026-06-15T12:00:00Z');
let server: TestServer;

const RECORD = `mutation ($input: RecordUsageInput!) { recordUsage(input: $input) {
  replayed chargeError { code message }
  event { id status provider model currency cost charge margin estimated ledgerTransactionId occurredAt } } }`;

function responseOf(name: string) {
  const info = meta[name]!;
  return { url: info.request.url, status: info.response.status, headers: info.response.headers ?? {}, body: fixture(name), requestBody: info.request.body ?? info.request.form ?? null };
}

async function setup(credit = '10.00') {
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  const customer = await server.services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  if (credit !== '0') {
    await server.services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, {
      customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', credit), kind: 'PAID', idempotencyKey: 'seed',
    });
  }
  const record = (input: Record<string, unknown>) => server.graphql<any>(RECORD, { input: { customer: customer.externalId, idempotencyKey: randomUUID(), ...input } }, merchant.secret);
  const balance = async () => (await server.services.ledgerQueries.wallet(merchant.id, customer.id, 'USD')).balance;
  return { merchant, customer, record, balance };
}

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

describe('recordUsage', () => {
  it('costs a raw provider response at the list price and, with no rule, charges it through at cost', async () => {
    const { record, balance } = await setup();
    const result = await record({ response: responseOf('openai_chat_completion.json') });
    expect(result.errors).toBeUndefined();
    const event = result.data.recordUsage.event;
    expect(event).toMatchObject({ status: 'CHARGED', provider: 'openai', model: 'gpt-5.4-mini-2026-03-17', currency: 'USD', estimated: false });
    expect(event.cost).toBe(expected['openai_chat_completion.json']!.expected_cost_usd);
    expect(event.charge).toBe(event.cost);
    expect(event.margin).toBe('0.00');
    // 0.00331125 is a whole number of nanos: the wallet moves by exactly that.
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - parseDecimalNanos('x', '0.00331125'));
  });

  it('every priced fixture is costed exactly as EXPECTED.md says', async () => {
    const { merchant, record } = await setup('100.00');
    // EXPECTED.md costs a cut-off stream at 0 (nothing reported); the estimate policy is tested below.
    await server.services.prisma.merchant.update({ where: { id: merchant.id }, data: { incompleteStreamPolicy: 'NO_CHARGE' } });
    for (const [name, info] of Object.entries(expected)) {
      if (name.startsWith('_') || info.expected_cost_usd === null || !meta[name]) continue;
      const result = await record({ response: responseOf(name), timestamp: '2026-06-01T00:00:00Z' });
      expect(result.errors, name).toBeUndefined();
      expect(parseDecimalAttos('cost', result.data.recordUsage.event.cost), name).toBe(parseDecimalAttos('cost', info.expected_cost_usd));
    }
  });

  it('applies a markup rule and a per-meter rule, and records the margin', async () => {
    const { merchant, record } = await setup();
    await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '25' }, effectiveFrom: new Date('2026-01-01') });
    await server.services.meters.create(merchant.id, { key: 'requests', name: 'Requests', unit: 'request', source: 'REQUESTS' });
    await server.services.priceRules.put(merchant.id, { name: 'per request', type: 'FLAT', meterKey: 'requests', config: { unitPrice: '0.001' }, effectiveFrom: new Date('2026-01-01') });
    const event = (await record({ response: responseOf('openai_chat_completion.json') })).data.recordUsage.event;
    const cost = parseDecimalAttos('c', '0.00331125');
    expect(parseDecimalAttos('c', event.charge)).toBe((cost * 125n) / 100n + parseDecimalAttos('c', '0.001'));
    expect(parseDecimalAttos('m', event.margin)).toBe(parseDecimalAttos('c', event.charge) - cost);
  });

  it('prices graduated tiers over the customer\'s running total in the period', async () => {
    const { merchant, record } = await setup();
    await server.services.meters.create(merchant.id, { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
    await server.services.priceRules.put(merchant.id, {
      name: 'output tiers', type: 'GRADUATED', meterKey: 'out', effectiveFrom: new Date('2026-01-01'),
      config: { tiers: [{ upTo: '1000', unitPrice: '0.001' }, { upTo: null, unitPrice: '0.0001' }] },
    });
    const usage = (outputTokens: number) => ({ usage: { provider: 'custom', model: 'm', outputTokens } });
    const first = (await record(usage(800))).data.recordUsage.event;
    const second = (await record(usage(400))).data.recordUsage.event;
    expect(first.charge).toBe('0.80');
    // 200 more tokens in tier 1 at 0.001, then 200 in tier 2 at 0.0001.
    expect(second.charge).toBe('0.22');
    // A late event from last month counts in last month's period: tier 1 again.
    const late = (await record({ ...usage(100), timestamp: '2026-05-20T00:00:00Z' })).data.recordUsage.event;
    expect(late.charge).toBe('0.10');
  });

  it('costs a late event at the price in force at its time', async () => {
    const { record } = await setup();
    const body = JSON.stringify({ id: 'x', object: 'chat.completion', model: 'deepseek-v4-flash', choices: [], usage: { prompt_tokens: 1_000_000, completion_tokens: 0, total_tokens: 1_000_000, prompt_cache_hit_tokens: 1_000_000, prompt_cache_miss_tokens: 0, prompt_tokens_details: { cached_tokens: 1_000_000 } } });
    const response = { url: 'https://api.deepseek.com/chat/completions', status: 200, headers: {}, body };
    const before = (await record({ response, timestamp: '2026-04-01T00:00:00Z' })).data.recordUsage.event;
    const after = (await record({ response, timestamp: '2026-05-01T00:00:00Z' })).data.recordUsage.event;
    expect(before.cost).toBe('0.028');
    expect(after.cost).toBe('0.0028');
  });

  it('is idempotent: a replay answers the first result and charges nothing; a different record under the key is a CONFLICT', async () => {
    const { record, balance } = await setup();
    const key = randomUUID();
    const first = (await record({ idempotencyKey: key, response: responseOf('anthropic_messages.json') })).data.recordUsage;
    const after = await balance();
    const again = (await record({ idempotencyKey: key, response: responseOf('anthropic_messages.json') })).data.recordUsage;
    expect(again.replayed).toBe(true);
    expect(again.event.id).toBe(first.event.id);
    expect(await balance()).toBe(after);
    const different = await record({ idempotencyKey: key, response: responseOf('openai_chat_completion.json') });
    expect(different.errors?.[0]?.extensions.code).toBe('CONFLICT');
    expect(await balance()).toBe(after);
  });

  it('never charges error responses', async () => {
    const { record, balance } = await setup();
    for (const name of ['openai_error_429_rate_limit.json', 'anthropic_error_529_overloaded.json']) {
      const event = (await record({ response: responseOf(name) })).data.recordUsage.event;
      expect(event).toMatchObject({ status: 'NOT_BILLABLE', charge: '0.00', ledgerTransactionId: null });
    }
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00'));
  });

  it('charges a cut-off stream by estimate, or not at all, per the merchant policy', async () => {
    const { merchant, record } = await setup();
    const estimatedEvent = (await record({ response: responseOf('openai_chat_completion_stream_truncated.sse') })).data.recordUsage.event;
    expect(estimatedEvent.estimated).toBe(true);
    expect(estimatedEvent.status).toBe('CHARGED');
    expect(parseDecimalAttos('c', estimatedEvent.charge)).toBeGreaterThan(0n);
    const policy = await server.graphql<any>('mutation { updateMerchant(incompleteStreamPolicy: NO_CHARGE) { incompleteStreamPolicy } }', {}, merchant.secret);
    expect(policy.data.updateMerchant.incompleteStreamPolicy).toBe('NO_CHARGE');
    const skipped = (await record({ response: responseOf('openai_chat_completion_stream_truncated.sse') })).data.recordUsage.event;
    expect(skipped).toMatchObject({ status: 'NOT_BILLABLE', estimated: false, charge: '0.00' });
  });

  it('records usage a customer cannot pay for as UNCHARGED, moving nothing', async () => {
    const { record, balance } = await setup('0.001');
    const result = (await record({ response: responseOf('openai_responses.json') })).data.recordUsage;
    expect(result.event.status).toBe('UNCHARGED');
    expect(result.event.ledgerTransactionId).toBeNull();
    expect(result.chargeError.code).toBe('INSUFFICIENT_FUNDS');
    expect(await balance()).toBe(parseDecimalNanos('x', '0.001'));
  });

  it('carries sub-nano charges instead of losing them', async () => {
    const { merchant, record, balance } = await setup();
    await server.services.meters.create(merchant.id, { key: 'calls', name: 'Calls', unit: 'call', source: 'REQUESTS' });
    await server.services.priceRules.put(merchant.id, { name: 'tiny', type: 'FLAT', meterKey: 'calls', config: { unitPrice: '0.0000000004' }, effectiveFrom: new Date('2026-01-01') });
    for (let i = 0; i < 10; i++) await record({ usage: { provider: 'custom', model: 'x', requests: 1 } });
    // 10 × 0.4 nano = 4 nanos exactly, though each charge alone is under one nano.
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - 4n);
    expect(ATTOS_PER_NANO).toBe(1_000_000_000n);
  });
});

describe('POST /v1/usage/batch', () => {
  it('answers per event: bad ones get their own error, good ones are kept and charged', async () => {
    const { merchant, customer, balance } = await setup();
    const events = [
      { customer: customer.externalId, idempotencyKey: 'b-1', response: responseOf('openai_chat_completion.json') },
      { customer: 'nobody', idempotencyKey: 'b-2', usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 10 } },
      { customer: customer.id, idempotencyKey: 'b-3', usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: -5 } },
      { customer: customer.id, idempotencyKey: 'b-4', response: { url: 'https://unknown.example.com/v1/x', body: '{}' } },
      'not an object',
      { customer: customer.id, usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1 } },
      { customer: customer.id, idempotencyKey: 'b-7', usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 } },
    ];
    const response = await fetch(`${server.url}/v1/usage/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` },
      body: JSON.stringify({ events }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { results: any[]; summary: any };
    const codes = body.results.map((r) => (r.ok ? r.event.status : r.error.code));
    expect(codes).toEqual(['CHARGED', 'NOT_FOUND', 'VALIDATION', 'VALIDATION', 'VALIDATION', 'VALIDATION', 'CHARGED']);
    expect(body.results[2].error.field).toBe('usage.inputTokens');
    expect(body.results[5].error.field).toBe('idempotencyKey');
    expect(body.summary).toEqual({ received: 7, ok: 2, failed: 5 });
    const charged = body.results.filter((r) => r.ok).reduce((sum, r) => sum + parseDecimalAttos('c', r.event.charge), 0n);
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - charged / ATTOS_PER_NANO);
    const report = await server.services.ledgerQueries.integrity(merchant.id);
    expect(report.violations).toEqual([]);
  });

  it('refuses oversized batches, bad JSON and missing keys with 4xx JSON', async () => {
    const { merchant } = await setup();
    const post = (body: string, token: string | null = merchant.secret, path = '/v1/usage/batch') =>
      fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body });
    const tooMany = await post(JSON.stringify({ events: Array.from({ length: 1001 }, (_v, i) => ({ customer: 'x', idempotencyKey: String(i) })) }));
    expect(tooMany.status).toBe(400);
    expect(await tooMany.json()).toMatchObject({ error: { code: 'VALIDATION', field: 'events' } });
    const malformed = await post('{"events": [');
    expect(malformed.status).toBe(400);
    expect(await malformed.json()).toMatchObject({ error: { code: 'VALIDATION' } });
    const anonymous = await post(JSON.stringify({ events: [] }), null);
    expect(anonymous.status).toBe(401);
    expect(await anonymous.json()).toMatchObject({ error: { code: 'UNAUTHENTICATED' } });
    const single = await post(JSON.stringify({ customer: 'nobody', idempotencyKey: 'k', usage: { inputTokens: 1 } }), merchant.secret, '/v1/usage');
    expect(single.status).toBe(404);
    expect(await single.json()).toMatchObject({ error: { code: 'NOT_FOUND' } });
  });
});
