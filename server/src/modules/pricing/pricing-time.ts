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

/** What a price rule or provider price can price: events of this provider and model (null: any). */
export interface UsageTarget {
  provider: string | null;
  model: string | null;
}

/**
 * As latestPricedUsage, of the merchant's usage that one of `targets` matches. Matching here is
 * wider than pricing's, never narrower: an event matches when its provider and model, lowercased,
 * contain the target's (rules and price rows match exactly, or a dated snapshot, a model's owner
 * prefix, a cloud reselling it: see selectRule and resolvePrice), and names whose lowercasing SQL
 * may read otherwise (not ASCII) always match. One query on the (merchant_id, occurred_at) index,
 * which stops at the newest match; none since `from` costs a scan of the events since then.
 */
export async function latestPricedUsageOf(client: RawClient, merchantId: string, from: Date, targets: readonly UsageTarget[]): Promise<Date | null> {
  const lower = (name: string | null) => (name == null ? null : name.trim().toLowerCase());
  const wanted = JSON.stringify(targets.map((target) => ({ provider: lower(target.provider), model: lower(target.model) })));
  const [priced] = await client.$queryRaw<{ occurred_at: Date }[]>`SELECT occurred_at FROM usage_events e
    WHERE e.merchant_id = ${merchantId}::uuid AND e.occurred_at >= ${from}
      AND EXISTS (SELECT 1 FROM json_to_recordset(${wanted}::json) AS t(provider text, model text)
        WHERE (t.provider IS NULL OR strpos(lower(e.provider COLLATE "C"), t.provider) > 0 OR octet_length(e.provider) <> char_length(e.provider))
          AND (t.model IS NULL OR strpos(lower(e.model COLLATE "C"), t.model) > 0 OR octet_length(e.model) <> char_length(e.model)))
    ORDER BY e.occurred_at DESC LIMIT 1`;
  return priced ? new Date(priced.occurred_at) : null;
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

/** The VALIDATION error for a change dated at or before `priced`, the time of `usage` ("the customer's latest usage already priced"). */
export function backdatedPastUsage(usage: string, priced: Date): AppError {
  return invalidField('effectiveFrom', `must be after ${usage} (${priced.toISOString()}): history is never rewritten`);
}
