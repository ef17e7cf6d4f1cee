import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { MeterAggregation } from '../../generated/prisma/client.ts';
import { scaledQuantity } from '../pricing/decimal.ts';
import { parseDecimalAttos } from '../../shared/money.ts';
import { applyRule, periodChargeAttos, type PricingRule, type Tier } from '../pricing/rules.ts';
import type { RuleRow } from '../pricing/rules.service.ts';
import { costOf } from '../pricing/cost.ts';
import type { PriceWithRef } from '../pricing/prices.service.ts';
import { estimateIncomplete, periodContribution, periodEndOf, priceUsage, providerCost, readChargeLine, REPORTED_COST_REF, ruleTie, stepPeriodTotal, storedChargeLines, volumeCreditNeed } from './usage.pricing.ts';
import { normalizeResponse } from './normalize/index.ts';
import { blankUsage } from './usage.types.ts';

/**
 * Meter aggregations, free of I/O: each event is priced on the step it makes in the period
 * total (priced only when it adds something, as UsageService does).
 */
function chargesOver(rule: PricingRule, aggregation: MeterAggregation, quantities: (number | string)[]) {
  let total = '0';
  const charges = quantities.map((quantity) => {
    const step = stepPeriodTotal(aggregation, total, quantity);
    expect(String(step.prior)).toBe(total);
    total = String(step.after);
    return step.quantity.scaled === 0n ? 0n : applyRule(rule, { quantity: step.quantity, priorQuantity: step.prior }).chargeAttos;
  });
  return { charges, total };
}

/** A step as decimal text, as the tests state it. */
const text = (step: ReturnType<typeof stepPeriodTotal>) => ({ prior: String(step.prior), quantity: String(step.quantity), after: String(step.after) });

const sum = (values: bigint[]) => values.reduce((total, value) => total + value, 0n);
const priceArb = fc.tuple(fc.nat({ max: 100 }), fc.nat({ max: 999_999_999 })).map(([whole, nanos]) => `${whole}.${String(nanos).padStart(9, '0')}`);
const tiersArb: fc.Arbitrary<Tier[]> = fc
  .tuple(fc.uniqueArray(fc.integer({ min: 1, max: 5_000 }), { maxLength: 3 }), fc.array(fc.record({ unitPrice: priceArb, flatFee: fc.option(priceArb, { nil: undefined }) }), { minLength: 4, maxLength: 4 }))
  .map(([bounds, specs]) => [...[...bounds].sort((a, b) => a - b), null].map((upTo, index) => ({ upTo, ...specs[index]! })));
/** Any quantity rule without a per-event floor. */
const ruleArb: fc.Arbitrary<PricingRule> = fc.oneof(
  fc.record({ kind: fc.constant('FLAT' as const), unitPrice: priceArb, perUnits: fc.integer({ min: 1, max: 1000 }) }),
  tiersArb.map((tiers) => ({ kind: 'GRADUATED' as const, tiers })),
  tiersArb.map((tiers) => ({ kind: 'VOLUME' as const, tiers })),
  fc.record({ kind: fc.constant('PACKAGE' as const), packageSize: fc.integer({ min: 1, max: 500 }), packagePrice: priceArb }),
);
const quantityArb = fc.oneof(
  fc.nat({ max: 6_000 }),
  fc.tuple(fc.nat({ max: 6_000 }), fc.nat({ max: 999_999 })).map(([whole, micro]) => `${whole}.${String(micro).padStart(6, '0')}`),
);

describe('stored charge lines', () => {
  it('read back what storedChargeLines wrote, and the object form events stored before it', () => {
    const stored = storedChargeLines([
      { ruleId: 'r1', rule: 'markup', meter: null, quantity: null, chargeAttos: 25n },
      { ruleId: 'r2', rule: 'fee', meter: 'requests', quantity: '1', chargeAttos: 7n },
    ]);
    expect(stored).toEqual([['r1', '25'], ['r2', '7', '1']]);
    expect(stored.map(readChargeLine)).toEqual([{ ruleId: 'r1', chargeAttos: '25', quantity: null }, { ruleId: 'r2', chargeAttos: '7', quantity: '1' }]);
    expect(readChargeLine({ ruleId: 'r3', rule: 'old', meter: 'out', quantity: '500', chargeAttos: '9' })).toEqual({ ruleId: 'r3', chargeAttos: '9', quantity: '500' });
    expect(readChargeLine({ ruleId: 'r4', rule: 'old', meter: null, quantity: null, chargeAttos: '3' })).toEqual({ ruleId: 'r4', chargeAttos: '3', quantity: null });
  });
});

