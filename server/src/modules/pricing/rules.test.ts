import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../shared/errors.ts';
import { parseDecimalAttos } from '../../shared/money.ts';
import { clashingRule, rulesInForce, type RuleRow } from './rules.service.ts';
import { applyRule, maxEventChargeAttos, periodChargeAttos, selectRule, validateRule, type PricingRule, type Tier } from './rules.ts';

const usd = (text: string) => parseDecimalAttos('test', text);
const ATTO_SCALE = 10n ** 18n;

function validationField(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe('VALIDATION');
    return (error as AppError).details.field;
  }
  throw new Error('expected a VALIDATION error');
}

/** The charges of a period's events, each priced on the running total before it. */
function chargesOver(rule: PricingRule, parts: (number | string)[], start: number | string = 0) {
  let prior: number | string = start;
  return parts.map((quantity) => {
    const result = applyRule(rule, { quantity, priorQuantity: prior });
    expect(typeof result.chargeAttos).toBe('bigint');
    expect(typeof result.marginAttos).toBe('bigint');
    prior = typeof prior === 'number' && typeof quantity === 'number' ? prior + quantity : addDecimal(String(prior), String(quantity));
    return result.chargeAttos;
  });
}

/** Sum of two non-negative decimal strings, exactly (test helper; at most 18 places). */
function addDecimal(a: string, b: string): string {
  const scaled = (text: string) => {
    const [whole = '0', fraction = ''] = text.split('.');
    return BigInt(whole) * ATTO_SCALE + BigInt(fraction.padEnd(18, '0'));
  };
  const sum = scaled(a) + scaled(b);
  return `${sum / ATTO_SCALE}.${(sum % ATTO_SCALE).toString().padStart(18, '0')}`;
}

const sum = (values: bigint[]) => values.reduce((total, value) => total + value, 0n);

// Prices with up to nine decimals, bounds as whole units.
const priceArb = fc.tuple(fc.nat({ max: 1000 }), fc.nat({ max: 999_999_999 })).map(([whole, nanos]) => `${whole}.${String(nanos).padStart(9, '0')}`);
const tiersArb: fc.Arbitrary<Tier[]> = fc
  .tuple(
    fc.uniqueArray(fc.integer({ min: 1, max: 10_000 }), { maxLength: 4 }),
    fc.array(fc.record({ unitPrice: priceArb, flatFee: fc.option(priceArb, { nil: undefined }) }), { minLength: 5, maxLength: 5 }),
  )
  .map(([bounds, specs]) => [...[...bounds].sort((a, b) => a - b), null].map((upTo, index) => ({ upTo, ...specs[index]! })));
const partsArb = fc.array(fc.nat({ max: 4_000 }), { maxLength: 12 });
const decimalPartsArb = fc.array(
  fc.tuple(fc.nat({ max: 3_000 }), fc.nat({ max: 999_999 })).map(([whole, micro]) => `${whole}.${String(micro).padStart(6, '0')}`),
  { maxLength: 8 },
);

