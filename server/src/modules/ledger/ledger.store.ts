import { randomUUID } from 'node:crypto';
import type { Database, SqlExecutor } from '../../shared/db/database.ts';
import { groupBy, partition } from '../../shared/collections.ts';
import { BulkColumns, pgArray, pgArrayOf, type ArrayElement } from '../../shared/db/arrays.ts';
import { invalidField } from '../../shared/errors.ts';
import { ATTOS_PER_NANO } from '../../shared/money.ts';
import { uuidv7, walletIdOf } from '../../shared/ids.ts';
import { creditToKeep, keptFor, sortGrants, type ConsumptionKey, type GrantKind, type GrantState, type WalletLeg, type WalletState } from './ledger.planner.ts';

/**
 * The ledger's SQL. Every change to a wallet happens inside `withWallet`, which holds the
 * wallet's row lock (SELECT … FOR UPDATE) for the whole transaction: writers on every
 * instance are serialized per wallet, readers are never blocked, and nothing can overdraw.
 * Writes are collected and flushed as a few set-based statements before COMMIT, so a batch
 * of hundreds of debits costs about as many round trips as one.
 */
export type AccountKind = 'USAGE_REVENUE' | 'PAYMENT_CLEARING' | 'PROMOTIONAL' | 'PLAN_CREDITS' | 'ADJUSTMENTS' | 'EXPIRED_CREDITS';
const ACCOUNT_KINDS: readonly AccountKind[] = ['ADJUSTMENTS', 'EXPIRED_CREDITS', 'PAYMENT_CLEARING', 'PLAN_CREDITS', 'PROMOTIONAL', 'USAGE_REVENUE'];
/** Code-unit order, the same on every instance (localeCompare is not). */
const compareText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
export type TransactionKind = 'USAGE' | 'GRANT' | 'ADJUSTMENT' | 'REFUND' | 'EXPIRY' | 'HOLD_CAPTURE';

export interface Actor {
  kind: 'api_key' | 'customer' | 'system';
  apiKeyId: string | null;
}

export const SYSTEM_ACTOR: Actor = { kind: 'system', apiKeyId: null };

/** A balance is a BIGINT of nanos: past this the database would refuse the batch's write. */
const MAX_BALANCE_NANOS = 2n ** 63n - 1n;

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
  /** The pending hold this grant keeps expiring credit for (see keepForHolds), else null. */
  holdId: string | null;
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

/**
 * Transactions under (merchant, key) pairs given as two arrays: one unique-index probe per key
 * (LIMIT 1 keeps the planner from hashing the whole table, which it prefers on young tables).
 */
const KEY_PROBE = (merchants: string, keys: string) => `unnest(${merchants}::uuid[], ${keys}::text[]) AS k(m, key)
  CROSS JOIN LATERAL (SELECT * FROM ledger_transactions t WHERE t.merchant_id = k.m AND t.idempotency_key = k.key LIMIT 1) t`;

/**
 * SQL: the grant aliased `grant` is due to expire at `now` — past its expiry and not expired yet,
 * unless it is credit kept for a hold still pending (see keepForHolds).
 */
export const GRANT_DUE = (grant: string, now: string) => `${grant}.expired_at IS NULL AND ${grant}.expires_at <= ${now}
  AND (${grant}.hold_id IS NULL OR NOT EXISTS (SELECT FROM holds h WHERE h.id = ${grant}.hold_id AND h.status = 'PENDING' AND h.expires_at > ${now}))`;

export interface WalletKey {
  merchantId: string;
  customerId: string;
  currency: string;
}

export const walletKeyOf = (key: Pick<WalletKey, 'customerId' | 'currency'>) => `${key.customerId}:${key.currency}`;

/** Customer, then currency: the order new wallets are created in (see withWallets). */
const byWalletKey = (a: WalletKey, b: WalletKey) =>
  a.customerId < b.customerId ? -1 : a.customerId > b.customerId ? 1 : a.currency < b.currency ? -1 : a.currency > b.currency ? 1 : 0;

interface PendingTransaction {
  posted: PostedTransaction;
  txn: NewTransaction;
  merchantId: string;
  /** The legs when there are just two, stored on the transaction's row (else in ledger_entries). */
  twoLeg: { accountId: string; grantId: string | null } | null;
}

interface PendingEntry {
  transactionId: string;
  leg: number;
  merchantId: string;
  currency: string;
  walletId: string | null;
  accountId: string | null;
  grantId: string | null;
  amount: bigint;
}

/** One locked wallet inside a batch: what operations read and post through. */
export class WalletTransaction {
  readonly posted: PostedTransaction[] = [];
  /** Set when this batch released holds of the wallet: its balance event goes out even if nothing was posted. */
  heldChanged = false;
  /** When the wallet's customer was archived, read under the wallet's lock; null while active. */
  customerArchivedAt: Date | null = null;
  /**
   * Holds this batch released whose kept credit (see keepForHolds) their own usage may still
   * spend before it expires, as a capture would (see settleKept): what each kept and what its
   * events have drawn of it so far (not posted yet).
   */
  private readonly settling = new Map<string, { kept: bigint; drawn: bigint }>();

  constructor(
    private readonly batch: LedgerBatch,
    readonly merchantId: string,
    readonly customerId: string,
    readonly currency: string,
    readonly state: WalletState,
    private readonly consumptionOrder: readonly ConsumptionKey[],
  ) {
    this.atLock = { balance: state.balance, held: state.held, overdraftLimit: state.overdraftLimit };
  }

  /** What a balance event shows of the wallet as it was locked (see changedSinceLocked). */
  private readonly atLock: Pick<WalletState, 'balance' | 'held' | 'overdraftLimit'>;

  /** Whether this batch changed what a balance event shows (balance, held, overdraft limit), or posted to it. */
  changedSinceLocked(): boolean {
    const { balance, held, overdraftLimit } = this.state;
    return this.posted.length > 0 || this.heldChanged || balance !== this.atLock.balance || held !== this.atLock.held || overdraftLimit !== this.atLock.overdraftLimit;
  }