describe('meter aggregations', () => {
  it('SUM: the total is the sum, each event priced on its own quantity', () => {
    expect(text(stepPeriodTotal('SUM', '10', 5))).toEqual({ prior: '10', quantity: '5', after: '15' });
    expect(text(stepPeriodTotal('SUM', '1.5', '0.25'))).toEqual({ prior: '1.5', quantity: '0.25', after: '1.75' });
    expect(periodContribution('SUM', '2.50')).toBe(scaledQuantity('q', '2.5'));
  });

  it('COUNT: each event adds 1 whatever its quantity; N events price like N units', () => {
    expect(text(stepPeriodTotal('COUNT', '3', 4096))).toEqual({ prior: '3', quantity: '1', after: '4' });
    expect(periodContribution('COUNT', '12.5')).toBe(scaledQuantity('q', 1));
    fc.assert(
      fc.property(ruleArb, fc.array(quantityArb, { minLength: 1, maxLength: 30 }), (rule, quantities) => {
        const { charges, total } = chargesOver(rule, 'COUNT', quantities);
        expect(total).toBe(String(quantities.length));
        expect(sum(charges)).toBe(periodChargeAttos(rule, quantities.length));
        // Exactly what N events of one unit each would be charged, event by event.
        expect(charges).toEqual(chargesOver(rule, 'SUM', quantities.map(() => 1)).charges);
      }),
    );
  });

  it('MAX: an event is charged only for raising the maximum; the period is charged price(max)', () => {
    expect(text(stepPeriodTotal('MAX', '5', 3))).toEqual({ prior: '5', quantity: '0', after: '5' });
    expect(text(stepPeriodTotal('MAX', '5', '7.5'))).toEqual({ prior: '5', quantity: '2.5', after: '7.5' });
    expect(periodContribution('MAX', 7)).toBe(scaledQuantity('q', 7));
    fc.assert(
      fc.property(ruleArb, fc.array(quantityArb, { minLength: 1, maxLength: 30 }), (rule, quantities) => {
        const { charges, total } = chargesOver(rule, 'MAX', quantities);
        const scaled = (value: number | string) => scaledQuantity('q', value);
        const max = quantities.reduce<number | string>((best, value) => (scaled(value) > scaled(best) ? value : best), 0);
        expect(scaled(total)).toBe(scaled(max));
        expect(sum(charges)).toBe(periodChargeAttos(rule, total));
        let highest = 0n;
        quantities.forEach((quantity, index) => {
          if (scaled(quantity) <= highest) expect(charges[index]).toBe(0n);
          if (scaled(quantity) > highest) highest = scaled(quantity);
        });
      }),
    );
  });

  it('MAX with a minimum charge floors only the events that raise the maximum', () => {
    const rule: PricingRule = { kind: 'FLAT', unitPrice: '1', minimumCharge: '0.5' };
    const { charges } = chargesOver(rule, 'MAX', [3, 2, 3, '3.25', 1]);
    expect(charges).toEqual([3n * 10n ** 18n, 0n, 0n, 5n * 10n ** 17n, 0n]);
  });
});

