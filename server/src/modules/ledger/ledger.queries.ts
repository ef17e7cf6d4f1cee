import type { CreditGrant, HoldStatus, LedgerEntry, LedgerTransaction, Prisma, PrismaClient, Wallet } from '../../generated/prisma/client.ts';
import type { Database } from '../../shared/db/database.ts';
import { groupBy } from '../../shared/collections.ts';
import { pgArray } from '../../shared/db/arrays.ts';
import { walletIdOf } from '../../shared/ids.ts';
import { invalidField } from '../../shared/errors.ts';
import { createdKeysetPage } from '../../shared/pagination.ts';
import { TickBatcher } from '../../shared/tick-batcher.ts';
import { atOrAfter, earlierThan } from '../../shared/times.ts';
import { isUuid, requireStorableText, requireUuid } from '../../shared/validation.ts';
import { holdRecordOf, type HoldRecord } from './ledger.holds.ts';
import type { LedgerService } from './ledger.service.ts';
import { GRANT_DUE } from './ledger.store.ts';

/** A wallet as read: its cached balance plus what pending holds reserve. */
export interface WalletView extends Wallet {
  held: bigint;
  available: bigint;
  /**
   * The time `held` was counted at: this instance's clock when it was read, or the wallet's last
   * change when that is later. Its holds are listed as of then (see LedgerQueries.walletTime).
   */
  readAt: Date;
}

export interface TransactionFilter {
  kinds?: readonly LedgerTransaction['kind'][] | null;
  createdAfter?: Date | null;
  createdBefore?: Date | null;
  idempotencyKey?: string | null;
  /** Made with this API key (see Actor.apiKeyId). */
  actorApiKeyId?: string | null;
  /** Made by this kind of actor (see Actor.kind). */
  actorKind?: 'api_key' | 'customer' | 'system' | null;
}

export interface IntegrityReport {
  ok: boolean;
  walletsChecked: number;
  transactionsChecked: number;
  violations: string[];
}

function unusedWallet(merchantId: string, customerId: string, currency: string, now: Date): WalletView {
  return {
    id: walletIdOf(customerId, currency),
    merchantId,
    customerId,
    currency,
    balance: 0n,
    fractionCarry: 0n,
    overdraftLimit: 0n,
    overdraftLimitSetAt: null,
    version: 0n,
    createdAt: now,
    updatedAt: now,
    held: 0n,
    available: 0n,
    readAt: now,
  };
}

function holdStatusWhere(statuses: readonly HoldStatus[] | null | undefined, now: Date): Prisma.HoldWhereInput {
  if (!statuses?.length) return {};
  return {
    OR: statuses.map((status): Prisma.HoldWhereInput => {
      if (status === 'PENDING') return { status, expiresAt: { gt: now } };
      if (status === 'EXPIRED') return { OR: [{ status }, { status: 'PENDING', expiresAt: { lte: now } }] };
      return { status };
    }),
  };
}

/** A wallet and its last change, as read with it (WalletView), and when it was read: when its holds are read (see LedgerQueries.walletTime). */
type WalletTime = Pick<WalletView, 'id' | 'updatedAt'> & Partial<Pick<WalletView, 'readAt'>>;

/** A wallet row as LedgerQueries.view reads it: amounts as text (bigint), with its held sum and whether a settle is due. */
interface WalletViewRow {
  id: string;
  merchantId: string;
  customerId: string;
  currency: string;
  balance: string;
  fractionCarry: string;
  overdraftLimit: string;
  overdraftLimitSetAt: Date | null;
  version: string;
  createdAt: Date;
  updatedAt: Date;
  held: string;
  settle_due: boolean;
}

/**
 * Reads over the ledger. Expiry also runs on read, so a wallet never shows credit that
 * has expired even if the schedule has not come round yet.
 */
