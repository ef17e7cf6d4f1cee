/**
 * bench/gateway: what the AI gateway adds to a provider call. A local fake OpenAI provider is
 * driven directly and through POST /v1/forward in the same run, JSON and streamed (SSE), at 100
 * and 500 concurrent connections, at saturation (closed loop) and below it (open loop at a fixed
 * rate); prints added latency (p50, p99), the delay to a stream's first byte and the throughput
 * ratio, each next to its goal. Prints figures; asserts nothing but
 * that every call through the gateway is charged once and the ledger's invariants hold.
 *
 *   npm run bench:gateway     (BENCH_DATABASE_URL defaults to the local server)
 *
 * Three processes, so the gateway's cost is not mixed with the load generator's: the fake
 * provider (bench/gateway/provider.ts), the Tollgate server (server/src/main.ts, on a fresh
 * PostgreSQL database) and this one, which runs closed-loop callers (each sends its next request
 * when the previous one has finished) over node:http keep-alive connections.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { atRate, closedLoop, startChild, withFreshDatabase, type Child } from '../shared.ts';
import { loadConfig } from '../../server/src/config.ts';
import { openRuntime } from '../../server/src/runtime.ts';
import { createLogger } from '../../server/src/shared/logger.ts';
import { SERVER_NODE_FLAGS } from '../../server/src/node-flags.ts';

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 5000);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 500);
const CONNECTIONS = (process.env.BENCH_CONNECTIONS ?? '100,500').split(',').map(Number);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 100);
/** Spacing of the provider's SSE events: with none, a whole stream arrives at once and its first byte says nothing. */
const CHUNK_DELAY_MS = Number(process.env.BENCH_CHUNK_DELAY_MS ?? 2);
/** Offered load of the open-loop runs, as a share of the gateway's saturated throughput in the same scenario. */
const LOAD = Number(process.env.BENCH_LOAD ?? 0.5);
/** Length of each open-loop run (capped at BENCH_REQUESTS requests). */
const PACED_SECONDS = Number(process.env.BENCH_PACED_SECONDS ?? 5);
/** When set, the server process writes a V8 CPU profile (.cpuprofile) into this folder as it stops. */
const PROFILE_DIR = process.env.BENCH_PROFILE_DIR;

const GOALS = { addedP50Ms: 2, addedP99Ms: 10, ttfbDelayMs: 2, throughputRatio: 0.8 };
const MASTER_KEY = '0'.repeat(64);
const REQUEST_TIMEOUT_MS = 30_000;
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SERVER_DIR = fileURLToPath(new URL('../../server', import.meta.url));

// ------------------------------------------------------------------ load

interface Target {
  url: URL;
  headers: (index: number) => http.OutgoingHttpHeaders;
}

interface Shot {
  /** HTTP status, or what went wrong instead (error code, "timeout", "cut"). */
  status: number | string;
  totalMs: number;
  /** To the first body byte; -1 without one. */
  ttfbMs: number;
  bytes: number;
  /** The start of the body of a response other than 200, to show what went wrong. */
  error?: string;
}

function shoot(agent: http.Agent, target: Target, body: Buffer, index: number): Promise<Shot> {
  return new Promise((resolve) => {
    const started = performance.now();
    let ttfbMs = -1;
    let bytes = 0;
    let error = '';
    const fail = (status: string) => resolve({ status, totalMs: performance.now() - started, ttfbMs, bytes, error });
    const req = http.request(
      {
        agent,
        hostname: target.url.hostname,
        port: target.url.port,
        path: `${target.url.pathname}${target.url.search}`,
        method: 'POST',
        headers: { ...target.headers(index), 'content-type': 'application/json', 'content-length': body.length },
      },
      (res) => {
        res.on('data', (chunk: Buffer) => {
          if (ttfbMs < 0) ttfbMs = performance.now() - started;
          bytes += chunk.length;
          if (res.statusCode !== 200 && error.length < 300) error += chunk.toString('utf8');
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, totalMs: performance.now() - started, ttfbMs, bytes, ...(error ? { error: error.slice(0, 300) } : {}) }));
        res.on('error', () => undefined); // 'close' below reports it
        res.on('close', () => {
          if (!res.complete) fail('cut');
        });
      },
    );
    req.setTimeout(REQUEST_TIMEOUT_MS, () => {
      req.destroy();
      fail('timeout');
    });
    req.on('error', (error: NodeJS.ErrnoException) => fail(error.code ?? error.message));
    req.end(body);
  });
}

