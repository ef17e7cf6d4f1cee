import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/server.ts';

/** The DateTime scalar through the real API: ISO 8601 with a zone, read exactly, or VALIDATION. */
let server: TestServer;
let merchant: { id: string; secret: string };

beforeAll(async () => {
  server = await startTestServer();
  merchant = await server.createMerchant();
  await server.services.plans.put(merchant.id, { key: 'pro', name: 'Pro' });
});
afterAll(() => server?.close());

const gql = (query: string, variables: Record<string, unknown> = {}) => server.graphql<any>(query, variables, merchant.secret);
const SET_PLAN = 'mutation ($customerId: ID!, $from: DateTime) { setCustomerPlan(customerId: $customerId, planKey: "pro", effectiveFrom: $from) { id } }';

/** The instant the API stored for `text`: a fresh customer put on a plan from then. */
async function storedInstant(text: string): Promise<string> {
  const customer = await server.services.customers.create(merchant.id, { externalId: `c-${randomUUID()}` });
  const result = await gql(SET_PLAN, { customerId: customer.id, from: text });
  expect(result.errors, text).toBeUndefined();
  const [row] = await server.services.prisma.customerPlan.findMany({ where: { customerId: customer.id } });
  return row!.effectiveFrom.toISOString();
}

describe('DateTime', () => {
  it('reads ISO 8601 times by their zone, and a date alone as midnight UTC', async () => {
    const cases: [string, string][] = [
      ['2026-04-01T12:00:00Z', '2026-04-01T12:00:00.000Z'],
      ['2026-04-01T12:00Z', '2026-04-01T12:00:00.000Z'],
      ['2026-04-01T14:00:00.25+02:00', '2026-04-01T12:00:00.250Z'],
      ['2026-01-01T00:30:00-01:30', '2026-01-01T02:00:00.000Z'],
      ['2026-01-01T00:00:00+01:00', '2025-12-31T23:00:00.000Z'],
      ['2024-02-29T00:00:00Z', '2024-02-29T00:00:00.000Z'],
      ['2026-04-01', '2026-04-01T00:00:00.000Z'],
      ['0050-03-10T08:00:00Z', '0050-03-10T08:00:00.000Z'],
    ];
    for (const [text, instant] of cases) expect(await storedInstant(text), text).toBe(instant);
  });

  it('refuses, as VALIDATION and with nothing written, text that is not one ISO 8601 instant', async () => {
    const customer = await server.services.customers.create(merchant.id, { externalId: `c-${randomUUID()}` });
    const refused = [
      '2026-02-30T00:00:00Z', // would roll over to March 2nd
      '2026-02-29', // not a leap year
      '2026-04-31T00:00:00Z',
      '2026-13-01T00:00:00Z',
      '2026-04-01T24:00:00Z',
      '2026-04-01T12:60:00Z',
      '2026-04-01T12:00:00', // no zone: would be read in the server's own zone
      '2026-04-01T12:00',
      '2026-04-01 12:00:00Z',
      '2026-04-01T12:00:00+0200',
      '2026-04-01T12:00:00+24:00',
      '1', // was 2001-01-01
      '2026',
      'April 1, 2026',
      'Wed, 01 Apr 2026 12:00:00 GMT',
      '',
    ];
    for (const text of refused) {
      const result = await gql(SET_PLAN, { customerId: customer.id, from: text });
      expect(result.errors?.[0]?.extensions.code, text).toBe('VALIDATION');
      expect(result.errors?.[0]?.message, text).toContain('DateTime must be an ISO-8601 date and time with its zone');
    }
    // Outside years 1-9999, however written: still refused by range.
    for (const text of ['+010000-01-01T00:00:00Z', '0000-12-31T00:00:00Z', '0001-01-01T00:00:00+01:00']) {
      const result = await gql(SET_PLAN, { customerId: customer.id, from: text });
      expect(result.errors?.[0]?.message, text).toContain('between the years 1 and 9999');
    }
    expect(await server.services.prisma.customerPlan.count({ where: { customerId: customer.id } })).toBe(0);
  });

  it('refuses an impossible date written in the query itself', async () => {
    const result = await gql('{ customers(filter: { createdAfter: "2026-02-30T00:00:00Z" }) { totalCount } }');
    expect(result.errors?.[0]?.extensions.code).toBe('VALIDATION');
    const fine = await gql('{ customers(filter: { createdAfter: "2026-02-28T00:00:00+09:00" }) { totalCount } }');
    expect(fine.errors).toBeUndefined();
  });
});