export class LedgerQueries {
  constructor(
    private readonly db: Database,
    private readonly ledger: LedgerService,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  private get prisma(): PrismaClient {
    return this.db.prisma;
  }

  async wallet(merchantId: string, customerId: string, currency: string): Promise<WalletView> {
    customerId = await this.ledger.assertCustomer(merchantId, customerId);
    const now = this.clock();
    const existing = await this.view(customerId, currency, now);
    // Not used yet: read as empty, under the id its first change will store it with. Writing the
    // row here would let any reader (a customer token) create wallets in every currency code.
    if (!existing) return unusedWallet(merchantId, customerId, currency, now);
    if (!existing.settleDue) return existing.wallet;
    await this.ledger.settleWallet(merchantId, customerId, currency, now);
    const settled = await this.view(customerId, currency, now);
    if (!settled) throw new Error(`wallet ${customerId}/${currency} vanished while it was settled`);
    return settled.wallet;
  }

  async wallets(merchantId: string, customerId: string): Promise<WalletView[]> {
    customerId = await this.ledger.assertCustomer(merchantId, customerId);
    const rows = await this.prisma.wallet.findMany({ where: { merchantId, customerId }, orderBy: { currency: 'asc' } });
    return Promise.all(rows.map((row) => this.wallet(merchantId, customerId, row.currency)));
  }

  /**
   * The wallet and what its pending holds reserve, read in one statement (one snapshot). Read
   * apart, a hold made or ended between the two reads showed in `held` beside the version from
   * before it: one version read as two states, so a client merging a query with balanceUpdated
   * pushes by version could keep the wrong one. `settleDue`: a grant is due to expire, or a hold
   * ran out its time and is still pending (the schedule has not come round); settling the wallet
   * expires them under a new version, so freed credit never shows under the version before it.
   */
  private async view(customerId: string, currency: string, now: Date): Promise<{ wallet: WalletView; settleDue: boolean } | null> {
    const [row] = await this.db.withConnection((connection) =>
      connection.query<WalletViewRow>(
        `SELECT w.id, w.merchant_id AS "merchantId", w.customer_id AS "customerId", w.currency, w.balance::text AS balance,
           w.fraction_carry::text AS "fractionCarry", w.overdraft_limit::text AS "overdraftLimit", w.overdraft_limit_set_at AS "overdraftLimitSetAt",
           w.version::text AS version, w.created_at AS "createdAt", w.updated_at AS "updatedAt",
           (SELECT coalesce(sum(h.amount - h.captured_amount), 0) FROM holds h WHERE h.wallet_id = w.id AND h.status = 'PENDING' AND h.expires_at > t.now)::text AS held,
           EXISTS (SELECT FROM credit_grants g WHERE g.wallet_id = w.id AND ${GRANT_DUE('g', 't.now')})
             OR EXISTS (SELECT FROM holds h WHERE h.wallet_id = w.id AND h.status = 'PENDING' AND h.expires_at <= t.now) AS settle_due
         -- At the wallet's time when its last change is dated later (see LedgerStore.withWallets): a
         -- hold whose credit that change spent, as run out, is not shown reserving it again.
         FROM wallets w CROSS JOIN LATERAL (SELECT greatest($3::timestamptz, w.updated_at) AS now) t WHERE w.customer_id = $1 AND w.currency = $2`,
        [customerId, currency, now],
      ),
    );
    if (!row) return null;
    const wallet: Wallet = {
      id: row.id, merchantId: row.merchantId, customerId: row.customerId, currency: row.currency,
      balance: BigInt(row.balance), fractionCarry: BigInt(row.fractionCarry), overdraftLimit: BigInt(row.overdraftLimit), overdraftLimitSetAt: row.overdraftLimitSetAt,
      version: BigInt(row.version), createdAt: row.createdAt, updatedAt: row.updatedAt,
    };
    const held = BigInt(row.held);
    // As the statement counted `held` (t.now).
    const readAt = wallet.updatedAt > now ? wallet.updatedAt : now;
    return { wallet: { ...wallet, held, available: wallet.balance - held, readAt }, settleDue: row.settle_due };
  }

  /** One page of a wallet's grants, oldest first: the live ones, or all it ever had. */
  async grantsPage(walletId: string, includeInactive: boolean, page: { before?: string; after?: string; limit: number; inverted: boolean }): Promise<CreditGrant[]> {
    const keyset = createdKeysetPage(page, 'createdAt', true);
    return this.prisma.creditGrant.findMany({ where: { AND: [this.grantsWhere(walletId, includeInactive), keyset.where] }, orderBy: keyset.orderBy, take: page.limit });
  }

  async countGrants(walletId: string, includeInactive: boolean): Promise<number> {
    return this.prisma.creditGrant.count({ where: this.grantsWhere(walletId, includeInactive) });
  }

  private grantsWhere(walletId: string, includeInactive: boolean): Prisma.CreditGrantWhereInput {
    return { walletId, ...(includeInactive ? {} : { expiredAt: null, remaining: { gt: 0 } }) };
  }

  /**
   * One page of a wallet's holds, newest first, of the given statuses as callers see them: a
   * pending hold past its time is EXPIRED, whether or not the schedule has marked it yet.
   */
  async holdsPage(merchantId: string, wallet: WalletTime, statuses: readonly HoldStatus[] | null | undefined, page: { before?: string; after?: string; limit: number; inverted: boolean }): Promise<HoldRecord[]> {
    const walletId = wallet.id;
    const now = this.walletTime(wallet);
    const keyset = createdKeysetPage(page);
    const rows = await this.prisma.hold.findMany({ where: { AND: [{ merchantId, walletId }, holdStatusWhere(statuses, now), keyset.where] }, orderBy: keyset.orderBy, take: page.limit });
    return rows.map((row) => holdRecordOf(row, now));
  }

  async countHolds(merchantId: string, wallet: WalletTime, statuses: readonly HoldStatus[] | null | undefined): Promise<number> {
    return this.prisma.hold.count({ where: { AND: [{ merchantId, walletId: wallet.id }, holdStatusWhere(statuses, this.walletTime(wallet))] } });
  }

  /**
   * The time a wallet's holds are read at: this instance's, or the wallet's last change (as read
   * with it) when that is later, as `view` counts `held` and every write judges holds (see
   * LedgerStore.withWallets). A hold another instance has already treated as run out is never
   * listed as pending here. A wallet `view` read is read at the time its `held` was counted at,
   * not the clock's again: a hold running out between the two reads was listed EXPIRED beside a
   * `held` that counted it, so the pending holds listed did not add up to `held`.
   */
  private walletTime(wallet: WalletTime): Date {
    if (wallet.readAt) return wallet.readAt;
    const now = this.clock();
    return wallet.updatedAt > now ? wallet.updatedAt : now;
  }

  async transactionsPage(
    merchantId: string,
    scope: { walletId?: string; customerId?: string },
    filter: TransactionFilter | null | undefined,
    page: { before?: string; after?: string; limit: number; inverted: boolean },
  ): Promise<LedgerTransaction[]> {
    const keyset = createdKeysetPage(page);
    return this.prisma.ledgerTransaction.findMany({
      where: { AND: [{ merchantId, ...scope }, this.filterWhere(filter), keyset.where] },
      orderBy: keyset.orderBy,
      take: page.limit,
    });
  }

  async countTransactions(merchantId: string, scope: { walletId?: string; customerId?: string }, filter: TransactionFilter | null | undefined): Promise<number> {
    return this.prisma.ledgerTransaction.count({ where: { AND: [{ merchantId, ...scope }, this.filterWhere(filter)] } });
  }

  private filterWhere(filter: TransactionFilter | null | undefined): Prisma.LedgerTransactionWhereInput {
    const where: Prisma.LedgerTransactionWhereInput[] = [];
    if (filter?.kinds?.length) where.push({ kind: { in: [...filter.kinds] } });
    if (filter?.createdAfter) where.push({ createdAt: atOrAfter(filter.createdAfter) });
    if (filter?.createdBefore) where.push({ createdAt: earlierThan(filter.createdBefore) });
    // Trimmed as the ledger trims a key before storing it, so the key as its caller sent it finds it.
    const idempotencyKey = filter?.idempotencyKey?.trim();
    // A blank key names no transaction (none is stored blank): refused, rather than read as no filter and answered with every transaction.
    if (idempotencyKey === '') throw invalidField('filter.idempotencyKey', 'must not be blank (leave it out to list every transaction)');
    if (idempotencyKey) {
      // PostgreSQL refuses a NUL in text: an internal error unless refused here.
      requireStorableText('filter.idempotencyKey', idempotencyKey);
      where.push({ idempotencyKey });
    }
    // Checked here: Prisma fails a non-UUID id as an internal error.
    if (filter?.actorApiKeyId != null) where.push({ actorApiKeyId: requireUuid('filter.actorApiKeyId', filter.actorApiKeyId) });
    if (filter?.actorKind) where.push({ actorKind: filter.actorKind });
    return { AND: where };
  }

  /**
   * A transaction's legs, from ledger_entries or from its own row (the ledger_legs view). The legs
   * of every transaction asked for in one tick are read in one query: a page of 100 transactions
   * with their entries costs one round trip, not 100.
   */
  entries(merchantId: string, transactionId: string): Promise<LedgerEntry[]> {
    return this.entryBatches.load(`${merchantId.toLowerCase()}:${transactionId.toLowerCase()}`);
  }

  private readonly entryBatches = new TickBatcher<string, LedgerEntry[]>(async (keys) => {
    const found = new Map<string, LedgerEntry[]>();
    for (const [merchantId, merchantKeys] of groupBy(keys, (key) => key.split(':')[0]!)) {
      // Not a UUID: no transaction's (and the cast would fail every load batched with it).
      const transactionIds = merchantKeys.map((key) => key.split(':')[1]!).filter(isUuid);
      if (!isUuid(merchantId) || transactionIds.length === 0) continue;
      const rows = await this.db.withConnection((connection) =>
        connection.query<Omit<LedgerEntry, 'amount'> & { amount: string }>(
          `SELECT transaction_id AS "transactionId", leg, merchant_id AS "merchantId", wallet_id AS "walletId", account_id AS "accountId",
             grant_id AS "grantId", currency, amount::text AS amount, created_at AS "createdAt"
           FROM ledger_legs l WHERE merchant_id = $1 AND transaction_id = ANY($2::uuid[])
           ORDER BY l.transaction_id, l.amount, leg`, // the number, not the text column named amount
          [merchantId, pgArray(transactionIds)],
        ),
      );
      for (const row of rows) {
        const key = `${merchantId}:${row.transactionId}`;
        const legs = found.get(key) ?? [];
        legs.push({ ...row, amount: BigInt(row.amount) });
        found.set(key, legs);
      }
    }
    return found;
  }, []);

  /**
   * Proves the books balance: every transaction sums to zero, each transaction's amount is
   * its wallet legs, every cached wallet balance and grant remainder equals the sum of its
   * entries, and grants hold exactly the positive part of the balance.
   */
  async integrity(merchantId: string): Promise<IntegrityReport> {
    const violations: string[] = [];
    const rows = <T>(sql: string) => this.db.withConnection((c) => c.query<T>(sql, [merchantId]));
    for (const row of await rows<{ id: string; total: string }>(
      `SELECT transaction_id AS id, sum(amount)::text AS total FROM ledger_legs WHERE merchant_id = $1 GROUP BY transaction_id HAVING sum(amount) <> 0`,
    )) violations.push(`transaction ${row.id} entries sum to ${row.total}, not 0`);
    for (const row of await rows<{ id: string; amount: string; legs: string }>(
      `SELECT t.id, t.amount::text AS amount, coalesce(sum(e.amount), 0)::text AS legs FROM ledger_transactions t
       LEFT JOIN ledger_legs e ON e.transaction_id = t.id AND e.wallet_id IS NOT NULL
       WHERE t.merchant_id = $1 GROUP BY t.id, t.amount HAVING t.amount <> coalesce(sum(e.amount), 0)`,
    )) violations.push(`transaction ${row.id} amount ${row.amount} but its wallet entries sum to ${row.legs}`);
    for (const row of await rows<{ id: string }>(
      `SELECT t.id FROM ledger_transactions t WHERE t.merchant_id = $1 AND t.counter_account_id IS NOT NULL
         AND EXISTS (SELECT FROM ledger_entries e WHERE e.transaction_id = t.id)`,
    )) violations.push(`transaction ${row.id} keeps its two legs on its row but also has entries`);
    // Entries carry no foreign keys (see schema.prisma): prove here that each one resolves.
    for (const row of await rows<{ id: string; problem: string }>(
      `SELECT e.transaction_id || ':' || e.leg AS id, CASE
           WHEN t.id IS NULL THEN 'names a transaction that does not exist'
           WHEN t.merchant_id <> e.merchant_id THEN 'belongs to another merchant than its transaction'
           WHEN (e.wallet_id IS NULL) = (e.account_id IS NULL) THEN 'must name exactly one of a wallet or an account'
           WHEN e.wallet_id IS NOT NULL AND (w.id IS NULL OR w.id <> t.wallet_id) THEN 'names a wallet other than its transaction''s'
           WHEN e.account_id IS NOT NULL AND (a.id IS NULL OR a.merchant_id <> e.merchant_id) THEN 'names a counter-account that does not exist'
           WHEN e.grant_id IS NOT NULL AND (g.id IS NULL OR g.wallet_id <> e.wallet_id) THEN 'names a grant its wallet does not hold'
         END AS problem
       FROM ledger_legs e
       LEFT JOIN ledger_transactions t ON t.id = e.transaction_id
       LEFT JOIN wallets w ON w.id = e.wallet_id
       LEFT JOIN ledger_accounts a ON a.id = e.account_id
       LEFT JOIN credit_grants g ON g.id = e.grant_id
       WHERE e.merchant_id = $1 AND (t.id IS NULL OR t.merchant_id <> e.merchant_id OR (e.wallet_id IS NULL) = (e.account_id IS NULL)
         OR (e.wallet_id IS NOT NULL AND (w.id IS NULL OR w.id <> t.wallet_id))
         OR (e.account_id IS NOT NULL AND (a.id IS NULL OR a.merchant_id <> e.merchant_id))
         OR (e.grant_id IS NOT NULL AND (g.id IS NULL OR g.wallet_id <> e.wallet_id)))`,
    )) violations.push(`entry ${row.id} ${row.problem}`);
    // The sums below read only this merchant's wallets' legs, found by wallet (not by the legs'
    // merchant_id, so that a leg whose merchant was tampered with still counts in its wallet's sum).
    for (const row of await rows<{ id: string; balance: string; entries: string }>(
      `SELECT w.id, w.balance::text AS balance, coalesce(e.total, 0)::text AS entries FROM wallets w
       CROSS JOIN LATERAL (SELECT sum(amount) AS total FROM ledger_legs WHERE wallet_id = w.id) e
       WHERE w.merchant_id = $1 AND w.balance <> coalesce(e.total, 0)`,
    )) violations.push(`wallet ${row.id} caches balance ${row.balance} but its entries sum to ${row.entries}`);
    // A grant's legs are its wallet's (a leg naming a grant its wallet does not hold is reported above).
    for (const row of await rows<{ id: string; remaining: string; entries: string }>(
      `SELECT g.id, g.remaining::text AS remaining, coalesce(e.total, 0)::text AS entries FROM credit_grants g
       LEFT JOIN (SELECT l.grant_id, sum(l.amount) AS total FROM wallets w
         CROSS JOIN LATERAL (SELECT grant_id, amount FROM ledger_legs WHERE wallet_id = w.id AND grant_id IS NOT NULL) l
         WHERE w.merchant_id = $1 GROUP BY l.grant_id) e ON e.grant_id = g.id
       WHERE g.merchant_id = $1 AND g.remaining <> coalesce(e.total, 0)`,
    )) violations.push(`grant ${row.id} caches remaining ${row.remaining} but its entries sum to ${row.entries}`);
    // Credit kept for pending holds is in the balance beside what the wallet owes (see creditLegs).
    for (const row of await rows<{ id: string; balance: string; grants: string; kept: string }>(
      `SELECT w.id, w.balance::text AS balance, coalesce(g.own, 0)::text AS grants, coalesce(g.kept, 0)::text AS kept FROM wallets w
       CROSS JOIN LATERAL (SELECT sum(remaining) FILTER (WHERE hold_id IS NULL) AS own, sum(remaining) FILTER (WHERE hold_id IS NOT NULL) AS kept
         FROM credit_grants WHERE wallet_id = w.id AND expired_at IS NULL) g
       WHERE w.merchant_id = $1 AND greatest(w.balance - coalesce(g.kept, 0), 0) <> coalesce(g.own, 0)`,
    )) violations.push(`wallet ${row.id} balance ${row.balance} but its grants hold ${row.grants}${row.kept === '0' ? '' : ` (and ${row.kept} kept for holds)`}`);
    for (const row of await rows<{ id: string }>(
      `SELECT id FROM credit_grants WHERE merchant_id = $1 AND (remaining < 0 OR remaining > amount)`,
    )) violations.push(`grant ${row.id} remaining is outside 0..amount`);
    // Each debit against the limit in force when it was posted. Only the latest limit is kept, so
    // debits before it was set are not judged by it (lowering a limit below a debt is allowed);
    // adjustments may go below any limit. setOverdraftLimit dates the limit after every transaction
    // the wallet had (under its lock), so a debit it saw is never judged by it: no false report,
    // whatever the clocks. What this cannot catch: a debit posted after the change but dated
    // before it (stamped before it waited for the lock, a clock behind, or one that stood still
    // within the millisecond the change was moved past), and any debit past a limit since
    // replaced. Debits are refused past the limit when posted, under the lock; this rechecks
    // the rows as stored.
    for (const row of await rows<{ id: string }>(
      `SELECT w.id FROM wallets w WHERE w.merchant_id = $1 AND EXISTS (
         SELECT 1 FROM ledger_transactions t
         WHERE t.wallet_id = w.id AND t.amount < 0 AND t.kind <> 'ADJUSTMENT' AND t.balance_after < -w.overdraft_limit
           AND t.created_at >= coalesce(w.overdraft_limit_set_at, '-infinity')
           -- Only a debit that made the wallet owe (a leg naming no grant): credit kept for a hold
           -- leaving a wallet that owes beside it (its capture, its expiry) adds no debt.
           AND EXISTS (SELECT FROM ledger_legs l WHERE l.transaction_id = t.id AND l.wallet_id IS NOT NULL AND l.grant_id IS NULL AND l.amount < 0)
           -- A capture is held to the limit its hold was placed under (kept in the hold), when higher.
           AND NOT (t.kind = 'HOLD_CAPTURE' AND EXISTS (SELECT FROM holds h WHERE h.capture_transaction_id = t.id
             AND t.balance_after >= -(CASE WHEN h.metadata->>'overdraftLimit' ~ '^[0-9]{1,19}$' THEN (h.metadata->>'overdraftLimit')::numeric END))))`,
    )) violations.push(`wallet ${row.id} was debited past its overdraft limit`);
    const [counts] = await rows<{ wallets: string; transactions: string }>(
      `SELECT (SELECT count(*) FROM wallets WHERE merchant_id = $1)::text AS wallets, (SELECT count(*) FROM ledger_transactions WHERE merchant_id = $1)::text AS transactions`,
    );
    return { ok: violations.length === 0, walletsChecked: Number(counts?.wallets ?? 0), transactionsChecked: Number(counts?.transactions ?? 0), violations };
  }
}
