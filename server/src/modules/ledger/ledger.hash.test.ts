import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { debitRequestHash, legacyDebitRequestHash, requestHash } from './ledger.service.ts';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Stored request hashes decide replay against conflict: the text hashed must never change. */
describe('requestHash', () => {
  it('hashes the JSON of the parts, bigints as their digits', () => {
    expect(requestHash({ op: 'debit', attos: 15n, at: null })).toBe(sha256('{"op":"debit","attos":"15","at":null}'));
    expect(requestHash({ customer: 'c', usage: { inputTokens: 3, nested: [1, '2'] } })).toBe(sha256('{"customer":"c","usage":{"inputTokens":3,"nested":[1,"2"]}}'));
  });
});

describe('debitRequestHash', () => {
  const debit = { customerId: 'C', currency: 'USD', amountAttos: 15n, idempotencyKey: 'k' };

  it('hashes amount, description, metadata with its keys sorted, and sourceRef; absent fields as null, absent metadata as {}', () => {
    const full = { ...debit, description: 'd', metadata: { b: { y: 1, x: [2] }, a: null }, sourceRef: 's' };
    expect(debitRequestHash('c', full)).toBe(sha256('{"op":"debit","customerId":"c","currency":"USD","attos":"15","description":"d","metadata":{"a":null,"b":{"x":[2],"y":1}},"sourceRef":"s"}'));
    const bare = sha256('{"op":"debit","customerId":"c","currency":"USD","attos":"15","description":null,"metadata":{},"sourceRef":null}');
    expect(debitRequestHash('c', debit)).toBe(bare);
    expect(debitRequestHash('c', { ...debit, description: null, metadata: null, sourceRef: null })).toBe(bare);
    expect(debitRequestHash('c', { ...debit, metadata: {} })).toBe(bare);
  });

  it('keeps the earlier text, without description, metadata or sourceRef, for keys recorded before', () => {
    expect(legacyDebitRequestHash('c', { ...debit, description: 'd', metadata: { a: 1 }, sourceRef: 's' })).toBe(sha256('{"op":"debit","customerId":"c","currency":"USD","attos":"15"}'));
  });
});
