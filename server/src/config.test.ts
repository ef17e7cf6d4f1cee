import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.ts';
import { createLogger } from './shared/logger.ts';

const KEY = { TOLLGATE_MASTER_KEY: '1'.repeat(64) };

describe('loadConfig refuses settings the server could not work with', () => {
  it.each([
    ['TOLLGATE_CUSTOMER_SESSION_MAX_TTL', '30', /from 60/],
    ['TOLLGATE_EXPIRY_INTERVAL_SECONDS', '2147484', /from 1 to 2147483/],
    ['TOLLGATE_WS_KEY_RECHECK_MS', '3000000000', /from 1 to 2147483647/],
    ['TOLLGATE_GATEWAY_TIMEOUT_MS', '2147483648', /from 1 to 2147483647/],
    ['PORT', '70000', /from 0 to 65535 \(0 picks a free port\)/],
    ['PORT', '-1', /from 0 to 65535/],
    ['PORT', '80.5', /from 0 to 65535/],
    ['TOLLGATE_MAX_BODY_SIZE', '0', /from 1 byte/],
    ['TOLLGATE_MAX_BODY_SIZE', '4096mb', /2 GiB/],
  ])('%s=%s', (name, value, message) => {
    expect(() => loadConfig({ ...KEY, [name]: value })).toThrow(message);
  });

  it('takes the bounds themselves', () => {
    const config = loadConfig({ ...KEY, TOLLGATE_CUSTOMER_SESSION_MAX_TTL: '60', TOLLGATE_EXPIRY_INTERVAL_SECONDS: '2147483', PORT: '65535', TOLLGATE_MAX_BODY_SIZE: '1' });
    expect(config).toMatchObject({ customerSessionMaxTtlSeconds: 60, expiryIntervalMs: 2_147_483_000, port: 65_535, maxBodyBytes: 1 });
    expect(loadConfig({ ...KEY, PORT: '0' }).port).toBe(0);
  });
});

describe('loadConfig reads an empty or blank setting as unset', () => {
  it.each([[''], ['   ']])('HOST, TOLLGATE_DATA_DIR, TOLLGATE_PUBLIC_URL, REDIS_URL set to %j', (value) => {
    const config = loadConfig({ ...KEY, HOST: value, TOLLGATE_DATA_DIR: value, TOLLGATE_PUBLIC_URL: value, REDIS_URL: value, PORT: '4100' });
    // An empty host would listen on every interface, an empty data folder be the current one.
    expect(config.host).toBe('127.0.0.1');
    expect(config.dataDir).toBe(path.resolve('.data'));
    expect(config.publicUrl).toBe('http://127.0.0.1:4100');
    expect(config.redisUrl).toBeUndefined();
  });

  it.each([[''], ['   ']])('numbers and sizes set to %j take their defaults', (value) => {
    const config = loadConfig({
      ...KEY,
      PORT: value,
      TOLLGATE_MAX_QUERY_DEPTH: value,
      TOLLGATE_CUSTOMER_SESSION_MAX_TTL: value,
      TOLLGATE_GATEWAY_TIMEOUT_MS: value,
      TOLLGATE_MAX_BODY_SIZE: value,
      TOLLGATE_GATEWAY_MAX_REQUEST_SIZE: value,
    });
    expect(config).toMatchObject({ port: 4000, maxQueryDepth: 10, customerSessionMaxTtlSeconds: 86_400, maxBodyBytes: 1024 * 1024 });
    expect(config.gateway).toMatchObject({ timeoutMs: 300_000, maxRequestBytes: 32 * 1024 * 1024 });
  });

  it.each([[''], ['   ']])('TOLLGATE_MASTER_KEY set to %j is unset: generated in development, required in production', (value) => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'tollgate-config-'));
    try {
      expect(loadConfig({ TOLLGATE_DATA_DIR: dataDir, TOLLGATE_MASTER_KEY: value }).masterKey).toHaveLength(32);
      expect(() => loadConfig({ TOLLGATE_DATA_DIR: dataDir, TOLLGATE_MASTER_KEY: value, NODE_ENV: 'production' })).toThrow('TOLLGATE_MASTER_KEY is required when NODE_ENV=production');
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('takes a set value without the blanks around it', () => {
    const config = loadConfig({ ...KEY, HOST: ' 0.0.0.0 ', TOLLGATE_PUBLIC_URL: ' https://billing.example.test ' });
    expect(config.host).toBe('0.0.0.0');
    expect(config.publicUrl).toBe('https://billing.example.test');
  });

  it('takes TOLLGATE_PUBLIC_URL without its trailing slashes, so paths join to it cleanly', () => {
    expect(loadConfig({ ...KEY, TOLLGATE_PUBLIC_URL: 'https://example.test/billing//' }).publicUrl).toBe('https://example.test/billing');
  });
});

