import { randomUUID } from 'node:crypto';
import { deriveKey, hmacBase64Url, safeEqual } from '../../shared/crypto.ts';
import { AppError } from '../../shared/errors.ts';
import { requireIntInRange } from '../../shared/validation.ts';
import type { PrismaClient } from '../../generated/prisma/client.ts';
import { customerArchived, type CustomerService } from '../customers/customers.service.ts';

/**
 * Short-lived, signed tokens that let a browser act as one customer of one merchant.
 * A merchant's backend mints them with its secret key; the secret key never reaches a browser.
 * Signed (HMAC over the claims); each use still asks the database whether the customer was
 * archived or the secret key that minted the token revoked, since either ends its sessions.
 */
export interface CustomerSessionClaims {
  merchantId: string;
  customerId: string;
  sessionId: string;
  expiresAt: Date;
  /** The secret key that minted the token (null for tokens minted without one, by the server itself). */
  mintedBy: string | null;
}

/** A checked token, with when the key that minted it stops working (the end of a rotation's grace period). */
export interface CustomerSession extends CustomerSessionClaims {
  mintedByValidUntil: Date | null;
}

const PREFIX = 'tgcs_';
const MIN_TTL_SECONDS = 60;
const DEFAULT_TTL_SECONDS = 3600;

export function looksLikeCustomerSessionToken(value: string): boolean {
  return value.startsWith(PREFIX);
}

export class CustomerSessionService {
  private readonly signingKey: Buffer;

  constructor(
    masterKey: Buffer,
    private readonly customers: CustomerService,
    private readonly maxTtlSeconds: number,
    private readonly prisma: PrismaClient,
  ) {
    this.signingKey = deriveKey(masterKey, 'customer-session');
  }

  /**
   * `ttlSeconds` omitted: an hour, or the server maximum when that is shorter (a caller who sent
   * none must not be refused over it). `mintedBy`: the secret key asking; revoking it ends the token.
   */
  async create(merchantId: string, customerId: string, ttlSeconds: number | null = null, mintedBy: string | null = null): Promise<{ token: string; claims: CustomerSessionClaims }> {
    ttlSeconds ??= Math.min(DEFAULT_TTL_SECONDS, this.maxTtlSeconds);
    requireIntInRange('ttlSeconds', ttlSeconds, MIN_TTL_SECONDS, this.maxTtlSeconds);
    const customer = await this.customers.get(merchantId, customerId);
    // Refused as everything else an archived customer may no longer start is (usage, debits, holds).
    if (customer.archivedAt) throw customerArchived(customer.id, customer.archivedAt, 'it can be given no session');
    const claims: CustomerSessionClaims = {
      merchantId,
      customerId: customer.id,
      sessionId: randomUUID(),
      expiresAt: new Date(Math.floor(Date.now() / 1000 + ttlSeconds) * 1000),
      mintedBy,
    };
    return { token: this.sign(claims), claims };
  }

  /**
   * A token that checks out (see verify), whose customer is not archived and whose minting key is
   * still active: archiving the customer (unarchiving resumes them) or revoking the key ends its
   * sessions — a leaked key's tokens must not outlive it. A rotated key's tokens last until the
   * end of its grace period, as the key does.
   */
  async authenticate(token: string, now = new Date()): Promise<CustomerSession> {
    const claims = this.verify(token, now);
    const [customer, key] = await Promise.all([
      this.prisma.customer.findFirst({ where: { id: claims.customerId, merchantId: claims.merchantId }, select: { archivedAt: true } }),
      claims.mintedBy ? this.prisma.apiKey.findFirst({ where: { id: claims.mintedBy, merchantId: claims.merchantId }, select: { revokedAt: true } }) : null,
    ]);
    // A customer no longer there (removed by hand) ends its sessions as archiving does.
    if (!customer) throw new AppError('UNAUTHENTICATED', 'The customer session has ended: the customer no longer exists');
    if (customer.archivedAt) throw new AppError('UNAUTHENTICATED', 'The customer session has ended: the customer was archived');
    if (claims.mintedBy && (!key || (key.revokedAt && key.revokedAt <= now))) {
      throw new AppError('UNAUTHENTICATED', 'The customer session has ended: the secret key that created it was revoked');
    }
    return { ...claims, mintedByValidUntil: key?.revokedAt ?? null };
  }

  /**
   * The ids among `customerIds` whose sessions have ended: archived customers, and any no longer
   * there (one query for many open sockets).
   */
  async archivedAmong(customerIds: readonly string[]): Promise<Set<string>> {
    if (customerIds.length === 0) return new Set();
    const rows = await this.prisma.customer.findMany({ where: { id: { in: [...customerIds] }, archivedAt: null }, select: { id: true } });
    const active = new Set(rows.map((row) => row.id));
    return new Set(customerIds.filter((id) => !active.has(id)));
  }

  /** Throws UNAUTHENTICATED for a forged, malformed or expired token (an expired one with reason SESSION_EXPIRED). */
  verify(token: string, now = new Date()): CustomerSessionClaims {
    const invalid = () => new AppError('UNAUTHENTICATED', 'The customer session token is invalid or has expired');
    if (!token.startsWith(PREFIX)) throw invalid();
    // Exactly payload.signature: text appended after the signature would otherwise ride along unchecked.
    const parts = token.slice(PREFIX.length).split('.');
    if (parts.length !== 2) throw invalid();
    const [payload, signature] = parts;
    if (!payload || !signature || !safeEqual(signature, hmacBase64Url(this.signingKey, payload))) throw invalid();
    let raw: { v?: unknown; m?: unknown; c?: unknown; s?: unknown; exp?: unknown; k?: unknown };
    try {
      raw = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
    } catch {
      throw invalid();
    }
    if (raw.v !== 1 || typeof raw.m !== 'string' || typeof raw.c !== 'string' || typeof raw.s !== 'string' || typeof raw.exp !== 'number') {
      throw invalid();
    }
    // Tokens minted before keys were recorded in them carry none (they expired within a day).
    if (raw.k !== undefined && typeof raw.k !== 'string') throw invalid();
    // Said apart from a forged token (the signature holds, so this tells nothing to a forger): the
    // app's cue to fetch a fresh token rather than give up.
    if (raw.exp * 1000 <= now.getTime()) throw new AppError('UNAUTHENTICATED', 'The customer session token has expired', { reason: 'SESSION_EXPIRED' });
    return { merchantId: raw.m, customerId: raw.c, sessionId: raw.s, expiresAt: new Date(raw.exp * 1000), mintedBy: raw.k ?? null };
  }

  private sign(claims: CustomerSessionClaims): string {
    const payload = Buffer.from(
      JSON.stringify({
        v: 1, m: claims.merchantId, c: claims.customerId, s: claims.sessionId, exp: claims.expiresAt.getTime() / 1000,
        ...(claims.mintedBy ? { k: claims.mintedBy } : {}),
      }),
    ).toString('base64url');
    return `${PREFIX}${payload}.${hmacBase64Url(this.signingKey, payload)}`;
  }
}