describe('tiered pricing', () => {
  const graduated: PricingRule = {
    kind: 'GRADUATED',
    tiers: [
      { upTo: 1000, unitPrice: '0.002' },
      { upTo: 10_000, unitPrice: '0.001', flatFee: '1' },
      { upTo: null, unitPrice: '0.0005', flatFee: '5' },
    ],
  };
  const volume: PricingRule = { ...graduated, kind: 'VOLUME' };

  it('graduated: each unit at its own tier, a tier\'s flat fee once the period enters it', () => {
    expect(periodChargeAttos(graduated, 0)).toBe(0n);
    expect(periodChargeAttos(graduated, 1000)).toBe(usd('2'));
    expect(periodChargeAttos(graduated, 1001)).toBe(usd('3.001'));
    expect(periodChargeAttos(graduated, 12_000)).toBe(usd('2') + usd('1') + usd('9') + usd('5') + usd('1'));
  });

  it('volume: every unit at the rate of the tier the total falls in (upTo inclusive)', () => {
    expect(periodChargeAttos(volume, 1000)).toBe(usd('2'));
    expect(periodChargeAttos(volume, 1001)).toBe(usd('2.001'));
    expect(periodChargeAttos(volume, 12_000)).toBe(usd('11'));
  });

  it('volume: crossing into a cheaper tier credits earlier over-collection as a negative charge', () => {
    const simple: PricingRule = { kind: 'VOLUME', tiers: [{ upTo: 100, unitPrice: '1' }, { upTo: null, unitPrice: '0.5' }] };
    expect(applyRule(simple, { quantity: 100, priorQuantity: 0 }).chargeAttos).toBe(usd('100'));
    const crossing = applyRule(simple, { quantity: 1, priorQuantity: 100, costAttos: usd('0.01') });
    expect(crossing.chargeAttos).toBe(usd('-49.5'));
    expect(crossing.marginAttos).toBe(usd('-49.51'));
    expect(applyRule(simple, { quantity: 1, priorQuantity: 101 }).chargeAttos).toBe(usd('0.5'));
  });

  it('property: graduated equals the sum of per-tier products (and flat fees of entered tiers)', () => {
    fc.assert(
      fc.property(tiersArb, fc.nat({ max: 30_000 }), (tiers, quantity) => {
        let expected = 0n;
        let lower = 0;
        for (const tier of tiers) {
          const upper = tier.upTo === null ? quantity : Math.min(quantity, Number(tier.upTo));
          const inTier = Math.max(0, upper - lower);
          if (inTier > 0) expected += BigInt(inTier) * usd(tier.unitPrice) + (tier.flatFee ? usd(tier.flatFee) : 0n);
          if (tier.upTo !== null) lower = Number(tier.upTo);
        }
        const charge = periodChargeAttos({ kind: 'GRADUATED', tiers }, quantity);
        expect(typeof charge).toBe('bigint');
        expect(charge).toBe(expected);
      }),
    );
  });

  it('property: volume prices the whole quantity at exactly one tier\'s rate', () => {
    fc.assert(
      fc.property(tiersArb, fc.integer({ min: 1, max: 30_000 }), (tiers, quantity) => {
        const matching = tiers.filter((tier, index) => {
          const lower = index === 0 ? 0 : Number(tiers[index - 1]!.upTo);
          return quantity > lower && (tier.upTo === null || quantity <= Number(tier.upTo));
        });
        expect(matching).toHaveLength(1);
        const tier = matching[0]!;
        const charge = periodChargeAttos({ kind: 'VOLUME', tiers }, quantity);
        expect(charge).toBe(BigInt(quantity) * usd(tier.unitPrice) + (tier.flatFee ? usd(tier.flatFee) : 0n));
      }),
    );
  });

  it('property: incremental charges over any split of a period sum to the price of its total', () => {
    fc.assert(
      fc.property(tiersArb, partsArb, fc.constantFrom('GRADUATED' as const, 'VOLUME' as const), (tiers, parts, kind) => {
        const rule: PricingRule = { kind, tiers };
        const total = parts.reduce((a, b) => a + b, 0);
        expect(sum(chargesOver(rule, parts))).toBe(periodChargeAttos(rule, total));
      }),
    );
  });

  it('property: the same holds for fractional quantities, rounding included', () => {
    fc.assert(
      fc.property(tiersArb, decimalPartsArb, fc.constantFrom('GRADUATED' as const, 'VOLUME' as const), (tiers, parts, kind) => {
        const rule: PricingRule = { kind, tiers };
        const total = parts.reduce(addDecimal, '0');
        expect(sum(chargesOver(rule, parts))).toBe(periodChargeAttos(rule, total));
      }),
    );
  });

  it('property: graduated increments are never negative', () => {
    fc.assert(
      fc.property(tiersArb, partsArb, (tiers, parts) => {
        for (const charge of chargesOver({ kind: 'GRADUATED', tiers }, parts)) expect(charge).toBeGreaterThanOrEqual(0n);
      }),
    );
  });
});