/** Plan precedence, free of I/O: the plan's rules in force win for what they cover, the default book prices the rest. */
describe('priceUsage with a plan', () => {
  const PLAN = '00000000-0000-4000-8000-00000000a1a1';
  let ids = 0;
  const row = (planId: string | null, name: string, type: RuleRow['type'], config: Record<string, unknown>, target: { meterKey?: string; provider?: string } = {}, effectiveFrom = '2026-01-01'): RuleRow => ({
    id: `00000000-0000-4000-8000-${String(++ids).padStart(12, '0')}`, merchantId: 'm', planId, name, type, meterKey: target.meterKey ?? null, provider: target.provider ?? null, model: null,
    currency: 'USD', config: config as RuleRow['config'], effectiveFrom: new Date(effectiveFrom), archivedAt: null, createdAt: new Date(effectiveFrom),
  });
  const defaults = [
    row(null, 'markup', 'MARKUP', { percent: '25' }),
    row(null, 'requests', 'FLAT', { unitPrice: '0.001' }, { meterKey: 'requests' }),
    row(null, 'output', 'FLAT', { unitPrice: '0.00002' }, { meterKey: 'out' }),
  ];
  const planMarkup = row(PLAN, 'markup', 'MARKUP', { percent: '10' });
  const planOutput = row(PLAN, 'output', 'FLAT', { unitPrice: '0.00001' }, { meterKey: 'out' });
  const attos = (text: string) => parseDecimalAttos('x', text);
  const price = (planRules: RuleRow[] | null, provider = 'acme', occurredAt = new Date('2026-06-15')) =>
    priceUsage({
      usage: { ...blankUsage({ requests: 1 }), provider, model: 'm1', outputTokens: 500 }, occurredAt, rules: defaults, planRules,
      steps: new Map([['out', { quantity: 500n, prior: 0n }], ['requests', { quantity: 1n, prior: 0n }]]), costAttos: attos('0.002'), costProblem: null, currency: 'USD',
    });

  it('no plan: the default book prices everything', () => {
    const priced = price(null);
    // 0.002 × 1.25 + 500 × 0.00002 + 0.001
    expect(priced.chargeAttos).toBe(attos('0.0025') + attos('0.01') + attos('0.001'));
    expect(priced.lines.every((line) => line.planId === undefined)).toBe(true);
    expect(price([]).chargeAttos).toBe(priced.chargeAttos);
  });

  it('the plan wins for the markup and the meters it covers; the default book prices the rest', () => {
    const priced = price([planMarkup, planOutput]);
    expect(priced.chargeAttos).toBe(attos('0.0022') + attos('0.005') + attos('0.001'));
    expect(priced.lines.map((line) => [line.rule, line.ruleId, line.planId ?? null, line.chargeAttos])).toEqual([
      ['markup', planMarkup.id, PLAN, attos('0.0022')],
      ['output', planOutput.id, PLAN, attos('0.005')],
      ['requests', defaults[1]!.id, null, attos('0.001')],
    ]);
    expect(priced.marginAttos).toBe(priced.chargeAttos - attos('0.002'));
  });

  it('a plan rule that does not match the event, or is not in force yet at its time, leaves it to the default book', () => {
    const anthropicOnly = row(PLAN, 'markup', 'MARKUP', { percent: '10' }, { provider: 'anthropic' });
    expect(price([anthropicOnly]).lines[0]).toMatchObject({ ruleId: defaults[0]!.id, chargeAttos: attos('0.0025') });
    expect(price([anthropicOnly], 'anthropic').lines[0]).toMatchObject({ ruleId: anthropicOnly.id, planId: PLAN, chargeAttos: attos('0.0022') });
    const fromJuly = row(PLAN, 'output', 'FLAT', { unitPrice: '0.00001' }, { meterKey: 'out' }, '2026-07-01');
    expect(price([fromJuly]).chargeAttos).toBe(price(null).chargeAttos);
    expect(price([fromJuly], 'acme', new Date('2026-07-02')).chargeAttos).toBe(attos('0.0025') + attos('0.005') + attos('0.001'));
  });

  it('a rule archived in the plan gives the meter back to the default book', () => {
    const archived = { ...planOutput, archivedAt: new Date('2026-03-01') };
    expect(price([archived]).lines.find((line) => line.meter === 'out')).toMatchObject({ ruleId: defaults[2]!.id, chargeAttos: attos('0.01') });
  });
});

