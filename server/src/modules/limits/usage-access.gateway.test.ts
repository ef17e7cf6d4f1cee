/**
 * usageAccess and the gateway decide by the same rules: for each state a customer can be in, the
 * gateway lets the call through exactly when usageAccess allows it, and refuses it with the
 * code usageAccess names as its reason.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callGateway, gatewayTenant, recordingProvider, type GatewayTenant, type RecordingProvider } from '../../../test/gateway-harness.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';

let server: TestServer;
let provider: RecordingProvider;

beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' });
  provider = await recordingProvider();
  provider.handler = (_req, _body, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"object":"list","data":[]}');
  };
});
afterAll(async () => {
  await Promise.all([server?.close(), provider?.server.close()]);
});

/** Charges the customer `amount` USD this month through usage (a FLAT rule of 1 per unit of meter q). */
async function spend(t: GatewayTenant, amount: number) {
  await server.services.meters.create(t.merchantId, { key: 'q', name: 'Units', unit: 'unit', source: 'QUANTITY' });
  await server.services.priceRules.put(t.merchantId, { name: 'q flat', type: 'FLAT', meterKey: 'q', config: { unitPrice: '1' }, effectiveFrom: new Date('2024-01-01T00:00:00Z') });
  const [result] = await server.services.usage.record(t.merchantId, SYSTEM_ACTOR, [{ customer: t.customerId, idempotencyKey: randomUUID(), quantities: { q: amount } }]);
  expect(result).toMatchObject({ ok: true });
}

const STATES: { name: string; credit: string; setup?: (t: GatewayTenant) => Promise<unknown>; reason: string | null }[] = [
  { name: 'with credit', credit: '10', reason: null },
  { name: 'with nothing', credit: '0', reason: 'INSUFFICIENT_FUNDS' },
  { name: 'with nothing but an overdraft allowance', credit: '0', setup: (t) => server.services.ledger.setOverdraftLimit(t.merchantId, t.customerId, 'USD', parseDecimalNanos('limit', '1')), reason: null },
  {
    name: 'with all its credit held',
    credit: '1',
    setup: (t) => server.services.ledger.createHold(t.merchantId, SYSTEM_ACTOR, { customerId: t.customerId, currency: 'USD', amountNanos: parseDecimalNanos('amount', '1'), ttlSeconds: 300, idempotencyKey: randomUUID() }),
    reason: 'INSUFFICIENT_FUNDS',
  },
  { name: 'archived', credit: '10', setup: (t) => server.services.customers.archive(t.merchantId, t.customerId), reason: 'CUSTOMER_ARCHIVED' },
  { name: 'archived with nothing', credit: '0', setup: (t) => server.services.customers.archive(t.merchantId, t.customerId), reason: 'CUSTOMER_ARCHIVED' },
  { name: 'blocked', credit: '10', setup: (t) => server.services.customers.block(t.merchantId, t.customerId, null), reason: 'CUSTOMER_BLOCKED' },
  {
    name: 'at its spend limit',
    credit: '10',
    setup: async (t) => {
      await server.services.spendLimits.set(t.merchantId, { customerId: t.customerId, amount: '2' });
      await spend(t, 2);
    },
    reason: 'SPEND_LIMIT_REACHED',
  },
  {
    name: 'under its spend limit',
    credit: '10',
    setup: async (t) => {
      await server.services.spendLimits.set(t.merchantId, { customerId: t.customerId, amount: '2' });
      await spend(t, 1);
    },
    reason: null,
  },
  {
    name: 'at its spend limit with nothing left',
    credit: '2',
    setup: async (t) => {
      await server.services.spendLimits.set(t.merchantId, { customerId: t.customerId, amount: '2' });
      await spend(t, 2);
    },
    reason: 'INSUFFICIENT_FUNDS',
  },
];

const STATUS: Record<string, number> = { CUSTOMER_ARCHIVED: 403, CUSTOMER_BLOCKED: 403, INSUFFICIENT_FUNDS: 402, SPEND_LIMIT_REACHED: 429 };

describe('usageAccess and the gateway', () => {
  for (const state of STATES) {
    it(`agree on a customer ${state.name}: ${state.reason ?? 'allowed'}`, async () => {
      const t = await gatewayTenant(server, provider.server.host, { credit: state.credit });
      await state.setup?.(t);
      const access = await server.graphql<{ usageAccess: { allowed: boolean; reason: string | null } }>(
        'query ($c: ID!) { usageAccess(customerId: $c) { allowed reason } }', { c: t.customerId }, t.secret,
      );
      expect(access.data?.usageAccess).toEqual({ allowed: state.reason === null, reason: state.reason });
      const answer = await callGateway(server, t, `http://${provider.server.host}/v1/models`, { method: 'GET' });
      if (state.reason === null) expect(answer.status).toBe(200);
      else expect({ status: answer.status, code: (JSON.parse(answer.body) as { error: { code: string } }).error.code }).toEqual({ status: STATUS[state.reason], code: state.reason });
    });
  }
});