describe('package and flat pricing', () => {
  it('package: whole packages, rounded up per period, charged as the period crosses each boundary', () => {
    const rule: PricingRule = { kind: 'PACKAGE', packageSize: 1000, packagePrice: '2' };
    expect(applyRule(rule, { quantity: 1, priorQuantity: 0 }).chargeAttos).toBe(usd('2'));
    expect(applyRule(rule, { quantity: 999, priorQuantity: 1 }).chargeAttos).toBe(0n);
    expect(applyRule(rule, { quantity: 1, priorQuantity: 1000 }).chargeAttos).toBe(usd('2'));
    expect(applyRule(rule, { quantity: 2500, priorQuantity: 1000 }).chargeAttos).toBe(usd('6'));
    expect(periodChargeAttos(rule, 0)).toBe(0n);
  });

  it('flat: per unit, or per N units ($2 per 1,000 tokens)', () => {
    expect(applyRule({ kind: 'FLAT', unitPrice: '0.01' }, { quantity: 7 }).chargeAttos).toBe(usd('0.07'));
    const perThousand: PricingRule = { kind: 'FLAT', unitPrice: '2', perUnits: 1000 };
    expect(applyRule(perThousand, { quantity: 1 }).chargeAttos).toBe(usd('0.002'));
    expect(applyRule(perThousand, { quantity: 1234, costAttos: usd('0.001') })).toEqual({
      chargeAttos: usd('2.468'),
      marginAttos: usd('2.467'),
    });
    // $1 per 3 units does not divide: each period total rounds to the atto, increments telescope.
    const thirds: PricingRule = { kind: 'FLAT', unitPrice: '1', perUnits: 3 };
    expect(periodChargeAttos(thirds, 1)).toBe(333_333_333_333_333_333n);
    expect(periodChargeAttos(thirds, 2)).toBe(666_666_666_666_666_667n);
    expect(sum(chargesOver(thirds, [1, 1, 1]))).toBe(usd('1'));
  });

  it('property: package and flat increments over any split sum to the period price', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5000 }), priceArb, partsArb, fc.nat({ max: 100_000 }),
        (size, price, parts, start) => {
          for (const rule of [
            { kind: 'PACKAGE', packageSize: size, packagePrice: price },
            { kind: 'FLAT', unitPrice: price, perUnits: size },
          ] satisfies PricingRule[]) {
            const total = start + parts.reduce((a, b) => a + b, 0);
            expect(sum(chargesOver(rule, parts, start))).toBe(periodChargeAttos(rule, total) - periodChargeAttos(rule, start));
            for (const charge of chargesOver(rule, parts, start)) expect(charge).toBeGreaterThanOrEqual(0n);
          }
        },
      ),
    );
  });

  it('property: package charges equal ceil(total / size) × price', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5000 }), priceArb, fc.nat({ max: 1_000_000 }), (size, price, total) => {
        const expected = BigInt(Math.ceil(total / size)) * usd(price);
        expect(periodChargeAttos({ kind: 'PACKAGE', packageSize: size, packagePrice: price }, total)).toBe(expected);
      }),
    );
  });
});

describe('markup', () => {
  it('cost × (100 + p) / 100, plus a fee per request', () => {
    const rule: PricingRule = { kind: 'MARKUP', percent: '25', feePerRequest: '0.001' };
    const cost = usd('0.00331125');
    const result = applyRule(rule, { quantity: 0, costAttos: cost });
    expect(result.chargeAttos).toBe((cost * 125n) / 100n + usd('0.001'));
    expect(result.marginAttos).toBe(result.chargeAttos - cost);
    expect(applyRule(rule, { quantity: 0, costAttos: 0n, requests: 3 }).chargeAttos).toBe(usd('0.003'));
    expect(applyRule({ kind: 'MARKUP', percent: '12.5' }, { quantity: 0, costAttos: 8n }).chargeAttos).toBe(9n);
    // 1 atto × 1.125 = 1.125 → 1; 4 attos × 1.125 = 4.5 → 5 (halves up).
    expect(applyRule({ kind: 'MARKUP', percent: '12.5' }, { quantity: 0, costAttos: 1n }).chargeAttos).toBe(1n);
    expect(applyRule({ kind: 'MARKUP', percent: '12.5' }, { quantity: 0, costAttos: 4n }).chargeAttos).toBe(5n);
    expect(applyRule({ kind: 'MARKUP', percent: '0' }, { quantity: 0, costAttos: 77n })).toEqual({ chargeAttos: 77n, marginAttos: 0n });
  });

  it('property: exact when divisible, otherwise within half an atto', () => {
    const percentArb = fc.tuple(fc.nat({ max: 500 }), fc.nat({ max: 999 })).map(([whole, milli]) => `${whole}.${String(milli).padStart(3, '0')}`);
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 10n ** 24n }), percentArb, (cost, percent) => {
        const { chargeAttos } = applyRule({ kind: 'MARKUP', percent }, { quantity: 0, costAttos: cost });
        expect(typeof chargeAttos).toBe('bigint');
        const scale = 100n * ATTO_SCALE;
        const exact = cost * (scale + usd(percent)); // charge × scale, if nothing were lost
        if (exact % scale === 0n) expect(chargeAttos * scale).toBe(exact);
        const error = chargeAttos * scale - exact;
        expect(2n * (error < 0n ? -error : error)).toBeLessThanOrEqual(scale);
      }),
    );
  });
});