/** A markup prices a provider cost, known in USD only; a quote prices meters at their most. */
describe('priceUsage: markups of unknown cost or in another currency, and quotes', () => {
  let ids = 0;
  const row = (name: string, type: RuleRow['type'], config: Record<string, unknown>, meterKey: string | null = null): RuleRow => ({
    id: `00000000-0000-4000-8000-${String(++ids).padStart(12, '0')}`, merchantId: 'm', planId: null, name, type, meterKey, provider: null, model: null,
    currency: 'USD', config: config as RuleRow['config'], effectiveFrom: new Date('2026-01-01'), archivedAt: null, createdAt: new Date('2026-01-01'),
  });
  const attos = (text: string) => parseDecimalAttos('x', text);
  const markup = row('markup', 'MARKUP', { percent: '25', feePerRequest: '0.001', minimumCharge: '0.50' });
  const tiers = row('out', 'GRADUATED', { tiers: [{ upTo: 1000, unitPrice: '0' }, { upTo: null, unitPrice: '0.01' }] }, 'out');
  const usage = { ...blankUsage({ requests: 2 }), provider: 'openai', model: 'm1', outputTokens: 500 };
  const price = (fields: { currency?: string; costAttos?: bigint; costProblem?: string | null; atMost?: boolean; prior?: bigint }) =>
    priceUsage({
      usage, occurredAt: new Date('2026-06-15'), rules: [markup, tiers], steps: new Map([['out', { quantity: 500n, prior: fields.prior ?? 0n }]]),
      costAttos: fields.costAttos ?? 0n, costProblem: fields.costProblem ?? null, currency: fields.currency ?? 'USD', atMost: fields.atMost,
    });

  it('an unknown cost is charged only the fee per request, without the minimum', () => {
    expect(price({ costProblem: 'no provider price for openai/m1' }).lines.map((line) => line.chargeAttos)).toEqual([attos('0.002'), 0n]);
    expect(price({ costAttos: attos('0.01') }).lines[0]!.chargeAttos).toBe(attos('0.50'));
  });

  it('an event in another currency is priced by the rules on meters only', () => {
    const priced = price({ currency: 'EUR', costProblem: 'provider costs are in USD and this event is in EUR: with no exchange rate its cost is unknown', prior: 1000n });
    expect(priced.lines.map((line) => [line.rule, line.chargeAttos])).toEqual([['out', attos('5')]]);
    expect(price({ currency: 'EUR' }).lines.map((line) => line.rule)).toEqual(['out']);
  });

  it('atMost prices each meter at the most its rule can charge the quantity, whatever the total before it', () => {
    expect(price({ costAttos: attos('0.01') }).chargeAttos).toBe(attos('0.50'));
    expect(price({ costAttos: attos('0.01'), atMost: true }).chargeAttos).toBe(attos('0.50') + attos('5'));
    expect(price({ costAttos: attos('0.01'), prior: 5000n }).chargeAttos).toBe(attos('0.50') + attos('5'));
  });
});

/**
 * When a VOLUME rule's line needs the period's credit read: another version of the rule in force
 * at some time of the period (priced from what was charged), or a move into a cheaper tier (a
 * negative line, capped). Nothing else reads it.
 */