/** `connections` closed-loop callers share `total` requests. */
async function drive(agent: http.Agent, target: Target, body: Buffer, connections: number, total: number): Promise<{ shots: Shot[]; seconds: number }> {
  const { results: shots, seconds } = await closedLoop(total, connections, (index) => shoot(agent, target, body, index));
  return { shots, seconds };
}

/** Open loop (see atRate): latency and first byte count from each request's scheduled arrival. */
async function driveAtRate(agent: http.Agent, target: Target, body: Buffer, connections: number, total: number, rate: number): Promise<{ shots: Shot[]; seconds: number }> {
  const { calls, seconds } = await atRate(total, rate, connections, (index) => shoot(agent, target, body, index));
  const shots = calls.map(({ value: shot, waitedMs }) => ({ ...shot, totalMs: shot.totalMs + waitedMs, ttfbMs: shot.ttfbMs < 0 ? shot.ttfbMs : shot.ttfbMs + waitedMs }));
  return { shots, seconds };
}

interface Figures {
  rps: number;
  p50: number;
  p99: number;
  ttfbP50: number;
  ttfbP99: number;
  /** Responses other than 200, by status or error. */
  failures: Map<string, number>;
  /** 200 responses whose body size differs from what the provider sends directly. */
  wrongSize: number;
  /** Body size of the first 200 response. */
  bytes: number;
  /** The first failure, with the start of its body. */
  sample: string | null;
}

function figures({ shots, seconds }: { shots: Shot[]; seconds: number }, expectedBytes: number | null): Figures {
  const quantile = (values: number[], q: number) => values[Math.min(values.length - 1, Math.floor(q * values.length))] ?? NaN;
  const ok = shots.filter((shot) => shot.status === 200);
  const totals = ok.map((shot) => shot.totalMs).sort((a, b) => a - b);
  const ttfbs = ok.map((shot) => shot.ttfbMs).filter((ms) => ms >= 0).sort((a, b) => a - b);
  const failures = new Map<string, number>();
  for (const shot of shots) if (shot.status !== 200) failures.set(String(shot.status), (failures.get(String(shot.status)) ?? 0) + 1);
  const bytes = ok[0]?.bytes ?? 0;
  const expected = expectedBytes ?? bytes;
  return {
    rps: shots.length / seconds,
    p50: quantile(totals, 0.5),
    p99: quantile(totals, 0.99),
    ttfbP50: quantile(ttfbs, 0.5),
    ttfbP99: quantile(ttfbs, 0.99),
    failures,
    wrongSize: ok.filter((shot) => shot.bytes !== expected).length,
    bytes,
    sample: ((failed) => (failed ? `${failed.status} ${failed.error ?? ''}`.trim() : null))(shots.find((shot) => shot.status !== 200)),
  };
}

// ------------------------------------------------------------------ CPU

/** Linux USER_HZ: /proc reports CPU time in these ticks. */
const CLOCK_TICKS = 100;

/** CPU seconds a process has used so far, from /proc (Linux); NaN where there is none. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields[0] is the state (field 3)
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS; // utime, stime
  } catch {
    return NaN;
  }
}

interface CpuSnapshot {
  loadGenerator: number;
  provider: number;
  server: number;
  /** The PostgreSQL backends serving the bench database, by pid. */
  postgres: Map<number, number>;
}

/** CPU milliseconds per request spent by each process, over a measured run. */
type CpuPerCall = Record<'provider' | 'server' | 'postgres' | 'loadGenerator', number>;

interface Processes {
  provider: number;
  server: number;
  db: pg.Client;
}

