import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.ts';
import { openRuntime } from '../src/runtime.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createPostgresDatabase } from './databases.ts';

/** A real `src/main.ts` server process, for tests that need several instances on one database. */
export interface ServerProcess {
  url: string;
  stop(): Promise<void>;
}

const serverDir = fileURLToPath(new URL('..', import.meta.url));

export function startServerProcess(env: Record<string, string>): Promise<ServerProcess> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: serverDir,
      env: { ...process.env, PORT: '0', HOST: '127.0.0.1', TOLLGATE_SEED_DEMO: 'false', LOG_LEVEL: 'warn', NODE_ENV: 'test', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server process did not start within 60 s:\n${output}`));
    }, 60_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /GraphQL API:\s+(http:\/\/[^\s]+)\/graphql/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve({
          url: match[1]!,
          stop: () =>
            new Promise<void>((done) => {
              if (child.exitCode !== null) return done();
              child.once('exit', () => done());
              child.kill('SIGTERM');
            }),
        });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server process exited with ${code}:\n${output}`));
    });
  });
}

/** Two server processes on one fresh PostgreSQL database and Redis, and the test's own runtime on that database. */
export interface SharedCluster {
  database: Awaited<ReturnType<typeof createPostgresDatabase>>;
  instances: ServerProcess[];
  runtime: Awaited<ReturnType<typeof openRuntime>>;
}

/**
 * Starts a SharedCluster with `env` (Redis, master key, schedules) for both processes. The
 * runtime (which seeds merchants and customers) warms up while the servers boot: its first
 * queries cost seconds on a small machine. All three migrate under one lock.
 */
export async function startSharedCluster(env: Record<string, string>): Promise<SharedCluster> {
  const database = await createPostgresDatabase();
  const shared = { ...env, DATABASE_URL: database.url };
  const warm = async () => {
    const runtime = await openRuntime(loadConfig({ ...shared, NODE_ENV: 'test' }), createLogger('silent'));
    const { merchant } = await runtime.services.merchants.create({ name: 'warm-up' });
    await runtime.services.customers.create(merchant.id, { externalId: 'warm-up' });
    return runtime;
  };
  const [instances, runtime] = await Promise.all([Promise.all([startServerProcess(shared), startServerProcess(shared)]), warm()]);
  return { database, instances, runtime };
}

/** Stops what startSharedCluster started, as far as it got. */
export async function stopSharedCluster(cluster: Partial<SharedCluster>): Promise<void> {
  await Promise.all((cluster.instances ?? []).map((instance) => instance.stop()));
  await cluster.runtime?.close();
  await cluster.database?.drop();
}

/** A GraphQL answer over HTTP as it came back; a body that is not JSON becomes an error of its own. */
export interface GraphqlAnswer {
  status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- answers are read field by field
  data: Record<string, any> | null | undefined;
  errors: { message: string; extensions?: { code?: string; [key: string]: unknown } }[] | undefined;
}

/** POSTs a GraphQL operation to a server at `url` (a ServerProcess's), with a secret key or customer session token. */
export async function postGraphql(url: string, token: string, query: string, variables: Record<string, unknown>): Promise<GraphqlAnswer> {
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const text = await response.text();
  try {
    const body = JSON.parse(text) as Omit<GraphqlAnswer, 'status'>;
    return { status: response.status, data: body.data, errors: body.errors };
  } catch {
    return { status: response.status, data: undefined, errors: [{ message: `not JSON: ${text.slice(0, 300)}` }] };
  }
}

/** The data of a GraphQL read that must succeed. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- answers are read field by field
export async function readGraphql(url: string, token: string, query: string, variables: Record<string, unknown> = {}): Promise<Record<string, any>> {
  const answer = await postGraphql(url, token, query, variables);
  if (answer.errors || !answer.data) throw new Error(`${query} ${JSON.stringify(variables)} failed: ${JSON.stringify(answer.errors)}`);
  return answer.data;
}
