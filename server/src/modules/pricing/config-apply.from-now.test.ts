import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { applyPricingChanges, planPricingConfig } from './config-apply.ts';

/** Pricing as code stays idempotent while usage is stamped ahead (its "from now" is moved past that usage). */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

async function merchantWithUsageAhead() {
  const { services } = server;
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  await services.meters.create(merchant.id, { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' });
  const customer = await services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '1000'), kind: 'PAID', idempotencyKey: 'seed' });
  // A client whose clock runs two minutes ahead.
  const [result] = await services.usage.record(merchant.id, SYSTEM_ACTOR, [
    { customer: customer.id, idempotencyKey: randomUUID(), usage: { provider: 'custom', model: 'm', outputTokens: 1 }, timestamp: new Date(Date.now() + 120_000) },
  ]);
  expect(result!.ok).toBe(true);
  return merchant;
}

describe('applying the same pricing file again while usage is stamped ahead', () => {
  it('finds no changes for its rules', async () => {
    const merchant = await merchantWithUsageAhead();
    const file = { priceRules: [{ name: 'out', type: 'FLAT' as const, meterKey: 'out', config: { unitPrice: '2' } }] };
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file));
    expect(await planPricingConfig(server.services, merchant.id, file)).toEqual([]);
  });

  it('finds no changes for its provider prices', async () => {
    const merchant = await merchantWithUsageAhead();
    const file = { providerPrices: [{ provider: 'custom', model: 'm', perMillionTokens: { input: '0', output: '2' } }] };
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file));
    expect(await planPricingConfig(server.services, merchant.id, file)).toEqual([]);
  });
});
