import { randomUUID } from 'node:crypto';
import type { Database, SqlExecutor } from '../../shared/db/database.ts';
import { sortGrants, type ConsumptionKey, type GrantKind, type WalletLeg, type WalletState } from './ledger.planner.ts';

/**
 * The ledger's SQL. Every change to a wallet happens inside `withWallet`, which holds the
 * wallet's row lock (SELECT … FOR UPDATE) for the whole transaction: writers on every
 * instance are serialized per wallet, readers are never blocked, and nothing can overdraw.
 * Writes are collected and flushed as a few set-based statements before COMMIT, so a batch
 * of hundreds of debits costs about as many round trips as one.
 */
export type AccountKind = 'USAGE_REVENUE' | 'PAYMENT_CLEARING' | 'PROMOTIONAL' | 'PLAN_CREDITS' | 'ADJUSTMENTS' | 'EXPIRED_CREDITS';
export type TransactionKind = 'USAGE' | 'GRANT' | 'ADJUSTMENT' | 'REFUND' | 'EXPIRY' | 'HOLD_CAPTURE';

export interface Actor {
  kind: 'api_key' | 'customer' | 'system';
  apiKeyId: string | null;
}

export const SYSTEM_ACTOR: Actor = { kind: 'system', apiKeyId: null };

export interface PostedTransaction {
  id: string;
  kind: TransactionKind;
  walletId: string;
  customerId: string;
  currency: string;
  amount: bigint;
  balanceAfter: bigint;
  idempotencyKey: string;
  requestHash: string;
  createdAt: Date;
}

export interface NewTransaction {
  kind: TransactionKind;
  idempotencyKey: string;
  requestHash: string;
  /** Wallet legs (their sum is the wallet's change); the counter-account takes the negation. */
  legs: WalletLeg[];
  counterAccount: AccountKind;
  description?: string | null;
  reason?: string | null;
  metadata?: Record<string, unknown> | null;
  sourceRef?: string | null;
  occurredAt?: Date | null;
  actor: Actor;
}

export interface NewGrant {
  id: string;
  kind: GrantKind;
  amount: bigint;
  remaining: bigint;
  priority: number;
  expiresAt: Date | null;
  transactionId: string;
  description: string | null;
  metadata: Record<string, unknown>;
}

interface TransactionRow {
  id: string;
  kind: TransactionKind;
  wallet_id: string;
  customer_id: string;
  currency: string;
  amount: string;
  balance_after: string;
  idempotency_key: string;
  request_hash: string;
  created_at: Date;
}

export function toPosted(row: TransactionRow): PostedTransaction {
  return {
    id: row.id,
    kind: row.kind,
    walletId: row.wallet_id,
    customerId: row.customer_id,
    currency: row.currency,
    amount: BigInt(row.amount),
    balanceAfter: BigInt(row.balance_after),
    idempotencyKey: row.idempotency_key,
    requestHash: row.request_hash,
    createdAt: new Date(row.created_at),
  };
}

const TRANSACTION_COLUMNS = `id, kind::text AS kind, wallet_id, customer_id, currency, amount::text AS amount,
  balance_after::text AS balance_after, idempotency_key, request_hash, created_at`;

/** One locked wallet inside one database transaction. */
export class WalletTransaction {
  readonly posted: PostedTransaction[] = [];
  private readonly entries: { id: string; transactionId: string; walletId: string | null; accountId: string | null; grantId: string | null; amount: bigint }[] = [];
  private readonly newGrants: NewGrant[] = [];
  private readonly touchedGrants = new Set<string>();
  private readonly expiredGrants = new Set<string>();
  /** Remaining of grants taken out of the state (expired) is zero by construction. */
  private remainingOf(grantId: string): bigint {
    return this.state.grants.find((grant) => grant.id === grantId)?.remaining ?? 0n;
  }

  constructor(
    readonly tx: SqlExecutor,
    readonly merchantId: string,
    readonly customerId: string,
    readonly currency: string,
    readonly state: WalletState,
    readonly now: Date,
    private readonly accountId: (kind: AccountKind) => Promise<string>,
    private readonly consumptionOrder: readonly ConsumptionKey[],
  ) {}

  /** Transactions already recorded under these idempotency keys (by any wallet of the merchant). */
  async existing(keys: readonly string[]): Promise<Map<string, PostedTransaction>> {
    if (keys.length === 0) return new Map();
    const rows = await this.tx.query<TransactionRow>(
      `SELECT ${TRANSACTION_COLUMNS} FROM ledger_transactions WHERE merchant_id = $1 AND idempotency_key = ANY($2::text[])`,
      [this.merchantId, keys],
    );
    return new Map(rows.map((row) => [row.idempotency_key, toPosted(row)]));
  }

