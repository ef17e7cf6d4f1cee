import type { Prisma, PrismaClient } from '../../generated/prisma/client.ts';

/**
 * A Prisma interactive transaction that several services write through (their write methods take
 * it as an optional last argument), with what to do once it has committed.
 *
 * Everything inside must go through `client`, never the outer PrismaClient: on PGlite the
 * transaction holds the one connection, so a query on the outer client would wait for it forever;
 * on PostgreSQL it would run on another connection, outside the transaction.
 */
export interface PrismaTransaction {
  readonly client: Prisma.TransactionClient;
  /** Runs `effect` once the transaction has committed; never when it rolls back. */
  afterCommit(effect: () => void): void;
}

/**
 * Runs `work` in one interactive transaction: it commits when `work` resolves and rolls back,
 * rethrowing, when it throws. Effects registered with afterCommit run after the commit, in order.
 */
export async function inPrismaTransaction<T>(prisma: PrismaClient, work: (tx: PrismaTransaction) => Promise<T>, options: { timeout?: number } = {}): Promise<T> {
  const effects: (() => void)[] = [];
  const result = await prisma.$transaction((client) => work({ client, afterCommit: (effect) => void effects.push(effect) }), { timeout: options.timeout ?? 5_000 });
  for (const effect of effects) effect();
  return result;
}

/**
 * For a write that may run inside a transaction: `effect` (dropping a cached read, say) runs
 * after the commit when there is one, else now. A cache cleared before the commit could be
 * refilled from the rows the transaction is about to replace.
 */
export function whenCommitted(tx: PrismaTransaction | undefined, effect: () => void): void {
  if (tx) tx.afterCommit(effect);
  else effect();
}

/**
 * Serializes, until `tx` ends, the transactions of one merchant that take this lock for `scope`,
 * on every instance (a PostgreSQL advisory lock): for a check that reads rows and then writes
 * depending on what it found, which two writers running side by side would each pass.
 */
export async function lockMerchantScope(tx: PrismaTransaction, scope: string, merchantId: string): Promise<void> {
  await tx.client.$queryRaw`SELECT 1 AS locked FROM pg_advisory_xact_lock(hashtextextended(${`tollgate:${scope}:${merchantId}`}, 0))`;
}
