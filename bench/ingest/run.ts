/**
 * bench/ingest: usage events per second through POST /v1/usage/batch on PostgreSQL, with
 * durability (a 200 means committed), next to a baseline of raw batched INSERTs of the same
 * rows with `pg` in the same run, the two taken in turn over a few rounds (the median counts).
 * Prints figures; asserts nothing but the ledger invariants.
 * A reference server (bare-server.ts) takes the same batches with none of Tollgate's work: what
 * any Node ingest server reaches here before pricing or charging anything.
 *
 *   npm run bench:ingest     (BENCH_DATABASE_URL defaults to the local server)
 */
import pg from 'pg';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { closedLoop, cpuPerUnit, measureCpu, settleDatabase, startChild, storedRows, withFreshDatabase, type Child, type CpuUse, type StoredRows } from '../shared.ts';
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
const SENDER_LEVELS = (process.env.BENCH_CONCURRENCY ?? '4,8,16').split(',').map(Number);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 200);
/**
 * Rounds of Tollgate's runs and the same-rows baseline's, taken in turn: the machine's speed
 * drifts by up to a quarter within minutes, so each round's ratio compares
 * runs made seconds apart, and the median round is reported.
 */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 30_000);
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
 * The second baseline, literally "the same rows": usage events Tollgate stored, read back and
 * inserted again with `pg` in the same batches (see storedRows).
 */
function sameRowsBaseline(pool: pg.Pool, stored: StoredRows): Promise<Swept> {
  return sweep(async (senders) => {
    await stored.empty(pool);
    await settleDatabase(pool);
    const { seconds } = await closedLoop(Math.ceil(stored.rows.length / BATCH), senders, (batchIndex) =>
      stored.insert(pool, stored.rows.slice(batchIndex * BATCH, (batchIndex + 1) * BATCH)),
    );
    return { rate: stored.rows.length / seconds };
  });
}

/**
 * POSTs a batch over node:http (keep-alive) and reads the whole answer. Not fetch: sending a
 * batch and reading a full answer through its web streams took the load generator a third more
 * CPU (5.3 against 4.0 ms a batch, warm), on the cores the server shares.
 */
