import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';

const now = new Date('2026-03-15T12:00:00Z');
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

const SET_PLAN = `mutation ($customerId: ID!, $planKey: String, $from: DateTime) { setCustomerPlan(customerId: $customerId, planKey: $planKey, effectiveFrom: $from) { id } }`;
const DOC = `{ __type(name: "Mutation") { fields { name description } } }`;

describe('setCustomerPlan as documented', () => {
  it('says that effectiveFrom must come after usage already priced, and that "now" follows usage stamped ahead', async () => {
    const { services } = server;
    const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
    const gql = (query: string, variables?: Record<string, unknown>) => server.graphql<any>(query, variables, merchant.secret);
    const customer = await services.customers.create(merchant.id, { externalId: `u-${randomUUID().slice(0, 8)}` });
    await services.plans.put(merchant.id, { key: 'pro', name: 'Pro' });
    await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '10'), kind: 'PAID', idempotencyKey: 'seed' });
    const ahead = new Date(now.getTime() + 120_000);
    const [recorded] = await services.usage.record(merchant.id, SYSTEM_ACTOR, [{ customer: customer.id, idempotencyKey: 'ahead', usage: { provider: 'custom', model: 'm', requests: 1 }, timestamp: ahead }]);
    expect(recorded!.ok).toBe(true);

    // No plan change before: a back-dated change is refused for the usage already priced alone.
    const backdated = await gql(SET_PLAN, { customerId: customer.id, planKey: 'pro', from: '2026-03-01T00:00:00Z' });
    expect(backdated.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'effectiveFrom' });
    // "Now" is moved just past the usage stamped ahead.
    expect((await gql(SET_PLAN, { customerId: customer.id, planKey: 'pro' })).errors).toBeUndefined();
    const [row] = await services.prisma.customerPlan.findMany({ where: { customerId: customer.id } });
    expect(row!.effectiveFrom.toISOString()).toBe(new Date(ahead.getTime() + 1).toISOString());

    const doc: string = (await gql(DOC)).data.__type.fields.find((field: { name: string }) => field.name === 'setCustomerPlan').description;
    expect(doc).toMatch(/usage already priced/);
    expect(doc).toMatch(/a millisecond after such usage/);
  });
});