describe('minimum charge', () => {
  it('raises small charges to the floor', () => {
    const rule: PricingRule = { kind: 'FLAT', unitPrice: '0.000001', minimumCharge: '0.01' };
    expect(applyRule(rule, { quantity: 10 }).chargeAttos).toBe(usd('0.01'));
    expect(applyRule(rule, { quantity: 100_000 }).chargeAttos).toBe(usd('0.1'));
  });

  it('property: a minimum never lowers a charge', () => {
    const ruleArb: fc.Arbitrary<PricingRule> = fc.oneof(
      fc.record({ kind: fc.constant('FLAT' as const), unitPrice: priceArb }),
      fc.record({ kind: fc.constant('MARKUP' as const), percent: fc.constantFrom('0', '25', '12.5', '300') }),
      fc.record({ kind: fc.constant('GRADUATED' as const), tiers: tiersArb }),
      fc.record({ kind: fc.constant('PACKAGE' as const), packageSize: fc.integer({ min: 1, max: 100 }), packagePrice: priceArb }),
    );
    fc.assert(
      fc.property(ruleArb, priceArb, fc.nat({ max: 10_000 }), fc.nat({ max: 10_000 }), fc.bigInt({ min: 0n, max: 10n ** 20n }),
        (rule, minimum, quantity, priorQuantity, costAttos) => {
          const input = { quantity, priorQuantity, costAttos };
          const plain = applyRule(rule, input);
          const floored = applyRule({ ...rule, minimumCharge: minimum }, input);
          expect(floored.chargeAttos).toBeGreaterThanOrEqual(plain.chargeAttos);
          expect(floored.chargeAttos).toBeGreaterThanOrEqual(usd(minimum));
          expect(floored.chargeAttos === plain.chargeAttos || floored.chargeAttos === usd(minimum)).toBe(true);
          expect(floored.marginAttos).toBe(floored.chargeAttos - costAttos);
        }),
    );
  });
});

describe('VOLUME priced from what the rule charged (another version priced part of the period)', () => {
  const doubled: PricingRule = { kind: 'VOLUME', tiers: [{ upTo: 100, unitPrice: '2' }, { upTo: null, unitPrice: '1' }] };

  it("charges the period's price at this version less what was charged, whichever way that goes", () => {
    // 110 units at 1 = 110, of which 100 was charged: 10, where this version's own price of 100 (200) gives -90.
    expect(applyRule(doubled, { quantity: 10, priorQuantity: 100 }).chargeAttos).toBe(usd('-90'));
    expect(applyRule(doubled, { quantity: 10, priorQuantity: 100, priorChargeAttos: usd('100') }).chargeAttos).toBe(usd('10'));
    // Charged more than this version prices the period at: the difference comes back, no more.
    expect(applyRule(doubled, { quantity: 10, priorQuantity: 100, priorChargeAttos: usd('150') }).chargeAttos).toBe(usd('-40'));
    expect(applyRule(doubled, { quantity: 1, priorQuantity: 0, priorChargeAttos: 0n }).chargeAttos).toBe(usd('2'));
  });

  it('is ignored by the other kinds, whose increments price only their own units', () => {
    const graduated: PricingRule = { kind: 'GRADUATED', tiers: doubled.tiers };
    expect(applyRule(graduated, { quantity: 10, priorQuantity: 100, priorChargeAttos: usd('7') }).chargeAttos).toBe(usd('10'));
    expect(applyRule({ kind: 'FLAT', unitPrice: '1' }, { quantity: 10, priorQuantity: 100, priorChargeAttos: usd('7') }).chargeAttos).toBe(usd('10'));
  });
});

