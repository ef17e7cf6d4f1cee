import type { Customer, Plan, Prisma, PrismaClient } from '../../generated/prisma/client.ts';
import { groupBy } from '../../shared/collections.ts';
import { ConfigChanges } from '../../shared/config-changes.ts';
import type { Database } from '../../shared/db/database.ts';
import type { PrismaTransaction } from '../../shared/db/prisma-transaction.ts';
import { conflict, invalidField, notFound } from '../../shared/errors.ts';
import { isUniqueViolation } from '../../shared/prisma-errors.ts';
import type { PubSub } from '../../shared/pubsub.ts';
import { TickBatcher } from '../../shared/tick-batcher.ts';
import { MAX_FUTURE_USAGE_MS } from '../../shared/times.ts';
import { isUuid, optionalText, requireNonEmpty } from '../../shared/validation.ts';
import { customerTopic } from '../customers/customers.service.ts';
import { backdatedPastUsage, CONCURRENT_NOW_MS, effectiveFromNow, latestPricedUsage } from '../pricing/pricing-time.ts';

export type { Plan };

export interface PlanInput {
  key: string;
  name: string;
  /** Replaced whole: omitted or null clears it. */
  description?: string | null;
}

/** Which plan a customer was on at a time: a plan id, or null for the default price book. */
export type PlanAt = (customerId: string, at: Date) => string | null;

interface Assignment {
  planId: string | null;
  effectiveFrom: Date;
}

const KEY = /^[a-z0-9_-]{1,64}$/;
/** Like the price rules cache (MERCHANT_CONFIG_CACHE): how long a change whose message (ConfigChanges) was lost goes unseen by another process. */
export const HISTORY_TTL_MS = 5_000;
/**
 * How far ahead a scheduled assignment must be for cancelScheduled to remove it: further than
 * usage may be stamped (MAX_FUTURE_USAGE_MS), plus what another instance may go on pricing from
 * its cached histories should the change message be lost (HISTORY_TTL_MS), plus the clock skew
 * between instances taken as concurrent (CONCURRENT_NOW_MS). Nothing can have been priced under one
 * further ahead, nor be priced under it once it is gone.
 */
export const CANCELLABLE_AHEAD_MS = MAX_FUTURE_USAGE_MS + HISTORY_TTL_MS + CONCURRENT_NOW_MS;

/** A plan key as given in the API or a config file, or a VALIDATION error naming `field`. */
export function parsePlanKey(field: string, key: unknown): string {
  if (typeof key !== 'string' || !KEY.test(key)) throw invalidField(field, 'must be 1 to 64 lowercase letters, digits, "-" or "_"');
  return key;
}

/** A plan's fields checked and trimmed; errors name `prefix` + the field ("plans.0.name"). */
export function normalizePlanInput(input: PlanInput, prefix = ''): { key: string; name: string; description: string | null } {
  return {
    key: parsePlanKey(`${prefix}key`, input.key),
    name: requireNonEmpty(`${prefix}name`, typeof input.name === 'string' ? input.name : '', 100),
    description: optionalText(`${prefix}description`, input.description == null ? null : String(input.description), 1000) ?? null,
  };
}

/**
 * Plans and which customer is on which, over time.
 *
 * A customer's plan history is only ever appended to: a new assignment must take effect after
 * the latest one, so every past event keeps the plan it was (or will be, if late) priced under.
 * The one exception is a change scheduled far enough ahead that nothing has been priced under it
 * yet: cancelScheduled removes it (a typo such as 9999-12-31 would otherwise lock the plan).
 * Archived plans cannot be newly assigned, but customers already on one stay on it, and keep
 * being priced by its rules, until they are moved: archiving stops sales, it does not reprice.
 */
/** A plan change not in force yet: `plan` null puts the customer back on the default price book. */
export interface ScheduledPlanChange {
  plan: Plan | null;
  effectiveFrom: Date;
}

export class PlanService {
  /** Per merchant: the plan history of each customer the usage pipeline has asked about lately. */
  private readonly histories = new Map<string, { at: number; byCustomer: Map<string, Assignment[]> }>();

