import { TollgateError } from './TollgateError.js';

/** Failures another try may cure: the network, the server's own trouble, a rate limit. */
const TRANSIENT = new Set(['NETWORK', 'INTERNAL', 'RATE_LIMITED', 'BAD_RESPONSE']);
const MAX_RETRIES = 3;
/** Statuses under 500 that a proxy may answer without a GraphQL body: a rate limit, a timeout. */
const TRANSIENT_STATUS = new Set([408, 429]);

/**
 * TanStack Query's `retry` for the kit's queries: an answer that will not change (a credential
 * refused, a bad input, something not found) reaches the UI at once instead of after three
 * retries and about seven seconds of backoff. Not for mutations: a NETWORK, INTERNAL or 5xx failure
 * may come after the server applied one, and another try would apply it again.
 */
export function shouldRetry(failureCount: number, error: Error): boolean {
  if (failureCount >= MAX_RETRIES) return false;
  if (!(error instanceof TollgateError)) return true;
  if (error.code === 'HTTP_ERROR') return error.status >= 500 || TRANSIENT_STATUS.has(error.status);
  return TRANSIENT.has(error.code);
}
