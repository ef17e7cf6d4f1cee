import type { Prisma } from '../../generated/prisma/client.ts';
import { invalidField, type AppError } from '../../shared/errors.ts';

/**
 * When a pricing change (a price rule version or archive, a provider price, a plan assignment)
 * may take effect. History is never rewritten: a change must come after the usage it would
 * reprice, since an event already charged keeps its price and a late event at the same moment
 * must be charged alike. Imports nothing of plans or rules, so either may use it.
 */

type RawClient = Pick<Prisma.TransactionClient, '$queryRaw'>;

/** How far ahead of this instance's "now" another change "from now" may be and still be taken as concurrent (clock skew between instances). */
export const CONCURRENT_NOW_MS = 1000;

/**
 * The latest time, at or after `from`, of the merchant's usage already priced (one customer's
 * when `customerId` is given), or null when there is none. Usage may be stamped up to
 * MAX_FUTURE_USAGE_MS ahead of the clock, so even a change "from now" can find some: taking effect
 * at or before it would change how an event already charged is priced (a late event at the same
 * moment would be priced another way). Run it in the transaction that writes the change, after
 * its lock and after "now" is read: it sees every event committed by then.
 */
export async function latestPricedUsage(client: RawClient, merchantId: string, from: Date, customerId?: string): Promise<Date | null> {
  const [priced] = customerId
    ? await client.$queryRaw<{ occurred_at: Date }[]>`SELECT occurred_at FROM usage_events
        WHERE merchant_id = ${merchantId}::uuid AND customer_id = ${customerId}::uuid AND occurred_at >= ${from} ORDER BY occurred_at DESC LIMIT 1`
    : await client.$queryRaw<{ occurred_at: Date }[]>`SELECT occurred_at FROM usage_events
        WHERE merchant_id = ${merchantId}::uuid AND occurred_at >= ${from} ORDER BY occurred_at DESC LIMIT 1`;
  return priced ? new Date(priced.occurred_at) : null;
}

/** The provider and model a usage event was recorded with (either may be missing). */
export interface PricedPair {
  provider: string | null;
  model: string | null;
}

/**
 * As latestPricedUsage, of the merchant's usage that `couldPrice` says the change could price
 * another way, judged by pricing's own matching (see ruleTargetsEvent, priceCouldCost). One pass
 * over the events since `from` (on the (merchant_id, occurred_at) index) gives each provider and
 * model pair's latest time; the few pairs are then judged here.
 */
export async function latestPricedUsageOf(client: RawClient, merchantId: string, from: Date, couldPrice: (pair: PricedPair) => boolean): Promise<Date | null> {
  const pairs = await client.$queryRaw<(PricedPair & { latest: Date })[]>`SELECT provider, model, max(occurred_at) AS latest FROM usage_events
    WHERE merchant_id = ${merchantId}::uuid AND occurred_at >= ${from} GROUP BY provider, model`;
  let latest: Date | null = null;
  for (const pair of pairs) {
    const at = new Date(pair.latest);
    if ((!latest || at > latest) && couldPrice(pair)) latest = at;
  }
  return latest;
}

/**
 * When a change asked for "from now" takes effect: now, or a millisecond after the latest usage
 * already priced when some is stamped at or after now (at most MAX_FUTURE_USAGE_MS ahead), so that
 * no charged event is priced another way afterwards. See latestPricedUsage.
 */
export async function effectiveFromNow(client: RawClient, merchantId: string, now: Date, customerId?: string): Promise<Date> {
  const priced = await latestPricedUsage(client, merchantId, now, customerId);
  return priced ? new Date(priced.getTime() + 1) : now;
}

/**
 * The latest of a price's or rule's version `times` from `now` to CONCURRENT_NOW_MS after it, or
 * null: a version put "from now" just before this change (moved past the same usage stamped
 * ahead, see effectiveFromNow, or by an instance whose clock runs ahead). A change "from now"
 * follows it a millisecond later rather than clashing with it, and planning takes it as the
 * version in force now rather than as one scheduled: otherwise a second change while usage is
 * stamped ahead would land on the first's moment, and a third would find the second "scheduled".
 */
export function concurrentVersionAt(now: Date, times: Iterable<Date>): Date | null {
  let latest: Date | null = null;
  for (const time of times) {
    const ahead = time.getTime() - now.getTime();
    if (ahead >= 0 && ahead < CONCURRENT_NOW_MS && (!latest || time > latest)) latest = time;
  }
  return latest;
}

/** When a version "from now" takes effect: a millisecond after the one put "from now" just before (see concurrentVersionAt), or `now`. */
export function followingNow(now: Date, times: Iterable<Date>): Date {
  const concurrent = concurrentVersionAt(now, times);
  return concurrent ? new Date(concurrent.getTime() + 1) : now;
}

/** The VALIDATION error for a change dated at or before `priced`, the time of `usage` ("the customer's latest usage already priced"). */
export function backdatedPastUsage(usage: string, priced: Date): AppError {
  return invalidField('effectiveFrom', `must be after ${usage} (${priced.toISOString()}): history is never rewritten`);
}