  /**
   * Raises the wallet's version though this batch may have changed nothing it tracks, for an
   * event that goes out whatever changed (an overdraft limit set again), or a change the state
   * read at the lock already showed (a hold past its time, reserving nothing, marked expired).
   * Under the last version, such an event would contradict that version's push, and a client
   * merging readings by version could keep the stale one.
   */
  markAnnounced(): void {
    this.batch.dirtyWallets.add(this);
  }

  get tx(): SqlExecutor {
    return this.batch.tx;
  }

  get now(): Date {
    return this.batch.now;
  }

  /** Transactions already recorded under these idempotency keys (by any wallet of the merchant). */
  async existing(keys: readonly string[]): Promise<Map<string, PostedTransaction>> {
    const unchecked = keys.filter((key) => !this.batch.checked.has(`${this.merchantId}:${key}`));
    if (unchecked.length > 0) await this.batch.existing(unchecked.map((key) => ({ merchantId: this.merchantId, key })));
    const found = new Map<string, PostedTransaction>();
    for (const key of keys) {
      const posted = this.batch.known.get(`${this.merchantId}:${key}`);
      if (posted) found.set(key, posted);
    }
    return found;
  }

  /**
   * Records a transaction and applies its legs to the in-memory state: the balance moves by
   * their sum, and each grant by its own legs (so a grant's remaining always equals the sum
   * of the entries that name it).
   */
  async post(txn: NewTransaction): Promise<PostedTransaction> {
    const id = uuidv7();
    const walletChange = txn.legs.reduce((sum, leg) => sum + leg.amount, 0n);
    const walletLegs = txn.legs.filter((leg) => leg.amount !== 0n);
    // Everything that can fail comes before the wallet's state changes: a debit refused here
    // leaves its batch's books as they were for the debits that follow it.
    const grants = walletLegs.map((leg) => {
      if (!leg.grantId) return null;
      const grant = this.state.grants.find((candidate) => candidate.id === leg.grantId);
      if (!grant) throw new Error(`ledger leg names grant ${leg.grantId}, which this wallet does not hold`);
      return grant;
    });
    const balanceAfter = this.state.balance + walletChange;
    if (balanceAfter > MAX_BALANCE_NANOS || balanceAfter < -MAX_BALANCE_NANOS) {
      throw invalidField('amount', 'would take the balance beyond what a wallet can hold (9,223,372,036 in major units either way)');
    }
    const accountId = walletChange === 0n ? null : await this.batch.accountId(this.merchantId, this.currency, txn.counterAccount);
    this.state.balance = balanceAfter;
    walletLegs.forEach((leg, n) => {
      const grant = grants[n];
      if (!grant) return;
      grant.remaining += leg.amount;
      this.batch.touchedGrants.set(grant.id, this);
    });
    // One wallet leg against the counter-account (most debits): both legs go on the transaction's row.
    const twoLeg = accountId && walletLegs.length === 1 ? { accountId, grantId: walletLegs[0]!.grantId } : null;
    if (!twoLeg) {
      const entry = { transactionId: id, merchantId: this.merchantId, currency: this.currency };
      walletLegs.forEach((leg, n) => this.batch.entries.push({ ...entry, leg: n, walletId: this.state.id, accountId: null, grantId: leg.grantId, amount: leg.amount }));
      if (accountId) this.batch.entries.push({ ...entry, leg: walletLegs.length, walletId: null, accountId, grantId: null, amount: -walletChange });
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
    this.batch.transactions.push({ posted, txn, merchantId: this.merchantId, twoLeg });
    const compound = `${this.merchantId}:${txn.idempotencyKey}`;
    this.batch.known.set(compound, posted);
    this.batch.checked.add(compound);
    this.posted.push(posted);
    this.batch.dirtyWallets.add(this);
    return posted;
  }

  /** Adds an empty grant; the transaction that funds it posts a leg naming it. */
  addGrant(grant: Omit<NewGrant, 'remaining' | 'holdId'> & { holdId?: string | null }): void {
    const holdId = grant.holdId ?? null;
    this.batch.newGrants.push({ grant: { ...grant, holdId, remaining: 0n }, wallet: this });
    this.state.grants = sortGrants(
      [...this.state.grants, { id: grant.id, kind: grant.kind, remaining: 0n, priority: grant.priority, expiresAt: grant.expiresAt, createdAt: this.now, holdId, holdLive: holdId !== null }],
      this.consumptionOrder,
    );
  }

  /**
   * Expires what was kept for a hold that has just ended (captured or released): its capture
   * has drawn what it needed, and the rest expired with the grant it came from.
   */
  async expireKeptFor(holdId: string): Promise<void> {
    for (const grant of this.state.grants.filter((candidate) => candidate.holdId === holdId)) await expireGrant(this, grant);
  }

  /** Takes a grant out of use; its remaining must already have been posted away. */
  markExpired(grantId: string): void {
    this.batch.expiredGrants.add(grantId);
    this.batch.touchedGrants.set(grantId, this);
    this.state.grants = this.state.grants.filter((candidate) => candidate.id !== grantId);
  }

  linkGrantTransaction(grantId: string, transactionId: string): void {
    const pending = this.batch.newGrants.find((candidate) => candidate.grant.id === grantId);
    if (pending) pending.grant.transactionId = transactionId;
  }

  /** Credit kept for a hold (see keepForHolds) that it has not spent. */
  keptFor(holdId: string): bigint {
    return keptFor(this.state.grants, holdId);
  }

  /**
   * A hold released in this batch so that its usage is charged instead (the gateway's
   * settlement): what was kept for it stays reserved (in `held`) until the batch ends, for that
   * usage to draw (drawKept), like a capture; finishSettling then expires the rest.
   */
  settleKept(holdId: string, outstanding: bigint): void {
    const kept = this.keptFor(holdId);
    this.releaseHeld(outstanding - kept);
    if (kept > 0n) this.settling.set(holdId, { kept, drawn: 0n });
  }

  /** How much of `attos` (whole nanos of it) the credit kept for a hold settling in this batch pays. */
  drawKept(holdId: string, attos: bigint): bigint {
    const settling = this.settling.get(holdId);
    if (!settling || attos <= 0n) return 0n;
    const wanted = attos / ATTOS_PER_NANO;
    const left = settling.kept - settling.drawn;
    const nanos = wanted < left ? wanted : left;
    settling.drawn += nanos;
    return nanos * ATTOS_PER_NANO;
  }

  /** Legs spending what drawKept promised so far, from each hold's kept grants in order; to post now. */
  takeKeptDraws(): WalletLeg[] {
    const legs: WalletLeg[] = [];
    for (const [holdId, settling] of this.settling) {
      let left = settling.drawn;
      for (const grant of this.state.grants) {
        if (left === 0n) break;
        if (grant.holdId !== holdId || grant.remaining <= 0n) continue;
        const take = grant.remaining < left ? grant.remaining : left;
        legs.push({ grantId: grant.id, amount: -take });
        left -= take;
      }
      if (left > 0n) throw new Error(`hold ${holdId} drew ${settling.drawn} nanos of kept credit, more than its grants hold`);
      // What is drawn leaves the balance with these legs, and the reservation with it.
      this.releaseHeld(settling.drawn);
      settling.kept -= settling.drawn;
      settling.drawn = 0n;
    }
    return legs;
  }

  /** At the end of the batch: what settling holds kept and their usage did not spend expires (see settleKept). */
  async finishSettling(): Promise<void> {
    for (const [holdId, settling] of this.settling) {
      if (settling.drawn > 0n) throw new Error(`hold ${holdId} drew kept credit that was never posted`);
      this.releaseHeld(settling.kept);
      await this.expireKeptFor(holdId);
    }
    this.settling.clear();
  }

  /** Frees `nanos` this wallet held (a hold released in this batch's transaction). */
  releaseHeld(nanos: bigint): void {
    this.state.held -= nanos;
    this.heldChanged = true;
  }

  setCarry(carry: bigint): void {
    this.state.carry = carry;
    this.batch.dirtyWallets.add(this);
  }

  /** Remaining of a grant taken out of the state (expired) is zero by construction. */
  remainingOf(grantId: string): bigint {
    return this.state.grants.find((grant) => grant.id === grantId)?.remaining ?? 0n;
  }
}

/**
 * Several locked wallets in one database transaction. Reads were done up front in one
 * statement; writes are collected and flushed as one statement before COMMIT.
 */
export class LedgerBatch {
  readonly wallets = new Map<string, WalletTransaction>();
  readonly transactions: PendingTransaction[] = [];
  readonly entries: PendingEntry[] = [];
  readonly newGrants: { grant: NewGrant; wallet: WalletTransaction }[] = [];
  readonly touchedGrants = new Map<string, WalletTransaction>();
  readonly expiredGrants = new Set<string>();
  readonly dirtyWallets = new Set<WalletTransaction>();
  /** Idempotency keys known to exist, as `merchantId:key`. */
  readonly known = new Map<string, PostedTransaction>();
  /** Keys already looked up (found or not), so each is read from the database at most once. */
  readonly checked = new Set<string>();
  /** Ids of the wallets this transaction inserted (see dropUnused). */
  readonly created = new Set<string>();
  /** Wallets (walletKeyOf) dropUnused deleted: not stored once this transaction commits. */
  readonly dropped = new Set<string>();
  /** The counter-accounts this transaction inserted: id → `merchantId:currency` (see LedgerStore.createAccounts, dropUnused). */
  readonly createdAccounts = new Map<string, string>();
  /** Of those, the ones dropUnused deleted: not stored once this transaction commits. */
  readonly droppedAccounts = new Set<string>();

