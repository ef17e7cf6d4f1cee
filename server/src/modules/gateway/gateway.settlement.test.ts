import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { laneOf } from '../../shared/lanes.ts';
import { createLogger } from '../../shared/logger.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { CUSTOMER_LANES, type UsageService } from '../usage/usage.service.ts';
import { GatewaySettlement, isConnectionError, replayable, type GatewayRequestLog } from './gateway.settlement.ts';

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

  /** The server's usage service, failing as an unreachable database does while `down()` answers true. */
  function unreachableWhile(down: () => boolean, connecting: Promise<void> = Promise.resolve()): UsageService {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED', errno: -111, syscall: 'connect' });
    const real = server.services.usage;
    const record = async (...args: Parameters<UsageService['record']>) => {
      await connecting;
      if (down()) throw refused;
      return real.record(...args);
    };
    return new Proxy(real, { get: (target, name) => (name === 'record' ? record : Reflect.get(target, name, target)) });
  }

  async function customerOf(merchantId: string) {
    const { id } = await server.services.customers.create(merchantId, { externalId: `c-${randomUUID()}` });
    await server.services.ledger.grantCredits(merchantId, SYSTEM_ACTOR, { customerId: id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '5.00'), kind: 'PAID', idempotencyKey: 'seed' });
    return id;
  }
  const usageFor = (customer: string, log: GatewayRequestLog) => ({ customer, idempotencyKey: `gateway:${log.id}`, usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 } });

  it('keeps retrying, past its limited attempts, while the database is unreachable, and charges once it is back', async () => {
    const merchant = await server.createMerchant();
    const customer = await customerOf(merchant.id);
    let failures = 0;
    const usage = unreachableWhile(() => failures++ < 12);
    const settlement = new GatewaySettlement(server.services.db, usage, server.services.ledger, createLogger('silent'), { baseBackoffMs: 1, maxBackoffMs: 5 });
    const log = logOf(merchant.id, customer);
    settlement.enqueue(merchant.id, SYSTEM_ACTOR, usageFor(customer, log), log);
    await settlement.drain();
    const [row] = await server.services.prisma.gatewayRequest.findMany({ where: { id: log.id } });
    expect({ failures, charged: row?.usageEventId != null }).toEqual({ failures: 13, charged: true });
  });

  it('logs with its usage record what it gives up on: past the queue bound, and at shutdown with the database still away', async () => {
    const merchant = await server.createMerchant();
    const customer = await customerOf(merchant.id);
    const logger = createLogger('silent');
    const errors = vi.spyOn(logger, 'error');
    let connected!: () => void;
    const connecting = new Promise<void>((resolve) => (connected = resolve));
    const settlement = new GatewaySettlement(server.services.db, unreachableWhile(() => true, connecting), server.services.ledger, logger, { baseBackoffMs: 1, maxBackoffMs: 5, maxQueued: 2 });
    const logs = [0, 1, 2].map(() => logOf(merchant.id, customer));
    // The first is taken into a batch (its connection still being tried): two wait behind it, and the fourth finds the queue full.
    settlement.enqueue(merchant.id, SYSTEM_ACTOR, usageFor(customer, logs[0]!), logs[0]!);
    await new Promise((resolve) => setTimeout(resolve, 50));
    for (const log of [...logs.slice(1), logOf(merchant.id, customer)]) settlement.enqueue(merchant.id, SYSTEM_ACTOR, usageFor(customer, log), log);
    connected();
    const started = Date.now();
    await settlement.close(200);
    const given = errors.mock.calls.filter(([, message]) => String(message).startsWith('gateway call not charged'));
    expect(given.map(([fields, message]) => [(fields as { usage: { idempotencyKey: string } }).usage.idempotencyKey, String(message).split(':')[1]!.trim()])).toEqual([
      [expect.stringMatching(/^gateway:/), 'the settlement queue is full (the database has been failing for long)'],
      ...logs.map((log) => [`gateway:${log.id}`, 'the database was still unreachable at shutdown']),
    ]);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('logs a call given up on as POST /v1/usage takes it, the provider\'s response included (the gateway\'s own fields left out)', () => {
    const response = { url: 'https://api.openai.com/v1/chat/completions', status: 200, headers: {}, body: '{"usage":{"prompt_tokens":10}}' };
    const record = replayable({ customer: 'c', idempotencyKey: 'gateway:1', response, normalized: { provider: 'openai' } as never, holdId: 'h' });
    expect(record).toEqual({ customer: 'c', idempotencyKey: 'gateway:1', response });
  });

  it('at shutdown with the database unreachable, gives up on every call still queued at once, not a batch per connect timeout', async () => {
    const merchant = await server.createMerchant();
    const customer = await customerOf(merchant.id);
    // pg's connect timeout, 30 s in production.
    const connectTimeoutMs = 1000;
    const usage = new Proxy(server.services.usage, {
      get: (target, name) =>
        name === 'record'
          ? async () => {
              await new Promise((resolve) => setTimeout(resolve, connectTimeoutMs));
              throw new Error('timeout exceeded when trying to connect');
            }
          : Reflect.get(target, name, target),
    });
    const logger = createLogger('silent');
    const errors = vi.spyOn(logger, 'error');
    const settlement = new GatewaySettlement(server.services.db, usage, server.services.ledger, logger);
    for (let i = 0; i < 1501; i++) {
      const log = logOf(merchant.id, customer);
      settlement.enqueue(merchant.id, SYSTEM_ACTOR, usageFor(customer, log), log);
    }
    const started = Date.now();
    await settlement.close(100);
    const elapsed = Date.now() - started;
    expect(errors.mock.calls.filter(([, message]) => String(message).startsWith('gateway call not charged'))).toHaveLength(1501);
    expect(elapsed).toBeLessThan(connectTimeoutMs + 1000);
  });

  it("one merchant's charge failing every time costs no other merchant its charges or its log rows", async () => {
    const [failing, healthy] = [await server.createMerchant(), await server.createMerchant()];
    const [failingCustomer, healthyCustomer] = [await customerOf(failing.id), await customerOf(healthy.id)];
    // The failing merchant's usage fails as an error the database answers would (a statement
    // timeout on a pathological wallet, say): neither a lost connection nor bad data.
    const real = server.services.usage;
    const record = async (...args: Parameters<UsageService['record']>) => {
      if (args[0] === failing.id) throw Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' });
      return real.record(...args);
    };
    const usage = new Proxy(real, { get: (target, name) => (name === 'record' ? record : Reflect.get(target, name, target)) });
    const logger = createLogger('silent');
    const errors = vi.spyOn(logger, 'error');
    const settlement = new GatewaySettlement(server.services.db, usage, server.services.ledger, logger, { baseBackoffMs: 1, maxBackoffMs: 5 });
    const failingLog = logOf(failing.id, failingCustomer);
    const healthyLog = logOf(healthy.id, healthyCustomer);
    // Both in one batch, the failing merchant's call first.
    settlement.enqueue(failing.id, SYSTEM_ACTOR, usageFor(failingCustomer, failingLog), failingLog);
    settlement.enqueue(healthy.id, SYSTEM_ACTOR, usageFor(healthyCustomer, healthyLog), healthyLog);
    await settlement.drain();
    const events = await server.services.prisma.usageEvent.findMany({ where: { merchantId: { in: [failing.id, healthy.id] } } });
    expect(events.map((event) => [event.merchantId, event.status])).toEqual([[healthy.id, 'CHARGED']]);
    const rows = await server.services.prisma.gatewayRequest.findMany({ where: { id: { in: [failingLog.id, healthyLog.id] } } });
    expect(new Map(rows.map((row) => [row.id, row.usageEventId]))).toEqual(new Map([[failingLog.id, null], [healthyLog.id, events[0]!.id]]));
    // Only the failing merchant's call is given up on, with its usage record to replay.
    const given = errors.mock.calls.filter(([, message]) => String(message).startsWith('gateway call not charged'));
    expect(given.map(([fields]) => (fields as { requestId: string }).requestId)).toEqual([failingLog.id]);
  });

  it('tells a database out of reach from an error it answered', () => {
    const cases: [unknown, boolean][] = [
      [Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }), true],
      [new Error('Connection terminated unexpectedly'), true],
      [new Error('timeout exceeded when trying to connect'), true],
      [Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }), true],
      [Object.assign(new Error('the database system is starting up'), { code: '57P03' }), true],
      [Object.assign(new Error('Prisma'), { code: 'P1001' }), true],
      [Object.assign(new Error('Prisma'), { code: 'P2010', meta: { driverAdapterError: { cause: { kind: 'postgres', originalCode: '08006' } } } }), true],
      [Object.assign(new AggregateError([Object.assign(new Error('a'), { code: 'ECONNREFUSED' })]), {}), true],
      [new Error('PGlite is closed'), false],
      [Object.assign(new Error('disk full (test)'), { code: 'P0001' }), false],
      [Object.assign(new Error('deadlock'), { code: '40P01' }), false],
    ];
    expect(cases.map(([error]) => isConnectionError(error))).toEqual(cases.map(([, expected]) => expected));
  });
});
