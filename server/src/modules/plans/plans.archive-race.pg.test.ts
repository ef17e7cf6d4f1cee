import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';

/**
 * archivePlan against setCustomerPlan at the same moment, on real PostgreSQL (separate connections:
 * PGlite runs one transaction at a time, so there the two cannot overlap).
 */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `during` inside the next plan-assignment transaction, once it has read the plan and before
 * it writes the assignment (when it reads the customer's latest plan change).
 */
function duringNextAssignment(during: () => Promise<void>) {
  const prisma = server.services.db.prisma;
  const transaction = prisma.$transaction.bind(prisma) as (fn: (tx: any) => Promise<unknown>, options?: unknown) => Promise<unknown>;
  const spy = vi.spyOn(prisma, '$transaction').mockImplementationOnce(((fn: (tx: any) => Promise<unknown>, options?: unknown) =>
    transaction(async (tx) => {
      const customerPlan = new Proxy(tx.customerPlan, {
        get: (target, name) =>
          name === 'findFirst'
            ? async (args: unknown) => {
                const latest = await target.findFirst(args);
                await during();
                return latest;
              }
            : Reflect.get(target, name),
      });
      return fn(new Proxy(tx, { get: (target, name) => (name === 'customerPlan' ? customerPlan : Reflect.get(target, name)) }));
    }, options)) as never);
  return spy;
}

describe('archivePlan racing setCustomerPlan', () => {
  it('once archivePlan has answered, no customer is newly put on the plan', async () => {
    const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
    const { services } = server;
    await services.plans.put(merchant.id, { key: 'legacy', name: 'Legacy' });
    const customer = await services.customers.create(merchant.id, { externalId: `u-${randomUUID().slice(0, 8)}` });

    // The assignment has found the plan not archived; the archive runs now, from another connection.
    let archived: Promise<unknown> | null = null;
    let answered = false;
    /** Whether archivePlan had answered before the assignment was written. */
    let archiveAnsweredFirst = false;
    const spy = duringNextAssignment(async () => {
      archived = services.plans.archive(merchant.id, 'legacy').then(() => (answered = true));
      // Long enough for an archive that nothing holds up to answer.
      await Promise.race([archived, sleep(1_000)]);
      archiveAnsweredFirst = answered;
    });
    const assigned = await services.plans.assign(merchant.id, customer.id, 'legacy').then(
      () => true,
      (error: { code?: string }) => error.code,
    );
    spy.mockRestore();
    await archived;

    const history = await services.prisma.customerPlan.findMany({ where: { customerId: customer.id } });
    // Either the assignment came first (and archivePlan waited for it: the customer was on the plan
    // before it was archived, and keeps it), or it saw the archive and was refused.
    if (archiveAnsweredFirst) {
      expect(assigned).toBe('VALIDATION');
      expect(history).toEqual([]);
    } else {
      expect(assigned).toBe(true);
      expect(history).toHaveLength(1);
    }
  });
});
