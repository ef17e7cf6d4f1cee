import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs. Secrets are redacted by path as a second line of defence; the first
 * is never putting them in a log call (we log key ids and prefixes, never keys).
 */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'tollgate' },
    redact: {
      paths: [
        '*.authorization', '*.Authorization', '*.secret', '*.token', '*.apiKey', '*.providerKey', '*.password', 'headers.cookie',
        // Provider key headers the gateway sets, should a request's headers ever reach a log line.
        '*["x-api-key"]', '*["api-key"]', '*["x-goog-api-key"]', '*["xi-api-key"]', '*["x-key"]', '*["x-tollgate-key"]', '*["x-tollgate-provider-key"]',
      ],
      censor: '[redacted]',
    },
  });
}

/**
 * What an operator is shown when a start or a command fails: the message alone, no stack. Node
 * rejects a connection refused on every address of a host (IPv6 and IPv4) with an AggregateError
 * whose own message is empty, so its errors' messages are shown instead.
 */
export function errorMessage(error: unknown): string {
  if (error instanceof AggregateError && !error.message) {
    return [...new Set(error.errors.map((inner: unknown) => errorMessage(inner)))].join('; ') || String(error);
  }
  if (error instanceof Error) return error.message || String(error);
  return String(error);
}