describe('volumeCreditNeed', () => {
  const PLAN = '00000000-0000-4000-8000-00000000a1a1';
  let ids = 0;
  const version = (name: string, type: RuleRow['type'], effectiveFrom: string, fields: Partial<RuleRow> = {}): RuleRow => ({
    id: `00000000-0000-4000-8000-${String(++ids).padStart(12, '0')}`, merchantId: 'm', planId: null, name, type, meterKey: 'out', provider: null, model: null, currency: 'USD',
    config: (type === 'VOLUME' ? { tiers: [{ upTo: 100, unitPrice: '1' }, { upTo: null, unitPrice: '0.5' }] } : { unitPrice: '1' }) as RuleRow['config'],
    effectiveFrom: new Date(effectiveFrom), archivedAt: null, createdAt: new Date(effectiveFrom), ...fields,
  });
  const JUNE = new Date('2026-06-01T00:00:00Z');
  const step = (rule: RuleRow, prior: bigint, quantity: bigint) => ({ rule, prior, quantity });

  it('one version all month: only a move into a cheaper tier needs it', () => {
    const v = version('v', 'VOLUME', '2026-01-01');
    expect(volumeCreditNeed(step(v, 0n, 100n), [v], JUNE)).toBeNull();
    expect(volumeCreditNeed(step(v, 100n, 1n), [v], JUNE)).toBe('credit');
    expect(volumeCreditNeed(step(v, 101n, 1n), [v], JUNE)).toBeNull();
    expect(volumeCreditNeed(step(v, 100n, 0n), [v], JUNE)).toBeNull();
  });

  it('another version in force at some time of the month: priced from what was charged', () => {
    const before = version('v', 'VOLUME', '2026-01-01');
    const after = version('v', 'VOLUME', '2026-06-10T00:00:00Z');
    expect(volumeCreditNeed(step(after, 0n, 1n), [before, after], JUNE)).toBe('charged');
    // A MAX meter's peak another rule raised too (another plan's): priced on the raise, as with one version.
    expect(volumeCreditNeed({ ...step(after, 0n, 1n), shared: true }, [before, after], JUNE)).toBeNull();
    expect(volumeCreditNeed({ ...step(after, 100n, 1n), shared: true }, [before, after], JUNE)).toBe('credit');
    // In July only the later version is in force; in May only the earlier one.
    expect(volumeCreditNeed(step(after, 0n, 1n), [before, after], new Date('2026-07-01T00:00:00Z'))).toBeNull();
    expect(volumeCreditNeed(step(before, 0n, 1n), [before, after], new Date('2026-05-01T00:00:00Z'))).toBeNull();
    // A version that starts on the first of the month replaces the earlier one for all of it.
    const fromJune = version('v', 'VOLUME', '2026-06-01T00:00:00Z');
    expect(volumeCreditNeed(step(fromJune, 0n, 1n), [before, fromJune], JUNE)).toBeNull();
    // Another kind under the name counts as a version.
    const flat = version('v', 'FLAT', '2026-01-01');
    expect(volumeCreditNeed(step(after, 0n, 1n), [flat, after], JUNE)).toBe('charged');
  });

  it('a version archived before the month, or stopped before it took effect, priced nothing in it', () => {
    const archived = version('v', 'VOLUME', '2026-01-01', { archivedAt: new Date('2026-05-20T00:00:00Z') });
    const again = version('v', 'VOLUME', '2026-06-10T00:00:00Z');
    expect(volumeCreditNeed(step(again, 0n, 1n), [archived, again], JUNE)).toBeNull();
    const stoppedEarly = version('v', 'VOLUME', '2026-06-05T00:00:00Z', { archivedAt: new Date('2026-06-02T00:00:00Z') });
    const current = version('v', 'VOLUME', '2026-01-01', { archivedAt: new Date('2026-06-02T00:00:00Z') });
    const reput = version('v', 'VOLUME', '2026-06-20T00:00:00Z');
    // `current` was in force from the 1st to the 2nd of June: the re-put version carries on from it.
    expect(volumeCreditNeed(step(reput, 0n, 1n), [current, stoppedEarly, reput], JUNE)).toBe('charged');
  });

  it('other names, the same name in another book, and other kinds of step need nothing', () => {
    const v = version('v', 'VOLUME', '2026-06-10T00:00:00Z');
    const others = [version('w', 'VOLUME', '2026-01-01'), version('v', 'VOLUME', '2026-01-01', { planId: PLAN })];
    expect(volumeCreditNeed(step(v, 0n, 1n), [v, ...others], JUNE)).toBeNull();
    const graduated = version('g', 'GRADUATED', '2026-06-10T00:00:00Z', { config: { tiers: [{ upTo: null, unitPrice: '1' }] } as RuleRow['config'] });
    expect(volumeCreditNeed(step(graduated, 0n, 1n), [version('g', 'FLAT', '2026-01-01'), graduated], JUNE)).toBeNull();
  });

  it('periodEndOf is the first of the next month, across a year', () => {
    expect(periodEndOf(JUNE).toISOString()).toBe('2026-07-01T00:00:00.000Z');
    expect(periodEndOf(new Date('2026-12-01T00:00:00Z')).toISOString()).toBe('2027-01-01T00:00:00.000Z');
  });
});

