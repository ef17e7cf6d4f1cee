import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseCorsOrigins, type CorsOrigins } from './http/cors.ts';

/**
 * Everything Tollgate reads from its environment, in one place. README.md's configuration
 * table documents each variable; keep the two in step.
 */
export interface Config {
  /** PostgreSQL URL; when absent the server runs on embedded PGlite under `dataDir`. */
  databaseUrl: string | undefined;
  dataDir: string;
  redisUrl: string | undefined;
  host: string;
  port: number;
  /** 32 bytes; encrypts secrets at rest and signs customer session tokens. */
  masterKey: Buffer;
  /** Public URL used in printed links (defaults to http://host:port). */
  publicUrl: string;
  maxBodyBytes: number;
  /** Largest body of POST /v1/usage/batch, read only once its caller's key checks out. */
  maxBatchBodyBytes: number;
  maxQueryDepth: number;
  /** How often open WebSockets' secret keys are checked for revocation. */
  wsKeyRecheckMs: number;
  /** Operations one WebSocket may run at once (subscriptions, mostly). */
  wsMaxOperations: number;
  /** WebSockets one customer's session tokens may hold open on one instance. */
  wsMaxCustomerSockets: number;
  /** WebSockets opened without a credential (GraphiQL sends one with each operation instead) one instance holds open at once. */
  wsMaxAnonymousSockets: number;
  maxQueryComplexity: number;
  customerSessionMaxTtlSeconds: number;
  /** Browser origins allowed to call the API and the gateway (`*`: any). */
  corsOrigins: CorsOrigins;
  /** How often this instance expires due credit grants and holds. */
  expiryIntervalMs: number;
  gateway: {
    /** Tests and local development only: let the gateway reach loopback and private addresses. */
    allowPrivateNetworks: boolean;
    /** How long the provider may take to start answering (504 after). */
    timeoutMs: number;
    /** How long a response (a stream) may stall between chunks before it is cut. */
    idleTimeoutMs: number;
    maxRequestBytes: number;
    /** How long the gateway remembers which customer created a provider job (Replicate, fal, …). */
    jobRetentionDays: number;
  };
  seedDemo: boolean;
  logLevel: string;
  production: boolean;
  stripe: { secretKey: string | undefined; webhookSecret: string | undefined; apiBase: string | undefined };
}

type Env = Record<string, string | undefined>;

/** Node's timers take at most this many ms; a longer delay silently becomes 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function intFrom(env: Env, name: string, fallback: number, range: { min?: number; max?: number } = {}): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} must be a positive whole number, got "${raw}"`);
  const { min = 1, max = Number.MAX_SAFE_INTEGER } = range;
  if (value < min || value > max) throw new Error(`${name} must be from ${min} to ${max}, got "${raw}"`);
  return value;
}

/** PORT: 1 to 65535, or 0 for a free one the system picks. */
function portFrom(env: Env): number {
  const raw = env.PORT?.trim();
  if (!raw) return 4000;
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value > 65_535) throw new Error(`PORT must be a whole number from 0 to 65535 (0 picks a free port), got "${raw}"`);
  return value;
}

function bytesFrom(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const match = /^(\d+)\s*(b|kb|mb)?$/i.exec(raw.trim());
  if (!match) throw new Error(`${name} must be a size such as 1mb or 500kb, got "${raw}"`);
  const unit = (match[2] ?? 'b').toLowerCase();
  const bytes = Number(match[1]) * (unit === 'mb' ? 1024 * 1024 : unit === 'kb' ? 1024 : 1);
  // Zero would refuse every body; past 2 GiB is more than Node reads into one string.
  if (bytes < 1 || bytes > 2 ** 31 - 1) throw new Error(`${name} must be from 1 byte to 2 GiB, got "${raw}"`);
  return bytes;
}

/**
 * A text setting, trimmed; empty or blank counts as unset. Settings are often written from a
 * template (`HOST=` in an .env file): an empty HOST would listen on every interface, an empty
 * TOLLGATE_DATA_DIR would be the current folder.
 */