  constructor(
    private readonly db: Database,
    private readonly pubsub: PubSub,
    private readonly clock: () => Date = () => new Date(),
    private readonly changes = new ConfigChanges(),
  ) {
    changes.on('plan-histories', (merchantId) => this.histories.delete(merchantId));
  }

  private get prisma(): PrismaClient {
    return this.db.prisma;
  }

  /**
   * Creates the plan, or sets its name and description; putting an archived plan restores it.
   * Idempotent. `tx`: write inside that transaction.
   */
  async put(merchantId: string, input: PlanInput, tx?: PrismaTransaction): Promise<Plan> {
    const prisma = tx?.client ?? this.prisma;
    const { key, name, description } = normalizePlanInput(input);
    const existing = await prisma.plan.findUnique({ where: { merchantId_key: { merchantId, key } } });
    if (!existing) {
      try {
        return await prisma.plan.create({ data: { merchantId, key, name, description } });
      } catch (error) {
        if (!isUniqueViolation(error)) throw error;
        // Created by a concurrent put: update it instead, as if it had been there. Not inside a
        // transaction, which the failed insert has aborted: the caller may run it again.
        if (tx) throw conflict(`Plan "${key}" was created by another request at the same moment: try again`, { field: 'key' });
        return this.put(merchantId, input);
      }
    }
    if (existing.name === name && existing.description === description && !existing.archivedAt) return existing;
    return prisma.plan.update({ where: { id: existing.id }, data: { name, description, archivedAt: null } });
  }

  /** Stops new assignments to the plan; customers on it keep it. Idempotent. */
  async archive(merchantId: string, key: string): Promise<Plan> {
    const plan = await this.get(merchantId, key);
    if (plan.archivedAt) return plan;
    // Only a plan not yet archived is stamped: of two archives at once, the second answers the first's time.
    await this.prisma.plan.updateMany({ where: { id: plan.id, archivedAt: null }, data: { archivedAt: this.clock() } });
    return this.get(merchantId, key);
  }

  async list(merchantId: string, includeArchived = false): Promise<Plan[]> {
    return this.prisma.plan.findMany({ where: { merchantId, ...(includeArchived ? {} : { archivedAt: null }) }, orderBy: { key: 'asc' } });
  }

  /** `tx`: read inside that transaction (seeing a plan it created). */
  async get(merchantId: string, key: string, tx?: PrismaTransaction): Promise<Plan> {
    const plan = typeof key === 'string' && KEY.test(key) ? await (tx?.client ?? this.prisma).plan.findUnique({ where: { merchantId_key: { merchantId, key } } }) : null;
    if (!plan) throw notFound('Plan', key);
    return plan;
  }

  /** By id within the merchant; null when it is not one of the merchant's plans. */
  async byId(merchantId: string, id: string): Promise<Plan | null> {
    // findUnique on the id alone: Prisma batches those issued together (a list of rules) into one query.
    const plan = await this.prisma.plan.findUnique({ where: { id } });
    return plan?.merchantId === merchantId ? plan : null;
  }

  /**
   * The plan each of these customers is on now (null: the default price book), in one query
   * however many ask in the same tick: a page of customers with their plans costs one round trip.
   */
  private readonly currentPlans = new TickBatcher<string, Plan | null>(async (keys) => {
    const found = new Map<string, Plan | null>();
    const at = this.clock();
    for (const [merchantId, merchantKeys] of groupBy(keys, (key) => key.split(':')[0]!)) {
      const customerIds = merchantKeys.map((key) => key.split(':')[1]!);
      const rows = await this.prisma.customerPlan.findMany({
        where: { merchantId, customerId: { in: customerIds }, effectiveFrom: { lte: at } },
        orderBy: { effectiveFrom: 'desc' },
        distinct: ['customerId'],
        include: { plan: true },
      });
      for (const row of rows) found.set(`${merchantId}:${row.customerId}`, row.plan);
    }
    return found;
  }, null);