describe('markup of an unknown cost', () => {
  it('charges only the fee per request: no floor', () => {
    const rule: PricingRule = { kind: 'MARKUP', percent: '25', feePerRequest: '0.001', minimumCharge: '0.50' };
    expect(applyRule(rule, { quantity: 0, costAttos: 0n, requests: 2, costUnknown: true })).toEqual({ chargeAttos: usd('0.002'), marginAttos: usd('0.002') });
    expect(applyRule({ kind: 'MARKUP', percent: '25', minimumCharge: '0.50' }, { quantity: 0, costAttos: 0n, costUnknown: true }).chargeAttos).toBe(0n);
    // A cost known to be zero (a free model) is still floored.
    expect(applyRule(rule, { quantity: 0, costAttos: 0n }).chargeAttos).toBe(usd('0.50'));
  });
});

describe('maxEventChargeAttos (what a quote reserves)', () => {
  it('prices at the dearest tier, with every flat fee, whatever the period total', () => {
    const allowance: PricingRule = { kind: 'GRADUATED', tiers: [{ upTo: 1000, unitPrice: '0' }, { upTo: null, unitPrice: '0.01', flatFee: '2' }] };
    expect(maxEventChargeAttos(allowance, 500)).toBe(usd('7'));
    expect(applyRule(allowance, { quantity: 500, priorQuantity: 900 }).chargeAttos).toBe(usd('6'));
    // A VOLUME move out of a free tier re-prices its 1000 units at the dearer rate.
    const volume: PricingRule = { kind: 'VOLUME', tiers: [{ upTo: 1000, unitPrice: '0' }, { upTo: null, unitPrice: '0.01' }] };
    expect(applyRule(volume, { quantity: 1, priorQuantity: 1000 }).chargeAttos).toBe(usd('10.01'));
    expect(maxEventChargeAttos(volume, 1)).toBe(usd('10.01'));
    // Cheaper tiers above re-price nothing upwards.
    expect(maxEventChargeAttos({ kind: 'VOLUME', tiers: [{ upTo: 100, unitPrice: '1' }, { upTo: null, unitPrice: '0.5' }] }, 10)).toBe(usd('10'));
    // A partly used package has room left: the most is the packages of an empty period.
    const pack: PricingRule = { kind: 'PACKAGE', packageSize: 100, packagePrice: '1' };
    expect(maxEventChargeAttos(pack, 101)).toBe(usd('2'));
    expect(applyRule(pack, { quantity: 101, priorQuantity: 199 }).chargeAttos).toBe(usd('1'));
    expect(applyRule(pack, { quantity: 101, priorQuantity: 200 }).chargeAttos).toBe(usd('2'));
    expect(maxEventChargeAttos({ kind: 'FLAT', unitPrice: '0.1', minimumCharge: '1' }, 3)).toBe(usd('1'));
  });

  it('property: never below what the event is charged, whatever the total before it', () => {
    const quantityArb = fc.oneof(fc.nat({ max: 12_000 }), fc.tuple(fc.nat({ max: 12_000 }), fc.nat({ max: 999_999 })).map(([whole, micro]) => `${whole}.${String(micro).padStart(6, '0')}`));
    const minimumArb = fc.option(priceArb, { nil: undefined });
    const ruleArb: fc.Arbitrary<PricingRule> = fc.oneof(
      fc.record({ kind: fc.constant('FLAT' as const), unitPrice: priceArb, perUnits: fc.integer({ min: 1, max: 1000 }), minimumCharge: minimumArb }),
      fc.record({ kind: fc.constant('GRADUATED' as const), tiers: tiersArb, minimumCharge: minimumArb }),
      fc.record({ kind: fc.constant('VOLUME' as const), tiers: tiersArb }),
      fc.record({ kind: fc.constant('PACKAGE' as const), packageSize: fc.oneof(fc.integer({ min: 1, max: 500 }), fc.constant('2.5')), packagePrice: priceArb, minimumCharge: minimumArb }),
    );
    fc.assert(
      fc.property(ruleArb, quantityArb, quantityArb, (rule, quantity, priorQuantity) => {
        expect(applyRule(rule, { quantity, priorQuantity }).chargeAttos).toBeLessThanOrEqual(maxEventChargeAttos(rule, quantity));
      }),
      { numRuns: 2000 },
    );
  });

  it('has no bound for a markup, which follows the cost', () => {
    expect(validationField(() => maxEventChargeAttos({ kind: 'MARKUP', percent: '10' }, 1))).toBe('rule.kind');
  });
});

