import { AsyncLocalStorage } from 'node:async_hooks';

/** The request id travels with the async work of a request, so any log line can name it. */
const storage = new AsyncLocalStorage<{ requestId: string }>();

export function runWithRequestId<T>(requestId: string, work: () => T): T {
  return storage.run({ requestId }, work);
}

export function currentRequestId(): string | undefined {
  return storage.getStore()?.requestId;
}
