import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BalanceCache } from '../src/modules/gateway/balance-cache.ts';
import { customerTopic } from '../src/modules/customers/customers.service.ts';
import { SYSTEM_ACTOR, walletTopic } from '../src/modules/ledger/ledger.service.ts';
import type { Services } from '../src/services.ts';
import { eventually, OwnRedis } from './own-redis.ts';
import { LivePushes } from './live-pushes.ts';
import { confirmed, startTwoInstances, type TwoInstances } from './two-instances.ts';
import { TcpRelay } from './tcp-relay.ts';

/**
 * The publishing instance alone loses Redis. Two instances share one database and a Redis of this
 * file's own: A serves a live subscription and keeps a gateway balance cache; B makes the changes
 * and reaches Redis through a relay the test cuts, so B gives up publishing their events while A's
 * connection stays up and A sees nothing amiss. Once B is connected again, A's subscribers and
 * its cache must show the changes without the wallet changing again.
 * TEST_REDIS_URL says this machine has Redis (CI sets it); without it the file is skipped.
 */

let redis: OwnRedis | undefined;
let relay: TcpRelay | undefined;
let instances: TwoInstances | undefined;
let a: TwoInstances['a'] | undefined;
let b: Services | undefined;
/** The gateway's balance cache as instance A keeps one (kept current by the same events). */
let cacheOnA: BalanceCache | undefined;
/** What B logged at warn and above: a publish it gave up on says so. */
let bLog: string[] = [];
let merchantId: string;
let secret: string;

const USD = 1_000_000_000_000_000_000n; // in atto-units
const NANOS = 1_000_000_000n;

const publishesGivenUp = () => bLog.filter((line) => line.includes('failed to publish event')).length;
const rereadsAsked = () => bLog.filter((line) => line.includes('asked every instance to re-read')).length;

/** Subscriptions on instance A. */
const pushes = new LivePushes(() => a!.url, () => secret);

interface BalancePush { balanceUpdated: { balance: { amount: string }; version: string | null } }
interface CustomerPush { customerUpdated: { id: string; name: string | null } }

const BALANCE = 'subscription ($id: ID!) { balanceUpdated(customerId: $id, currency: "USD") { balance { amount } version } }';
const CUSTOMER = 'subscription ($id: ID!) { customerUpdated(id: $id) { id name } }';

const balances = (pushed: BalancePush[]) => pushed.map((push) => ({ balance: push.balanceUpdated.balance.amount, version: push.balanceUpdated.version }));
const availableOnA = async (customerId: string) => (await cacheOnA!.get(customerId, 'USD')).available;

const debitOnB = (customerId: string, amount: bigint, key: string) =>
  b!.ledger.debit(merchantId, SYSTEM_ACTOR, { customerId, currency: 'USD', amountAttos: amount * USD, idempotencyKey: key });