  constructor(
    readonly tx: SqlExecutor,
    readonly now: Date,
    readonly accountId: (merchantId: string, currency: string, kind: AccountKind) => Promise<string>,
    /** The preloaded keys were taken as new, not read (KeyPreload.assumeNew). */
    readonly keysAssumedNew = false,
  ) {}

  wallet(key: WalletKey): WalletTransaction {
    const wallet = this.wallets.get(walletKeyOf(key));
    if (!wallet) throw new Error(`wallet ${walletKeyOf(key)} is not part of this batch`);
    return wallet;
  }

  /** Looks up keys not already known to this batch; results are keyed `merchantId:key`. */
  async existing(keys: readonly { merchantId: string; key: string }[]): Promise<Map<string, PostedTransaction>> {
    const missing = keys.filter(({ merchantId, key }) => !this.checked.has(`${merchantId}:${key}`));
    for (const { merchantId, key } of missing) this.checked.add(`${merchantId}:${key}`);
    if (missing.length > 0) {
      const rows = await this.tx.query<TransactionRow & { merchant_id: string }>(
        `SELECT merchant_id, ${TRANSACTION_COLUMNS} FROM ${KEY_PROBE('$1', '$2')}`,
        [pgArrayOf(missing, (item) => item.merchantId), pgArrayOf(missing, (item) => item.key)],
      );
      for (const row of rows) this.known.set(`${row.merchant_id}:${row.idempotency_key}`, toPosted(row));
    }
    const found = new Map<string, PostedTransaction>();
    for (const { merchantId, key } of keys) {
      const posted = this.known.get(`${merchantId}:${key}`);
      if (posted) found.set(`${merchantId}:${key}`, posted);
    }
    return found;
  }

  /**
   * Whether any of these keys already has a transaction, read now whatever the batch assumed: an
   * operation that failed on a key taken as new may have been a replay, which must be answered
   * with its first result instead.
   */
  async anyKeyUsed(keys: readonly { merchantId: string; key: string }[]): Promise<boolean> {
    if (keys.length === 0) return false;
    const rows = await this.tx.query(`SELECT 1 FROM ${KEY_PROBE('$1', '$2')} LIMIT 1`, [pgArrayOf(keys, (item) => item.merchantId), pgArrayOf(keys, (item) => item.key)]);
    return rows.length > 0;
  }

