import { ATTOS_PER_NANO, floorDiv } from '../../shared/money.ts';

/**
 * The arithmetic of a wallet, free of I/O: which grants a charge draws from, whether it
 * fits, and what carries over. The store applies the plan inside a locked transaction.
 */
export type GrantKind = 'PAID' | 'PROMOTIONAL' | 'PLAN_INCLUDED';
export type ConsumptionKey = 'EXPIRY' | 'KIND' | 'PRIORITY' | 'CREATED';
export const CONSUMPTION_KEYS: readonly ConsumptionKey[] = ['EXPIRY', 'KIND', 'PRIORITY', 'CREATED'];
export const DEFAULT_CONSUMPTION_ORDER: readonly ConsumptionKey[] = ['EXPIRY', 'KIND', 'PRIORITY', 'CREATED'];

/** Free credit is spent before credit someone paid for. */
const KIND_RANK: Record<GrantKind, number> = { PROMOTIONAL: 0, PLAN_INCLUDED: 1, PAID: 2 };

export interface GrantState {
  id: string;
  kind: GrantKind;
  remaining: bigint;
  priority: number;
  expiresAt: Date | null;
  createdAt: Date;
  /**
   * Credit kept past its expiry for this hold (see keepForHolds in ledger.store.ts): only the
   * hold's capture may spend it. Null on every other grant.
   */
  holdId: string | null;
  /** Whether that hold is still pending (else what is kept for it expires at once). */
  holdLive: boolean;
}

export interface WalletState {
  id: string;
  balance: bigint;
  /** Sub-nano remainder, in atto-units, 0 ≤ carry < 1e9. */
  carry: bigint;
  overdraftLimit: bigint;
  /** Reserved by pending holds. */
  held: bigint;
  /** Raised by every transaction that changes the wallet: orders its balance events (see BalanceEvent.version). */
  version: bigint;
  grants: GrantState[];
}

