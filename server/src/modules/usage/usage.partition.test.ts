import { describe, expect, it } from 'vitest';
import { partitionByCustomer } from './usage.service.ts';

const item = (customerId: string, key: string) => ({ customerId, key });

describe('partitionByCustomer', () => {
  it('keeps each customer in one part, in batch order, and spreads customers over the parts', () => {
    const items = [item('a', '1'), item('b', '2'), item('c', '3'), item('a', '4'), item('d', '5'), item('b', '6'), item('c', '7')];
    const parts = partitionByCustomer(items, 2);
    expect(parts).toHaveLength(2);
    expect(parts.flat()).toHaveLength(items.length);
    for (const part of parts) {
      // batch order within a part
      expect(part.map((i) => items.indexOf(i))).toEqual([...part.map((i) => items.indexOf(i))].sort((x, y) => x - y));
    }
    const partOf = (customer: string) => parts.findIndex((part) => part.some((i) => i.customerId === customer));
    for (const customer of ['a', 'b', 'c', 'd']) {
      expect(parts.filter((part) => part.some((i) => i.customerId === customer))).toHaveLength(1);
    }
    expect(partOf('a')).not.toBe(partOf('b'));
    expect(partOf('a')).toBe(partOf('c'));
  });

  it('does not split a batch where two customers use the same key, or with one customer', () => {
    const shared = [item('a', '1'), item('b', '2'), item('c', '1')];
    expect(partitionByCustomer(shared, 2)).toEqual([shared]);
    const single = [item('a', '1'), item('a', '2')];
    expect(partitionByCustomer(single, 2)).toEqual([single]);
    // The same key twice for one customer stays in one part: the batch answers the repeat itself.
    const repeated = [item('a', '1'), item('b', '2'), item('a', '1')];
    expect(partitionByCustomer(repeated, 2)).toEqual([[repeated[0], repeated[2]], [repeated[1]]]);
  });

  it('never makes more parts than customers', () => {
    expect(partitionByCustomer([item('a', '1'), item('b', '2')], 4)).toHaveLength(2);
  });
});
