/**
 * bench/ingest: usage events per second through POST /v1/usage/batch on PostgreSQL, with
 * durability (a 200 means committed), next to a baseline of raw batched INSERTs of the same
 * rows with `pg` in the same run. Prints figures; asserts nothing but the ledger invariants.
 *
 *   npm run bench:ingest     (BENCH_DATABASE_URL defaults to the local server)
 */
import pg from 'pg';
import { withFreshDatabase } from '../shared.ts';
import { createApp } from '../../server/src/app.ts';
import { loadConfig } from '../../server/src/config.ts';
import { openRuntime } from '../../server/src/runtime.ts';
import { createLogger } from '../../server/src/shared/logger.ts';
import { NANOS_PER_UNIT } from '../../server/src/shared/money.ts';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 50_000);
const BATCH = Number(process.env.BENCH_BATCH ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 200);


/** `CONCURRENCY` senders share the batches; returns events per second. */
async function drive(send: (batchIndex: number) => Promise<void>): Promise<number> {
  const batches = Math.ceil(EVENTS / BATCH);
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (;;) {
        const index = next++;
        if (index >= batches) return;
        await send(index);
      }
    }),
  );
  return EVENTS / ((performance.now() - started) / 1000);
}

const usageOf = (i: number) => ({ provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000 + (i % 500), cachedInputTokens: 200, outputTokens: 300 + (i % 100) });

async function baseline(url: string): Promise<number> {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  pool.on('error', () => undefined);
  await pool.query(`CREATE TABLE bench_usage (id bigint PRIMARY KEY, customer int NOT NULL, idempotency_key text NOT NULL UNIQUE, provider text, model text,
    input_tokens int, cached_input_tokens int, output_tokens int, occurred_at timestamptz NOT NULL, metadata jsonb NOT NULL)`);
  const rate = await drive(async (batchIndex) => {
    const ids: number[] = [];
    for (let i = batchIndex * BATCH; i < Math.min(EVENTS, (batchIndex + 1) * BATCH); i++) ids.push(i);
    await pool.query(
      `INSERT INTO bench_usage SELECT u.id, u.id % $2, 'k' || u.id, 'openai', 'gpt-5.4-mini', 1000 + u.id % 500, 200, 300 + u.id % 100, now(), '{}'
       FROM unnest($1::bigint[]) AS u(id)`,
      [ids, CUSTOMERS],
    );
  });
  await pool.end();
  return rate;
}

async function tollgate(url: string): Promise<{ rate: number; violations: number; charged: number }> {
  const config = loadConfig({ DATABASE_URL: url, TOLLGATE_MASTER_KEY: '0'.repeat(64), NODE_ENV: 'test', LOG_LEVEL: 'warn', TOLLGATE_MAX_QUERY_COMPLEXITY: '100000' });
  const runtime = await openRuntime(config, createLogger('warn'));
  const app = await createApp(runtime.services);
  const { url: base } = await app.listen(0, '127.0.0.1');
  const { services } = runtime;
  try {
    const { merchant, key } = await services.merchants.create({ name: 'bench' });
    const customers: string[] = [];
    for (let i = 0; i < CUSTOMERS; i++) {
      const customer = await services.customers.create(merchant.id, { externalId: `bench-${i}` });
      await services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, {
        customerId: customer.id, currency: 'USD', amountNanos: 1_000_000n * NANOS_PER_UNIT, kind: 'PAID', idempotencyKey: `seed-${i}`,
      });
      customers.push(customer.externalId);
    }
    let charged = 0;
    const rate = await drive(async (batchIndex) => {
      const events = [];
      for (let i = batchIndex * BATCH; i < Math.min(EVENTS, (batchIndex + 1) * BATCH); i++) {
        events.push({ customer: customers[i % CUSTOMERS], idempotencyKey: `e-${i}`, usage: usageOf(i) });
      }
      const response = await fetch(`${base}/v1/usage/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key.secret}` },
        body: JSON.stringify({ events }),
      });
      if (response.status !== 200) throw new Error(`batch ${batchIndex}: HTTP ${response.status} ${await response.text()}`);
      const body = (await response.json()) as { summary: { ok: number } };
      charged += body.summary.ok;
    });
    const report = await services.ledgerQueries.integrity(merchant.id);
    return { rate, violations: report.violations.length, charged };
  } finally {
    await app.close();
    await runtime.close();
  }
}

console.log(`bench/ingest on PostgreSQL: ${EVENTS} events in batches of ${BATCH}, ${CONCURRENCY} concurrent senders, ${CUSTOMERS} customers\n`);
const base = await withFreshDatabase(baseline);
const ours = await withFreshDatabase(tollgate);
console.log(`  baseline (raw batched INSERT)      ${base.toFixed(0).padStart(8)} events/s`);
console.log(`  tollgate POST /v1/usage/batch      ${ours.rate.toFixed(0).padStart(8)} events/s   (normalize, cost, price, ledger debit, event row, period totals)`);
console.log(`  ratio ${(ours.rate / base).toFixed(2)} of the baseline; events accepted: ${ours.charged}/${EVENTS}; invariant violations: ${ours.violations}`);