  /** Writes everything collected in one statement (data-modifying CTEs), so one round trip. */
  async flush(): Promise<void> {
    const parts: string[] = [];
    const params: unknown[] = [];
    const param = (value: unknown) => {
      params.push(value);
      return `$${params.length}`;
    };
    const array = (values: readonly ArrayElement[]) => param(pgArray(values));
    const now = param(this.now);
    if (this.transactions.length > 0) {
      const t = new BulkColumns(this.transactions, params)
        .column('id', 'uuid', (r) => r.posted.id)
        .column('merchant_id', 'uuid', (r) => r.merchantId)
        .column('wallet_id', 'uuid', (r) => r.posted.walletId)
        .column('customer_id', 'uuid', (r) => r.posted.customerId)
        .column('currency', 'text', (r) => r.posted.currency)
        .column('kind', 'text', (r) => r.txn.kind, '"LedgerTransactionKind"')
        .column('amount', 'bigint', (r) => r.posted.amount)
        .column('balance_after', 'bigint', (r) => r.posted.balanceAfter)
        .column('idempotency_key', 'text', (r) => r.txn.idempotencyKey)
        .column('request_hash', 'text', (r) => r.txn.requestHash)
        .column('description', 'text', (r) => r.txn.description ?? null)
        .column('reason', 'text', (r) => r.txn.reason ?? null)
        .column('metadata', 'text', (r) => (r.txn.metadata ? JSON.stringify(r.txn.metadata) : '{}'), 'jsonb')
        .column('actor_api_key_id', 'uuid', (r) => r.txn.actor.apiKeyId)
        .column('actor_kind', 'text', (r) => r.txn.actor.kind)
        .column('source_ref', 'text', (r) => r.txn.sourceRef ?? null)
        .column('occurred_at', 'timestamptz', (r) => r.txn.occurredAt ?? this.now)
        .column('counter_account_id', 'uuid', (r) => r.twoLeg?.accountId ?? null)
        .column('grant_id', 'uuid', (r) => r.twoLeg?.grantId ?? null);
      parts.push(`t AS (INSERT INTO ledger_transactions (${t.names}, created_at) SELECT ${t.select}, ${now} FROM ${t.from})`);
    }
    if (this.newGrants.length > 0) {
      const g = new BulkColumns(this.newGrants, params)
        .column('id', 'uuid', (r) => r.grant.id)
        .column('merchant_id', 'uuid', (r) => r.wallet.merchantId)
        .column('wallet_id', 'uuid', (r) => r.wallet.state.id)
        .column('customer_id', 'uuid', (r) => r.wallet.customerId)
        .column('currency', 'text', (r) => r.wallet.currency)
        .column('kind', 'text', (r) => r.grant.kind, '"CreditGrantKind"')
        .column('amount', 'bigint', (r) => r.grant.amount)
        .column('remaining', 'bigint', (r) => r.wallet.remainingOf(r.grant.id))
        .column('priority', 'int', (r) => r.grant.priority)
        .column('expires_at', 'timestamptz', (r) => r.grant.expiresAt)
        .column('transaction_id', 'uuid', (r) => r.grant.transactionId)
        .column('description', 'text', (r) => r.grant.description)
        .column('metadata', 'text', (r) => JSON.stringify(r.grant.metadata), 'jsonb')
        .column('hold_id', 'uuid', (r) => r.grant.holdId)
        // Credit kept for a hold that ended in the same transaction is made and expired at once.
        .column('expired_at', 'timestamptz', (r) => (this.expiredGrants.has(r.grant.id) ? this.now : null));
      parts.push(`g AS (INSERT INTO credit_grants (${g.names}, created_at) SELECT ${g.select}, ${now} FROM ${g.from})`);
    }
    // Wallet legs and counter-account legs go in two inserts: within each, the wallet (or the
    // account) is mostly one value for the whole batch, so it travels once.
    const [walletLegs, accountLegs] = partition(this.entries, (entry) => entry.walletId !== null);
    for (const [name, legs] of [['e', walletLegs], ['ea', accountLegs]] as const) {
      if (legs.length === 0) continue;
      const e = new BulkColumns(legs, params)
        .column('transaction_id', 'uuid', (x) => x.transactionId)
        .column('leg', 'smallint', (x) => x.leg)
        .column('merchant_id', 'uuid', (x) => x.merchantId)
        .column('wallet_id', 'uuid', (x) => x.walletId)
        .column('account_id', 'uuid', (x) => x.accountId)
        .column('grant_id', 'uuid', (x) => x.grantId)
        .column('currency', 'text', (x) => x.currency)
        .column('amount', 'bigint', (x) => x.amount);
      parts.push(`${name} AS (INSERT INTO ledger_entries (${e.names}, created_at) SELECT ${e.select}, ${now} FROM ${e.from})`);
    }
    const fresh = new Set(this.newGrants.map((g) => g.grant.id));
    const updates = [...this.touchedGrants].filter(([id]) => !fresh.has(id));
    if (updates.length > 0) {
      parts.push(`gu AS (UPDATE credit_grants g SET remaining = u.remaining, expired_at = coalesce(u.expired_at, g.expired_at)
        FROM unnest(${array(updates.map(([id]) => id))}::uuid[], ${array(updates.map(([id, wallet]) => wallet.remainingOf(id).toString()))}::bigint[],
          ${array(updates.map(([id]) => (this.expiredGrants.has(id) ? this.now : null)))}::timestamptz[]) AS u(id, remaining, expired_at)
        WHERE g.id = u.id)`);
    }
    // Every wallet this batch changed gets a new version, those whose holds or limit alone changed
    // (written straight through tx) too: its balance event carries it, so a subscriber can tell an
    // event that arrives after a newer one (instances publish independently; see inVersionOrder).
    for (const wallet of this.wallets.values()) if (wallet.changedSinceLocked()) this.dirtyWallets.add(wallet);
    const wallets = [...this.dirtyWallets];
    for (const wallet of wallets) wallet.state.version += 1n;
    const finalStatement = wallets.length
      ? `UPDATE wallets w SET balance = u.balance, fraction_carry = u.carry, version = u.version, updated_at = ${now}
         FROM unnest(${array(wallets.map((w) => w.state.id))}::uuid[], ${array(wallets.map((w) => w.state.balance.toString()))}::bigint[],
           ${array(wallets.map((w) => w.state.carry.toString()))}::bigint[], ${array(wallets.map((w) => w.state.version.toString()))}::bigint[])
           AS u(id, balance, carry, version) WHERE w.id = u.id`
      // Names $1 (the time) as every other statement does: a batch that only marked a used-up
      // grant expired sends the time unused otherwise, and PostgreSQL refuses a parameter it cannot type.
      : `SELECT ${now}::timestamptz`;
    if (parts.length === 0 && wallets.length === 0) return;
    await this.tx.query(`${parts.length ? `WITH ${parts.join(',\n')}\n` : ''}${finalStatement}`, params);
  }
}

/**
 * Deletes the wallets this transaction inserted that it leaves unchanged (a debit refused on a
 * wallet not stored yet, whose batch commits the others' debits): a wallet is stored with its
 * first change. Costs a statement only in a batch that has such a wallet.
 *
 * No other transaction can have used one of them. A row this transaction inserted is seen by no
 * other until COMMIT, and another insert of the same wallet (ON CONFLICT, on any instance) waits
 * on its unique key until then; it finds the row gone and inserts its own. A wallet another
 * transaction inserted first was skipped by our ON CONFLICT, so RETURNING did not put it in
 * `created`. Hence a committed wallet is never deleted, and LedgerStore.knownWallets stays true.
 * Holds and overdraft limits are written straight through `tx`, past what the batch tracks: the
 * statement itself keeps a wallet they name.
 */
async function dropUnused(batch: LedgerBatch): Promise<void> {
  await dropUnusedAccounts(batch);
  if (batch.created.size === 0) return;
  const unused = [...batch.wallets.values()].filter(
    (wallet) => batch.created.has(wallet.state.id) && wallet.posted.length === 0 && !wallet.heldChanged && !batch.dirtyWallets.has(wallet),
  );
  if (unused.length === 0) return;
  const deleted = await batch.tx.query<{ id: string }>(
    `DELETE FROM wallets w WHERE w.id = ANY($1::uuid[]) AND w.overdraft_limit_set_at IS NULL
       AND NOT EXISTS (SELECT FROM holds h WHERE h.wallet_id = w.id) RETURNING w.id`,
    [pgArray(unused.map((wallet) => wallet.state.id))],
  );
  const ids = new Set(deleted.map((row) => row.id));
  for (const wallet of unused) if (ids.has(wallet.state.id)) batch.dropped.add(walletKeyOf(wallet));
}

/**
 * The same for the counter-accounts this transaction inserted for a new merchant currency when
 * nothing it wrote names any of them (a debit refused in a currency the merchant never charged
 * in): a refused operation writes nothing. A currency's accounts are kept or dropped together, so
 * that once kept they are all known and no later batch inserts them again. Only this transaction
 * knows their ids until it commits, so only what it wrote can name them.
 */
async function dropUnusedAccounts(batch: LedgerBatch): Promise<void> {
  if (batch.createdAccounts.size === 0) return;
  const usedPairs = new Set<string>();
  const use = (id: string | null) => {
    const pair = id === null ? undefined : batch.createdAccounts.get(id);
    if (pair) usedPairs.add(pair);
  };
  for (const { twoLeg } of batch.transactions) use(twoLeg?.accountId ?? null);
  for (const entry of batch.entries) use(entry.accountId);
  const unused = [...batch.createdAccounts].filter(([, pair]) => !usedPairs.has(pair)).map(([id]) => id);
  if (unused.length === 0) return;
  await batch.tx.query(`DELETE FROM ledger_accounts WHERE id = ANY($1::uuid[])`, [pgArray(unused)]);
  for (const id of unused) batch.droppedAccounts.add(id);
}

interface WalletRow {
  id: string;
  customer_id: string;
  currency: string;
  balance: string;
  carry: string;
  overdraft_limit: string;
  version: string;
  updated_at: Date;
}

interface StateRow {
  /** Positional, in the order the state query builds them: json_build_object costs PostgreSQL twice as much as an array per grant. */
  grants: [id: string, walletId: string, kind: GrantKind, remaining: string, priority: number, expiresAt: string | null, createdAt: string, holdId: string | null, holdLive: boolean][] | null;
  held: { wallet_id: string; held: string }[] | null;
  existing: (TransactionRow & { merchant_id: string })[] | null;
  orders: { merchant_id: string; order: ConsumptionKey[] }[] | null;
  archived: { id: string; archived_at: string }[] | null;
}

/**
 * Idempotency keys a batch will post under, read with the wallets' state so each costs no
 * round trip of its own. With `assumeNew` they are not read at all (a unique-index probe per
 * key, under the wallet lock): they are taken as unused. If one was used after
 * all, either its INSERT breaks the unique index (23505) and the whole transaction rolls back,
 * or the operation failed before posting (a replay planned as new may find the credit gone):
 * the caller checks the keys of failed operations (LedgerBatch.anyKeyUsed). Either way it runs
 * the batch again with the keys read.
 */
export interface KeyPreload {
  keys: readonly { merchantId: string; key: string }[];
  assumeNew: boolean;
}

const NO_PRELOAD: KeyPreload = { keys: [], assumeNew: false };

const DEFAULT_CONSUMPTION_ORDER: ConsumptionKey[] = ['EXPIRY', 'KIND', 'PRIORITY', 'CREATED'];

export class LedgerStore {
  private readonly accountIds = new Map<string, string>();
  /**
   * Committed wallets are never deleted (only the transaction that inserted one may, before its
   * COMMIT: see dropUnused): once seen, no INSERT … ON CONFLICT round trip is needed.
   */
  private readonly knownWallets = new Set<string>();

