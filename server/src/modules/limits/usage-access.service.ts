import { invalidField } from '../../shared/errors.ts';
import { ATTOS_PER_NANO, MAX_AMOUNT_NANOS, parseCurrency, parseDecimalAttos } from '../../shared/money.ts';
import type { CustomerService } from '../customers/customers.service.ts';
import type { LedgerQueries } from '../ledger/ledger.queries.ts';
import { SpendLimitService } from './spend-limits.service.ts';

/** Why a customer may not make a call now, in the order they are checked (the gateway's order). */
export const ACCESS_REFUSALS = ['CUSTOMER_ARCHIVED', 'CUSTOMER_BLOCKED', 'INSUFFICIENT_FUNDS', 'SPEND_LIMIT_REACHED'] as const;
export type AccessRefusal = (typeof ACCESS_REFUSALS)[number];

/** What a customer can still spend in one currency, in nanos: available (balance less holds) and the overdraft allowance. */
export interface Spendable {
  available: bigint;
  overdraftLimit: bigint;
}

// The rules below are the gateway's, shared with usageAccess: one place decides who may call.

/** An archived or blocked customer makes no calls (archived is told first). */
export function customerRefusal(customer: { archived: boolean; blocked: boolean }): 'CUSTOMER_ARCHIVED' | 'CUSTOMER_BLOCKED' | null {
  if (customer.archived) return 'CUSTOMER_ARCHIVED';
  if (customer.blocked) return 'CUSTOMER_BLOCKED';
  return null;
}

/**
 * Whether the customer's credit (available plus overdraft allowance) allows a call: some must be
 * left, and at least `amountAttos` when the call's cost is known. An empty wallet allows no call,
 * not even one said to cost nothing, as the gateway lets none through.
 */
export function creditCovers(spendable: Spendable, amountAttos = 0n): boolean {
  const credit = spendable.available + spendable.overdraftLimit;
  return credit > 0n && credit * ATTOS_PER_NANO >= amountAttos;
}

/**
 * Whether the month's charges leave room under the spend limit: not reached yet, and not passed
 * by `amountAttos` (reaching it exactly is allowed; the next call is then refused).
 */
export function spendLimitAllows(limitNanos: bigint, spentAttos: bigint, amountAttos = 0n): boolean {
  return !SpendLimitService.reached(limitNanos, spentAttos) && spentAttos + amountAttos <= limitNanos * ATTOS_PER_NANO;
}

/** The answer to "may this customer make a call now?" for an app that meters after the call. */
export interface UsageAccess {
  customerId: string;
  currency: string;
  allowed: boolean;
  /** The first rule that refuses, or null when allowed. */
  reason: AccessRefusal | null;
  /** Nanos, as the wallet shows them. */
  available: bigint;
  overdraftLimit: bigint;
  /** The customer's spend limit in this currency, if it has one. */
  spendLimit: { limitNanos: bigint; spentAttos: bigint; resetsAt: Date } | null;
}

export interface UsageAccessQuery {
  /** Tollgate's customer id; or, with `byExternalId`, the merchant's externalId too (the id wins a tie). */
  customer: string;
  currency?: string | null;
  /** What the call may cost (a decimal string, ≥ 0): credit must cover it, and it must not pass the spend limit. */
  amount?: string | null;
}

/**
 * The gateway's admission check, for apps that call providers themselves and report usage after
 * (recordUsage, POST /v1/usage): the same rules, read fresh from the database rather than the
 * gateway's caches, so the answer reflects a top-up or a charge made a moment ago.
 */
export class UsageAccessService {
  constructor(
    private readonly customers: CustomerService,
    private readonly ledgerQueries: LedgerQueries,
    private readonly spendLimits: SpendLimitService,
  ) {}

  async check(merchantId: string, query: UsageAccessQuery, options: { byExternalId?: boolean } = {}): Promise<UsageAccess> {
    const currency = parseCurrency('currency', query.currency);
    const amountAttos = query.amount == null ? 0n : amountOf(query.amount);
    const customer = options.byExternalId ? await this.customers.getByIdOrExternalId(merchantId, query.customer) : await this.customers.get(merchantId, query.customer);
    const [wallet, spendLimit] = await Promise.all([this.ledgerQueries.wallet(merchantId, customer.id, currency), this.spendLimitOf(merchantId, customer.id, currency)]);
    const reason =
      customerRefusal({ archived: customer.archivedAt !== null, blocked: customer.blockedAt !== null }) ??
      (!creditCovers(wallet, amountAttos) ? 'INSUFFICIENT_FUNDS' : null) ??
      (spendLimit && !spendLimitAllows(spendLimit.limitNanos, spendLimit.spentAttos, amountAttos) ? 'SPEND_LIMIT_REACHED' : null);
    return { customerId: customer.id, currency, allowed: reason === null, reason, available: wallet.available, overdraftLimit: wallet.overdraftLimit, spendLimit };
  }

  private async spendLimitOf(merchantId: string, customerId: string, currency: string): Promise<UsageAccess['spendLimit']> {
    const limit = (await this.spendLimits.list(merchantId, customerId)).find((row) => row.currency === currency);
    if (!limit) return null;
    const { spentAttos, resetsAt } = await this.spendLimits.spentThisMonth(merchantId, customerId, currency);
    return { limitNanos: limit.amountNanos, spentAttos, resetsAt };
  }
}

/** The call's possible cost: exact to the atto (a call may cost less than a nano), never negative. */
function amountOf(text: string): bigint {
  const attos = parseDecimalAttos('amount', text);
  if (attos < 0n) throw invalidField('amount', 'must be zero or more');
  if (attos > MAX_AMOUNT_NANOS * ATTOS_PER_NANO) throw invalidField('amount', 'is too large');
  return attos;
}
