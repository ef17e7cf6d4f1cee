import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import type { Database } from '../../shared/db/database.ts';
import { InMemoryPubSub } from '../../shared/pubsub.ts';
import { formatNanos } from '../../shared/money.ts';
import { walletTopic, type BalanceEvent } from '../ledger/ledger.service.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { BalanceCache } from './balance-cache.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.close();
});

/** The server's database, counting the reads the cache makes. */
function countingDb(): { db: Database; reads: () => number } {
  let reads = 0;
  const real = server.services.db;
  const db: Database = { ...real, withConnection: (work) => { reads += 1; return real.withConnection(work); } };
  return { db, reads: () => reads };
}

async function customerWith(credit: bigint) {
  const merchant = await server.createMerchant();
  const customer = await server.services.customers.create(merchant.id, { externalId: `c-${Math.random()}` });
  if (credit > 0n) {
    await server.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: credit, kind: 'PAID', idempotencyKey: 'seed' });
  }
  return { merchantId: merchant.id, customerId: customer.id };
}

const until = async (check: () => Promise<boolean>) => {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

describe('BalanceCache', () => {
  it('reads a wallet once, then follows the ledger’s balance events without reading again', async () => {
    const { db, reads } = countingDb();
    const cache = new BalanceCache(db, server.services.pubsub);
    try {
      const { merchantId, customerId } = await customerWith(5_000_000_000n);
      expect(await cache.get(customerId, 'USD')).toMatchObject({ available: 5_000_000_000n, overdraftLimit: 0n });
      expect(reads()).toBe(1);
      await server.services.ledger.debit(merchantId, SYSTEM_ACTOR, { customerId, currency: 'USD', amountAttos: 1_500_000_000n * 1_000_000_000n, idempotencyKey: 'd1' });
      await until(async () => (await cache.get(customerId, 'USD')).available === 3_500_000_000n);
      await server.services.ledger.createHold(merchantId, SYSTEM_ACTOR, { customerId, currency: 'USD', amountNanos: 500_000_000n, ttlSeconds: 60, idempotencyKey: 'h1' });
      await until(async () => (await cache.get(customerId, 'USD')).available === 3_000_000_000n);
      await server.services.ledger.setOverdraftLimit(merchantId, customerId, 'USD', 2_000_000_000n);
      await until(async () => (await cache.get(customerId, 'USD')).overdraftLimit === 2_000_000_000n);
      expect(reads()).toBe(1);
    } finally {
      cache.close();
    }
  });

  it('ignores an event of an older wallet state arriving late (from another instance), and one older than what it read', async () => {
    const cache = new BalanceCache(server.services.db, server.services.pubsub);
    const published: BalanceEvent[] = [];
    const pubsub = server.services.pubsub;
    const publish = pubsub.publish.bind(pubsub);
    try {
      const { merchantId, customerId } = await customerWith(5_000_000_000n);
      pubsub.publish = (topic, payload) => {
        if (topic === walletTopic(customerId)) published.push(payload as BalanceEvent);
        publish(topic, payload);
      };
      // Events are taken in order: once a marker in another currency shows, those before it were dealt with.
      const marked = async (available: string) => {
        publish(walletTopic(customerId), { customerId, currency: 'EUR', walletId: 'e', balance: available, available, overdraftLimit: '0.00', transactionIds: [], version: '1' });
        await until(async () => formatNanos((await cache.get(customerId, 'EUR')).available) === available);
      };
      expect(await cache.get(customerId, 'USD')).toMatchObject({ available: 5_000_000_000n });
      // A state older than the wallet read (version 1, the seed grant's), arriving after the read.
      publish(walletTopic(customerId), { customerId, currency: 'USD', walletId: 'w', balance: '1.00', available: '1.00', overdraftLimit: '0.00', transactionIds: [], version: '0' });
      await marked('8.00');
      expect(await cache.get(customerId, 'USD')).toMatchObject({ available: 5_000_000_000n });
      const grant = (idempotencyKey: string) => server.services.ledger.grantCredits(merchantId, SYSTEM_ACTOR, { customerId, currency: 'USD', amountNanos: 1_000_000_000n, kind: 'PAID', idempotencyKey });
      await grant('g1');
      await until(async () => (await cache.get(customerId, 'USD')).available === 6_000_000_000n);
      await grant('g2');
      await until(async () => (await cache.get(customerId, 'USD')).available === 7_000_000_000n);
      // The first grant's event again, after the second's.
      publish(walletTopic(customerId), published[0]!);
      await marked('9.00');
      expect(await cache.get(customerId, 'USD')).toMatchObject({ available: 7_000_000_000n });
    } finally {
      pubsub.publish = publish;
      cache.close();
    }
  });

  it('counts credit kept past its expiry for a pending hold as the hold\'s, not as expired', async () => {
    const cache = new BalanceCache(server.services.db, server.services.pubsub);
    try {
      const { merchantId, customerId } = await customerWith(0n);
      await server.services.ledger.grantCredits(merchantId, SYSTEM_ACTOR, {
        customerId, currency: 'USD', amountNanos: 5_000_000_000n, kind: 'PROMOTIONAL', expiresAt: new Date(Date.now() + 500), idempotencyKey: 'promo',
      });
      await server.services.ledger.createHold(merchantId, SYSTEM_ACTOR, { customerId, currency: 'USD', amountNanos: 4_000_000_000n, ttlSeconds: 60, idempotencyKey: 'h1' });
      await new Promise((resolve) => setTimeout(resolve, 600));
      // The lock keeps 4.00 for the hold and expires 1.00.
      await server.services.ledger.settleWallet(merchantId, customerId, 'USD');
      expect(await cache.refresh(customerId, 'USD')).toMatchObject({ available: 0n, balance: 4_000_000_000n });
    } finally {
      cache.close();
    }
  });

  it('before the wallet is locked, counts what its lock will keep for a pending hold as the hold\'s: the same answer as after', async () => {
    const cache = new BalanceCache(server.services.db, server.services.pubsub);
    try {
      const { merchantId, customerId } = await customerWith(0n);
      await server.services.ledger.setOverdraftLimit(merchantId, customerId, 'USD', 3_000_000_000n);
      await server.services.ledger.grantCredits(merchantId, SYSTEM_ACTOR, {
        customerId, currency: 'USD', amountNanos: 5_000_000_000n, kind: 'PROMOTIONAL', expiresAt: new Date(Date.now() + 500), idempotencyKey: 'promo',
      });
      await server.services.ledger.createHold(merchantId, SYSTEM_ACTOR, { customerId, currency: 'USD', amountNanos: 4_000_000_000n, ttlSeconds: 60, idempotencyKey: 'h1' });
      await new Promise((resolve) => setTimeout(resolve, 600));
      const before = await cache.refresh(customerId, 'USD');
      await server.services.ledger.settleWallet(merchantId, customerId, 'USD');
      const after = await cache.refresh(customerId, 'USD');
      expect(after).toMatchObject({ available: 0n, overdraftLimit: 3_000_000_000n });
      expect(before).toMatchObject({ available: after.available, overdraftLimit: after.overdraftLimit });
    } finally {
      cache.close();
    }
  });

  it('a customer without a wallet can spend nothing; refresh reads the database again', async () => {
    const { db, reads } = countingDb();
    const cache = new BalanceCache(db, server.services.pubsub);
    try {
      const { customerId } = await customerWith(0n);
      expect(await cache.get(customerId, 'USD')).toMatchObject({ available: 0n, overdraftLimit: 0n });
      expect(await cache.refresh(customerId, 'USD')).toMatchObject({ available: 0n });
      expect(reads()).toBe(2);
    } finally {
      cache.close();
    }
  });

  it('stays bounded: the least recently used customer is dropped and its subscription closed', async () => {
    const cache = new BalanceCache(server.services.db, server.services.pubsub, { maxCustomers: 2, ttlMs: 60_000 });
    try {
      const [a, b, c] = await Promise.all([customerWith(1n), customerWith(2n), customerWith(3n)]);
      await cache.get(a.customerId, 'USD');
      await cache.get(b.customerId, 'USD');
      await cache.get(a.customerId, 'USD');
      await cache.get(c.customerId, 'USD');
      expect(server.services.pubsub.subscriberCount(`wallet:${b.customerId}`)).toBe(0);
      expect(server.services.pubsub.subscriberCount(`wallet:${a.customerId}`)).toBe(1);
      expect(server.services.pubsub.subscriberCount(`wallet:${c.customerId}`)).toBe(1);
    } finally {
      cache.close();
    }
  });

  it('follows balances beyond 1e9 major units, and an event it cannot read does not end the watch', async () => {
    const { db, reads } = countingDb();
    const cache = new BalanceCache(db, server.services.pubsub);
    const units = (n: bigint) => n * 1_000_000_000n;
    try {
      const { merchantId, customerId } = await customerWith(units(2_000_000_000n));
      expect((await cache.get(customerId, 'USD')).available).toBe(units(2_000_000_000n));
      const charge = (major: bigint, idempotencyKey: string) =>
        server.services.ledger.debit(merchantId, SYSTEM_ACTOR, { customerId, currency: 'USD', amountAttos: units(units(major)), idempotencyKey });
      await charge(500_000_000n, 'd1');
      await until(async () => (await cache.get(customerId, 'USD')).available === units(1_500_000_000n));
      expect(reads()).toBe(1);

      // Something it cannot read (another version's event, say): skipped, and the entry read again.
      server.services.pubsub.publish(walletTopic(customerId), { customerId, currency: 'USD', walletId: 'w', balance: 'n/a', available: 'n/a', transactionIds: [] });
      await until(async () => (await cache.get(customerId, 'USD')).available === units(1_500_000_000n) && reads() === 2);
      await charge(1_000_000_000n, 'd2');
      await until(async () => (await cache.get(customerId, 'USD')).available === units(500_000_000n));
      expect(reads()).toBe(2);
    } finally {
      cache.close();
    }
  });

  it('keeps nothing while its subscription is not confirmed (Redis down), and reads the database again after the connection was lost', async () => {
    /** Events in process, with Redis's two troubles: subscriptions that cannot be confirmed, and a lost connection. */
    class FlakyPubSub extends InMemoryPubSub {
      up = false;
      private readonly onLost = new Set<() => void>();
      override ready(): Promise<void> {
        return this.up ? Promise.resolve() : Promise.reject(new Error('Redis is down'));
      }
      override onInterrupted(listener: () => void): () => void {
        this.onLost.add(listener);
        return () => void this.onLost.delete(listener);
      }
      interrupt(): void {
        for (const listener of this.onLost) listener();
      }
    }
    // The ledger publishes on the server's own bus: this cache hears of no change at all.
    const pubsub = new FlakyPubSub();
    const { db, reads } = countingDb();
    const cache = new BalanceCache(db, pubsub);
    try {
      const { merchantId, customerId } = await customerWith(5_000_000_000n);
      const started = Date.now();
      expect((await cache.get(customerId, 'USD')).available).toBe(5_000_000_000n);
      // A debit whose event this cache never hears of (it would have been lost with Redis away).
      await server.services.ledger.debit(merchantId, SYSTEM_ACTOR, { customerId, currency: 'USD', amountAttos: 1_000_000_000n * 1_000_000_000n, idempotencyKey: 'unheard' });
      expect((await cache.get(customerId, 'USD')).available).toBe(4_000_000_000n);
      expect({ reads: reads(), fast: Date.now() - started < 2000 }).toEqual({ reads: 2, fast: true });

      // Confirmed: read once more, then kept.
      pubsub.up = true;
      expect((await cache.get(customerId, 'USD')).available).toBe(4_000_000_000n);
      expect((await cache.get(customerId, 'USD')).available).toBe(4_000_000_000n);
      expect(reads()).toBe(3);

      // The connection is lost: what was kept is dropped, and not kept again until confirmed.
      pubsub.interrupt();
      pubsub.up = false;
      await server.services.ledger.debit(merchantId, SYSTEM_ACTOR, { customerId, currency: 'USD', amountAttos: 1_000_000_000n * 1_000_000_000n, idempotencyKey: 'lost' });
      expect((await cache.get(customerId, 'USD')).available).toBe(3_000_000_000n);
      expect((await cache.get(customerId, 'USD')).available).toBe(3_000_000_000n);
      expect(reads()).toBe(5);
    } finally {
      cache.close();
    }
  });
});