/** Provider cost, free of I/O: the provider's own reported figure first, then the price table. */
describe('providerCost', () => {
  const attos = (text: string) => parseDecimalAttos('x', text);
  const row: PriceWithRef = { provider: 'openrouter', model: 'openai/gpt-5.4-mini', currency: 'USD', effectiveFrom: new Date('2026-01-01'), perMillionTokens: { input: '1', output: '1' }, ref: 'row-1' };
  const openRouter = (fields: Partial<ReturnType<typeof blankUsage>>) =>
    blankUsage({ provider: 'openrouter', model: 'anthropic/claude-sonnet-4.6', inputTokens: 1000, outputTokens: 100, requests: 1, ...fields });

  it('is the cost the provider reports, exactly, when no price row matches', () => {
    // 17 significant digits: more than a double keeps, so only the reported text is exact.
    expect(providerCost(openRouter({ providerReportedCostUsd: '0.12345678901234567' }), () => null)).toEqual({ costAttos: 123_456_789_012_345_670n, problem: null, ref: REPORTED_COST_REF });
  });

  it('wins over a price row: it is what the provider billed', () => {
    let asked = false;
    const cost = providerCost(openRouter({ model: 'openai/gpt-5.4-mini', providerReportedCostUsd: '0.0042' }), () => ((asked = true), row));
    expect(cost).toEqual({ costAttos: attos('0.0042'), problem: null, ref: REPORTED_COST_REF });
    expect(asked).toBe(false);
  });

  it('with OpenRouter BYOK adds the upstream cost billed to the merchant\'s own key to OpenRouter\'s fee', () => {
    const byok = openRouter({ providerReportedCostUsd: '0.0005', details: { is_byok: 'true', upstream_inference_cost_usd: '0.01' } });
    expect(providerCost(byok, () => null).costAttos).toBe(attos('0.0105'));
    const notByok = openRouter({ providerReportedCostUsd: '0.01', details: { is_byok: 'false', upstream_inference_cost_usd: '0.01' } });
    expect(providerCost(notByok, () => null).costAttos).toBe(attos('0.01'));
  });

  it('a float\'s digits past the atto (OpenRouter writes usage.cost as a float) are rounded to the nearest atto, never thrown away', () => {
    const body = JSON.stringify({
      id: 'gen-1', object: 'chat.completion', created: 1, model: 'openai/gpt-4o', choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 100, completion_tokens: 10, total_tokens: 110, cost: 0.00017250000000000002, is_byok: false },
    });
    const usage = normalizeResponse({ url: 'https://openrouter.ai/api/v1/chat/completions', status: 200, headers: { 'content-type': 'application/json' }, body });
    expect(usage.providerReportedCostUsd).toBe('0.00017250000000000002');
    // No price row lists openrouter/openai/gpt-4o: only the reported figure costs it.
    expect(providerCost(usage, () => null)).toEqual({ costAttos: attos('0.0001725'), problem: null, ref: REPORTED_COST_REF });
    // Halves round up, exactly, by the digits alone: 19 and more decimals, BYOK's upstream cost too.
    expect(providerCost(openRouter({ providerReportedCostUsd: '0.0000000000000000005' }), () => null).costAttos).toBe(1n);
    expect(providerCost(openRouter({ providerReportedCostUsd: '0.00000000000000000049999' }), () => null).costAttos).toBe(0n);
    expect(providerCost(openRouter({ providerReportedCostUsd: '1.9999999999999999995' }), () => null).costAttos).toBe(attos('2'));
    const byok = openRouter({ providerReportedCostUsd: '0.0005', details: { is_byok: 'true', upstream_inference_cost_usd: '0.01000000000000000051' } });
    expect(providerCost(byok, () => null).costAttos).toBe(attos('0.010500000000000001'));
  });

  it('a reported figure that cannot be read makes the cost unknown, saying why, rather than costing it by the table; no figure and no row is a missing row', () => {
    let asked = false;
    for (const figure of ['-1', '1e-5', 'abc', '1234567890123.5']) {
      const usage = openRouter({ model: 'openai/gpt-5.4-mini', providerReportedCostUsd: figure });
      expect(providerCost(usage, () => ((asked = true), row)), figure).toEqual({ costAttos: 0n, problem: expect.stringContaining(`reported a cost of "${figure}" USD`), ref: null });
    }
    const byok = openRouter({ providerReportedCostUsd: '0.0005', details: { is_byok: 'true', upstream_inference_cost_usd: 'n/a' } });
    expect(providerCost(byok, () => ((asked = true), row))).toMatchObject({ costAttos: 0n, problem: expect.stringContaining('"n/a"') });
    expect(asked).toBe(false);
    expect(providerCost(openRouter({}), () => null)).toEqual({ costAttos: 0n, problem: 'no provider price for openrouter/anthropic/claude-sonnet-4.6', ref: null });
  });

  it('a reported cost of negative zero (a float serializer\'s -0.0) is a known cost of zero', () => {
    for (const figure of ['-0', '-0.0', '-0.000']) {
      expect(providerCost(openRouter({ providerReportedCostUsd: figure }), () => null), figure).toEqual({ costAttos: 0n, problem: null, ref: REPORTED_COST_REF });
    }
  });

  it('in another currency than USD, a request a price row charges for has an unknown cost, as tokens do; a request no row prices has none to know', () => {
    const request = blankUsage({ provider: 'acme', model: 'search', requests: 1 });
    const perRequest: PriceWithRef = { provider: 'acme', model: 'search', currency: 'USD', effectiveFrom: new Date('2026-01-01'), perRequest: '0.01', ref: 'row-2' };
    expect(providerCost(request, () => perRequest, 'USD')).toEqual({ costAttos: attos('0.01'), problem: null, ref: 'row-2' });
    expect(providerCost(request, () => perRequest, 'EUR')).toEqual({ costAttos: 0n, problem: expect.stringContaining('this event is in EUR'), ref: null });
    expect(providerCost(request, () => ({ ...perRequest, perRequest: null, perMillionTokens: { input: '1', output: '1' } }), 'EUR')).toEqual({ costAttos: 0n, problem: null, ref: null });
    expect(providerCost(request, () => null, 'EUR')).toEqual({ costAttos: 0n, problem: null, ref: null });
  });

  it('a price table that cannot decide is a problem of the event, not an exception', () => {
    const cost = providerCost(openRouter({}), () => {
      throw new Error('two prices for openrouter/x take effect at 2026-01-01T00:00:00.000Z');
    });
    expect(cost).toMatchObject({ costAttos: 0n, problem: expect.stringContaining('two prices') });
  });

  it('applies markup over the reported cost', () => {
    const markup: RuleRow = {
      id: '00000000-0000-4000-8000-0000000000aa', merchantId: 'm', planId: null, name: 'markup', type: 'MARKUP', meterKey: null, provider: null, model: null,
      currency: 'USD', config: { percent: '25' }, effectiveFrom: new Date('2026-01-01'), archivedAt: null, createdAt: new Date('2026-01-01'),
    };
    const usage = openRouter({ providerReportedCostUsd: '0.12345678901234567' });
    const cost = providerCost(usage, () => null);
    const priced = priceUsage({ usage, occurredAt: new Date('2026-06-01'), rules: [markup], steps: new Map(), costAttos: cost.costAttos, costProblem: cost.problem, currency: 'USD' });
    // × 1.25 = 0.1543209862654320875, rounded half up to the atto.
    expect(priced).toMatchObject({ costAttos: 123_456_789_012_345_670n, chargeAttos: 154_320_986_265_432_088n, marginAttos: 30_864_197_253_086_418n });
  });
});

