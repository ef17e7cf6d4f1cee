import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { loadConfig } from '../../config.ts';
import { openRuntime } from '../../runtime.ts';
import { createLogger } from '../../shared/logger.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { laneOf } from '../../shared/lanes.ts';
import { CUSTOMER_LANES, periodStartOf, type UsageResult } from './usage.service.ts';

/**
 * Period totals under a concurrent writer (another transaction of the same customer, e.g. a
 * batch in another currency, which holds another wallet lock): each event is still priced on
 * the total as it really was, whether that transaction updated the row or created it.
 */
let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
let runtime: Awaited<ReturnType<typeof openRuntime>>;
let other: pg.Client;
let merchantId: string;

beforeAll(async () => {
  database = await createPostgresDatabase();
  runtime = await openRuntime(loadConfig({ DATABASE_URL: database.url, NODE_ENV: 'test' }), createLogger('silent'));
  merchantId = (await runtime.services.merchants.create({ name: 'Concurrent totals' })).merchant.id;
  const services = runtime.services;
  await services.meters.create(merchantId, { key: 'peak', name: 'Peak', unit: 'stream', source: 'QUANTITY', aggregation: 'MAX' });
  await services.meters.create(merchantId, { key: 'tokens', name: 'Tokens', unit: 'token', source: 'QUANTITY' });
  const from = new Date('2026-01-01');
  await services.priceRules.put(merchantId, { name: 'peak', type: 'FLAT', meterKey: 'peak', config: { unitPrice: '1' }, effectiveFrom: from });
  await services.priceRules.put(merchantId, { name: 'tokens', type: 'GRADUATED', meterKey: 'tokens', config: { tiers: [{ upTo: '100', unitPrice: '1' }, { upTo: null, unitPrice: '0.5' }] }, effectiveFrom: from });
  other = new pg.Client({ connectionString: database.url });
  await other.connect();
}, 60_000);

afterAll(async () => {
  await other?.end();
  await runtime?.close();
  await database?.drop();
});

async function customer() {
  const created = await runtime.services.customers.create(merchantId, { externalId: randomUUID() });
  await runtime.services.ledger.grantCredits(merchantId, SYSTEM_ACTOR, { customerId: created.id, currency: 'USD', amountNanos: 1000n * 1_000_000_000n, kind: 'PAID', idempotencyKey: `seed-${created.id}` });
  return created.id;
}

/** Runs `work` while `other` holds an open transaction that did `change`, committing once `work` waits on it. */
async function whileAnotherTransaction(change: (client: pg.Client) => Promise<unknown>, work: () => Promise<UsageResult[]>): Promise<UsageResult[]> {
  await other.query('BEGIN');
  await change(other);
  const running = work();
  for (let waited = 0; ; waited += 20) {
    const { rows } = await other.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`);
    if (rows[0]!.n > 0) break;
    if (waited > 10_000) throw new Error('the usage batch never waited for the other transaction');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await other.query('COMMIT');
  return running;
}

const charges = (results: UsageResult[]) => results.map((result) => (result.ok ? result.event.charge : result.error.message));

describe('period totals under a concurrent transaction', () => {
  const at = new Date(Date.now() - 60_000);
  const period = periodStartOf(at);
  const event = (customerId: string, quantities: Record<string, number>) => ({ customer: customerId, idempotencyKey: randomUUID(), timestamp: at, quantities });
  const totals = async (customerId: string) =>
    Object.fromEntries((await runtime.services.prisma.usagePeriodTotal.findMany({ where: { customerId } })).map((row) => [row.meterKey, row.quantity.toFixed()]));

  it('a totals row the other transaction updated: priced from its committed value', async () => {
    const customerId = await customer();
    await runtime.services.usage.record(merchantId, SYSTEM_ACTOR, [event(customerId, { peak: 5, tokens: 40 })]);
    const results = await whileAnotherTransaction(
      (client) => client.query(`UPDATE usage_period_totals SET quantity = CASE meter_key WHEN 'peak' THEN 9 ELSE 100 END WHERE customer_id = $1`, [customerId]),
      () => runtime.services.usage.record(merchantId, SYSTEM_ACTOR, [event(customerId, { peak: 12, tokens: 50 }), event(customerId, { peak: 10 })]),
    );
    // peak 9 → 12 is 3 × 1; 50 tokens past the first 100 are at 0.5. The second event does not raise the peak.
    expect(charges(results)).toEqual(['28.00', '0.00']);
    expect(await totals(customerId)).toEqual({ peak: '12', tokens: '150' });
  });

  it('a totals row the other transaction created after the batch began: priced from it, not from zero', async () => {
    const customerId = await customer();
    const results = await whileAnotherTransaction(
      (client) => client.query(
        `INSERT INTO usage_period_totals (merchant_id, customer_id, currency, meter_key, period_start, price_book, rule_name, quantity)
         VALUES ($1, $2, 'USD', 'peak', $3, '', 'peak', 5), ($1, $2, 'USD', 'tokens', $3, '', 'tokens', 100)`,
        [merchantId, customerId, period],
      ),
      () => runtime.services.usage.record(merchantId, SYSTEM_ACTOR, [event(customerId, { peak: 8, tokens: 50 }), event(customerId, { peak: 9, tokens: 10 })]),
    );
    // peak 5 → 8 → 9; tokens 100 → 150 → 160, all in the second tier.
    expect(charges(results)).toEqual(['28.00', '6.00']);
    expect(await totals(customerId)).toEqual({ peak: '9', tokens: '160' });
  });
});

describe('one key, two customers in different charge lanes, at the same moment', () => {
  it('records and charges it once; the other request is answered a conflict, and nothing else moves', async () => {
    // Customers of different lanes are charged by concurrent transactions: only the unique key decides.
    const ids: string[] = [];
    while (ids.length < 2) {
      const id = await customer();
      if (ids.length === 0 || laneOf(id, CUSTOMER_LANES) !== laneOf(ids[0]!, CUSTOMER_LANES)) ids.push(id);
    }
    const wallet = (id: string) => runtime.services.ledgerQueries.wallet(merchantId, id, 'USD');
    const before = await Promise.all(ids.map(async (id) => (await wallet(id)).balance));
    for (let round = 0; round < 5; round++) {
      const key = `race-${round}-${randomUUID()}`;
      const answers = await Promise.all(
        ids.map((id) => runtime.services.usage.record(merchantId, SYSTEM_ACTOR, [{ customer: id, idempotencyKey: key, quantities: { tokens: 10 } }])),
      );
      const outcomes = answers.map(([result]) => (result!.ok ? 'charged' : result!.error.code));
      expect(outcomes.sort()).toEqual(['CONFLICT', 'charged']);
      const stored = await runtime.services.prisma.usageEvent.findMany({ where: { merchantId, idempotencyKey: key } });
      expect(stored).toHaveLength(1);
    }
    const after = await Promise.all(ids.map(async (id) => (await wallet(id)).balance));
    const events = await runtime.services.prisma.usageEvent.findMany({ where: { merchantId, customerId: { in: ids } } });
    const spent = (id: string) => events.filter((e) => e.customerId === id).reduce((sum, e) => sum + BigInt(e.chargeAttos.toFixed()), 0n) / 1_000_000_000n;
    expect(ids.map((id, i) => before[i]! - after[i]!)).toEqual(ids.map(spent));
    expect(events).toHaveLength(5);
    expect((await runtime.services.ledgerQueries.integrity(merchantId)).violations).toEqual([]);
  });
});
