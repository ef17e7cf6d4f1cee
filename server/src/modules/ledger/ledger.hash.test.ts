import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { requestHash } from './ledger.service.ts';

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/** Stored request hashes decide replay against conflict: the text hashed must never change. */
describe('requestHash', () => {
  it('hashes the JSON of the parts, bigints as their digits', () => {
    expect(requestHash({ op: 'debit', attos: 15n, at: null })).toBe(sha256('{"op":"debit","attos":"15","at":null}'));
    expect(requestHash({ customer: 'c', usage: { inputTokens: 3, nested: [1, '2'] } })).toBe(sha256('{"customer":"c","usage":{"inputTokens":3,"nested":[1,"2"]}}'));
  });
});
