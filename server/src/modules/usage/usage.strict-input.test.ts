import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpUsageSetup } from '../../../test/priced-usage.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';

/**
 * Usage ingestion fails loudly rather than silently: a key the API does not know is refused (as
 * GraphQL refuses an unknown input field) instead of being read as absent, and an event priced
 * beyond what an event may charge is refused instead of being recorded at an absurd figure.
 */
const now = new Date('2026-06-15T12:00:00Z');
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

const setup = (credit?: string) => httpUsageSetup(server, credit);

const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 };
const chatBody = JSON.stringify({ id: 'x', object: 'chat.completion', model: 'gpt-5.4-mini', choices: [], usage: { prompt_tokens: 1000, completion_tokens: 100, total_tokens: 1100 } });
const chat = { url: 'https://api.openai.com/v1/chat/completions', status: 200, body: chatBody };
/** An answer's field without the event's place in its batch (`events.3.`). */
const fieldOf = (result: { error: { field: string } }) => result.error.field.replace(/^events\.\d+\./, '');

describe('an unknown key in a usage event over HTTP', () => {
  it('in a normalized usage record (snake_case, as a provider writes it) is refused naming the field and the field it meant; the rest of the batch is charged', async () => {
    const { customer, post, stored, balance } = await setup();
    const before = await balance();
    const { status, body } = await post('/v1/usage/batch', {
      events: [
        { customer: customer.id, idempotencyKey: 'good', usage },
        // Read as absent, these recorded the call NOT_BILLABLE at no charge, with no costProblem.
        { customer: customer.id, idempotencyKey: 'snake', usage: { provider: 'openai', model: 'gpt-5.4-mini', input_tokens: 1000, output_tokens: 100 } },
        { customer: customer.id, idempotencyKey: 'openai-names', usage: { provider: 'openai', model: 'gpt-5.4-mini', prompt_tokens: 1000, completion_tokens: 100 } },
        { customer: customer.id, idempotencyKey: 'anthropic-names', usage: { ...usage, cache_read_input_tokens: 10 } },
        { customer: customer.id, idempotencyKey: 'cased', usage: { ...usage, OutputTokens: 5 } },
        { customer: customer.id, idempotencyKey: 'surprise', usage: { ...usage, surprise: 1 } },
        // A reported cost is read from a provider's response only: in a record it was ignored, and the call costed by the price table.
        { customer: customer.id, idempotencyKey: 'cost', usage: { ...usage, providerReportedCostUsd: '0.5' } },
        { customer: customer.id, idempotencyKey: 'good-2', usage },
      ],
    });
    expect(status).toBe(200);
    const [good, snake, openaiNames, anthropicNames, cased, surprise, cost, good2] = body.results;
    expect(good).toMatchObject({ ok: true, event: { status: 'CHARGED' } });
    expect(good2).toMatchObject({ ok: true, event: { status: 'CHARGED' } });
    expect(snake).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'events.1.usage.input_tokens' } });
    expect(snake.error.message).toContain('is not a field of a usage record');
    expect(snake.error.message).toContain('did you mean inputTokens?');
    expect([openaiNames, anthropicNames, cased].map((result) => [fieldOf(result), result.error.message.match(/did you mean (\w+)\?/)?.[1]])).toEqual([
      ['usage.prompt_tokens', 'inputTokens'], ['usage.cache_read_input_tokens', 'cachedInputTokens'], ['usage.OutputTokens', 'outputTokens'],
    ]);
    // No field of ours is like it: the answer lists them.
    expect(fieldOf(surprise)).toBe('usage.surprise');
    expect(surprise.error.message).toContain('its fields are provider, model, api, inputTokens');
    expect(fieldOf(cost)).toBe('usage.providerReportedCostUsd');
    expect(body.summary).toEqual({ received: 8, ok: 2, failed: 6, replayed: 0 });
    expect(await stored()).toEqual(['good', 'good-2']);
    expect(before - (await balance())).toBe(parseDecimalNanos('c', good.event.charge) + parseDecimalNanos('c', good2.event.charge));

    // One record alone: 400, nothing recorded.
    const single = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'single', usage: { provider: 'openai', model: 'gpt-5.4-mini', input_tokens: 1000 } });
    expect(single).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION', field: 'usage.input_tokens' } } });
    expect(await stored()).toEqual(['good', 'good-2']);
  });

  it('at the top level of the event (customer_id, idempotency_key, meta, the internal holdId) or in a provider response is refused, naming it', async () => {
    const { customer, post, stored } = await setup();
    const event = { customer: customer.id, usage };
    const { status, body } = await post('/v1/usage/batch', {
      events: [
        { ...event, idempotencyKey: 'good' },
        { ...event, idempotency_key: 'k-snake' },
        { customer_id: customer.id, idempotencyKey: 'k-customer', usage },
        // Read as absent, `meta` dropped the caller's data from an event that was otherwise charged.
        { ...event, idempotencyKey: 'k-meta', meta: { team: 'search' } },
        { ...event, idempotencyKey: 'k-hold', holdId: randomUUID() },
        { customer: customer.id, idempotencyKey: 'k-response', response: { ...chat, request_body: { model: 'gpt-5.4-mini' } } },
        { customer: customer.id, idempotencyKey: 'k-response-2', response: { ...chat, statusText: 'OK' } },
      ],
    });
    expect(status).toBe(200);
    const [good, ...bad] = body.results;
    expect(good).toMatchObject({ ok: true, event: { status: 'CHARGED' } });
    expect(bad.map((result: any) => [result.error.code, fieldOf(result), result.error.message.match(/did you mean (\w+)\?/)?.[1] ?? null])).toEqual([
      ['VALIDATION', 'idempotency_key', 'idempotencyKey'],
      ['VALIDATION', 'customer_id', 'customerId'],
      ['VALIDATION', 'meta', 'metadata'],
      ['VALIDATION', 'holdId', null],
      ['VALIDATION', 'response.request_body', 'requestBody'],
      ['VALIDATION', 'response.statusText', null],
    ]);
    expect(bad[0].error.message).toContain('is not a field of a usage event');
    expect(bad[5].error.message).toContain('is not a field of a provider response');
    expect(bad[5].error.message).toContain('its fields are url, status, headers, body, requestBody, provider, model');
    expect(await stored()).toEqual(['good']);
  });

  it('is the only new refusal: an event naming every field the API documents is recorded as before', async () => {
    const { customer, post } = await setup();
    const { body } = await post('/v1/usage/batch', {
      events: [
        {
          customerId: customer.id, idempotencyKey: 'all-usage', timestamp: now.toISOString(), currency: 'USD', metadata: { team: 'search' }, quantities: {},
          usage: {
            provider: 'openai', model: 'gpt-5.4-mini', api: 'chat.completions', inputTokens: 1000, cachedInputTokens: 10, cacheWriteTokens: 0, outputTokens: 100, reasoningTokens: 5,
            audioSeconds: null, characters: 0, images: 0, requests: 1, billable: true,
          },
        },
        {
          customer: customer.id, idempotencyKey: 'all-response', timestamp: null, currency: null, metadata: null, quantities: null, usage: null,
          response: { ...chat, headers: { 'x-request-id': 'r' }, requestBody: { model: 'gpt-5.4-mini' }, provider: 'openai', model: 'gpt-5.4-mini' },
        },
      ],
    });
    expect(body.results).toMatchObject([{ ok: true, event: { status: 'CHARGED' } }, { ok: true, event: { status: 'CHARGED' } }]);
  });
});

