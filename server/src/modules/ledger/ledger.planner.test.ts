import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ATTOS_PER_NANO, formatNanos, parseDecimalAttos, parseDecimalNanos } from '../../shared/money.ts';
import { creditLegs, creditToKeep, fitsDebit, keptFor, planCredit, planDebit, sortGrants, type GrantState, type WalletState } from './ledger.planner.ts';

const wallet = (overrides: Partial<WalletState> = {}): WalletState => ({
  id: 'w', balance: 0n, carry: 0n, overdraftLimit: 0n, held: 0n, version: 0n, grants: [], ...overrides,
});

const grant = (id: string, remaining: bigint, overrides: Partial<GrantState> = {}): GrantState => ({
  id, kind: 'PAID', remaining, priority: 0, expiresAt: null, createdAt: new Date('2026-01-01T00:00:00Z'), holdId: null, holdLive: false, ...overrides,
});

/** Applies a plan the way the store does: balance by the sum of legs, each grant by its legs. */
function apply(state: WalletState, plan: Extract<ReturnType<typeof planDebit>, { ok: true }>) {
  for (const leg of plan.legs) {
    state.balance += leg.amount;
    const target = state.grants.find((g) => g.id === leg.grantId);
    if (target) target.remaining += leg.amount;
  }
  state.carry = plan.carry;
}

describe('fitsDebit', () => {
  it('answers exactly as planDebit does, with and without overdraft', () => {
    const nanos = fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n });
    fc.assert(
      fc.property(nanos, fc.bigInt({ min: 0n, max: ATTOS_PER_NANO - 1n }), fc.bigInt({ min: 0n, max: 10n ** 12n }), fc.bigInt({ min: 0n, max: 10n ** 12n }),
        fc.bigInt({ min: -(10n ** 21n), max: 10n ** 21n }), fc.boolean(), (balance, carry, overdraftLimit, held, attos, allowOverdraft) => {
          const state = wallet({ balance, carry, overdraftLimit, held });
          expect(fitsDebit(state, attos, allowOverdraft)).toBe(planDebit(state, attos, { allowOverdraft }).ok);
        }),
      { numRuns: 2000 },
    );
  });
});

describe('sub-nano charges', () => {
  it('N tiny charges post their exact sum, to within one nano, and nothing is lost', () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: 1n, max: 5n * ATTOS_PER_NANO }), { minLength: 1, maxLength: 300 }), (charges) => {
        const state = wallet({ balance: 10n ** 15n, grants: [grant('g', 10n ** 15n)] });
        const start = state.balance;
        for (const attos of charges) {
          const plan = planDebit(state, attos);
          expect(plan.ok).toBe(true);
          if (plan.ok) apply(state, plan);
        }
        const exactAttos = charges.reduce((sum, value) => sum + value, 0n);
        const postedNanos = start - state.balance;
        // Posted + carried is exactly the sum; posted alone is within one nano below it.
        expect(postedNanos * ATTOS_PER_NANO + state.carry).toBe(exactAttos);
        expect(exactAttos - postedNanos * ATTOS_PER_NANO).toBeLessThan(ATTOS_PER_NANO);
        expect(state.carry).toBeGreaterThanOrEqual(0n);
      }),
    );
  });

  it('one token at $0.15 per million is exactly 150 nano-dollars', () => {
    expect(parseDecimalAttos('price', '0.00000015')).toBe(150n * ATTOS_PER_NANO);
    expect(parseDecimalNanos('price', '0.00000015')).toBe(150n);
    expect(formatNanos(150n)).toBe('0.00000015');
    expect(formatNanos(12_500_000_000n)).toBe('12.50');
    expect(formatNanos(-3_000_000_000n)).toBe('-3.00');
  });

  it('decimal parsing is exact and strict', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 18n), max: 10n ** 18n }), (nanos) => {
        expect(parseDecimalNanos('x', formatNanos(nanos))).toBe(nanos);
      }),
    );
    for (const bad of ['1e3', '0.1.2', 'abc', '', '1,5', '0.0000000001']) {
      expect(() => parseDecimalNanos('amount', bad), bad).toThrow(/amount/);
    }
  });
});