  constructor(readonly db: Database) {}

  /**
   * Creates, in one statement sorted by merchant, currency and kind, every counter-account the
   * batch's wallets may post against that this process has not seen yet (right after the wallets
   * are locked). Created one at a time as posts needed them, two batches in different currencies
   * (each on its own wallets) could each insert one currency's account and then wait on the
   * other's uncommitted row: a deadlock, the first time a merchant charged in two currencies.
   * Answers the accounts this transaction inserted, id → `merchantId:currency`.
   */
  private async createAccounts(tx: SqlExecutor, wallets: readonly WalletKey[], created: Map<string, string>): Promise<Map<string, string>> {
    const pairs = new Map<string, WalletKey>();
    for (const wallet of wallets) {
      const pair = `${wallet.merchantId}:${wallet.currency}`;
      if (!pairs.has(pair) && ACCOUNT_KINDS.some((kind) => !this.accountIds.has(`${pair}:${kind}`))) pairs.set(pair, wallet);
    }
    if (pairs.size === 0) return new Map();
    const rows = [...pairs.values()]
      .flatMap((wallet) => ACCOUNT_KINDS.map((kind) => ({ merchantId: wallet.merchantId, currency: wallet.currency, kind })))
      .sort((a, b) => compareText(a.merchantId, b.merchantId) || compareText(a.currency, b.currency) || compareText(a.kind, b.kind));
    // RETURNING names only the rows this transaction inserted (see dropUnusedAccounts).
    const inserted = await tx.query<{ id: string; merchant_id: string; currency: string }>(
      `INSERT INTO ledger_accounts (id, merchant_id, currency, kind)
       SELECT u.id, u.merchant_id, u.currency, u.kind::"LedgerAccountKind"
       FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[]) WITH ORDINALITY AS u(id, merchant_id, currency, kind, n)
       ORDER BY u.n
       ON CONFLICT (merchant_id, currency, kind) DO NOTHING
       RETURNING id, merchant_id, currency`,
      [pgArrayOf(rows, () => randomUUID()), pgArrayOf(rows, (row) => row.merchantId), pgArrayOf(rows, (row) => row.currency), pgArrayOf(rows, (row) => row.kind)],
    );
    const found = await tx.query<{ id: string; merchant_id: string; currency: string; kind: string }>(
      `SELECT id, merchant_id, currency, kind::text AS kind FROM ledger_accounts
       WHERE (merchant_id, currency) IN (SELECT * FROM unnest($1::uuid[], $2::text[]))`,
      [pgArrayOf([...pairs.values()], (wallet) => wallet.merchantId), pgArrayOf([...pairs.values()], (wallet) => wallet.currency)],
    );
    for (const row of found) created.set(`${row.merchant_id}:${row.currency}:${row.kind}`, row.id);
    return new Map(inserted.map((row) => [row.id, `${row.merchant_id}:${row.currency}`]));
  }

