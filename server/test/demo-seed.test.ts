/**
 * The demo merchant seeded on a first start (TOLLGATE_SEED_DEMO): all of it or nothing, so a
 * failed seed is tried again on the next start, and once, even with two instances starting
 * together on an empty database.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { seedDemoMerchant } from '../src/modules/merchants/demo-seed.ts';
import { openRuntime } from '../src/runtime.ts';
import type { Services } from '../src/services.ts';
import { openDatabase } from '../src/shared/db/database.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createTestDatabase } from './databases.ts';
import { testConfig } from './server.ts';

const opened: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of opened.splice(0).reverse()) await close();
});

/**
 * Two instances on one empty database: on PostgreSQL each with its own connections, as two
 * processes have; PGlite has one connection, so there the two are one runtime's services.
 */
async function twoInstances(): Promise<[Services, Services]> {
  const database = await createTestDatabase();
  opened.push(() => database.close());
  const config = testConfig();
  const logger = createLogger('silent');
  const first = await openRuntime(config, logger, { db: database.db });
  opened.push(() => first.close());
  if (!database.url) return [first.services, first.services];
  const second = await openRuntime(config, logger, { db: await openDatabase({ kind: 'postgres', url: database.url }) });
  opened.push(() => second.close());
  return [first.services, second.services];
}

async function seededRows(services: Services) {
  const prisma = services.prisma;
  return { merchants: await prisma.merchant.count(), apiKeys: await prisma.apiKey.count(), customers: await prisma.customer.count() };
}

describe('seedDemoMerchant', () => {
  it('writes nothing when the demo customer cannot be written, and seeds in full on the next start', async () => {
    const [services] = await twoInstances();
    await services.prisma.$executeRawUnsafe(`CREATE FUNCTION refuse_customers() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'customers refused'; END $$`);
    await services.prisma.$executeRawUnsafe(`CREATE TRIGGER refuse_customers BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION refuse_customers()`);
    await expect(seedDemoMerchant(services)).rejects.toThrow(/customers refused/);
    // No merchant left behind without its customer, and with a key nobody was shown.
    expect(await seededRows(services)).toEqual({ merchants: 0, apiKeys: 0, customers: 0 });

    await services.prisma.$executeRawUnsafe(`DROP TRIGGER refuse_customers ON customers`);
    const seeded = await seedDemoMerchant(services);
    expect(seeded?.secret).toMatch(/^sk_test_/);
    expect(await seededRows(services)).toEqual({ merchants: 1, apiKeys: 1, customers: 1 });
    expect((await services.customers.getByExternalId(seeded!.merchant.id, 'demo-user-1')).email).toBe('ada@example.com');
    expect(await seedDemoMerchant(services)).toBeUndefined();
  });

  it('seeds one demo merchant when two instances start together on an empty database', async () => {
    const [first, second] = await twoInstances();
    const results = await Promise.all([seedDemoMerchant(first), seedDemoMerchant(second), seedDemoMerchant(first), seedDemoMerchant(second)]);
    expect(results.filter((result) => result !== undefined)).toHaveLength(1);
    expect(await seededRows(first)).toEqual({ merchants: 1, apiKeys: 1, customers: 1 });
  });
});