describe('credits against the carry', () => {
  it('move balance × 1e9 − carry by exactly the credit, keeping 0 ≤ carry < 1e9 and crediting whole nanos', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: ATTOS_PER_NANO - 1n }), fc.bigInt({ min: 1n, max: 10n ** 15n }), (carry, attos) => {
        const credit = planCredit(carry, attos);
        expect(credit.nanos * ATTOS_PER_NANO - credit.carry).toBe(attos - carry);
        expect(credit.carry >= 0n && credit.carry < ATTOS_PER_NANO).toBe(true);
        expect(credit.nanos >= 0n).toBe(true);
      }),
    );
  });

  it('a credit smaller than the carry only lowers it; one beyond it is rounded up and the excess carried', () => {
    expect(planCredit(700n, 300n)).toEqual({ nanos: 0n, carry: 400n });
    expect(planCredit(0n, 1n)).toEqual({ nanos: 1n, carry: ATTOS_PER_NANO - 1n });
    expect(planCredit(250n, 3n * ATTOS_PER_NANO + 250n)).toEqual({ nanos: 3n, carry: 0n });
  });

  it('charges and credits of sub-nano amounts in any order sum exactly', () => {
    fc.assert(
      fc.property(fc.array(fc.bigInt({ min: -(10n ** 12n), max: 10n ** 12n }).filter((n) => n !== 0n), { maxLength: 60 }), (moves) => {
        let state: WalletState = { id: 'w', balance: 0n, carry: 0n, overdraftLimit: 10n ** 9n, held: 0n, version: 0n, grants: [] };
        for (const attos of moves) {
          if (attos > 0n) {
            const plan = planDebit(state, attos, { allowOverdraft: true, ignoreLimits: true });
            if (!plan.ok) throw new Error('refused');
            state = { ...state, balance: state.balance - plan.nanos, carry: plan.carry };
          } else {
            const credit = planCredit(state.carry, -attos);
            state = { ...state, balance: state.balance + credit.nanos, carry: credit.carry };
          }
        }
        expect(state.balance * ATTOS_PER_NANO - state.carry).toBe(-moves.reduce((sum, attos) => sum + attos, 0n));
      }),
    );
  });
});

describe('debit planning', () => {
  it('never lets the balance drop below minus the overdraft limit, whatever the sequence', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: 1000n }),
        fc.bigInt({ min: 0n, max: 500n }),
        fc.array(fc.bigInt({ min: 1n, max: 400n }), { maxLength: 50 }),
        (start, limit, charges) => {
          const state = wallet({ balance: start, overdraftLimit: limit, grants: [grant('g', start)] });
          for (const nanos of charges) {
            const plan = planDebit(state, nanos * ATTOS_PER_NANO);
            if (plan.ok) apply(state, plan);
            expect(state.balance).toBeGreaterThanOrEqual(-limit);
            // Grants hold exactly the positive part of the balance.
            const remaining = state.grants.reduce((sum, g) => sum + g.remaining, 0n);
            expect(remaining).toBe(state.balance > 0n ? state.balance : 0n);
          }
        },
      ),
    );
  });

  it('counts pending holds against what a charge may use', () => {
    const state = wallet({ balance: 100n, held: 80n, grants: [grant('g', 100n)] });
    expect(planDebit(state, 30n * ATTOS_PER_NANO).ok).toBe(false);
    expect(planDebit(state, 20n * ATTOS_PER_NANO).ok).toBe(true);
    expect(planDebit(state, 100n * ATTOS_PER_NANO, { allowOverdraft: true, heldReleased: 80n }).ok).toBe(true);
  });

  it('draws grants in the given order and spills the rest into overdraft', () => {
    const state = wallet({ balance: 30n, overdraftLimit: 50n, grants: [grant('a', 10n), grant('b', 20n)] });
    const plan = planDebit(state, 45n * ATTOS_PER_NANO);
    expect(plan).toEqual({ ok: true, nanos: 45n, carry: 0n, legs: [{ grantId: 'a', amount: -10n }, { grantId: 'b', amount: -20n }, { grantId: null, amount: -15n }] });
  });

  it('repays overdraft before funding a new grant', () => {
    expect(creditLegs(wallet({ balance: -15n }), 40n, 'g')).toEqual([{ grantId: null, amount: 15n }, { grantId: 'g', amount: 25n }]);
    expect(creditLegs(wallet({ balance: -50n }), 40n, 'g')).toEqual([{ grantId: null, amount: 40n }]);
    expect(creditLegs(wallet({ balance: 5n, grants: [grant('a', 5n)] }), 40n, 'g')).toEqual([{ grantId: 'g', amount: 40n }]);
  });

  it('repays what the wallet owes even while credit kept for a hold makes its balance positive', () => {
    // 60 kept for a hold, 20 owed: the balance reads 40, yet the first 20 of a credit repay the debt.
    const state = wallet({ balance: 40n, grants: [grant('kept', 60n, { holdId: 'h', holdLive: true })] });
    expect(creditLegs(state, 50n, 'g')).toEqual([{ grantId: null, amount: 20n }, { grantId: 'g', amount: 30n }]);
  });
});

