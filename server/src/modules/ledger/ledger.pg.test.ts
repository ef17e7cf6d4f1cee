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

  it('the same key sent to both instances at the same moment charges once, and both answer with that transaction', async () => {
    const [a, b] = instances as [ServerProcess, ServerProcess];
    const payer = (await runtime.services.customers.create(merchant.id, { externalId: 'same-key' })).id;
    await runtime.services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, {
      customerId: payer, currency: 'USD', amountNanos: 100n * 1_000_000_000n, kind: 'PAID', idempotencyKey: 'seed-same-key',
    });
    const keys = Array.from({ length: 100 }, () => randomUUID());
    const pairs = await Promise.all(
      keys.map((key) => Promise.all([a, b].map((instance) => graphql(instance.url, DEBIT, { input: { customerId: payer, amount: '0.25', idempotencyKey: key } })))),
    );
    for (const pair of pairs) {
      expect(pair.map((result) => result.errors)).toEqual([undefined, undefined]);
      const [first, second] = pair.map((result) => result.data!.debitCredits) as [any, any];
      expect(first.transaction.id).toBe(second.transaction.id);
      expect([first.replayed, second.replayed].sort()).toEqual([false, true]);
    }
    expect((await runtime.services.ledgerQueries.wallet(merchant.id, payer, 'USD')).balance).toBe(75n * 1_000_000_000n);
    expect((await runtime.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);
  }, 60_000);

  it('expiry run by two instances at once removes each due grant exactly once', async () => {
    const owners = await Promise.all(Array.from({ length: 20 }, (_v, i) => runtime.services.customers.create(merchant.id, { externalId: `expiring-${i}` })));
    const expiresAt = new Date(Date.now() + 60_000);
    for (const owner of owners) {
      await runtime.services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, {
        customerId: owner.id, currency: 'USD', amountNanos: 5n * 1_000_000_000n, kind: 'PROMOTIONAL', expiresAt, idempotencyKey: `expiring-${owner.id}`,
      });
    }
    // Two more instances whose clocks are past the expiry, each running the schedule's job.
    const later = () => new Date(expiresAt.getTime() + 1000);
    const config = loadConfig({ DATABASE_URL: database.url, REDIS_URL: redisUrl, TOLLGATE_MASTER_KEY: masterKey, NODE_ENV: 'test' });
    const clocked = await Promise.all([0, 1].map(() => openRuntime(config, createLogger('silent'), { clock: later })));
    try {
      const runs = await Promise.all(clocked.map((instance) => instance.services.ledger.runExpiry()));
      expect(runs.reduce((sum, run) => sum + run.grantsExpired, 0)).toBe(owners.length);
    } finally {
      await Promise.all(clocked.map((instance) => instance.close()));
    }
    for (const owner of owners) expect((await runtime.services.ledgerQueries.wallet(merchant.id, owner.id, 'USD')).balance).toBe(0n);
    const [{ n }] = await runtime.services.db.withConnection((connection) =>
      connection.query<{ n: string }>(`SELECT count(*)::text AS n FROM ledger_transactions WHERE merchant_id = $1 AND kind = 'EXPIRY'`, [merchant.id]),
    ) as [{ n: string }];
    expect(Number(n)).toBe(owners.length);
    expect((await runtime.services.ledgerQueries.integrity(merchant.id)).violations).toEqual([]);
  }, 60_000);
});
