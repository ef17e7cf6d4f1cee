import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { MeterAggregation } from '../../generated/prisma/client.ts';
import { scaledQuantity } from '../pricing/decimal.ts';
import { parseDecimalAttos } from '../../shared/money.ts';
import { applyRule, periodChargeAttos, type PricingRule, type Tier } from '../pricing/rules.ts';
import type { RuleRow } from '../pricing/rules.service.ts';
import { periodContribution, priceUsage, stepPeriodTotal } from './usage.pricing.ts';
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
      steps: new Map([['out', { quantity: 500n, prior: 0n }], ['requests', { quantity: 1n, prior: 0n }]]), costAttos: attos('0.002'), costProblem: null,
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
