import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createApp } from '../src/app.ts';
import { loadConfig, type Config } from '../src/config.ts';
import { openRuntime } from '../src/runtime.ts';
import type { Services } from '../src/services.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createTestDatabase } from './databases.ts';

/** A real server on a random local port over a throwaway database, plus a GraphQL helper. */
export interface TestServer {
  url: string;
  services: Services;
  config: Config;
  close(): Promise<void>;
  /** POSTs a GraphQL operation; `token` is a secret key or a customer session token. */
  graphql<T = Record<string, unknown>>(query: string, variables?: Record<string, unknown>, token?: string): Promise<GraphQLResponse<T>>;
  /** A merchant with a secret key, created fresh. */
  createMerchant(name?: string): Promise<{ id: string; secret: string; apiKeyId: string }>;
}

export interface GraphQLResponse<T> {
  status: number;
  data: T | null | undefined;
  errors: { message: string; path?: string[]; extensions: { code: string; [key: string]: unknown } }[] | undefined;
}

export function testConfig(env: Record<string, string | undefined> = {}): Config {
  return loadConfig({
    NODE_ENV: 'test',
    TOLLGATE_MASTER_KEY: randomBytes(32).toString('hex'),
    TOLLGATE_DATA_DIR: mkdtempSync(path.join(tmpdir(), 'tollgate-test-')),
    PORT: '0',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    ...env,
  });
}

export async function startTestServer(env: Record<string, string | undefined> = {}, options: { clock?: () => Date } = {}): Promise<TestServer> {
  const database = await createTestDatabase();
  const config = testConfig(env);
  const logger = createLogger(config.logLevel);
  const runtime = await openRuntime(config, logger, { db: database.db, clock: options.clock });
  const app = await createApp(runtime.services);
  const { url } = await app.listen(0, '127.0.0.1');

  const graphql: TestServer['graphql'] = async (query, variables, token) => {
    const response = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    const body = (await response.json()) as { data?: never; errors?: never };
    return { status: response.status, data: body.data, errors: body.errors };
  };

  return {
    url,
    services: runtime.services,
    config,
    graphql,
    async createMerchant(name = 'Test merchant') {
      const { merchant, key } = await runtime.services.merchants.create({ name });
      return { id: merchant.id, secret: key.secret, apiKeyId: key.apiKey.id };
    },
    async close() {
      await app.close();
      await runtime.close();
      await database.close();
    },
  };
}

/** A merchant with a secret key, as TestServer.createMerchant makes it. */
type TestMerchant = Awaited<ReturnType<TestServer['createMerchant']>>;

/**
 * A test server (as startTestServer takes `env` and `options`) and one merchant on it, for a test
 * file whose tests act as that merchant. Made at module level, started in `beforeAll` and closed
 * in `afterAll`; `gql` (as the merchant, unless given another token) and `newCustomer` (the id of
 * a new customer of the merchant, or of `merchantId`) read them when they run, so they may be
 * destructured.
 */
export function testServerWithMerchant(env: Record<string, string | undefined> = {}, options: { clock?: () => Date } = {}) {
  let server: TestServer | undefined;
  let merchant: TestMerchant | undefined;
  const started = () => {
    if (!server || !merchant) throw new Error('the server is not started: call start() in beforeAll');
    return { server, merchant };
  };
  return {
    async start() {
      server = await startTestServer(env, options);
      merchant = await server.createMerchant();
      return started();
    },
    close: () => server?.close(),
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- as the tests' own gql helpers: answers are read field by field
    gql: <T = any>(query: string, variables: Record<string, unknown> = {}, token = started().merchant.secret) => started().server.graphql<T>(query, variables, token),
    newCustomer: async (merchantId = started().merchant.id) =>
      (await started().server.services.customers.create(merchantId, { externalId: `c-${randomUUID()}` })).id,
  };
}

/** Resolves once `topic` has exactly `count` subscriptions on this server (or throws after 10 s). */
export async function waitForSubscribers(server: TestServer, topic: string, count: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (server.services.pubsub.subscriberCount(topic) !== count) {
    if (Date.now() > deadline) throw new Error(`expected ${count} subscriber(s) on ${topic} within 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits until `count` forwarded calls of the merchant are logged by the gateway (their charges are written first), and answers the log rows. */
export async function gatewayCallsSettled(server: TestServer, merchantId: string, count: number) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    await server.services.gateway.drain();
    const rows = await server.services.prisma.gatewayRequest.findMany({ where: { merchantId }, orderBy: { createdAt: 'asc' } });
    if (rows.length >= count) return rows;
    if (Date.now() > deadline) throw new Error(`expected ${count} logged gateway calls, saw ${rows.length}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The data of a GraphQL operation that must succeed: any errors are thrown, as one message. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- as the tests' own gql helpers: answers are read field by field
export async function graphqlData<T = any>(server: TestServer, query: string, variables: Record<string, unknown>, token: string): Promise<T> {
  const response = await server.graphql<T>(query, variables, token);
  if (response.errors) throw new Error(JSON.stringify(response.errors));
  return response.data as T;
}

/** Collects the process's unhandled promise rejections from `start()` to `stop()`, for a fuzz to assert there were none. */
export function unhandledRejections(): { seen: unknown[]; start(): void; stop(): void } {
  const seen: unknown[] = [];
  const onUnhandled = (reason: unknown) => seen.push(reason);
  return { seen, start: () => process.on('unhandledRejection', onUnhandled), stop: () => process.off('unhandledRejection', onUnhandled) };
}
