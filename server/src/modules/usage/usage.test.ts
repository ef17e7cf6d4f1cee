import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { walletTopic } from '../ledger/ledger.service.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { ATTOS_PER_NANO, parseDecimalAttos, parseDecimalNanos } from '../../shared/money.ts';
import { laneOf } from '../../shared/lanes.ts';
import { periodChargeAttos, type PricingRule } from '../pricing/rules.ts';
import { prefersMinimal } from './usage.http.ts';
import type { StoredChargeLine } from './usage.pricing.ts';
import { CUSTOMER_LANES, periodStartOf, type UsageRecordInput, type UsageResult } from './usage.service.ts';
import { blankUsage } from './usage.types.ts';
import { meterQuantity } from '../meters/meters.service.ts';

/** Post-request metering end to end: raw provider responses in, exact charges through the ledger out. */
const FIXTURES = new URL('../../../../../shared/fixtures/providers/', import.meta.url);
const fixture = (name: string) => readFileSync(new URL(name, FIXTURES), 'utf8');
const meta = JSON.parse(fixture('_http_meta.json')) as Record<string, { request: { url: string; body?: Record<string, unknown>; form?: Record<string, unknown> }; response: { status: number; headers?: Record<string, string> } }>;
const expected = JSON.parse(fixture('expected_usage.json')) as Record<string, { expected_cost_usd: string | null }>;

const now = new Date('2026-06-15T12:00:00Z');
let server: TestServer;

const RECORD = `mutation ($input: RecordUsageInput!) { recordUsage(input: $input) {
  replayed chargeError { code message }
  event { id status provider model currency cost charge margin shortfall shortfallSettled estimated incomplete ledgerTransactionId occurredAt costProblem charges { amount } } } }`;

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
      expect(event).toMatchObject({ status: 'NOT_BILLABLE', charge: '0.00', ledgerTransactionId: null, incomplete: false });
    }
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00'));
  });

  it('charges a cut-off stream by estimate, or not at all, per the merchant policy', async () => {
    const { merchant, customer, record } = await setup();
    const estimatedEvent = (await record({ response: responseOf('openai_chat_completion_stream_truncated.sse') })).data.recordUsage.event;
    expect(estimatedEvent).toMatchObject({ estimated: true, incomplete: true, status: 'CHARGED' });
    expect(parseDecimalAttos('c', estimatedEvent.charge)).toBeGreaterThan(0n);
    const policy = await server.graphql<any>('mutation { updateMerchant(incompleteStreamPolicy: NO_CHARGE) { incompleteStreamPolicy } }', {}, merchant.secret);
    expect(policy.data.updateMerchant.incompleteStreamPolicy).toBe('NO_CHARGE');
    const skipped = (await record({ response: responseOf('openai_chat_completion_stream_truncated.sse') })).data.recordUsage.event;
    // Recorded as incomplete all the same: told apart from an error response, which is never charged either.
    expect(skipped).toMatchObject({ status: 'NOT_BILLABLE', estimated: false, incomplete: true, charge: '0.00' });
    // A whole stream is not incomplete.
    const whole = (await record({ response: responseOf('openai_chat_completion_stream_include_usage.sse') })).data.recordUsage.event;
    expect(whole).toMatchObject({ status: 'CHARGED', estimated: false, incomplete: false });
    // Over HTTP, and on a replay, the event says so too.
    for (const replayed of [false, true]) {
      const response = await fetch(`${server.url}/v1/usage`, {
        method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` },
        body: JSON.stringify({ customer: customer.externalId, idempotencyKey: 'cut-http', response: responseOf('openai_chat_completion_stream_truncated.sse') }),
      });
      expect(await response.json()).toMatchObject({ ok: true, replayed, event: { status: 'NOT_BILLABLE', incomplete: true } });
    }
  });

  it('charges the input a provider reported for a stream cut before any output, by estimate only', async () => {
    const { merchant, record } = await setup();
    const stream = responseOf('anthropic_messages_stream.sse');
    // Cut after message_start (the prompt read: 2,204 + 14,336 cache-read tokens) and before any text.
    const cut = { ...stream, body: stream.body.slice(0, stream.body.indexOf('event: content_block_delta')) };
    const estimated = (await record({ response: cut })).data.recordUsage.event;
    expect(estimated).toMatchObject({ status: 'CHARGED', estimated: true });
    expect(parseDecimalAttos('c', estimated.charge)).toBeGreaterThan(0n);
    const stored = await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: estimated.id } });
    expect(stored).toMatchObject({ inputTokens: 2204 + 14336, cachedInputTokens: 14336, outputTokens: 0 });
    await server.graphql('mutation { updateMerchant(incompleteStreamPolicy: NO_CHARGE) { incompleteStreamPolicy } }', {}, merchant.secret);
    expect((await record({ response: cut })).data.recordUsage.event).toMatchObject({ status: 'NOT_BILLABLE', estimated: false, charge: '0.00' });
  });

  it('usage a customer cannot fully pay for takes what is left and records the shortfall; with nothing left, nothing moves', async () => {
    const { record, balance } = await setup('0.001');
    const result = (await record({ response: responseOf('openai_responses.json') })).data.recordUsage;
    expect(result.event.status).toBe('PARTIALLY_CHARGED');
    expect(result.event.ledgerTransactionId).not.toBeNull();
    expect(result.chargeError.code).toBe('INSUFFICIENT_FUNDS');
    expect(await balance()).toBe(0n);
    const priced = parseDecimalAttos('c', result.event.charge) + parseDecimalAttos('s', result.event.shortfall);
    expect(parseDecimalAttos('c', result.event.charge)).toBe(parseDecimalAttos('x', '0.001'));
    expect(priced).toBe(parseDecimalAttos('cost', expected['openai_responses.json']!.expected_cost_usd!));
    expect(parseDecimalAttos('m', result.event.margin)).toBe(parseDecimalAttos('c', result.event.charge) - parseDecimalAttos('cost', expected['openai_responses.json']!.expected_cost_usd!));

    const nothingLeft = (await record({ response: responseOf('openai_responses.json') })).data.recordUsage;
    expect(nothingLeft.event).toMatchObject({ status: 'UNCHARGED', ledgerTransactionId: null, charge: '0.00' });
    expect(parseDecimalAttos('s', nothingLeft.event.shortfall)).toBe(priced);
    expect(await balance()).toBe(0n);
  });

  it('with an overdraft limit, usage goes negative down to the limit and no further, and balanceUpdated announces each charge', async () => {
    const { merchant, customer, record, balance } = await setup('0.001');
    await server.services.ledger.setOverdraftLimit(merchant.id, customer.id, 'USD', parseDecimalNanos('limit', '0.005'));
    const announced: Record<string, any>[] = [];
    const events = server.services.pubsub.subscribe(walletTopic(customer.id));
    void (async () => {
      for await (const event of events) announced.push(event as Record<string, any>);
    })();
    try {
      // 0.00331125 a call (list price, no rules): 0.006 spendable pays for one and part of another.
      const first = (await record({ response: responseOf('openai_chat_completion.json') })).data.recordUsage;
      expect(first.event).toMatchObject({ status: 'CHARGED', charge: '0.00331125', shortfall: '0.00' });
      expect(first.chargeError).toBeNull();
      expect(await balance()).toBe(parseDecimalNanos('x', '-0.00231125'));
      const second = (await record({ response: responseOf('openai_chat_completion.json') })).data.recordUsage;
      expect(second.event).toMatchObject({ status: 'PARTIALLY_CHARGED', charge: '0.00268875', shortfall: '0.0006225' });
      expect(second.chargeError.code).toBe('INSUFFICIENT_FUNDS');
      expect(await balance()).toBe(parseDecimalNanos('x', '-0.005'));
      const third = (await record({ response: responseOf('openai_chat_completion.json') })).data.recordUsage;
      expect(third.event).toMatchObject({ status: 'UNCHARGED', charge: '0.00' });
      expect(await balance()).toBe(parseDecimalNanos('x', '-0.005'));
      await new Promise((resolve) => setTimeout(resolve, 50));
      // One announcement per charge that moved the wallet, carrying its transaction.
      expect(announced.map((event) => [event.balance, event.transactionIds])).toEqual([
        ['-0.00231125', [first.event.ledgerTransactionId]],
        ['-0.005', [second.event.ledgerTransactionId]],
      ]);
    } finally {
      await events.return?.(undefined);
    }
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

  it('a net credit from VOLUME repricing settles the sub-nano carry: the wallet moves by exactly the events\' charges', async () => {
    const { merchant, customer, record } = await setup();
    await server.services.meters.create(merchant.id, { key: 'units', name: 'Units', unit: 'unit', source: 'QUANTITY' });
    await server.services.priceRules.put(merchant.id, {
      name: 'volume', type: 'VOLUME', meterKey: 'units', config: { tiers: [{ upTo: 1, unitPrice: '1.0000000003' }, { upTo: null, unitPrice: '0.0000000001' }] }, effectiveFrom: new Date('2026-01-01'),
    });
    // One unit: 1.0000000003 (a nano charged, 0.3 carried). Two: the period is worth 0.0000000002,
    // so the second event credits 1.0000000001 back; truncated to whole nanos, 0.1 nano would be lost.
    const charges: bigint[] = [];
    for (let i = 0; i < 2; i++) {
      const result = await record({ quantities: { units: 1 } });
      expect(result.errors).toBeUndefined();
      charges.push(parseDecimalAttos('charge', result.data!.recordUsage.event.charge));
    }
    expect(charges).toEqual([parseDecimalAttos('x', '1.0000000003'), -parseDecimalAttos('x', '1.0000000001')]);
    const wallet = await server.services.prisma.wallet.findUniqueOrThrow({ where: { customerId_currency: { customerId: customer.id, currency: 'USD' } } });
    const start = parseDecimalNanos('x', '10.00') * ATTOS_PER_NANO;
    expect(start - (wallet.balance * ATTOS_PER_NANO - wallet.fractionCarry)).toBe(parseDecimalAttos('x', '0.0000000002'));
    expect((await server.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);
  });
  it('a net charge and a net give-back under a nano are both posted, as transactions of 0 with their exact amount', async () => {
    const { merchant, customer, record } = await setup();
    await server.services.meters.create(merchant.id, { key: 'units', name: 'Units', unit: 'unit', source: 'QUANTITY' });
    await server.services.priceRules.put(merchant.id, {
      name: 'volume', type: 'VOLUME', meterKey: 'units', config: { tiers: [{ upTo: 1, unitPrice: '0.0000000008' }, { upTo: null, unitPrice: '0.0000000001' }] }, effectiveFrom: new Date('2026-01-01'),
    });
    // 0.8 nano charged, then the period is worth 0.2: 0.6 given back, all of it within the carry.
    const events = [];
    for (let i = 0; i < 2; i++) {
      const result = await record({ quantities: { units: 1 } });
      expect(result.errors).toBeUndefined();
      events.push(result.data!.recordUsage.event);
    }
    expect(events.map((event) => [event.status, event.charge])).toEqual([['CHARGED', '0.0000000008'], ['CHARGED', '-0.0000000006']]);
    const transactions = await Promise.all(events.map((event) => server.services.prisma.ledgerTransaction.findUniqueOrThrow({ where: { id: event.ledgerTransactionId } })));
    expect(transactions.map((transaction) => [transaction.amount, (transaction.metadata as { exactChargeAttos: string }).exactChargeAttos])).toEqual([
      [0n, parseDecimalAttos('x', '0.0000000008').toString()], [0n, (-parseDecimalAttos('x', '0.0000000006')).toString()],
    ]);
    const wallet = await server.services.prisma.wallet.findUniqueOrThrow({ where: { customerId_currency: { customerId: customer.id, currency: 'USD' } } });
    expect([wallet.balance, wallet.fractionCarry]).toEqual([parseDecimalNanos('x', '10.00'), parseDecimalAttos('x', '0.0000000002')]);
    expect((await server.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);
  });
});

describe('VOLUME credits give back only what was paid', () => {
  /** 100 units at 1.00, then the whole period at 0.50: the 101st unit re-prices the first 100. */
  async function volumeSetup(credit: string) {
    const context = await setup(credit);
    await server.services.meters.create(context.merchant.id, { key: 'units', name: 'Units', unit: 'unit', source: 'QUANTITY' });
    await server.services.priceRules.put(context.merchant.id, {
      name: 'volume', type: 'VOLUME', meterKey: 'units', config: { tiers: [{ upTo: 100, unitPrice: '1' }, { upTo: null, unitPrice: '0.5' }] }, effectiveFrom: new Date('2026-01-01'),
    });
    const units = async (count: number, extra: Record<string, unknown> = {}) => {
      const result = await context.record({ quantities: { units: count }, ...extra });
      expect(result.errors).toBeUndefined();
      return result.data!.recordUsage.event as { status: string; charge: string; shortfall: string; shortfallSettled: string };
    };
    const integrity = async () => (await server.services.ledgerQueries.integrity(context.merchant.id)).violations;
    return { ...context, units, integrity };
  }

  it('paid in full: the period re-priced lower credits the difference', async () => {
    const { units, balance, integrity } = await volumeSetup('200');
    expect(await units(100)).toMatchObject({ status: 'CHARGED', charge: '100.00' });
    expect(await units(1)).toMatchObject({ charge: '-49.50', shortfallSettled: '0.00' });
    expect(await balance()).toBe(parseDecimalNanos('x', '149.50'));
    expect(await integrity()).toEqual([]);
  });

  it('not paid: a customer that could not cover the dearer units gets nothing back, and owes the period at its new price', async () => {
    const { units, balance, integrity } = await volumeSetup('0');
    expect(await units(100)).toMatchObject({ status: 'UNCHARGED', charge: '0.00', shortfall: '100.00' });
    // It used to credit 49.50 the customer never paid: spendable money out of nothing. The line
    // still shows the re-pricing; it went to the shortfall.
    expect(await units(1)).toMatchObject({ charge: '0.00', shortfallSettled: '49.50', charges: [{ amount: '-49.50' }] });
    expect(await balance()).toBe(0n);
    // The period is now worth 50.50 and nothing of it was paid; the next unit adds its 0.50.
    expect(await units(1)).toMatchObject({ status: 'UNCHARGED', shortfall: '0.50' });
    expect(await balance()).toBe(0n);
    expect(await integrity()).toEqual([]);
  });

  it('partly paid: what comes back settles the unpaid part first', async () => {
    const { units, balance, integrity } = await volumeSetup('70');
    expect(await units(100)).toMatchObject({ status: 'PARTIALLY_CHARGED', charge: '70.00', shortfall: '30.00' });
    // 49.50 comes back: 30.00 covers the shortfall, 19.50 is credited. Paid in all: 50.50, the period's price.
    expect(await units(1)).toMatchObject({ charge: '-19.50', shortfallSettled: '30.00', charges: [{ amount: '-49.50' }] });
    expect(await balance()).toBe(parseDecimalNanos('x', '19.50'));
    expect(await integrity()).toEqual([]);
  });

  it("each currency's units are tiered apart: dollars start at the first tier, and euros come back in euros", async () => {
    const { merchant, customer, units, balance, integrity } = await volumeSetup('10');
    await server.services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, {
      customerId: customer.id, currency: 'EUR', amountNanos: parseDecimalNanos('amount', '200'), kind: 'PAID', idempotencyKey: 'seed-eur',
    });
    expect(await units(100, { currency: 'EUR' })).toMatchObject({ status: 'CHARGED', charge: '100.00' });
    // Counted together, this dollar unit was the month's 101st and credited 49.50 dollars nobody paid.
    expect(await units(1)).toMatchObject({ status: 'CHARGED', charge: '1.00' });
    expect(await balance()).toBe(parseDecimalNanos('x', '9'));
    expect(await units(1, { currency: 'EUR' })).toMatchObject({ charge: '-49.50' });
    expect((await server.services.ledgerQueries.wallet(merchant.id, customer.id, 'EUR')).balance).toBe(parseDecimalNanos('x', '149.50'));
    expect(await integrity()).toEqual([]);
  });

  it('within one batch, the credit counts the events before it, not yet stored', async () => {
    const { merchant, customer, balance, integrity } = await volumeSetup('70');
    const send = async (events: { key: string; units: number }[]) => {
      const response = await fetch(`${server.url}/v1/usage/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` },
        body: JSON.stringify({ events: events.map(({ key, units }) => ({ customer: customer.id, idempotencyKey: key, quantities: { units } })) }),
      });
      expect(response.status).toBe(200);
      return ((await response.json()) as { results: { event: { charge: string; status: string } }[] }).results.map((result) => result.event.charge);
    };
    // As in two calls: 70.00 paid of 100.00, then 49.50 back, of which 30.00 settles the shortfall.
    expect(await send([{ key: 'a', units: 100 }, { key: 'b', units: 1 }])).toEqual(['70.00', '-19.50']);
    expect(await send([{ key: 'c', units: 1 }])).toEqual(['0.50']);
    expect(await balance()).toBe(parseDecimalNanos('x', '19.00'));
    expect(await integrity()).toEqual([]);
  });

  it('the HTTP answers carry shortfallSettled as a decimal, as GraphQL does', async () => {
    const { merchant, customer } = await volumeSetup('70');
    const post = async (path: string, body: unknown) => {
      const response = await fetch(`${server.url}${path}`, {
        method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` }, body: JSON.stringify(body),
      });
      expect(response.status).toBe(200);
      return (await response.json()) as any;
    };
    const batch = await post('/v1/usage/batch', { events: [{ customer: customer.id, idempotencyKey: 'a', quantities: { units: 100 } }] });
    expect(batch.results[0].event).toMatchObject({ status: 'PARTIALLY_CHARGED', charge: '70.00', shortfall: '30.00', shortfallSettled: '0.00' });
    // 49.50 comes back: 30.00 settles the shortfall, 19.50 is credited.
    const single = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'b', quantities: { units: 1 } });
    expect(single.event).toMatchObject({ charge: '-19.50', shortfall: '0.00', shortfallSettled: '30.00' });
    const listed = await server.graphql<any>('query ($id: ID!) { usageEvents(customerId: $id, first: 5) { edges { node { id shortfallSettled } } } }', { id: customer.id }, merchant.secret);
    const settled = new Map(listed.data.usageEvents.edges.map(({ node }: any) => [node.id, node.shortfallSettled]));
    expect(settled.get(single.event.id)).toBe(single.event.shortfallSettled);
    expect(settled.get(batch.results[0].event.id)).toBe(batch.results[0].event.shortfallSettled);
  });
});

