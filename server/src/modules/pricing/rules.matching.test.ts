import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { priceInForce, type ProviderPrice } from './cost.ts';
import { ruleTargetsEvent, selectRule } from './rules.ts';

/**
 * How price rules are matched to an event's model and currency:
 * - a rule's model is matched as a price row's is (case aside, a dated snapshot, a prefix naming the
 *   provider that served the call or the maker it resells), each below the closer match;
 * - a rule carries no currency: its amounts are charged in the event's currency, and the API does
 *   not claim one for it.
 */

describe('a rule aimed at a model matches the event as its price row does', () => {
  const rules: { id: string; meter: string; provider?: string; model?: string }[] = [
    { id: 'meter', meter: 'tokens' },
    { id: 'openai', meter: 'tokens', provider: 'openai' },
    { id: 'gpt-4o', meter: 'tokens', model: 'gpt-4o' },
    { id: 'gemini', meter: 'tokens', model: 'gemini-2.0-flash-001' },
    { id: 'gpt-oss', meter: 'tokens', model: 'gpt-oss-120b' },
  ];
  const pick = (provider: string, model: string, more: typeof rules = []) => selectRule([...rules, ...more], { meter: 'tokens', provider, model })?.id ?? null;

  it('a model named with the prefix of the provider that served it, or of the maker a cloud resells, matches the rule for the name without it', () => {
    expect(pick('openai', 'openai/gpt-4o')).toBe('gpt-4o');
    expect(pick('openai', 'OpenAI/GPT-4o')).toBe('gpt-4o');
    expect(pick('openai', 'openai/gpt-4o-2024-08-06')).toBe('gpt-4o');
    expect(pick('azure-openai', 'openai/gpt-4o')).toBe('gpt-4o');
    expect(pick('vertex', 'google/gemini-2.0-flash-001')).toBe('gemini');
    expect(pick('vertex', 'publishers/google/models/gemini-2.0-flash-001')).toBe('gemini');
  });

  it('any other prefix is part of the name, as it is to price rows', () => {
    // OpenRouter and Together name other makers' models: "openai/" there is not the provider's own prefix.
    expect(pick('openrouter', 'openai/gpt-4o')).toBe('meter');
    expect(pick('together', 'openai/gpt-oss-120b')).toBe('meter');
    // A prefix alone is not a match: "gpt-4o" is not a prefixed "gpt-4o-mini".
    expect(pick('openai', 'openai/gpt-4o-mini')).toBe('openai');
  });

  it('the closer match wins: the whole name, then a snapshot of it, then the name without its prefix, then a snapshot of that', () => {
    const prefixed = { id: 'prefixed', meter: 'tokens', model: 'openai/gpt-4o' };
    const snapshot = { id: 'snapshot', meter: 'tokens', model: 'gpt-4o-2024-08-06' };
    const prefixedSnapshot = { id: 'prefixed-snapshot', meter: 'tokens', model: 'openai/gpt-4o-2024-08-06' };
    // Whatever their provider target: a closer model match outranks a provider.
    const openaiGpt4o = { id: 'openai-gpt-4o', meter: 'tokens', provider: 'openai', model: 'gpt-4o' };
    expect(pick('openai', 'openai/gpt-4o', [prefixed, openaiGpt4o])).toBe('prefixed');
    expect(pick('openai', 'openai/gpt-4o-2024-08-06', [prefixed, snapshot, openaiGpt4o])).toBe('prefixed');
    expect(pick('openai', 'openai/gpt-4o-2024-08-06', [snapshot, openaiGpt4o])).toBe('snapshot');
    expect(pick('openai', 'openai/gpt-4o-2024-08-06', [prefixedSnapshot, prefixed, snapshot])).toBe('prefixed-snapshot');
    // Among equal model matches, the provider target still counts.
    expect(pick('openai', 'openai/gpt-4o', [openaiGpt4o])).toBe('openai-gpt-4o');
  });

  it('a rule and a price row of the same name match the same events, and rank them alike', () => {
    const names = ['gpt-4o', 'GPT-4o', 'gpt-4o-2024-08-06', 'openai/gpt-4o', 'openai/gpt-4o-2024-08-06', 'gpt-4o-mini', 'gemini-2.0-flash-001', 'google/gemini-2.0-flash-001', 'claude-haiku-4-5'];
    // Each with the maker whose prefix its price row is matched without besides the provider's own (see resoldBy).
    const events: [provider: string, model: string, owners: string[]][] = [
      ['openai', 'gpt-4o', []], ['openai', 'openai/gpt-4o', []], ['openai', 'OPENAI/gpt-4o-2024-08-06', []], ['openai', 'gpt-4o-2024-08-06', []], ['openai', 'openai/gpt-4o-mini', []],
      ['azure-openai', 'openai/gpt-4o', ['openai']], ['openrouter', 'openai/gpt-4o', []], ['vertex', 'google/gemini-2.0-flash-001', ['google']],
      ['vertex', 'publishers/google/models/gemini-2.0-flash-001', ['google']], ['vertex', 'anthropic/claude-haiku-4-5@20251001', ['anthropic']],
      ['google', 'google/gemini-2.0-flash-001', []], ['anthropic', 'claude-haiku-4-5-20251001', []],
    ];
    const at = new Date('2026-06-01T00:00:00Z');
    for (const [provider, model, owners] of events) {
      const rowOf = (name: string): ProviderPrice => ({ provider, model: name, currency: 'USD', effectiveFrom: new Date('2026-01-01T00:00:00Z'), perRequest: '1' });
      for (const name of names) {
        const costs = priceInForce([rowOf(name)], provider, model, at, owners) !== null;
        expect({ provider, model, name, matches: ruleTargetsEvent({ provider: null, model: name }, { provider, model }) }).toEqual({ provider, model, name, matches: costs });
      }
      // Of every name at once, the rule chosen is the name of the row chosen (names equal but for case aside).
      const distinct = names.filter((name) => name !== 'GPT-4o');
      const row = priceInForce(distinct.map(rowOf), provider, model, at, owners);
      const rule = selectRule(distinct.map((name) => ({ id: name, model: name })), { provider, model });
      expect({ provider, model, rule: rule?.id ?? null }).toEqual({ provider, model, rule: row?.model ?? null });
    }
  });
});

