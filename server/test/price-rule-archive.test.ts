import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDecimalAttos } from '../src/shared/money.ts';
import { blankUsage } from '../src/modules/usage/usage.types.ts';
import { startTestServer, type TestServer } from './server.ts';

/** archivePriceRule stops a rule from now, also when a later version of it is scheduled. */
const DAY = 24 * 3600 * 1000;
let now = new Date();
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

const PUT_RULE = 'mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id } }';
const ARCHIVE_RULE = 'mutation ($name: String!) { archivePriceRule(name: $name) { id effectiveFrom archivedAt } }';
/** 1,000 input and 500 output tokens at $1 / $2 per million: a cost of exactly $0.002. */
const USAGE = blankUsage({ provider: 'acme', model: 'm1', inputTokens: 1000, outputTokens: 500, requests: 1 });
const COST = parseDecimalAttos('x', '0.002');

describe('archivePriceRule with a later version scheduled', () => {
  it('ends the version in force now, and the scheduled one never takes effect', async () => {
    const start = new Date();
    now = start;
    const merchant = await server.createMerchant();
    const gql = async (query: string, variables: Record<string, unknown>) => {
      const result = await server.graphql<any>(query, variables, merchant.secret);
      expect(result.errors).toBeUndefined();
      return result.data;
    };
    await server.services.providerPrices.add(merchant.id, { provider: 'acme', model: 'm1', perMillionTokens: { input: '1.00', output: '2.00' }, effectiveFrom: new Date(start.getTime() - 30 * DAY) });
    const markup = (percent: string, effectiveFrom: Date) => gql(PUT_RULE, { input: { name: 'markup', type: 'MARKUP', config: { percent }, effectiveFrom: effectiveFrom.toISOString() } });
    await markup('100', new Date(start.getTime() - DAY));
    await markup('200', new Date(start.getTime() + 7 * DAY));
    const chargeAt = async (at: Date) => {
      now = at;
      return (await server.services.usage.quote(merchant.id, USAGE)).chargeAttos;
    };
    const soon = new Date(start.getTime() + 60_000);
    const afterSchedule = new Date(start.getTime() + 8 * DAY);
    expect(await chargeAt(soon)).toBe(2n * COST);
    expect(await chargeAt(afterSchedule)).toBe(3n * COST);

    const archived = (await gql(ARCHIVE_RULE, { name: 'markup' })).archivePriceRule;
    expect(new Date(archived.archivedAt).getTime()).toBeGreaterThanOrEqual(start.getTime());
    // The cost passes through unmarked, now and once the scheduled date has come.
    expect(await chargeAt(soon)).toBe(COST);
    expect(await chargeAt(afterSchedule)).toBe(COST);
    // Earlier events keep their price.
    expect(await chargeAt(new Date(start.getTime() - 60_000))).toBe(2n * COST);

    // Every version that would be in force from now on is archived.
    const versions = await server.services.priceRules.allVersions(merchant.id);
    expect(versions.map((version) => version.archivedAt?.toISOString())).toEqual([archived.archivedAt, archived.archivedAt]);

    // Archiving again changes nothing.
    expect((await gql(ARCHIVE_RULE, { name: 'markup' })).archivePriceRule).toEqual(archived);
  });

  it('a rule with only a scheduled version never takes effect', async () => {
    const start = new Date();
    now = start;
    const merchant = await server.createMerchant();
    await server.services.providerPrices.add(merchant.id, { provider: 'acme', model: 'm1', perMillionTokens: { input: '1.00', output: '2.00' }, effectiveFrom: new Date(start.getTime() - 30 * DAY) });
    await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '100' }, effectiveFrom: new Date(start.getTime() + DAY) });
    await server.services.priceRules.archive(merchant.id, 'markup');
    now = new Date(start.getTime() + 2 * DAY);
    expect((await server.services.usage.quote(merchant.id, USAGE)).chargeAttos).toBe(COST);
  });
});
