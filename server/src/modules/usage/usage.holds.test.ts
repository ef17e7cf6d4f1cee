import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import type { UsageResult } from './usage.service.ts';

/**
 * Usage that settles a hold (the gateway's reservation for a call, released in the batch that
 * charges the call): credit kept for the hold past its expiry pays for that usage, as a capture.
 */
let now = new Date('2026-03-01T12:00:00Z');
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

async function setup() {
  const { services } = server;
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  // One output token costs 1.00.
  await services.meters.create(merchant.id, { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
  await services.priceRules.put(merchant.id, { name: 'out', type: 'FLAT', meterKey: 'out', config: { unitPrice: '1' }, effectiveFrom: new Date('2024-01-01T00:00:00Z') });
  const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  // 5.00 of promotional credit expiring in an hour, 4.00 of it reserved for two hours.
  await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, {
    customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '5'), kind: 'PROMOTIONAL',
    expiresAt: new Date(now.getTime() + 3600_000), idempotencyKey: randomUUID(),
  });
  const { hold } = await services.ledger.createHold(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '4'), ttlSeconds: 7200, idempotencyKey: randomUUID() });
  now = new Date(now.getTime() + 3600_000 + 1000);
  const event = (outputTokens: number, holdId: string | null = null) => ({
    customer: customer.id, idempotencyKey: randomUUID(), usage: { provider: 'custom', model: 'm', outputTokens }, ...(holdId ? { holdId } : {}),
  });
  const record = async (...events: ReturnType<typeof event>[]) =>
    (await services.usage.record(merchant.id, SYSTEM_ACTOR, events)).map((r: UsageResult) => (r.ok ? [r.event.status, r.event.charge] : r.error.code));
  const wallet = () => services.ledgerQueries.wallet(merchant.id, customer.id, 'USD');
  const integrity = async () => expect((await services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);
  const storedBalance = async () =>
    (await services.db.withConnection((sql) => sql.query<{ balance: string }>(`SELECT balance::text AS balance FROM wallets WHERE customer_id = $1`, [customer.id])))[0]!.balance;
  return { hold, event, record, wallet, integrity, storedBalance, merchantId: merchant.id, customerId: customer.id };
}

describe('usage settling a hold whose credit expired meanwhile', () => {
  it('is paid from what was kept for the hold; what it leaves expires', async () => {
    const t = await setup();
    expect(await t.wallet()).toMatchObject({ balance: parseDecimalNanos('amount', '4'), held: parseDecimalNanos('amount', '4') });
    expect(await t.record(t.event(3, t.hold.id))).toEqual([['CHARGED', '3.00']]);
    // Expired by the batch that charged it, not left for the next reader to find.
    expect(await t.storedBalance()).toBe('0');
    expect(await t.wallet()).toMatchObject({ balance: 0n, held: 0n, available: 0n });
    await t.integrity();
  });

  it('is released in the name of whoever reported the usage', async () => {
    const t = await setup();
    const reporter = { kind: 'api_key' as const, apiKeyId: randomUUID() };
    await server.services.usage.record(t.merchantId, reporter, [t.event(1, t.hold.id)]);
    expect(await server.services.ledger.getHold(t.merchantId, t.hold.id)).toMatchObject({ status: 'RELEASED', createdBy: SYSTEM_ACTOR, finalizedAt: now, finalizedBy: reporter });
  });

  it('pays no more than was kept: the rest is a shortfall when nothing else is left', async () => {
    const t = await setup();
    expect(await t.record(t.event(6, t.hold.id))).toEqual([['PARTIALLY_CHARGED', '4.00']]);
    expect(await t.wallet()).toMatchObject({ balance: 0n, held: 0n });
    await t.integrity();
  });

  it('pays its usage in a wallet that owes beside it, as the hold\'s capture would, adding no debt', async () => {
    const t = await setup();
    await server.services.ledger.adjustBalance(t.merchantId, SYSTEM_ACTOR, { customerId: t.customerId, currency: 'USD', amountNanos: -parseDecimalNanos('amount', '1'), reason: 'fix', idempotencyKey: randomUUID() });
    expect(await t.record(t.event(4, t.hold.id))).toEqual([['CHARGED', '4.00']]);
    expect(await t.wallet()).toMatchObject({ balance: -parseDecimalNanos('amount', '1'), held: 0n });
    await t.integrity();
  });

  it('is spent by that hold’s usage alone, not by other usage in the same batch', async () => {
    const t = await setup();
    expect(await t.record(t.event(2), t.event(1, t.hold.id), t.event(2))).toEqual([['UNCHARGED', '0.00'], ['CHARGED', '1.00'], ['UNCHARGED', '0.00']]);
    expect(await t.wallet()).toMatchObject({ balance: 0n, held: 0n });
    await t.integrity();
  });
});