const now = new Date('2026-06-15T12:00:00Z');
const START = '2026-01-01T00:00:00Z';
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

interface RecordedEvent {
  currency: string;
  cost: string;
  costProblem: string | null;
  charge: string;
  status: string;
  charges: { priceRuleId: string | null; amount: string; quantity: string | null }[];
}

/** A merchant with a meter of output tokens, an OpenAI price row for gpt-4o and a customer holding 100 USD and 100 EUR, all through GraphQL. */
async function setup() {
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  const gql = async <T,>(query: string, variables?: Record<string, unknown>): Promise<T> => {
    const { data, errors } = await server.graphql<T>(query, variables, merchant.secret);
    if (errors) throw new Error(JSON.stringify(errors));
    return data!;
  };
  await gql('mutation { createMeter(input: { key: "out", name: "Output tokens", unit: "token", source: OUTPUT_TOKENS }) { id } }');
  // 1 USD per million input tokens, 3 per million output: 1,000 of each cost 0.004.
  await gql(`mutation { setProviderPrice(input: { provider: "openai", model: "gpt-4o", effectiveFrom: "${START}", rates: { perMillionTokens: { input: "1", output: "3" } } }) { ref } }`);
  const { createCustomer } = await gql<{ createCustomer: { id: string } }>(`mutation { createCustomer(input: { externalId: "u-${randomUUID().slice(0, 8)}" }) { id } }`);
  const customer = createCustomer.id;
  for (const currency of ['USD', 'EUR']) {
    await gql(`mutation { grantCredits(input: { customerId: "${customer}", amount: "100", currency: "${currency}", kind: PAID, idempotencyKey: "seed-${currency}" }) { replayed } }`);
  }
  const putRule = async (input: Record<string, unknown>) =>
    (await gql<{ putPriceRule: { id: string } }>('mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id } }', { input: { effectiveFrom: START, ...input } })).putPriceRule.id;
  const record = async (model: string, currency = 'USD', timestamp?: string) =>
    (
      await gql<{ recordUsage: { event: RecordedEvent } }>(
        'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { event { currency cost costProblem charge status charges { priceRuleId amount quantity } } } }',
        { input: { customer, idempotencyKey: randomUUID(), currency, timestamp, usage: { provider: 'openai', model, inputTokens: 1000, outputTokens: 1000 } } },
      )
    ).recordUsage.event;
  const balance = async (currency: string) =>
    (await gql<{ wallet: { balance: { amount: string; currency: string } } }>(`{ wallet(customerId: "${customer}", currency: "${currency}") { balance { amount currency } } }`)).wallet.balance;
  return { merchant, gql, putRule, record, balance };
}