describe('loadConfig reads on/off settings strictly', () => {
  it.each(['false', 'FALSE', 'False', '0', 'no', 'NO', 'off', 'Off', ' false '])('TOLLGATE_SEED_DEMO=%j is off, in development and in production', (value) => {
    expect(loadConfig({ ...KEY, TOLLGATE_SEED_DEMO: value }).seedDemo).toBe(false);
    expect(loadConfig({ ...KEY, NODE_ENV: 'production', TOLLGATE_SEED_DEMO: value }).seedDemo).toBe(false);
  });

  it.each(['true', 'TRUE', '1', 'yes', 'On'])('TOLLGATE_SEED_DEMO=%j is on, even in production', (value) => {
    expect(loadConfig({ ...KEY, NODE_ENV: 'production', TOLLGATE_SEED_DEMO: value }).seedDemo).toBe(true);
  });

  it('an empty TOLLGATE_SEED_DEMO is unset: on in development, off in production', () => {
    expect(loadConfig({ ...KEY, TOLLGATE_SEED_DEMO: '' }).seedDemo).toBe(true);
    expect(loadConfig({ ...KEY, NODE_ENV: 'production', TOLLGATE_SEED_DEMO: '' }).seedDemo).toBe(false);
    expect(loadConfig({ ...KEY, NODE_ENV: 'production' }).seedDemo).toBe(false);
  });

  it.each([
    ['1', true],
    ['TRUE', true],
    ['yes', true],
    ['on', true],
    ['0', false],
    ['False', false],
    ['', false],
  ])('TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS=%j is %s', (value, expected) => {
    expect(loadConfig({ ...KEY, TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: value }).gateway.allowPrivateNetworks).toBe(expected);
  });

  it.each([
    ['TOLLGATE_SEED_DEMO', 'nope'],
    ['TOLLGATE_SEED_DEMO', 'disabled'],
    ['TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS', 'enabled'],
    ['TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS', '2'],
  ])('refuses %s=%s, naming it', (name, value) => {
    expect(() => loadConfig({ ...KEY, [name]: value })).toThrow(`${name} must be true or false (or 1/0, yes/no, on/off), got "${value}"`);
  });
});

describe('loadConfig checks LOG_LEVEL', () => {
  it.each(['warning', 'verbose', 'WARNING', 'log'])('refuses LOG_LEVEL=%s, naming the setting and the levels it takes', (value) => {
    expect(() => loadConfig({ ...KEY, LOG_LEVEL: value })).toThrow(`LOG_LEVEL must be one of trace, debug, info, warn, error, fatal, silent, got "${value}"`);
  });

  it('reads an empty LOG_LEVEL as unset, and any case of a level', () => {
    expect(loadConfig({ ...KEY, LOG_LEVEL: '' }).logLevel).toBe('info');
    expect(loadConfig({ ...KEY, LOG_LEVEL: ' ', NODE_ENV: 'test' }).logLevel).toBe('silent');
    expect(loadConfig({ ...KEY, LOG_LEVEL: 'WARN' }).logLevel).toBe('warn');
    expect(loadConfig({ ...KEY, LOG_LEVEL: 'silent' }).logLevel).toBe('silent');
  });

  it('gives a level pino takes', () => {
    for (const level of ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent', 'Debug', '']) {
      expect(() => createLogger(loadConfig({ ...KEY, LOG_LEVEL: level }).logLevel)).not.toThrow();
    }
  });
});
