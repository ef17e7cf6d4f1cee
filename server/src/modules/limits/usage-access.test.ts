import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testServerWithMerchant, type TestServer } from '../../../test/server.ts';
import { FIELD_COSTS } from '../../graphql/limits.ts';
import { ATTOS_PER_NANO, parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { creditCovers, customerRefusal, spendLimitAllows } from './usage-access.service.ts';

/**
 * usageAccess: "may this customer make a call now?", by the gateway's rules, for apps that meter
 * after the call. Spend comes from usage priced by a FLAT rule of 1 USD per unit of meter `q`.
 * The clock stands mid-month, so that the month cannot end between the charges and the read.
 */
const now = new Date('2026-03-15T12:00:00Z');
const { start, close, gql, newCustomer } = testServerWithMerchant({}, { clock: () => now });
let server: TestServer;
let merchant: Awaited<ReturnType<TestServer['createMerchant']>>;

beforeAll(async () => {
  ({ server, merchant } = await start());
  await server.services.meters.create(merchant.id, { key: 'q', name: 'Units', unit: 'unit', source: 'QUANTITY' });
  await server.services.priceRules.put(merchant.id, { name: 'q flat', type: 'FLAT', meterKey: 'q', config: { unitPrice: '1' }, effectiveFrom: new Date('2024-01-01T00:00:00Z') });
});
afterAll(() => close());

const ACCESS = `query ($c: ID!, $currency: String, $amount: Decimal) {
  usageAccess(customerId: $c, currency: $currency, amount: $amount) {
    allowed reason customerId currency available { amount currency } overdraftLimit { amount currency } limit { amount currency } spentThisMonth resetsAt
  }
}`;

/** The answer for customer `c` (as the merchant unless `token` is given), or its first error's extensions and message. */
async function access(c: string, args: { currency?: string; amount?: string } = {}, token?: string) {
  const response = await gql(ACCESS, { c, ...args }, token);
  if (response.errors) return { error: { ...response.errors[0]!.extensions, message: response.errors[0]!.message } };
  return response.data.usageAccess;
}

const grant = (customerId: string, amount: string, currency = 'USD') =>
  server.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId, currency, amountNanos: parseDecimalNanos('amount', amount), kind: 'PAID', idempotencyKey: randomUUID() });

/** Usage of `units` of meter q: charged `units` USD. */
async function spend(customerId: string, units: number) {
  const [result] = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [{ customer: customerId, idempotencyKey: randomUUID(), quantities: { q: units } }]);
  expect(result).toMatchObject({ ok: true, event: { status: 'CHARGED' } });
}

const NO_LIMIT = { limit: null, spentThisMonth: null, resetsAt: null };

describe('usageAccess: credit', () => {
  it('allows a customer with credit, and shows what it has', async () => {
    const c = await newCustomer();
    await grant(c, '5');
    expect(await access(c)).toEqual({
      allowed: true, reason: null, customerId: c, currency: 'USD', available: { amount: '5.00', currency: 'USD' }, overdraftLimit: { amount: '0.00', currency: 'USD' }, ...NO_LIMIT,
    });
  });

  it('refuses an empty wallet (one never used, or spent to zero) with INSUFFICIENT_FUNDS, even for a call said to cost nothing', async () => {
    const unused = await newCustomer();
    expect(await access(unused)).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS', available: { amount: '0.00' } });
    expect(await access(unused, { amount: '0' })).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS' });
    const spent = await newCustomer();
    await grant(spent, '2');
    await spend(spent, 2);
    expect(await access(spent)).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS', available: { amount: '0.00' } });
    // Read fresh: a top-up counts at once.
    await grant(spent, '0.01');
    expect(await access(spent)).toMatchObject({ allowed: true, reason: null, available: { amount: '0.01' } });
  });

  it('counts the overdraft allowance as credit', async () => {
    const c = await newCustomer();
    await server.services.ledger.setOverdraftLimit(merchant.id, c, 'USD', parseDecimalNanos('limit', '3'));
    expect(await access(c)).toMatchObject({ allowed: true, reason: null, available: { amount: '0.00' }, overdraftLimit: { amount: '3.00' } });
    expect(await access(c, { amount: '3' })).toMatchObject({ allowed: true });
    expect(await access(c, { amount: '3.000000001' })).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS' });
    // In debt up to the allowance: nothing left.
    await spend(c, 3);
    expect(await access(c)).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS', available: { amount: '-3.00' }, overdraftLimit: { amount: '3.00' } });
  });

  it('takes pending holds off what is available', async () => {
    const c = await newCustomer();
    await grant(c, '1');
    const hold = await server.services.ledger.createHold(merchant.id, SYSTEM_ACTOR, { customerId: c, currency: 'USD', amountNanos: parseDecimalNanos('amount', '0.75'), ttlSeconds: 300, idempotencyKey: randomUUID() });
    expect(await access(c)).toMatchObject({ allowed: true, available: { amount: '0.25' } });
    expect(await access(c, { amount: '0.25' })).toMatchObject({ allowed: true });
    expect(await access(c, { amount: '0.26' })).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS', available: { amount: '0.25' } });
    await server.services.ledger.createHold(merchant.id, SYSTEM_ACTOR, { customerId: c, currency: 'USD', amountNanos: parseDecimalNanos('amount', '0.25'), ttlSeconds: 300, idempotencyKey: randomUUID() });
    expect(await access(c)).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS', available: { amount: '0.00' } });
    await server.services.ledger.releaseHold(merchant.id, SYSTEM_ACTOR, hold.hold.id);
    expect(await access(c)).toMatchObject({ allowed: true, available: { amount: '0.75' } });
  });

  it('refuses an amount larger than the credit, to the atto; allows one it covers exactly', async () => {
    const c = await newCustomer();
    await grant(c, '0.01');
    expect(await access(c, { amount: '0.01' })).toMatchObject({ allowed: true, reason: null });
    expect(await access(c, { amount: '0.009999999999999999' })).toMatchObject({ allowed: true });
    expect(await access(c, { amount: '0.010000000000000001' })).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS', available: { amount: '0.01' } });
    expect(await access(c, { amount: '250' })).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS' });
  });

  it('reads the wallet of the currency asked about', async () => {
    const c = await newCustomer();
    await grant(c, '4', 'EUR');
    expect(await access(c, { currency: 'eur' })).toMatchObject({ allowed: true, currency: 'EUR', available: { amount: '4.00', currency: 'EUR' } });
    expect(await access(c)).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS', currency: 'USD' });
  });
});

