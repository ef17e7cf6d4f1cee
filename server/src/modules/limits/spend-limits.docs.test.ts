import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';

// Mid-month, so that the month cannot end between the charges and the read.
const now = new Date('2026-03-15T12:00:00Z');
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

const SET_LIMIT = `mutation ($customerId: ID!, $amount: Decimal!) { setSpendLimit(customerId: $customerId, amount: $amount) { spentThisMonth } }`;
const RECORD = `mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { chargeError { code } event { status charge } } }`;
const DEBIT = `mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed } }`;
const LIMITS = `query ($id: ID!) { customer(id: $id) { spendLimits { limit { amount } spentThisMonth } } }`;
const DOCS = `{ type: __type(name: "SpendLimit") { description fields { name description } } mutation: __type(name: "Mutation") { fields { name description } } }`;

describe('spend limits as documented', () => {
  it('SpendLimit says what it limits: recorded usage is charged past it (only the gateway refuses calls), and direct debits do not count in spentThisMonth', async () => {
    const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
    const gql = (query: string, variables?: Record<string, unknown>) => server.graphql<any>(query, variables, merchant.secret);
    const { services } = server;
    const customer = await services.customers.create(merchant.id, { externalId: `u-${randomUUID().slice(0, 8)}` });
    await services.meters.create(merchant.id, { key: 'calls', name: 'Calls', unit: 'call', source: 'REQUESTS' });
    await services.priceRules.put(merchant.id, { name: 'calls', type: 'FLAT', meterKey: 'calls', config: { unitPrice: '1.00' }, effectiveFrom: new Date('2025-01-01') });
    await services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '100'), kind: 'PAID', idempotencyKey: 'seed' });
    expect((await gql(SET_LIMIT, { customerId: customer.id, amount: '2' })).errors).toBeUndefined();

    // What the code does: recording is never refused for the limit (post-request metering: the usage happened)...
    for (let i = 0; i < 3; i++) {
      const recorded = await gql(RECORD, { input: { customer: customer.id, idempotencyKey: `call-${i}`, usage: { provider: 'custom', model: 'm', requests: 1 } } });
      expect(recorded.errors).toBeUndefined();
      expect(recorded.data.recordUsage).toEqual({ chargeError: null, event: { status: 'CHARGED', charge: '1.00' } });
    }
    // ...and a direct debit is a charge that spentThisMonth does not count.
    expect((await gql(DEBIT, { input: { customerId: customer.id, amount: '10', idempotencyKey: 'debit' } })).errors).toBeUndefined();
    expect((await gql(LIMITS, { id: customer.id })).data.customer.spendLimits).toEqual([{ limit: { amount: '2.00' }, spentThisMonth: '3.00' }]);

    // What the API says must match: not "the most a customer may be charged".
    const docs = (await gql(DOCS)).data;
    const limitDoc: string = docs.type.description;
    const spentDoc: string = docs.type.fields.find((field: { name: string }) => field.name === 'spentThisMonth').description;
    const setDoc: string = docs.mutation.fields.find((field: { name: string }) => field.name === 'setSpendLimit').description;
    expect(limitDoc).not.toMatch(/most a customer may be charged/i);
    for (const doc of [limitDoc, setDoc]) {
      expect(doc).toMatch(/gateway/);
      expect(doc).toMatch(/recordUsage/);
    }
    expect(spentDoc).toMatch(/usage/i);
    expect(spentDoc).toMatch(/debitCredits/);
  });
});