async function cpuSnapshot(processes: Processes): Promise<CpuSnapshot> {
  const { rows } = await processes.db.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`);
  const usage = process.cpuUsage();
  return {
    loadGenerator: (usage.user + usage.system) / 1e6,
    provider: cpuSeconds(processes.provider),
    server: cpuSeconds(processes.server),
    postgres: new Map(rows.map(({ pid }) => [pid, cpuSeconds(pid)])),
  };
}

function cpuPerCall(before: CpuSnapshot, after: CpuSnapshot, calls: number): CpuPerCall {
  let postgres = 0;
  // A backend opened during the run counts from its start; one closed during it is lost (pools keep theirs).
  for (const [pid, seconds] of after.postgres) if (Number.isFinite(seconds)) postgres += seconds - (before.postgres.get(pid) ?? 0);
  const per = (seconds: number) => (seconds * 1000) / calls;
  return {
    provider: per(after.provider - before.provider),
    server: per(after.server - before.server),
    postgres: per(postgres),
    loadGenerator: per(after.loadGenerator - before.loadGenerator),
  };
}

// ------------------------------------------------------------------ scenarios

interface Outcome extends Figures {
  cpu: CpuPerCall;
  /** Seconds from the last response until every call was charged and logged (gateway only). */
  settleSeconds: number;
}

/**
 * Warm-up (connections opened, caches filled, JIT warm), then the measured run, on a fresh
 * keep-alive agent. `settle` waits for the gateway's settlement to catch up, after the warm-up
 * (so its backlog does not spill into the measured run) and after the measured run (so the CPU
 * figures include charging).
 */
async function scenario(
  target: Target,
  body: Buffer,
  connections: number,
  expectedBytes: number | null,
  processes: Processes,
  settle: (calls: number) => Promise<number>,
  /** Open loop at this rate (requests per second), instead of closed-loop callers. */
  paced: { rate: number; total: number } | null = null,
): Promise<Outcome> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });
  try {
    const warm = figures(await drive(agent, target, body, connections, WARMUP), expectedBytes);
    await settle(WARMUP);
    const before = await cpuSnapshot(processes);
    const total = paced?.total ?? REQUESTS;
    const run = paced ? await driveAtRate(agent, target, body, connections, total, paced.rate) : await drive(agent, target, body, connections, total);
    const measured = figures(run, expectedBytes);
    const settleSeconds = await settle(total);
    const cpu = cpuPerCall(before, await cpuSnapshot(processes), total);
    for (const [status, n] of warm.failures) measured.failures.set(`${status} (warm-up)`, n);
    measured.sample ??= warm.sample;
    return { ...measured, cpu, settleSeconds };
  } finally {
    agent.destroy();
  }
}

// ------------------------------------------------------------------ setup

async function graphql<T>(base: string, secret: string, query: string, variables: Record<string, unknown> = {}): Promise<T> {
  const response = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: T | null; errors?: unknown[] };
  if (body.errors?.length || !body.data) throw new Error(`GraphQL ${query.replace(/\s+/g, ' ').slice(0, 80)}: HTTP ${response.status} ${JSON.stringify(body.errors)}`);
  return body.data;
}

/**
 * Through the server's GraphQL API: allows the fake provider's host (speaking OpenAI, so the
 * fixture model's list prices apply), stores an OpenAI key for the gateway to inject (the fake
 * provider ignores it), and creates the customers with plenty of credit.
 */
async function setUp(base: string, secret: string, providerUrl: string): Promise<void> {
  await graphql(base, secret, `mutation($host: String!) { putGatewayHost(host: $host, provider: "openai") { id } }`, { host: new URL(providerUrl).host });
  await graphql(base, secret, `mutation { setProviderCredential(provider: "openai", apiKey: "sk-bench-fake-provider-key") { __typename } }`);
  let next = 0;
  await Promise.all(
    Array.from({ length: 10 }, async () => {
      for (let i = next++; i < CUSTOMERS; i = next++) {
        const { createCustomer } = await graphql<{ createCustomer: { id: string } }>(
          base, secret, `mutation($externalId: String!) { createCustomer(input: { externalId: $externalId }) { id } }`, { externalId: `bench-${i}` },
        );
        await graphql(base, secret, `mutation($c: ID!, $key: String!) { grantCredits(input: { customerId: $c, amount: "1000000", kind: PAID, idempotencyKey: $key }) { replayed } }`, {
          c: createCustomer.id,
          key: `seed-${i}`,
        });
      }
    }),
  );
}

/** One request, whole body kept: for the relay checks before the load. */
async function fetchOnce(url: string, body: Buffer, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  const response = await fetch(url, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: body.toString('utf8') });
  return { status: response.status, body: await response.text() };
}

/** Before the load: both URL forms relay the provider's response byte for byte, JSON and SSE. */
async function relayChecks(providerUrl: URL, serverUrl: string, headers: Record<string, string>): Promise<{ lines: string[]; calls: number }> {
  const lines: string[] = [];
  let calls = 0;
  const forms: [string, string][] = [
    ['?u=', `${serverUrl}/v1/forward?u=${encodeURIComponent(providerUrl.href)}`],
    ['base URL', `${serverUrl}/v1/forward/${encodeURIComponent(new URL('/v1', providerUrl).href)}/chat/completions`],
  ];
  for (const [kind, body] of [['JSON', jsonBody], ['SSE', streamBody]] as const) {
    const direct = await fetchOnce(providerUrl.href, body, {});
    for (const [form, url] of forms) {
      calls++;
      const relayed = await fetchOnce(url, body, headers);
      const same = relayed.status === direct.status && relayed.body === direct.body;
      lines.push(
        `  ${kind.padEnd(4)} ${form.padEnd(8)} HTTP ${relayed.status}, ${same ? `${relayed.body.length} bytes identical to the direct response` : `DIFFERS from the direct response (HTTP ${direct.status}, ${direct.body.length} bytes): ${relayed.body.slice(0, 300)}`}`,
      );
    }
  }
  return { lines, calls };
}

// ------------------------------------------------------------------ report

const ms = (value: number) => (Number.isFinite(value) ? `${value.toFixed(2)} ms` : '—');
const signed = (value: number) => (Number.isFinite(value) ? `${value >= 0 ? '+' : ''}${value.toFixed(2)} ms` : '—');
const verdict = (met: boolean) => (met ? 'met' : 'NOT MET');

function row(name: string, f: Figures, stream: boolean): string {
  const failed = [...f.failures.values()].reduce((sum, n) => sum + n, 0);
  const ttfb = stream ? `   ttfb p50 ${ms(f.ttfbP50).padStart(9)}  p99 ${ms(f.ttfbP99).padStart(9)}` : '';
  const errors = failed === 0 && f.wrongSize === 0 ? '' : `   FAILURES ${[...f.failures].map(([status, n]) => `${status}×${n}`).join(', ')}${f.wrongSize ? ` wrong body size×${f.wrongSize}` : ''}`;
  const sample = f.sample ? `\n      first failure: ${f.sample}` : '';
  return `  ${name.padEnd(9)} ${f.rps.toFixed(0).padStart(7)} req/s   p50 ${ms(f.p50).padStart(9)}  p99 ${ms(f.p99).padStart(9)}${ttfb}${errors}${sample}`;
}

function cpuLine(direct: CpuPerCall, gateway: CpuPerCall): string {
  const f = (value: number) => (Number.isFinite(value) ? value.toFixed(2) : '—');
  return (
    `    CPU ms per call       direct: provider ${f(direct.provider)}, load generator ${f(direct.loadGenerator)}` +
    `   gateway: server ${f(gateway.server)}, PostgreSQL ${f(gateway.postgres)}, provider ${f(gateway.provider)}, load generator ${f(gateway.loadGenerator)}`
  );
}

interface Verdicts {
  met: number;
  total: number;
}

function tally(verdicts: Verdicts): string {
  return `${verdicts.met} of ${verdicts.total}`;
}

/**
 * The same run through the bare proxy (bare-proxy.ts): what any Node proxy adds here before doing
 * any billing work, so the gateway's figures can be read against what is attainable on this machine.
 */
function floor(direct: Figures, bare: Outcome, stream: boolean, saturated: boolean): string {
  const failed = [...bare.failures.values()].reduce((sum, n) => sum + n, 0);
  const parts = [`p50 ${signed(bare.p50 - direct.p50)}`, `p99 ${signed(bare.p99 - direct.p99)}`];
  if (stream) parts.push(`first byte p50 ${signed(bare.ttfbP50 - direct.ttfbP50)}`);
  if (saturated) parts.push(`throughput ${(bare.rps / direct.rps).toFixed(2)}x`);
  return `    a bare Node proxy (no billing) adds ${parts.join(', ')}; its CPU ms per call ${bare.cpu.server.toFixed(2)}${failed ? `; FAILURES ${failed}` : ''}`;
}

/** Latency goals below saturation (open loop); at saturation, latency and throughput together. */
function comparison(direct: Figures, gateway: Figures, stream: boolean, verdicts: Verdicts, saturated: boolean): string {
  const checks: [string, number, string, boolean][] = [
    ['added p50', gateway.p50 - direct.p50, `< ${GOALS.addedP50Ms} ms`, gateway.p50 - direct.p50 < GOALS.addedP50Ms],
    ['added p99', gateway.p99 - direct.p99, `< ${GOALS.addedP99Ms} ms`, gateway.p99 - direct.p99 < GOALS.addedP99Ms],
  ];
  if (stream) checks.push(['first-byte delay p50', gateway.ttfbP50 - direct.ttfbP50, `≤ ${GOALS.ttfbDelayMs} ms`, gateway.ttfbP50 - direct.ttfbP50 <= GOALS.ttfbDelayMs]);
  const lines = checks.map(([name, value, goal, met]) => `    ${name.padEnd(21)} ${signed(value).padStart(11)}   goal ${goal.padEnd(8)} ${verdict(met)}`);
  if (stream) lines.push(`    ${'first-byte delay p99'.padEnd(21)} ${signed(gateway.ttfbP99 - direct.ttfbP99).padStart(11)}   (for information)`);
  if (saturated) {
    const ratio = gateway.rps / direct.rps;
    checks.push(['throughput', ratio, '', ratio >= GOALS.throughputRatio]);
    lines.push(`    ${'throughput'.padEnd(21)} ${`${ratio.toFixed(2)}x`.padStart(11)}   goal ≥ ${GOALS.throughputRatio.toFixed(2)}x  ${verdict(ratio >= GOALS.throughputRatio)}`);
  }
  verdicts.total += checks.length;
  verdicts.met += checks.filter(([, , , met]) => met).length;
  return lines.join('\n');
}

// ------------------------------------------------------------------ run

const jsonBody = Buffer.from(JSON.stringify({ model: 'gpt-5.4-mini', messages: [{ role: 'user', content: 'What is my invoice total for March?' }] }));
const streamBody = Buffer.from(
  JSON.stringify({ model: 'gpt-5.4-mini', messages: [{ role: 'user', content: 'What is my invoice total for March?' }], stream: true, stream_options: { include_usage: true } }),
);

console.log(
  `bench/gateway: a fake OpenAI provider called directly and through POST /v1/forward on PostgreSQL, ${REQUESTS} requests per scenario\n` +
    `after ${WARMUP} warm-up, on keep-alive connections, ${CUSTOMERS} customers, SSE events ${CHUNK_DELAY_MS} ms apart.\n` +
    `  The provider, the Tollgate server and this load generator run in separate processes, but this machine has ${availableParallelism()} cores\n` +
    `  shared by all three and PostgreSQL, so the gateway competes with the load generator for CPU where the direct baseline does not.\n` +
    `  Each scenario runs twice. At saturation, closed-loop callers keep every connection busy, so latency is about\n` +
    `  connections / throughput and the added latency mostly mirrors the throughput lost (CPU per call shows where it goes).\n` +
    `  Below saturation, requests arrive at a fixed rate (open loop, ${Math.round(LOAD * 100)}% of what the gateway sustained) on both sides,\n` +
    `  timed from their scheduled arrival: the latency a call gains by going through the gateway.\n`,
);

await withFreshDatabase(async (databaseUrl) => {
  // The merchant and its secret key, made the way bench/ingest does (this also migrates the database).
  const setupRuntime = await openRuntime(
    loadConfig({ DATABASE_URL: databaseUrl, TOLLGATE_MASTER_KEY: MASTER_KEY, NODE_ENV: 'test', LOG_LEVEL: 'warn' }),
    createLogger('warn'),
  );
  const { merchant, key } = await setupRuntime.services.merchants.create({ name: 'bench' });
  await setupRuntime.close();

  const db = new pg.Client({ connectionString: databaseUrl });
  db.on('error', () => undefined); // killed when the bench database is dropped
  await db.connect();
  const children: Child[] = [];
  let sentThroughGateway = 0;
  try {
    const provider = await startChild('fake provider', ROOT, 'bench/gateway/provider.ts', process.env, /fake provider: (http:\/\/\S+)/);
    children.push(provider);
    const bare = await startChild('bare proxy', ROOT, 'bench/gateway/bare-proxy.ts', { ...process.env, BARE_PROXY_TARGET: provider.url }, /bare proxy: (http:\/\/\S+)/);
    children.push(bare);
    const server = await startChild(
      'Tollgate server',
      SERVER_DIR,
      'src/main.ts',
      {
        ...process.env,
        DATABASE_URL: databaseUrl,
        TOLLGATE_MASTER_KEY: MASTER_KEY,
        TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true',
        TOLLGATE_SEED_DEMO: 'false',
        NODE_ENV: 'production',
        LOG_LEVEL: 'warn',
        PORT: '0',
        HOST: '127.0.0.1',
        REDIS_URL: '',
      },
      /GraphQL API:\s+(http:\/\/\S+)\/graphql/,
      [...SERVER_NODE_FLAGS, ...(PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`] : [])],
    );
    children.push(server);
    await setUp(server.url, key.secret, provider.url);

    const providerUrl = new URL('/v1/chat/completions', provider.url);
    const delay = { 'x-fake-chunk-delay-ms': String(CHUNK_DELAY_MS) };
    const direct = (stream: boolean): Target => ({ url: providerUrl, headers: () => (stream ? delay : {}) });
    const bareProxy = (stream: boolean): Target => ({ url: new URL(providerUrl.pathname, bare.url), headers: () => (stream ? delay : {}) });
    const gateway = (stream: boolean): Target => ({
      url: new URL(`/v1/forward?u=${encodeURIComponent(providerUrl.href)}`, server.url),
      headers: (index) => ({ authorization: `Bearer ${key.secret}`, 'x-tollgate-customer': `bench-${index % CUSTOMERS}`, ...(stream ? delay : {}) }),
    });

    /** Waits until every call sent through the gateway has its log row (settlement charges, then logs); returns the seconds it took. */
    const settled = async (calls: number): Promise<number> => {
      sentThroughGateway += calls;
      const started = performance.now();
      for (;;) {
        const { rows } = await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM gateway_requests`);
        if (Number(rows[0]!.n) >= sentThroughGateway) return (performance.now() - started) / 1000;
        if (performance.now() - started > 60_000) {
          console.log(`  settlement still behind after 60 s: ${rows[0]!.n} of ${sentThroughGateway} calls logged`);
          return NaN;
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    const processes: Processes = { provider: provider.pid, server: server.pid, db };
    const bareProcesses: Processes = { ...processes, server: bare.pid };

    const checks = await relayChecks(providerUrl, server.url, { authorization: `Bearer ${key.secret}`, 'x-tollgate-customer': 'bench-0' });
    await settled(checks.calls);
    console.log(`relay checks (one call each):\n${checks.lines.join('\n')}\n`);

    const atSaturation: Verdicts = { met: 0, total: 0 };
    const belowSaturation: Verdicts = { met: 0, total: 0 };
    for (const connections of CONNECTIONS) {
      for (const stream of [false, true]) {
        const body = stream ? streamBody : jsonBody;
        const base = await scenario(direct(stream), body, connections, null, processes, async () => 0);
        const ours = await scenario(gateway(stream), body, connections, base.bytes, processes, settled);
        console.log(`${stream ? 'stream (SSE)' : 'JSON'}, ${connections} connections, at saturation (closed loop):`);
        console.log(row('direct', base, stream));
        console.log(row('gateway', ours, stream));
        console.log(comparison(base, ours, stream, atSaturation, true));
        console.log(cpuLine(base.cpu, ours.cpu));
        console.log(floor(base, await scenario(bareProxy(stream), body, connections, base.bytes, bareProcesses, async () => 0), stream, true));
        console.log(`    settlement caught up  ${Number.isFinite(ours.settleSeconds) ? `${ours.settleSeconds.toFixed(2)} s` : '—'} after the last response`);
        // Both sides at the same offered load, a share of what the gateway sustained above.
        const rate = Math.max(1, Math.round(ours.rps * LOAD));
        const paced = { rate, total: Math.max(100, Math.min(REQUESTS, Math.round(rate * PACED_SECONDS))) };
        const basePaced = await scenario(direct(stream), body, connections, null, processes, async () => 0, paced);
        const oursPaced = await scenario(gateway(stream), body, connections, base.bytes, processes, settled, paced);
        console.log(`  below saturation: ${paced.total} requests arriving at ${rate}/s (open loop, ${Math.round(LOAD * 100)}% of the gateway's saturated rate) over up to ${connections} connections:`);
        console.log(row('direct', basePaced, stream));
        console.log(row('gateway', oursPaced, stream));
        console.log(comparison(basePaced, oursPaced, stream, belowSaturation, false));
        console.log(cpuLine(basePaced.cpu, oursPaced.cpu));
        console.log(floor(basePaced, await scenario(bareProxy(stream), body, connections, base.bytes, bareProcesses, async () => 0, paced), stream, false));
        console.log('');
      }
    }

    const { rows: outcomes } = await db.query<{ outcome: string; status: number; n: string; charged: string }>(
      `SELECT outcome::text, status, count(*)::text AS n, count(usage_event_id)::text AS charged FROM gateway_requests GROUP BY outcome, status ORDER BY outcome, status`,
    );
    const { rows: usage } = await db.query<{ n: string; charged: string; keys: string; overdrawn: string }>(
      `SELECT count(*)::text AS n, count(*) FILTER (WHERE charge_attos > 0 AND ledger_transaction_id IS NOT NULL)::text AS charged,
         count(DISTINCT idempotency_key)::text AS keys, (SELECT count(*) FROM wallets WHERE balance < 0)::text AS overdrawn FROM usage_events`,
    );
    const completed = outcomes.filter((o) => o.outcome === 'COMPLETED').reduce((sum, o) => sum + Number(o.n), 0);
    console.log(`calls through the gateway: ${sentThroughGateway} sent (warm-up included), logged by outcome:`);
    for (const o of outcomes) console.log(`  ${o.outcome.padEnd(15)} HTTP ${o.status}   ${o.n.padStart(7)} calls, ${o.charged.padStart(7)} with a usage event`);
    console.log(
      `  usage events ${usage[0]!.n} (${usage[0]!.keys} distinct keys), charged to a wallet ${usage[0]!.charged} of ${completed} completed calls; overdrawn wallets ${usage[0]!.overdrawn}`,
    );
    console.log(`goals met below saturation (latency added to a call): ${tally(belowSaturation)}; at saturation (latency and throughput): ${tally(atSaturation)}`);
    for (const [name, child] of [['fake provider', provider], ['Tollgate server', server]] as const) {
      if (child.logs.count > 0) console.log(`${name} logged ${child.logs.count} warning/error lines, first:\n    ${child.logs.first.join('\n    ')}`);
    }
  } finally {
    await db.end();
    for (const child of children.reverse()) await child.stop(); // the server drains its settlement queue on SIGTERM
  }

  const checkRuntime = await openRuntime(loadConfig({ DATABASE_URL: databaseUrl, TOLLGATE_MASTER_KEY: MASTER_KEY, NODE_ENV: 'test', LOG_LEVEL: 'warn' }), createLogger('warn'));
  try {
    const report = await checkRuntime.services.ledgerQueries.integrity(merchant.id);
    console.log(`ledger invariant violations: ${report.violations.length}${report.violations.length ? `\n  ${report.violations.slice(0, 5).join('\n  ')}` : ''}`);
  } finally {
    await checkRuntime.close();
  }
});