describe('recording usage of a model named with its provider prefix', () => {
  it('is priced by the rules for that model, as its price row costs it', async () => {
    const t = await setup();
    await t.putRule({ name: 'markup', type: 'MARKUP', config: { percent: '50' } });
    const gpt4oMarkup = await t.putRule({ name: 'gpt-4o markup', type: 'MARKUP', model: 'gpt-4o', config: { percent: '100' } });
    await t.putRule({ name: 'out', type: 'FLAT', meterKey: 'out', config: { unitPrice: '0.001' } });
    const gpt4oOut = await t.putRule({ name: 'gpt-4o out', type: 'FLAT', meterKey: 'out', model: 'gpt-4o', config: { unitPrice: '0.002' } });
    const expected = { currency: 'USD', cost: '0.004', costProblem: null, charge: '2.008', status: 'CHARGED', charges: [{ priceRuleId: gpt4oMarkup, amount: '0.008', quantity: null }, { priceRuleId: gpt4oOut, amount: '2.00', quantity: '1000' }] };
    expect(await t.record('gpt-4o')).toEqual(expected);
    expect(await t.record('openai/gpt-4o')).toEqual(expected);
    expect(await t.record('openai/gpt-4o-2024-08-06')).toEqual(expected);
    expect(await t.balance('USD')).toEqual({ amount: '93.976', currency: 'USD' });
  });

  it('an exact name still beats the name without its prefix', async () => {
    const t = await setup();
    await t.putRule({ name: 'gpt-4o', type: 'MARKUP', provider: 'openai', model: 'gpt-4o', config: { percent: '100' } });
    const prefixed = await t.putRule({ name: 'openai/gpt-4o', type: 'MARKUP', model: 'openai/gpt-4o', config: { percent: '25' } });
    expect(await t.record('openai/gpt-4o')).toMatchObject({ cost: '0.004', charge: '0.005', charges: [{ priceRuleId: prefixed, amount: '0.005', quantity: null }] });
  });

  it('a rule for the model dated before such usage already priced is refused, as it would price that usage another way', async () => {
    const t = await setup();
    await t.record('openai/gpt-4o', 'USD', '2026-06-10T00:00:00Z');
    const { errors } = await server.graphql(
      'mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id } }',
      { input: { name: 'gpt-4o', type: 'MARKUP', model: 'gpt-4o', config: { percent: '100' }, effectiveFrom: '2026-06-01T00:00:00Z' } },
      t.merchant.secret,
    );
    expect(errors?.map((error) => [error.extensions.code, error.extensions.field])).toEqual([['VALIDATION', 'effectiveFrom']]);
  });
});

describe('rules and the currency of an event', () => {
  it('a rule claims no currency: an event in EUR is charged the meter rule in EUR, not the markup of its USD cost, and only its EUR wallet', async () => {
    const t = await setup();
    await t.putRule({ name: 'markup', type: 'MARKUP', config: { percent: '50', feePerRequest: '0.01' } });
    const out = await t.putRule({ name: 'out', type: 'FLAT', meterKey: 'out', config: { unitPrice: '0.0001' } });
    expect(await t.record('gpt-4o', 'EUR')).toEqual({
      currency: 'EUR', cost: '0.00', costProblem: 'provider costs are in USD and this event is in EUR: with no exchange rate its cost is unknown',
      charge: '0.10', status: 'CHARGED', charges: [{ priceRuleId: out, amount: '0.10', quantity: '1000' }],
    });
    expect(await t.balance('EUR')).toEqual({ amount: '99.90', currency: 'EUR' });
    expect(await t.balance('USD')).toEqual({ amount: '100.00', currency: 'USD' });
    // In USD the markup prices the cost (0.004 × 1.5 + the fee), beside the same meter rule.
    expect(await t.record('gpt-4o')).toMatchObject({ currency: 'USD', cost: '0.004', charge: '0.116' });
    const { priceRules } = await t.gql<{ priceRules: { name: string; currency: string | null }[] }>('{ priceRules { name currency } }');
    expect(priceRules).toEqual([{ name: 'markup', currency: null }, { name: 'out', currency: null }]);
  });
});