describe('a charge beyond what an event may charge', () => {
  /** FLAT rules: `units` at 10^11 USD a unit (so 10^9 units are 10^20 USD), `huge` at 999,999,999,999, `searches` at 0.01. */
  async function pricedSetup() {
    const context = await setup();
    const { merchant } = context;
    for (const [key, unitPrice] of [['units', '100000000000'], ['huge', '999999999999'], ['searches', '0.01']] as const) {
      await server.services.meters.create(merchant.id, { key, name: key, unit: 'unit', source: 'QUANTITY' });
      await server.services.priceRules.put(merchant.id, { name: key, type: 'FLAT', meterKey: key, config: { unitPrice }, effectiveFrom: new Date('2026-01-01') });
    }
    const totals = async () =>
      Object.fromEntries(
        (await server.services.db.withConnection((c) => c.query<{ meter_key: string; quantity: string }>(`SELECT meter_key, quantity::text FROM usage_period_totals WHERE merchant_id = $1`, [merchant.id])))
          .map((row) => [row.meter_key, row.quantity.replace(/\.?0+$/, '')]),
      );
    return { ...context, totals };
  }

  it('is refused from 10^20 USD on, nothing of it written (no event, no period total, no debit), while just below it is recorded and the batch around it charged', async () => {
    const { merchant, customer, post, stored, balance, totals } = await pricedSetup();
    // A customer allowed to owe 1,000,000,000 USD: an absurd charge drained that whole allowance.
    const owing = await server.services.customers.create(merchant.id, { externalId: `owing-${randomUUID().slice(0, 8)}` });
    await server.services.ledger.setOverdraftLimit(merchant.id, owing.id, 'USD', parseDecimalNanos('limit', '1000000000'));
    const { status, body } = await post('/v1/usage/batch', {
      events: [
        { customer: customer.id, idempotencyKey: 'search-1', quantities: { searches: 1 } },
        { customer: customer.id, idempotencyKey: 'at-cap', quantities: { units: 1_000_000_000 } },
        // 999,999,999,999 × 999,999,999,999,999 ≈ 10^27 USD: recorded PARTIALLY_CHARGED before.
        { customer: owing.id, idempotencyKey: 'absurd', quantities: { huge: '999999999999999' } },
        { customer: customer.id, idempotencyKey: 'search-2', quantities: { searches: 1 } },
        // 10^20 USD less 10^-7: the largest charge an event may have at this price.
        { customer: customer.id, idempotencyKey: 'below-cap', quantities: { units: '999999999.999999999999999999' } },
      ],
    });
    expect(status).toBe(200);
    const [search1, atCap, absurd, search2, belowCap] = body.results;
    expect(search1).toMatchObject({ ok: true, event: { status: 'CHARGED', charge: '0.01' } });
    expect(search2).toMatchObject({ ok: true, event: { status: 'CHARGED', charge: '0.01' } });
    expect(atCap).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'quantities.units', rule: 'units', charge: '100000000000000000000.00', currency: 'USD' } });
    expect(atCap.error.message).toContain('more than an event may charge (under 10^20 USD): nothing was recorded');
    expect(absurd).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'quantities.huge', rule: 'huge', charge: '999999999998999000000000001.00' } });
    // Just below the cap: recorded, charged what the customer had left, the rest its shortfall.
    expect(belowCap).toMatchObject({
      ok: true, event: { status: 'PARTIALLY_CHARGED', charge: '9.98', shortfall: '99999999999999999990.0199999' }, chargeError: { code: 'INSUFFICIENT_FUNDS' },
    });
    expect(await stored()).toEqual(['below-cap', 'search-1', 'search-2']);
    // The refused events' units count nowhere: the batch was charged again without them.
    expect(await totals()).toEqual({ searches: '2', units: '999999999.999999999999999999' });
    expect(await balance()).toBe(0n);
    expect(await balance(owing.id)).toBe(0n);
    expect((await server.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);

    // Alone, and through GraphQL: the same refusal.
    const single = await post('/v1/usage', { customer: owing.id, idempotencyKey: 'single', quantities: { units: 1_000_000_000 } });
    expect(single).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION', field: 'quantities.units' } } });
    const answer = await server.graphql<any>(
      'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { event { id } } }',
      { input: { customer: owing.id, idempotencyKey: 'gql', quantities: { huge: '999999999999999' } } },
      merchant.secret,
    );
    expect(answer.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'quantities.huge' });
    expect(await stored()).toEqual(['below-cap', 'search-1', 'search-2']);
    expect(await balance(owing.id)).toBe(0n);
  });

  it('does not turn a retry of an event recorded below the cap into a refusal: priced again from the total it is already part of, it is still answered as its replay', async () => {
    const { merchant, customer, post, stored, balance, totals } = await pricedSetup();
    // 10^10 USD a unit up to 10^9 units, then 999,999,999,999: 9×10^8 units first cost 9×10^18 USD,
    // and 9×10^20 on top of themselves, were the key not known to be recorded already.
    await server.services.meters.create(merchant.id, { key: 'tiered', name: 'tiered', unit: 'unit', source: 'QUANTITY' });
    await server.services.priceRules.put(merchant.id, {
      name: 'tiered', type: 'GRADUATED', meterKey: 'tiered', config: { tiers: [{ upTo: 1_000_000_000, unitPrice: '10000000000' }, { upTo: null, unitPrice: '999999999999' }] }, effectiveFrom: new Date('2026-01-01'),
    });
    const event = { customer: customer.id, idempotencyKey: 'tiered-1', quantities: { tiered: 900_000_000 } };
    const first = await post('/v1/usage', event);
    expect(first).toMatchObject({ status: 402, body: { replayed: false, event: { status: 'PARTIALLY_CHARGED', charge: '10.00' } } });
    const again = await post('/v1/usage', event);
    expect(again).toMatchObject({ status: 402, body: { replayed: true, event: { id: first.body.event.id } } });
    // A new event that far into the dear tier is refused.
    const next = await post('/v1/usage', { ...event, idempotencyKey: 'tiered-2' });
    expect(next).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION', field: 'quantities.tiered', rule: 'tiered' } } });
    expect(await stored()).toEqual(['tiered-1']);
    expect(await totals()).toEqual({ tiered: '900000000' });
    expect(await balance()).toBe(0n);
  });
});

