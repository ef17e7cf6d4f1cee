import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { customerTopic } from '../src/modules/customers/customers.service.ts';
import { SYSTEM_ACTOR, walletTopic } from '../src/modules/ledger/ledger.service.ts';
import type { Services } from '../src/services.ts';
import { eventually, OwnRedis } from './own-redis.ts';
import { LivePushes } from './live-pushes.ts';
import { confirmed, startTwoInstances, type TwoInstances } from './two-instances.ts';

/**
 * Live subscriptions across an interruption of Redis. Two instances share one database and a
 * Redis of this file's own (stopped and started again here: never the shared one): A serves the
 * subscriptions, B makes the changes while Redis is away, so their events are lost for good.
 * TEST_REDIS_URL says this machine has Redis (CI sets it); without it the file is skipped.
 */

let redis: OwnRedis | undefined;
let instances: TwoInstances | undefined;
let a: TwoInstances['a'] | undefined;
let b: Services | undefined;
/** What B logged at warn and above: a publish it gave up on says so. */
let bLog: string[] = [];
let merchantId: string;
let secret: string;

const USD = 1_000_000_000_000_000_000n; // in atto-units


/** Redis stopped, and both instances know it (their subscriptions can no longer be confirmed). */
async function redisAway(): Promise<void> {
  await redis!.stop();
  expect(await eventually(async () => !(await confirmed(a!.services)) && !(await confirmed(b!)), 10_000)).toBe(true);
}

/** Redis started again, and both instances' subscriptions confirmed on it. */
async function redisBack(): Promise<void> {
  redis!.start();
  expect(await eventually(async () => (await confirmed(a!.services)) && (await confirmed(b!)), 20_000)).toBe(true);
}

/** Waits until B has given up `count` publishes in all: those events reach no instance, ever. */
async function publishesLost(count: number): Promise<void> {
  expect(await eventually(() => bLog.filter((line) => line.includes('failed to publish event')).length >= count, 15_000)).toBe(true);
}

/** Subscriptions on instance A. */
const pushes = new LivePushes(() => a!.url, () => secret);

async function subscribed(topic: string, count: number): Promise<void> {
  expect(await eventually(() => a!.services.pubsub.subscriberCount(topic) === count, 10_000)).toBe(true);
}

interface BalancePush { balanceUpdated: { balance: { amount: string }; transactionIds: string[]; version: string | null } }
interface CustomerPush { customerUpdated: { id: string; name: string | null } }

const BALANCE = 'subscription ($id: ID!, $c: String) { balanceUpdated(customerId: $id, currency: $c) { balance { amount } transactionIds version } }';
const CUSTOMER = 'subscription ($id: ID!) { customerUpdated(id: $id) { id name } }';

