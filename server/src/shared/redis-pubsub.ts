import { Redis } from 'ioredis';
import type { Logger } from './logger.ts';
import { listenerIterator, type EventPayload, type PubSub } from './pubsub.ts';

/** How long close() waits for Redis to take the last published events. */
const CLOSE_WAIT_MS = 1000;
/** How long ready() waits for a connected Redis to confirm the subscriptions. */
const READY_WAIT_MS = 2000;
/** Where an instance that gave up publishing events says so once it is connected again (see announceLost). */
const RESYNC_TOPIC = 'pubsub:resync';

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
  private readonly interrupted = new Set<() => void>();
  /** Settles when the subscriber's first connection is up or has failed; null from then on. */
  private starting: Promise<void> | null;
  /** When (performance.now()) the latest publish given up on was asked for; null once announced to the instances. */
  private lostAt: number | null = null;
  /** When (performance.now()) the subscriber's connection was last made. */
  private connectedAt = -Infinity;

  constructor(url: string, private readonly logger: Logger, prefix = 'tollgate:') {
    this.prefix = prefix;
    this.publisher = new Redis(url, { maxRetriesPerRequest: 3, lazyConnect: false });
    this.subscriber = new Redis(url, { maxRetriesPerRequest: null });
    for (const client of [this.publisher, this.subscriber]) {
      client.on('error', (error) => this.logger.warn({ err: error }, 'redis connection error'));
    }
    this.starting = new Promise<void>((resolve) => {
      const settle = () => {
        this.starting = null;
        resolve();
      };
      this.subscriber.once('ready', settle);
      this.subscriber.once('error', settle);
      this.subscriber.once('close', settle);
    });
    // The subscriber's connection closed: events published until it is back (and has
    // resubscribed, which ioredis does by itself) are lost to this instance.
    this.subscriber.on('close', () => this.interrupt());
    this.subscriber.on('ready', () => (this.connectedAt = performance.now()));
    this.subscriber.subscribe(this.prefix + RESYNC_TOPIC).catch((error: unknown) => this.logger.error({ err: error }, 'subscribe failed'));
    this.publisher.on('ready', () => this.announceLost());
    this.subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.prefix + RESYNC_TOPIC) {
        this.resyncAsked(message);
        return;
      }
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
    const at = performance.now();
    this.publisher.publish(this.prefix + topic, JSON.stringify(payload)).catch((error: unknown) => {
      this.logger.error({ err: error, topic }, 'failed to publish event');
      this.lostAt = Math.max(this.lostAt ?? at, at);
      // Usually given up while disconnected: announced on reconnecting ('ready').
      if (this.publisher.status === 'ready') this.announceLost();
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

  /**
   * Resolves once Redis has confirmed every current subscription (a PING answered after the
   * SUBSCRIBEs sent before it). Rejects at once while the subscriber is not connected — a
   * command would wait in ioredis's offline queue until Redis is back — and after READY_WAIT_MS
   * when a connected Redis does not answer.
   */
  async ready(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Redis did not confirm subscriptions within ${READY_WAIT_MS} ms`)), READY_WAIT_MS);
    });
    try {
      // Only the first connection, being made as the process starts, is waited for.
      if (this.subscriber.status !== 'ready' && this.starting) await Promise.race([this.starting, timeout]);
      if (this.subscriber.status !== 'ready') throw new Error(`Redis subscriptions cannot be confirmed: the connection is ${this.subscriber.status}`);
      await Promise.race([this.subscriber.ping(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  onInterrupted(listener: () => void): () => void {
    this.interrupted.add(listener);
    return () => void this.interrupted.delete(listener);
  }

  private interrupt(): void {
    for (const listener of this.interrupted) listener();
  }

  /**
   * Events this instance gave up publishing (its connection was down) reached no instance, and
   * what they keep current would stay stale until the next change. Once connected again, it asks
   * every instance (itself included) to re-read as after an interruption of their own: one signal
   * whatever was lost rather than the lost events again, so no memory per topic and no payload to
   * reason about (caches of configuration expire within seconds anyway: see ConfigChanges).
   * How long ago the last loss was goes as a duration: instances' clocks differ.
   */
  private announceLost(): void {
    const at = this.lostAt;
    if (at === null) return;
    this.lostAt = null;
    const lostMsAgo = performance.now() - at;
    this.publisher.publish(this.prefix + RESYNC_TOPIC, JSON.stringify({ lostMsAgo })).then(
      () => this.logger.warn({ lostMsAgo }, 'asked every instance to re-read what events keep current: some were not published'),
      // Left for the next reconnection, or the next publish given up.
      () => (this.lostAt = Math.max(this.lostAt ?? at, at)),
    );
  }

  private resyncAsked(message: string): void {
    let lostMsAgo: unknown;
    try {
      lostMsAgo = (JSON.parse(message) as { lostMsAgo?: unknown }).lostMsAgo;
    } catch {
      lostMsAgo = undefined;
    }
    // On this instance's clock, the loss was no later than this (the message took time to come).
    const lostBy = typeof lostMsAgo === 'number' && Number.isFinite(lostMsAgo) ? performance.now() - lostMsAgo : Infinity;
    // Lost before this subscriber last connected: the re-reads its own interruption asked for
    // come after it and include those changes (a Redis restart is not made up for twice).
    if (lostBy < this.connectedAt) return;
    this.interrupt();
  }

  async close(): Promise<void> {
    this.listeners.clear();
    this.interrupted.clear();
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