describe('provider responses that cannot be read as they are', () => {
  const batch = async (merchantSecret: string, events: unknown[]) => {
    const response = await fetch(`${server.url}/v1/usage/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${merchantSecret}` },
      body: JSON.stringify({ events }),
    });
    return { status: response.status, body: (await response.json()) as { results: { ok: boolean; error?: { code: string; field?: string; message: string }; event?: { status: string; charge: string; costProblem: string | null } }[] } };
  };
  const chat = (usage: Record<string, unknown>) => JSON.stringify({ id: 'x', object: 'chat.completion', model: 'gpt-5.4-mini', choices: [], usage });

  it('are refused one by one with VALIDATION, and the batch around them is charged', async () => {
    const { merchant, customer, balance } = await setup();
    await server.services.meters.create(merchant.id, { key: 'audio', name: 'Audio', unit: 'second', source: 'AUDIO_SECONDS' });
    const good = { customer: customer.id, idempotencyKey: 'good', response: responseOf('openai_chat_completion.json') };
    const bad: [string, Record<string, unknown>, string][] = [
      // A negative duration used to fail the whole batch (400) or its lane (INTERNAL, retried forever).
      ['duration', { url: 'https://api.deepgram.com/v1/listen', body: JSON.stringify({ metadata: { duration: -12.5, channels: 1 } }) }, 'response.body'],
      ['negative', { url: 'https://api.openai.com/v1/chat/completions', body: chat({ prompt_tokens: -1000, completion_tokens: 10, total_tokens: 10 }) }, 'response.body'],
      ['fraction', { url: 'https://api.openai.com/v1/chat/completions', body: chat({ prompt_tokens: 1000.6, completion_tokens: 10, total_tokens: 1010 }) }, 'response.body'],
      // A count header sent malformed is not replaced by the request text's length.
      ['header', { url: 'https://api.elevenlabs.io/v1/text-to-speech/V', headers: { 'character-cost': '-5' }, body: '', requestBody: { text: 'hello world', model_id: 'eleven_flash_v2_5' } }, 'response.body'],
      // Compared as text, "500 …" is not >= 400: it was charged as a success.
      ['status', { ...responseOf('openai_chat_completion.json'), status: '500 Internal Server Error' }, 'events.5.response.status'],
      ['provider', { ...responseOf('openai_chat_completion.json'), provider: 5 }, 'events.6.response.provider'],
    ];
    const before = await balance();
    const { status, body } = await batch(merchant.secret, [good, ...bad.map(([key, response]) => ({ customer: customer.id, idempotencyKey: key, response }))]);
    expect(status).toBe(200);
    expect(body.results[0]).toMatchObject({ ok: true, event: { status: 'CHARGED' } });
    bad.forEach(([key, , field], index) => expect(body.results[index + 1], key).toMatchObject({ ok: false, error: { code: 'VALIDATION', field } }));
    expect(await balance()).toBeLessThan(before);
    expect(await server.services.prisma.usageEvent.count({ where: { merchantId: merchant.id } })).toBe(1);
  });

  it('a detail count above its total raises the total, so the call is charged, not recorded free', async () => {
    const { record } = await setup();
    const edited = (name: string, edit: (usage: Record<string, any>) => void) => {
      const response = responseOf(name);
      const body = JSON.parse(response.body) as { usage: Record<string, any> };
      edit(body.usage);
      return { ...response, body: JSON.stringify(body) };
    };
    const responses = [
      // 1-hour cache writes above all cache writes.
      edited('anthropic_messages.json', (usage) => (usage.cache_creation = { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 4000 })),
      // Output audio above the whole output.
      edited('openai_chat_completion.json', (usage) => (usage.completion_tokens_details.audio_tokens = 5000)),
    ];
    for (const response of responses) {
      const event = (await record({ response })).data.recordUsage.event;
      expect(event, response.url).toMatchObject({ status: 'CHARGED', costProblem: null });
      expect(Number(event.charge), response.url).toBeGreaterThan(0);
    }
  });

  it('a JSON body that starts with a byte-order mark is read', async () => {
    const { record } = await setup();
    const response = responseOf('openai_chat_completion.json');
    const result = await record({ response: { ...response, body: `\ufeff${response.body}` } });
    expect(result.data.recordUsage.event).toMatchObject({ status: 'CHARGED', cost: expected['openai_chat_completion.json']!.expected_cost_usd });
  });

  it('an event in another currency than the provider prices (USD) is not costed as if dollars were euros; rules on meters still price it', async () => {
    const { merchant, customer, record } = await setup();
    await server.services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, {
      customerId: customer.id, currency: 'EUR', amountNanos: parseDecimalNanos('amount', '10'), kind: 'PAID', idempotencyKey: 'seed-eur',
    });
    const unpriced = await record({ response: responseOf('openai_chat_completion.json'), currency: 'EUR' });
    expect(unpriced.data.recordUsage.event).toMatchObject({ status: 'NOT_BILLABLE', currency: 'EUR', cost: '0.00', charge: '0.00' });
    expect(unpriced.data.recordUsage.event.costProblem).toContain('USD');
    await server.services.meters.create(merchant.id, { key: 'calls', name: 'Calls', unit: 'request', source: 'REQUESTS' });
    // After the event above: a rule never reprices usage already priced.
    const after = new Date(now.getTime() + 1_000);
    await server.services.priceRules.put(merchant.id, { name: 'per call', type: 'FLAT', meterKey: 'calls', config: { unitPrice: '0.02' }, effectiveFrom: after });
    const flat = await record({ response: responseOf('openai_chat_completion.json'), currency: 'EUR', timestamp: after.toISOString() });
    expect(flat.data.recordUsage.event).toMatchObject({ status: 'CHARGED', currency: 'EUR', charge: '0.02' });
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
    expect(body.summary).toEqual({ received: 7, ok: 2, failed: 5, replayed: 0 });
    const charged = body.results.filter((r) => r.ok).reduce((sum, r) => sum + parseDecimalAttos('c', r.event.charge), 0n);
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - charged / ATTOS_PER_NANO);
    const report = await server.services.ledgerQueries.integrity(merchant.id);
    expect(report.violations).toEqual([]);
  });

  it('refuses, per event, counts too large to store, unreadable response bodies, a non-boolean billable and non-object metadata', async () => {
    const { merchant, customer, balance } = await setup();
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 };
    const chat = responseOf('openai_chat_completion.json');
    const events = [
      { customer: customer.id, idempotencyKey: 'x-1', usage: { ...usage, inputTokens: 3_000_000_000 } },
      { customer: customer.id, idempotencyKey: 'x-2', response: { ...chat, body: chat.body.replace(/"prompt_tokens":\s*\d+/, '"prompt_tokens": 3000000000') } },
      { customer: customer.id, idempotencyKey: 'x-3', response: { ...chat, body: '<html>502 Bad Gateway</html>' } },
      { customer: customer.id, idempotencyKey: 'x-4', response: { ...chat, body: chat.body.slice(0, chat.body.length / 2) } },
      { customer: customer.id, idempotencyKey: 'x-5', usage: { ...usage, billable: 'false' } },
      { customer: customer.id, idempotencyKey: 'x-6', usage, metadata: 'team=search' },
      { customer: customer.id, idempotencyKey: 'x-7', usage },
      { customer: customer.id, idempotencyKey: 'x-8', usage: { ...usage, reasoningTokens: 101 } },
      // Bodies that carry no usage by design are recorded as before, not refused.
      { customer: customer.id, idempotencyKey: 'x-9', response: { url: 'https://api.openai.com/v1/audio/transcriptions', body: 'Thanks for calling.\n', requestBody: { model: 'whisper-1' } } },
      // A binary Bedrock event stream cut in its first frame is a cut stream, not a page of text.
      { customer: customer.id, idempotencyKey: 'x-10', response: { url: 'https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-haiku-4-5/converse-stream', body: '\u0000\u0000\u0000\u001b\u0000\u0000\u0000\u0010partial' } },
    ];
    const response = await fetch(`${server.url}/v1/usage/batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` },
      body: JSON.stringify({ events }),
    });
    expect(response.status).toBe(200);
    const { results } = (await response.json()) as { results: any[] };
    expect(results.map((r) => (r.ok ? r.event.status : `${r.error.code} ${r.error.field}`))).toEqual([
      'VALIDATION usage.inputTokens', 'VALIDATION response.body', 'VALIDATION response.body', 'VALIDATION response.body', 'VALIDATION usage.billable', 'VALIDATION metadata', 'CHARGED',
      'VALIDATION usage.reasoningTokens', 'NOT_BILLABLE', 'NOT_BILLABLE',
    ]);
    expect(results[1].error.message).toMatch(/inputTokens beyond 2,147,483,647/);
    expect(results[2].error.message).toMatch(/nothing was recorded/);
    // Only the good event was recorded and charged.
    const stored = await server.services.prisma.usageEvent.findMany({ where: { merchantId: merchant.id }, select: { idempotencyKey: true } });
    expect(stored.map((row) => row.idempotencyKey).sort()).toEqual(['x-10', 'x-7', 'x-9']);
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - parseDecimalAttos('c', results[6].event.charge) / ATTOS_PER_NANO);
  });

  it('with Prefer: return=minimal, answers only the events that need attention, and records the rest all the same', async () => {
    // 0.005 pays for the first event (0.00336 at list price) but not the second.
    const { merchant, customer, balance } = await setup('0.005');
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 4000, outputTokens: 300 };
    const post = async (events: unknown[], prefer: string | null) => {
      const response = await fetch(`${server.url}/v1/usage/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}`, ...(prefer ? { prefer } : {}) },
        body: JSON.stringify({ events }),
      });
      expect(response.status).toBe(200);
      return { applied: response.headers.get('preference-applied'), body: (await response.json()) as { results: any[]; summary: unknown } };
    };
    const events = [
      { customer: customer.externalId, idempotencyKey: 'm-1', usage },
      { customer: 'nobody', idempotencyKey: 'm-2', usage },
      { customer: customer.externalId, idempotencyKey: 'm-3', usage },
    ];
    const first = await post(events, 'respond-async, return=minimal');
    expect(first.applied).toBe('return=minimal');
    // m-1 was charged in full: nothing to say about it. m-3 was recorded but could not be paid for.
    expect(first.body.results.map((r) => [r.index, r.ok, r.ok ? r.chargeError.code : r.error.code])).toEqual([[1, false, 'NOT_FOUND'], [2, true, 'INSUFFICIENT_FUNDS']]);
    expect(first.body.results[1].event).toMatchObject({ idempotencyKey: 'm-3', status: 'PARTIALLY_CHARGED' });
    expect(first.body.summary).toEqual({ received: 3, ok: 2, failed: 1, replayed: 0 });
    expect(await balance()).toBe(0n);
    // The full answer to the same batch replays every recorded event, m-1 included.
    const full = await post(events, null);
    expect(full.applied).toBeNull();
    expect(full.body.results.map((r) => r.ok && [r.event.idempotencyKey, r.replayed])).toEqual([['m-1', true], false, ['m-3', true]]);
    expect(full.body.summary).toEqual({ received: 3, ok: 2, failed: 1, replayed: 2 });
    const usageEvents = await server.services.usage.page(merchant.id, customer.id, { limit: 10, inverted: false });
    expect(usageEvents.map((e) => e.idempotencyKey).sort()).toEqual(['m-1', 'm-3']);
  });

  it('stores any text exactly: keys, models and metadata with tabs, newlines, quotes, backslashes and NULL look-alikes', async () => {
    const { merchant, customer } = await setup();
    const keys = ['tab\there', 'line\nbreak\r\nend', 'back\\slash', '\\N', 'NULL', 'null', 'quote"d,{braced}', 'ünïcödé ✓'];
    const metadata = { note: 'a\tb\nc \\ "quoted" \\N {x,y}', nested: { path: 'C:\\temp\\x' } };
    const events = keys.map((idempotencyKey) => ({
      customer: customer.id, idempotencyKey, metadata, usage: { provider: 'custom', model: 'my\tmodel\\v2 "x",{y}', inputTokens: 10 },
    }));
    const first = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, events);
    expect(first.map((r) => r.ok && !r.replayed && r.event.idempotencyKey)).toEqual(keys);
    const stored = await server.services.prisma.usageEvent.findMany({ where: { merchantId: merchant.id } });
    expect(stored.map((e) => e.idempotencyKey).sort()).toEqual([...keys].sort());
    for (const event of stored) {
      expect(event.model).toBe('my\tmodel\\v2 "x",{y}');
      expect(event.metadata).toMatchObject(metadata);
    }
    // Each key is found again as it was sent: the batch replays, charging nothing more.
    const again = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, events);
    expect(again.map((r) => r.ok && r.replayed && r.event.idempotencyKey)).toEqual(keys);
  });

  it('refuses, per event and naming the field, text and times PostgreSQL cannot store; the rest of the batch is charged', async () => {
    const { merchant, customer, balance } = await setup();
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000 };
    const valid = { customer: customer.externalId, idempotencyKey: `ok-${randomUUID()}`, usage };
    const bad = [
      [{ metadata: { note: 'a\u0000b' } }, 'metadata'],
      [{ metadata: { ['k\u0000']: 1 } }, 'metadata'],
      [{ metadata: { text: 'x\ud800' } }, 'metadata'],
      [{ idempotencyKey: 'key\u0000' }, 'idempotencyKey'],
      [{ customer: 'who\u0000' }, 'customer'],
      [{ usage: { ...usage, model: 'gpt\u0000' } }, 'usage.model'],
      [{ usage: { ...usage, api: 'chat\u0000' } }, 'usage.api'],
      [{ usage: undefined, quantities: { ['m\u0000']: 1 } }, 'quantities'],
      [{ usage: undefined, quantities: { ['m\ud800']: 1 } }, 'quantities'],
      [{ timestamp: '0000-06-01T00:00:00Z' }, 'timestamp'],
      [{ timestamp: '-000001-06-01T00:00:00Z' }, 'timestamp'],
      [{ timestamp: '2026-02-30T00:00:00Z' }, 'timestamp'],
      [{ timestamp: '2026-06-01 12:00:00' }, 'timestamp'],
      [{ timestamp: 1780000000000 }, 'timestamp'],
    ] as const;
    const events = [valid, ...bad.map(([change]) => ({ ...valid, idempotencyKey: randomUUID(), ...change }))];
    const response = await fetch(`${server.url}/v1/usage/batch`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` }, body: JSON.stringify({ events }),
    });
    expect(response.status).toBe(200);
    const { results } = (await response.json()) as { results: { ok: boolean; event?: { status: string; charge: string }; error?: { code: string; field: string } }[] };
    expect(results[0]).toMatchObject({ ok: true, event: { status: 'CHARGED' } });
    // What the HTTP layer refuses while reading the batch is named by its place in it ("events.12.timestamp").
    expect(results.slice(1).map((result) => result.error && [result.error.code, result.error.field.replace(/^events\.\d+\./, '')])).toEqual(bad.map(([, field]) => ['VALIDATION', field]));
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - parseDecimalNanos('x', results[0]!.event!.charge));
    expect(await server.services.prisma.usageEvent.count({ where: { merchantId: merchant.id } })).toBe(1);
  });

  it('takes a timestamp up to 5 minutes ahead of the server (clocks drift), and refuses one further ahead saying how far it may be', async () => {
    const { record } = await setup();
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000 };
    const ahead = (ms: number) => new Date(now.getTime() + ms).toISOString();
    const near = await record({ usage, timestamp: ahead(4 * 60_000) });
    expect(near.errors).toBeUndefined();
    expect(near.data.recordUsage.event.status).toBe('CHARGED');
    const far = await record({ usage, timestamp: ahead(6 * 60_000) });
    expect(far.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'timestamp' });
    expect(far.errors?.[0]?.message).toContain('at most 5 minutes ahead');
  });

  it('refuses, per event and naming the field, JSON nested deeper than 64 levels; the rest of the batch is charged', async () => {
    const { merchant, customer, balance, record } = await setup();
    const nested = (levels: number, wrap: (inner: unknown) => unknown) => {
      let value: unknown = '1';
      for (let i = 0; i < levels; i++) value = wrap(value);
      return value;
    };
    const deep = nested(100, (inner) => ({ d: inner }));
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000 };
    const chat = responseOf('openai_chat_completion.json');
    const event = (change: Record<string, unknown>) => ({ customer: customer.id, idempotencyKey: randomUUID(), usage, ...change });
    const bad = [
      [{ usage: undefined, response: { ...chat, requestBody: { model: 'gpt-5.4-mini', messages: deep } } }, 'response.requestBody'],
      [{ usage: undefined, response: { ...chat, headers: { 'x-list': nested(100, (inner) => [inner]) } } }, 'response.headers'],
      // Every field of a usage record is a number or text, so JSON nests in one only under a key
      // that is none of them: refused as such, before its depth is read (see usage.strict-input.test.ts).
      [{ usage: { ...usage, extra: deep } }, 'usage.extra'],
      [{ usage: undefined, quantities: { units: nested(100, (inner) => [inner]) } }, 'quantities.units'],
      [{ metadata: { deep } }, 'metadata'],
    ] as const;
    // A request body nested as deep as allowed is read as before.
    const events = [event({}), ...bad.map(([change]) => event(change)), event({ usage: undefined, response: { ...chat, requestBody: { messages: nested(63, (inner) => ({ d: inner })) } } })];
    const response = await fetch(`${server.url}/v1/usage/batch`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` }, body: JSON.stringify({ events }),
    });
    expect(response.status).toBe(200);
    const { results } = (await response.json()) as { results: { ok: boolean; event?: { status: string; charge: string }; error?: { code: string; field: string; message: string } }[] };
    expect(results.map((result) => (result.ok ? result.event!.status : [result.error!.code, result.error!.field.replace(/^events\.\d+\./, '')]))).toEqual([
      'CHARGED', ...bad.map(([, field]) => ['VALIDATION', field]), 'CHARGED',
    ]);
    expect(results[1]!.error!.message).toMatch(/more than 64 levels deep/);
    const charged = parseDecimalAttos('c', results[0]!.event!.charge) + parseDecimalAttos('c', results[6]!.event!.charge);
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - charged / ATTOS_PER_NANO);
    expect(await server.services.prisma.usageEvent.count({ where: { merchantId: merchant.id } })).toBe(2);
    // The same through recordUsage.
    for (const [response, field] of [[{ ...chat, requestBody: { messages: deep } }, 'response.requestBody'], [{ ...chat, headers: { 'x-list': nested(100, (inner) => [inner]) } }, 'response.headers']] as const) {
      const answer = await record({ response });
      expect(answer.errors?.[0]?.extensions, field).toMatchObject({ code: 'VALIDATION', field });
    }
    expect(await server.services.prisma.usageEvent.count({ where: { merchantId: merchant.id } })).toBe(2);
  });

  it('reads return=minimal among other preferences, as RFC 7240 writes them', () => {
    for (const prefer of ['return=minimal', 'RETURN = "minimal"', 'respond-async, return=minimal', 'return=minimal; foo=bar', 'wait=5,return=minimal']) {
      expect(prefersMinimal(prefer), prefer).toBe(true);
    }
    // A parameter of another preference, another value, or nothing at all.
    for (const prefer of [undefined, '', 'return=representation', 'wait=5; return=minimal', 'return=minimalist']) {
      expect(prefersMinimal(prefer), String(prefer)).toBe(false);
    }
  });

  it('answers each event with its own time: the timestamp it was sent with, or the time it arrived', async () => {
    const { merchant, customer } = await setup();
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 10 };
    const times = ['2026-06-01T00:00:00.000Z', '2026-06-01T00:00:00.000Z', null, '2026-06-14T23:59:59.999Z', '2026-06-01T00:00:00.000Z'];
    const events = times.map((timestamp, i) => ({ customer: customer.externalId, idempotencyKey: `t-${i}`, usage, ...(timestamp ? { timestamp } : {}) }));
    const post = async () => {
      const response = await fetch(`${server.url}/v1/usage/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` },
        body: JSON.stringify({ events }),
      });
      expect(response.status).toBe(200);
      return ((await response.json()) as { results: { replayed: boolean; event: { occurredAt: string } }[] }).results;
    };
    const first = await post();
    expect(first.map((r) => r.event.occurredAt)).toEqual(times.map((time) => time ?? now.toISOString()));
    // Replays answer from the stored rows, with the same times.
    const replayed = await post();
    expect(replayed.map((r) => [r.replayed, r.event.occurredAt])).toEqual(first.map((r) => [true, r.event.occurredAt]));
  });

  it('concurrent batches are charged together exactly as if one after the other; a shared key waits its turn and replays', async () => {
    const { merchant, customer, balance } = await setup('0.05');
    const event = (key: string) => ({ customer: customer.id, idempotencyKey: key, usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 10_000, outputTokens: 1_000 } });
    // The first batch to arrive goes alone; the rest queue behind it and go together, except one of the two sharing c-3.
    const batches = [['c-1', 'c-2'], ['c-3', 'c-4'], ['c-5', 'c-3'], ['c-6', 'c-7']].map((keys) => keys.map(event));
    const answers = await Promise.all(batches.map((events) => server.services.usage.record(merchant.id, SYSTEM_ACTOR, events)));
    // Every answer is about its own batch, in its own order.
    answers.forEach((results, b) => expect(results.map((r) => (r.ok ? r.event.idempotencyKey : null))).toEqual(batches[b]!.map((e) => e.idempotencyKey)));
    // c-3 arrived twice: whichever batch reached the charge queue later waited for the other and
    // got its answer back as a replay (the two requests race through their first reads).
    const [one, other] = [answers[1]![0]!, answers[2]![1]!];
    expect(one.ok && other.ok && one.event.id === other.event.id && one.replayed !== other.replayed).toBe(true);
    // The wallet ran out part-way: each event was checked against what was left, and nothing overdrew.
    const fresh = answers.flat().filter((r) => r.ok && !r.replayed);
    const charged = fresh.reduce((sum, r) => sum + (r.ok ? parseDecimalAttos('c', r.event.charge) : 0n), 0n);
    expect(await balance()).toBe(parseDecimalNanos('x', '0.05') - charged / ATTOS_PER_NANO);
    expect(await balance()).toBeGreaterThanOrEqual(0n);
    expect(fresh.filter((r) => r.ok && r.event.status === 'PARTIALLY_CHARGED').length).toBeLessThanOrEqual(1);
    const report = await server.services.ledgerQueries.integrity(merchant.id);
    expect(report.violations).toEqual([]);
  });

  it('a large batch over many customers (charged as concurrent parts) moves each wallet by exactly its own events, in order', async () => {
    const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
    const credits = ['5.00', '5.00', '0.30', '5.00', '0.30', '5.00'];
    const customers: { id: string; externalId: string }[] = [];
    for (const [i, credit] of credits.entries()) {
      const customer = await server.services.customers.create(merchant.id, { externalId: `big-${i}` });
      await server.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, {
        customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', credit), kind: 'PAID', idempotencyKey: `seed-${i}`,
      });
      customers.push(customer);
    }
    // 600 events, customers interleaved; each costs 0.00336 at gpt-5.4-mini list prices, so the
    // 0.30 wallets run out part-way through their 100 events.
    const events = Array.from({ length: 600 }, (_v, i) => ({
      customer: customers[i % customers.length]!.externalId, idempotencyKey: `big-${i}`, usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 4000, outputTokens: 300 },
    }));
    // One key used by two customers: the first in batch order is charged, the second refused.
    events.push({ ...events[0]!, customer: customers[1]!.externalId });
    const results = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, events);
    expect(results.slice(0, 600).every((r, i) => r.ok && r.event.idempotencyKey === `big-${i}` && r.event.customerId === customers[i % customers.length]!.id)).toBe(true);
    expect(results[600]).toMatchObject({ ok: false, error: { code: 'CONFLICT' } });
    for (const [c, customer] of customers.entries()) {
      const mine = results.filter((r, i) => i < 600 && i % customers.length === c).map((r) => (r.ok ? r.event : null)!);
      const charged = mine.reduce((sum, e) => sum + parseDecimalAttos('c', e.charge), 0n);
      const wallet = await server.services.ledgerQueries.wallet(merchant.id, customer.id, 'USD');
      expect(wallet.balance).toBe(parseDecimalNanos('x', credits[c]!) - charged / ATTOS_PER_NANO);
      // In batch order: fully charged events, then at most one partial, then the uncharged rest.
      const statuses = mine.map((e) => e.status).join(' ');
      expect(statuses).toMatch(/^(CHARGED ?)*(PARTIALLY_CHARGED ?)?(UNCHARGED ?)*$/);
      if (credits[c] === '0.30') expect(statuses).toContain('UNCHARGED');
      else expect(mine.every((e) => e.status === 'CHARGED')).toBe(true);
    }
    const report = await server.services.ledgerQueries.integrity(merchant.id);
    expect(report.violations).toEqual([]);
  });

  it('a retry after another customer\'s record under its key, in one batch, answers as a retry does alone: a replay of the stored event', async () => {
    const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
    for (const externalId of ['stored', 'other']) await server.services.customers.create(merchant.id, { externalId });
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 10, outputTokens: 5 };
    const [first] = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [{ customer: 'stored', idempotencyKey: 'k', usage }]);
    expect(first).toMatchObject({ ok: true, replayed: false });
    const events = () => server.services.db.withConnection((c) => c.query<{ n: number }>('SELECT count(*)::int AS n FROM usage_events WHERE merchant_id = $1', [merchant.id]));
    const before = await events();
    // The other customer's record goes first (CONFLICT with the stored event); the retry must not take that answer.
    const results = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [
      { customer: 'other', idempotencyKey: 'k', usage },
      { customer: 'stored', idempotencyKey: 'k', usage },
      { customer: 'other', idempotencyKey: 'k', usage },
    ]);
    expect(results.map((r) => (r.ok ? `${r.replayed ? 'replay of' : 'new'} ${r.event.id}` : r.error.code))).toEqual(['CONFLICT', `replay of ${first!.ok && first!.event.id}`, 'CONFLICT']);
    expect(await events()).toEqual(before);
  });

  it('when one part of a large batch cannot be stored, its events answer "not recorded", the rest are charged, and a retry completes it', async () => {
    const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
    // Two customers in each of two charge lanes (a customer's lane follows from its id).
    const customers: { id: string; externalId: string }[] = [];
    const inLane = [0, 0];
    for (let i = 0; customers.length < 4; i++) {
      const customer = await server.services.customers.create(merchant.id, { externalId: `part-${i}` });
      const lane = laneOf(customer.id, CUSTOMER_LANES);
      if (lane > 1 || inLane[lane]! === 2) continue;
      inLane[lane]!++;
      await server.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, {
        customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '5.00'), kind: 'PAID', idempotencyKey: `seed-${i}`,
      });
      customers.push(customer);
    }
    const events = Array.from({ length: 400 }, (_v, i) => ({
      customer: customers[i % 4]!.externalId, idempotencyKey: `part-${i}`, usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 },
    }));
    // The database refuses customer 1's events, so the part of customer 1's lane (customer 1 and
    // the other customer there) fails (twice), while the other lane's two customers are charged.
    const sql = (text: string) => server.services.db.withConnection((connection) => connection.exec(text));
    await sql(`CREATE FUNCTION refuse_part_test() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
      IF NEW.customer_id = '${customers[1]!.id}' THEN RAISE EXCEPTION 'disk full (test)'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER refuse_part_test BEFORE INSERT ON usage_events FOR EACH ROW EXECUTE FUNCTION refuse_part_test()`);
    let first: UsageResult[];
    try {
      first = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, events);
    } finally {
      await sql('DROP TRIGGER refuse_part_test ON usage_events; DROP FUNCTION refuse_part_test()');
    }
    const stored = (c: number) => laneOf(customers[c]!.id, CUSTOMER_LANES) !== laneOf(customers[1]!.id, CUSTOMER_LANES);
    first.forEach((result, i) => {
      if (stored(i % 4)) expect(result, `event ${i}`).toMatchObject({ ok: true, replayed: false, event: { status: 'CHARGED' } });
      else expect(result, `event ${i}`).toMatchObject({ ok: false, error: { code: 'INTERNAL', details: { retryable: true } } });
    });
    const balances = async () => Promise.all(customers.map(async (c) => (await server.services.ledgerQueries.wallet(merchant.id, c.id, 'USD')).balance));
    const full = parseDecimalNanos('x', '5.00');
    const afterFirst = await balances();
    expect(afterFirst.map((balance, c) => (stored(c) ? balance < full : balance === full))).toEqual([true, true, true, true]);
    expect((await server.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);

    // The same batch again: what was stored replays, the rest is charged now, nothing twice.
    const second = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, events);
    second.forEach((result, i) => expect(result, `event ${i}`).toMatchObject({ ok: true, replayed: stored(i % 4), event: { status: 'CHARGED' } }));
    const afterSecond = await balances();
    expect(afterSecond.filter((_b, c) => stored(c))).toEqual(afterFirst.filter((_b, c) => stored(c)));
    expect(new Set(afterSecond).size).toBe(1); // every customer charged once for the same 100 events
    expect((await server.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);
  });

  it('an event whose data the database refuses (SQLSTATE class 22) fails alone with VALIDATION: the events sent with it are charged', async () => {
    const { merchant, customer, balance } = await setup();
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 };
    const events = Array.from({ length: 9 }, (_v, i) => ({ customer: customer.externalId, idempotencyKey: `refused-${i}-${randomUUID()}`, usage }));
    const poisoned = events[5]!.idempotencyKey;
    // Stands in for a value validation did not foresee: the database refuses that one event's row.
    const sql = (text: string) => server.services.db.withConnection((connection) => connection.exec(text));
    await sql(`CREATE FUNCTION refuse_data_test() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
      IF NEW.idempotency_key = '${poisoned}' THEN RAISE EXCEPTION 'value out of range (test)' USING ERRCODE = '22003'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER refuse_data_test BEFORE INSERT ON usage_events FOR EACH ROW EXECUTE FUNCTION refuse_data_test()`);
    let results: UsageResult[];
    let alone: Response;
    try {
      results = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, events);
      alone = await fetch(`${server.url}/v1/usage`, {
        method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` }, body: JSON.stringify(events[5]),
      });
    } finally {
      await sql('DROP TRIGGER refuse_data_test ON usage_events; DROP FUNCTION refuse_data_test()');
    }
    expect(results.map((result) => (result.ok ? result.event.status : result.error.code))).toEqual(events.map((_e, i) => (i === 5 ? 'VALIDATION' : 'CHARGED')));
    expect(results[5]).toMatchObject({ ok: false, error: { message: expect.stringContaining('value out of range (test)') } });
    expect(alone.status).toBe(400);
    expect(((await alone.json()) as { error: { code: string } }).error.code).toBe('VALIDATION');
    const charged = results.filter((result) => result.ok).reduce((sum, result) => sum + parseDecimalNanos('x', result.event.charge), 0n);
    expect(charged).toBeGreaterThan(0n);
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - charged);
    expect((await server.services.prisma.usageEvent.findMany({ where: { merchantId: merchant.id }, select: { idempotencyKey: true } })).map((row) => row.idempotencyKey).sort())
      .toEqual(events.filter((_e, i) => i !== 5).map((event) => event.idempotencyKey).sort());
    expect((await server.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);
    // Once the database takes it, the refused event is recorded like any other (nothing was kept of it).
    const retried = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [events[5]!]);
    expect(retried[0]).toMatchObject({ ok: true, replayed: false, event: { status: 'CHARGED' } });
  });

  it("keeps the caller's metadata but not keys Tollgate writes itself, so a caller cannot forge a shortfall or an error", async () => {
    const { merchant, customer } = await setup();
    const forged = { team: 'search', shortfallAttos: 'lots', error: { code: 'INSUFFICIENT_FUNDS', message: 'forged' }, requestHash: 'x', pricing: [], incomplete: true };
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 };
    const [first] = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [{ customer: customer.id, idempotencyKey: 'meta', usage, metadata: forged }]);
    expect(first).toMatchObject({ ok: true, replayed: false, event: { status: 'CHARGED', shortfall: '0.00' } });
    expect(first!.ok && first!.error).toBeFalsy();
    const stored = await server.services.prisma.usageEvent.findFirstOrThrow({ where: { merchantId: merchant.id, idempotencyKey: 'meta' } });
    expect(stored.metadata).toMatchObject({ team: 'search' });
    expect(stored.metadata).not.toHaveProperty('shortfallAttos');
    expect(stored.metadata).not.toHaveProperty('error');
    expect(stored.metadata).not.toHaveProperty('incomplete');
    expect((stored.metadata as { requestHash: string }).requestHash).toMatch(/^[0-9a-f]{64}$/);
    // The replay answers from what Tollgate wrote: no forged error comes back.
    const [again] = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [{ customer: customer.id, idempotencyKey: 'meta', usage, metadata: forged }]);
    expect(again).toMatchObject({ ok: true, replayed: true, event: { status: 'CHARGED', shortfall: '0.00' } });
    expect(again!.ok && again!.error).toBeFalsy();
  });

  it('stores each event of a batch with its own metadata, however nested or escaped, and its charge lines', async () => {
    const { merchant, customer } = await setup();
    await server.services.meters.create(merchant.id, { key: 'requests', name: 'Requests', unit: 'request', source: 'REQUESTS' });
    const markup = await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '20' }, effectiveFrom: new Date('2026-01-01') });
    const fee = await server.services.priceRules.put(merchant.id, { name: 'fee', type: 'FLAT', meterKey: 'requests', config: { unitPrice: '0.001' }, effectiveFrom: new Date('2026-01-01') });
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 };
    const metadata = [
      { quote: 'say "hi"', backslash: 'C:\\temp\\', unicode: 'naïve ✓ 🚀', nested: { list: [1, [2, { three: null }]], empty: {} } },
      { tab: 'a\tb\nc', number: -1.5e-7, flag: false },
      {},
    ];
    const results = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, metadata.map((given, i) => ({ customer: customer.id, idempotencyKey: `escaped-${i}`, usage, metadata: given })));
    results.forEach((result, i) => expect(result, `event ${i}`).toMatchObject({ ok: true, event: { status: 'CHARGED' } }));
    for (const [i, given] of metadata.entries()) {
      const stored = await server.services.prisma.usageEvent.findFirstOrThrow({ where: { merchantId: merchant.id, idempotencyKey: `escaped-${i}` } });
      const { requestHash, pricing, ...callers } = stored.metadata as { requestHash: string; pricing: StoredChargeLine[] };
      expect(callers).toEqual(given);
      expect(requestHash).toMatch(/^[0-9a-f]{64}$/);
      // A line a rule: [ruleId, chargeAttos], and a meter's quantity after; together the charge.
      const [markupLine, feeLine] = pricing;
      expect(markupLine).toEqual([markup.id, expect.stringMatching(/^[1-9]\d*$/)]);
      expect(feeLine).toEqual([fee.id, parseDecimalAttos('fee', '0.001').toString(), '1']);
      const charged = results[i]!.ok ? results[i]!.event.charge : '';
      expect(BigInt(markupLine![1]) + BigInt(feeLine![1])).toBe(parseDecimalAttos('charge', charged));
    }
    // The same lines through GraphQL, as decimals.
    const listed = await server.graphql<any>('query ($id: ID!) { usageEvents(customerId: $id, first: 5) { edges { node { idempotencyKey charge charges { priceRuleId amount quantity } } } } }', { id: customer.id }, merchant.secret);
    expect(listed.errors).toBeUndefined();
    for (const { node } of listed.data.usageEvents.edges) {
      const [markupCharge, feeCharge] = node.charges;
      expect(markupCharge).toEqual({ priceRuleId: markup.id, amount: expect.stringMatching(/^0\.\d+$/), quantity: null });
      expect(feeCharge).toEqual({ priceRuleId: fee.id, amount: '0.001', quantity: '1' });
      expect(parseDecimalAttos('a', markupCharge.amount) + parseDecimalAttos('a', feeCharge.amount)).toBe(parseDecimalAttos('c', node.charge));
    }
    expect(listed.data.usageEvents.edges).toHaveLength(3);
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

  it('takes a batch of exactly 1,000 events, each answered and charged', async () => {
    const { merchant, customer, balance } = await setup();
    const events = Array.from({ length: 1000 }, (_v, i) => ({ customer: customer.externalId, idempotencyKey: `full-${i}`, usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 100 + i } }));
    const response = await fetch(`${server.url}/v1/usage/batch`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` }, body: JSON.stringify({ events }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { results: any[]; summary: any };
    expect(body.summary).toEqual({ received: 1000, ok: 1000, failed: 0, replayed: 0 });
    expect(body.results.map((r) => r.event.idempotencyKey)).toEqual(events.map((e) => e.idempotencyKey));
    const charged = body.results.reduce((sum, r) => sum + parseDecimalAttos('c', r.event.charge), 0n);
    expect(charged).toBeGreaterThan(0n);
    // Sub-nano fractions of the charges carry in the wallet (see the ledger's carry): at most one nano off.
    const moved = parseDecimalNanos('x', '10.00') - (await balance());
    expect(moved * ATTOS_PER_NANO - charged).toBeGreaterThanOrEqual(0n);
    expect(moved * ATTOS_PER_NANO - charged).toBeLessThan(ATTOS_PER_NANO);
  });

  it("refuses a customer session token on both usage routes (403 FORBIDDEN): usage is reported with a secret key, and nothing is recorded", async () => {
    const { merchant, customer } = await setup();
    const { token } = await server.services.customerSessions.create(merchant.id, customer.id);
    const event = { customer: customer.externalId, idempotencyKey: 'by-customer', usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 10 } };
    for (const [path, body] of [['/v1/usage', event], ['/v1/usage/batch', { events: [event] }]] as const) {
      const refused = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify(body) });
      expect(refused.status, path).toBe(403);
      expect(await refused.json(), path).toMatchObject({ error: { code: 'FORBIDDEN' } });
    }
    expect(await server.services.prisma.usageEvent.count({ where: { merchantId: merchant.id } })).toBe(0);
  });

  it('reads a body only once its key checks out, and holds batches to TOLLGATE_MAX_BATCH_BODY_SIZE (413 past it)', async () => {
    const small = await startTestServer({ TOLLGATE_MAX_BODY_SIZE: '64kb', TOLLGATE_MAX_BATCH_BODY_SIZE: '256kb' });
    try {
      const merchant = await small.createMerchant();
      const post = (path: string, body: string, token: string | null) =>
        fetch(`${small.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body });
      const sized = (bytes: number) => JSON.stringify({ events: [{ customer: 'x', idempotencyKey: 'k', metadata: { pad: 'a'.repeat(bytes) } }] });
      // Without a key, even a body too large to read is refused for its missing key, unread.
      for (const path of ['/v1/usage', '/v1/usage/batch']) {
        const anonymous = await post(path, sized(1024 * 1024), null);
        expect(anonymous.status, path).toBe(401);
        const badKey = await post(path, sized(1024 * 1024), 'sk_test_notarealkey000000000000000000');
        expect(badKey.status, path).toBe(401);
      }
      expect((await post('/v1/usage/batch', sized(300 * 1024), merchant.secret)).status).toBe(413);
      expect((await post('/v1/usage', sized(100 * 1024), merchant.secret)).status).toBe(413);
      // Within the batch limit (over the general one), the batch is read and answered per event.
      const read = await post('/v1/usage/batch', sized(100 * 1024), merchant.secret);
      expect(read.status).toBe(200);
      expect(((await read.json()) as { summary: { received: number } }).summary.received).toBe(1);
    } finally {
      await small.close();
    }
  });
});

describe('meter aggregations', () => {
  const from = new Date('2026-01-01');
  const june = new Date('2026-06-01T00:00:00Z');
  /** The period total of the meter's rule (one rule a meter here, in the default book). */
  const totalOf = async (customerId: string, meterKey: string, periodStart = june) =>
    (await server.services.prisma.usagePeriodTotal.findFirst({ where: { customerId, currency: 'USD', meterKey, periodStart, priceBook: '' } }))?.quantity.toFixed();
  const charges = (results: UsageResult[]) =>
    results.map((result) => (result.ok ? result.event.charge : result.error.code));

  it('COUNT counts events, whatever their quantity: N events price like N units', async () => {
    const { merchant, customer, balance } = await setup();
    await server.services.meters.create(merchant.id, { key: 'generations', name: 'Image requests', unit: 'request', source: 'IMAGES', aggregation: 'COUNT' });
    await server.services.priceRules.put(merchant.id, {
      name: 'generations', type: 'GRADUATED', meterKey: 'generations', effectiveFrom: from,
      config: { tiers: [{ upTo: '2', unitPrice: '0.10' }, { upTo: null, unitPrice: '0.05' }] },
    });
    const images = (count: number): UsageRecordInput => ({ customer: customer.id, idempotencyKey: randomUUID(), usage: { provider: 'custom', model: 'img', images: count } });
    // Three events of one meter in one batch, then more alone; an event without images does not count.
    expect(charges(await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [images(4), images(1), images(2)]))).toEqual(['0.10', '0.10', '0.05']);
    expect(charges(await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [images(0), images(3)]))).toEqual(['0.00', '0.05']);
    expect(await totalOf(customer.id, 'generations')).toBe('4');
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - parseDecimalNanos('x', '0.30'));
  });

  it('MAX charges only for raising the period\'s maximum; the period is charged price(max)', async () => {
    const { merchant, customer, balance } = await setup('100.00');
    await server.services.meters.create(merchant.id, { key: 'seats', name: 'Seats', unit: 'seat', source: 'QUANTITY', aggregation: 'MAX' });
    await server.services.priceRules.put(merchant.id, { name: 'seats', type: 'FLAT', meterKey: 'seats', config: { unitPrice: '2' }, effectiveFrom: from });
    const seats = (count: number | string, timestamp?: Date): UsageRecordInput => ({ customer: customer.id, idempotencyKey: randomUUID(), quantities: { seats: count }, timestamp: timestamp ?? null });
    // Several events of one customer, meter and period in one batch: each priced on the max before it.
    expect(charges(await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [seats(3), seats(2), seats(5)]))).toEqual(['6.00', '0.00', '4.00']);
    // Not raising the maximum charges nothing, and the meter's rule still applies: its provider cost does not pass through.
    const below = (await server.services.usage.recordOne(merchant.id, SYSTEM_ACTOR, { ...seats(4), usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000 } })) as Extract<UsageResult, { ok: true }>;
    expect(below.event).toMatchObject({ status: 'NOT_BILLABLE', charge: '0.00', ledgerTransactionId: null });
    expect(parseDecimalAttos('cost', below.event.cost)).toBeGreaterThan(0n);
    expect(charges(await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [seats('7.5'), seats(6), seats('7.5'), seats(7)]))).toEqual(['5.00', '0.00', '0.00', '0.00']);
    expect(await totalOf(customer.id, 'seats')).toBe('7.5');
    // Last month is its own period with its own maximum.
    expect(charges(await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [seats(2, new Date('2026-05-10T00:00:00Z'))]))).toEqual(['4.00']);
    expect(await totalOf(customer.id, 'seats', new Date('2026-05-01T00:00:00Z'))).toBe('2');
    expect(await balance()).toBe(parseDecimalNanos('x', '100.00') - parseDecimalNanos('x', '15.00') - parseDecimalNanos('x', '4.00'));
  });

  it('mixed SUM, COUNT and MAX meters in the same batches add up to each meter\'s period price', async () => {
    const { merchant } = await setup('0');
    const rules: Record<'tokens' | 'calls' | 'peak', PricingRule> = {
      tokens: { kind: 'GRADUATED', tiers: [{ upTo: 2000, unitPrice: '0.001' }, { upTo: null, unitPrice: '0.0004', flatFee: '0.5' }] },
      calls: { kind: 'VOLUME', tiers: [{ upTo: 3, unitPrice: '0.2' }, { upTo: null, unitPrice: '0.1' }] },
      peak: { kind: 'PACKAGE', packageSize: 10, packagePrice: '1.5' },
    };
    await server.services.meters.create(merchant.id, { key: 'tokens', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
    await server.services.meters.create(merchant.id, { key: 'calls', name: 'Calls', unit: 'call', source: 'REQUESTS', aggregation: 'COUNT' });
    await server.services.meters.create(merchant.id, { key: 'peak', name: 'Peak concurrency', unit: 'stream', source: 'QUANTITY', aggregation: 'MAX' });
    for (const [meterKey, rule] of Object.entries(rules)) {
      const { kind, ...config } = rule;
      await server.services.priceRules.put(merchant.id, { name: meterKey, type: kind, meterKey, config: config as never, effectiveFrom: from });
    }
    const eventArb = fc.record({ who: fc.nat({ max: 1 }), tokens: fc.nat({ max: 1500 }), peak: fc.option(fc.nat({ max: 40 }), { nil: undefined }) });
    const runArb = fc.array(fc.array(eventArb, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 4 });
    await fc.assert(
      fc.asyncProperty(runArb, async (batches) => {
        const customers = await Promise.all([0, 1].map(async () => {
          const customer = await server.services.customers.create(merchant.id, { externalId: randomUUID() });
          await server.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '100'), kind: 'PAID', idempotencyKey: `seed-${customer.id}` });
          return customer;
        }));
        const charged = [0n, 0n];
        for (const events of batches) {
          const inputs = events.map(({ who, tokens, peak }): UsageRecordInput => ({
            customer: customers[who]!.id, idempotencyKey: randomUUID(), usage: { provider: 'custom', model: 'm', outputTokens: tokens }, quantities: peak === undefined ? null : { peak },
          }));
          const results = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, inputs);
          results.forEach((result, index) => {
            if (!result.ok) throw result.error;
            charged[events[index]!.who]! += parseDecimalAttos('charge', result.event.charge);
          });
        }
        for (const who of [0, 1]) {
          const mine = batches.flat().filter((event) => event.who === who);
          const totals = {
            tokens: mine.reduce((total, event) => total + event.tokens, 0),
            calls: mine.length,
            peak: mine.reduce((best, event) => Math.max(best, event.peak ?? 0), 0),
          };
          const expected = (['tokens', 'calls', 'peak'] as const).reduce((total, meter) => total + periodChargeAttos(rules[meter], totals[meter]), 0n);
          expect(charged[who]).toBe(expected);
          for (const meter of ['tokens', 'calls', 'peak'] as const) expect(await totalOf(customers[who]!.id, meter)).toBe(totals[meter] ? String(totals[meter]) : undefined);
        }
      }),
      { numRuns: 12 },
    );
    expect((await server.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);
  });
});

describe('billingId: one unit of provider work, however many responses report it', () => {
  const prediction = (status: string, extra: Record<string, unknown> = {}) => ({
    url: 'https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu',
    status: 200,
    headers: {},
    body: JSON.stringify({
      id: 'gm3qorzdhgbfurvjtvhg6dckhu', model: 'black-forest-labs/flux-schnell', version: 'dp-1', input: { prompt: 'x' }, error: null, status,
      output: status === 'succeeded' ? ['https://replicate.delivery/a.webp'] : null, metrics: status === 'succeeded' ? { predict_time: 1.82 } : {}, ...extra,
    }),
  });

  async function imageSetup() {
    const context = await setup();
    await server.services.meters.create(context.merchant.id, { key: 'images', name: 'Images', unit: 'image', source: 'IMAGES' });
    await server.services.priceRules.put(context.merchant.id, { name: 'images', type: 'FLAT', meterKey: 'images', config: { unitPrice: '0.05' }, effectiveFrom: new Date('2026-01-01') });
    return context;
  }

  it('polls of one succeeded prediction under different caller keys charge once; the first is the answer', async () => {
    const { record, balance } = await imageSetup();
    const processing = (await record({ idempotencyKey: 'poll-1', response: prediction('processing') })).data.recordUsage;
    expect(processing.event).toMatchObject({ status: 'NOT_BILLABLE', charge: '0.00' });
    const first = (await record({ idempotencyKey: 'poll-2', response: prediction('succeeded') })).data.recordUsage;
    expect(first).toMatchObject({ replayed: false, event: { status: 'CHARGED', charge: '0.05' } });
    // Later polls differ in their key and in body details: still the same prediction, not a conflict.
    const again = await record({ idempotencyKey: 'poll-3', response: prediction('succeeded', { logs: 'done', completed_at: '2026-06-15T12:00:03Z' }) });
    expect(again.errors).toBeUndefined();
    expect(again.data.recordUsage).toMatchObject({ replayed: true, event: { id: first.event.id, charge: '0.05' } });
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - parseDecimalNanos('x', '0.05'));

    const stored = await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: first.event.id } });
    expect(stored.idempotencyKey).toBe('replicate:prediction:gm3qorzdhgbfurvjtvhg6dckhu');
    expect(stored.metadata).toMatchObject({ callerIdempotencyKey: 'poll-2', billingId: stored.idempotencyKey });
    // The caller's own key is still its own: the processing poll replays as itself.
    const replayedPoll = (await record({ idempotencyKey: 'poll-1', response: prediction('processing') })).data.recordUsage;
    expect(replayedPoll).toMatchObject({ replayed: true, event: { id: processing.event.id } });
  });

  it('fetching one fal queue result three times charges it once', async () => {
    const { record, balance } = await imageSetup();
    const falResult = {
      url: 'https://queue.fal.run/fal-ai/flux/requests/764cabcf-b745-4b3e-ae38-1200304cf45b',
      status: 200,
      headers: {},
      body: JSON.stringify({ images: [{ url: 'https://v3.fal.media/a.jpg', width: 1024, height: 768 }], timings: { inference: 1.2 }, seed: 1 }),
    };
    const answers = [];
    for (const key of ['fetch-1', 'fetch-2', 'fetch-3']) answers.push((await record({ idempotencyKey: key, response: falResult })).data.recordUsage);
    expect(answers.map((answer) => [answer.replayed, answer.event.status, answer.event.charge])).toEqual([[false, 'CHARGED', '0.05'], [true, 'CHARGED', '0.05'], [true, 'CHARGED', '0.05']]);
    expect(new Set(answers.map((answer) => answer.event.id)).size).toBe(1);
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - parseDecimalNanos('x', '0.05'));
  });

  it('in one batch the repeats answer as replays of the first; another customer is refused', async () => {
    const { merchant, customer, balance } = await imageSetup();
    const results = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [
      { customer: customer.id, idempotencyKey: 'a', response: prediction('processing') },
      { customer: customer.id, idempotencyKey: 'b', response: prediction('succeeded') },
      { customer: customer.externalId, idempotencyKey: 'c', response: prediction('succeeded', { logs: 'more' }) },
    ]);
    expect(results.map((result) => (result.ok ? [result.event.status, result.replayed] : result.error.code))).toEqual([['NOT_BILLABLE', false], ['CHARGED', false], ['CHARGED', true]]);
    expect(results[2]!.ok && results[1]!.ok && results[2]!.event.id === results[1]!.event.id).toBe(true);
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - parseDecimalNanos('x', '0.05'));

    const other = await server.services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
    const [elsewhere] = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [{ customer: other.id, idempotencyKey: 'd', response: prediction('succeeded') }]);
    expect(elsewhere).toMatchObject({ ok: false, error: { code: 'CONFLICT' } });
    // A caller key that happens to spell a billing id is an ordinary key, not a replay of the prediction.
    const [spoof] = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [{ customer: customer.id, idempotencyKey: 'replicate:prediction:gm3qorzdhgbfurvjtvhg6dckhu', usage: { provider: 'custom', model: 'x' } }]);
    expect(spoof).toMatchObject({ ok: false, error: { code: 'CONFLICT' } });
  });

  it('in one batch, a key two customers use is charged for the first customer only; the other is refused', async () => {
    const { merchant, customer, balance } = await imageSetup();
    const other = await server.services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
    await server.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, {
      customerId: other.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '10.00'), kind: 'PAID', idempotencyKey: `seed-${other.id}`,
    });
    const usage = { provider: 'custom', model: 'x', requests: 1 };
    const results = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [
      { customer: customer.id, idempotencyKey: 'shared', usage },
      { customer: other.id, idempotencyKey: 'shared', usage },
      { customer: customer.id, idempotencyKey: 'poll-a', response: prediction('succeeded') },
      { customer: other.id, idempotencyKey: 'poll-b', response: prediction('succeeded') },
    ]);
    const charged = results[2]!.ok ? results[2]!.event.id : null;
    expect(results.map((result) => (result.ok ? result.event.status : result.error.message))).toEqual([
      'NOT_BILLABLE', 'The same idempotency key appears twice in this batch for different usage records', 'CHARGED', `${'replicate:prediction:gm3qorzdhgbfurvjtvhg6dckhu'} was already recorded for another customer`,
    ]);
    expect(results[3]).toMatchObject({ ok: false, error: { code: 'CONFLICT', details: { usageEventId: charged } } });
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - parseDecimalNanos('x', '0.05'));
    expect((await server.services.ledgerQueries.wallet(merchant.id, other.id, 'USD')).balance).toBe(parseDecimalNanos('x', '10.00'));
    const events = await server.services.prisma.usageEvent.findMany({ where: { merchantId: merchant.id, customerId: other.id } });
    expect(events).toEqual([]);
  });
});

describe('what providers report, and what the caller is told', () => {
  const attos = (text: string) => parseDecimalAttos('x', text);
  /** An OpenRouter answer whose usage.cost is written as given (the JSON number's own digits). */
  const openRouter = (usage: string, model = 'anthropic/claude-sonnet-4.6') => ({
    url: 'https://openrouter.ai/api/v1/chat/completions', status: 200, headers: {},
    body: `{"id":"gen-1","object":"chat.completion","model":"${model}","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":${usage}}`,
  });
  const post = async (secret: string, path: string, body: unknown, prefer?: string) => {
    const response = await fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}`, ...(prefer ? { prefer } : {}) },
      body: JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as any };
  };

  it('costs an OpenRouter call at the cost OpenRouter reports, exactly, for a model no price row lists, and marks it up', async () => {
    const { merchant, record } = await setup();
    await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '25' }, effectiveFrom: new Date('2026-01-01') });
    // 17 significant digits, more than a double holds: only the reported text is exact.
    const event = (await record({ response: openRouter('{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100,"cost":0.12345678901234567,"is_byok":false}') })).data.recordUsage.event;
    expect(event).toMatchObject({ status: 'CHARGED', provider: 'openrouter', model: 'anthropic/claude-sonnet-4.6', cost: '0.12345678901234567', costProblem: null });
    expect(attos(event.charge)).toBe(154_320_986_265_432_088n);
    // Preferred over a price row: it is what OpenRouter billed. With BYOK, the upstream cost comes on top of OpenRouter's fee.
    await server.services.providerPrices.add(merchant.id, { provider: 'openrouter', model: 'openai/gpt-5.4-mini', perMillionTokens: { input: '100', output: '100' }, effectiveFrom: new Date('2026-01-01') });
    const reported = (await record({ response: openRouter('{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100,"cost":0.0042}', 'openai/gpt-5.4-mini') })).data.recordUsage.event;
    expect(reported.cost).toBe('0.0042');
    const byok = (await record({ response: openRouter('{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11,"cost":0.0005,"is_byok":true,"cost_details":{"upstream_inference_cost":0.01}}') })).data.recordUsage.event;
    expect(byok.cost).toBe('0.0105');
  });

  it('charges a cut stream by estimate even when the provider had reported reasoning, and counts tool-call text', async () => {
    const { record } = await setup();
    // Gemini cut after a chunk whose cumulative counts already include 300 thinking tokens.
    const chunk = { candidates: [{ content: { role: 'model', parts: [{ text: 'Hello' }] } }], usageMetadata: { promptTokenCount: 100, candidatesTokenCount: 2, thoughtsTokenCount: 300, totalTokenCount: 402 }, modelVersion: 'gemini-3.8-flash' };
    const gemini = { url: 'https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse', status: 200, headers: {}, body: `data: ${JSON.stringify(chunk)}\n\n` };
    const thinking = (await record({ response: gemini })).data.recordUsage.event;
    // 100 input at 0.75 and 302 output at 3.75 per million.
    expect(thinking).toMatchObject({ status: 'CHARGED', estimated: true, cost: '0.0012075', costProblem: null });
    // OpenAI cut while streaming a tool call's arguments: no visible text, 25 characters of arguments.
    const delta = (toolCall: Record<string, unknown>) => `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', model: 'gpt-5.4-mini', choices: [{ index: 0, delta: { tool_calls: [{ index: 0, ...toolCall }] } }] })}\n\n`;
    const body = delta({ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '' } }) + delta({ function: { arguments: '{"city": "Paris, France"}' } });
    const tool = (await record({ response: { url: 'https://api.openai.com/v1/chat/completions', status: 200, headers: {}, body } })).data.recordUsage.event;
    // ceil(25 / 4) = 7 output tokens at 4.50 per million.
    expect(tool).toMatchObject({ status: 'CHARGED', estimated: true, cost: '0.0000315' });
  });

  it('tells the caller why an event was not billed, in the event and in a minimal batch answer', async () => {
    const { merchant, customer, record } = await setup();
    const typo = (await record({ usage: { provider: 'opneai', model: 'gpt-5.4-mini', inputTokens: 1000 } })).data.recordUsage.event;
    expect(typo).toMatchObject({ status: 'NOT_BILLABLE', charge: '0.00', costProblem: 'no provider price for opneai/gpt-5.4-mini' });
    const listed = await server.graphql<any>('query { usageEvents(first: 5) { edges { node { idempotencyKey costProblem } } } }', {}, merchant.secret);
    expect(listed.data.usageEvents.edges.map((edge: any) => edge.node.costProblem)).toEqual(['no provider price for opneai/gpt-5.4-mini']);
    const single = await post(merchant.secret, '/v1/usage', { customer: customer.id, idempotencyKey: 'typo-2', usage: { provider: 'opneai', model: 'x', inputTokens: 1 } });
    expect(single).toMatchObject({ status: 200, body: { event: { status: 'NOT_BILLABLE', costProblem: 'no provider price for opneai/x' } } });
    const batch = await post(merchant.secret, '/v1/usage/batch', {
      events: [
        { customer: customer.id, idempotencyKey: 'ok-1', usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000 } },
        { customer: customer.id, idempotencyKey: 'typo-3', usage: { provider: 'opneai', model: 'gpt-5.4-mini', inputTokens: 1000 } },
      ],
    }, 'return=minimal');
    expect(batch.body.results.map((r: any) => [r.index, r.event.costProblem])).toEqual([[1, 'no provider price for opneai/gpt-5.4-mini']]);
    // Tokens without a provider cannot be costed either, and say so; a bare request count has nothing to cost.
    const unnamed = (await record({ usage: { model: 'gpt-5.4-mini', inputTokens: 1000 } })).data.recordUsage.event;
    expect(unnamed).toMatchObject({ status: 'NOT_BILLABLE', costProblem: 'no provider given, so no provider price can cost its tokens, images, characters or audio' });
    const bare = (await record({ usage: { requests: 1 } })).data.recordUsage.event;
    expect(bare).toMatchObject({ status: 'NOT_BILLABLE', costProblem: null });
  });

  it('lists in a minimal batch answer an event of unknown cost that a MARKUP rule with a fee charged only that fee', async () => {
    const { merchant, customer } = await setup();
    await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '25', feePerRequest: '0.001' }, effectiveFrom: new Date('2026-01-01') });
    const batch = await post(merchant.secret, '/v1/usage/batch', {
      events: [
        { customer: customer.id, idempotencyKey: 'fee-ok', usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000 } },
        { customer: customer.id, idempotencyKey: 'fee-typo', usage: { provider: 'opneai', model: 'gpt-5.4-mini', inputTokens: 1000 } },
      ],
    }, 'return=minimal');
    // Charged (the fee), but its cost went unpriced: the caller has to hear of it.
    expect(batch.body.results.map((r: any) => [r.index, r.event.status, r.event.charge, r.event.costProblem])).toEqual([[1, 'CHARGED', '0.001', 'no provider price for opneai/gpt-5.4-mini']]);
    // A replay of the batch answers the same.
    const again = await post(merchant.secret, '/v1/usage/batch', {
      events: [{ customer: customer.id, idempotencyKey: 'fee-typo', usage: { provider: 'opneai', model: 'gpt-5.4-mini', inputTokens: 1000 } }],
    }, 'return=minimal');
    expect(again.body.results.map((r: any) => [r.index, r.replayed, r.event.costProblem])).toEqual([[0, true, 'no provider price for opneai/gpt-5.4-mini']]);
  });

  it('prices clouds that resell a maker\'s models at the maker\'s list price when they have no row of their own', async () => {
    const { merchant, record } = await setup();
    const cost = async (provider: string, model: string, timestamp = now) => (await record({ usage: { provider, model, inputTokens: 1000, outputTokens: 100 }, timestamp: timestamp.toISOString() })).data.recordUsage.event;
    expect(await cost('vertex', 'gemini-3.8-flash')).toMatchObject({ cost: '0.001125', costProblem: null });
    expect(await cost('vertex', 'claude-sonnet-4-6@20250929')).toMatchObject({ cost: '0.0045' });
    expect(await cost('bedrock', 'us.anthropic.claude-sonnet-4-6-v1:0')).toMatchObject({ cost: '0.0045' });
    expect(await cost('bedrock', 'anthropic.claude-haiku-4-5-20251001-v1:0')).toMatchObject({ cost: '0.0015' });
    expect(await cost('azure-openai', 'gpt-5.4-mini-2026-03-17')).toMatchObject({ cost: '0.0012' });
    expect(await cost('bedrock', 'amazon.nova-pro-v1:0')).toMatchObject({ cost: '0.00', costProblem: 'no provider price for bedrock/amazon.nova-pro-v1:0' });
    // A row of the cloud's own wins (from after the usage above: a row never reprices usage already priced).
    const after = new Date(now.getTime() + 1_000);
    await server.services.providerPrices.add(merchant.id, { provider: 'vertex', model: 'gemini-3.8-flash', perMillionTokens: { input: '1', output: '10' }, effectiveFrom: after });
    expect(await cost('vertex', 'gemini-3.8-flash', after)).toMatchObject({ cost: '0.002' });
  });

  it('knows providers by their aliases: usage, price rows and rules under "claude" or "gemini" meet those of anthropic and google', async () => {
    const { merchant, record } = await setup();
    const usage = (provider: string, model: string) => ({ usage: { provider, model, inputTokens: 1000, outputTokens: 100 } });
    // A record under an alias is stored under the provider's id and costed at its list price.
    expect((await record(usage('Claude', 'claude-sonnet-4-6'))).data.recordUsage.event).toMatchObject({ provider: 'anthropic', cost: '0.0045', costProblem: null });
    expect((await record(usage('gemini', 'gemini-3.8-flash'))).data.recordUsage.event).toMatchObject({ provider: 'google', cost: '0.001125' });
    // A row and a rule written under an alias price the provider's calls, raw responses included
    // (from after the usage above: neither reprices usage already priced).
    const after = new Date(now.getTime() + 1_000);
    const row = await server.services.providerPrices.add(merchant.id, { provider: 'claude', model: 'claude-sonnet-4-6', perMillionTokens: { input: '2', output: '20' }, effectiveFrom: after });
    expect(row.provider).toBe('anthropic');
    const rule = await server.services.priceRules.put(merchant.id, { name: 'claude markup', type: 'MARKUP', provider: 'claude', config: { percent: '50' }, effectiveFrom: after });
    expect(rule.provider).toBe('anthropic');
    expect((await record({ ...usage('anthropic', 'claude-sonnet-4-6'), timestamp: after.toISOString() })).data.recordUsage.event).toMatchObject({ cost: '0.004', charge: '0.006' });
    expect((await record({ response: responseOf('anthropic_messages.json'), timestamp: after.toISOString() })).data.recordUsage.event).toMatchObject({ provider: 'anthropic', margin: expect.not.stringMatching(/^0(\.0+)?$/) });
    // The tie check knows the alias too.
    const tie = await server.graphql<any>('mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id } }', { input: { name: 'another', type: 'MARKUP', provider: 'ANTHROPIC', config: { percent: '5' } } }, merchant.secret);
    expect(tie.errors?.[0]?.extensions?.code).toBe('CONFLICT');
    // Rows and rules stored under an alias by earlier versions still apply.
    const other = await setup();
    await server.services.prisma.providerPrice.create({ data: { merchantId: other.merchant.id, provider: 'gemini', model: 'gemini-3.8-flash', prices: { perMillionTokens: { input: '1', output: '10' } }, effectiveFrom: new Date('2026-01-01'), source: 'manual' } });
    await server.services.prisma.priceRule.create({ data: { merchantId: other.merchant.id, name: 'old', type: 'MARKUP', provider: 'gemini', config: { percent: '100' }, effectiveFrom: new Date('2026-01-01') } });
    expect((await other.record(usage('google', 'gemini-3.8-flash'))).data.recordUsage.event).toMatchObject({ cost: '0.002', charge: '0.004' });
  });

  it('refuses a usage record that is not an object', async () => {
    const { merchant, customer } = await setup();
    for (const usage of ['lots', 42, ['inputTokens']]) {
      const answer = await post(merchant.secret, '/v1/usage', { customer: customer.id, idempotencyKey: `bad-${String(usage)}`, usage });
      expect(answer, String(usage)).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION', field: 'usage', message: 'usage: must be an object' } } });
    }
    expect(await server.services.prisma.usageEvent.count({ where: { merchantId: merchant.id } })).toBe(0);
  });

  it('two rules tied in old data fail only the events they would price; the rest of the batch is recorded', async () => {
    const { merchant, customer, balance } = await setup();
    await server.services.meters.create(merchant.id, { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
    // Written as older versions did, before a put refused the tie.
    for (const name of ['claude a', 'claude b']) {
      await server.services.prisma.priceRule.create({ data: { merchantId: merchant.id, name, type: 'MARKUP', provider: 'anthropic', config: { percent: '10' }, effectiveFrom: new Date('2026-01-01') } });
    }
    // Output tokens at 0.00001 each, whoever the provider: both events' units would count in its period total.
    await server.services.priceRules.put(merchant.id, { name: 'out', type: 'FLAT', meterKey: 'out', config: { unitPrice: '0.00001' }, effectiveFrom: new Date('2026-01-01') });
    const events: UsageRecordInput[] = [
      { customer: customer.id, idempotencyKey: 'tie-1', usage: { provider: 'anthropic', model: 'claude-sonnet-4-6', inputTokens: 1000, outputTokens: 100 } },
      { customer: customer.id, idempotencyKey: 'tie-2', usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 } },
    ];
    const [tied, fine] = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, events);
    expect(tied).toMatchObject({ ok: false, error: { code: 'CONFLICT', details: { field: 'rules', rules: ['claude a', 'claude b'] } } });
    expect(fine).toMatchObject({ ok: true, event: { status: 'CHARGED', cost: '0.0012', charge: '0.001' } });
    // The failed event was not recorded, nor counted in the period total.
    expect((await server.services.prisma.usageEvent.findMany({ where: { merchantId: merchant.id } })).map((e) => e.idempotencyKey)).toEqual(['tie-2']);
    const total = await server.services.prisma.usagePeriodTotal.findFirst({ where: { customerId: customer.id, meterKey: 'out' } });
    expect(total?.quantity.toFixed()).toBe('100');
    // Once one of the rules is gone, the same event goes through.
    await server.services.priceRules.archive(merchant.id, 'claude b', null, new Date('2026-06-01'));
    const [again] = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [events[0]!]);
    expect(again).toMatchObject({ ok: true, replayed: false, event: { status: 'CHARGED', cost: '0.0045', charge: '0.00595' } });
    expect((await server.services.prisma.usagePeriodTotal.findFirst({ where: { customerId: customer.id, meterKey: 'out' } }))?.quantity.toFixed()).toBe('200');
    expect(await balance()).toBe(parseDecimalNanos('x', '10.00') - parseDecimalNanos('x', '0.001') - parseDecimalNanos('x', '0.00595'));
  });
});

