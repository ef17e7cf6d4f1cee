import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { laneOf } from '../../shared/lanes.ts';
import { createLogger } from '../../shared/logger.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { CUSTOMER_LANES } from '../usage/usage.service.ts';
import { GatewaySettlement, type GatewayRequestLog } from './gateway.settlement.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const sql = (text: string) => server.services.db.withConnection((connection) => connection.exec(text));

function logOf(merchantId: string, customerId: string): GatewayRequestLog {
  return {
    id: randomUUID(), merchantId, customerId, provider: 'openai', method: 'POST', host: 'api.openai.com', path: '/v1/chat/completions',
    status: 200, outcome: 'COMPLETED', errorCode: null, streamed: false, latencyMs: 12, ttfbMs: null, createdAt: new Date(),
  };
}

describe('gateway settlement', () => {
  it('charges on a later round, once, a call whose usage was answered "not recorded, retryable" while the rest of its batch was recorded', async () => {
    const merchant = await server.createMerchant();
    // Two customers in different charge lanes: their usage goes in separate parts of one batch.
    const customers: string[] = [];
    for (let i = 0; customers.length < 2; i++) {
      const { id } = await server.services.customers.create(merchant.id, { externalId: `settle-${i}` });
      if (customers.length === 1 && laneOf(id, CUSTOMER_LANES) === laneOf(customers[0]!, CUSTOMER_LANES)) continue;
      await server.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, {
        customerId: id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '5.00'), kind: 'PAID', idempotencyKey: `seed-${i}`,
      });
      customers.push(id);
    }
    const refused = customers[0]!;
    const logger = createLogger('silent');
    const warnings = vi.spyOn(logger, 'warn');
    const settlement = new GatewaySettlement(server.services.db, server.services.usage, server.services.ledger, logger);
    // The database refuses the first customer's usage row twice (the usage service tries that part
    // twice itself, then answers it retryable), and takes it the third time.
    await sql(`CREATE SEQUENCE refuse_settle_test;
      CREATE FUNCTION refuse_settle_test() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
        IF NEW.customer_id = '${refused}' AND nextval('refuse_settle_test') <= 2 THEN RAISE EXCEPTION 'disk full (test)'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER refuse_settle_test BEFORE INSERT ON usage_events FOR EACH ROW EXECUTE FUNCTION refuse_settle_test()`);
    const logs = customers.map((customerId) => logOf(merchant.id, customerId));
    try {
      customers.forEach((customerId, i) => {
        const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 };
        settlement.enqueue(merchant.id, SYSTEM_ACTOR, { customer: customerId, idempotencyKey: `call-${logs[i]!.id}`, usage }, logs[i]!);
      });
      await settlement.drain();
    } finally {
      await sql('DROP TRIGGER refuse_settle_test ON usage_events; DROP FUNCTION refuse_settle_test(); DROP SEQUENCE refuse_settle_test');
    }
    expect(warnings.mock.calls.map(([, message]) => message)).toEqual(['gateway usage not recorded; retrying it']);
    const events = await server.services.prisma.usageEvent.findMany({ where: { merchantId: merchant.id }, orderBy: { customerId: 'asc' } });
    expect(events.map((event) => [event.customerId, event.status]).sort()).toEqual(customers.map((id) => [id, 'CHARGED']).sort());
    // Each call logged once, with the usage event that charged it.
    const rows = await server.services.prisma.gatewayRequest.findMany({ where: { merchantId: merchant.id } });
    expect(new Map(rows.map((row) => [row.id, row.usageEventId]))).toEqual(new Map(logs.map((log) => [log.id, events.find((event) => event.customerId === log.customerId)!.id])));
    const balances = await Promise.all(customers.map(async (id) => (await server.services.ledgerQueries.wallet(merchant.id, id, 'USD')).balance));
    expect(balances[0]).toBe(balances[1]);
    expect(balances[0]).toBeLessThan(parseDecimalNanos('x', '5.00'));
    expect((await server.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);
  });
});
