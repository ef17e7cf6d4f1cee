/**
 * bench/ingest: usage events per second through POST /v1/usage/batch on PostgreSQL, with
 * durability (a 200 means committed), next to a baseline of raw batched INSERTs of the same
 * rows with `pg` in the same run. Prints figures; asserts nothing but the ledger invariants.
 * A reference server (bare-server.ts) takes the same batches with none of Tollgate's work: what
 * any Node ingest server reaches here before pricing or charging anything.
 *
 *   npm run bench:ingest     (BENCH_DATABASE_URL defaults to the local server)
 */
import pg from 'pg';
import { fileURLToPath } from 'node:url';
import { closedLoop, cpuPerUnit, measureCpu, settleDatabase, startChild, storedRows, withFreshDatabase, type Child, type CpuUse } from '../shared.ts';
import { loadConfig } from '../../server/src/config.ts';
import { openRuntime } from '../../server/src/runtime.ts';
import { createLogger } from '../../server/src/shared/logger.ts';
import { SERVER_NODE_FLAGS } from '../../server/src/node-flags.ts';
import { NANOS_PER_UNIT } from '../../server/src/shared/money.ts';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 50_000);
const BATCH = Number(process.env.BENCH_BATCH ?? 1000);
/**
 * Concurrent senders: each contender runs at every level and keeps its best rate, so each is
 * compared at its own saturation (4 senders left Tollgate's two processes a third idle here).
 */
const SENDER_LEVELS = (process.env.BENCH_CONCURRENCY ?? '4,8').split(',').map(Number);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 200);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 10_000);
/** The issue's goals: events per second on this machine, and the share of the raw-insert rate of the same rows. */
const RATE_GOAL = 20_000;
const SAME_ROWS_GOAL = 0.5;
/** When set, the server process writes a V8 CPU profile (.cpuprofile) into this folder as it stops. */
const PROFILE_DIR = process.env.BENCH_PROFILE_DIR;
const MASTER_KEY = '0'.repeat(64);
const SERVER_DIR = fileURLToPath(new URL('../../server', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** Where the bare reference server (bare-server.ts) keeps its events: usage_events' shape. */
const BARE_TABLE = 'bench_bare_usage_events';


/** `senders` share the batches of `events`; returns events per second. */
async function drive(send: (batchIndex: number) => Promise<void>, senders: number, events = EVENTS): Promise<number> {
  const { seconds } = await closedLoop(Math.ceil(events / BATCH), senders, send);
  return events / seconds;
}

/** A contender's rate at each level of senders, and its best. */
interface Swept<Extra = object> {
  best: { senders: number; rate: number } & Extra;
  rates: { senders: number; rate: number }[];
}

async function sweep<Extra extends object>(run: (senders: number) => Promise<{ rate: number } & Extra>): Promise<Swept<Extra>> {
  const runs: ({ senders: number; rate: number } & Extra)[] = [];
  for (const senders of SENDER_LEVELS) runs.push({ ...(await run(senders)), senders });
  return { best: runs.reduce((a, b) => (b.rate > a.rate ? b : a)), rates: runs.map(({ senders, rate }) => ({ senders, rate })) };
}

/** "17144 events/s" and, when more than one level ran, each level's rate. */
function rateOf(swept: Swept): string {
  const levels = swept.rates.length > 1 ? `   (best at ${swept.best.senders} senders; ${swept.rates.map((r) => `${r.senders}: ${r.rate.toFixed(0)}`).join(', ')})` : '';
  return `${swept.best.rate.toFixed(0).padStart(8)} events/s${levels}`;
}

const usageOf = (i: number) => ({ provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000 + (i % 500), cachedInputTokens: 200, outputTokens: 300 + (i % 100) });

async function baseline(url: string): Promise<Swept> {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  pool.on('error', () => undefined);
  await pool.query(`CREATE TABLE bench_usage (id bigint PRIMARY KEY, customer int NOT NULL, idempotency_key text NOT NULL UNIQUE, provider text, model text,
    input_tokens int, cached_input_tokens int, output_tokens int, occurred_at timestamptz NOT NULL, metadata jsonb NOT NULL)`);
  try {
    return await sweep(async (senders) => {
      await pool.query('TRUNCATE bench_usage');
      await settleDatabase(pool);
      const rate = await drive(async (batchIndex) => {
        const ids: number[] = [];
        for (let i = batchIndex * BATCH; i < Math.min(EVENTS, (batchIndex + 1) * BATCH); i++) ids.push(i);
        await pool.query(
          `INSERT INTO bench_usage SELECT u.id, u.id % $2, 'k' || u.id, 'openai', 'gpt-5.4-mini', 1000 + u.id % 500, 200, 300 + u.id % 100, now(), '{}'
           FROM unnest($1::bigint[]) AS u(id)`,
          [ids, CUSTOMERS],
        );
      }, senders);
      return { rate };
    });
  } finally {
    await pool.end();
  }
}

/**
 * The second baseline, literally "the same rows": the usage events Tollgate just stored, read
 * back and inserted again with `pg` in the same batches (see storedRows).
 */
async function sameRowsBaseline(url: string): Promise<Swept> {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  pool.on('error', () => undefined);
  try {
    // The rows of the first level's full-answer run: EVENTS of them, as each contender sends.
    const stored = await storedRows(pool, 'usage_events', `idempotency_key LIKE 'e${SENDER_LEVELS[0]}-%'`, 'idempotency_key');
    return await sweep(async (senders) => {
      await stored.empty(pool);
      await settleDatabase(pool);
      const { seconds } = await closedLoop(Math.ceil(stored.rows.length / BATCH), senders, (batchIndex) =>
        stored.insert(pool, stored.rows.slice(batchIndex * BATCH, (batchIndex + 1) * BATCH)),
      );
      return { rate: stored.rows.length / seconds };
    });
  } finally {
    await pool.end();
  }
}

async function queryOnce<Row extends pg.QueryResultRow>(url: string, sql: string): Promise<Row[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<Row>(sql)).rows;
  } finally {
    await client.end();
  }
}

