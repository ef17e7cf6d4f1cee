import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.ts';

const KEY = { TOLLGATE_MASTER_KEY: '1'.repeat(64) };

describe('loadConfig refuses settings the server could not work with', () => {
  it.each([
    ['TOLLGATE_CUSTOMER_SESSION_MAX_TTL', '30', /from 60/],
    ['TOLLGATE_EXPIRY_INTERVAL_SECONDS', '2147484', /from 1 to 2147483/],
    ['TOLLGATE_WS_KEY_RECHECK_MS', '3000000000', /from 1 to 2147483647/],
    ['TOLLGATE_GATEWAY_TIMEOUT_MS', '2147483648', /from 1 to 2147483647/],
    ['PORT', '70000', /from 1 to 65535/],
    ['TOLLGATE_MAX_BODY_SIZE', '0', /from 1 byte/],
    ['TOLLGATE_MAX_BODY_SIZE', '4096mb', /2 GiB/],
  ])('%s=%s', (name, value, message) => {
    expect(() => loadConfig({ ...KEY, [name]: value })).toThrow(message);
  });

  it('takes the bounds themselves', () => {
    const config = loadConfig({ ...KEY, TOLLGATE_CUSTOMER_SESSION_MAX_TTL: '60', TOLLGATE_EXPIRY_INTERVAL_SECONDS: '2147483', PORT: '65535', TOLLGATE_MAX_BODY_SIZE: '1' });
    expect(config).toMatchObject({ customerSessionMaxTtlSeconds: 60, expiryIntervalMs: 2_147_483_000, port: 65_535, maxBodyBytes: 1 });
  });
});
