import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pricedUsageSetup } from '../../../test/priced-usage.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import type { UsageResult } from './usage.service.ts';

/**
 * A MARKUP rule prices a provider cost, which is known in USD only: an event whose cost is unknown
 * is charged no more than the markup's fee per request, and an event in another currency is not
 * priced by a markup at all (rules carry no currency, so a dollar fee would be taken as euros).
 */
const now = new Date('2026-06-15T12:00:00Z');
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

/** A merchant with the markup rule, and a customer holding 1,000 USD and 1,000 EUR. */
async function setup(markup: Record<string, unknown>) {
  const { services } = server;
  const { merchant, customer } = await pricedUsageSetup(server);
  await services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: markup, effectiveFrom: new Date('2026-01-01T00:00:00Z') });
  await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'EUR', amountNanos: parseDecimalNanos('amount', '1000'), kind: 'PAID', idempotencyKey: 'seed-EUR' });
  const record = async (usage: Record<string, unknown>, currency = 'USD') => {
    const [result] = await services.usage.record(merchant.id, SYSTEM_ACTOR, [{ customer: customer.id, idempotencyKey: randomUUID(), usage, currency }]);
    const { event, unpriced } = result as Extract<UsageResult, { ok: true }>;
    return { status: event.status, charge: event.charge, cost: event.cost, lines: event.chargeLines.length, costProblem: event.costProblem !== null, unpriced: unpriced ?? false };
  };
  return { merchant, customer, record };
}

const MARKUP = { percent: '25', feePerRequest: '0.001', minimumCharge: '0.50' };

describe('a MARKUP rule on an event of unknown cost', () => {
  it('charges only its fee per request, not its minimum charge', async () => {
    const t = await setup(MARKUP);
    expect(await t.record({ provider: 'openai', model: 'no-such-model', outputTokens: 1000 })).toEqual({ status: 'CHARGED', charge: '0.001', cost: '0.00', lines: 1, costProblem: true, unpriced: true });
    expect(await t.record({ provider: 'openai', model: 'no-such-model', outputTokens: 1000, requests: 3 })).toMatchObject({ charge: '0.003' });
    // A known cost is still floored by the minimum.
    expect(await t.record({ provider: 'openai', model: 'gpt-5.4-mini', outputTokens: 1000 })).toMatchObject({ status: 'CHARGED', charge: '0.50', costProblem: false });
  });

  it('with no fee per request, records it free', async () => {
    const t = await setup({ percent: '25', minimumCharge: '0.50' });
    expect(await t.record({ provider: 'openai', model: 'no-such-model', outputTokens: 1000 })).toMatchObject({ status: 'NOT_BILLABLE', charge: '0.00', unpriced: true });
  });
});

describe('a MARKUP rule on an event in another currency than USD', () => {
  it('does not price it: neither its fee nor its minimum is charged in euros', async () => {
    const t = await setup(MARKUP);
    expect(await t.record({ provider: 'openai', model: 'gpt-5.4-mini', outputTokens: 1000 }, 'EUR')).toEqual({ status: 'NOT_BILLABLE', charge: '0.00', cost: '0.00', lines: 0, costProblem: true, unpriced: true });
    // Nor an event with nothing a provider price costs (no cost problem to report).
    expect(await t.record({ provider: 'openai', model: 'gpt-5.4-mini', requests: 2 }, 'EUR')).toMatchObject({ status: 'NOT_BILLABLE', charge: '0.00', lines: 0 });
  });

  it('leaves it to the rules on meters', async () => {
    const t = await setup(MARKUP);
    await server.services.priceRules.put(t.merchant.id, { name: 'out', type: 'FLAT', meterKey: 'out', config: { unitPrice: '0.001' }, effectiveFrom: new Date('2026-01-01T00:00:00Z') });
    expect(await t.record({ provider: 'openai', model: 'gpt-5.4-mini', outputTokens: 1000 }, 'EUR')).toMatchObject({ status: 'CHARGED', charge: '1.00', lines: 1 });
  });
});
