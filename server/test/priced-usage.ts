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
 * when pricing changes take effect: `event` builds a usage record of the custom provider's model
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
