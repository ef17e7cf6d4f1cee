import { describe, expect, it } from 'vitest';
import { shouldRetry } from './retry.js';
import { TollgateError } from './TollgateError.js';

describe('shouldRetry', () => {
  it('retries what another try may cure, three times at most', () => {
    for (const error of [new TollgateError('NETWORK', 'down', 0), new TollgateError('INTERNAL', 'oops', 500), new TollgateError('RATE_LIMITED', 'slow down', 429), new TollgateError('HTTP_ERROR', 'bad gateway', 502), new Error('other')]) {
      expect(shouldRetry(0, error), error.message).toBe(true);
      expect(shouldRetry(3, error), error.message).toBe(false);
    }
  });

  it('retries a rate limit or timeout that a proxy answered without GraphQL, as it does RATE_LIMITED', () => {
    for (const status of [429, 408]) {
      expect(shouldRetry(0, new TollgateError('HTTP_ERROR', `Tollgate answered ${status}`, status)), String(status)).toBe(true);
      expect(shouldRetry(3, new TollgateError('HTTP_ERROR', `Tollgate answered ${status}`, status)), String(status)).toBe(false);
    }
  });

  it('never retries an answer that will not change', () => {
    for (const code of ['UNAUTHENTICATED', 'FORBIDDEN', 'VALIDATION', 'NOT_FOUND', 'INSUFFICIENT_FUNDS', 'CONFLICT']) {
      expect(shouldRetry(0, new TollgateError(code, code, 400)), code).toBe(false);
    }
    expect(shouldRetry(0, new TollgateError('HTTP_ERROR', 'not found', 404))).toBe(false);
  });
});
