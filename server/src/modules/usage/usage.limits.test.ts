import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import type { PriceWithRef } from '../pricing/prices.service.ts';
import type { UsageResult } from './usage.service.ts';
import { providerCost } from './usage.pricing.ts';
import { blankUsage } from './usage.types.ts';

/**
 * What an event's numbers may reach: its month's totals (NUMERIC(38,18), under 10^20 units) and its
 * cost (NUMERIC(38,0) attos, under 10^20 USD). Beyond them the event is refused with its field, or
 * recorded at an unknown cost, never failed by the database (nor its batch with it).
 */
let now = new Date('2026-03-01T00:02:00Z');
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

/** 10^20 units less `less`: a month's total that one more event of `less` units would overflow. */
const nearlyFull = (less: number) => (10n ** 20n - BigInt(less)).toString();

describe("an event that would take a month's total past what it holds", () => {
  const SINCE = new Date('2026-01-01T00:00:00Z');
  const PERIOD = new Date('2026-03-01T00:00:00Z');

  async function setup() {
    const { services } = server;
    const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
    for (const [key, source] of [['bytes', 'QUANTITY'], ['pages', 'QUANTITY'], ['out', 'OUTPUT_TOKENS']] as const) {
      await services.meters.create(merchant.id, { key, name: key, unit: 'unit', source });
      await services.priceRules.put(merchant.id, { name: `${key} flat`, type: 'FLAT', meterKey: key, config: { unitPrice: '0.000000000000000001' }, effectiveFrom: SINCE });
    }
    const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
    const other = await services.customers.create(merchant.id, { externalId: `other-${randomUUID().slice(0, 8)}` });
    for (const { id } of [customer, other]) {
      await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '1000'), kind: 'PAID', idempotencyKey: `seed-${id}` });
    }
    /** The customer's month total of a meter, as the totals row keeps it, as if reached by earlier events. */
    const seed = (meter: string, quantity: string) =>
      services.prisma.usagePeriodTotal.create({ data: { merchantId: merchant.id, customerId: customer.id, currency: 'USD', meterKey: meter, periodStart: PERIOD, priceBook: '', ruleName: `${meter} flat`, quantity } });
    const total = async (meter: string, customerId = customer.id) =>
      (await services.prisma.usagePeriodTotal.findFirst({ where: { customerId, meterKey: meter, periodStart: PERIOD } }))?.quantity.toFixed() ?? null;
    const record = (events: Record<string, unknown>[]) =>
      services.usage.record(merchant.id, SYSTEM_ACTOR, events.map((event) => ({ customer: customer.id, idempotencyKey: randomUUID(), ...event })));
    return { merchant, customer, other, seed, total, record };
  }

  /** Each answer: the event's charge, or its error's code, field and message. */
  const answers = (results: UsageResult[]) =>
    results.map((result) => (result.ok ? result.event.charge : { code: result.error.code, field: result.error.details.field, message: result.error.message }));

  it('is refused alone with the field at fault; the events before and after it that fit, and other customers\' events, are charged', async () => {
    const t = await setup();
    await t.seed('bytes', nearlyFull(10));
    const refused = { code: 'VALIDATION', field: 'quantities.bytes', message: expect.stringMatching(/2026-03 total of meter "bytes" to 100000000000000000005, beyond/) };
    const results = await t.record([
      { quantities: { bytes: 5 } },
      // 10^20 - 5 + 10 does not fit; nor does reaching 10^20 exactly.
      { quantities: { bytes: 10 } },
      { quantities: { bytes: '5' } },
      { quantities: { bytes: 4 } },
      { customer: t.other.id, quantities: { bytes: Number.MAX_SAFE_INTEGER } },
    ]);
    expect(answers(results)).toEqual([
      '0.000000000000000005', refused, { ...refused, message: expect.stringContaining('to 100000000000000000000, beyond') }, '0.000000000000000004', '0.009007199254740991',
    ]);
    expect(await t.total('bytes')).toBe(nearlyFull(1));
    expect(await t.total('bytes', t.other.id)).toBe(String(Number.MAX_SAFE_INTEGER));
    // Alone, as every later event of the meter that month: refused the same way, never by the database.
    const [alone] = answers(await t.record([{ quantities: { bytes: 1 } }]));
    expect(alone).toMatchObject({ code: 'VALIDATION', field: 'quantities.bytes' });
    expect(JSON.stringify(alone)).not.toMatch(/database|numeric field overflow/);
    expect(await t.total('bytes')).toBe(nearlyFull(1));
  });

  it('a retry of an event recorded before answers its first result, though the month is now too full for it', async () => {
    const t = await setup();
    await t.seed('bytes', nearlyFull(10));
    const first = { idempotencyKey: `retried-${randomUUID()}`, quantities: { bytes: 5 } };
    expect(answers(await t.record([first, { quantities: { bytes: 4 } }]))).toEqual(['0.000000000000000005', '0.000000000000000004']);
    // Its 5 bytes no longer fit the month (1 left), but it was recorded: a replay, not a refusal,
    // whether or not the batch read its keys first (a merchant sending no retries lately does not).
    const [again] = await t.record([first]);
    expect(again).toMatchObject({ ok: true, replayed: true, event: { charge: '0.000000000000000005' } });
    expect(await t.total('bytes')).toBe(nearlyFull(1));
  });

  it('counts nowhere, its other meters included, and names the usage when a meter reads it', async () => {
    const t = await setup();
    await t.seed('bytes', nearlyFull(10));
    await t.seed('out', nearlyFull(10));
    const results = await t.record([
      { quantities: { bytes: 100, pages: 3 } },
      { quantities: { pages: 2 } },
      { usage: { provider: 'custom', model: 'm', outputTokens: 10 } },
      { usage: { provider: 'custom', model: 'm', outputTokens: 9 } },
    ]);
    expect(answers(results)).toEqual([
      expect.objectContaining({ code: 'VALIDATION', field: 'quantities.bytes' }), '0.000000000000000002',
      expect.objectContaining({ code: 'VALIDATION', field: 'usage' }), '0.000000000000000009',
    ]);
    expect([await t.total('bytes'), await t.total('pages'), await t.total('out')]).toEqual([nearlyFull(10), '2', nearlyFull(1)]);
    // Nothing of the refused events was stored: sent again, each is judged anew.
    const events = await server.services.prisma.usageEvent.count({ where: { customerId: t.customer.id } });
    expect(events).toBe(2);
  });
});