describe.skipIf(!process.env.TEST_REDIS_URL)('subscriptions while the publishing instance alone has lost Redis', () => {
  beforeAll(async () => {
    redis = await OwnRedis.onFreePort();
    redis.start();
    relay = new TcpRelay({ host: '127.0.0.1', port: redis.port });
    const relayUrl = `redis://127.0.0.1:${await relay.listen()}`;
    instances = await startTwoInstances({ a: redis.url, b: relayUrl });
    ({ a, b, bLog } = instances);
    cacheOnA = new BalanceCache(instances.database.db, instances.a.services.pubsub);
    const { merchant, key } = await a.services.merchants.create({ name: 'Publisher outage merchant' });
    merchantId = merchant.id;
    secret = key.secret;
  });

  afterAll(async () => {
    await pushes.dispose();
    cacheOnA?.close();
    await instances?.close();
    await relay?.close();
    await redis?.stop();
  });

  it("brings another instance's subscribers and balance cache up to date once the publisher is connected again", { timeout: 90_000 }, async () => {
    const customer = await a!.services.customers.create(merchantId, { externalId: 'publisher-outage-1', name: 'Before' });
    await b!.ledger.grantCredits(merchantId, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: 10n * NANOS, kind: 'PAID', idempotencyKey: 'po-1-grant' });
    const pushedBalances = pushes.watch<BalancePush>(BALANCE, { id: customer.id });
    const pushedCustomers = pushes.watch<CustomerPush>(CUSTOMER, { id: customer.id });
    expect(await eventually(() => a!.services.pubsub.subscriberCount(walletTopic(customer.id)) === 1 && a!.services.pubsub.subscriberCount(customerTopic(customer.id)) === 1, 10_000)).toBe(true);
    expect(await eventually(() => confirmed(a!.services), 10_000)).toBe(true);

    // While B is connected: its change reaches A's subscriber and A's cache.
    await debitOnB(customer.id, 3n, 'po-1-d1');
    expect(await eventually(() => pushedBalances.length === 1, 10_000)).toBe(true);
    expect(balances(pushedBalances)).toEqual([{ balance: '7.00', version: '2' }]);
    expect(await eventually(async () => (await availableOnA(customer.id)) === 7n * NANOS, 10_000)).toBe(true);

    // B alone loses Redis; A stays connected and has no reason to re-read anything.
    relay!.cut();
    expect(await eventually(async () => !(await confirmed(b!)), 10_000)).toBe(true);
    const givenUpBefore = publishesGivenUp();
    await debitOnB(customer.id, 2n, 'po-1-d2');
    await b!.customers.update(merchantId, customer.id, { name: 'During' });
    expect(await eventually(() => publishesGivenUp() >= givenUpBefore + 2, 20_000)).toBe(true);
    expect(await confirmed(a!.services)).toBe(true);
    expect({ balances: balances(pushedBalances), customers: pushedCustomers.length, cached: await availableOnA(customer.id) }).toEqual({
      balances: [{ balance: '7.00', version: '2' }],
      customers: 0,
      cached: 7n * NANOS,
    });

    // B connected again: A catches up without another change to the wallet or the customer.
    relay!.restore();
    expect(await eventually(() => confirmed(b!), 20_000)).toBe(true);
    expect(await eventually(() => pushedBalances.length === 2 && pushedCustomers.length === 1, 15_000)).toBe(true);
    expect(balances(pushedBalances)).toEqual([
      { balance: '7.00', version: '2' },
      { balance: '5.00', version: '3' },
    ]);
    expect(pushedCustomers).toEqual([{ customerUpdated: { id: customer.id, name: 'During' } }]);
    // Well within the cache's own lifetime (60 s): the lost event no longer leaves it stale.
    expect(await eventually(async () => (await availableOnA(customer.id)) === 5n * NANOS, 15_000)).toBe(true);

    // And carries on as usual.
    await debitOnB(customer.id, 1n, 'po-1-d3');
    expect(await eventually(() => pushedBalances.length === 3, 10_000)).toBe(true);
    expect(balances(pushedBalances)[2]).toEqual({ balance: '4.00', version: '4' });
    expect(await eventually(async () => (await availableOnA(customer.id)) === 4n * NANOS, 10_000)).toBe(true);
  });

  it('does not make up twice for a Redis restart: what the publisher lost before another instance reconnected, that one has re-read', { timeout: 90_000 }, async () => {
    const customer = await a!.services.customers.create(merchantId, { externalId: 'publisher-outage-2', name: 'Before' });
    const pushedCustomers = pushes.watch<CustomerPush>(CUSTOMER, { id: customer.id });
    expect(await eventually(() => a!.services.pubsub.subscriberCount(customerTopic(customer.id)) === 1, 10_000)).toBe(true);
    expect(await eventually(() => confirmed(a!.services), 10_000)).toBe(true);

    // Redis away for everyone; B's change is lost.
    relay!.cut();
    await redis!.stop();
    expect(await eventually(async () => !(await confirmed(a!.services)) && !(await confirmed(b!)), 10_000)).toBe(true);
    const givenUpBefore = publishesGivenUp();
    await b!.customers.update(merchantId, customer.id, { name: 'During' });
    expect(await eventually(() => publishesGivenUp() > givenUpBefore, 20_000)).toBe(true);

    // A is back first, and re-reads on its own.
    redis!.start();
    expect(await eventually(() => confirmed(a!.services), 20_000)).toBe(true);
    expect(await eventually(() => pushedCustomers.length === 1, 15_000)).toBe(true);
    let interruptions = 0;
    const stop = a!.services.pubsub.onInterrupted(() => (interruptions += 1));
    try {
      // Then B, which asks for a re-read of what it lost: A has it already.
      const askedBefore = rereadsAsked();
      relay!.restore();
      expect(await eventually(() => confirmed(b!), 20_000)).toBe(true);
      expect(await eventually(() => rereadsAsked() > askedBefore, 10_000)).toBe(true);
      // A later event comes over A's connection after the request: once it is here, A has had both.
      await b!.customers.update(merchantId, customer.id, { name: 'After' });
      expect(await eventually(() => pushedCustomers.length >= 2, 10_000)).toBe(true);
      expect({ interruptions, pushed: pushedCustomers.map((push) => push.customerUpdated.name) }).toEqual({ interruptions: 0, pushed: ['During', 'After'] });
    } finally {
      stop();
    }
  });
});
