import type { GatewayOutcome, PrismaClient } from '../../generated/prisma/client.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Actor } from '../ledger/ledger.service.ts';
import type { UsageRecordInput, UsageService } from '../usage/usage.service.ts';

/** The log row of one forwarded call (table gateway_requests). */
export interface GatewayRequestLog {
  id: string;
  merchantId: string;
  customerId: string | null;
  provider: string | null;
  method: string;
  host: string;
  path: string;
  status: number;
  outcome: GatewayOutcome;
  errorCode: string | null;
  streamed: boolean;
  latencyMs: number;
  ttfbMs: number | null;
  createdAt: Date;
}

interface Item {
  merchantId: string;
  actor: Actor;
  usage: UsageRecordInput | null;
  log: GatewayRequestLog;
  attempts: number;
}

const MAX_BATCH = 500;
const MAX_ATTEMPTS = 6;

/**
 * Charges forwarded calls after their responses have gone out, so the caller never waits for
 * the ledger. Calls that finish close together are charged together: one UsageService batch
 * (one ledger transaction per wallet) per merchant, and one insert for their log rows. Each
 * call's usage has its own idempotency key, so retrying a failed batch never charges twice.
 */
export class GatewaySettlement {
  private queue: Item[] = [];
  private running: Promise<void> | null = null;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly usage: UsageService,
    private readonly logger: Logger,
  ) {}

  enqueue(merchantId: string, actor: Actor, usage: UsageRecordInput | null, log: GatewayRequestLog): void {
    this.queue.push({ merchantId, actor, usage, log, attempts: 0 });
    this.running ??= this.run();
  }

  /** Resolves once everything enqueued so far has been charged and logged (tests, shutdown). */
  async drain(): Promise<void> {
    while (this.running) await this.running;
  }

  get pending(): number {
    return this.queue.length;
  }

  private async run(): Promise<void> {
    // Let calls finishing in the same tick join the batch.
    await new Promise((resolve) => setImmediate(resolve));
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_BATCH);
      try {
        await this.settle(batch);
      } catch (error) {
        const retry = batch.filter((item) => ++item.attempts < MAX_ATTEMPTS);
        this.logger.error({ err: error, size: batch.length, retrying: retry.length }, 'gateway settlement failed');
        if (retry.length > 0) {
          await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** retry[0]!.attempts));
          this.queue.unshift(...retry);
        }
      }
    }
    this.running = null;
  }

  private async settle(batch: Item[]): Promise<void> {
    const groups = new Map<string, Item[]>();
    for (const item of batch) {
      if (!item.usage) continue;
      const key = `${item.merchantId}|${item.actor.kind}|${item.actor.apiKeyId ?? ''}`;
      groups.set(key, [...(groups.get(key) ?? []), item]);
    }
    const usageEventIds = new Map<Item, string>();
    for (const items of groups.values()) {
      const { merchantId, actor } = items[0]!;
      const results = await this.usage.record(merchantId, actor, items.map((item) => item.usage!));
      results.forEach((result, index) => {
        const item = items[index]!;
        if (result.ok) usageEventIds.set(item, result.event.id);
        else this.logger.warn({ requestId: item.log.id, code: result.error.code, message: result.error.message }, 'gateway usage not recorded');
      });
    }
    await this.prisma.gatewayRequest.createMany({
      data: batch.map((item) => ({ ...item.log, usageEventId: usageEventIds.get(item) ?? null })),
      skipDuplicates: true,
    });
  }
}
