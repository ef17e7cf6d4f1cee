import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import pg from 'pg';

/** Shared by the bench scripts: the server they run against, and a throwaway database on it. */
export const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';

export async function withFreshDatabase<T>(work: (url: string) => Promise<T>): Promise<T> {
  const name = `tollgate_bench_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${name}"`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  try {
    return await work(url.toString());
  } catch (error) {
    console.error(error);
    throw error;
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await admin.end();
  }
}

/**
 * Starts a measured run on a clean slate: CHECKPOINT writes out the pages and WAL that earlier
 * runs left dirty, so that no run pays for a checkpoint the runs before it made due (with up to
 * 1 GB of WAL between checkpoints, one could fall in the middle of any run). pgbench likewise
 * cleans up before it measures. Needs a superuser or pg_checkpoint; without either, runs go as before.
 */
export async function settleDatabase(executor: { query(sql: string): Promise<unknown> }): Promise<void> {
  await executor.query('CHECKPOINT').catch(() => undefined);
}

export interface Child {
  url: string;
  pid: number;
  /** Log lines printed after startup (warnings and errors), the first few kept. */
  logs: { count: number; first: string[] };
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping the child processes`);
    process.exit(1);
  });
}

/** Runs a TypeScript entry point in its own Node process; resolves once `ready` matches its output (group 1: its URL). */
export function startChild(name: string, cwd: string, script: string, env: NodeJS.ProcessEnv, ready: RegExp, nodeFlags: string[] = []): Promise<Child> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', script], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    running.add(child);
    const logs = { count: 0, first: [] as string[] };
    let startup = '';
    let started = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} did not start within 60 s:\n${startup}`));
    }, 60_000);
    const onOutput = (json: boolean) => (chunk: Buffer) => {
      const text = chunk.toString();
      if (!started) {
        startup += text;
        const match = ready.exec(startup);
        if (!match) return;
        started = true;
        clearTimeout(timer);
        resolve({ url: match[1]!, pid: child.pid!, logs, stop: () => stopChild(child) });
        return;
      }
      // pino writes JSON lines to stdout; anything on stderr counts too.
      for (const line of text.split('\n')) {
        if (line.trim() === '' || (json && !line.startsWith('{'))) continue;
        logs.count++;
        if (logs.first.length < 5) logs.first.push(line.length > 400 ? `${line.slice(0, 400)}…` : line);
      }
    };
    child.stdout!.on('data', onOutput(true));
    child.stderr!.on('data', onOutput(false));
    child.once('exit', (code, signal) => {
      running.delete(child);
      clearTimeout(timer);
      if (!started) reject(new Error(`${name} exited (${code ?? signal}) before it was ready:\n${startup}`));
    });
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((done) => {
    if (child.exitCode !== null || child.signalCode !== null) return done();
    const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', () => {
      clearTimeout(kill);
      done();
    });
    child.kill('SIGTERM');
  });
}

/**
 * Closed loop: `callers` loops share `total` calls, each sending its next call when its last
 * one is answered. This measures saturation: latency there is about callers / throughput.
 */
export async function closedLoop<T>(total: number, callers: number, call: (index: number) => Promise<T>): Promise<{ results: T[]; seconds: number }> {
  const results: T[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async () => {
      for (let index = next++; index < total; index = next++) results.push(await call(index));
    }),
  );
  return { results, seconds: (performance.now() - started) / 1000 };
}

/** One open-loop call: its value, and the milliseconds it waited for a free caller after its scheduled arrival. */
export interface Paced<T> {
  value: T;
  waitedMs: number;
}

/**
 * Open loop: calls arrive at `rate` per second whatever happens to earlier ones, as requests
 * from many independent users do, with at most `limit` in flight (an arrival that finds them
 * all busy waits for one). Each call reports how long it waited after its scheduled arrival, so
 * latency can be counted from then and waiting is not hidden. Closed-loop callers measure
 * saturation instead, where latency is callers / throughput.
 */
export function atRate<T>(total: number, rate: number, limit: number, call: (index: number) => Promise<T>): Promise<{ calls: Paced<T>[]; seconds: number }> {
  const calls: Paced<T>[] = [];
  const waiting: { index: number; due: number }[] = [];
  let inFlight = 0;
  let arrived = 0;
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const launch = (index: number, due: number) => {
      inFlight++;
      const waitedMs = performance.now() - due;
      call(index).then((value) => {
        calls.push({ value, waitedMs });
        inFlight--;
        const next = waiting.shift();
        if (next) launch(next.index, next.due);
        if (calls.length === total) {
          clearInterval(timer);
          resolve({ calls, seconds: (performance.now() - started) / 1000 });
        }
      }, (error: unknown) => {
        clearInterval(timer);
        reject(error);
      });
    };
    const timer = setInterval(() => {
      const due = Math.min(total, Math.floor(((performance.now() - started) * rate) / 1000));
      for (; arrived < due; arrived++) {
        const at = started + (arrived * 1000) / rate;
        if (inFlight < limit) launch(arrived, at);
        else waiting.push({ index: arrived, due: at });
      }
    }, 1);
  });
}

/**
 * Rows an application stored, read back to be inserted again as raw batched INSERTs: the
 * ceiling for writing exactly those rows, with nothing else done. The copy table has the
 * source's columns, defaults and indexes (LIKE … INCLUDING ALL; no foreign keys). Values travel
 * as one text[] per column and are cast in the statement.
 */