  currentOf(merchantId: string, customerId: string): Promise<Plan | null> {
    return this.currentPlans.load(`${merchantId}:${customerId}`);
  }

  /**
   * The customer's plan changes scheduled ahead (effectiveFrom after now), soonest first, in one
   * query however many customers ask in the same tick (a page of customers).
   */
  private readonly scheduledPlans = new TickBatcher<string, ScheduledPlanChange[]>(async (keys) => {
    const found = new Map<string, ScheduledPlanChange[]>();
    const at = this.clock();
    for (const [merchantId, merchantKeys] of groupBy(keys, (key) => key.split(':')[0]!)) {
      const rows = await this.prisma.customerPlan.findMany({
        where: { merchantId, customerId: { in: merchantKeys.map((key) => key.split(':')[1]!) }, effectiveFrom: { gt: at } },
        orderBy: { effectiveFrom: 'asc' },
        include: { plan: true },
      });
      for (const row of rows) {
        const key = `${merchantId}:${row.customerId}`;
        found.set(key, [...(found.get(key) ?? []), { plan: row.plan, effectiveFrom: row.effectiveFrom }]);
      }
    }
    return found;
  }, []);

  scheduledOf(merchantId: string, customerId: string): Promise<ScheduledPlanChange[]> {
    return this.scheduledPlans.load(`${merchantId}:${customerId}`);
  }

  /** When the customer's next plan change scheduled ahead takes effect; null when none is. */
  async nextScheduledChange(merchantId: string, customerId: string): Promise<Date | null> {
    const next = await this.prisma.customerPlan.findFirst({
      where: { merchantId, customerId, effectiveFrom: { gt: this.clock() } },
      orderBy: { effectiveFrom: 'asc' },
      select: { effectiveFrom: true },
    });
    return next?.effectiveFrom ?? null;
  }

  /**
   * Puts the customer on a plan (`planKey` null: back to the default price book) from
   * `effectiveFrom` (default now; a future time schedules the change). History is never
   * rewritten: it must be after the customer's latest assignment and after its usage already
   * priced, so no charged event changes plan. "Now" is moved past usage already priced at or
   * after it (stamped up to MAX_FUTURE_USAGE_MS ahead) rather than refused. Assigning the plan
   * the customer is already on from then on changes nothing.
   */
  async assign(merchantId: string, customerId: string, planKey: string | null, effectiveFrom?: Date | null): Promise<Customer> {
    if (effectiveFrom && Number.isNaN(effectiveFrom.getTime())) throw invalidField('effectiveFrom', 'is not a valid time');
    const id = isUuid(customerId) ? customerId.toLowerCase() : null;
    await this.prisma.$transaction(async (tx) => {
      await lockCustomer(tx, merchantId, id, customerId);
      let plan: Pick<Plan, 'id' | 'key' | 'archivedAt'> | null = null;
      if (planKey !== null) {
        // FOR SHARE: an archivePlan at the same moment waits for this assignment (made before the
        // archive, the customer keeps the plan) or, committed first, is seen here and refuses it.
        [plan = null] = await tx.$queryRaw<Pick<Plan, 'id' | 'key' | 'archivedAt'>[]>`SELECT id, key, archived_at AS "archivedAt" FROM plans
          WHERE merchant_id = ${merchantId}::uuid AND key = ${parsePlanKey('planKey', planKey)} FOR SHARE`;
        if (!plan) throw notFound('Plan', planKey);
      }
      const planId = plan?.id ?? null;
      const latest = await tx.customerPlan.findFirst({ where: { customerId: id! }, orderBy: { effectiveFrom: 'desc' } });
      // Checked against the latest assignment: a customer already on an archived plan stays, and asking for it again is a no-op.
      if (plan?.archivedAt && latest?.planId !== plan.id) {
        throw invalidField('planKey', `plan "${plan.key}" is archived: customers already on it keep it, but no one new can be put on it`);
      }
      // "Now" is read once the lock is held, and comes after the customer's usage already priced
      // (events may be stamped up to MAX_FUTURE_USAGE_MS ahead: one charged under the old book
      // keeps it, and a late event at its moment is priced alike). A call that waited on another
      // "now" comes a millisecond after it when the clocks (of this instance and the other's) put
      // it no later, instead of being refused as earlier. A change scheduled further ahead is still refused.
      let from = effectiveFrom ?? (await effectiveFromNow(tx, merchantId, this.clock(), id!));
      if (!effectiveFrom && latest && latest.effectiveFrom >= from && latest.effectiveFrom.getTime() - from.getTime() < CONCURRENT_NOW_MS) {
        from = new Date(latest.effectiveFrom.getTime() + 1);
      }
      const already = latest ? latest.planId === planId && from >= latest.effectiveFrom : planId === null;
      if (already) return;
      if (latest && from <= latest.effectiveFrom) {
        throw invalidField('effectiveFrom', `must be after the customer's latest plan change (${latest.effectiveFrom.toISOString()}): history is never rewritten`);
      }
      // A change back in time (or to now, or a few minutes ahead) must not re-plan usage already
      // priced: those events keep the book they were charged by, and a late event at the same
      // moment must be priced the same way. "From now" was moved past it above. (An event
      // recorded concurrently, before this commits, can still land in the window: ingest takes
      // no lock this one waits on, and prices from its cached plan histories.)
      if (effectiveFrom) {
        const priced = await latestPricedUsage(tx, merchantId, from, id!);
        if (priced) throw backdatedPastUsage("the customer's latest usage already priced", priced);
      }
      await tx.customerPlan.create({ data: { merchantId, customerId: id!, planId, effectiveFrom: from } });
    });
    this.changes.changed('plan-histories', merchantId);
    const customer = await this.prisma.customer.findUniqueOrThrow({ where: { id: id! } });
    this.pubsub.publish(customerTopic(customer.id), { customerId: customer.id });
    return customer;
  }

