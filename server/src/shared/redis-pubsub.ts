import { Redis } from 'ioredis';
import type { Logger } from './logger.ts';
import { listenerIterator, type EventPayload, type PubSub } from './pubsub.ts';

/** How long close() waits for Redis to take the last published events. */
const CLOSE_WAIT_MS = 1000;

/**
 * PubSub across server instances: an event published on one instance reaches subscribers
 * connected to any other. One connection publishes, one subscribes; topics are
 * SUBSCRIBEd while at least one local listener wants them.
 */
export class RedisPubSub implements PubSub {
  private readonly publisher: Redis;
  private readonly subscriber: Redis;
  private readonly listeners = new Map<string, Set<(payload: EventPayload) => void>>();
  private readonly prefix: string;

  constructor(url: string, private readonly logger: Logger, prefix = 'tollgate:') {
    this.prefix = prefix;
    this.publisher = new Redis(url, { maxRetriesPerRequest: 3, lazyConnect: false });
    this.subscriber = new Redis(url, { maxRetriesPerRequest: null });
    for (const client of [this.publisher, this.subscriber]) {
      client.on('error', (error) => this.logger.warn({ err: error }, 'redis connection error'));
    }
    this.subscriber.on('message', (channel: string, message: string) => {
      const set = this.listeners.get(channel.slice(this.prefix.length));
      if (!set) return;
      let payload: EventPayload;
      try {
        payload = JSON.parse(message) as EventPayload;
      } catch {
        return;
      }
      for (const listener of set) listener(payload);
    });
  }

  publish(topic: string, payload: EventPayload): void {
    this.publisher.publish(this.prefix + topic, JSON.stringify(payload)).catch((error: unknown) => {
      this.logger.error({ err: error, topic }, 'failed to publish event');
    });
  }

  subscribe(topic: string): AsyncIterableIterator<EventPayload> {
    return listenerIterator(
      (listener) => {
        let set = this.listeners.get(topic);
        if (!set) {
          set = new Set();
          this.listeners.set(topic, set);
          this.subscriber.subscribe(this.prefix + topic).catch((error: unknown) => this.logger.error({ err: error, topic }, 'subscribe failed'));
        }
        set.add(listener);
      },
      (listener) => {
        const set = this.listeners.get(topic);
        set?.delete(listener);
        if (set && set.size === 0) {
          this.listeners.delete(topic);
          this.subscriber.unsubscribe(this.prefix + topic).catch(() => undefined);
        }
      },
    );
  }

  subscriberCount(topic: string): number {
    return this.listeners.get(topic)?.size ?? 0;
  }

  /** Resolves once Redis has confirmed every current subscription (tests and readiness). */
  async ready(): Promise<void> {
    await this.subscriber.ping();
  }

  async close(): Promise<void> {
    this.listeners.clear();
    this.subscriber.disconnect();
    // QUIT is answered after the events published before it: a CLI that changed prices and
    // exits still tells the servers. Bounded, so a Redis that is down does not hold the exit.
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)));
    await Promise.race([this.publisher.quit().catch(() => undefined), bound]);
    clearTimeout(timer);
    this.publisher.disconnect();
  }
}
