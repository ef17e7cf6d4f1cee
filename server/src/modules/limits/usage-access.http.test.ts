import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testServerWithMerchant, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';

/** GET /v1/access: usageAccess over HTTP with a secret key, the customer named by id or externalId. */
// Mid-month, so that the month cannot end between the charges and the read.
const now = new Date('2026-03-15T12:00:00Z');
const { start, close } = testServerWithMerchant({}, { clock: () => now });
let server: TestServer;
let merchant: Awaited<ReturnType<TestServer['createMerchant']>>;

beforeAll(async () => {
  ({ server, merchant } = await start());
});
afterAll(() => close());

/** GETs /v1/access with `query` (raw text, so repeated and odd parameters can be sent) and the merchant's key unless `token` is given ('' for none). */
async function get(query: string, token: string = merchant.secret) {
  const response = await fetch(`${server.url}/v1/access?${query}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: response.status, type: response.headers.get('content-type'), body: (await response.json()) as any };
}

async function customerWith(credit: string | null, merchantId = merchant.id) {
  const customer = await server.services.customers.create(merchantId, { externalId: `user ${randomUUID().slice(0, 8)}` });
  if (credit) {
    await server.services.ledger.grantCredits(merchantId, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', credit), kind: 'PAID', idempotencyKey: randomUUID() });
  }
  return customer;
}

describe('GET /v1/access', () => {
  it('answers 200 for a customer named by its id or its externalId, with the same fields as usageAccess', async () => {
    const customer = await customerWith('2.5');
    const expected = {
      customerId: customer.id, currency: 'USD', allowed: true, reason: null, available: '2.50', overdraftLimit: '0.00', limit: null, spentThisMonth: null, resetsAt: null,
    };
    const byId = await get(`customer=${customer.id}`);
    expect(byId).toMatchObject({ status: 200, type: expect.stringContaining('application/json') });
    expect(byId.body).toEqual(expected);
    expect((await get(`customer=${encodeURIComponent(customer.externalId!)}`)).body).toEqual(expected);
    expect((await get(`customer=${customer.id.toUpperCase()}&currency=usd&amount=2.5`)).body).toEqual(expected);
    // A refusal is an answer, not an error.
    expect(await get(`customer=${customer.id}&amount=2.500000001`)).toMatchObject({ status: 200, body: { ...expected, allowed: false, reason: 'INSUFFICIENT_FUNDS' } });
  });

  it("Tollgate's id wins over another customer's externalId of the same text", async () => {
    const named = await customerWith('1');
    const squatter = await server.services.customers.create(merchant.id, { externalId: named.id });
    expect((await get(`customer=${named.id}`)).body).toMatchObject({ customerId: named.id, allowed: true });
    expect(squatter.id).not.toBe(named.id);
  });

  it('shows the spend limit, and refuses once it is reached or an amount would pass it', async () => {
    const customer = await customerWith('10');
    await server.services.spendLimits.set(merchant.id, { customerId: customer.id, amount: '0.5' });
    const resetsAt = '2026-04-01T00:00:00.000Z';
    expect((await get(`customer=${customer.externalId}&amount=0.5`)).body).toMatchObject({ allowed: true, limit: '0.50', spentThisMonth: '0.00', resetsAt });
    expect((await get(`customer=${customer.externalId}&amount=0.51`)).body).toMatchObject({ allowed: false, reason: 'SPEND_LIMIT_REACHED', limit: '0.50', spentThisMonth: '0.00', resetsAt });
  });

  it('refuses an archived customer', async () => {
    const customer = await customerWith('1');
    await server.services.customers.archive(merchant.id, customer.id);
    expect(await get(`customer=${customer.id}`)).toMatchObject({ status: 200, body: { allowed: false, reason: 'CUSTOMER_ARCHIVED' } });
  });

  it('answers bad input with a JSON error: unknown customer 404, bad amount or currency 400, no key 401, a session token 403', async () => {
    const customer = await customerWith('1');
    const error = (status: number, fields: Record<string, unknown>) => ({ status, type: expect.stringContaining('application/json'), body: { error: expect.objectContaining(fields) } });
    expect(await get(`customer=${randomUUID()}`)).toMatchObject(error(404, { code: 'NOT_FOUND' }));
    expect(await get('customer=nobody-by-that-name')).toMatchObject(error(404, { code: 'NOT_FOUND' }));
    const elsewhere = await server.createMerchant('Other merchant');
    const theirs = await customerWith('1', elsewhere.id);
    expect(await get(`customer=${theirs.id}`)).toMatchObject(error(404, { code: 'NOT_FOUND' }));
    expect(await get(`customer=${encodeURIComponent(theirs.externalId!)}`)).toMatchObject(error(404, { code: 'NOT_FOUND' }));
    expect(await get(`customer=${customer.id}`, elsewhere.secret)).toMatchObject(error(404, { code: 'NOT_FOUND' }));

    for (const amount of ['-0.01', 'abc', '0.01e2', '']) {
      expect(await get(`customer=${customer.id}&amount=${amount}`)).toMatchObject(error(400, { code: 'VALIDATION', field: 'amount' }));
    }
    expect(await get(`customer=${customer.id}&currency=DOLLARS`)).toMatchObject(error(400, { code: 'VALIDATION', field: 'currency' }));
    expect(await get('')).toMatchObject(error(400, { code: 'VALIDATION', field: 'customer' }));
    expect(await get('customer=%20')).toMatchObject(error(400, { code: 'VALIDATION', field: 'customer' }));
    expect(await get(`customer=${customer.id}&customer=${customer.id}`)).toMatchObject(error(400, { code: 'VALIDATION', field: 'customer' }));
    expect(await get(`customer=${customer.id}&amount=1&amount=2`)).toMatchObject(error(400, { code: 'VALIDATION', field: 'amount' }));
    // A misspelt parameter is refused, not read as absent (the check would then run without the amount).
    expect(await get(`customer=${customer.id}&amout=500`)).toMatchObject(error(400, { code: 'VALIDATION', field: 'amout' }));

    expect(await get(`customer=${customer.id}`, '')).toMatchObject(error(401, { code: 'UNAUTHENTICATED' }));
    expect(await get(`customer=${customer.id}`, 'sk_test_forged')).toMatchObject(error(401, { code: 'UNAUTHENTICATED' }));
    const { token } = await server.services.customerSessions.create(merchant.id, customer.id);
    expect(await get(`customer=${customer.id}`, token)).toMatchObject(error(403, { code: 'FORBIDDEN' }));
  });
});