  /**
   * The merchant's counter-account of a kind, created on first use. Looked up on the batch's
   * own connection (PGlite has only one); cached once that transaction commits, since a
   * rolled-back creation must not be remembered.
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

  /** The merchant's grant consumption order, as configured. */
  async consumptionOrder(merchantId: string): Promise<ConsumptionKey[]> {
    const rows = await this.db.withConnection((connection) =>
      connection.query<{ order: ConsumptionKey[] }>(`SELECT credit_consumption_order AS "order" FROM merchants WHERE id = $1`, [merchantId]),
    );
    return rows[0]?.order ?? DEFAULT_CONSUMPTION_ORDER;
  }

  /**
   * Runs `work` with every listed wallet locked (created when missing), then flushes its
   * writes and commits. Missing wallets are created in key order and all are locked in id
   * order, so two batches on any instances can never deadlock. Due grants are expired first.
   * The preload's idempotency keys are fetched in the same read as the wallets' state (or taken
   * as new, see KeyPreload).
   */
  async withWallets<T>(
    keys: readonly WalletKey[],
    now: Date,
    work: (batch: LedgerBatch) => Promise<T>,
    preload: KeyPreload = NO_PRELOAD,
  ): Promise<{ result: T; batch: LedgerBatch }> {
    const probed = preload.assumeNew ? [] : preload.keys;
    const byWallet = new Map(keys.map((key) => [walletKeyOf(key), key]));
    const unique = [...byWallet.values()];
    const created = new Map<string, string>();
    const outcome = await this.db.transaction(async (tx) => {
      let inserted: { id: string }[] = [];
      // Created in one order everywhere: two batches inserting the same new wallets in opposite
      // orders would each wait on the other's uncommitted row (a deadlock).
      const missing = unique.filter((key) => !this.knownWallets.has(walletKeyOf(key))).sort(byWalletKey);
      if (missing.length > 0) {
        // RETURNING names only the rows this transaction inserted, not those another one had. No
        // conflict target: a wallet's id follows from (customer, currency), so a concurrent insert
        // of it clashes on the primary key as well, which a (customer_id, currency) target would raise.
        inserted = await tx.query<{ id: string }>(
          `INSERT INTO wallets (id, merchant_id, customer_id, currency, updated_at)
           SELECT u.id, u.merchant_id, u.customer_id, u.currency, $5
           FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[]) AS u(id, merchant_id, customer_id, currency)
           ON CONFLICT DO NOTHING
           RETURNING id`,
          [
            pgArrayOf(missing, (key) => walletIdOf(key.customerId, key.currency)),
            pgArrayOf(missing, (key) => key.merchantId),
            pgArrayOf(missing, (key) => key.customerId),
            pgArrayOf(missing, (key) => key.currency),
            now,
          ],
        );
      }
      // With one currency (nearly every batch) the pairs are the customers in it, found by one index
      // scan over an array: about half what PostgreSQL spends joining each pair of an unnest.
      const currencies = new Set(unique.map((key) => key.currency));
      const walletRows = await tx.query<WalletRow>(
        `SELECT id, customer_id, currency, balance::text AS balance, fraction_carry::text AS carry, overdraft_limit::text AS overdraft_limit,
           version::text AS version, updated_at
         FROM wallets WHERE ${currencies.size === 1 ? 'customer_id = ANY($1::uuid[]) AND currency = $2' : '(customer_id, currency) IN (SELECT * FROM unnest($1::uuid[], $2::text[]))'}
         ORDER BY id FOR UPDATE`,
        [pgArrayOf(unique, (key) => key.customerId), currencies.size === 1 ? unique[0]!.currency : pgArrayOf(unique, (key) => key.currency)],
      );
      // A wallet's time never runs backwards. `now` was stamped before the locks were waited for
      // (or on an instance whose clock is behind), so a change committed meanwhile may be dated
      // after it: one that spent what a hold reserved once the hold had run out, to it. Judged at
      // the earlier time, that hold would be pending again (extended, capturable, counted in
      // `held`) though its credit is gone. Every change dates its wallets (updated_at), so the batch
      // takes the latest of those and its own time.
      for (const row of walletRows) {
        const changedAt = new Date(row.updated_at);
        if (changedAt > now) now = changedAt;
      }
      // Read after the locks are held, in one statement: grants, holds and known keys.
      const walletIds = walletRows.map((row) => row.id);
      const [stateRow] = await tx.query<StateRow>(
        `SELECT
           (SELECT json_agg(json_build_array(g.id, g.wallet_id, g.kind, g.remaining::text, g.priority, g.expires_at, g.created_at, g.hold_id,
              g.hold_id IS NOT NULL AND EXISTS (SELECT FROM holds h WHERE h.id = g.hold_id AND h.status = 'PENDING' AND h.expires_at > $2)))
            FROM credit_grants g WHERE g.wallet_id = ANY($1::uuid[]) AND g.expired_at IS NULL AND (g.remaining > 0 OR g.expires_at <= $2)) AS grants,
           (SELECT json_agg(json_build_object('wallet_id', wallet_id, 'held', held::text)) FROM (
              SELECT wallet_id, sum(amount - captured_amount) AS held FROM holds
              WHERE wallet_id = ANY($1::uuid[]) AND status = 'PENDING' AND expires_at > $2 GROUP BY wallet_id) h) AS held,
           (SELECT json_agg(json_build_object('merchant_id', merchant_id, 'id', id, 'kind', kind, 'wallet_id', wallet_id,
              'customer_id', customer_id, 'currency', currency, 'amount', amount::text, 'balance_after', balance_after::text,
              'idempotency_key', idempotency_key, 'request_hash', request_hash, 'created_at', created_at))
            FROM ${KEY_PROBE('$3', '$4')}) AS existing,
           -- Read with the rest rather than cached, so a changed order holds at once on every instance.
           (SELECT json_agg(json_build_object('merchant_id', id, 'order', credit_consumption_order)) FROM merchants WHERE id = ANY($5::uuid[])) AS orders,
           (SELECT json_agg(json_build_object('id', id, 'archived_at', archived_at)) FROM customers WHERE id = ANY($6::uuid[]) AND archived_at IS NOT NULL) AS archived`,
        [
          pgArray(walletIds), now, pgArrayOf(probed, (item) => item.merchantId), pgArrayOf(probed, (item) => item.key), pgArray([...new Set(unique.map((key) => key.merchantId))]),
          pgArray([...new Set(unique.map((key) => key.customerId))]),
        ],
      );
      const orders = new Map((stateRow?.orders ?? []).map((row) => [row.merchant_id, row.order]));
      const insertedAccounts = await this.createAccounts(tx, unique, created);
      const batch = new LedgerBatch(tx, now, (merchantId, currency, kind) => this.systemAccountId(tx, merchantId, currency, kind, created), preload.assumeNew);
      for (const row of inserted) batch.created.add(row.id);
      for (const [id, pair] of insertedAccounts) batch.createdAccounts.set(id, pair);
      for (const item of preload.keys) batch.checked.add(`${item.merchantId}:${item.key}`);
      for (const row of stateRow?.existing ?? []) batch.known.set(`${row.merchant_id}:${row.idempotency_key}`, toPosted(row));
      const heldBy = new Map((stateRow?.held ?? []).map((row) => [row.wallet_id, BigInt(row.held)]));
      const grantsBy = groupBy(stateRow?.grants ?? [], (grant) => grant[1]);
      const archivedAt = new Map((stateRow?.archived ?? []).map((row) => [row.id, new Date(row.archived_at)]));
      for (const row of walletRows) {
        const key = byWallet.get(walletKeyOf({ customerId: row.customer_id, currency: row.currency }))!;
        const order = orders.get(key.merchantId) ?? DEFAULT_CONSUMPTION_ORDER;
        const state: WalletState = {
          id: row.id,
          balance: BigInt(row.balance),
          carry: BigInt(row.carry),
          overdraftLimit: BigInt(row.overdraft_limit),
          held: heldBy.get(row.id) ?? 0n,
          version: BigInt(row.version),
          grants: sortGrants(
            (grantsBy.get(row.id) ?? []).map(([id, , kind, remaining, priority, expiresAt, createdAt, holdId, holdLive]) => ({
              id,
              kind,
              remaining: BigInt(remaining),
              priority,
              expiresAt: expiresAt ? new Date(expiresAt) : null,
              createdAt: new Date(createdAt),
              holdId,
              holdLive,
            })),
            order,
          ),
        };
        const wallet = new WalletTransaction(batch, key.merchantId, key.customerId, key.currency, state, order);
        wallet.customerArchivedAt = archivedAt.get(key.customerId) ?? null;
        batch.wallets.set(walletKeyOf(key), wallet);
        await expireDueGrants(wallet);
      }
      const result = await work(batch);
      for (const wallet of batch.wallets.values()) await wallet.finishSettling();
      await batch.flush();
      await dropUnused(batch);
      return { result, batch };
    });
    for (const [key, id] of created) if (!outcome.batch.droppedAccounts.has(id)) this.accountIds.set(key, id);
    for (const key of unique) if (!outcome.batch.dropped.has(walletKeyOf(key))) this.knownWallets.add(walletKeyOf(key));
    return outcome;
  }