function textFrom(env: Env, name: string): string | undefined {
  return env[name]?.trim() || undefined;
}

const TRUE_WORDS = ['true', '1', 'yes', 'on'];
const FALSE_WORDS = ['false', '0', 'no', 'off'];

/**
 * An on/off setting: true/false, 1/0, yes/no or on/off in any case; empty counts as unset.
 * Anything else stops the start: reading `FALSE` or `0` as on (or `1` as off) would silently do
 * the opposite of what was meant (seed a demo merchant in production, say).
 */
function boolFrom(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  const word = raw?.trim().toLowerCase();
  if (!word) return fallback;
  if (TRUE_WORDS.includes(word)) return true;
  if (FALSE_WORDS.includes(word)) return false;
  throw new Error(`${name} must be true or false (or 1/0, yes/no, on/off), got "${raw}"`);
}

/** pino's levels, and `silent` (no logs). */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/**
 * LOG_LEVEL, checked here: pino refuses an unknown level with a message that never names the
 * setting ("default level:warning must be included in custom levels"). Empty counts as unset.
 * The CLI reads it with its own fallback (quieter than the server's).
 */
export function logLevelFrom(env: Env, fallback: string): string {
  const raw = env.LOG_LEVEL;
  const level = raw?.trim().toLowerCase();
  if (!level) return fallback;
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new Error(`LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${raw}"`);
  return level;
}

const DATABASE_URL_FORM = 'postgresql://user:password@host:5432/database';

/**
 * DATABASE_URL as pg would read it, checked first: pg takes almost anything (`postgresql//host/db`
 * becomes a connection to a host named "base") and then fails with a network error that never
 * names the setting. The value is not repeated in the message: it may hold a password.
 */
