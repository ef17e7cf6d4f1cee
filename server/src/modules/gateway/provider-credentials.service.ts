import type { PrismaClient, ProviderCredential } from '../../generated/prisma/client.ts';
import { decryptSecret, deriveKey, encryptSecret } from '../../shared/crypto.ts';
import { conflict, invalidField, notFound, type AppError } from '../../shared/errors.ts';
import { isUuid } from '../../shared/validation.ts';
import { canonicalProviderId, SUPPORTED_PROVIDERS } from '../usage/normalize/index.ts';

export type { ProviderCredential };

const PROVIDER_IDS = new Set(SUPPORTED_PROVIDERS.map((provider) => provider.id));
// Printable ASCII, as HTTP header values must be; long enough for any provider's key format.
const KEY = /^[\x21-\x7e]{8,4096}$/;

/**
 * A stored key this server cannot decrypt: it was sealed under another TOLLGATE_MASTER_KEY (the
 * setting changed, or instances run with different ones). The gateway answers it as 409
 * `CONFLICT` with `reason: PROVIDER_KEY_UNREADABLE` (not as a failure of its own, 500): the
 * call is refused before the provider is contacted, and setting the key again fixes it.
 */
export function unreadableProviderKey(provider: string): AppError {
  return conflict(
    `The stored ${provider} API key cannot be decrypted with this server's TOLLGATE_MASTER_KEY (it was stored under another master key): ` +
      `set it again with setProviderCredential, or restart the server with the master key it was stored under`,
    { reason: 'PROVIDER_KEY_UNREADABLE', provider },
  );
}

/** What the startup check of stored provider keys found. */
export interface StoredKeysCheck {
  /** Active keys tried (the newest, up to the sample size). */
  checked: number;
  /** Of those, the ones this master key cannot decrypt. */
  unreadable: number;
  /** A few of the unreadable ones, to name in a log line (never the keys themselves). */
  examples: { merchantId: string; provider: string; last4: string }[];
}

/**
 * The merchant's own provider API keys, which the gateway injects into forwarded calls.
 * Encrypted at rest with a purpose-bound key derived from the master key; after it is stored
 * a key is only ever shown as its last four characters, and never logged.
 */
export class ProviderCredentialService {
  private readonly key: Buffer;
  private readonly listeners: ((merchantId: string) => void)[] = [];

  constructor(
    private readonly prisma: PrismaClient,
    masterKey: Buffer,
  ) {
    this.key = deriveKey(masterKey, 'provider-credentials');
  }

  /** Called after a merchant's keys change, so caches of them can be dropped. */
  onChange(listener: (merchantId: string) => void): void {
    this.listeners.push(listener);
  }

  private changed(merchantId: string): void {
    for (const listener of this.listeners) listener(merchantId);
  }

  /** Stores a key for a provider, replacing (revoking) the one in use. */
  async set(merchantId: string, provider: string, apiKey: string): Promise<ProviderCredential> {
    const id = canonicalProviderId(provider).toLowerCase();
    if (!PROVIDER_IDS.has(id)) throw invalidField('provider', `is not a supported provider id (e.g. ${[...PROVIDER_IDS].slice(0, 5).join(', ')}, …)`);
    const secret = apiKey.trim();
    if (!KEY.test(secret)) throw invalidField('apiKey', 'must be 8 to 4096 printable characters with no spaces');
    const created = await this.prisma.$transaction(async (tx) => {
      await tx.providerCredential.updateMany({ where: { merchantId, provider: id, revokedAt: null }, data: { revokedAt: new Date() } });
      return tx.providerCredential.create({ data: { merchantId, provider: id, encryptedKey: encryptSecret(this.key, secret), last4: secret.slice(-4) } });
    });
    this.changed(merchantId);
    return created;
  }

  async list(merchantId: string, includeRevoked: boolean): Promise<ProviderCredential[]> {
    return this.prisma.providerCredential.findMany({
      where: { merchantId, ...(includeRevoked ? {} : { revokedAt: null }) },
      orderBy: [{ provider: 'asc' }, { createdAt: 'desc' }],
    });
  }

  async revoke(merchantId: string, credentialId: string): Promise<ProviderCredential> {
    const credential = isUuid(credentialId) ? await this.prisma.providerCredential.findFirst({ where: { id: credentialId, merchantId } }) : null;
    if (!credential) throw notFound('Provider credential', credentialId);
    if (credential.revokedAt) return credential;
    const revoked = await this.prisma.providerCredential.update({ where: { id: credential.id }, data: { revokedAt: new Date() } });
    this.changed(merchantId);
    return revoked;
  }

  /** The plaintext key in use for a provider, for the gateway to inject; null when none is set. */
  async keyFor(merchantId: string, provider: string): Promise<string | null> {
    const credential = await this.prisma.providerCredential.findFirst({
      where: { merchantId, provider, revokedAt: null },
      orderBy: { createdAt: 'desc' },
    });
    if (!credential) return null;
    try {
      return decryptSecret(this.key, credential.encryptedKey);
    } catch {
      throw unreadableProviderKey(credential.provider);
    }
  }

  /**
   * Tries to decrypt the newest active keys (at most `sample`), so that a server started with
   * another master key than its data was written with can say so at start instead of failing
   * only when a gateway call needs one. Decrypting is microseconds; the cost is one query.
   */
  async checkStoredKeys(sample = 200): Promise<StoredKeysCheck> {
    const credentials = await this.prisma.providerCredential.findMany({
      where: { revokedAt: null },
      orderBy: { createdAt: 'desc' },
      take: sample,
      select: { merchantId: true, provider: true, last4: true, encryptedKey: true },
    });
    const unreadable = credentials.filter((credential) => {
      try {
        decryptSecret(this.key, credential.encryptedKey);
        return false;
      } catch {
        return true;
      }
    });
    return {
      checked: credentials.length,
      unreadable: unreadable.length,
      examples: unreadable.slice(0, 5).map(({ merchantId, provider, last4 }) => ({ merchantId, provider, last4 })),
    };
  }
}
