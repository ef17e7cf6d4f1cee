import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config.ts';
import { openRuntime } from '../../runtime.ts';
import { createLogger } from '../../shared/logger.ts';
import { createPostgresDatabase } from '../../../test/databases.ts';
import { startServerProcess, type ServerProcess } from '../../../test/processes.ts';

/**
 * The expiry schedule as `npm start` runs it (src/main.ts, TOLLGATE_EXPIRY_INTERVAL_SECONDS): a
 * grant and a hold that nobody reads or touches after they lapse are expired by the server
 * process on its own. Expiry on read is tested elsewhere; here nothing reads the wallet.
 */
const masterKey = randomBytes(32).toString('hex');
let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
let server: ServerProcess | undefined;
let runtime: Awaited<ReturnType<typeof openRuntime>>;

beforeAll(async () => {
  database = await createPostgresDatabase();
  const env = { DATABASE_URL: database.url, TOLLGATE_MASTER_KEY: masterKey, REDIS_URL: '' };
  server = await startServerProcess({ ...env, TOLLGATE_EXPIRY_INTERVAL_SECONDS: '1' });
  runtime = await openRuntime(loadConfig({ ...env, NODE_ENV: 'test' }), createLogger('silent'));
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await runtime?.close();
  await database?.drop();
});

/** Raw SQL, so that reading does not itself expire anything (as the wallet query would). */
const sql = <T>(text: string, params: unknown[]) => runtime.services.db.withConnection((connection) => connection.query<T>(text, params));

async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, ms: number): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > until) return value;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

describe('the expiry schedule of a server process', () => {
  it('expires a lapsed grant (writing what remained off) and a lapsed hold, with no read to trigger them', { timeout: 60_000 }, async () => {
    const { merchant } = await runtime.services.merchants.create({ name: 'Scheduled expiry' });
    const customerId = (await runtime.services.customers.create(merchant.id, { externalId: 'lapsing' })).id;
    const system = { kind: 'system' as const, apiKeyId: null };
    const { grantId } = await runtime.services.ledger.grantCredits(merchant.id, system, {
      customerId, currency: 'USD', amountNanos: 3_000_000_000n, kind: 'PROMOTIONAL', idempotencyKey: 'lapsing-grant', expiresAt: new Date(Date.now() + 1500),
    });
    const { hold } = await runtime.services.ledger.createHold(merchant.id, system, {
      customerId, currency: 'USD', amountNanos: 1_000_000_000n, ttlSeconds: 1, idempotencyKey: 'lapsing-hold',
    });

    const grant = await waitFor(
      () => sql<{ expired_at: Date | null; remaining: string }>(`SELECT expired_at, remaining::text AS remaining FROM credit_grants WHERE id = $1`, [grantId]),
      (rows) => rows[0]?.expired_at != null,
      20_000,
    );
    expect(grant[0]).toMatchObject({ remaining: '0' });
    expect(grant[0]!.expired_at).toBeInstanceOf(Date);
    const expiries = await sql<{ amount: string; actor_kind: string }>(
      `SELECT amount::text AS amount, actor_kind FROM ledger_transactions WHERE merchant_id = $1 AND kind = 'EXPIRY'`, [merchant.id]);
    expect(expiries).toEqual([{ amount: '-3000000000', actor_kind: 'system' }]);

    const held = await waitFor(
      () => sql<{ status: string; finalized_by_kind: string | null }>(`SELECT status::text AS status, finalized_by_kind FROM holds WHERE id = $1`, [hold.id]),
      (rows) => rows[0]?.status !== 'PENDING',
      20_000,
    );
    expect(held[0]).toEqual({ status: 'EXPIRED', finalized_by_kind: 'system' });
    const [wallet] = await sql<{ balance: string }>(`SELECT balance::text AS balance FROM wallets WHERE customer_id = $1`, [customerId]);
    expect(wallet).toEqual({ balance: '0' });
  });
});