  /**
   * Records a transaction and applies its legs to the in-memory state: the balance moves by
   * their sum, and each grant by its own legs (so a grant's remaining always equals the sum
   * of the entries that name it).
   */
  async post(txn: NewTransaction): Promise<PostedTransaction> {
    const id = randomUUID();
    const walletChange = txn.legs.reduce((sum, leg) => sum + leg.amount, 0n);
    this.state.balance += walletChange;
    for (const leg of txn.legs) {
      if (leg.amount === 0n) continue;
      this.entries.push({ id: randomUUID(), transactionId: id, walletId: this.state.id, accountId: null, grantId: leg.grantId, amount: leg.amount });
      if (leg.grantId) {
        const grant = this.state.grants.find((candidate) => candidate.id === leg.grantId);
        if (!grant) throw new Error(`ledger leg names grant ${leg.grantId}, which this wallet does not hold`);
        grant.remaining += leg.amount;
        this.touchedGrants.add(grant.id);
      }
    }
    if (walletChange !== 0n) {
      this.entries.push({ id: randomUUID(), transactionId: id, walletId: null, accountId: await this.accountId(txn.counterAccount), grantId: null, amount: -walletChange });
    }
    const posted: PostedTransaction = {
      id,
      kind: txn.kind,
      walletId: this.state.id,
      customerId: this.customerId,
      currency: this.currency,
      amount: walletChange,
      balanceAfter: this.state.balance,
      idempotencyKey: txn.idempotencyKey,
      requestHash: txn.requestHash,
      createdAt: this.now,
    };
    this.pending.push({ posted, txn });
    this.posted.push(posted);
    return posted;
  }

  private readonly pending: { posted: PostedTransaction; txn: NewTransaction }[] = [];

  /** Adds an empty grant; the transaction that funds it posts a leg naming it. */
  addGrant(grant: Omit<NewGrant, 'remaining'>): void {
    this.newGrants.push({ ...grant, remaining: 0n });
    this.state.grants = sortGrants(
      [...this.state.grants, { id: grant.id, kind: grant.kind, remaining: 0n, priority: grant.priority, expiresAt: grant.expiresAt, createdAt: this.now }],
      this.consumptionOrder,
    );
  }

  /** Takes a grant out of use; its remaining must already have been posted away. */
  markExpired(grantId: string): void {
    this.expiredGrants.add(grantId);
    this.touchedGrants.add(grantId);
    this.state.grants = this.state.grants.filter((candidate) => candidate.id !== grantId);
  }

  linkGrantTransaction(grantId: string, transactionId: string): void {
    const grant = this.newGrants.find((candidate) => candidate.id === grantId);
    if (grant) grant.transactionId = transactionId;
  }

  setCarry(carry: bigint): void {
    this.state.carry = carry;
  }

