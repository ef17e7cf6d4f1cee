import { describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { uuidv7, walletIdOf } from './ids.ts';
import { isUuid } from './validation.ts';

describe('uuidv7', () => {
  it('is a version-7 UUID carrying the time, strictly increasing within the process', () => {
    const before = Date.now();
    const ids = Array.from({ length: 20_000 }, () => uuidv7());
    expect(ids.every((id) => isUuid(id) && id[14] === '7' && '89ab'.includes(id[19]!))).toBe(true);
    expect(ids.every((id, i) => i === 0 || id > ids[i - 1]!)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(parseInt(ids[0]!.replace(/-/g, '').slice(0, 12), 16)).toBeGreaterThanOrEqual(before);
  });
});

describe('walletIdOf', () => {
  it('is a version-8 UUID fixed by the customer and currency, the same whatever case the customer id is written in', () => {
    const customers = Array.from({ length: 2_000 }, () => randomUUID());
    const ids = customers.flatMap((customer) => [walletIdOf(customer, 'USD'), walletIdOf(customer, 'EUR')]);
    expect(ids.every((id) => isUuid(id) && id[14] === '8' && '89ab'.includes(id[19]!))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(walletIdOf(customers[0]!, 'USD')).toBe(ids[0]);
    expect(walletIdOf(customers[0]!.toUpperCase(), 'USD')).toBe(ids[0]);
  });
});
