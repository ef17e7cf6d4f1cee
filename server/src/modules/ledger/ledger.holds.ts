import { SYSTEM_ACTOR, type Actor } from './ledger.store.ts';

export interface HoldRecord {
  id: string;
  merchantId: string;
  walletId: string;
  customerId: string;
  currency: string;
  amount: bigint;
  capturedAmount: bigint;
  status: 'PENDING' | 'CAPTURED' | 'RELEASED' | 'EXPIRED';
  expiresAt: Date;
  idempotencyKey: string;
  description: string | null;
  captureTransactionId: string | null;
  createdAt: Date;
  /** Who placed it; null for holds made before Tollgate recorded it. */
  createdBy: Actor | null;
  /** When and by whom it was captured, released or expired (the system); null while pending. */
  finalizedAt: Date | null;
  finalizedBy: Actor | null;
  /** The TTL it was created with: a retry of createHold must send it again, whatever extendHold did since. */
  requestedTtlSeconds: number;
  /**
   * The wallet's overdraft limit when the hold was placed (null for holds made before it was kept):
   * what the hold reserved stays capturable down to that floor, though the limit be lowered since.
   */
  overdraftLimitAtHold: bigint | null;
}

/** The limit kept in a hold's metadata, nanos as a decimal string. */
function limitOf(kept: unknown): bigint | null {
  return typeof kept === 'string' && /^\d{1,19}$/.test(kept) ? BigInt(kept) : null;
}

/** The TTL a hold was created with (kept in its metadata); for holds made before it was kept, their expiry less their creation. */
function requestedTtlOf(kept: unknown, expiresAt: Date, createdAt: Date): number {
  return typeof kept === 'number' ? kept : (expiresAt.getTime() - createdAt.getTime()) / 1000;
}

/** A stored hold, as its columns come from Prisma (or the same names from SQL). */
export interface HoldRow {
  id: string; merchantId: string; walletId: string; customerId: string; currency: string; amount: bigint; capturedAmount: bigint;
  status: HoldRecord['status']; expiresAt: Date | string; idempotencyKey: string; description: string | null; captureTransactionId: string | null;
  createdAt: Date | string; metadata: unknown; createdByKind: string | null; createdByApiKeyId: string | null;
  finalizedAt: Date | string | null; finalizedByKind: string | null; finalizedByApiKeyId: string | null;
}

const actorFrom = (kind: string | null, apiKeyId: string | null): Actor | null => (kind ? { kind: kind as Actor['kind'], apiKeyId } : null);

/**
 * A hold as callers see it at `now`: one past its time is expired, by the system at its expiry,
 * whether or not the schedule has marked it yet.
 */
export function holdRecordOf(row: HoldRow, now: Date): HoldRecord {
  const expiresAt = new Date(row.expiresAt);
  const createdAt = new Date(row.createdAt);
  const lapsed = row.status === 'PENDING' && expiresAt <= now;
  return {
    id: row.id, merchantId: row.merchantId, walletId: row.walletId, customerId: row.customerId, currency: row.currency,
    amount: row.amount, capturedAmount: row.capturedAmount, status: lapsed ? 'EXPIRED' : row.status, expiresAt,
    idempotencyKey: row.idempotencyKey, description: row.description, captureTransactionId: row.captureTransactionId, createdAt,
    createdBy: actorFrom(row.createdByKind, row.createdByApiKeyId),
    finalizedAt: lapsed ? expiresAt : row.finalizedAt ? new Date(row.finalizedAt) : null,
    finalizedBy: lapsed ? SYSTEM_ACTOR : actorFrom(row.finalizedByKind, row.finalizedByApiKeyId),
    requestedTtlSeconds: requestedTtlOf((row.metadata as { ttlSeconds?: unknown } | null)?.ttlSeconds, expiresAt, createdAt),
    overdraftLimitAtHold: limitOf((row.metadata as { overdraftLimit?: unknown } | null)?.overdraftLimit),
  };
}

