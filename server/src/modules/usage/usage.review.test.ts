import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpUsageSetup } from '../../../test/priced-usage.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';

/** What one usage path takes, the other takes alike; what an HTTP event says is read as it says it. */
const now = new Date('2026-06-15T12:00:00Z');
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 };
const RECORD = 'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { replayed event { id status charge } } }';

describe('a normalized record marked billable: false', () => {
  // Over HTTP it was recorded NOT_BILLABLE; recordUsage refused the field, so a GraphQL app could
  // only report a failed call as billable (and have it charged) or not at all.
  it('is recorded NOT_BILLABLE at no charge over GraphQL as over HTTP, and a retry on the other path replays it', async () => {
    const { merchant, customer, post, balance } = await httpUsageSetup(server);
    const before = await balance();
    const record = (input: Record<string, unknown>) => server.graphql<{ recordUsage: { replayed: boolean; event: { id: string; status: string; charge: string } } }>(RECORD, { input }, merchant.secret);
    const overGraphql = await record({ customer: customer.id, idempotencyKey: 'failed-call', usage: { ...usage, billable: false } });
    expect(overGraphql.errors).toBeUndefined();
    expect(overGraphql.data!.recordUsage).toMatchObject({ replayed: false, event: { status: 'NOT_BILLABLE', charge: '0.00' } });
    const overHttp = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'failed-call', usage: { ...usage, billable: false } });
    expect(overHttp).toMatchObject({ status: 200, body: { replayed: true, event: { id: overGraphql.data!.recordUsage.event.id, status: 'NOT_BILLABLE' } } });
    // Left out, it is billable on both paths; a retry saying otherwise is another record.
    const billable = await record({ customer: customer.id, idempotencyKey: 'failed-call', usage });
    expect(billable.errors?.[0]?.extensions).toMatchObject({ code: 'CONFLICT', field: 'idempotencyKey' });
    expect(await balance()).toBe(before);
  });
});

describe('an HTTP event naming its customer twice', () => {
  // `customer` won silently: an event meant for customerId's customer was charged to another one.
  it('as two different customers is refused naming customerId; the same customer twice is recorded', async () => {
    const { merchant, customer, post, stored, balance } = await httpUsageSetup(server);
    const other = await server.services.customers.create(merchant.id, { externalId: `other-${customer.id.slice(0, 8)}` });
    const before = await balance();
    const twice = await post('/v1/usage', { customer: other.id, customerId: customer.id, idempotencyKey: 'twice', usage });
    expect(twice.status).toBe(400);
    expect(twice.body.error).toMatchObject({ code: 'VALIDATION', field: 'customerId' });
    const batch = await post('/v1/usage/batch', {
      events: [
        { customer: other.id, customerId: customer.externalId, idempotencyKey: 'twice', usage },
        { customer: customer.externalId, customerId: customer.externalId, idempotencyKey: 'same', usage },
      ],
    });
    expect(batch.body.results).toMatchObject([
      { index: 0, ok: false, error: { code: 'VALIDATION', field: 'events.0.customerId' } },
      { index: 1, ok: true, event: { customerId: customer.id, status: 'CHARGED' } },
    ]);
    expect(await stored()).toEqual(['same']);
    expect(await balance()).toBeLessThan(before);
    expect((await server.services.ledgerQueries.wallet(merchant.id, other.id, 'USD')).balance).toBe(0n);
  });
});

describe('an HTTP event naming its customer as customerId', () => {
  // The answer named `customer`, a field the event did not send.
  it('is refused naming customerId when that customer is unknown or blank, on both routes', async () => {
    const { customer, post, stored } = await httpUsageSetup(server);
    const single = await post('/v1/usage', { customerId: 'nobody', idempotencyKey: 'unknown', usage });
    expect(single.status).toBe(404);
    expect(single.body.error).toMatchObject({ code: 'NOT_FOUND', field: 'customerId' });
    const blank = await post('/v1/usage', { customerId: ' ', idempotencyKey: 'blank', usage });
    expect(blank.body.error).toMatchObject({ code: 'VALIDATION', field: 'customerId' });
    expect(blank.body.error.message).toMatch(/^customerId: is required/);
    const batch = await post('/v1/usage/batch', {
      events: [
        { customerId: 'nobody', idempotencyKey: 'unknown', usage },
        { customer: 'nobody', idempotencyKey: 'unknown-2', usage },
        { customerId: customer.id, idempotencyKey: 'known', usage },
      ],
    });
    expect(batch.body.results).toMatchObject([
      { index: 0, ok: false, error: { code: 'NOT_FOUND', field: 'customerId' } },
      { index: 1, ok: false, error: { code: 'NOT_FOUND', field: 'customer' } },
      { index: 2, ok: true, event: { status: 'CHARGED' } },
    ]);
    expect(await stored()).toEqual(['known']);
  });
});