export function sortGrants(grants: GrantState[], order: readonly ConsumptionKey[]): GrantState[] {
  const compare = (a: GrantState, b: GrantState, key: ConsumptionKey): number => {
    switch (key) {
      case 'EXPIRY': {
        // Never-expiring credit goes last: spend what would otherwise be lost first.
        const left = a.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY;
        const right = b.expiresAt?.getTime() ?? Number.POSITIVE_INFINITY;
        return left === right ? 0 : left < right ? -1 : 1;
      }
      case 'KIND':
        return KIND_RANK[a.kind] - KIND_RANK[b.kind];
      case 'PRIORITY':
        return a.priority - b.priority;
      case 'CREATED':
        return a.createdAt.getTime() - b.createdAt.getTime();
    }
  };
  return [...grants].sort((a, b) => {
    for (const key of order) {
      const result = compare(a, b, key);
      if (result !== 0) return result;
    }
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
}

export interface WalletLeg {
  grantId: string | null;
  /** Signed nano-units. */
  amount: bigint;
}

export type DebitPlan =
  | { ok: true; nanos: bigint; carry: bigint; legs: WalletLeg[] }
  | { ok: false; nanos: bigint; available: bigint };

/**
 * Plans a charge of `attos` (exact, possibly sub-nano). The posted amount is the floor of
 * carry + charge in nanos; the rest stays in the carry, so N tiny charges post their exact
 * sum to within one nano. Mutates nothing: posting the legs changes the wallet.
 */
export interface DebitOptions {
  /** Let the balance go down to minus the wallet's overdraft limit. */
  allowOverdraft: boolean;
  /** Skip the availability check entirely (merchant corrections). */
  ignoreLimits?: boolean;
  /** Draw only from grants of these kinds (refunds take back paid credit only). */
  onlyKinds?: readonly GrantKind[];
  /** A hold being captured: its own reservation does not count against it. */
  heldReleased?: bigint;
  /** Whole-nano operations (refunds, corrections) leave the carry alone. Default true. */
  useCarry?: boolean;
  /** A hold being captured: the credit kept for it is spent first (and no other operation may spend it). */
  capturingHold?: string;
}

/** Credit kept past its expiry for pending holds: in the balance, but spendable only by their captures. */
export function keptForHolds(state: WalletState): bigint {
  let kept = 0n;
  for (const grant of state.grants) if (grant.holdId !== null) kept += grant.remaining;
  return kept;
}

/** Credit kept for the hold `holdId` (see keepForHolds in ledger.store.ts) that it has not spent. */
export function keptFor(grants: readonly GrantState[], holdId: string): bigint {
  let kept = 0n;
  for (const grant of grants) if (grant.holdId === holdId) kept += grant.remaining;
  return kept;
}

/**
 * How much of the credit about to expire (`due`) is kept for pending holds: what they lack (each
 * hold's outstanding amount beyond what is kept for it already, summed) less the credit that
 * lasts, within what is due. The ledger keeps it under the wallet lock; the gateway's balance
 * cache estimates the same before the lock.
 */
export function creditToKeep(lacking: bigint, lasting: bigint, due: bigint): bigint {
  const toKeep = lacking - lasting;
  if (toKeep <= 0n) return 0n;
  return toKeep < due ? toKeep : due;
}

/** The grants an operation may draw from, in order: a captured hold's kept credit first, never another hold's. */
function spendableGrants(state: WalletState, capturingHold: string | undefined): GrantState[] {
  // Nearly always nothing is kept: the hot path allocates no copy.
  if (!state.grants.some((grant) => grant.holdId !== null)) return state.grants;
  const own = state.grants.filter((grant) => grant.holdId === null);
  if (!capturingHold) return own;
  return [...state.grants.filter((grant) => grant.holdId === capturingHold), ...own];
}

export function planDebit(state: WalletState, attos: bigint, options: DebitOptions = { allowOverdraft: true }): DebitPlan {
  const useCarry = options.useCarry ?? true;
  const total = (useCarry ? state.carry : 0n) + attos;
  const nanos = floorDiv(total, ATTOS_PER_NANO);
  const carry = useCarry ? total - nanos * ATTOS_PER_NANO : state.carry;
  const available = state.balance - (state.held - (options.heldReleased ?? 0n));
  const floor = options.allowOverdraft ? -state.overdraftLimit : 0n;
  const grants = spendableGrants(state, options.capturingHold);
  const usable = options.onlyKinds
    ? grants.filter((grant) => options.onlyKinds!.includes(grant.kind)).reduce((sum, grant) => sum + grant.remaining, 0n)
    : undefined;
  // What a capture's own kept credit pays was its hold's all along: only what goes beyond it is judged.
  const kept = options.capturingHold ? keptFor(grants, options.capturingHold) : 0n;
  if (!options.ignoreLimits && nanos > kept && (available - nanos < floor || (usable !== undefined && usable < nanos))) {
    return { ok: false, nanos, available: usable !== undefined && usable < available ? usable : available };
  }
  const legs: WalletLeg[] = [];
  let left = nanos;
  for (const grant of grants) {
    if (left === 0n) break;
    if (grant.remaining <= 0n || (options.onlyKinds && !options.onlyKinds.includes(grant.kind))) continue;
    const take = grant.remaining < left ? grant.remaining : left;
    legs.push({ grantId: grant.id, amount: -take });
    left -= take;
  }
  if (left > 0n) legs.push({ grantId: null, amount: -left });
  return { ok: true, nanos, carry, legs };
}

/**
 * Whether planDebit(state, attos, { allowOverdraft }) would succeed, without building its
 * legs: ingest asks this for every event of a batch, the legs only once per wallet.
 */
export function fitsDebit(state: WalletState, attos: bigint, allowOverdraft: boolean): boolean {
  const nanos = floorDiv(state.carry + attos, ATTOS_PER_NANO);
  return nanos <= 0n || state.balance - state.held - nanos >= (allowOverdraft ? -state.overdraftLimit : 0n);
}

/**
 * A credit of `attos` to a wallet carrying `carry` attos not yet charged: the carry is settled
 * first, and the rest is credited in whole nanos, rounded up, with what that adds beyond the
 * credit owed back as the new carry. So balance × 1e9 − carry moves by exactly `attos`, as the
 * debits' rounding does: no fraction of a credit is lost either.
 */
export function planCredit(carry: bigint, attos: bigint): { nanos: bigint; carry: bigint } {
  const beyondCarry = attos - carry;
  if (beyondCarry <= 0n) return { nanos: 0n, carry: -beyondCarry };
  const nanos = (beyondCarry + ATTOS_PER_NANO - 1n) / ATTOS_PER_NANO;
  return { nanos, carry: nanos * ATTOS_PER_NANO - beyondCarry };
}

/**
 * Legs of a credit: while the wallet owes (its balance without the credit kept for holds is
 * negative) the credit first repays that (a leg naming no grant), and the grant keeps only the
 * rest. So Σ remaining of the grants no hold keeps = max(balance − kept, 0) holds throughout.
 */
export function creditLegs(state: WalletState, amount: bigint, grantId: string): WalletLeg[] {
  const own = state.balance - keptForHolds(state);
  const debt = own < 0n ? -own : 0n;
  const repaid = amount < debt ? amount : debt;
  const legs: WalletLeg[] = [];
  if (repaid > 0n) legs.push({ grantId: null, amount: repaid });
  if (amount - repaid > 0n) legs.push({ grantId, amount: amount - repaid });
  return legs;
}