describe('usageAccess: spend limit', () => {
  it("shows the limit and the month's charges, refuses once they reach it, and refuses an amount that would pass it", async () => {
    const c = await newCustomer();
    await grant(c, '100');
    await server.services.spendLimits.set(merchant.id, { customerId: c, amount: '5' });
    await spend(c, 3);
    const resetsAt = '2026-04-01T00:00:00.000Z';
    expect(await access(c)).toMatchObject({ allowed: true, reason: null, limit: { amount: '5.00', currency: 'USD' }, spentThisMonth: '3.00', resetsAt });
    // Reaching it exactly is allowed (the next call is then refused); passing it is not.
    expect(await access(c, { amount: '2' })).toMatchObject({ allowed: true, reason: null });
    expect(await access(c, { amount: '2.000000000000000001' })).toMatchObject({ allowed: false, reason: 'SPEND_LIMIT_REACHED', spentThisMonth: '3.00' });
    await spend(c, 2);
    expect(await access(c)).toMatchObject({ allowed: false, reason: 'SPEND_LIMIT_REACHED', limit: { amount: '5.00' }, spentThisMonth: '5.00', resetsAt, available: { amount: '95.00' } });
    // Raised: allowed again at once.
    await server.services.spendLimits.set(merchant.id, { customerId: c, amount: '6' });
    expect(await access(c)).toMatchObject({ allowed: true, limit: { amount: '6.00' } });
  });

  it('counts only the limit of the currency asked about', async () => {
    const c = await newCustomer();
    await grant(c, '10');
    await server.services.spendLimits.set(merchant.id, { customerId: c, amount: '1', currency: 'EUR' });
    await spend(c, 2);
    expect(await access(c)).toMatchObject({ allowed: true, ...NO_LIMIT });
    expect(await access(c, { currency: 'EUR' })).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS', limit: { amount: '1.00', currency: 'EUR' }, spentThisMonth: '0.00' });
  });

  it('tells no credit before the spend limit, as the gateway checks them', async () => {
    const c = await newCustomer();
    await grant(c, '1');
    await server.services.spendLimits.set(merchant.id, { customerId: c, amount: '1' });
    await spend(c, 1);
    expect(await access(c)).toMatchObject({ allowed: false, reason: 'INSUFFICIENT_FUNDS', spentThisMonth: '1.00' });
  });
});

