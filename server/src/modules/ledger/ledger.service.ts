import { hash as oneShotHash } from 'node:crypto';
import type { PrismaClient } from '../../generated/prisma/client.ts';
import type { Database } from '../../shared/db/database.ts';
import { pgArray } from '../../shared/db/arrays.ts';
import { AppError, conflict, invalidField, notFound } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { canonicalJson } from '../../shared/canonical-json.ts';
import { uuidv7 } from '../../shared/ids.ts';
import { laneOf } from '../../shared/lanes.ts';
import { ATTOS_PER_NANO, formatNanos } from '../../shared/money.ts';
import { customerArchived } from '../customers/customers.service.ts';
import { holdRecordOf, type HoldRecord, type HoldRow } from './ledger.holds.ts';
import type { PubSub } from '../../shared/pubsub.ts';
import { isUuid, requireStorableText, requireTextAtMost } from '../../shared/validation.ts';
import {
  CONSUMPTION_KEYS,
  creditLegs,
  planDebit,
  type ConsumptionKey,
  type GrantKind,
  type WalletState,
} from './ledger.planner.ts';
import {
  GRANT_DUE,
  LedgerStore,
  SYSTEM_ACTOR,
  type AccountKind,
  type Actor,
  type LedgerBatch,
  type PostedTransaction,
  type WalletKey,
  type WalletTransaction,
} from './ledger.store.ts';

export type { Actor, PostedTransaction };
export { SYSTEM_ACTOR };
export type { LedgerBatch, WalletKey, WalletTransaction };
export { debitRequestHash, insufficientFunds, legacyDebitRequestHash, requestHash };

export const walletTopic = (customerId: string) => `wallet:${customerId}`;

/** What subscribers (and the gateway's balance cache) receive after every committed change. */
export interface BalanceEvent {
  [key: string]: unknown;
  customerId: string;
  currency: string;
  walletId: string;
  balance: string;
  available: string;
  /** How far below zero the wallet may go (the overage allowance), so a reader can tell what is spendable. */
  overdraftLimit: string;
  transactionIds: string[];
  /**
   * The wallet's version after the change (a decimal string; see WalletState.version). Instances
   * publish on their own, so events of one wallet may arrive out of order: a lower version than
   * one already seen is an older state (an equal one, the same state announced again).
   */
  version: string;
}

/**
 * `event` as a subscriber that already had the events in `newest` (the latest of each wallet, by
 * version) should get it: as it is when it is the newest; when it arrived after a newer one, with
 * the newer one's figures, so the last event pushed still shows the wallet as it is and the
 * transactions it posted are not lost; or null, when it posted none (its change is superseded).
 */
export function inVersionOrder(event: BalanceEvent, newest: Map<string, BalanceEvent>): BalanceEvent | null {
  // An event without a version (from an instance before it) is taken as it comes.
  if (typeof event.version !== 'string') return event;
  const latest = newest.get(event.walletId);
  if (!latest || BigInt(event.version) >= BigInt(latest.version)) {
    newest.set(event.walletId, event);
    return event;
  }
  if (event.transactionIds.length === 0) return null;
  return { ...event, balance: latest.balance, available: latest.available, overdraftLimit: latest.overdraftLimit, version: latest.version };
}

export interface DebitInput {
  customerId: string;
  currency: string;
  /** Exact charge in atto-units (1e-18); may be finer than a nano. */
  amountAttos: bigint;
  idempotencyKey: string;
  description?: string | null;
  metadata?: Record<string, unknown> | null;
  sourceRef?: string | null;
  occurredAt?: Date | null;
}

export interface DebitResult {
  transaction: PostedTransaction;
  /** True when this key was seen before: the first result, and nothing moved. */
  replayed: boolean;
}

export interface GrantInput {
  customerId: string;
  currency: string;
  amountNanos: bigint;
  kind: GrantKind;
  expiresAt?: Date | null;
  priority?: number | null;
  description?: string | null;
  metadata?: Record<string, unknown> | null;
  idempotencyKey: string;
}

/** What one settle or expiry run expired. */
export interface Expired {
  grantsExpired: number;
  holdsExpired: number;
}

type Outcome = { ok: true; value: DebitResult } | { ok: false; error: unknown };

interface PendingDebit {
  merchantId: string;
  actor: Actor;
  input: DebitInput;
  requestHash: string;
  resolve: (outcome: Outcome) => void;
}

const MAX_BATCH = 500;
/**
 * Debit lanes on PostgreSQL. Two keep both of a small machine's cores busy; more split the same
 * debits into smaller batches, each paying five round trips and a commit, which costs more than
 * the extra parallelism gains (bench/ledger, 1,000 wallets at 5,000/s: p50 12–17 ms against 18–22 with four).
 */
const DEBIT_LANES = 2;

interface Lane {
  queue: PendingDebit[];
  draining: boolean;
  /** When a batch of this lane last met a key already used (a replay or a race), in ms. */
  replaySeenAt: number;
}

/**
 * A lane's batches take their keys as new (KeyPreload.assumeNew) unless one met a used key this
 * recently: a client that keeps replaying then costs one probe per key, not a rolled-back batch.
 */
export const REPLAY_MEMORY_MS = 10_000;

export const MAX_HOLD_TTL_SECONDS = 7 * 24 * 3600;
const MAX_KEY_LENGTH = 255;
/**
 * A change's description or reason, and a debit's reference: stored on its transaction and sent
 * with every listing and live push of it, so each is held to a length (as a plan's description is).
 */
const MAX_DESCRIPTION_LENGTH = 1000;
const MAX_SOURCE_REF_LENGTH = 255;
/**
 * Idempotency keys the ledger writes transactions under by itself: expiring a grant, capturing
 * a hold, charging a batch of usage (see UsageService.postUsage). A caller's key may not start
 * with one, or it could take the key first and wedge that wallet's expiry or capture.
 */
const SYSTEM_KEY_PREFIXES = ['grant-expiry:', 'grant-keep:', 'hold-capture:', 'usage:'] as const;
const COUNTER_ACCOUNT: Record<GrantKind, AccountKind> = {
  PAID: 'PAYMENT_CLEARING',
  PROMOTIONAL: 'PROMOTIONAL',
  PLAN_INCLUDED: 'PLAN_CREDITS',
};

