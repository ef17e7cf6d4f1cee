import type { PrismaClient, SpendLimit } from '../../generated/prisma/client.ts';
import { invalidField, notFound } from '../../shared/errors.ts';
import { groupBy } from '../../shared/collections.ts';
import { ATTOS_PER_NANO, parseCurrency, parseDecimalNanos } from '../../shared/money.ts';
import type { PubSub } from '../../shared/pubsub.ts';
import { TickBatcher } from '../../shared/tick-batcher.ts';
import { customerTopic } from '../customers/customers.service.ts';
import { isUuid } from '../../shared/validation.ts';
import { periodStartOf } from '../usage/usage.service.ts';

export type { SpendLimit };

/** Spend limits count the period usage is metered in: the calendar month (UTC). */
export function monthOf(at: Date): { start: Date; end: Date } {
  const start = periodStartOf(at);
  return { start, end: new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 1)) };
}

/**
 * A ceiling on what a customer may be charged per month in a currency — a guard against a
 * runaway script or a stolen session, independent of how much credit the customer holds.
 * The gateway enforces it before calling a provider (429 SPEND_LIMIT_REACHED).
 */
export class SpendLimitService {
  private readonly listeners: ((merchantId: string) => void)[] = [];

  constructor(
    private readonly prisma: PrismaClient,
    private readonly pubsub: PubSub,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  /** Called after a merchant's limits change, so caches of them can be dropped. */
  onChange(listener: (merchantId: string) => void): void {
    this.listeners.push(listener);
  }

  async set(merchantId: string, input: { customerId: string; amount: string; currency?: string | null }): Promise<SpendLimit> {
    const customerId = await this.customerOf(merchantId, input.customerId);
    const currency = parseCurrency('currency', input.currency);
    const amountNanos = parseDecimalNanos('amount', input.amount);
    if (amountNanos <= 0n) throw invalidField('amount', 'must be greater than zero (remove the limit to lift it)');
    const limit = await this.prisma.spendLimit.upsert({
      where: { customerId_currency: { customerId, currency } },
      create: { merchantId, customerId, currency, amountNanos },
      update: { amountNanos },
    });
    for (const listener of this.listeners) listener(merchantId);
    // Its limits are part of the customer that customerUpdated pushes.
    this.pubsub.publish(customerTopic(customerId), { customerId });
    return limit;
  }

  async remove(merchantId: string, customerId: string, currency?: string | null): Promise<boolean> {
    const id = await this.customerOf(merchantId, customerId);
    const removed = await this.prisma.spendLimit.deleteMany({ where: { merchantId, customerId: id, currency: parseCurrency('currency', currency) } });
    for (const listener of this.listeners) listener(merchantId);
    if (removed.count > 0) this.pubsub.publish(customerTopic(id), { customerId: id });
    return removed.count > 0;
  }

  /**
   * A customer's limits, by currency. The limits of every customer asked for in one tick are read
   * in one query: a page of 100 customers with their limits costs one round trip, not 100.
   */
  list(merchantId: string, customerId: string): Promise<SpendLimit[]> {
    return this.limitBatches.load(`${merchantId}:${customerId}`);
  }

  private readonly limitBatches = new TickBatcher<string, SpendLimit[]>(async (keys) => {
    const found = new Map<string, SpendLimit[]>();
    for (const [merchantId, merchantKeys] of groupBy(keys, (key) => key.split(':')[0]!)) {
      // Not a UUID: no customer's (and Prisma would fail every load batched with it).
      const customerIds = merchantKeys.map((key) => key.split(':')[1]!).filter(isUuid);
      if (!isUuid(merchantId) || customerIds.length === 0) continue;
      const rows = await this.prisma.spendLimit.findMany({
        where: { merchantId, customerId: { in: customerIds } },
        orderBy: [{ customerId: 'asc' }, { currency: 'asc' }],
      });
      for (const row of rows) {
        const key = `${merchantId}:${row.customerId}`;
        found.set(key, [...(found.get(key) ?? []), row]);
      }
    }
    return found;
  }, []);

  /** Every limit of a merchant, by `customerId|currency`: the gateway keeps these in memory. */
  async limitsOf(merchantId: string): Promise<Map<string, bigint>> {
    const rows = await this.prisma.spendLimit.findMany({ where: { merchantId }, select: { customerId: true, currency: true, amountNanos: true } });
    return new Map(rows.map((row) => [`${row.customerId}|${row.currency}`, row.amountNanos]));
  }

  /** The month limits count now: from its first instant to the next month's. */
  currentMonth(): { start: Date; end: Date } {
    return monthOf(this.clock());
  }

  /** What the customer was charged this month, in `currency`, by usage events. */
  async spentThisMonth(merchantId: string, customerId: string, currency: string): Promise<{ spentAttos: bigint; periodStart: Date; resetsAt: Date }> {
    const { start, end } = this.currentMonth();
    const spentAttos = await this.spentBatches.load(JSON.stringify([merchantId, start.getTime(), customerId, currency]));
    return { spentAttos, periodStart: start, resetsAt: end };
  }

  /**
   * Month-to-date charges of every (customer, currency) asked for in one tick, one query per
   * merchant and month: a page of customers with their limits' spentThisMonth costs one round trip.
   */
  private readonly spentBatches = new TickBatcher<string, bigint>(async (keys) => {
    const found = new Map<string, bigint>();
    const asked = keys.map((key) => JSON.parse(key) as [string, number, string, string]);
    for (const group of groupBy(asked, ([merchantId, start]) => `${merchantId}:${start}`).values()) {
      const [merchantId, start] = group[0]!;
      // Not a UUID: no customer's (and Prisma would fail every load batched with it).
      const customerIds = [...new Set(group.map(([, , customerId]) => customerId))].filter(isUuid);
      if (!isUuid(merchantId) || customerIds.length === 0) continue;
      const rows = await this.prisma.usageEvent.groupBy({
        by: ['customerId', 'currency'],
        where: { merchantId, customerId: { in: customerIds }, currency: { in: [...new Set(group.map(([, , , currency]) => currency))] }, occurredAt: { gte: new Date(start), lt: monthOf(new Date(start)).end } },
        _sum: { chargeAttos: true },
      });
      for (const row of rows) found.set(JSON.stringify([merchantId, start, row.customerId, row.currency]), BigInt(row._sum.chargeAttos?.toFixed(0) ?? '0'));
    }
    return found;
  }, 0n);

  static reached(limitNanos: bigint, spentAttos: bigint): boolean {
    return spentAttos >= limitNanos * ATTOS_PER_NANO;
  }

  private async customerOf(merchantId: string, customerId: string): Promise<string> {
    const found = isUuid(customerId) ? await this.prisma.customer.findFirst({ where: { id: customerId, merchantId }, select: { id: true } }) : null;
    if (!found) throw notFound('Customer', customerId);
    return found.id;
  }
}