describe('input refused per event, never misread or mischarged', () => {
  const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 };
  const post = async (secret: string, path: string, body: unknown) => {
    const response = await fetch(`${server.url}${path}`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` }, body: JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as any };
  };
  const stored = async (merchantId: string) =>
    (await server.services.prisma.usageEvent.findMany({ where: { merchantId }, select: { idempotencyKey: true } })).map((row) => row.idempotencyKey).sort();

  it('a provider count sent as text other than digits, as a non-finite number or as another type is refused, not read as 0 tokens', async () => {
    const { merchant, customer } = await setup();
    // Written by hand: 1e400 and -1e400 are JSON numbers that parse to ±Infinity.
    const chat = (prompt: string) => ({
      url: 'https://api.openai.com/v1/chat/completions',
      body: `{"id":"x","object":"chat.completion","model":"gpt-5.4-mini","choices":[],"usage":{"prompt_tokens":${prompt},"completion_tokens":100,"total_tokens":1100}}`,
    });
    const bad = ['"-5000"', '"12.5"', '1e400', '"1e3"', 'true', '-1e400', '{}', '[1000]'];
    const events = [
      { customer: customer.id, idempotencyKey: 'digits', response: chat('"1000"') },
      { customer: customer.id, idempotencyKey: 'number', response: chat('1000') },
      ...bad.map((prompt, index) => ({ customer: customer.id, idempotencyKey: `bad-${index}`, response: chat(prompt) })),
    ];
    const { status, body } = await post(merchant.secret, '/v1/usage/batch', { events });
    expect(status).toBe(200);
    // Digits as text are read as the number they write.
    expect(body.results[0]).toMatchObject({ ok: true, event: { status: 'CHARGED', cost: body.results[1].event.cost } });
    bad.forEach((prompt, index) => expect(body.results[index + 2], prompt).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'response.body' } }));
    expect(await stored(merchant.id)).toEqual(['digits', 'number']);
  });

  it('a QUANTITY meter keyed "constructor" counts only what an event states, not what every object inherits', async () => {
    const { merchant, customer } = await setup();
    await server.services.meters.create(merchant.id, { key: 'constructor', name: 'Builds', unit: 'build', source: 'QUANTITY' });
    await server.services.priceRules.put(merchant.id, { name: 'per build', type: 'FLAT', meterKey: 'constructor', config: { unitPrice: '0.01' }, effectiveFrom: new Date('2026-01-01') });
    const { status, body } = await post(merchant.secret, '/v1/usage/batch', {
      events: [{ customer: customer.id, idempotencyKey: 'stated', quantities: { constructor: 2 } }, { customer: customer.id, idempotencyKey: 'none', usage }],
    });
    expect(status).toBe(200);
    expect(body.results[0]).toMatchObject({ ok: true, event: { status: 'CHARGED', charge: '0.02' } });
    // No builds stated: its cost passes through, as with no rule.
    expect(body.results[1]).toMatchObject({ ok: true, event: { status: 'CHARGED', costProblem: null } });
    expect(body.results[1].event.charge).toBe(body.results[1].event.cost);
    const total = await server.services.prisma.usagePeriodTotal.findFirst({ where: { customerId: customer.id, meterKey: 'constructor' } });
    expect(total?.quantity.toFixed()).toBe('2');
  });

  it('no key of Object.prototype is read as a stated quantity; a "__proto__" quantity is refused, as in metadata', async () => {
    for (const key of Object.getOwnPropertyNames(Object.prototype)) {
      expect(meterQuantity('QUANTITY', blankUsage(), {}, key), key).toBe(0n);
      expect(meterQuantity('QUANTITY', blankUsage(), { [key]: 3 }, key), key).toBe(3n);
    }
    const { merchant, customer } = await setup();
    const { body } = await post(merchant.secret, '/v1/usage/batch', {
      events: [{ customer: customer.id, idempotencyKey: 'proto', quantities: JSON.parse('{"__proto__": 2}') }, { customer: customer.id, idempotencyKey: 'ok', usage }],
    });
    expect(body.results[0]).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'quantities' } });
    expect(body.results[1]).toMatchObject({ ok: true, event: { status: 'CHARGED' } });
  });

  it('a timestamp before 2000 is refused on its own; the events sent with it are charged', async () => {
    const { merchant, customer } = await setup();
    await server.services.meters.create(merchant.id, { key: 'calls', name: 'Calls', unit: 'request', source: 'REQUESTS' });
    // In force since year 1, so that the old events are priced (and count in a period total) at all.
    await server.services.priceRules.put(merchant.id, { name: 'per call', type: 'FLAT', meterKey: 'calls', config: { unitPrice: '0.01' }, effectiveFrom: new Date('0001-01-01T00:00:00Z') });
    const events = [
      { customer: customer.id, idempotencyKey: 'now', usage },
      { customer: customer.id, idempotencyKey: 'year-50', usage, timestamp: '0050-03-15T00:00:00Z' },
      { customer: customer.id, idempotencyKey: 'last-of-1999', usage, timestamp: '1999-12-31T23:59:59.999Z' },
      { customer: customer.id, idempotencyKey: 'first-of-2000', usage, timestamp: '2000-01-01T00:00:00Z' },
    ];
    const { status, body } = await post(merchant.secret, '/v1/usage/batch', { events });
    expect(status).toBe(200);
    expect(body.results.map((r: any) => (r.ok ? r.event.status : `${r.error.code} ${r.error.field}`))).toEqual(['CHARGED', 'VALIDATION timestamp', 'VALIDATION timestamp', 'CHARGED']);
    expect(body.results[1].error.message).toContain('2000-01-01T00:00:00Z');
    expect(body.results[3].event.occurredAt).toBe('2000-01-01T00:00:00.000Z');
    expect(await stored(merchant.id)).toEqual(['first-of-2000', 'now']);
  });

  it('over HTTP, customer and idempotencyKey must be text and a currency sent must be text: refused alone, not a 500 or a merged key', async () => {
    const { merchant, customer } = await setup();
    const single = [
      [{ customer: { toString: 1 } }, 'customer'],
      [{ customer: undefined, customerId: ['x'] }, 'customerId'],
      [{ idempotencyKey: { toString: 1 } }, 'idempotencyKey'],
      [{ currency: ['EUR'] }, 'currency'],
    ] as const;
    for (const [change, field] of single) {
      const answer = await post(merchant.secret, '/v1/usage', { customer: customer.id, idempotencyKey: randomUUID(), usage, ...change });
      expect(answer, field).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION', field } } });
    }
    const bad = [
      [{ customer: { toString: 1 } }, 'customer'],
      [{ customer: 42 }, 'customer'],
      [{ customer: undefined, customerId: { id: customer.id } }, 'customerId'],
      [{ idempotencyKey: { toString: 1 } }, 'idempotencyKey'],
      [{ idempotencyKey: { id: 1 } }, 'idempotencyKey'],
      [{ idempotencyKey: { id: 2 } }, 'idempotencyKey'],
      [{ idempotencyKey: 7 }, 'idempotencyKey'],
      [{ currency: ['EUR'] }, 'currency'],
      [{ currency: 978 }, 'currency'],
    ] as const;
    const events = [{ customer: customer.id, idempotencyKey: 'good', usage }, ...bad.map(([change], index) => ({ customer: customer.id, idempotencyKey: `bad-${index}`, usage, ...change }))];
    const { status, body } = await post(merchant.secret, '/v1/usage/batch', { events });
    expect(status).toBe(200);
    expect(body.results[0]).toMatchObject({ ok: true, event: { status: 'CHARGED', currency: 'USD' } });
    bad.forEach(([, field], index) => expect(body.results[index + 1], `${index}`).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: `events.${index + 1}.${field}` } }));
    expect(await stored(merchant.id)).toEqual(['good']);
  });

  it('anything else that fails reading an event over HTTP is that event\'s VALIDATION error, not a 500 or another event\'s', async () => {
    const { merchant, customer } = await setup();
    // A header list holding an object: String() of it throws a TypeError while the headers are read.
    const response = { ...responseOf('openai_chat_completion.json'), headers: { 'x-trace': [{ toString: 1 }] } };
    const single = await post(merchant.secret, '/v1/usage', { customer: customer.id, idempotencyKey: 'single', response });
    expect(single).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION', field: 'event' } } });
    const { status, body } = await post(merchant.secret, '/v1/usage/batch', {
      events: [{ customer: customer.id, idempotencyKey: 'good', usage }, { customer: customer.id, idempotencyKey: 'bad', response }],
    });
    expect(status).toBe(200);
    expect(body.results[0]).toMatchObject({ ok: true, event: { status: 'CHARGED' } });
    expect(body.results[1]).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'events.1' } });
    expect(await stored(merchant.id)).toEqual(['good']);
  });

  it('a response provider sent as null is no override, as GraphQL reads it: the URL names the provider', async () => {
    const { merchant, customer } = await setup();
    // Serializers write unset fields as null; this was refused as "Cannot read properties of null".
    const response = { url: 'https://api.openai.com/v1/chat/completions', status: 200, body: fixture('openai_chat_completion.json'), provider: null };
    const single = await post(merchant.secret, '/v1/usage', { customer: customer.id, idempotencyKey: 'null-provider', response });
    expect(single.status).toBe(200);
    expect(single.body.event).toMatchObject({ status: 'CHARGED', provider: 'openai', model: 'gpt-5.4-mini-2026-03-17', cost: expected['openai_chat_completion.json']!.expected_cost_usd });
    const { body } = await post(merchant.secret, '/v1/usage/batch', { events: [{ customer: customer.id, idempotencyKey: 'null-provider', response }] });
    expect(body.results[0]).toMatchObject({ ok: true, replayed: true });
  });

  it("a response's model names the model a fal queue result was for, which its URL does not: it replaces the one read, over HTTP and GraphQL", async () => {
    const { merchant, customer, record } = await setup();
    const result = { url: 'https://queue.fal.run/fal-ai/flux/requests/764cabcf', status: 200, body: JSON.stringify({ images: [{ url: 'https://v3.fal.media/a.jpg', width: 1024, height: 768 }], seed: 1 }) };
    const named = await post(merchant.secret, '/v1/usage', { customer: customer.id, idempotencyKey: 'fal-named', response: { ...result, model: 'fal-ai/flux/dev' } });
    expect(named.body.event).toMatchObject({ provider: 'fal', model: 'fal-ai/flux/dev' });
    const unnamed = await post(merchant.secret, '/v1/usage', { customer: customer.id, idempotencyKey: 'fal-unnamed', response: { ...result, url: result.url.replace('764cabcf', '764cabd0') } });
    expect(unnamed.body.event).toMatchObject({ provider: 'fal', model: 'fal-ai/flux' });
    // The same request's result again (fal's request id is its billing id) is charged once, as first recorded.
    const again = await post(merchant.secret, '/v1/usage', { customer: customer.id, idempotencyKey: 'fal-again', response: { ...result, model: 'fal-ai/flux/schnell' } });
    expect(again.body).toMatchObject({ replayed: true, event: { id: named.body.event.id, model: 'fal-ai/flux/dev' } });
    const viaGraphql = await record({ idempotencyKey: 'fal-graphql', response: { ...result, url: result.url.replace('764cabcf', '764cabd1'), model: 'fal-ai/flux/dev' } });
    expect(viaGraphql.data.recordUsage.event).toMatchObject({ model: 'fal-ai/flux/dev' });
    const refused = await post(merchant.secret, '/v1/usage', { customer: customer.id, idempotencyKey: 'fal-bad', response: { ...result, model: 5 } });
    expect(refused).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION', field: 'response.model' } } });
  });

  it('GraphQL refuses a response status outside 100-599, as HTTP does', async () => {
    const { merchant, record } = await setup();
    for (const status of [0, 99, 600]) {
      const result = await record({ response: { ...responseOf('openai_chat_completion.json'), status } });
      expect(result.errors?.[0]?.extensions, String(status)).toMatchObject({ code: 'VALIDATION', field: 'response.status' });
    }
    expect(await server.services.prisma.usageEvent.count({ where: { merchantId: merchant.id } })).toBe(0);
    expect((await record({ response: { ...responseOf('openai_chat_completion.json'), status: 599 } })).data.recordUsage.event.status).toBe('NOT_BILLABLE');
  });

  it('a replay of an event not fully charged answers the same chargeError as the first answer, details included', async () => {
    const { merchant, customer } = await setup('0.001');
    const body = { customer: customer.id, idempotencyKey: 'short', response: responseOf('openai_responses.json') };
    const first = await post(merchant.secret, '/v1/usage', body);
    expect(first.status).toBe(402);
    expect(first.body.chargeError).toMatchObject({ code: 'INSUFFICIENT_FUNDS', currency: 'USD', available: expect.any(String), required: expect.any(String) });
    const again = await post(merchant.secret, '/v1/usage', body);
    expect(again.status).toBe(402);
    expect(again.body.replayed).toBe(true);
    expect(again.body.chargeError).toEqual(first.body.chargeError);
    // Events stored before the details were kept answer with their code and message.
    const row = await server.services.prisma.usageEvent.findFirstOrThrow({ where: { merchantId: merchant.id, idempotencyKey: 'short' } });
    const metadata = row.metadata as { error: { code: string; message: string } };
    await server.services.prisma.usageEvent.update({ where: { id: row.id }, data: { metadata: { ...metadata, error: { code: metadata.error.code, message: metadata.error.message } } } });
    const old = await post(merchant.secret, '/v1/usage', body);
    expect(old.body.chargeError).toEqual({ code: 'INSUFFICIENT_FUNDS', message: first.body.chargeError.message });
  });
});

describe('periodStartOf', () => {
  it('is the first instant of the UTC calendar month, in every year a usage timestamp may have', () => {
    const cases: [string, string][] = [
      ['2026-06-15T12:00:00.000Z', '2026-06-01T00:00:00.000Z'],
      ['2026-12-31T23:59:59.999Z', '2026-12-01T00:00:00.000Z'],
      ['0050-03-10T08:00:00.000Z', '0050-03-01T00:00:00.000Z'],
      ['0001-01-01T00:00:00.000Z', '0001-01-01T00:00:00.000Z'],
      ['9999-12-31T23:59:59.999Z', '9999-12-01T00:00:00.000Z'],
    ];
    expect(cases.map(([at]) => periodStartOf(new Date(at)).toISOString())).toEqual(cases.map(([, start]) => start));
  });
});

describe('a customer archived', () => {
  it('starts no new usage (FORBIDDEN per event, the rest of the batch recorded); usage from before it was archived is still recorded and replays', async () => {
    const { merchant, customer, balance } = await setup();
    const other = await server.services.customers.create(merchant.id, { externalId: `other-${randomUUID().slice(0, 8)}` });
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 };
    const actor = { kind: 'system' as const, apiKeyId: null };
    const before = new Date(now.getTime() - 120_000);
    const [first] = await server.services.usage.record(merchant.id, actor, [{ customer: customer.id, idempotencyKey: 'before', usage, timestamp: before }]);
    expect(first!.ok).toBe(true);
    await server.services.customers.archive(merchant.id, customer.id);
    // Archived a minute ago by this server's clock (archive stamps the wall clock).
    await server.services.prisma.customer.update({ where: { id: customer.id }, data: { archivedAt: new Date(now.getTime() - 60_000) } });
    const charged = await balance();
    const results = await server.services.usage.record(merchant.id, actor, [
      { customer: customer.externalId, idempotencyKey: 'after', usage },
      { customer: other.id, idempotencyKey: 'other', usage },
      { customer: customer.id, idempotencyKey: 'late', usage, timestamp: new Date(now.getTime() - 3_600_000) },
      { customer: customer.id, idempotencyKey: 'before', usage, timestamp: before },
    ]);
    expect(results.map((result) => (result.ok ? `${result.event.status}${result.replayed ? ' replayed' : ''}` : result.error.code))).toEqual(['FORBIDDEN', 'UNCHARGED', 'CHARGED', 'CHARGED replayed']);
    expect(results[0]!.ok === false && results[0]!.error.details).toMatchObject({ reason: 'CUSTOMER_ARCHIVED', field: 'customer', customerId: customer.id });
    expect(await balance()).toBeLessThan(charged);
    const refused = await server.graphql<any>(RECORD, { input: { customer: customer.id, idempotencyKey: 'after-gql', usage } }, merchant.secret);
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'FORBIDDEN', reason: 'CUSTOMER_ARCHIVED' });
  });
});

describe('usageEvents', () => {
  it('lists by when the usage happened, a late event in its place in time, and pages through events of one moment without losing or repeating one', async () => {
    const { merchant, customer } = await setup();
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 10, outputTokens: 1 };
    const actor = { kind: 'system' as const, apiKeyId: null };
    const at = (minutesAgo: number) => new Date(now.getTime() - minutesAgo * 60_000);
    await server.services.usage.record(merchant.id, actor, [
      ...['a', 'b', 'c', 'd', 'e'].map((key) => ({ customer: customer.id, idempotencyKey: key, usage, timestamp: at(10) })),
      { customer: customer.id, idempotencyKey: 'newest', usage, timestamp: at(1) },
    ]);
    // Recorded last, happened first.
    await server.services.usage.record(merchant.id, actor, [{ customer: customer.id, idempotencyKey: 'late', usage, timestamp: at(60) }]);
    const page = (args: string) => server.graphql<any>(`query ($id: ID!) { usageEvents(customerId: $id, ${args}) { edges { cursor node { idempotencyKey occurredAt } } pageInfo { hasNextPage } } }`, { id: customer.id }, merchant.secret);
    const seen: string[] = [];
    let after: string | null = null;
    for (;;) {
      const result: any = await page(`first: 2${after ? `, after: "${after}"` : ''}`);
      expect(result.errors).toBeUndefined();
      const edges = result.data.usageEvents.edges;
      seen.push(...edges.map((edge: any) => edge.node.idempotencyKey));
      if (!result.data.usageEvents.pageInfo.hasNextPage) break;
      after = edges[edges.length - 1].cursor;
    }
    expect(seen[0]).toBe('newest');
    expect(seen[seen.length - 1]).toBe('late');
    expect([...seen].sort()).toEqual(['a', 'b', 'c', 'd', 'e', 'late', 'newest']);
  });
});
