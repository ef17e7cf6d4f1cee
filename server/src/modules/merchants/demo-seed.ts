import type { PrismaClient } from '../../generated/prisma/client.ts';
import type { Services } from '../../services.ts';
import { inPrismaTransaction } from '../../shared/db/prisma-transaction.ts';

/**
 * First run only: a demo merchant with a secret key and one customer, so a newcomer can
 * query something straight away. Returns undefined once any merchant exists.
 *
 * All or nothing, in one transaction: a merchant left without its customer, or with a key that
 * was never printed, would stop every later start from seeding. Under an advisory lock, so two
 * instances starting together on an empty database seed once: the second waits, then finds the
 * first one's merchant.
 */
export async function seedDemoMerchant(services: Services) {
  return inPrismaTransaction(services.prisma, async ({ client }) => {
    await client.$queryRaw`SELECT 1 AS locked FROM pg_advisory_xact_lock(hashtextextended('tollgate:demo-seed', 0))`;
    if ((await client.merchant.count()) > 0) return undefined;
    const { merchant, key } = await services.merchants.createWithin(client as PrismaClient, { name: 'Demo merchant' });
    await client.customer.create({
      data: { merchantId: merchant.id, externalId: 'demo-user-1', email: 'ada@example.com', name: 'Ada Lovelace', metadata: { plan: 'demo' } },
    });
    return { merchant, secret: key.secret };
  });
}