describe('a stated quantity for a key that is no custom meter', () => {
  it('is refused naming the key (a typo, or a meter that reads its units from the record); a custom meter\'s is charged, an archived one\'s taken uncounted', async () => {
    const { merchant, customer, post, stored, balance } = await setup();
    const { services } = server;
    await services.meters.create(merchant.id, { key: 'searches', name: 'Searches', unit: 'search', source: 'QUANTITY' });
    await services.meters.create(merchant.id, { key: 'calls', name: 'Calls', unit: 'call', source: 'REQUESTS' });
    await services.meters.create(merchant.id, { key: 'pages', name: 'Pages', unit: 'page', source: 'QUANTITY' });
    await services.priceRules.put(merchant.id, { name: 'searches', type: 'FLAT', meterKey: 'searches', config: { unitPrice: '0.10' }, effectiveFrom: new Date('2025-01-01') });
    await services.meters.archive(merchant.id, 'pages');
    const before = await balance();
    const { status, body } = await post('/v1/usage/batch', {
      events: [
        { customer: customer.id, idempotencyKey: 'right', quantities: { searches: 3 } },
        // Recorded before, charging only what else the record had: the quantity was dropped unsaid.
        { customer: customer.id, idempotencyKey: 'typo', quantities: { serches: 3 } },
        { customer: customer.id, idempotencyKey: 'requests-meter', quantities: { calls: 5 } },
        { customer: customer.id, idempotencyKey: 'one-bad-key', quantities: { searches: 2, serches: 1 } },
        { customer: customer.id, idempotencyKey: 'archived', quantities: { pages: 4 } },
      ],
    });
    expect(status).toBe(200);
    const [right, typo, requestsMeter, oneBadKey, archived] = body.results;
    expect(right).toMatchObject({ ok: true, event: { status: 'CHARGED', charge: '0.30' } });
    expect(typo).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'quantities.serches' } });
    expect(typo.error.message).toContain('the QUANTITY meters are searches');
    expect(requestsMeter).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'quantities.calls' } });
    expect(requestsMeter.error.message).toContain('counts REQUESTS from the usage record itself');
    expect(oneBadKey).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'quantities.serches' } });
    expect(archived).toMatchObject({ ok: true, event: { status: 'NOT_BILLABLE' } });
    expect(body.summary).toEqual({ received: 5, ok: 2, failed: 3, replayed: 0 });
    // Refused events are not recorded, so the same keys may be sent again, put right.
    expect((await stored()).sort()).toEqual(['archived', 'right']);
    expect(before - (await balance())).toBe(parseDecimalNanos('charge', '0.30'));
    const again = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'typo', quantities: { searches: 1 } });
    expect(again).toMatchObject({ status: 200, body: { ok: true, event: { status: 'CHARGED', charge: '0.10' } } });
  });

  it('is refused over GraphQL too, and a merchant with no custom meter is told to make one', async () => {
    const { merchant, customer, stored } = await setup();
    const answer = await server.graphql<any>(
      `mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { event { id } } }`,
      { input: { customer: customer.id, idempotencyKey: 'no-meters', quantities: { searches: 1 } } },
      merchant.secret,
    );
    expect(answer.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'quantities.searches' });
    expect(answer.errors![0]!.message).toContain('there are none: create one with createMeter(source: QUANTITY)');
    expect(await stored()).toEqual([]);
  });
});