describe('a provider cost beyond what an event stores', () => {
  const usage = blankUsage({ provider: 'acme', model: 'big', requests: 1 });
  const row = (perRequest: string): PriceWithRef => ({ provider: 'acme', model: 'big', currency: 'USD', effectiveFrom: new Date('2026-01-01'), perRequest, ref: 'row-1' });

  it('is an unknown cost, saying so, from 10^20 USD (10^38 attos) up', () => {
    expect(providerCost({ ...usage, requests: 999_999_999 }, () => row('100000000000'))).toEqual({ costAttos: 99_999_999_900_000_000_000n * 10n ** 18n, problem: null, ref: 'row-1' });
    expect(providerCost({ ...usage, requests: 1_000_000_000 }, () => row('100000000000'))).toEqual({
      costAttos: 0n, problem: expect.stringContaining('100000000000000000000.00 USD, more than an event stores'), ref: 'row-1',
    });
  });

  it('leaves the event recorded over HTTP at no charge, with its costProblem, instead of refused by the database', async () => {
    const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
    const customer = await server.services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
    const set = await server.graphql(
      `mutation ($input: SetProviderPriceInput!) { setProviderPrice(input: $input) { ref } }`,
      { input: { provider: 'acme', model: 'big', rates: { perRequest: '999999999999' }, effectiveFrom: '2026-01-01T00:00:00Z' } },
      merchant.secret,
    );
    expect(set.errors).toBeUndefined();
    const response = await fetch(`${server.url}/v1/usage`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` },
      body: JSON.stringify({ customer: customer.id, idempotencyKey: 'big-1', usage: { provider: 'acme', model: 'big', requests: 2147483647 } }),
    });
    const body = await response.text();
    expect(body).not.toMatch(/database|numeric field overflow/);
    expect(response.status).toBe(200);
    expect(JSON.parse(body).event).toMatchObject({ status: 'NOT_BILLABLE', cost: '0.00', charge: '0.00', costProblem: expect.stringContaining('more than an event stores') });
  });
});

describe('a retry of usage recorded before its customer was archived', () => {
  it('answers the first result even with no timestamp (read as now, after the archive); a new key is still refused, and other events are unaffected', async () => {
    const { services } = server;
    now = new Date('2026-03-01T00:02:00Z');
    const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
    await services.meters.create(merchant.id, { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
    await services.priceRules.put(merchant.id, { name: 'out flat', type: 'FLAT', meterKey: 'out', config: { unitPrice: '1' }, effectiveFrom: new Date('2026-01-01T00:00:00Z') });
    const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
    const other = await services.customers.create(merchant.id, { externalId: `other-${randomUUID().slice(0, 8)}` });
    for (const { id } of [customer, other]) {
      await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '1000'), kind: 'PAID', idempotencyKey: `seed-${id}` });
    }
    const event = (outputTokens: number, timestamp: Date | null, key: string, customerId = customer.id) =>
      ({ customer: customerId, idempotencyKey: key, usage: { provider: 'custom', model: 'm', outputTokens }, timestamp });
    const calledAt = now;
    const [first] = await services.usage.record(merchant.id, SYSTEM_ACTOR, [event(5, null, 'call-1')]);
    expect(first!.ok).toBe(true);
    await services.customers.archive(merchant.id, customer.id);
    await services.prisma.customer.update({ where: { id: customer.id }, data: { archivedAt: new Date(calledAt.getTime() + 1000) } });
    now = new Date(calledAt.getTime() + 2000);
    const [retry] = await services.usage.record(merchant.id, SYSTEM_ACTOR, [event(5, null, 'call-1')]);
    expect(retry!.ok ? { replayed: retry!.replayed, charge: retry!.event.charge } : retry!.error.code).toEqual({ replayed: true, charge: '5.00' });
    // In a batch: the retry replays, a new key from after the archive is refused as before, a late one and another customer's are charged.
    const results = await services.usage.record(merchant.id, SYSTEM_ACTOR, [
      event(7, null, 'call-2'), event(5, null, 'call-1'), event(3, calledAt, 'late'), event(2, null, 'call-2', other.id),
    ]);
    expect(results.map((result) => (result.ok ? `${result.event.charge}${result.replayed ? ' replayed' : ''}` : `${result.error.code} ${String(result.error.details.reason)}`)))
      .toEqual(['FORBIDDEN CUSTOMER_ARCHIVED', '5.00 replayed', '3.00', '2.00']);
    expect(results[0]!.ok === false && results[0]!.error.details).toMatchObject({ field: 'customer', customerId: customer.id, archivedAt: new Date(calledAt.getTime() + 1000).toISOString() });
    expect((await services.ledgerQueries.wallet(merchant.id, customer.id, 'USD')).balance).toBe(parseDecimalNanos('x', '992'));
    // The batch's lanes run side by side: whether or not the other customer's 'call-2' committed
    // first, the archived customer's new 'call-2' is refused for the archive, not as a key conflict.
    const [again] = await services.usage.record(merchant.id, SYSTEM_ACTOR, [event(7, null, 'call-2')]);
    expect(again!.ok ? 'recorded' : `${again!.error.code} ${String(again!.error.details.reason)}`).toBe('FORBIDDEN CUSTOMER_ARCHIVED');
  });
});