describe('rule validation', () => {
  it('names the field it rejects', () => {
    const tiers = (list: Tier[]): PricingRule => ({ kind: 'GRADUATED', tiers: list });
    expect(validationField(() => validateRule(tiers([])))).toBe('rule.tiers');
    expect(validationField(() => validateRule(tiers([{ upTo: 10, unitPrice: '1' }])))).toBe('rule.tiers.0.upTo');
    expect(validationField(() => validateRule(tiers([{ upTo: null, unitPrice: '1' }, { upTo: null, unitPrice: '1' }])))).toBe('rule.tiers.0.upTo');
    expect(validationField(() => validateRule(tiers([
      { upTo: 10, unitPrice: '1' }, { upTo: 10, unitPrice: '1' }, { upTo: null, unitPrice: '1' },
    ])))).toBe('rule.tiers.1.upTo');
    expect(validationField(() => validateRule(tiers([{ upTo: null, unitPrice: '0.1', flatFee: '-2' }])))).toBe('rule.tiers.0.flatFee');
    expect(validationField(() => validateRule({ kind: 'VOLUME', tiers: [{ upTo: null, unitPrice: '1' }], minimumCharge: '1' })))
      .toBe('rule.minimumCharge');
    expect(validationField(() => validateRule({ kind: 'MARKUP', percent: '-5' }))).toBe('rule.percent');
    expect(validationField(() => validateRule({ kind: 'MARKUP', percent: '12.5%' }))).toBe('rule.percent');
    expect(validationField(() => validateRule({ kind: 'PACKAGE', packageSize: 0, packagePrice: '1' }))).toBe('rule.packageSize');
    expect(validationField(() => validateRule({ kind: 'FLAT', unitPrice: '0.1', perUnits: 1.5 }))).toBe('rule.perUnits');
    expect(validationField(() => validateRule({ kind: 'FLAT', unitPrice: '1', minimumCharge: 'ten' }))).toBe('rule.minimumCharge');
    expect(validationField(() => validateRule({ kind: 'TIERED' } as unknown as PricingRule))).toBe('rule.kind');
    expect(validationField(() => applyRule({ kind: 'FLAT', unitPrice: '1' }, { quantity: 0.5 }))).toBe('quantity');
    expect(validationField(() => applyRule({ kind: 'FLAT', unitPrice: '1' }, { quantity: 1, priorQuantity: -1 }))).toBe('priorQuantity');
    expect(validationField(() => applyRule({ kind: 'MARKUP', percent: '1' }, { quantity: 0, costAttos: -1n }))).toBe('costAttos');
    expect(validationField(() => periodChargeAttos({ kind: 'MARKUP', percent: '1' }, 1))).toBe('rule.kind');
    const ok: PricingRule = { kind: 'VOLUME', meter: 'seconds', tiers: [{ upTo: '0.5', unitPrice: '2' }, { upTo: null, unitPrice: '1' }] };
    expect(validateRule(ok)).toBe(ok);
  });

  it('refuses a rule whose shape could never apply: a quantity rule with no meter, a markup with one', () => {
    const quantityRules: PricingRule[] = [
      { kind: 'FLAT', unitPrice: '0.01' },
      { kind: 'GRADUATED', tiers: [{ upTo: null, unitPrice: '1' }] },
      { kind: 'VOLUME', tiers: [{ upTo: null, unitPrice: '1' }] },
      { kind: 'PACKAGE', packageSize: 10, packagePrice: '1' },
    ];
    for (const rule of quantityRules) {
      expect(validationField(() => validateRule(rule)), rule.kind).toBe('rule.meterKey');
      expect(validationField(() => validateRule({ ...rule, meter: ' ' })), rule.kind).toBe('rule.meterKey');
      expect(validateRule({ ...rule, meter: 'tokens' })).toMatchObject({ meter: 'tokens' });
    }
    expect(validationField(() => validateRule({ kind: 'MARKUP', percent: '25', meter: 'tokens' }))).toBe('rule.meterKey');
    expect(validateRule({ kind: 'MARKUP', percent: '25', provider: 'anthropic' })).toMatchObject({ kind: 'MARKUP' });
  });

  it('the checks on writing do not stop rules stored before them from pricing', () => {
    // Refused when put now (a fractional number percent, an unknown key, above the cap), but such
    // rows may be stored: ingest prices them as before rather than failing every event.
    const legacy = [
      { kind: 'MARKUP', percent: 12.5 },
      { kind: 'MARKUP', percent: '10', note: 'from an old import' },
      { kind: 'MARKUP', percent: '2000000' },
    ] as unknown as PricingRule[];
    expect(validationField(() => validateRule(legacy[0]!))).toBe('rule.percent');
    expect(validationField(() => validateRule(legacy[1]!))).toBe('rule.note');
    expect(validationField(() => validateRule(legacy[2]!))).toBe('rule.percent');
    expect(legacy.map((rule) => applyRule(rule, { quantity: 0, costAttos: 1000n }).chargeAttos)).toEqual([1125n, 1100n, 20001000n]);
    const tiers = { kind: 'GRADUATED', meter: 'tok', tiers: [{ upTo: null, unitPrice: '2', note: 'x' }] } as unknown as PricingRule;
    expect(validationField(() => validateRule(tiers))).toBe('rule.tiers.0.note');
    expect(applyRule(tiers, { quantity: 3 }).chargeAttos).toBe(6n * ATTO_SCALE);
    // A tier that is not an object is a VALIDATION error, on writing and on pricing, never a TypeError.
    const broken = { kind: 'GRADUATED', meter: 'tok', tiers: [null] } as unknown as PricingRule;
    expect(validationField(() => validateRule(broken))).toBe('rule.tiers.0');
    expect(validationField(() => applyRule(broken, { quantity: 1 }))).toBe('rule.tiers.0');
  });
});