function requestHash(parts: Record<string, unknown>): string {
  let json: string;
  try {
    // The same text either way; without a replacer JSON.stringify is several times faster, and it
    // throws on a bigint, the one value that needs the replacer (usage records hold none).
    json = JSON.stringify(parts);
  } catch {
    json = JSON.stringify(parts, (_key, value) => (typeof value === 'bigint' ? value.toString() : value));
  }
  // The one-shot hash skips building a Hash object: ingest hashes every event.
  return oneShotHash('sha256', json, 'hex');
}

/**
 * A debit's request: all it stores that its caller chose, so a key reused for another debit is a
 * conflict. Metadata with its keys sorted (a retry may serialize them in another order), and left
 * out, null and {} alike, as grants hash it.
 */
function debitRequestHash(customerId: string, input: DebitInput): string {
  // attos as its digits up front: the text hashed is the same, and requestHash keeps to its fast path.
  return requestHash({
    op: 'debit',
    customerId,
    currency: input.currency,
    attos: input.amountAttos.toString(),
    description: input.description ?? null,
    metadata: canonicalJson(input.metadata ?? {}, 'metadata', false),
    sourceRef: input.sourceRef ?? null,
  });
}

/** How debits were hashed before their description, metadata and sourceRef counted: keys recorded then still replay. */
function legacyDebitRequestHash(customerId: string, input: DebitInput): string {
  return requestHash({ op: 'debit', customerId, currency: input.currency, attos: input.amountAttos.toString() });
}

function requireKey(key: string): string {
  const trimmed = key.trim();
  if (!trimmed) throw invalidField('idempotencyKey', 'is required: retries with the same key never charge twice');
  if (trimmed.length > MAX_KEY_LENGTH) throw invalidField('idempotencyKey', `must be at most ${MAX_KEY_LENGTH} characters`);
  requireStorableText('idempotencyKey', trimmed);
  return trimmed;
}

/** A caller's key for a ledger transaction: not one of the keys the ledger writes under itself. */
function requireCallerKey(key: string): string {
  const trimmed = requireKey(key);
  const reserved = SYSTEM_KEY_PREFIXES.find((prefix) => trimmed.startsWith(prefix));
  if (reserved) throw invalidField('idempotencyKey', `must not start with "${reserved}": the ledger uses those keys itself`);
  return trimmed;
}

/** A data error (SQLSTATE class 22, e.g. text PostgreSQL cannot store): caused by one item, not the batch. */
export function isDataError(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return typeof code === 'string' && code.startsWith('22');
}

/** Runs `attempt` again when it lost a unique-key race (the next try sees the winner's row), three tries at most. */
async function retryingKeyRaces<T>(attempt: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (error) {
      // A deadlock PostgreSQL broke by rolling this attempt back: nothing was written, so it runs again.
      if (isSqlDeadlock(error) && tries < 3) continue;
      if (!isSqlUniqueViolation(error)) throw error;
      if (tries >= 3) throw keyRaceConflict(error);
    }
  }
}

/** SQLSTATE 40P01: PostgreSQL rolled this transaction back to break a lock cycle. */
function isSqlDeadlock(error: unknown): boolean {
  return (error as { code?: unknown })?.code === '40P01';
}

/** An operation of a batch that took its keys as new failed, and its key turned out to be used: a replay to answer as such. */
export class KeyFoundUsed extends Error {}

/** A unique-key race lost three times in a row: answered as a conflict, not an internal error. */
function keyRaceConflict(error: unknown): AppError {
  return conflict('Another request with the same idempotency key was written at the same moment; retry it', {
    constraint: (error as { constraint?: unknown })?.constraint ?? null,
  });
}

/** SQLSTATE 23505 from raw SQL (Prisma's own unique error is shared/prisma-errors' isUniqueViolation). */
function isSqlUniqueViolation(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return code === '23505';
}

function insufficientFunds(required: bigint, available: bigint, currency: string): AppError {
  return new AppError('INSUFFICIENT_FUNDS', `Insufficient credit: ${formatNanos(required)} ${currency} needed, ${formatNanos(available)} available`, {
    required: formatNanos(required),
    available: formatNanos(available),
    currency,
  });
}

/**
 * The first result of a key used before, or a conflict if it was used for another request.
 * `legacyHash` is the request hashed as an earlier version did, for keys recorded then: asked
 * for only when the current hash does not match.
 */
function replayOrConflict(existing: PostedTransaction, hash: string, legacyHash?: () => string): DebitResult {
  if (existing.requestHash !== hash && (!legacyHash || existing.requestHash !== legacyHash())) {
    throw conflict('This idempotency key was already used for a different request', { idempotencyKey: existing.idempotencyKey, transactionId: existing.id });
  }
  return { transaction: existing, replayed: true };
}

export class LedgerService {
  readonly store: LedgerStore;
  private readonly lanes: Lane[];
  private readonly knownCustomers = new Map<string, string>();
  private readonly customerLookups = new Map<string, Promise<boolean>>();

  constructor(
    private readonly db: Database,
    private readonly pubsub: PubSub,
    private readonly logger: Logger,
    private readonly clock: () => Date = () => new Date(),
  ) {
    this.store = new LedgerStore(db);
    // PGlite has one connection, so one lane; PostgreSQL gets a few, leaving pool room for reads.
    this.lanes = Array.from({ length: db.kind === 'pglite' ? 1 : DEBIT_LANES }, () => ({ queue: [], draining: false, replaySeenAt: -Infinity }));
  }

  private get prisma(): PrismaClient {
    return this.db.prisma;
  }

  /**
   * Tenancy check, cached: customers are never deleted, so a positive answer stays true. Answers
   * the id as stored (lower case): PostgreSQL takes a uuid in any case, but the ledger keys
   * wallets, lanes, request hashes and balance topics by the id's text, so an id given in upper
   * case must not reach them as it is.
   */
  async assertCustomer(merchantId: string, givenId: string): Promise<string> {
    const customerId = isUuid(givenId) ? givenId.toLowerCase() : givenId;
    if (this.knownCustomers.get(customerId) === merchantId) return customerId;
    // A burst for a customer not yet seen (a restart under load) asks the database once.
    const key = `${merchantId}:${customerId}`;
    let lookup = this.customerLookups.get(key);
    if (!lookup) {
      lookup = this.lookUpCustomer(merchantId, customerId).finally(() => this.customerLookups.delete(key));
      this.customerLookups.set(key, lookup);
    }
    if (!(await lookup)) throw notFound('Customer', givenId);
    return customerId;
  }

