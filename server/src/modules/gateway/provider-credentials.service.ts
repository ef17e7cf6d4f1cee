import type { PrismaClient, ProviderCredential } from '../../generated/prisma/client.ts';
import { decryptSecret, deriveKey, encryptSecret } from '../../shared/crypto.ts';
import { invalidField, notFound } from '../../shared/errors.ts';
import { isUuid } from '../../shared/validation.ts';
import { canonicalProviderId, SUPPORTED_PROVIDERS } from '../usage/normalize/index.ts';

export type { ProviderCredential };

const PROVIDER_IDS = new Set(SUPPORTED_PROVIDERS.map((provider) => provider.id));
// Printable ASCII, as HTTP header values must be; long enough for any provider's key format.
const KEY = /^[\x21-\x7e]{8,4096}$/;

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
    return credential ? decryptSecret(this.key, credential.encryptedKey) : null;
  }
}