function postBatch(agent: http.Agent, base: string, body: Buffer, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  const url = new URL('/v1/usage/batch', base);
  return new Promise((resolve, reject) => {
    const req = http.request({ agent, hostname: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { ...headers, 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
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

/** One round: Tollgate's runs with each kind of answer, then the same-rows baseline's. */
interface Round {
  full: Swept<{ cpu: CpuUse }>;
  minimal: Swept<{ cpu: CpuUse }>;
  sameRows: Swept;
}

/**
 * The server runs in its own process, as in production, so the load generator's own work
 * (building and sending batches, reading the answers) does not share its event loop.
 */
async function tollgate(url: string): Promise<{
  rounds: Round[]; bare: Swept<{ cpu: CpuUse }>; violations: number; charged: number; logged: string[]; bareStored: number;
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
     * Each batch's request body, built before the run that sends it: the load generator shares
     * the machine's two cores with the server, so building 1,000 events and their JSON while the
     * clock runs took CPU from what is measured (the same-rows baseline's rows are read before
     * its runs, too).
     */
    const bodiesOf = (prefix: string, total: number) =>
      Array.from({ length: Math.ceil(total / BATCH) }, (_, batchIndex) => {
        const events = [];
        for (let i = batchIndex * BATCH; i < Math.min(total, (batchIndex + 1) * BATCH); i++) {
          events.push({ customer: customers[i % CUSTOMERS], idempotencyKey: `${prefix}-${i}`, usage: usageOf(i) });
        }
        return Buffer.from(JSON.stringify({ events }));
      });
    /**
     * `count` adds the accepted events to `charged`; `minimal` sends `Prefer: return=minimal`, so
     * the answer lists only events needing attention (none here).
     */
    const agent = new http.Agent({ keepAlive: true, maxSockets: Math.max(...SENDER_LEVELS) });
    const send = (to: Child, bodies: Buffer[], { count = false, minimal = false } = {}) => async (batchIndex: number) => {
      const { status, text } = await postBatch(agent, to.url, bodies[batchIndex]!, { authorization: `Bearer ${key.secret}`, ...(minimal ? { prefer: 'return=minimal' } : {}) });
      if (status !== 200) throw new Error(`batch ${batchIndex}: HTTP ${status} ${text}`);
      const body = JSON.parse(text) as { summary: { ok: number } };
      if (count) charged += body.summary.ok;
    };
    /**
     * A fresh process compiles its hot paths first (WARMUP events), then EVENTS are measured at
     * each level of senders, under keys `${prefix}${senders}-…`.
     */
    const measure = async (to: Child, prefix: string, options: { count?: boolean; minimal?: boolean; warmUp?: boolean } = {}) => {
      if (options.warmUp !== false) await drive(send(to, bodiesOf(`warm-up-${prefix}`, WARMUP), { ...options, count: false }), SENDER_LEVELS[0]!, WARMUP);
      return sweep(async (senders) => {
        const bodies = bodiesOf(`${prefix}${senders}`, EVENTS);
        await settleDatabase({ query: (sql) => queryOnce(url, sql) });
        const { result: rate, cpu } = await measureCpu([to.pid], () => drive(send(to, bodies, options), senders));
        return { rate, cpu };
      });
    };
    const rounds: Round[] = [];
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    pool.on('error', () => undefined);
    try {
      let stored: StoredRows | undefined;
      for (let round = 0; round < ROUNDS; round++) {
        const full = await measure(server, `r${round}e`, { count: true, warmUp: round === 0 });
        // Then the same again with minimal answers, on the warm server (after the first runs' rows).
        const minimal = await measure(server, `r${round}m`, { count: true, minimal: true, warmUp: round === 0 });
        // The rows of the first full-answer run: EVENTS of them, as each contender sends.
        stored ??= await storedRows(pool, 'usage_events', `idempotency_key LIKE 'r0e${SENDER_LEVELS[0]}-%'`, 'idempotency_key');
        rounds.push({ full, minimal, sameRows: await sameRowsBaseline(pool, stored) });
      }
    } finally {
      await server.stop();
      await pool.end();
    }
    await queryOnce(url, `CREATE TABLE ${BARE_TABLE} (LIKE usage_events INCLUDING ALL)`);
    const bare = await startChild('bare ingest server', ROOT, 'bench/ingest/bare-server.ts',
      { ...process.env, BARE_DATABASE_URL: url, BARE_MERCHANT_ID: merchant.id, BARE_TABLE }, /bare ingest server: (http:\/\/\S+)/);
    let bareRuns: Swept<{ cpu: CpuUse }>;
    try {
      bareRuns = await measure(bare, 'e');
    } finally {
      await bare.stop();
      agent.destroy();
    }
    const [counted] = await queryOnce<{ n: string }>(url, `SELECT count(*) AS n FROM ${BARE_TABLE} WHERE idempotency_key NOT LIKE 'warm-up-%'`);
    const bareStored = Number(counted!.n);
    const report = await services.ledgerQueries.integrity(merchant.id);
    return { rounds, bare: bareRuns, violations: report.violations.length, charged, logged: server.logs.first, bareStored };
  } finally {
    await runtime.close();
  }
}

const levels = SENDER_LEVELS.length > 1 ? `each contender at ${SENDER_LEVELS.join(', ')} concurrent senders, its best kept` : `${SENDER_LEVELS[0]} concurrent senders`;
console.log(`bench/ingest on PostgreSQL: ${EVENTS} events a run (after ${WARMUP} warm-up) in batches of ${BATCH}, ${levels}, ${CUSTOMERS} customers; the server in its own process; ${ROUNDS} rounds of Tollgate's runs and the same-rows baseline's in turn\n`);
const base = await withFreshDatabase(baseline);
const ours = await withFreshDatabase(tollgate);
const runs = SENDER_LEVELS.length * EVENTS;
type Answers = 'full' | 'minimal';
const ratioIn = (round: Round, answers: Answers) => round[answers].best.rate / round.sameRows.best.rate;
/** The round with the median of `value` (the lower one of an even count). */
const medianRound = (value: (round: Round) => number) => [...ours.rounds].sort((a, b) => value(a) - value(b))[Math.floor((ours.rounds.length - 1) / 2)]!;
/** Each goal is judged on its own median: the rate's round need not be the ratio's. */
const medianRate = (answers: Answers) => medianRound((round) => round[answers].best.rate)[answers].best.rate;
const full = medianRound((round) => ratioIn(round, 'full'));
const minimal = medianRound((round) => ratioIn(round, 'minimal'));
console.log(`  baseline: raw batched INSERT, narrow table        ${rateOf(base)}   (10 columns, 2 indexes)`);
console.log(`  reference: a bare Node server storing the batches ${rateOf(ours.bare)}   (parse, one idempotent INSERT into usage_events' shape, answer: no pricing or ledger; stored ${ours.bareStored}/${runs})`);
console.log(`    ${cpuPerUnit(ours.bare.best.cpu, EVENTS, 'event', 'reference server')}`);
ours.rounds.forEach((round, r) => {
  const rate = (answers: Answers) => `${round[answers].best.rate.toFixed(0)} (${ratioIn(round, answers).toFixed(2)})`;
  console.log(`  round ${r + 1}: the same rows ${round.sameRows.best.rate.toFixed(0)} events/s; Tollgate, full answers ${rate('full')}, minimal answers ${rate('minimal')}`);
});
console.log(`  the rounds with the median ratio:`);
for (const [answers, round] of [['full', full], ['minimal', minimal]] as const) {
  console.log(`  baseline: the same rows into usage_events' shape  ${rateOf(round.sameRows)}   (Tollgate's stored events re-inserted, same columns and indexes)`);
  console.log(answers === 'full'
    ? `  tollgate POST /v1/usage/batch                     ${rateOf(round.full)}   (cost, 20% markup + request fee, period total, ledger debit, event row)`
    : `  tollgate, Prefer: return=minimal                  ${rateOf(round.minimal)}   (the same work; the answer lists only events that failed or were not fully charged)`);
  console.log(`    ${cpuPerUnit(round[answers].best.cpu, EVENTS, 'event', 'tollgate server')}`);
}
const ratios = (answers: Answers, round: Round) =>
  `${(round[answers].best.rate / base.best.rate).toFixed(2)} of the narrow baseline, ${ratioIn(round, answers).toFixed(2)} of the same-rows baseline`;
console.log(`  ratio (best against best, the median round), full answers ${ratios('full', full)}; minimal answers ${ratios('minimal', minimal)}`);
const verdict = (met: boolean) => (met ? 'met' : 'NOT MET');
for (const [answers, round] of [['full', full], ['minimal', minimal]] as const) {
  const rate = medianRate(answers);
  console.log(`  goals, ${`${answers} answers`.padEnd(15)} ≥ ${RATE_GOAL} events/s ${verdict(rate >= RATE_GOAL)} (median ${rate.toFixed(0)}); ≥ ${SAME_ROWS_GOAL} of the same rows' raw INSERTs ${verdict(ratioIn(round, answers) >= SAME_ROWS_GOAL)} (median ${ratioIn(round, answers).toFixed(2)})`);
}
console.log(`  events accepted: ${ours.charged}/${2 * runs * ROUNDS}; invariant violations: ${ours.violations}`);
if (ours.logged.length > 0) console.log(`  the server logged warnings or errors, first:\n    ${ours.logged.join('\n    ')}`);