  /**
   * Cancels the customer's plan changes that have not taken effect yet (effectiveFrom after now),
   * so it stays on the plan in force now and can be given another change at once. Idempotent:
   * with none scheduled, the customer is answered unchanged. Only a change nothing can have been
   * priced under is removed: one taking effect within CANCELLABLE_AHEAD_MS (usage may be stamped
   * up to MAX_FUTURE_USAGE_MS ahead), or with usage already priced at or after its effectiveFrom,
   * refuses the whole cancellation (CONFLICT naming effectiveFrom) and nothing is removed.
   * Takes the customer's lock, as assign does, so a change made at the same moment is either
   * cancelled whole or made after the cancellation.
   */
  async cancelScheduled(merchantId: string, customerId: string): Promise<Customer> {
    const id = isUuid(customerId) ? customerId.toLowerCase() : null;
    const removed = await this.prisma.$transaction(async (tx) => {
      await lockCustomer(tx, merchantId, id, customerId);
      // "Now" is read once the lock is held: a change "from now" committed before is not scheduled.
      const now = this.clock();
      const scheduled = await tx.customerPlan.findMany({ where: { customerId: id!, merchantId, effectiveFrom: { gt: now } }, orderBy: { effectiveFrom: 'asc' }, include: { plan: true } });
      const first = scheduled[0];
      if (!first) return 0;
      const change = `The customer's plan change to ${first.plan ? `"${first.plan.key}"` : 'the default price book'} from ${first.effectiveFrom.toISOString()}`;
      if (first.effectiveFrom.getTime() - now.getTime() <= CANCELLABLE_AHEAD_MS) {
        throw conflict(
          `${change} takes effect within the ${MAX_FUTURE_USAGE_MS / 60_000} minutes ahead that usage may be timestamped (and a few seconds more), ` +
            'so usage may already be priced under it: it cannot be cancelled. Once it is in force, put the customer on another plan with setCustomerPlan.',
          { field: 'effectiveFrom', reason: 'PLAN_CHANGE_TAKING_EFFECT', effectiveFrom: first.effectiveFrom.toISOString() },
        );
      }
      // Read under the lock, after "now": every event committed by then is seen (see latestPricedUsage).
      const priced = await latestPricedUsage(tx, merchantId, first.effectiveFrom, id!);
      if (priced) {
        throw conflict(
          `${change} has already priced usage (the latest at ${priced.toISOString()}), and history is never rewritten: it cannot be cancelled. ` +
            'Put the customer on another plan with setCustomerPlan after that usage instead.',
          { field: 'effectiveFrom', reason: 'PLAN_CHANGE_PRICED_USAGE', effectiveFrom: first.effectiveFrom.toISOString(), pricedAt: priced.toISOString() },
        );
      }
      const { count } = await tx.customerPlan.deleteMany({ where: { id: { in: scheduled.map((row) => row.id) } } });
      return count;
    });
    if (removed > 0) this.changes.changed('plan-histories', merchantId);
    const customer = await this.prisma.customer.findUniqueOrThrow({ where: { id: id! } });
    if (removed > 0) this.pubsub.publish(customerTopic(customer.id), { customerId: customer.id });
    return customer;
  }