  private async lookUpCustomer(merchantId: string, customerId: string): Promise<boolean> {
    if (!isUuid(customerId)) return false;
    const rows = await this.db.withConnection((connection) =>
      connection.query(`SELECT 1 FROM customers WHERE id = $1 AND merchant_id = $2`, [customerId, merchantId]),
    );
    if (rows.length === 0) return false;
    if (this.knownCustomers.size > 100_000) this.knownCustomers.clear();
    this.knownCustomers.set(customerId, merchantId);
    return true;
  }

  // ---------------------------------------------------------------- debits (hot path)

  /**
   * Charges a wallet. Debits are coalesced: each wallet belongs to one of a few lanes, and
   * while a lane's batch is in its transaction the next debits queue, then go together — one
   * transaction of about five round trips for hundreds of debits across many wallets. A wallet
   * stays on one lane, so batches in this process never wait on each other's row locks.
   */
  async debit(merchantId: string, actor: Actor, input: DebitInput): Promise<DebitResult> {
    const key = requireCallerKey(input.idempotencyKey);
    if (input.amountAttos <= 0n) throw invalidField('amount', 'must be greater than zero');
    requireTextAtMost('description', input.description, MAX_DESCRIPTION_LENGTH);
    requireTextAtMost('sourceRef', input.sourceRef, MAX_SOURCE_REF_LENGTH);
    requireStorableText('metadata', input.metadata);
    const customerId = await this.assertCustomer(merchantId, input.customerId);
    const hash = debitRequestHash(customerId, input);
    const lane = this.lanes[laneOf(`${customerId}:${input.currency}`, this.lanes.length)]!;
    const outcome = await new Promise<Outcome>((resolve) => {
      lane.queue.push({ merchantId, actor, input: { ...input, customerId, idempotencyKey: key }, requestHash: hash, resolve });
      if (!lane.draining) void this.drain(lane);
    });
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  private async drain(lane: Lane): Promise<void> {
    lane.draining = true;
    try {
      while (lane.queue.length > 0) {
        // Callers answered by the last batch come straight back (closed loops, retries): let
        // them queue first, so they ride this batch instead of forcing a lone one after it.
        await new Promise<void>((resolve) => setImmediate(resolve));
        await this.runDebitBatch(lane, lane.queue.splice(0, MAX_BATCH));
      }
    } finally {
      lane.draining = false;
    }
  }

  /**
   * One transaction over several wallets (locked, in id order) for work that posts to them —
   * the debit lanes and usage ingestion. Balance events go out after COMMIT. A unique-key race
   * with another instance (the same idempotency key at the same moment) is retried: the second
   * attempt sees the winner's rows.
   */
  async runBatch<T>(
    wallets: readonly WalletKey[],
    work: (batch: LedgerBatch) => Promise<T>,
    preloadKeys: readonly { merchantId: string; key: string }[] = [],
    keysLikelyNew?: { onReplay: () => void },
  ): Promise<T> {
    const attempt = (assumeNew: boolean) => this.store.withWallets(wallets, this.clock(), work, { keys: preloadKeys, assumeNew });
    let outcome: Awaited<ReturnType<typeof attempt>> | null = null;
    if (keysLikelyNew) {
      // A replay among the keys rolls this attempt back (nothing written, nothing published);
      // the next attempt reads them and answers it.
      try {
        outcome = await attempt(true);
      } catch (error) {
        if (!isSqlUniqueViolation(error) && !(error instanceof KeyFoundUsed) && !isSqlDeadlock(error)) throw error;
        if (!isSqlDeadlock(error)) keysLikelyNew.onReplay();
      }
    }
    const { result, batch } = outcome ?? (await retryingKeyRaces(() => attempt(false)));
    for (const wallet of batch.wallets.values()) {
      if (wallet.posted.length > 0 || wallet.heldChanged) this.publish(wallet.customerId, wallet.currency, wallet.state, wallet.posted);
    }
    return result;
  }

  private async runDebitBatch(lane: Lane, batch: PendingDebit[], mayTakeKeysAsNew = true): Promise<void> {
    const keysTakenAsNew = mayTakeKeysAsNew && performance.now() - lane.replaySeenAt > REPLAY_MEMORY_MS;
    const walletKeys = batch.map((item) => ({ merchantId: item.merchantId, customerId: item.input.customerId, currency: item.input.currency }));
    try {
      const outcomes = await this.runBatch(
        walletKeys,
        async (ledger) => {
          const results: Outcome[] = [];
          for (const [index, item] of batch.entries()) {
            try {
              results.push({ ok: true, value: await this.debitOne(ledger.wallet(walletKeys[index]!), item) });
            } catch (error) {
              results.push({ ok: false, error });
            }
          }
          if (ledger.keysAssumedNew) {
            const failed = batch.filter((_item, index) => !results[index]!.ok).map((item) => ({ merchantId: item.merchantId, key: item.input.idempotencyKey }));
            if (await ledger.anyKeyUsed(failed)) throw new KeyFoundUsed();
          }
          return results;
        },
        batch.map((item) => ({ merchantId: item.merchantId, key: item.input.idempotencyKey })),
        keysTakenAsNew ? { onReplay: () => (lane.replaySeenAt = performance.now()) } : undefined,
      );
      batch.forEach((item, index) => item.resolve(outcomes[index]!));
    } catch (error) {
      // One debit's unstorable data fails the statement for every debit in the batch: halve the
      // batch until the culprit goes alone, so the others are charged.
      if (isDataError(error)) {
        // Its key read first: a debit refused alone may be a replay, answered with its first result.
        if (batch.length === 1 && keysTakenAsNew) return this.runDebitBatch(lane, batch, false);
        if (batch.length === 1) {
          const refused = new AppError('VALIDATION', `The database refused this debit's data: ${(error as Error).message}`);
          return batch[0]!.resolve({ ok: false, error: refused });
        }
        const half = Math.ceil(batch.length / 2);
        await this.runDebitBatch(lane, batch.slice(0, half), false);
        await this.runDebitBatch(lane, batch.slice(half), false);
        return;
      }
      this.logger.error({ err: error, size: batch.length }, 'debit batch failed');
      for (const item of batch) item.resolve({ ok: false, error });
    }
  }

  private async debitOne(wallet: WalletTransaction, item: PendingDebit): Promise<DebitResult> {
    const { input } = item;
    const prior = (await wallet.existing([input.idempotencyKey])).get(input.idempotencyKey);
    if (prior) return replayOrConflict(prior, item.requestHash, () => legacyDebitRequestHash(input.customerId, input));
    // Usage from before the archive (late) is still charged, as ingestion records it.
    if (wallet.customerArchivedAt && (input.occurredAt ?? wallet.now) >= wallet.customerArchivedAt) {
      throw customerArchived(input.customerId, wallet.customerArchivedAt, 'it is not charged for usage after that');
    }
    const plan = planDebit(wallet.state, input.amountAttos, { allowOverdraft: true });
    if (!plan.ok) throw insufficientFunds(plan.nanos, plan.available, input.currency);
    const transaction = await wallet.post({
      kind: 'USAGE',
      idempotencyKey: input.idempotencyKey,
      requestHash: item.requestHash,
      legs: plan.legs,
      counterAccount: 'USAGE_REVENUE',
      description: input.description,
      metadata: input.amountAttos % ATTOS_PER_NANO !== 0n ? { ...input.metadata, exactAmountAttos: input.amountAttos.toString() } : (input.metadata ?? null),
      sourceRef: input.sourceRef,
      occurredAt: input.occurredAt,
      actor: item.actor,
    });
    wallet.setCarry(plan.carry);
    return { transaction, replayed: false };
  }

  // ---------------------------------------------------------------- credits and corrections

  async grantCredits(merchantId: string, actor: Actor, input: GrantInput): Promise<{ transaction: PostedTransaction; grantId: string; replayed: boolean }> {
    const key = requireCallerKey(input.idempotencyKey);
    if (input.amountNanos <= 0n) throw invalidField('amount', 'must be greater than zero');
    requireTextAtMost('description', input.description, MAX_DESCRIPTION_LENGTH);
    requireStorableText('metadata', input.metadata);
    input = { ...input, customerId: await this.assertCustomer(merchantId, input.customerId) };
    // Optional fields as the grant stores them, so a retry that sends them as null (or as their
    // defaults) instead of leaving them out is the same request, not a conflict.
    const hash = requestHash({
      op: 'grant',
      customerId: input.customerId,
      currency: input.currency,
      amountNanos: input.amountNanos,
      kind: input.kind,
      expiresAt: input.expiresAt ?? null,
      priority: input.priority ?? 0,
      description: input.description ?? null,
      // Keys sorted: a client may serialize a retry's metadata in another order.
      metadata: canonicalJson(input.metadata ?? {}, 'metadata', false),
    });
    // Grants recorded before this hashed the input as given (absent fields left out): one sent
    // again exactly as then must still replay.
    const legacyHash = () => requestHash({ op: 'grant', ...input, idempotencyKey: undefined });
    return this.single(merchantId, input.customerId, input.currency, key, { hash, legacyHash }, async (wallet) => {
      // Checked for a new key only: a retry after the time has passed replays the first result.
      if (input.expiresAt && input.expiresAt <= wallet.now) throw invalidField('expiresAt', 'must be in the future');
      // Time-ordered, so grants alike created in one millisecond are still spent in creation order (sortGrants' last tie-break).
      const grantId = uuidv7();
      wallet.addGrant({
        id: grantId,
        kind: input.kind,
        amount: input.amountNanos,
        priority: input.priority ?? 0,
        expiresAt: input.expiresAt ?? null,
        transactionId: '',
        description: input.description ?? null,
        metadata: input.metadata ?? {},
      });
      const transaction = await wallet.post({
        kind: 'GRANT',
        idempotencyKey: key,
        requestHash: hash,
        legs: creditLegs(wallet.state, input.amountNanos, grantId),
        counterAccount: COUNTER_ACCOUNT[input.kind],
        description: input.description ?? `${input.kind.toLowerCase().replace('_', ' ')} credits`,
        metadata: { ...(input.metadata ?? {}), grantId, grantKind: input.kind },
        actor,
      });
      wallet.linkGrantTransaction(grantId, transaction.id);
      return { transaction, grantId };
    }, async (prior) => ({ transaction: prior, grantId: await this.grantIdOf(prior.id) }));
  }

  /**
   * A merchant's correction, with a reason. Positive amounts add promotional credit (expiring at
   * `expiresAt` when given); negative ones draw from the balance and may take it below zero (the merchant decides).
   */
  async adjustBalance(
    merchantId: string,
    actor: Actor,
    input: { customerId: string; currency: string; amountNanos: bigint; reason: string; idempotencyKey: string; expiresAt?: Date | null },
  ): Promise<{ transaction: PostedTransaction; grantId?: string; replayed: boolean }> {
    const key = requireCallerKey(input.idempotencyKey);
    const reason = input.reason?.trim();
    if (!reason) throw invalidField('reason', 'is required for an adjustment');
    requireTextAtMost('reason', reason, MAX_DESCRIPTION_LENGTH);
    if (input.amountNanos === 0n) throw invalidField('amount', 'must not be zero');
    if (input.expiresAt && input.amountNanos < 0n) throw invalidField('expiresAt', 'applies only to credit added (a positive amount)');
    input = { ...input, customerId: await this.assertCustomer(merchantId, input.customerId) };
    // The expiry counts only when given, so adjustments without one (every one before it counted) hash as before.
    const expiresAt = input.expiresAt ?? null;
    const hash = requestHash({ op: 'adjust', customerId: input.customerId, currency: input.currency, nanos: input.amountNanos, reason, ...(expiresAt ? { expiresAt } : {}) });
    return this.single(merchantId, input.customerId, input.currency, key, { hash }, async (wallet) => {
      // Checked for a new key only, as grantCredits does: a retry after the time has passed replays.
      if (expiresAt && expiresAt <= wallet.now) throw invalidField('expiresAt', 'must be in the future');
      if (input.amountNanos > 0n) {
        const grantId = uuidv7();
        // The reason is the merchant's (secret key only, on the transaction): the grant, which
        // the customer's own token may list, gets the same neutral label as the transaction.
        wallet.addGrant({ id: grantId, kind: 'PROMOTIONAL', amount: input.amountNanos, priority: 0, expiresAt, transactionId: '', description: 'Balance adjustment', metadata: {} });
        const transaction = await wallet.post({
          kind: 'ADJUSTMENT', idempotencyKey: key, requestHash: hash, legs: creditLegs(wallet.state, input.amountNanos, grantId),
          counterAccount: 'ADJUSTMENTS', reason, description: 'Balance adjustment', metadata: { grantId }, actor,
        });
        wallet.linkGrantTransaction(grantId, transaction.id);
        return { transaction, grantId };
      }
      const plan = planDebit(wallet.state, -input.amountNanos * ATTOS_PER_NANO, { allowOverdraft: true, ignoreLimits: true, useCarry: false });
      if (!plan.ok) throw new Error('an unbounded debit cannot be refused');
      const transaction = await wallet.post({
        kind: 'ADJUSTMENT', idempotencyKey: key, requestHash: hash, legs: plan.legs, counterAccount: 'ADJUSTMENTS', reason, description: 'Balance adjustment', actor,
      });
      return { transaction };
    }, async (prior) => (prior.amount > 0n ? { transaction: prior, grantId: await this.grantIdOf(prior.id) } : { transaction: prior }));
  }

  /** Takes paid credit back out (the money goes back through the payment provider). */
  async refundCredits(
    merchantId: string,
    actor: Actor,
    input: { customerId: string; currency: string; amountNanos: bigint; reason: string; idempotencyKey: string },
  ): Promise<{ transaction: PostedTransaction; replayed: boolean }> {
    const key = requireCallerKey(input.idempotencyKey);
    const reason = input.reason?.trim();
    if (!reason) throw invalidField('reason', 'is required for a refund');
    requireTextAtMost('reason', reason, MAX_DESCRIPTION_LENGTH);
    if (input.amountNanos <= 0n) throw invalidField('amount', 'must be greater than zero');
    input = { ...input, customerId: await this.assertCustomer(merchantId, input.customerId) };
    const hash = requestHash({ op: 'refund', customerId: input.customerId, currency: input.currency, nanos: input.amountNanos, reason });
    return this.single(merchantId, input.customerId, input.currency, key, { hash }, async (wallet) => {
      const plan = planDebit(wallet.state, input.amountNanos * ATTOS_PER_NANO, { allowOverdraft: false, onlyKinds: ['PAID'], useCarry: false });
      if (!plan.ok) throw insufficientFunds(plan.nanos, plan.available, input.currency);
      const transaction = await wallet.post({
        kind: 'REFUND', idempotencyKey: key, requestHash: hash, legs: plan.legs, counterAccount: 'PAYMENT_CLEARING', reason, description: 'Refund of paid credits', actor,
      });
      return { transaction };
    }, async (prior) => ({ transaction: prior }));
  }

  /** One idempotent operation under the wallet lock, with its replay and its event. */
  private async single<T extends { transaction: PostedTransaction }>(
    merchantId: string,
    customerId: string,
    currency: string,
    key: string,
    request: { hash: string; legacyHash?: () => string },
    work: (wallet: WalletTransaction) => Promise<T>,
    replay: (prior: PostedTransaction) => Promise<T>,
  ): Promise<T & { replayed: boolean }> {
    const { result, posted, state } = await retryingKeyRaces(() =>
      this.store.withWallet(merchantId, customerId, currency, this.clock(), async (wallet) => {
        const prior = (await wallet.existing([key])).get(key);
        if (prior) {
          replayOrConflict(prior, request.hash, request.legacyHash);
          return { replayedOf: prior };
        }
        return { value: await work(wallet) };
      }),
    );
    // Even a replay may have expired due grants on its way through the lock.
    if (posted.length > 0) this.publish(customerId, currency, state, posted);
    if ('replayedOf' in result) return { ...(await replay(result.replayedOf!)), replayed: true };
    return { ...result.value!, replayed: false };
  }

  private async grantIdOf(transactionId: string): Promise<string> {
    const grant = await this.prisma.creditGrant.findFirst({ where: { transactionId }, select: { id: true } });
    return grant?.id ?? '';
  }

  // ---------------------------------------------------------------- holds

  async createHold(
    merchantId: string,
    actor: Actor,
    input: { customerId: string; currency: string; amountNanos: bigint; ttlSeconds: number; idempotencyKey: string; description?: string | null },
  ): Promise<{ hold: HoldRecord; replayed: boolean }> {
    const key = requireKey(input.idempotencyKey);
    if (input.amountNanos <= 0n) throw invalidField('amount', 'must be greater than zero');
    requireTextAtMost('description', input.description, MAX_DESCRIPTION_LENGTH);
    if (!Number.isInteger(input.ttlSeconds) || input.ttlSeconds < 1 || input.ttlSeconds > MAX_HOLD_TTL_SECONDS) {
      throw invalidField('ttlSeconds', `must be a whole number from 1 to ${MAX_HOLD_TTL_SECONDS}`);
    }
    input = { ...input, customerId: await this.assertCustomer(merchantId, input.customerId) };
    const now = this.clock();
    // Two calls with one key for different customers lock different wallets, so both can miss the
    // other's hold; the unique index stops the second, and its retry replays the first.
    const { result, state, posted } = await retryingKeyRaces(() => this.store.withWallet(merchantId, input.customerId, input.currency, now, async (wallet) => {
      const prior = await this.findHold(wallet, { merchantId, idempotencyKey: key });
      if (prior) {
        if (
          prior.customerId !== input.customerId || prior.amount !== input.amountNanos || prior.currency !== input.currency ||
          prior.requestedTtlSeconds !== input.ttlSeconds || prior.description !== (input.description ?? null)
        ) {
          throw conflict('This idempotency key was already used for a different hold', { idempotencyKey: key, holdId: prior.id });
        }
        return { hold: prior, replayed: true };
      }
      if (wallet.customerArchivedAt) throw customerArchived(input.customerId, wallet.customerArchivedAt, 'no credit is held for it');
      const available = wallet.state.balance - wallet.state.held;
      if (available - input.amountNanos < -wallet.state.overdraftLimit) throw insufficientFunds(input.amountNanos, available, input.currency);
      // Time-ordered: holds made in one millisecond are kept for (keepForHolds) in the order they were made.
      const id = uuidv7();
      // From the wallet's time, not the stamp taken before its lock (see LedgerStore.withWallets): never born lapsed.
      const expiresAt = new Date(wallet.now.getTime() + input.ttlSeconds * 1000);
      await wallet.tx.query(
        // The limit it was judged against is kept: its capture may use it, though the limit be lowered since.
        `INSERT INTO holds (id, merchant_id, wallet_id, customer_id, currency, amount, expires_at, idempotency_key, description, created_at, metadata,
           created_by_kind, created_by_api_key_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, jsonb_build_object('ttlSeconds', $11::int, 'overdraftLimit', $14::text), $12, $13)`,
        [id, merchantId, wallet.state.id, input.customerId, input.currency, input.amountNanos.toString(), expiresAt, key, input.description ?? null, wallet.now, input.ttlSeconds,
          actor.kind, actor.apiKeyId, wallet.state.overdraftLimit.toString()],
      );
      wallet.state.held += input.amountNanos;
      const hold: HoldRecord = {
        id, merchantId, walletId: wallet.state.id, customerId: input.customerId, currency: input.currency, amount: input.amountNanos,
        capturedAmount: 0n, status: 'PENDING', expiresAt, idempotencyKey: key, description: input.description ?? null, captureTransactionId: null, createdAt: wallet.now,
        createdBy: actor, finalizedAt: null, finalizedBy: null, requestedTtlSeconds: input.ttlSeconds, overdraftLimitAtHold: wallet.state.overdraftLimit,
      };
      return { hold, replayed: false };
    }));
    // A replay moves nothing, but the lock it took may have expired due grants on the way.
    if (!result.replayed || posted.length > 0) this.publish(input.customerId, input.currency, state, posted);
    return result;
  }

  /** Charges up to the held amount and frees the rest; capturing again replays. */
  async captureHold(merchantId: string, actor: Actor, holdId: string, amountNanos?: bigint | null): Promise<{ hold: HoldRecord; transaction: PostedTransaction | null; replayed: boolean }> {
    const found = await this.getHold(merchantId, holdId);
    const amount = amountNanos ?? found.amount;
    if (amount < 0n) throw invalidField('amount', 'must not be negative');
    if (amount > found.amount) throw invalidField('amount', `must not exceed the held ${formatNanos(found.amount)}`);
    const key = `hold-capture:${found.id}`;
    const hash = requestHash({ op: 'capture', holdId: found.id, nanos: amount });
    const { result, state, posted } = await this.store.withWallet(merchantId, found.customerId, found.currency, this.clock(), async (wallet) => {
      const hold = (await this.findHold(wallet, { id: found.id }, true))!;
      if (hold.status === 'CAPTURED') {
        const prior = (await wallet.existing([key])).get(key) ?? null;
        if (hold.capturedAmount !== amount) throw conflict('This hold was already captured for a different amount', { holdId: hold.id, captured: formatNanos(hold.capturedAmount) });
        return { hold, transaction: prior, replayed: true };
      }
      if (hold.status !== 'PENDING' || hold.expiresAt <= wallet.now) {
        throw conflict(`This hold can no longer be captured: it is ${hold.status === 'PENDING' ? 'expired' : hold.status.toLowerCase()}`, { holdId: hold.id });
      }
      let transaction: PostedTransaction | null = null;
      if (amount > 0n) {
        // Credit kept for this hold past its expiry (see keepForHolds) is what it spends first. What
        // the hold reserved was judged against the limit of its time: a limit lowered since binds new
        // spending, not this (as a card authorization stays capturable).
        const floorOfHold = hold.overdraftLimitAtHold !== null && hold.overdraftLimitAtHold > wallet.state.overdraftLimit
          ? { ...wallet.state, overdraftLimit: hold.overdraftLimitAtHold } : wallet.state;
        const plan = planDebit(floorOfHold, amount * ATTOS_PER_NANO, { allowOverdraft: true, heldReleased: hold.amount, useCarry: false, capturingHold: hold.id });
        if (!plan.ok) throw insufficientFunds(plan.nanos, plan.available, hold.currency);
        transaction = await wallet.post({
          kind: 'HOLD_CAPTURE', idempotencyKey: key, requestHash: hash, legs: plan.legs, counterAccount: 'USAGE_REVENUE',
          description: hold.description ?? 'Captured hold', metadata: { holdId: hold.id }, sourceRef: hold.id, actor,
        });
      }
      await wallet.tx.query(
        `UPDATE holds SET status = 'CAPTURED', captured_amount = $2, capture_transaction_id = $3, finalized_at = $4, finalized_by_kind = $5, finalized_by_api_key_id = $6
         WHERE id = $1`,
        [hold.id, amount.toString(), transaction?.id ?? null, wallet.now, actor.kind, actor.apiKeyId],
      );
      wallet.state.held -= hold.amount;
      await wallet.expireKeptFor(hold.id);
      const captured = { ...hold, status: 'CAPTURED' as const, capturedAmount: amount, captureTransactionId: transaction?.id ?? null, finalizedAt: wallet.now, finalizedBy: actor };
      return { hold: captured, transaction, replayed: false };
    });
    if (!result.replayed || posted.length > 0) this.publish(found.customerId, found.currency, state, posted);
    return result;
  }

  /**
   * Keeps a pending hold alive for `ttlSeconds` more from now (never shortens it): a caller whose
   * work outlasts the TTL it first asked for (a long stream through the gateway) renews it, so
   * its reservation does not lapse while the work goes on. A hold no longer pending is a CONFLICT.
   */
  async extendHold(merchantId: string, holdId: string, ttlSeconds: number): Promise<HoldRecord> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_HOLD_TTL_SECONDS) {
      throw invalidField('ttlSeconds', `must be a whole number from 1 to ${MAX_HOLD_TTL_SECONDS}`);
    }
    const found = await this.getHold(merchantId, holdId);
    const { result, state, posted } = await this.store.withWallet(merchantId, found.customerId, found.currency, this.clock(), async (wallet) => {
      const hold = (await this.findHold(wallet, { id: found.id }, true))!;
      if (hold.status !== 'PENDING') throw conflict(`This hold can no longer be extended: it is ${hold.status.toLowerCase()}`, { holdId: hold.id });
      const expiresAt = new Date(Math.max(hold.expiresAt.getTime(), wallet.now.getTime() + ttlSeconds * 1000));
      await wallet.tx.query(`UPDATE holds SET expires_at = $2 WHERE id = $1`, [hold.id, expiresAt]);
      return { ...hold, expiresAt };
    });
    // It reserves what it did; but grants may have expired on the way through the lock.
    if (posted.length > 0) this.publish(found.customerId, found.currency, state, posted);
    return result;
  }

  async releaseHold(merchantId: string, actor: Actor, holdId: string): Promise<HoldRecord> {
    const found = await this.getHold(merchantId, holdId);
    const { result, state, posted } = await this.store.withWallet(merchantId, found.customerId, found.currency, this.clock(), async (wallet) => {
      const hold = (await this.findHold(wallet, { id: found.id }, true))!;
      if (hold.status === 'RELEASED') return { hold, changed: false };
      if (hold.status !== 'PENDING') throw conflict(`This hold is already ${hold.status.toLowerCase()}`, { holdId: hold.id });
      await wallet.tx.query(`UPDATE holds SET status = 'RELEASED', finalized_at = $2, finalized_by_kind = $3, finalized_by_api_key_id = $4 WHERE id = $1`, [
        hold.id, wallet.now, actor.kind, actor.apiKeyId,
      ]);
      if (hold.expiresAt > wallet.now) wallet.state.held -= hold.amount;
      await wallet.expireKeptFor(hold.id);
      return { hold: { ...hold, status: 'RELEASED' as const, finalizedAt: wallet.now, finalizedBy: actor }, changed: true };
    });
    // Released before, it frees nothing; but grants may have expired on the way through the lock.
    if (result.changed || posted.length > 0) this.publish(found.customerId, found.currency, state, posted);
    return result.hold;
  }

  /**
   * Releases holds inside a batch that already has their wallets locked, so what they freed
   * cannot be reserved by anyone else before the batch's charges are planned (the gateway
   * releases a call's reservation in the transaction that charges its usage). A hold is
   * released only while PENDING and within its time, of this merchant and of the wallet named
   * with it; anything else (already released, captured or expired, another wallet's) is left as
   * it is. A hold past its time reads EXPIRED (holdRecordOf), at its expiry, by the system:
   * released here, it read RELEASED by the caller, later, and its audit trail changed after the fact.
   */
  async releaseHoldsInBatch(batch: LedgerBatch, merchantId: string, actor: Actor, holds: readonly { holdId: string; wallet: WalletTransaction }[]): Promise<void> {
    const valid = holds.filter((hold) => isUuid(hold.holdId));
    if (valid.length === 0) return;
    const released = await batch.tx.query<{ id: string; wallet_id: string; remaining: string }>(
      `UPDATE holds h SET status = 'RELEASED', finalized_at = $4, finalized_by_kind = $5, finalized_by_api_key_id = $6
       FROM unnest($2::uuid[], $3::uuid[]) AS u(id, wallet_id)
       WHERE h.id = u.id AND h.wallet_id = u.wallet_id AND h.merchant_id = $1 AND h.status = 'PENDING' AND h.expires_at > $4
       RETURNING h.id, h.wallet_id, (h.amount - h.captured_amount)::text AS remaining`,
      [merchantId, valid.map((hold) => hold.holdId), valid.map((hold) => hold.wallet.state.id), batch.now, actor.kind, actor.apiKeyId],
    );
    const byWalletId = new Map(valid.map((hold) => [hold.wallet.state.id, hold.wallet]));
    // An expired hold, left for settling to mark, was not counted in `held` (see LedgerStore.withWallets),
    // and what was kept for it expired when the wallet was locked. What was kept for a live one, its
    // usage in this batch may still spend (WalletTransaction.drawKept); the rest expires as the batch ends.
    for (const row of released) byWalletId.get(row.wallet_id)!.settleKept(row.id, BigInt(row.remaining));
  }

  async getHold(merchantId: string, holdId: string): Promise<HoldRecord> {
    const hold = isUuid(holdId) ? await this.prisma.hold.findFirst({ where: { id: holdId, merchantId }, include: { wallet: { select: { updatedAt: true } } } }) : null;
    if (!hold) throw notFound('Hold', holdId);
    // Read at its wallet's time when that is later, as the wallet's `held` is (LedgerQueries.walletTime).
    const now = this.clock();
    return holdRecordOf(hold, hold.wallet.updatedAt > now ? hold.wallet.updatedAt : now);
  }

  private async findHold(wallet: WalletTransaction, where: { id: string } | { merchantId: string; idempotencyKey: string }, lock = false): Promise<HoldRecord | null> {
    const [condition, params] = 'id' in where ? ['id = $1', [where.id]] : ['merchant_id = $1 AND idempotency_key = $2', [where.merchantId, where.idempotencyKey]];
    const rows = await wallet.tx.query<Omit<HoldRow, 'amount' | 'capturedAmount'> & { amount: string; capturedAmount: string }>(
      `SELECT id, merchant_id AS "merchantId", wallet_id AS "walletId", customer_id AS "customerId", currency, amount::text AS amount,
         captured_amount::text AS "capturedAmount", status::text AS status, expires_at AS "expiresAt", idempotency_key AS "idempotencyKey", description,
         capture_transaction_id AS "captureTransactionId", created_at AS "createdAt", metadata, created_by_kind AS "createdByKind",
         created_by_api_key_id AS "createdByApiKeyId", finalized_at AS "finalizedAt", finalized_by_kind AS "finalizedByKind", finalized_by_api_key_id AS "finalizedByApiKeyId"
       FROM holds WHERE ${condition}${lock ? ' FOR UPDATE' : ''}`,
      params,
    );
    const row = rows[0];
    return row ? holdRecordOf({ ...row, amount: BigInt(row.amount), capturedAmount: BigInt(row.capturedAmount) }, wallet.now) : null;
  }

  // ---------------------------------------------------------------- settings

  async setOverdraftLimit(merchantId: string, customerId: string, currency: string, limitNanos: bigint): Promise<void> {
    if (limitNanos < 0n) throw invalidField('limit', 'must not be negative');
    customerId = await this.assertCustomer(merchantId, customerId);
    const { state, posted } = await this.store.withWallet(merchantId, customerId, currency, this.clock(), async (wallet) => {
      // Lowering it below what the customer already owes is allowed (it stops further overdraft); the
      // time lets ledgerIntegrity hold only later debits to it. It must come after every transaction
      // the wallet has, read under its lock: those were posted under the old limit, yet may share
      // this millisecond or, stamped before they waited for the lock, carry a later time. The
      // columns keep milliseconds, so one millisecond past the last (one microsecond would round
      // back); (wallet_id, created_at) is indexed, so max() reads one index entry.
      await wallet.tx.query(
        `UPDATE wallets SET overdraft_limit = $2, overdraft_limit_set_at = greatest($3::timestamptz,
           (SELECT max(created_at) FROM ledger_transactions WHERE wallet_id = $1) + interval '1 millisecond')
         WHERE id = $1`,
        [wallet.state.id, limitNanos.toString(), wallet.now],
      );
      wallet.state.overdraftLimit = limitNanos;
      // Announced whatever it changed, so under a version of its own (see markAnnounced).
      wallet.markAnnounced();
    });
    this.publish(customerId, currency, state, posted);
  }

  async setConsumptionOrder(merchantId: string, order: readonly ConsumptionKey[]): Promise<ConsumptionKey[]> {
    const unique = [...new Set(order)];
    if (unique.length !== order.length) throw invalidField('order', 'must not repeat a key');
    if (unique.some((key) => !CONSUMPTION_KEYS.includes(key))) throw invalidField('order', `keys are ${CONSUMPTION_KEYS.join(', ')}`);
    // Keys left out still break ties, in the default order.
    const complete = [...unique, ...CONSUMPTION_KEYS.filter((key) => !unique.includes(key))];
    await this.prisma.merchant.update({ where: { id: merchantId }, data: { creditConsumptionOrder: complete } });
    return complete;
  }

  // ---------------------------------------------------------------- schedules

  /**
   * Expires due grants and holds. Safe to run on every instance at once: expiry happens under
   * each wallet's lock, grants keyed by grant id, holds by their status. `limit`: wallets of each
   * kind a run takes.
   */
  async runExpiry(limit = 500): Promise<Expired> {
    const now = this.clock();
    // Credit kept for a pending hold is past its expiry but not due (see keepForHolds): counted
    // as due, wallets with such holds would fill every run's limit and starve the others.
    const due = await this.db.withConnection((connection) =>
      connection.query<{ merchantId: string; customerId: string; currency: string }>(
        `SELECT merchant_id AS "merchantId", customer_id AS "customerId", currency FROM credit_grants g
         WHERE ${GRANT_DUE('g', '$1')} GROUP BY merchant_id, customer_id, currency LIMIT $2`,
        [now, limit],
      ),
    );
    // Holds past their time are expired by settling their wallets too, under each wallet's lock,
    // so the credit they free shows under a new version (see settleWallet).
    const lapsed = await this.db.withConnection((connection) =>
      connection.query<{ merchantId: string; customerId: string; currency: string }>(
        `SELECT merchant_id AS "merchantId", customer_id AS "customerId", currency FROM holds
         WHERE status = 'PENDING' AND expires_at <= $1 GROUP BY merchant_id, customer_id, currency LIMIT $2`,
        [now, limit],
      ),
    );
    const wallets = new Map([...due, ...lapsed].map((wallet) => [`${wallet.customerId}:${wallet.currency}`, wallet]));
    const total = { grantsExpired: 0, holdsExpired: 0 };
    const unsettled: { customerId: string; currency: string }[] = [];
    for (const wallet of wallets.values()) {
      const expired = await this.settleQuietly(wallet, now);
      if (!expired) unsettled.push(wallet);
      total.grantsExpired += expired?.grantsExpired ?? 0;
      total.holdsExpired += expired?.holdsExpired ?? 0;
    }
    if (unsettled.length > 0) total.holdsExpired += await this.expireHoldsApart(unsettled, now);
    return total;
  }

  /**
   * Ends the lapsed holds of wallets whose settle failed (logged by settleQuietly), outside their
   * lock, so that no hold stays pending for ever and fills every run. Holds a ledger batch has
   * locked are skipped, not waited for: the batch settles them itself.
   */
  private async expireHoldsApart(wallets: readonly { customerId: string; currency: string }[], now: Date): Promise<number> {
    const expired = await this.db.transaction((tx) =>
      tx.query(
        `UPDATE holds SET status = 'EXPIRED', finalized_at = expires_at, finalized_by_kind = 'system', finalized_by_api_key_id = NULL
         WHERE id IN (SELECT id FROM holds WHERE status = 'PENDING' AND expires_at <= $1
           AND (customer_id, currency) IN (SELECT * FROM unnest($2::uuid[], $3::text[])) FOR UPDATE SKIP LOCKED)
         RETURNING id`,
        [now, pgArray(wallets.map((wallet) => wallet.customerId)), pgArray(wallets.map((wallet) => wallet.currency))],
      ),
    );
    return expired.length;
  }

  /**
   * Locks the wallet (creating it when missing), which expires its due grants, expires its holds
   * past their time, and publishes the balance if that changed anything. Returns how many grants
   * and holds expired.
   */
  async settleWallet(merchantId: string, customerId: string, currency: string, now = this.clock()): Promise<Expired> {
    const { result: holdsExpired, posted, state } = await retryingKeyRaces(() => this.store.withWallet(merchantId, customerId, currency, now, async (wallet) => {
      // A lapsed hold reserves nothing already (held counts only live ones), but no commit has
      // said so yet: marked expired here, under the lock, it takes a new version of the wallet
      // (see markAnnounced), so the credit it frees never shows under the version before. A hold
      // another transaction has locked is skipped, not waited for: a batch capturing or releasing
      // it settles it itself, and waiting could deadlock with it. It expired at its expiry, as it
      // reads before this (holdRecordOf), not when it was noticed.
      const lapsed = await wallet.tx.query(
        `UPDATE holds SET status = 'EXPIRED', finalized_at = expires_at, finalized_by_kind = 'system', finalized_by_api_key_id = NULL
         WHERE id IN (SELECT id FROM holds WHERE wallet_id = $1 AND status = 'PENDING' AND expires_at <= $2 FOR UPDATE SKIP LOCKED)
         RETURNING id`,
        [wallet.state.id, wallet.now],
      );
      if (lapsed.length > 0) wallet.markAnnounced();
      return lapsed.length;
    }));
    if (posted.length > 0 || holdsExpired > 0) this.publish(customerId, currency, state, posted);
    return { grantsExpired: posted.length, holdsExpired };
  }

  /** A scheduled settle: one wallet that fails is logged (null), and does not stop the others. */
  private async settleQuietly(wallet: { merchantId: string; customerId: string; currency: string }, now: Date): Promise<Expired | null> {
    try {
      return await this.settleWallet(wallet.merchantId, wallet.customerId, wallet.currency, now);
    } catch (error) {
      this.logger.error({ err: error, customerId: wallet.customerId, currency: wallet.currency }, 'settling a wallet on schedule failed');
      return null;
    }
  }

  // ---------------------------------------------------------------- events

  private publish(customerId: string, currency: string, state: WalletState, posted: PostedTransaction[]): void {
    const wallet = { id: state.id, customerId, currency, balance: state.balance, available: state.balance - state.held, overdraftLimit: state.overdraftLimit, version: state.version };
    this.pubsub.publish(walletTopic(customerId), balanceEventOf(wallet, posted.map((transaction) => transaction.id)));
  }
}

/** The event announcing a wallet's state: after a change, with what it posted; re-read, with nothing. */
export function balanceEventOf(
  wallet: { id: string; customerId: string; currency: string; balance: bigint; available: bigint; overdraftLimit: bigint; version: bigint },
  transactionIds: string[] = [],
): BalanceEvent {
  return {
    customerId: wallet.customerId,
    currency: wallet.currency,
    walletId: wallet.id,
    balance: formatNanos(wallet.balance),
    available: formatNanos(wallet.available),
    overdraftLimit: formatNanos(wallet.overdraftLimit),
    transactionIds,
    version: wallet.version.toString(),
  };
}
