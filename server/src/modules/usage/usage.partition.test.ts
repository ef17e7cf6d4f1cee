import { describe, expect, it } from 'vitest';
import { laneOf } from '../../shared/lanes.ts';
import { partitionByCustomer } from './usage.service.ts';

const item = (customerId: string, key: string) => ({ customerId, key });
const customers = Array.from({ length: 12 }, (_v, i) => `customer-${i}`);

describe('partitionByCustomer', () => {
  it("puts each customer's items in its lane, in batch order, and spreads customers over the lanes", () => {
    const items = Array.from({ length: 60 }, (_v, i) => item(customers[(i * 7) % customers.length]!, `k${i}`));
    const { parts, repeats } = partitionByCustomer(items, 2);
    expect(repeats).toEqual([]);
    expect([...parts.values()].flat()).toHaveLength(items.length);
    expect(parts.size).toBe(new Set(customers.map((customer) => laneOf(customer, 2))).size);
    for (const [lane, part] of parts) {
      expect(part.every((i) => laneOf(i.customerId, 2) === lane)).toBe(true);
      const positions = part.map((i) => items.indexOf(i));
      expect(positions).toEqual([...positions].sort((x, y) => x - y));
    }
    // The same customer lands in the same lane in every batch, so its events keep their order.
    const again = partitionByCustomer([...items].reverse(), 2);
    for (const customer of customers) {
      const laneIn = (ps: Map<number, { customerId: string }[]>) => [...ps].find(([, part]) => part.some((i) => i.customerId === customer))?.[0];
      expect(laneIn(again.parts)).toBe(laneIn(parts));
    }
  });

  it('keeps a key another customer used earlier out of the lanes, paired with its first use', () => {
    const [a, b, c] = customers as [string, string, string];
    const shared = [item(a, '1'), item(b, '2'), item(c, '1'), item(b, '1')];
    const { parts, repeats } = partitionByCustomer(shared, 2);
    expect(repeats).toEqual([[shared[2], shared[0]], [shared[3], shared[0]]]);
    expect([...parts.values()].flat().sort((x, y) => shared.indexOf(x) - shared.indexOf(y))).toEqual([shared[0], shared[1]]);
    // The same key twice for one customer stays in its lane: the batch answers the repeat itself.
    const repeated = [item(a, '1'), item(b, '2'), item(a, '1')];
    const own = partitionByCustomer(repeated, 2);
    expect(own.repeats).toEqual([]);
    expect(own.parts.get(laneOf(a, 2))).toEqual(expect.arrayContaining([repeated[0], repeated[2]]));
  });

  it('uses one lane when asked for one', () => {
    const items = customers.map((customer, i) => item(customer, `k${i}`));
    expect([...partitionByCustomer(items, 1).parts]).toEqual([[0, items]]);
  });
});
