import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { MeterAggregation } from '../../generated/prisma/client.ts';
import { scaledQuantity } from '../pricing/decimal.ts';
import { applyRule, periodChargeAttos, type PricingRule, type Tier } from '../pricing/rules.ts';
import { periodContribution, stepPeriodTotal } from './usage.pricing.ts';

/**
 * Meter aggregations, free of I/O: each event is priced on the step it makes in the period
 * total (priced only when it adds something, as UsageService does).
 */
function chargesOver(rule: PricingRule, aggregation: MeterAggregation, quantities: (number | string)[]) {
  let total = '0';
  const charges = quantities.map((quantity) => {
    const step = stepPeriodTotal(aggregation, total, quantity);
    expect(step.prior).toBe(total);
    total = step.after;
    return step.quantity === '0' ? 0n : applyRule(rule, { quantity: step.quantity, priorQuantity: step.prior }).chargeAttos;
  });
  return { charges, total };
}

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
    expect(stepPeriodTotal('SUM', '10', 5)).toEqual({ prior: '10', quantity: '5', after: '15' });
    expect(stepPeriodTotal('SUM', '1.5', '0.25')).toEqual({ prior: '1.5', quantity: '0.25', after: '1.75' });
    expect(periodContribution('SUM', '2.50')).toBe('2.5');
  });

  it('COUNT: each event adds 1 whatever its quantity; N events price like N units', () => {
    expect(stepPeriodTotal('COUNT', '3', 4096)).toEqual({ prior: '3', quantity: '1', after: '4' });
    expect(periodContribution('COUNT', '12.5')).toBe('1');
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
    expect(stepPeriodTotal('MAX', '5', 3)).toEqual({ prior: '5', quantity: '0', after: '5' });
    expect(stepPeriodTotal('MAX', '5', '7.5')).toEqual({ prior: '5', quantity: '2.5', after: '7.5' });
    expect(periodContribution('MAX', 7)).toBe('7');
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
