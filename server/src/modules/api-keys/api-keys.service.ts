import type { ApiKey, PrismaClient } from '../../generated/prisma/client.ts';
import { ConfigChanges } from '../../shared/config-changes.ts';
import { randomToken, sha256Hex } from '../../shared/crypto.ts';
import { invalidField, notFound } from '../../shared/errors.ts';
import { isUuid, requireIntInRange, requireNonEmpty } from '../../shared/validation.ts';

export type ApiKeyMode = 'test' | 'live';

export interface CreatedApiKey {
  apiKey: ApiKey;
  /** The whole key. Only its hash is stored: this is the one time anyone sees it. */
  secret: string;
}

export interface SecretKeyPrincipal {
  merchantId: string;
  apiKeyId: string;
  mode: ApiKeyMode;
  /** When a key being rotated stops working (the end of its grace period); null for a key with no end set. */
  validUntil: Date | null;
}

const SECRET_KEY = /^sk_(test|live)_[A-Za-z0-9_-]{43}$/;
const MAX_ROTATION_GRACE_SECONDS = 7 * 24 * 3600;
// Writing last_used_at on every request would turn each read into a write.
const LAST_USED_RESOLUTION_MS = 60_000;

export function looksLikeSecretKey(value: string): boolean {
  return value.startsWith('sk_');
}

export function isActive(apiKey: Pick<ApiKey, 'revokedAt'>, now = new Date()): boolean {
  return apiKey.revokedAt === null || apiKey.revokedAt > now;
}

export class ApiKeyService {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly changes = new ConfigChanges(),
  ) {}

  /** The same service over a transaction's client, for a key created with other rows. */
  within(tx: PrismaClient): ApiKeyService {
    return new ApiKeyService(tx, this.changes);
  }

  async create(
    merchantId: string,
    input: { name: string; mode: ApiKeyMode; rotatedFromId?: string },
  ): Promise<CreatedApiKey> {
    const name = requireNonEmpty('name', input.name, 100);
    const secret = `sk_${input.mode}_${randomToken(32)}`;
    const apiKey = await this.prisma.apiKey.create({
      data: {
        merchantId,
        name,
        mode: input.mode,
        prefix: secret.slice(0, `sk_${input.mode}_`.length + 4),
        last4: secret.slice(-4),
        hash: sha256Hex(secret),
        rotatedFromId: input.rotatedFromId ?? null,
      },
    });
    return { apiKey, secret };
  }

  async list(merchantId: string, options: { includeRevoked: boolean }): Promise<ApiKey[]> {
    const keys = await this.prisma.apiKey.findMany({ where: { merchantId }, orderBy: [{ createdAt: 'desc' }, { id: 'desc' }] });
    return options.includeRevoked ? keys : keys.filter((key) => isActive(key));
  }

  async get(merchantId: string, id: string): Promise<ApiKey> {
    const key = isUuid(id) ? await this.prisma.apiKey.findFirst({ where: { id: id.toLowerCase(), merchantId } }) : null;
    if (!key) throw notFound('API key', id);
    return key;
  }

  /** Revoking twice is harmless: the first revocation time stands. */
  async revoke(merchantId: string, id: string): Promise<ApiKey> {
    const key = await this.get(merchantId, id);
    if (key.revokedAt && key.revokedAt <= new Date()) return key;
    const revoked = await this.prisma.apiKey.update({ where: { id: key.id }, data: { revokedAt: new Date() } });
    // The gateway keeps credentials it checked for a few seconds, on every instance.
    this.changes.changed('api-keys', merchantId);
    return revoked;
  }

  /**
   * A new key with the same name and mode; the old one keeps working for `graceSeconds`
   * so deployments can switch over without an outage.
   */
  async rotate(merchantId: string, id: string, graceSeconds = 0): Promise<CreatedApiKey> {
    requireIntInRange('expireOldKeyInSeconds', graceSeconds, 0, MAX_ROTATION_GRACE_SECONDS);
    const old = await this.get(merchantId, id);
    if (!isActive(old)) throw invalidField('id', 'is already revoked; create a new key instead');
    // Rotating a key again during its grace period would move its end later: rotate its replacement.
    const alreadyRotating = () => invalidField('id', 'is already being rotated (its grace period is running); rotate its replacement instead');
    if (old.revokedAt) throw alreadyRotating();
    const created = await this.prisma.$transaction(async (tx) => {
      const revokedAt = new Date(Date.now() + graceSeconds * 1000);
      // Conditional, so that of two rotations at once only one goes through.
      const { count } = await tx.apiKey.updateMany({ where: { id: old.id, revokedAt: null }, data: { revokedAt } });
      if (count !== 1) throw alreadyRotating();
      return new ApiKeyService(tx as PrismaClient).create(merchantId, {
        name: old.name,
        mode: old.mode,
        rotatedFromId: old.id,
      });
    });
    // Checks the gateway cached hold the old key's end (validUntil), but not one it did not have.
    this.changes.changed('api-keys', merchantId);
    return created;
  }

  /** Which of these keys are still active (not revoked, or still in a rotation's grace period). */
  async activeIds(ids: readonly string[], now = new Date()): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const rows = await this.prisma.apiKey.findMany({ where: { id: { in: [...ids] }, OR: [{ revokedAt: null }, { revokedAt: { gt: now } }] }, select: { id: true } });
    return new Set(rows.map((row) => row.id));
  }

  /** The merchant behind a secret key, or null for an unknown, malformed or revoked key. */
  async authenticate(secret: string): Promise<SecretKeyPrincipal | null> {
    if (!SECRET_KEY.test(secret)) return null;
    const key = await this.prisma.apiKey.findUnique({ where: { hash: sha256Hex(secret) } });
    const now = new Date();
    if (!key || !isActive(key, now)) return null;
    if (!key.lastUsedAt || now.getTime() - key.lastUsedAt.getTime() > LAST_USED_RESOLUTION_MS) {
      // Best effort: a lost update only makes "last used" a minute staler.
      this.prisma.apiKey.update({ where: { id: key.id }, data: { lastUsedAt: now } }).catch(() => undefined);
    }
    return { merchantId: key.merchantId, apiKeyId: key.id, mode: key.mode, validUntil: key.revokedAt };
  }
}