describe('estimateIncomplete (the ESTIMATE policy for cut streams)', () => {
  const price: PriceWithRef = { provider: 'google', model: 'gemini-3.8-flash', currency: 'USD', effectiveFrom: new Date('2026-01-01'), perMillionTokens: { input: '0.75', output: '3.75' }, ref: 'r' };
  const cut = (fields: Partial<ReturnType<typeof blankUsage>>) =>
    blankUsage({ provider: 'google', model: 'gemini-3.8-flash', billable: false, incomplete: true, streamedText: '', ...fields });

  it('keeps what the provider already reported when that is more than the estimate, reasoning included', () => {
    const usage = estimateIncomplete(cut({ inputTokens: 100, outputTokens: 302, reasoningTokens: 300, streamedText: 'Hello' }));
    expect(usage).toMatchObject({ outputTokens: 302, reasoningTokens: 300, billable: true, requests: 1 });
    expect(costOf(usage, price)).toBe(parseDecimalAttos('x', '0.0012075'));
  });

  it('never lets reported reasoning exceed the estimated output', () => {
    const usage = estimateIncomplete(cut({ reasoningTokens: 300, streamedText: 'x'.repeat(40) }));
    expect(usage).toMatchObject({ outputTokens: 10, reasoningTokens: 10, billable: true });
    expect(() => costOf(usage, price)).not.toThrow();
  });

  it('counts tool-call and reasoning text streamed beside the visible text', () => {
    expect(estimateIncomplete(cut({ details: { streamed_other_chars: 25 } }))).toMatchObject({ outputTokens: 7, billable: true });
    expect(estimateIncomplete(cut({ streamedText: 'abcd', details: { streamed_other_chars: 4 } }))).toMatchObject({ outputTokens: 2 });
    expect(estimateIncomplete(cut({}))).toMatchObject({ outputTokens: 0, billable: false });
  });

  it('charges reported input even when nothing was streamed yet: the provider read the prompt', () => {
    const usage = estimateIncomplete(cut({ inputTokens: 2000 }));
    expect(usage).toMatchObject({ inputTokens: 2000, outputTokens: 0, billable: true, requests: 1 });
    expect(costOf(usage, price)).toBe(parseDecimalAttos('x', '0.0015'));
    expect(estimateIncomplete(cut({ inputTokens: 500, cacheWriteTokens: 500 }))).toMatchObject({ billable: true });
  });
});

