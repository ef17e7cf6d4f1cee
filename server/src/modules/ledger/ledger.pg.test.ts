import { randomBytes, randomUUID } from 'node:crypto';
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { loadConfig } from '../../config.ts';
import { openRuntime } from '../../runtime.ts';
import { createLogger } from '../../shared/logger.ts';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { startServerProcess, type ServerProcess } from '../../../test/processes.ts';

/**
 * Two server instances sharing PostgreSQL and Redis: 500 concurrent debits against one
 * wallet split between them never overdraw, none is lost, replays are harmless, the books
 * balance afterwards, and a subscriber on one instance sees debits made on the other.
 */
const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const masterKey = randomBytes(32).toString('hex');

let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
let instances: ServerProcess[] = [];
let runtime: Awaited<ReturnType<typeof openRuntime>>;
let merchant: { id: string; secret: string };
let customerId: string;

async function graphql(url: string, query: string, variables: Record<string, unknown>) {
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` },
    body: JSON.stringify({ query, variables }),
  });
  return (await response.json()) as { data?: any; errors?: { extensions: { code: string } }[] };
}

const DEBIT = 'mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed transaction { id } } }';

beforeAll(async () => {
  database = await createPostgresDatabase();
  const env = { DATABASE_URL: database.url, REDIS_URL: redisUrl, TOLLGATE_MASTER_KEY: masterKey };
  // Both boot (and migrate) at once.
  instances = await Promise.all([startServerProcess(env), startServerProcess(env)]);
  runtime = await openRuntime(loadConfig({ ...env, NODE_ENV: 'test' }), createLogger('silent'));
  const created = await runtime.services.merchants.create({ name: 'Two instances' });
  merchant = { id: created.merchant.id, secret: created.key.secret };
  customerId = (await runtime.services.customers.create(merchant.id, { externalId: 'shared' })).id;
  await runtime.services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, {
    customerId, currency: 'USD', amountNanos: 300n * 1_000_000_000n, kind: 'PAID', idempotencyKey: 'seed',
  });
}, 120_000);

afterAll(async () => {
  await Promise.all(instances.map((instance) => instance.stop()));
  await runtime?.close();
  await database?.drop();
});

describe('ledger across two server processes', () => {
  it('500 concurrent debits: no overdraft, none lost, replays harmless, books balance, events cross instances', async () => {
    const [a, b] = instances as [ServerProcess, ServerProcess];
    const subscriber = createClient({ url: a.url.replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${merchant.secret}` }, retryAttempts: 0 });
    const seenOnA = new Set<string>();
    let lastBalance = '';
    let ready: () => void = () => undefined;
    const subscribed = new Promise<void>((resolve) => (ready = resolve));
    const done = new Promise<void>((resolve, reject) => {
      subscriber.subscribe(
        { query: 'subscription ($id: ID!) { balanceUpdated(customerId: $id) { balance { amount } transactionIds } }', variables: { id: customerId } },
        {
          next: (message) => {
            const update = (message.data as any).balanceUpdated;
            ready();
            for (const id of update.transactionIds) seenOnA.add(id);
            lastBalance = update.balance.amount;
            if (lastBalance === '0.00') resolve();
          },
          error: reject,
          complete: () => undefined,
        },
      );
    });
    // Prove the subscription on A is live before the race: a change made through B (no money
    // moves) must reach it. Repeat until it does, since A registers the subscription async.
    for (let attempt = 0; ; attempt++) {
      await graphql(b.url, 'mutation ($id: ID!) { setOverdraftLimit(customerId: $id, limit: "0") { id } }', { id: customerId });
      const arrived = await Promise.race([subscribed.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 300))]);
      if (arrived) break;
      if (attempt > 30) throw new Error('subscription on instance A never became live');
    }

    const keys = Array.from({ length: 500 }, () => randomUUID());
    const results = await Promise.all(
      keys.map((key, index) => graphql(index % 2 === 0 ? a.url : b.url, DEBIT, { input: { customerId, amount: '1.00', idempotencyKey: key } })),
    );
    const charged = results.filter((result) => result.data?.debitCredits && !result.data.debitCredits.replayed);
    const refused = results.filter((result) => result.errors?.[0]?.extensions.code === 'INSUFFICIENT_FUNDS');
    expect(charged).toHaveLength(300);
    expect(refused).toHaveLength(200);
    expect(results.filter((result) => !result.data?.debitCredits && result.errors?.[0]?.extensions.code !== 'INSUFFICIENT_FUNDS')).toEqual([]);

    // Replays sent to the other instance: answered with the first result, nothing moves.
    const chargedKeys = keys.filter((_key, index) => results[index]!.data?.debitCredits);
    const replays = await Promise.all(
      chargedKeys.slice(0, 100).map((key, index) => graphql(index % 2 === 0 ? b.url : a.url, DEBIT, { input: { customerId, amount: '1.00', idempotencyKey: key } })),
    );
    expect(replays.every((result) => result.data?.debitCredits.replayed === true)).toBe(true);

    await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error(`subscriber last saw ${lastBalance}`)), 10_000))]);
    const viaB = results.filter((result, index) => index % 2 === 1 && result.data?.debitCredits).map((result) => result.data.debitCredits.transaction.id);
    expect(viaB.length).toBeGreaterThan(0);
    for (const id of viaB) expect(seenOnA.has(id)).toBe(true);
    await subscriber.dispose();

    const wallet = await runtime.services.ledgerQueries.wallet(merchant.id, customerId, 'USD');
    expect(wallet.balance).toBe(0n);
    const report = await runtime.services.ledgerQueries.integrity(merchant.id);
    expect(report.violations).toEqual([]);
    expect(report.transactionsChecked).toBe(301);
  }, 120_000);
});