function databaseUrlFrom(env: Env): string | undefined {
  const raw = env.DATABASE_URL?.trim();
  if (!raw) return undefined;
  const refuse = (problem: string) => new Error(`DATABASE_URL must be a PostgreSQL URL such as ${DATABASE_URL_FORM}; the one set ${problem}`);
  let url: URL;
  try {
    // pg, like this, reads `user@/db?host=/socket/dir` as a URL with no host.
    url = new URL(raw.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#]*)@\//i, '$1@no-host/'));
  } catch {
    throw refuse('is not a URL (is "://" missing after postgresql? are characters such as # / @ in the password percent-encoded?)');
  }
  // pg's other form of a Unix socket: socket:/path/to/dir?db=name.
  if (url.protocol === 'socket:' && url.pathname) return raw;
  if (url.protocol !== 'postgresql:' && url.protocol !== 'postgres:') {
    throw refuse(`starts with "${url.protocol}" instead of postgresql:// (a host:port needs the scheme in front)`);
  }
  // The host may come from ?host= instead (a Unix socket: postgresql:///db?host=/var/run/postgresql)
  // or from PGHOST, which pg reads for a URL that names none.
  const hostless = !url.hostname || url.hostname === 'no-host';
  if (hostless && !url.searchParams.get('host') && !env.PGHOST) throw refuse('names no host (nor does PGHOST)');
  return raw;
}

/** Accepts 64 hex characters or base64 of 32 bytes. */
export function parseMasterKey(raw: string): Buffer {
  const text = raw.trim();
  const key = /^[0-9a-f]{64}$/i.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  if (key.length !== 32) throw new Error('TOLLGATE_MASTER_KEY must be 32 bytes, as 64 hex characters or base64');
  return key;
}

/**
 * In development a master key is generated once and kept in the data folder so that
 * restarts can still read what it encrypted. Production must supply its own.
 */
function resolveMasterKey(env: Env, dataDir: string, production: boolean): Buffer {
  if (env.TOLLGATE_MASTER_KEY?.trim()) return parseMasterKey(env.TOLLGATE_MASTER_KEY);
  if (production) throw new Error('TOLLGATE_MASTER_KEY is required when NODE_ENV=production');
  const file = path.join(dataDir, 'master.key');
  if (existsSync(file)) return parseMasterKey(readFileSync(file, 'utf8'));
  mkdirSync(dataDir, { recursive: true });
  const key = randomBytes(32);
  writeFileSync(file, key.toString('hex') + '\n', { mode: 0o600 });
  return key;
}

export function loadConfig(env: Env = process.env): Config {
  const production = env.NODE_ENV === 'production';
  const dataDir = path.resolve(textFrom(env, 'TOLLGATE_DATA_DIR') ?? '.data');
  const host = textFrom(env, 'HOST') ?? '127.0.0.1';
  const port = portFrom(env);
  return {
    databaseUrl: databaseUrlFrom(env),
    dataDir,
    redisUrl: textFrom(env, 'REDIS_URL'),
    host,
    port,
    masterKey: resolveMasterKey(env, dataDir, production),
    // Without a trailing slash, so paths join to it as `${publicUrl}/graphql`.
    publicUrl: textFrom(env, 'TOLLGATE_PUBLIC_URL')?.replace(/\/+$/, '') || `http://${host === '0.0.0.0' ? 'localhost' : host}:${port}`,
    maxBodyBytes: bytesFrom(env, 'TOLLGATE_MAX_BODY_SIZE', 1024 * 1024),
    // A full batch of raw provider responses runs to megabytes (1,000 events of a few KB each).
    maxBatchBodyBytes: bytesFrom(env, 'TOLLGATE_MAX_BATCH_BODY_SIZE', 16 * 1024 * 1024),
    maxQueryDepth: intFrom(env, 'TOLLGATE_MAX_QUERY_DEPTH', 10),
    maxQueryComplexity: intFrom(env, 'TOLLGATE_MAX_QUERY_COMPLEXITY', 5000),
    // A session lives at least a minute (createCustomerSession's floor): a lower cap refuses them all.
    customerSessionMaxTtlSeconds: intFrom(env, 'TOLLGATE_CUSTOMER_SESSION_MAX_TTL', 24 * 3600, { min: 60 }),
    corsOrigins: parseCorsOrigins(env.TOLLGATE_CORS_ORIGINS),
    expiryIntervalMs: intFrom(env, 'TOLLGATE_EXPIRY_INTERVAL_SECONDS', 60, { max: Math.floor(MAX_TIMER_MS / 1000) }) * 1000,
    wsKeyRecheckMs: intFrom(env, 'TOLLGATE_WS_KEY_RECHECK_MS', 5000, { max: MAX_TIMER_MS }),
    wsMaxOperations: intFrom(env, 'TOLLGATE_WS_MAX_OPERATIONS', 100),
    wsMaxCustomerSockets: intFrom(env, 'TOLLGATE_WS_MAX_CUSTOMER_SOCKETS', 20),
    wsMaxAnonymousSockets: intFrom(env, 'TOLLGATE_WS_MAX_ANONYMOUS_SOCKETS', 100),
    gateway: {
      allowPrivateNetworks: boolFrom(env, 'TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS', false),
      timeoutMs: intFrom(env, 'TOLLGATE_GATEWAY_TIMEOUT_MS', 300_000, { max: MAX_TIMER_MS }),
      idleTimeoutMs: intFrom(env, 'TOLLGATE_GATEWAY_IDLE_TIMEOUT_MS', 120_000, { max: MAX_TIMER_MS }),
      maxRequestBytes: bytesFrom(env, 'TOLLGATE_GATEWAY_MAX_REQUEST_SIZE', 32 * 1024 * 1024),
      jobRetentionDays: intFrom(env, 'TOLLGATE_GATEWAY_JOB_RETENTION_DAYS', 30, { min: 1, max: 3650 }),
    },
    seedDemo: boolFrom(env, 'TOLLGATE_SEED_DEMO', !production),
    logLevel: logLevelFrom(env, env.NODE_ENV === 'test' ? 'silent' : 'info'),
    production,
    stripe: {
      secretKey: textFrom(env, 'STRIPE_SECRET_KEY'),
      webhookSecret: textFrom(env, 'STRIPE_WEBHOOK_SECRET'),
      apiBase: textFrom(env, 'STRIPE_API_BASE'),
    },
  };
}