describe('clashingRule (two rules of a book that would tie)', () => {
  let ids = 0;
  const version = (name: string, type: RuleRow['type'], target: { meterKey?: string; provider?: string; model?: string }, from: string, archivedAt: string | null = null): RuleRow => ({
    id: `00000000-0000-4000-8000-${String(++ids).padStart(12, '0')}`, merchantId: 'm', planId: null, name, type, meterKey: target.meterKey ?? null,
    provider: target.provider ?? null, model: target.model ?? null, currency: 'USD', config: {}, effectiveFrom: new Date(from), archivedAt: archivedAt ? new Date(archivedAt) : null, createdAt: new Date(from),
  });
  const candidate = (name: string, type: RuleRow['type'], target: { meterKey?: string; provider?: string; model?: string }, from: string) =>
    ({ name, type, meterKey: target.meterKey ?? null, provider: target.provider ?? null, model: target.model ?? null, effectiveFrom: new Date(from) });

  it('finds another rule with the same target in force at the same time, whatever the case of its names', () => {
    const book = [version('claude', 'MARKUP', { provider: 'anthropic' }, '2026-01-01'), version('tokens', 'FLAT', { meterKey: 'tokens' }, '2026-01-01')];
    expect(clashingRule(book, candidate('claude 2', 'MARKUP', { provider: 'Anthropic ' }, '2026-06-01'))?.name).toBe('claude');
    expect(clashingRule(book, candidate('tiers', 'GRADUATED', { meterKey: 'tokens' }, '2026-06-01'))?.name).toBe('tokens');
    // Another target, or a new version of the same rule, is no clash.
    expect(clashingRule(book, candidate('openai', 'MARKUP', { provider: 'openai' }, '2026-06-01'))).toBeNull();
    expect(clashingRule(book, candidate('claude-model', 'MARKUP', { provider: 'anthropic', model: 'claude-opus-4-8' }, '2026-06-01'))).toBeNull();
    expect(clashingRule(book, candidate('images', 'FLAT', { meterKey: 'images' }, '2026-06-01'))).toBeNull();
    expect(clashingRule(book, candidate('claude', 'MARKUP', { provider: 'anthropic' }, '2026-06-01'))).toBeNull();
  });

  it('only while both are in force: not after the other was archived or moved to another target', () => {
    const archived = [version('all', 'MARKUP', {}, '2026-01-01', '2026-03-01')];
    expect(clashingRule(archived, candidate('all 2', 'MARKUP', {}, '2026-03-01'))).toBeNull();
    expect(clashingRule(archived, candidate('all 2', 'MARKUP', {}, '2026-02-01'))?.name).toBe('all');
    const moved = [version('a', 'MARKUP', {}, '2026-01-01'), version('a', 'MARKUP', { provider: 'openai' }, '2026-04-01')];
    expect(clashingRule(moved, candidate('b', 'MARKUP', {}, '2026-05-01'))).toBeNull();
    expect(clashingRule(moved, candidate('b', 'MARKUP', {}, '2026-03-01'))?.name).toBe('a');
    // Scheduled for later, the other rule still clashes with one in force from now on.
    expect(clashingRule([version('later', 'MARKUP', {}, '2027-01-01')], candidate('now', 'MARKUP', {}, '2026-06-01'))?.name).toBe('later');
  });

  it('a version archived before its date never took effect: it neither ends the one before it nor is in force', () => {
    // "a" in force from January, its March version stopped in February with the rule, then put again from February 15.
    const book = [version('a', 'MARKUP', {}, '2026-01-01', '2026-02-01'), version('a', 'MARKUP', {}, '2026-03-01', '2026-02-01'), version('a', 'MARKUP', {}, '2026-02-15')];
    expect(rulesInForce(book, new Date('2026-04-01')).map((row) => row.effectiveFrom.toISOString())).toEqual(['2026-02-15T00:00:00.000Z']);
    expect(clashingRule(book, candidate('b', 'MARKUP', {}, '2026-04-01'))?.effectiveFrom.toISOString()).toBe('2026-02-15T00:00:00.000Z');
  });
});

