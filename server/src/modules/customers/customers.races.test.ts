import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PrismaClient } from '../../generated/prisma/client.ts';
import { testServerWithMerchant, type TestServer } from '../../../test/server.ts';
import { CustomerService } from './customers.service.ts';

let server: TestServer;
let merchant: { id: string; secret: string };
const { start, close } = testServerWithMerchant();

beforeAll(async () => ({ server, merchant } = await start()));
afterAll(close);

/**
 * The server's Prisma client, except that `customer.findFirst` (how the service reads a customer
 * before changing it) waits for `release` once it has read: a second caller that read the
 * customer before the first one's change committed, as two requests at once can.
 */
function stalledReads(prisma: PrismaClient, release: Promise<void>): PrismaClient {
  const bound = (target: object, prop: string | symbol) => {
    const value = Reflect.get(target, prop) as unknown;
    return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
  };
  const customer = new Proxy(prisma.customer, {
    get: (target, prop) =>
      prop === 'findFirst'
        ? async (...args: unknown[]) => {
            const row = await (target.findFirst as (...a: unknown[]) => Promise<unknown>)(...args);
            await release;
            return row;
          }
        : bound(target, prop),
  });
  return new Proxy(prisma, { get: (target, prop) => (prop === 'customer' ? customer : bound(target, prop)) });
}

describe('archiveCustomer at once from two callers', () => {
  it('keeps the first archive time: the later call answers it and does not move it later', async () => {
    const { id } = await server.services.customers.create(merchant.id, { externalId: 'archived-twice' });
    let release!: () => void;
    const late = new CustomerService(stalledReads(server.services.prisma, new Promise<void>((resolve) => (release = resolve))), server.services.pubsub);
    // The late caller has read the customer (not archived yet) when the first archive commits.
    const second = late.archive(merchant.id, id);
    const first = await server.services.customers.archive(merchant.id, id);
    await new Promise((resolve) => setTimeout(resolve, 20));
    release();
    const answered = await second;
    const stored = await server.services.customers.get(merchant.id, id);
    expect(stored.archivedAt).toEqual(first.archivedAt);
    expect(answered.archivedAt).toEqual(first.archivedAt);
  });
});

describe('blockCustomer at once from two callers', () => {
  it('keeps the first block time: the later call answers it and does not move it later', async () => {
    const { id } = await server.services.customers.create(merchant.id, { externalId: 'blocked-twice' });
    let release!: () => void;
    const late = new CustomerService(stalledReads(server.services.prisma, new Promise<void>((resolve) => (release = resolve))), server.services.pubsub);
    // The late caller has read the customer (not blocked yet) when the first block commits.
    const second = late.block(merchant.id, id, 'chargeback, again');
    const first = await server.services.customers.block(merchant.id, id, 'chargeback');
    await new Promise((resolve) => setTimeout(resolve, 20));
    release();
    const answered = await second;
    const stored = await server.services.customers.get(merchant.id, id);
    expect(first.blockedAt).not.toBeNull();
    expect(stored.blockedAt).toEqual(first.blockedAt);
    expect(answered.blockedAt).toEqual(first.blockedAt);
    // Blocking a blocked customer again still changes its reason, as it did one after the other.
    expect(answered.blockedReason).toBe('chargeback, again');
    expect(stored.blockedReason).toBe('chargeback, again');
  });
});