/**
 * The server runs in its own process, as in production, so the load generator's own work
 * (building and sending batches, reading the answers) does not share its event loop.
 */
async function tollgate(url: string): Promise<{
  full: Swept<{ cpu: CpuUse }>; minimal: Swept<{ cpu: CpuUse }>; bare: Swept<{ cpu: CpuUse }>; violations: number; charged: number; logged: string[]; sameRows: Swept; bareStored: number;
}> {
  const config = loadConfig({ DATABASE_URL: url, TOLLGATE_MASTER_KEY: MASTER_KEY, NODE_ENV: 'test', LOG_LEVEL: 'warn' });
  const runtime = await openRuntime(config, createLogger('warn'));
  const { services } = runtime;
  try {
    const { merchant, key } = await services.merchants.create({ name: 'bench' });
    // A typical AI reseller's book: provider cost at list price plus 20%, and a fee per request
    // on a request meter, so every event is costed, marked up and moves a period total.
    await services.meters.create(merchant.id, { key: 'requests', name: 'Requests', unit: 'request', source: 'REQUESTS' });
    await services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '20' }, meterKey: null });
    await services.priceRules.put(merchant.id, { name: 'request fee', type: 'FLAT', config: { unitPrice: '0.0001' }, meterKey: 'requests' });
    const customers: string[] = [];
    for (let i = 0; i < CUSTOMERS; i++) {
      const customer = await services.customers.create(merchant.id, { externalId: `bench-${i}` });
      await services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, {
        customerId: customer.id, currency: 'USD', amountNanos: 1_000_000n * NANOS_PER_UNIT, kind: 'PAID', idempotencyKey: `seed-${i}`,
      });
      customers.push(customer.externalId);
    }
    const server = await startChild(
      'Tollgate server', SERVER_DIR, 'src/main.ts',
      { ...process.env, DATABASE_URL: url, TOLLGATE_MASTER_KEY: MASTER_KEY, TOLLGATE_SEED_DEMO: 'false', NODE_ENV: 'production', LOG_LEVEL: 'warn', PORT: '0', HOST: '127.0.0.1', REDIS_URL: '' },
      /GraphQL API:\s+(http:\/\/\S+)\/graphql/,
      [...SERVER_NODE_FLAGS, ...(PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`] : [])],
    );
    let charged = 0;
    /**
     * `count` adds the accepted events to `charged`; `minimal` sends `Prefer: return=minimal`, so
     * the answer lists only events needing attention (none here).
     */
    const send = (to: Child, prefix: string, total: number, { count = false, minimal = false } = {}) => async (batchIndex: number) => {
      const events = [];
      for (let i = batchIndex * BATCH; i < Math.min(total, (batchIndex + 1) * BATCH); i++) {
        events.push({ customer: customers[i % CUSTOMERS], idempotencyKey: `${prefix}-${i}`, usage: usageOf(i) });
      }
      const response = await fetch(`${to.url}/v1/usage/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key.secret}`, ...(minimal ? { prefer: 'return=minimal' } : {}) },
        body: JSON.stringify({ events }),
      });
      if (response.status !== 200) throw new Error(`batch ${batchIndex}: HTTP ${response.status} ${await response.text()}`);
      const body = (await response.json()) as { summary: { ok: number } };
      if (count) charged += body.summary.ok;
    };
    /**
     * A fresh process compiles its hot paths first (WARMUP events), then EVENTS are measured at
     * each level of senders, under keys `${prefix}${senders}-…`.
     */
    const measure = async (to: Child, prefix: string, options: { count?: boolean; minimal?: boolean } = {}) => {
      await drive(send(to, `warm-up-${prefix}`, WARMUP, { ...options, count: false }), SENDER_LEVELS[0]!, WARMUP);
      return sweep(async (senders) => {
        await settleDatabase({ query: (sql) => queryOnce(url, sql) });
        const { result: rate, cpu } = await measureCpu([to.pid], () => drive(send(to, `${prefix}${senders}`, EVENTS, options), senders));
        return { rate, cpu };
      });
    };
    let full: Swept<{ cpu: CpuUse }>;
    let minimal: Swept<{ cpu: CpuUse }>;
    try {
      full = await measure(server, 'e', { count: true });
      // Then the same again with minimal answers, on the warm server (after the first runs' rows).
      minimal = await measure(server, 'm', { count: true, minimal: true });
    } finally {
      await server.stop();
    }
    await queryOnce(url, `CREATE TABLE ${BARE_TABLE} (LIKE usage_events INCLUDING ALL)`);
    const bare = await startChild('bare ingest server', ROOT, 'bench/ingest/bare-server.ts',
      { ...process.env, BARE_DATABASE_URL: url, BARE_MERCHANT_ID: merchant.id, BARE_TABLE }, /bare ingest server: (http:\/\/\S+)/);
    let bareRuns: Swept<{ cpu: CpuUse }>;
    try {
      bareRuns = await measure(bare, 'e');
    } finally {
      await bare.stop();
    }
    const [counted] = await queryOnce<{ n: string }>(url, `SELECT count(*) AS n FROM ${BARE_TABLE} WHERE idempotency_key NOT LIKE 'warm-up-%'`);
    const bareStored = Number(counted!.n);
    const report = await services.ledgerQueries.integrity(merchant.id);
    const sameRows = await sameRowsBaseline(url);
    return { full, minimal, bare: bareRuns, violations: report.violations.length, charged, logged: server.logs.first, sameRows, bareStored };
  } finally {
    await runtime.close();
  }
}

const levels = SENDER_LEVELS.length > 1 ? `each contender at ${SENDER_LEVELS.join(' and ')} concurrent senders, its best kept` : `${SENDER_LEVELS[0]} concurrent senders`;
console.log(`bench/ingest on PostgreSQL: ${EVENTS} events a run (after ${WARMUP} warm-up) in batches of ${BATCH}, ${levels}, ${CUSTOMERS} customers; the server in its own process\n`);
const base = await withFreshDatabase(baseline);
const ours = await withFreshDatabase(tollgate);
const runs = SENDER_LEVELS.length * EVENTS;
console.log(`  baseline: raw batched INSERT, narrow table        ${rateOf(base)}   (10 columns, 2 indexes)`);
console.log(`  baseline: the same rows into usage_events' shape  ${rateOf(ours.sameRows)}   (Tollgate's stored events re-inserted, same columns and indexes)`);
console.log(`  reference: a bare Node server storing the batches ${rateOf(ours.bare)}   (parse, one idempotent INSERT into usage_events' shape, answer: no pricing or ledger; stored ${ours.bareStored}/${runs})`);
console.log(`    ${cpuPerUnit(ours.bare.best.cpu, EVENTS, 'event', 'reference server')}`);
console.log(`  tollgate POST /v1/usage/batch                     ${rateOf(ours.full)}   (cost, 20% markup + request fee, period total, ledger debit, event row)`);
console.log(`    ${cpuPerUnit(ours.full.best.cpu, EVENTS, 'event', 'tollgate server')}`);
console.log(`  tollgate, Prefer: return=minimal                  ${rateOf(ours.minimal)}   (the same work; the answer lists only events that failed or were not fully charged)`);
console.log(`    ${cpuPerUnit(ours.minimal.best.cpu, EVENTS, 'event', 'tollgate server')}`);
const sameRows = ours.sameRows.best.rate;
const ratios = (rate: number) => `${(rate / base.best.rate).toFixed(2)} of the narrow baseline, ${(rate / sameRows).toFixed(2)} of the same-rows baseline`;
console.log(`  ratio (best against best), full answers ${ratios(ours.full.best.rate)}; minimal answers ${ratios(ours.minimal.best.rate)}`);
const verdict = (met: boolean) => (met ? 'met' : 'NOT MET');
for (const [answers, rate] of [['full answers', ours.full.best.rate], ['minimal answers', ours.minimal.best.rate]] as const) {
  console.log(`  goals, ${answers.padEnd(15)} ≥ ${RATE_GOAL} events/s ${verdict(rate >= RATE_GOAL)}; ≥ ${SAME_ROWS_GOAL} of the same rows' raw INSERTs ${verdict(rate >= SAME_ROWS_GOAL * sameRows)}`);
}
console.log(`  events accepted: ${ours.charged}/${2 * runs}; invariant violations: ${ours.violations}`);
if (ours.logged.length > 0) console.log(`  the server logged warnings or errors, first:\n    ${ours.logged.join('\n    ')}`);