describe('selectRule', () => {
  const rules = [
    { id: 'meter', meter: 'tokens' },
    { id: 'openai', meter: 'tokens', provider: 'openai' },
    { id: 'mini', model: 'gpt-5.4-mini' },
    { id: 'mini-snapshot', provider: 'openai', model: 'gpt-5.4-mini-2026-03-17' },
    { id: 'images', meter: 'images' },
    { id: 'anthropic-any-meter', provider: 'anthropic' },
  ];
  const pick = (event: Parameters<typeof selectRule>[1]) => selectRule(rules, event)?.id ?? null;

  it('model > provider > meter default', () => {
    expect(pick({ meter: 'tokens', provider: 'openai', model: 'gpt-5.4-mini' })).toBe('mini');
    expect(pick({ meter: 'tokens', provider: 'openai', model: 'gpt-5.4' })).toBe('openai');
    expect(pick({ meter: 'tokens', provider: 'groq', model: 'llama' })).toBe('meter');
    expect(pick({ meter: 'tokens', provider: 'Anthropic', model: 'claude-opus-4-8' })).toBe('anthropic-any-meter');
    expect(pick({ meter: 'images', provider: 'openai', model: 'gpt-image-1.5' })).toBe('images');
    expect(pick({ meter: 'seconds', provider: 'groq' })).toBeNull();
  });

  it('a dated model matches its undated rule; an exact name beats it', () => {
    expect(pick({ meter: 'tokens', provider: 'openai', model: 'gpt-5.4-mini-2026-05-01' })).toBe('mini');
    expect(pick({ meter: 'tokens', provider: 'openai', model: 'gpt-5.4-mini-2026-03-17' })).toBe('mini-snapshot');
    expect(pick({ meter: 'tokens', provider: 'azure', model: 'gpt-5.4-mini-2026-03-17' })).toBe('mini');
  });

  it('a catch-all rule matches last; equal matches are a configuration error', () => {
    expect(selectRule([{ id: 'all' }, ...rules], { meter: 'seconds' })?.id).toBe('all');
    expect(selectRule([{ id: 'all' }, ...rules], { meter: 'tokens' })?.id).toBe('meter');
    expect(validationField(() => selectRule([...rules, { id: 'again', meter: 'tokens' }], { meter: 'tokens' }))).toBe('rules');
    expect(selectRule([...rules, { id: 'again', meter: 'tokens' }], { meter: 'tokens', provider: 'openai' })?.id).toBe('openai');
  });

  it('works on full rules, returning the rule to apply', () => {
    const priced: PricingRule[] = [
      { meter: 'tokens', kind: 'MARKUP', percent: '20' },
      { meter: 'tokens', provider: 'openai', model: 'gpt-5.4-mini', kind: 'FLAT', unitPrice: '2', perUnits: 1_000_000 },
    ];
    const rule = selectRule(priced, { meter: 'tokens', provider: 'openai', model: 'gpt-5.4-mini-2026-03-17' })!;
    expect(applyRule(rule, { quantity: 2471 + 612, costAttos: usd('0.00331125') })).toEqual({
      chargeAttos: usd('0.006166'),
      marginAttos: usd('0.00285475'),
    });
  });
});