describe('credit kept for a hold', () => {
  const kept = (remaining: bigint, holdId = 'h') => grant(`kept-${holdId}`, remaining, { holdId, holdLive: true, expiresAt: new Date('2026-01-02T00:00:00Z') });

  it('is never drawn by a debit, a refund or a correction: they take other credit, then overdraft', () => {
    const state = wallet({ balance: 70n, held: 50n, overdraftLimit: 100n, grants: [kept(50n), grant('own', 20n)] });
    const plan = planDebit(state, 30n * ATTOS_PER_NANO);
    expect(plan).toEqual({ ok: true, nanos: 30n, carry: 0n, legs: [{ grantId: 'own', amount: -20n }, { grantId: null, amount: -10n }] });
    const correction = planDebit(state, 60n * ATTOS_PER_NANO, { allowOverdraft: true, ignoreLimits: true, useCarry: false });
    expect(correction.ok && correction.legs).toEqual([{ grantId: 'own', amount: -20n }, { grantId: null, amount: -40n }]);
    // A refund takes back paid credit only, and kept credit is not the wallet's to give back.
    expect(planDebit(state, 30n * ATTOS_PER_NANO, { allowOverdraft: false, onlyKinds: ['PAID'], useCarry: false })).toEqual({ ok: false, nanos: 30n, available: 20n });
  });

  it('is drawn first by its own hold’s capture, and never by another hold’s', () => {
    // Hold a holds 50 (30 of it kept), hold b 40 (all kept).
    const state = wallet({ balance: 90n, held: 90n, grants: [kept(30n, 'a'), kept(40n, 'b'), grant('own', 20n)] });
    const captureA = planDebit(state, 50n * ATTOS_PER_NANO, { allowOverdraft: true, heldReleased: 50n, capturingHold: 'a', useCarry: false });
    expect(captureA.ok && captureA.legs).toEqual([{ grantId: 'kept-a', amount: -30n }, { grantId: 'own', amount: -20n }]);
  });
});

describe('how much expiring credit is kept for pending holds', () => {
  it('is what the holds lack beyond lasting credit, within what is due', () => {
    expect(creditToKeep(50n, 80n, 100n)).toBe(0n);
    expect(creditToKeep(80n, 80n, 100n)).toBe(0n);
    expect(creditToKeep(130n, 80n, 100n)).toBe(50n);
    expect(creditToKeep(500n, 80n, 100n)).toBe(100n);
    expect(creditToKeep(-5n, 0n, 100n)).toBe(0n);
  });

  it('counts, for one hold, only the grants kept for it', () => {
    const grant = (id: string, remaining: bigint, holdId: string | null): GrantState =>
      ({ id, kind: 'PAID', remaining, priority: 0, expiresAt: null, createdAt: new Date(0), holdId, holdLive: holdId !== null });
    const grants = [grant('a', 7n, 'h1'), grant('b', 5n, null), grant('c', 3n, 'h2'), grant('d', 2n, 'h1')];
    expect([keptFor(grants, 'h1'), keptFor(grants, 'h2'), keptFor(grants, 'h3')]).toEqual([9n, 3n, 0n]);
  });
});

describe('consumption order', () => {
  const soon = new Date('2026-02-01T00:00:00Z');
  const later = new Date('2026-03-01T00:00:00Z');
  const grants = [
    grant('paid-soon', 1n, { kind: 'PAID', expiresAt: soon }),
    grant('promo-never', 1n, { kind: 'PROMOTIONAL', expiresAt: null, priority: -5 }),
    grant('promo-later', 1n, { kind: 'PROMOTIONAL', expiresAt: later }),
    grant('paid-never', 1n, { kind: 'PAID', expiresAt: null, priority: -10 }),
    grant('promo-soon', 1n, { kind: 'PROMOTIONAL', expiresAt: soon }),
  ];

  it('by default spends the soonest-expiring first, promotional before paid, never-expiring last', () => {
    expect(sortGrants(grants, ['EXPIRY', 'KIND', 'PRIORITY', 'CREATED']).map((g) => g.id)).toEqual([
      'promo-soon', 'paid-soon', 'promo-later', 'promo-never', 'paid-never',
    ]);
  });

  it('follows a merchant order that puts priority first', () => {
    expect(sortGrants(grants, ['PRIORITY', 'EXPIRY', 'KIND', 'CREATED']).map((g) => g.id)).toEqual([
      'paid-never', 'promo-never', 'promo-soon', 'paid-soon', 'promo-later',
    ]);
  });
});