  /** Writes everything collected, in a fixed number of statements. */
  async flush(): Promise<void> {
    const { tx } = this;
    if (this.pending.length > 0) {
      const rows = this.pending;
      await tx.query(
        `INSERT INTO ledger_transactions (id, merchant_id, wallet_id, customer_id, currency, kind, amount, balance_after,
           idempotency_key, request_hash, description, reason, metadata, actor_api_key_id, actor_kind, source_ref, occurred_at, created_at)
         SELECT u.id, $1, $2, $3, $4, u.kind::"LedgerTransactionKind", u.amount, u.balance_after, u.idempotency_key, u.request_hash,
           u.description, u.reason, u.metadata, u.actor_api_key_id, u.actor_kind, u.source_ref, u.occurred_at, $5
         FROM unnest($6::uuid[], $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[],
           $14::jsonb[], $15::uuid[], $16::text[], $17::text[], $18::timestamptz[])
           AS u(id, kind, amount, balance_after, idempotency_key, request_hash, description, reason, metadata, actor_api_key_id, actor_kind, source_ref, occurred_at)`,
        [
          this.merchantId,
          this.state.id,
          this.customerId,
          this.currency,
          this.now,
          rows.map((row) => row.posted.id),
          rows.map((row) => row.txn.kind),
          rows.map((row) => row.posted.amount.toString()),
          rows.map((row) => row.posted.balanceAfter.toString()),
          rows.map((row) => row.txn.idempotencyKey),
          rows.map((row) => row.txn.requestHash),
          rows.map((row) => row.txn.description ?? null),
          rows.map((row) => row.txn.reason ?? null),
          rows.map((row) => JSON.stringify(row.txn.metadata ?? {})),
          rows.map((row) => row.txn.actor.apiKeyId),
          rows.map((row) => row.txn.actor.kind),
          rows.map((row) => row.txn.sourceRef ?? null),
          rows.map((row) => row.txn.occurredAt ?? this.now),
        ],
      );
    }
    if (this.newGrants.length > 0) {
      const grants = this.newGrants;
      await tx.query(
        `INSERT INTO credit_grants (id, merchant_id, wallet_id, customer_id, currency, kind, amount, remaining, priority, expires_at,
           transaction_id, description, metadata, created_at)
         SELECT u.id, $1, $2, $3, $4, u.kind::"CreditGrantKind", u.amount, u.remaining, u.priority, u.expires_at, u.transaction_id,
           u.description, u.metadata, $5
         FROM unnest($6::uuid[], $7::text[], $8::bigint[], $9::bigint[], $10::int[], $11::timestamptz[], $12::uuid[], $13::text[], $14::jsonb[])
           AS u(id, kind, amount, remaining, priority, expires_at, transaction_id, description, metadata)`,
        [
          this.merchantId,
          this.state.id,
          this.customerId,
          this.currency,
          this.now,
          grants.map((grant) => grant.id),
          grants.map((grant) => grant.kind),
          grants.map((grant) => grant.amount.toString()),
          grants.map((grant) => this.remainingOf(grant.id).toString()),
          grants.map((grant) => grant.priority),
          grants.map((grant) => grant.expiresAt),
          grants.map((grant) => grant.transactionId),
          grants.map((grant) => grant.description),
          grants.map((grant) => JSON.stringify(grant.metadata)),
        ],
      );
    }
    if (this.entries.length > 0) {
      const entries = this.entries;
      await tx.query(
        `INSERT INTO ledger_entries (id, transaction_id, merchant_id, wallet_id, account_id, grant_id, currency, amount, created_at)
         SELECT u.id, u.transaction_id, $1, u.wallet_id, u.account_id, u.grant_id, $2, u.amount, $3
         FROM unnest($4::uuid[], $5::uuid[], $6::uuid[], $7::uuid[], $8::uuid[], $9::bigint[])
           AS u(id, transaction_id, wallet_id, account_id, grant_id, amount)`,
        [
          this.merchantId,
          this.currency,
          this.now,
          entries.map((entry) => entry.id),
          entries.map((entry) => entry.transactionId),
          entries.map((entry) => entry.walletId),
          entries.map((entry) => entry.accountId),
          entries.map((entry) => entry.grantId),
          entries.map((entry) => entry.amount.toString()),
        ],
      );
    }
    const updates = [...this.touchedGrants].filter((id) => !this.newGrants.some((fresh) => fresh.id === id));
    if (updates.length > 0) {
      await tx.query(
        `UPDATE credit_grants g SET remaining = u.remaining, expired_at = coalesce(u.expired_at, g.expired_at)
         FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS u(id, remaining, expired_at) WHERE g.id = u.id`,
        [updates, updates.map((id) => this.remainingOf(id).toString()), updates.map((id) => (this.expiredGrants.has(id) ? this.now : null))],
      );
    }
    await tx.query(`UPDATE wallets SET balance = $2, fraction_carry = $3, updated_at = $4 WHERE id = $1`, [
      this.state.id,
      this.state.balance.toString(),
      this.state.carry.toString(),
      this.now,
    ]);
  }
}

interface WalletRow {
  id: string;
  balance: string;
  carry: string;
  overdraft_limit: string;
}

export class LedgerStore {
  private readonly accountIds = new Map<string, string>();
  private readonly orders = new Map<string, { order: ConsumptionKey[]; at: number }>();

  constructor(readonly db: Database) {}

  /**
   * The merchant's counter-account of a kind, created on first use. Looked up on the wallet
   * transaction's own connection (PGlite has only one); cached once that transaction commits,
   * since a rolled-back creation must not be remembered.
   */
  private async systemAccountId(tx: SqlExecutor, merchantId: string, currency: string, kind: AccountKind, created: Map<string, string>): Promise<string> {
    const key = `${merchantId}:${currency}:${kind}`;
    const known = this.accountIds.get(key) ?? created.get(key);
    if (known) return known;
    await tx.query(
      `INSERT INTO ledger_accounts (id, merchant_id, currency, kind) VALUES ($1, $2, $3, $4::"LedgerAccountKind")
       ON CONFLICT (merchant_id, currency, kind) DO NOTHING`,
      [randomUUID(), merchantId, currency, kind],
    );
    const rows = await tx.query<{ id: string }>(
      `SELECT id FROM ledger_accounts WHERE merchant_id = $1 AND currency = $2 AND kind = $3::"LedgerAccountKind"`,
      [merchantId, currency, kind],
    );
    created.set(key, rows[0]!.id);
    return rows[0]!.id;
  }