describe('usageAccess: the customer', () => {
  it('refuses an archived customer (before its credit) and a blocked one; allows it again once restored', async () => {
    const c = await newCustomer();
    await grant(c, '5');
    await server.services.customers.block(merchant.id, c, 'abuse');
    expect(await access(c)).toMatchObject({ allowed: false, reason: 'CUSTOMER_BLOCKED', available: { amount: '5.00' } });
    await server.services.customers.archive(merchant.id, c);
    expect(await access(c)).toMatchObject({ allowed: false, reason: 'CUSTOMER_ARCHIVED' });
    await server.services.customers.unarchive(merchant.id, c);
    await server.services.customers.unblock(merchant.id, c);
    expect(await access(c)).toMatchObject({ allowed: true, reason: null });
    const empty = await newCustomer();
    await server.services.customers.archive(merchant.id, empty);
    expect(await access(empty)).toMatchObject({ allowed: false, reason: 'CUSTOMER_ARCHIVED' });
  });

  it("a customer session token asks about its own customer only; a secret key never reaches another merchant's", async () => {
    const own = await newCustomer();
    const other = await newCustomer();
    await grant(own, '1');
    const { token } = await server.services.customerSessions.create(merchant.id, own);
    expect(await access(own, {}, token)).toMatchObject({ allowed: true, customerId: own });
    expect(await access(own.toUpperCase(), {}, token)).toMatchObject({ allowed: true, customerId: own });
    expect(await access(other, {}, token)).toEqual({ error: expect.objectContaining({ code: 'FORBIDDEN' }) });

    const elsewhere = await server.createMerchant('Other merchant');
    const theirs = await newCustomer(elsewhere.id);
    expect(await access(theirs)).toEqual({ error: expect.objectContaining({ code: 'NOT_FOUND' }) });
    // Their key does not reach ours either; nor does their customer's token.
    expect(await access(own, {}, elsewhere.secret)).toEqual({ error: expect.objectContaining({ code: 'NOT_FOUND' }) });
    const theirToken = (await server.services.customerSessions.create(elsewhere.id, theirs)).token;
    expect(await access(own, {}, theirToken)).toEqual({ error: expect.objectContaining({ code: 'FORBIDDEN' }) });
    expect(await access(randomUUID())).toEqual({ error: expect.objectContaining({ code: 'NOT_FOUND' }) });
    expect(await access('not-an-id')).toEqual({ error: expect.objectContaining({ code: 'NOT_FOUND' }) });
    expect((await gql(ACCESS, { c: own }, '')).errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED');
  });
});

describe('usageAccess: input', () => {
  it('refuses a negative or malformed amount and a bad currency with VALIDATION naming the field', async () => {
    const c = await newCustomer();
    await grant(c, '1');
    for (const amount of ['-0.01', 'abc', '1e3', '0.0000000000000000001']) {
      expect(await access(c, { amount })).toEqual({ error: expect.objectContaining({ code: 'VALIDATION', field: 'amount' }) });
    }
    expect(await access(c, { amount: '-0.000000000000000001' })).toEqual({ error: expect.objectContaining({ code: 'VALIDATION', field: 'amount', message: 'amount: must be zero or more' }) });
    expect(await access(c, { currency: 'XYZ' })).toEqual({ error: expect.objectContaining({ code: 'VALIDATION', field: 'currency' }) });
  });

  it('is priced as a read that sums the month: aliased a hundred times it is over the complexity limit', async () => {
    const c = await newCustomer();
    expect(FIELD_COSTS.get('usageAccess')).toBe(50);
    const aliased = (n: number) => `query ($c: ID!) { ${Array.from({ length: n }, (_, i) => `a${i}: usageAccess(customerId: $c) { allowed }`).join(' ')} }`;
    expect((await gql(aliased(90), { c })).errors).toBeUndefined();
    expect((await gql(aliased(100), { c })).errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_COMPLEX' });
  });
});

describe("the rules, shared with the gateway", () => {
  const nanos = (text: string) => parseDecimalNanos('x', text);
  it('credit: some must be left, and at least the amount', () => {
    expect(creditCovers({ available: 1n, overdraftLimit: 0n })).toBe(true);
    expect(creditCovers({ available: 0n, overdraftLimit: 0n })).toBe(false);
    expect(creditCovers({ available: -5n, overdraftLimit: 5n })).toBe(false);
    expect(creditCovers({ available: -5n, overdraftLimit: 6n })).toBe(true);
    expect(creditCovers({ available: 0n, overdraftLimit: 0n }, 0n)).toBe(false);
    expect(creditCovers({ available: nanos('1'), overdraftLimit: 0n }, nanos('1') * ATTOS_PER_NANO)).toBe(true);
    expect(creditCovers({ available: nanos('1'), overdraftLimit: 0n }, nanos('1') * ATTOS_PER_NANO + 1n)).toBe(false);
  });
  it('spend limit: not reached, and not passed by the amount', () => {
    const limit = nanos('5');
    const at = (text: string) => nanos(text) * ATTOS_PER_NANO;
    expect(spendLimitAllows(limit, at('4.99'))).toBe(true);
    expect(spendLimitAllows(limit, at('5'))).toBe(false);
    expect(spendLimitAllows(limit, at('4'), at('1'))).toBe(true);
    expect(spendLimitAllows(limit, at('4'), at('1') + 1n)).toBe(false);
  });
  it('customer: archived is told before blocked', () => {
    expect(customerRefusal({ archived: true, blocked: true })).toBe('CUSTOMER_ARCHIVED');
    expect(customerRefusal({ archived: false, blocked: true })).toBe('CUSTOMER_BLOCKED');
    expect(customerRefusal({ archived: false, blocked: false })).toBeNull();
  });
});