/** The wallet as instance A's API reads it: what the last push must show. */
async function walletOnA(customerId: string): Promise<{ version: string; balance: { amount: string } }> {
  const response = await fetch(`${a!.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
    body: JSON.stringify({ query: 'query ($id: ID!) { wallet(customerId: $id) { version balance { amount } } }', variables: { id: customerId } }),
  });
  const body = (await response.json()) as { data: { wallet: { version: string; balance: { amount: string } } } };
  return body.data.wallet;
}

const debitOnB = (customerId: string, amount: bigint, key: string) =>
  b!.ledger.debit(merchantId, SYSTEM_ACTOR, { customerId, currency: 'USD', amountAttos: amount * USD, idempotencyKey: key });

const balances = (pushed: BalancePush[]) => pushed.map((push) => ({ balance: push.balanceUpdated.balance.amount, version: push.balanceUpdated.version }));

describe.skipIf(!process.env.TEST_REDIS_URL)('subscriptions while Redis is interrupted', () => {
  beforeAll(async () => {
    redis = await OwnRedis.onFreePort();
    redis.start();
    instances = await startTwoInstances({ a: redis.url, b: redis.url });
    ({ a, b, bLog } = instances);
    const { merchant, key } = await a.services.merchants.create({ name: 'Outage merchant' });
    merchantId = merchant.id;
    secret = key.secret;
  });

  afterAll(async () => {
    await pushes.dispose();
    await instances?.close();
    await redis?.stop();
  });

  it('pushes the wallet and the customer as they are once Redis is back, after changes made on another instance while it was away', { timeout: 90_000 }, async () => {
    const customer = await a!.services.customers.create(merchantId, { externalId: 'outage-1', name: 'Before' });
    await b!.ledger.grantCredits(merchantId, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: 10_000_000_000n, kind: 'PAID', idempotencyKey: 'outage-1-grant' });
    const pushedBalances = pushes.watch<BalancePush>(BALANCE, { id: customer.id, c: null });
    const pushedCustomers = pushes.watch<CustomerPush>(CUSTOMER, { id: customer.id });
    await subscribed(walletTopic(customer.id), 1);
    await subscribed(customerTopic(customer.id), 1);
    expect(await eventually(() => confirmed(a!.services), 10_000)).toBe(true);

    // Across instances while Redis is up.
    await debitOnB(customer.id, 3n, 'outage-1-d1');
    expect(await eventually(() => pushedBalances.length === 1, 10_000)).toBe(true);
    expect(balances(pushedBalances)).toEqual([{ balance: '7.00', version: '2' }]);

    await redisAway();
    await debitOnB(customer.id, 2n, 'outage-1-d2');
    await b!.customers.update(merchantId, customer.id, { name: 'During' });
    await publishesLost(2);
    expect({ balances: balances(pushedBalances), customers: pushedCustomers.length }).toEqual({ balances: [{ balance: '7.00', version: '2' }], customers: 0 });

    await redisBack();
    // Read afresh on A, with its version: the last push is the wallet as it is.
    expect(await eventually(() => pushedBalances.length === 2 && pushedCustomers.length === 1, 15_000)).toBe(true);
    const wallet = await walletOnA(customer.id);
    expect(wallet).toEqual({ version: '3', balance: { amount: '5.00' } });
    expect(pushedBalances[1]!.balanceUpdated).toEqual({ balance: { amount: '5.00' }, transactionIds: [], version: '3' });
    expect(pushedCustomers).toEqual([{ customerUpdated: { id: customer.id, name: 'During' } }]);

    // The subscriptions carry on: the next change arrives as usual, in version order.
    await debitOnB(customer.id, 1n, 'outage-1-d3');
    expect(await eventually(() => pushedBalances.length === 3, 10_000)).toBe(true);
    expect(balances(pushedBalances)).toEqual([
      { balance: '7.00', version: '2' },
      { balance: '5.00', version: '3' },
      { balance: '4.00', version: '4' },
    ]);
  });

  it('pushes the wallet as it is once Redis is back to a subscription started while it was away', { timeout: 90_000 }, async () => {
    const customer = await a!.services.customers.create(merchantId, { externalId: 'outage-2' });
    await b!.ledger.grantCredits(merchantId, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: 10_000_000_000n, kind: 'PAID', idempotencyKey: 'outage-2-grant' });
    const lostBefore = bLog.filter((line) => line.includes('failed to publish event')).length;

    await redisAway();
    const pushedBalances = pushes.watch<BalancePush>(BALANCE, { id: customer.id, c: 'USD' });
    await subscribed(walletTopic(customer.id), 1);
    await debitOnB(customer.id, 4n, 'outage-2-d1');
    await publishesLost(lostBefore + 1);

    await redisBack();
    expect(await eventually(() => pushedBalances.length === 1, 15_000)).toBe(true);
    expect(await walletOnA(customer.id)).toEqual({ version: '2', balance: { amount: '6.00' } });
    expect(balances(pushedBalances)).toEqual([{ balance: '6.00', version: '2' }]);
  });
});
