/**
 * Topic-based publish/subscribe for GraphQL subscriptions. Payloads are JSON values so the
 * same events can cross processes (the Redis implementation) unchanged. Publish only after
 * the transaction behind an event has committed.
 */
export type EventPayload = Record<string, unknown>;

export interface PubSub {
  publish(topic: string, payload: EventPayload): void;
  subscribe(topic: string): AsyncIterableIterator<EventPayload>;
  /** Listeners on this instance (for health checks, and tests that wait for a subscriber). */
  subscriberCount(topic: string): number;
  /**
   * Resolves once every subscription made so far receives events (Redis confirms them
   * asynchronously); rejects soon, rather than waiting, when they cannot be confirmed (Redis unreachable).
   */
  ready(): Promise<void>;
  /**
   * Calls `listener` whenever subscriptions may have missed events (the connection to Redis was
   * lost, this instance's or that of an instance that could not publish meanwhile): what was kept
   * up to date by them must be read afresh once ready() resolves again.
   * Returns a function that removes the listener.
   */
  onInterrupted(listener: () => void): () => void;
  close(): Promise<void>;
}

type Listener = (payload: EventPayload) => void;

/** A pull-based queue that turns pushed events into an async iterator a subscription can consume. */
export function listenerIterator(
  attach: (listener: Listener) => void,
  detach: (listener: Listener) => void,
  maxBuffered = 1000,
): AsyncIterableIterator<EventPayload> {
  const buffered: EventPayload[] = [];
  let waiting: ((result: IteratorResult<EventPayload>) => void) | null = null;
  let done = false;

  const listener: Listener = (payload) => {
    if (waiting) {
      const resolve = waiting;
      waiting = null;
      resolve({ value: payload, done: false });
    } else {
      // A subscriber this far behind loses the oldest: events are snapshots, so the newest matters most.
      if (buffered.length >= maxBuffered) buffered.shift();
      buffered.push(payload);
    }
  };
  attach(listener);

  const finish = async (): Promise<IteratorResult<EventPayload>> => {
    if (!done) {
      done = true;
      detach(listener);
      buffered.length = 0;
      waiting?.({ value: undefined, done: true });
      waiting = null;
    }
    return { value: undefined, done: true };
  };

  return {
    next() {
      if (done) return Promise.resolve({ value: undefined, done: true });
      const next = buffered.shift();
      if (next) return Promise.resolve({ value: next, done: false });
      return new Promise((resolve) => {
        waiting = resolve;
      });
    },
    return: finish,
    throw: async (error: unknown) => {
      await finish();
      throw error;
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

export class InMemoryPubSub implements PubSub {
  private readonly listeners = new Map<string, Set<Listener>>();

  publish(topic: string, payload: EventPayload): void {
    for (const listener of this.listeners.get(topic) ?? []) listener(payload);
  }

  subscribe(topic: string): AsyncIterableIterator<EventPayload> {
    return listenerIterator(
      (listener) => {
        const set = this.listeners.get(topic) ?? new Set();
        set.add(listener);
        this.listeners.set(topic, set);
      },
      (listener) => {
        const set = this.listeners.get(topic);
        set?.delete(listener);
        if (set?.size === 0) this.listeners.delete(topic);
      },
    );
  }

  subscriberCount(topic: string): number {
    return this.listeners.get(topic)?.size ?? 0;
  }

  /** Subscriptions take effect at once in process. */
  async ready(): Promise<void> {}

  /** Events in process are never lost. */
  onInterrupted(_listener: () => void): () => void {
    return () => undefined;
  }

  async close(): Promise<void> {
    this.listeners.clear();
  }
}

/** How long a re-sync waits before asking again whether subscriptions are confirmed: doubling from the first to the second. */
const RESYNC_CONFIRM_RETRY_MS = [100, 2000] as const;
/** How long it waits before reading the state again after a read failed (the database): doubling from the first to the second. */
const RESYNC_READ_RETRY_MS = [500, 30_000] as const;

/**
 * `topic`'s events, with the state they describe read afresh whenever some may have been
 * missed: after each interruption (see PubSub.onInterrupted), and when the subscription cannot be
 * confirmed as it starts (Redis unreachable), `current()` is read once ready() confirms
 * subscriptions again, and what it answers is pushed as events, so a subscriber converges on the
 * state as it is without reconnecting. A read may cross an event on the way (the event newer, or
 * older): the caller orders them as it orders events from other instances.
 */
export function subscribeResynced(pubsub: PubSub, topic: string, current: () => Promise<EventPayload[]>): AsyncIterableIterator<EventPayload> {
  const events = pubsub.subscribe(topic);
  let push = null as Listener | null;
  /** Times events may have been missed so far: a read started before the last one may have missed some too. */
  let missed = 0;
  let syncing = false;
  let timer: NodeJS.Timeout | undefined;
  let wake = undefined as (() => void) | undefined;
  let stopInterrupted = (): void => undefined;

  const output = listenerIterator(
    (listener) => (push = listener),
    () => {
      push = null;
      stopInterrupted();
      clearTimeout(timer);
      wake?.();
      void events.return?.();
    },
  );
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      wake = resolve;
      timer = setTimeout(resolve, ms);
      timer.unref();
    });
  const resync = async () => {
    if (syncing) return;
    syncing = true;
    let confirmDelay: number = RESYNC_CONFIRM_RETRY_MS[0];
    let readDelay: number = RESYNC_READ_RETRY_MS[0];
    try {
      while (push) {
        const seen = missed;
        try {
          await pubsub.ready();
        } catch {
          await pause(confirmDelay);
          confirmDelay = Math.min(confirmDelay * 2, RESYNC_CONFIRM_RETRY_MS[1]);
          continue;
        }
        let payloads: EventPayload[];
        try {
          payloads = await current();
        } catch {
          await pause(readDelay);
          readDelay = Math.min(readDelay * 2, RESYNC_READ_RETRY_MS[1]);
          continue;
        }
        for (const payload of payloads) push?.(payload);
        if (missed === seen) return;
      }
    } finally {
      syncing = false;
    }
  };
  const interrupted = () => {
    missed += 1;
    void resync();
  };

  stopInterrupted = pubsub.onInterrupted(interrupted);
  pubsub.ready().catch(() => {
    if (push) interrupted();
  });
  void (async () => {
    for (;;) {
      const result = await events.next();
      if (result.done) break;
      push?.(result.value);
    }
  })()
    .catch(() => undefined)
    .finally(() => void output.return?.());
  return output;
}

/** setTimeout's longest delay (about 24.8 days): a moment further ahead is waited for in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * `events`, plus `payload` pushed at each moment `nextAt` names: for state that changes with the
 * clock alone (a scheduled plan change taking effect), which no publish announces. `nextAt` is
 * read as the subscription starts and after every event (a change may have scheduled another),
 * one read at a time, and again after a failed read, in RESYNC_READ_RETRY_MS. Each change is
 * pushed once.
 */
export function withScheduledPushes(
  events: AsyncIterableIterator<EventPayload>,
  nextAt: () => Promise<Date | null>,
  payload: EventPayload,
): AsyncIterableIterator<EventPayload> {
  let push = null as Listener | null;
  /** Waits for `pending`'s moment. */
  let dueTimer: NodeJS.Timeout | undefined;
  /** Waits to read again after a failed read: apart from dueTimer, which a failed read must not cancel. */
  let retryTimer: NodeJS.Timeout | undefined;
  let retryDelay: number = RESYNC_READ_RETRY_MS[0];
  /** The moment (ms) of the change dueTimer waits for, until it is pushed; null when none is known. */
  let pending: number | null = null;
  /** The moment of the last change pushed: named again by a read whose clock is behind this one's, it is not pushed again (and again). */
  let pushedAt = -Infinity;
  /**
   * One read at a time: a burst of events asked for one each at once, as many queries as events
   * holding the database's pool. `again`: asked for while one was under way, which may predate
   * what asked (a slow earlier read must not undo a later one), so it is read again instead.
   */
  let reading = false;
  let again = false;
  const output = listenerIterator(
    (listener) => (push = listener),
    () => {
      push = null;
      clearTimeout(dueTimer);
      clearTimeout(retryTimer);
      void events.return?.();
    },
  );
  const after = (ms: number, then: () => void) => {
    const timer = setTimeout(then, Math.min(Math.max(ms, 0), MAX_TIMER_MS));
    timer.unref();
    return timer;
  };
  const tookEffect = () => {
    pushedAt = pending ?? pushedAt;
    pending = null;
    push?.(payload);
  };
  const schedule = async () => {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    clearTimeout(retryTimer);
    try {
      let at: Date | null;
      do {
        again = false;
        try {
          at = await nextAt();
        } catch {
          // A change already known is still pushed at its moment (its timer is kept): read after
          // it, it would no longer be ahead, and never pushed.
          if (push) {
            retryTimer = after(retryDelay, () => void schedule());
            retryDelay = Math.min(retryDelay * 2, RESYNC_READ_RETRY_MS[1]);
          }
          return;
        }
        if (!push) return;
      } while (again);
      retryDelay = RESYNC_READ_RETRY_MS[0];
      const next = at && at.getTime() > pushedAt ? at.getTime() : null;
      // The change waited for is no longer ahead, and its moment has come, though its timer has not
      // pushed it (it fired a moment early by this clock, or is late and this read started after
      // that moment): it is in force. (One whose moment has not come was cancelled, which publishes.)
      if (pending !== null && next !== pending && pending <= Date.now()) tookEffect();
      pending = next;
      clearTimeout(dueTimer);
      if (next === null) return;
      // A millisecond past it: the state is read at "now", and the change holds from its moment on.
      dueTimer = after(next + 1 - Date.now(), () => {
        if (pending === next && Date.now() > next) tookEffect();
        void schedule();
      });
    } finally {
      reading = false;
    }
  };
  void schedule();
  void (async () => {
    for (;;) {
      const result = await events.next();
      if (result.done) break;
      push?.(result.value);
      void schedule();
    }
  })()
    .catch(() => undefined)
    .finally(() => void output.return?.());
  return output;
}