  /**
   * For the usage pipeline: after one call per batch, which plan each of these customers was on
   * at any time, answered from memory. Histories are cached per merchant for a short while (a
   * change is dropped on every instance through ConfigChanges, HISTORY_TTL_MS bounding a lost message); the
   * customers not cached yet are loaded in one query, so a batch costs at most one round trip.
   */
  async planResolver(merchantId: string, customerIds: Iterable<string>): Promise<PlanAt> {
    let cached = this.histories.get(merchantId);
    if (!cached || Date.now() - cached.at >= HISTORY_TTL_MS) {
      // Merchants gone quiet are dropped as another's histories are loaded: nothing else would.
      for (const [id, entry] of this.histories) if (Date.now() - entry.at >= HISTORY_TTL_MS) this.histories.delete(id);
      cached = { at: Date.now(), byCustomer: new Map() };
      this.histories.set(merchantId, cached);
    }
    const { byCustomer } = cached;
    const missing = [...new Set(customerIds)].filter((id) => !byCustomer.has(id));
    if (missing.length > 0) {
      // Raw SQL, like the rest of the ingest path: cheaper than Prisma's query compiler here.
      const rows = await this.db.withConnection((connection) =>
        connection.query<{ customer_id: string; plan_id: string | null; effective_from: Date }>(
          `SELECT customer_id, plan_id, effective_from FROM customer_plans WHERE merchant_id = $1 AND customer_id = ANY($2::uuid[]) ORDER BY customer_id, effective_from`,
          [merchantId, missing],
        ),
      );
      const loaded = new Map<string, Assignment[]>(missing.map((id) => [id, []]));
      for (const row of rows) loaded.get(row.customer_id)?.push({ planId: row.plan_id, effectiveFrom: new Date(row.effective_from) });
      for (const [id, history] of loaded) byCustomer.set(id, history);
    }
    return (customerId, at) => {
      const history = byCustomer.get(customerId);
      if (!history) return null;
      // Newest first: usage is mostly recent, and histories are short.
      for (let i = history.length - 1; i >= 0; i--) if (history[i]!.effectiveFrom <= at) return history[i]!.planId;
      return null;
    };
  }
}

/**
 * Locks the merchant's customer for a change of its plan history (NOT_FOUND when it is not one
 * of the merchant's, as `given`). Locking the customer serializes its assignments and their
 * cancellations, so "after the latest" holds under concurrency. NO KEY UPDATE: it does not hold
 * up rows that merely reference the customer (wallets, usage events).
 */
async function lockCustomer(tx: Pick<Prisma.TransactionClient, '$queryRaw'>, merchantId: string, id: string | null, given: string): Promise<void> {
  const locked = id ? await tx.$queryRaw<{ id: string }[]>`SELECT id FROM customers WHERE id = ${id}::uuid AND merchant_id = ${merchantId}::uuid FOR NO KEY UPDATE` : [];
  if (locked.length === 0) throw notFound('Customer', given);
}
