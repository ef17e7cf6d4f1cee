import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decryptSecret, deriveKey, encryptSecret, safeEqual } from './crypto.ts';

describe('secret encryption at rest', () => {
  const key = deriveKey(randomBytes(32), 'provider-keys');

  it('round-trips, and never stores the plaintext', () => {
    const sealed = encryptSecret(key, 'sk-proj-very-secret');
    expect(sealed).not.toContain('very-secret');
    expect(decryptSecret(key, sealed)).toBe('sk-proj-very-secret');
    expect(encryptSecret(key, 'same')).not.toBe(encryptSecret(key, 'same'));
  });

  it('refuses a tampered ciphertext or the wrong key', () => {
    const sealed = encryptSecret(key, 'secret');
    const parts = sealed.split('.');
    const body = Buffer.from(parts[3]!, 'base64url');
    body[0]! ^= 1;
    const tampered = [...parts.slice(0, 3), body.toString('base64url')].join('.');
    expect(() => decryptSecret(key, tampered)).toThrow();
    expect(() => decryptSecret(deriveKey(randomBytes(32), 'provider-keys'), sealed)).toThrow();
  });

  it('derives different keys for different purposes', () => {
    const master = randomBytes(32);
    expect(deriveKey(master, 'a').equals(deriveKey(master, 'b'))).toBe(false);
    expect(deriveKey(master, 'a').equals(deriveKey(master, 'a'))).toBe(true);
  });

  it('compares in constant time without throwing on different lengths', () => {
    expect(safeEqual('abc', 'abc')).toBe(true);
    expect(safeEqual('abc', 'abd')).toBe(false);
    expect(safeEqual('abc', 'abcd')).toBe(false);
  });
});
