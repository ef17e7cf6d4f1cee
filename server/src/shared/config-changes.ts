import { randomUUID } from 'node:crypto';
import type { Logger } from './logger.ts';
import type { EventPayload, PubSub } from './pubsub.ts';

const TOPIC = 'tollgate:config-changes';

/** A cache of merchant configuration that instances drop entries of when it changes. */
export type ConfigScope = 'meters' | 'price-rules' | 'provider-prices' | 'plan-histories' | 'gateway-settings' | 'api-keys' | 'customers' | 'new-customers';
const SCOPES: ReadonlySet<string> = new Set<ConfigScope>(['meters', 'price-rules', 'provider-prices', 'plan-histories', 'gateway-settings', 'api-keys', 'customers', 'new-customers']);

/**
 * Caches of merchant configuration live in each process (see RefreshingCache): a change drops
 * the entry in the process that made it at once, and other instances used to see it only when
 * theirs expired (seconds later: events priced by the old rule, a revoked key still let through
 * the gateway). `changed` also tells every instance sharing the PubSub — Redis when REDIS_URL is
 * set — to drop it. The cache lifetimes stay the bound should a message be lost.
 */
export class ConfigChanges {
  private readonly drops = new Map<ConfigScope, ((merchantId: string) => void)[]>();
  /** Tells this instance's own messages apart: it dropped its entries when it sent them. */
  private readonly origin = randomUUID();
  private readonly events: AsyncIterableIterator<EventPayload> | null;

  /** Without a PubSub, changes are dropped in this process only (a single instance, unit tests). */
  constructor(
    private readonly pubsub: PubSub | null = null,
    private readonly logger?: Logger,
  ) {
    this.events = pubsub?.subscribe(TOPIC) ?? null;
    if (this.events) void this.listen(this.events);
  }

  /** How this process drops `scope`'s entries for a merchant. */
  on(scope: ConfigScope, drop: (merchantId: string) => void): void {
    const list = this.drops.get(scope);
    if (list) list.push(drop);
    else this.drops.set(scope, [drop]);
  }

  /** A merchant's configuration in `scope` changed (call once it is committed): every instance drops what it cached of it. */
  changed(scope: ConfigScope, merchantId: string): void {
    this.drop(scope, merchantId);
    this.pubsub?.publish(TOPIC, { scope, merchantId, origin: this.origin });
  }

  stop(): void {
    void this.events?.return?.();
  }

  private drop(scope: ConfigScope, merchantId: string): void {
    for (const drop of this.drops.get(scope) ?? []) drop(merchantId);
  }

  private async listen(events: AsyncIterableIterator<EventPayload>): Promise<void> {
    try {
      for await (const { scope, merchantId, origin } of events) {
        if (origin === this.origin || typeof scope !== 'string' || !SCOPES.has(scope) || typeof merchantId !== 'string') continue;
        this.drop(scope as ConfigScope, merchantId);
      }
    } catch (error) {
      // Caches still expire by themselves: a lost channel only delays changes to their lifetime.
      this.logger?.error({ err: error }, 'configuration change messages stopped');
    }
  }
}