/** Two rules with the same target in one price book (saved before puts refused it) tie for the events they match. */
describe('ruleTie', () => {
  let ids = 0;
  const row = (name: string, type: RuleRow['type'], target: { meterKey?: string; provider?: string } = {}, planId: string | null = null): RuleRow => ({
    id: `00000000-0000-4000-8000-${String(++ids).padStart(12, '0')}`, merchantId: 'm', planId, name, type, meterKey: target.meterKey ?? null, provider: target.provider ?? null,
    model: null, currency: 'USD', config: (type === 'MARKUP' ? { percent: '10' } : { unitPrice: '1' }) as RuleRow['config'], effectiveFrom: new Date('2026-01-01'), archivedAt: null, createdAt: new Date('2026-01-01'),
  });
  const at = new Date('2026-06-01');
  const usage = (provider: string) => blankUsage({ provider, model: 'm', requests: 1 });

  it('names both rules of a tie on the provider cost, and only for the events they match', () => {
    const rules = [row('claude a', 'MARKUP', { provider: 'anthropic' }), row('claude b', 'MARKUP', { provider: 'Anthropic' }), row('rest', 'MARKUP')];
    const tie = ruleTie({ usage: usage('anthropic'), occurredAt: at, rules, meters: [] });
    expect(tie).toMatchObject({ code: 'CONFLICT', details: { field: 'rules', rules: ['claude a', 'claude b'] } });
    expect(tie?.message).toContain('"claude a" and "claude b"');
    expect(ruleTie({ usage: usage('openai'), occurredAt: at, rules, meters: [] })).toBeNull();
    expect(() => priceUsage({ usage: usage('openai'), occurredAt: at, rules, steps: new Map(), costAttos: 1n, costProblem: null, currency: 'USD' })).not.toThrow();
  });

  it('finds a tie on a meter the event moves, of any quantity kinds', () => {
    const rules = [row('flat', 'FLAT', { meterKey: 'tokens' }), row('tiers', 'PACKAGE', { meterKey: 'tokens' })];
    expect(ruleTie({ usage: usage('openai'), occurredAt: at, rules, meters: ['tokens'] })).toMatchObject({ details: { rules: ['flat', 'tiers'] } });
    expect(ruleTie({ usage: usage('openai'), occurredAt: at, rules, meters: ['images'] })).toBeNull();
  });

  it('a tie in the default book is hidden by a plan rule that prices the part', () => {
    const rules = [row('a', 'MARKUP'), row('b', 'MARKUP')];
    const planRules = [row('plan markup', 'MARKUP', {}, '00000000-0000-4000-8000-00000000a1a1')];
    expect(ruleTie({ usage: usage('openai'), occurredAt: at, rules, planRules, meters: [] })).toBeNull();
    expect(ruleTie({ usage: usage('openai'), occurredAt: at, rules, meters: [] })).not.toBeNull();
  });
});
