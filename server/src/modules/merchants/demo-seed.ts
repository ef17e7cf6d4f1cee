import type { Services } from '../../services.ts';

/**
 * First run only: a demo merchant with a secret key and one customer, so a newcomer can
 * query something straight away. Returns undefined once any merchant exists.
 */
export async function seedDemoMerchant(services: Services) {
  if ((await services.merchants.count()) > 0) return undefined;
  const { merchant, key } = await services.merchants.create({ name: 'Demo merchant' });
  await services.customers.create(merchant.id, {
    externalId: 'demo-user-1',
    email: 'ada@example.com',
    name: 'Ada Lovelace',
    metadata: { plan: 'demo' },
  });
  return { merchant, secret: key.secret };
}