  /** The merchant's grant consumption order; cached briefly, it changes rarely. */
  async consumptionOrder(merchantId: string): Promise<ConsumptionKey[]> {
    const cached = this.orders.get(merchantId);
    if (cached && Date.now() - cached.at < 30_000) return cached.order;
    const rows = await this.db.withConnection((connection) =>
      connection.query<{ order: ConsumptionKey[] }>(`SELECT credit_consumption_order AS "order" FROM merchants WHERE id = $1`, [merchantId]),
    );
    const order = rows[0]?.order ?? ['EXPIRY', 'KIND', 'PRIORITY', 'CREATED'];
    this.orders.set(merchantId, { order, at: Date.now() });
    return order;
  }

  forgetConsumptionOrder(merchantId: string): void {
    this.orders.delete(merchantId);
  }

  /**
   * Runs `work` with the wallet locked, then flushes its writes and commits. Creates the
   * wallet when missing.
   */
  async withWallet<T>(
    merchantId: string,
    customerId: string,
    currency: string,
    now: Date,
    work: (wallet: WalletTransaction) => Promise<T>,
  ): Promise<{ result: T; posted: PostedTransaction[]; state: WalletState }> {
    const order = await this.consumptionOrder(merchantId);
    const created = new Map<string, string>();
    const outcome = await this.db.transaction(async (tx) => {
      const accountId = (kind: AccountKind) => this.systemAccountId(tx, merchantId, currency, kind, created);
      let rows = await tx.query<WalletRow>(
        `SELECT id, balance::text AS balance, fraction_carry::text AS carry, overdraft_limit::text AS overdraft_limit
         FROM wallets WHERE customer_id = $1 AND currency = $2 FOR UPDATE`,
        [customerId, currency],
      );
      if (rows.length === 0) {
        await tx.query(
          `INSERT INTO wallets (id, merchant_id, customer_id, currency, updated_at) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (customer_id, currency) DO NOTHING`,
          [randomUUID(), merchantId, customerId, currency, now],
        );
        rows = await tx.query<WalletRow>(
          `SELECT id, balance::text AS balance, fraction_carry::text AS carry, overdraft_limit::text AS overdraft_limit
           FROM wallets WHERE customer_id = $1 AND currency = $2 FOR UPDATE`,
          [customerId, currency],
        );
      }
      const row = rows[0]!;
      const [grantRows, heldRows] = [
        await tx.query<{ id: string; kind: GrantKind; remaining: string; priority: number; expires_at: Date | null; created_at: Date }>(
          `SELECT id, kind::text AS kind, remaining::text AS remaining, priority, expires_at, created_at FROM credit_grants
           WHERE wallet_id = $1 AND expired_at IS NULL AND (remaining > 0 OR expires_at <= $2)`,
          [row.id, now],
        ),
        await tx.query<{ held: string }>(
          `SELECT coalesce(sum(amount - captured_amount), 0)::text AS held FROM holds
           WHERE wallet_id = $1 AND status = 'PENDING' AND expires_at > $2`,
          [row.id, now],
        ),
      ];
      const state: WalletState = {
        id: row.id,
        balance: BigInt(row.balance),
        carry: BigInt(row.carry),
        overdraftLimit: BigInt(row.overdraft_limit),
        held: BigInt(heldRows[0]?.held ?? '0'),
        grants: sortGrants(
          grantRows.map((grant) => ({
            id: grant.id,
            kind: grant.kind,
            remaining: BigInt(grant.remaining),
            priority: grant.priority,
            expiresAt: grant.expires_at ? new Date(grant.expires_at) : null,
            createdAt: new Date(grant.created_at),
          })),
          order,
        ),
      };
      const wallet = new WalletTransaction(tx, merchantId, customerId, currency, state, now, accountId, order);
      await expireDueGrants(wallet);
      const result = await work(wallet);
      await wallet.flush();
      return { result, posted: wallet.posted, state };
    });
    for (const [key, id] of created) this.accountIds.set(key, id);
    return outcome;
  }
}

/**
 * Expiry under the wallet lock: exactly once however many instances or schedules race, and
 * before any charge, so expired credit is never spent.
 */
async function expireDueGrants(wallet: WalletTransaction): Promise<void> {
  const due = wallet.state.grants.filter((grant) => grant.expiresAt && grant.expiresAt <= wallet.now);
  for (const grant of due) {
    if (grant.remaining > 0n) {
      await wallet.post({
        kind: 'EXPIRY',
        idempotencyKey: `grant-expiry:${grant.id}`,
        requestHash: `grant-expiry:${grant.id}`,
        legs: [{ grantId: grant.id, amount: -grant.remaining }],
        counterAccount: 'EXPIRED_CREDITS',
        description: 'Credits expired',
        metadata: { grantId: grant.id },
        actor: SYSTEM_ACTOR,
      });
    }
    wallet.markExpired(grant.id);
  }
}
