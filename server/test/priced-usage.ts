import { randomUUID } from 'node:crypto';
import { SYSTEM_ACTOR } from '../src/modules/ledger/ledger.store.ts';
import type { UsageResult } from '../src/modules/usage/usage.service.ts';
import { parseDecimalNanos } from '../src/shared/money.ts';
import type { TestServer } from './server.ts';

/** A time long before any test's usage, for first versions of rules and prices. */
export const SINCE = new Date('2024-01-01T00:00:00Z');
/** `ms` after `time`. */
export const later = (time: Date, ms: number) => new Date(time.getTime() + ms);

/**
 * A merchant with an output-token meter ('out') and a customer holding 1,000 USD, for tests of
 * how usage is priced and when pricing changes take effect: `event` builds a usage record of the custom provider's model
 * 'm' (or another), `record` records some and answers each one's charge (or error code).
 */
export async function pricedUsageSetup(server: TestServer) {
  const { services } = server;
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  await services.meters.create(merchant.id, { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
  const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '1000'), kind: 'PAID', idempotencyKey: 'seed' });
  const event = (outputTokens: number, timestamp: Date | null, model = 'm', provider = 'custom') =>
    ({ customer: customer.id, idempotencyKey: randomUUID(), usage: { provider, model, outputTokens }, timestamp });
  const record = async (...events: ReturnType<typeof event>[]) =>
    (await services.usage.record(merchant.id, SYSTEM_ACTOR, events)).map((r: UsageResult) => (r.ok ? r.event.charge : r.error.code));
  return { merchant, customer, event, record };
}

/**
 * A merchant and a customer holding `credit` USD, for tests of usage sent over HTTP: `post` sends
 * a body with the merchant's secret key and answers its status and JSON, `stored` lists the keys
 * of the events recorded, `balance` a customer's USD balance in nanos.
 */
export async function httpUsageSetup(server: TestServer, credit = '10.00') {
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  const customer = await server.services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  await server.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, {
    customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', credit), kind: 'PAID', idempotencyKey: 'seed',
  });
  const post = async (path: string, body: unknown) => {
    const response = await fetch(`${server.url}${path}`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` }, body: JSON.stringify(body),
    });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the tests read answers of many shapes
    return { status: response.status, body: (await response.json()) as any };
  };
  const stored = async () =>
    (await server.services.prisma.usageEvent.findMany({ where: { merchantId: merchant.id }, select: { idempotencyKey: true } })).map((row) => row.idempotencyKey).sort();
  const balance = async (customerId = customer.id) => (await server.services.ledgerQueries.wallet(merchant.id, customerId, 'USD')).balance;
  return { merchant, customer, post, stored, balance };
}
