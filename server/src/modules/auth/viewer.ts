import { AppError } from '../../shared/errors.ts';
import { looksLikeSecretKey, type ApiKeyMode, type ApiKeyService } from '../api-keys/api-keys.service.ts';
import { looksLikeCustomerSessionToken, type CustomerSessionService } from './customer-sessions.service.ts';

/** Who is asking. Every resolver and route is scoped by this, never by arguments alone. */
export type Viewer =
  | { kind: 'anonymous' }
  | { kind: 'merchant'; merchantId: string; apiKeyId: string; mode: ApiKeyMode; validUntil: Date | null }
  | { kind: 'customer'; merchantId: string; customerId: string; sessionId: string; expiresAt: Date; mintedBy: string | null; mintedByValidUntil: Date | null };

export const ANONYMOUS: Viewer = { kind: 'anonymous' };

/** `Bearer <credential>` or the bare credential; case-insensitive scheme. */
export function credentialFrom(authorization: string | undefined | null): string | undefined {
  if (!authorization) return undefined;
  const match = /^\s*Bearer\s+(\S+)\s*$/i.exec(authorization);
  return match ? match[1] : authorization.trim() || undefined;
}

export class ViewerResolver {
  constructor(
    private readonly apiKeys: ApiKeyService,
    private readonly sessions: CustomerSessionService,
  ) {}

  /**
   * No credential → anonymous (fields that need one then say UNAUTHENTICATED).
   * A credential that does not check out → UNAUTHENTICATED now: a caller who sent a key
   * wants to know it is bad, not to be silently treated as anonymous.
   */
  async resolve(authorization: string | undefined | null): Promise<Viewer> {
    const credential = credentialFrom(authorization);
    if (!credential) return ANONYMOUS;
    if (looksLikeSecretKey(credential)) {
      const principal = await this.apiKeys.authenticate(credential);
      if (!principal) throw new AppError('UNAUTHENTICATED', 'The secret key is invalid or has been revoked');
      return { kind: 'merchant', ...principal };
    }
    if (looksLikeCustomerSessionToken(credential)) {
      const claims = await this.sessions.authenticate(credential);
      return { kind: 'customer', ...claims };
    }
    throw new AppError('UNAUTHENTICATED', 'Unrecognised credential: send "Authorization: Bearer sk_…" or a customer session token');
  }
}