  /** One wallet: the common case for everything but debits. */
  async withWallet<T>(
    merchantId: string,
    customerId: string,
    currency: string,
    now: Date,
    work: (wallet: WalletTransaction) => Promise<T>,
  ): Promise<{ result: T; posted: PostedTransaction[]; state: WalletState }> {
    const key = { merchantId, customerId, currency };
    const { result, batch } = await this.withWallets([key], now, (inner) => work(inner.wallet(key)));
    const wallet = batch.wallet(key);
    return { result, posted: wallet.posted, state: wallet.state };
  }
}

/**
 * Expiry under the wallet lock: exactly once however many instances or schedules race, and
 * before any charge, so expired credit is never spent. What pending holds need of the expiring
 * credit is kept for them first (keepForHolds), and what was kept for holds that have ended
 * expires now.
 */
async function expireDueGrants(wallet: WalletTransaction): Promise<void> {
  const ended = wallet.state.grants.filter((grant) => grant.holdId !== null && !grant.holdLive);
  const due = wallet.state.grants.filter((grant) => grant.holdId === null && grant.expiresAt && grant.expiresAt <= wallet.now);
  if (wallet.state.held > 0n && due.some((grant) => grant.remaining > 0n)) await keepForHolds(wallet, due);
  for (const grant of [...ended, ...due]) await expireGrant(wallet, grant);
}

/** Posts away what a grant has left and takes it out of use. */
async function expireGrant(wallet: WalletTransaction, grant: GrantState): Promise<void> {
  const remaining = wallet.remainingOf(grant.id);
  if (remaining > 0n) {
    await wallet.post({
      kind: 'EXPIRY',
      idempotencyKey: `grant-expiry:${grant.id}`,
      requestHash: `grant-expiry:${grant.id}`,
      legs: [{ grantId: grant.id, amount: -remaining }],
      counterAccount: 'EXPIRED_CREDITS',
      description: grant.holdId ? 'Credits kept for a hold expired' : 'Credits expired',
      metadata: grant.holdId ? { grantId: grant.id, holdId: grant.holdId } : { grantId: grant.id },
      actor: SYSTEM_ACTOR,
    });
  }
  wallet.markExpired(grant.id);
}

/**
 * A hold reserves an amount, and its capture may need the very credit that is now expiring (a
 * promotional grant about to run out under a pending call). So before due grants expire, what
 * the wallet's pending holds would lack without them is moved, in a transaction of its own that
 * leaves the balance as it is, into grants kept for those holds (holdId set): only that hold's
 * capture may spend one (planDebit's capturingHold), and what it does not spend expires when the
 * hold ends (captured, released, or past its time). Credit that is not expiring covers holds
 * first; the holds are served oldest first.
 */
async function keepForHolds(wallet: WalletTransaction, due: readonly GrantState[]): Promise<void> {
  const holds = await wallet.tx.query<{ id: string; outstanding: string }>(
    `SELECT id, (amount - captured_amount)::text AS outstanding FROM holds
     WHERE wallet_id = $1 AND status = 'PENDING' AND expires_at > $2 ORDER BY created_at, id`,
    [wallet.state.id, wallet.now],
  );
  const dueIds = new Set(due.map((grant) => grant.id));
  const needs = holds.map((hold) => ({ holdId: hold.id, lacking: BigInt(hold.outstanding) - wallet.keptFor(hold.id) })).filter((need) => need.lacking > 0n);
  const lacking = needs.reduce((sum, need) => sum + need.lacking, 0n);
  const lasting = wallet.state.grants.filter((grant) => grant.holdId === null && !dueIds.has(grant.id)).reduce((sum, grant) => sum + grant.remaining, 0n);
  let toKeep = creditToKeep(lacking, lasting, due.reduce((sum, grant) => sum + grant.remaining, 0n));
  if (toKeep === 0n) return;
  // What each hold still lacks once lasting credit has covered the oldest ones.
  let covered = lasting;
  for (const need of needs) {
    const cover = need.lacking < covered ? need.lacking : covered;
    need.lacking -= cover;
    covered -= cover;
  }
  for (const source of due) {
    if (toKeep === 0n) break;
    let take = source.remaining < toKeep ? source.remaining : toKeep;
    if (take === 0n) continue;
    toKeep -= take;
    const legs: { grantId: string; amount: bigint }[] = [{ grantId: source.id, amount: -take }];
    const kept: { grantId: string; holdId: string }[] = [];
    for (const need of needs) {
      if (take === 0n) break;
      const part = need.lacking < take ? need.lacking : take;
      if (part === 0n) continue;
      need.lacking -= part;
      take -= part;
      const grantId = uuidv7();
      wallet.addGrant({
        id: grantId, kind: source.kind, amount: part, priority: source.priority, expiresAt: source.expiresAt, transactionId: '',
        description: 'Expiring credit kept for a pending hold', metadata: { keptFrom: source.id, holdId: need.holdId }, holdId: need.holdId,
      });
      legs.push({ grantId, amount: part });
      kept.push({ grantId, holdId: need.holdId });
    }
    const posted = await wallet.post({
      kind: 'EXPIRY',
      idempotencyKey: `grant-keep:${source.id}`,
      requestHash: `grant-keep:${source.id}`,
      legs,
      counterAccount: 'EXPIRED_CREDITS',
      description: 'Expiring credit kept for pending holds',
      metadata: { grantId: source.id, kept },
      actor: SYSTEM_ACTOR,
    });
    for (const { grantId } of kept) wallet.linkGrantTransaction(grantId, posted.id);
  }
}