export interface StoredRows {
  rows: string[][];
  /** Index of a column in each row. */
  column(name: string): number;
  /** Inserts these rows into the copy table. */
  insert(executor: { query: (text: string, values: unknown[]) => Promise<unknown> }, rows: string[][]): Promise<unknown>;
  /** Empties the copy table, to insert the rows again. */
  empty(executor: { query: (text: string) => Promise<unknown> }): Promise<unknown>;
}

export async function storedRows(pool: pg.Pool, table: string, where: string, orderBy: string): Promise<StoredRows> {
  const copy = `bench_copy_${table}`;
  await pool.query(`CREATE TABLE ${copy} (LIKE ${table} INCLUDING ALL)`);
  const columns = (await pool.query<{ name: string; type: string }>(
    `SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute
     WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
    [table],
  )).rows;
  const stored = await pool.query<string[]>({
    text: `SELECT ${columns.map((column) => `"${column.name}"::text`).join(', ')} FROM ${table} WHERE ${where} ORDER BY ${orderBy}`,
    rowMode: 'array',
  });
  const insert = `INSERT INTO ${copy} SELECT ${columns.map((column, i) => `u.c${i}::${column.type}`).join(', ')}
    FROM unnest(${columns.map((_c, i) => `$${i + 1}::text[]`).join(', ')}) AS u(${columns.map((_c, i) => `c${i}`).join(', ')})`;
  return {
    rows: stored.rows,
    column: (name) => columns.findIndex((column) => column.name === name),
    insert: (executor, rows) => executor.query(insert, columns.map((_c, i) => rows.map((row) => row[i]))),
    empty: (executor) => executor.query(`TRUNCATE ${copy}`),
  };
}

/** CPU seconds (user + system) each running process has used so far, from /proc (Linux). */
function cpuByProcess(): Map<number, { name: string; seconds: number }> {
  const ticksPerSecond = 100; // USER_HZ, the unit of /proc/<pid>/stat on every Linux build
  const found = new Map<number, { name: string; seconds: number }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      found.set(Number(entry), { name, seconds: (Number(fields[11]) + Number(fields[12])) / ticksPerSecond });
    } catch {
      // The process ended between listing and reading.
    }
  }
  return found;
}

/**
 * Seconds of CPU the hypervisor gave to other guests while this machine's processes were ready
 * to run ("steal", summed over all cores, from /proc/stat): on a shared VM, time no process of
 * ours could use, whatever the code does.
 */
function stolenSeconds(): number {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
    return Number(fields[8] ?? 0) / 100; // cpu user nice system idle iowait irq softirq steal …, in USER_HZ
  } catch {
    return 0;
  }
}

export interface CpuUse {
  /** CPU seconds used by PostgreSQL's processes, by `pids` (summed), and by everything else. */
  postgres: number;
  ours: number;
  other: number;
  /** Wall-clock seconds the measurement spanned. */
  seconds: number;
  /** CPU seconds the hypervisor took for other guests meanwhile (see stolenSeconds). */
  stolen: number;
}

/**
 * Runs `work` and reports the CPU time spent meanwhile by PostgreSQL, by the processes `pids`,
 * and by everything else on the machine. On a shared, noisy machine CPU per unit of work is
 * steadier than throughput, and it bounds throughput: N cores allow at most N / (CPU per unit).
 */
export async function measureCpu<T>(pids: readonly number[], work: () => Promise<T>): Promise<{ result: T; cpu: CpuUse }> {
  const before = cpuByProcess();
  const stolenBefore = stolenSeconds();
  const started = performance.now();
  const result = await work();
  const seconds = (performance.now() - started) / 1000;
  const cpu: CpuUse = { postgres: 0, ours: 0, other: 0, seconds, stolen: stolenSeconds() - stolenBefore };
  for (const [pid, now] of cpuByProcess()) {
    const used = now.seconds - (before.get(pid)?.seconds ?? 0);
    if (used <= 0) continue;
    if (pids.includes(pid)) cpu.ours += used;
    else if (now.name === 'postgres') cpu.postgres += used;
    else cpu.other += used;
  }
  return { result, cpu };
}

/** The most units per second the machine's cores could do at the CPU cost per unit measured in `cpu`. */
export function cpuBoundRate(cpu: CpuUse, units: number): number {
  return (units * availableParallelism()) / (cpu.postgres + cpu.ours + cpu.other);
}

/**
 * "postgres 41 µs, server 63 µs, rest 15 µs per event: 2 cores allow at most 16,800/s; busy
 * 1.6 of 2 cores, 0.1 taken by other guests": how far the run is from the machine's bound, and
 * how much of the machine it kept busy (the rest is time the processes spent waiting for each
 * other, or that the hypervisor gave to other virtual machines).
 */
export function cpuPerUnit(cpu: CpuUse, units: number, unit: string, oursLabel: string): string {
  const micros = (seconds: number) => `${((seconds / units) * 1e6).toFixed(0)} µs`;
  const cores = availableParallelism();
  const used = cpu.postgres + cpu.ours + cpu.other;
  const ceiling = cpuBoundRate(cpu, units);
  return `CPU per ${unit}: postgres ${micros(cpu.postgres)}, ${oursLabel} ${micros(cpu.ours)}, rest ${micros(cpu.other)}; ` +
    `${cores} cores allow at most ${ceiling.toFixed(0)} ${unit}s/s at this cost; busy ${(used / cpu.seconds).toFixed(2)} of ${cores} cores` +
    (cpu.stolen > 0 ? `, ${(cpu.stolen / cpu.seconds).toFixed(2)} taken by other guests of the host (steal)` : '');
}
