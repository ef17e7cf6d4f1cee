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
      paths: ['*.authorization', '*.Authorization', '*.secret', '*.token', '*.apiKey', '*.providerKey', '*.password', 'headers.cookie'],
      censor: '[redacted]',
    },
  });
}
