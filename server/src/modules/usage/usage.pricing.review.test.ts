import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pricedUsageSetup } from '../../../test/priced-usage.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';

/**
 * A late event priced by an older version of a VOLUME rule, after a newer version priced part of
 * the month, is priced on its own units at its version: re-pricing the month from what the rule
 * charged (as an on-time event of the version in force does) would price the newer version's units
 * at the old rates, and one late unit would give back or charge the month's difference.
 */
const now = new Date('2026-06-15T12:00:00Z');
const SINCE = new Date('2026-01-01T00:00:00Z');
const JUNE_5 = new Date('2026-06-05T00:00:00Z');
const JUNE_10 = new Date('2026-06-10T00:00:00Z');
const JUNE_12 = new Date('2026-06-12T00:00:00Z');
const VOLUME_1_05 = { tiers: [{ upTo: 100, unitPrice: '1' }, { upTo: null, unitPrice: '0.5' }] };
const VOLUME_2_1 = { tiers: [{ upTo: 100, unitPrice: '2' }, { upTo: null, unitPrice: '1' }] };
const nanos = (text: string) => parseDecimalNanos('x', text);
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

/** pricedUsageSetup's customer, priced by a VOLUME rule 'v' on 'out' (`config` since SINCE); `version` adds a later version of the rule. */
async function setup(config: Record<string, unknown>) {
  const { services } = server;
  const { merchant, customer, event, record } = await pricedUsageSetup(server);
  const version = (config: Record<string, unknown>, effectiveFrom: Date) => services.priceRules.put(merchant.id, { name: 'v', type: 'VOLUME', meterKey: 'out', config, effectiveFrom });
  await version(config, SINCE);
  const balance = async () => (await services.ledgerQueries.wallet(merchant.id, customer.id, 'USD')).balance;
  return { event, record, balance, version };
}

describe('a late event priced by an older version of a VOLUME rule', () => {
  it('does not re-price the units a newer version already priced back to its own rates', async () => {
    const t = await setup(VOLUME_1_05);
    await t.version(VOLUME_2_1, JUNE_10);
    // 50 units under the raised version: 50 × 2.
    expect(await t.record(t.event(50, JUNE_12))).toEqual(['100.00']);
    // A late unit of June 5th, when the old version was in force: its own unit at 1.00 (51 units
    // in the old version's first tier, less the 50 priced since), not 51 × 1 − 100 = −49.00.
    expect(await t.record(t.event(1, JUNE_5))).toEqual(['1.00']);
    expect(await t.balance()).toBe(nanos('1000') - nanos('101'));
  });

  it('does not charge the units a newer, cheaper version priced again at its own rates', async () => {
    const t = await setup(VOLUME_2_1);
    await t.version(VOLUME_1_05, JUNE_10);
    expect(await t.record(t.event(50, JUNE_12))).toEqual(['50.00']);
    // Its own unit at 2.00, not 51 × 2 − 50 = 52.00.
    expect(await t.record(t.event(1, JUNE_5))).toEqual(['2.00']);
  });
});
