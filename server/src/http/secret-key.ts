import type { ViewerResolver } from '../modules/auth/viewer.ts';
import { AppError } from '../shared/errors.ts';

/**
 * The merchant behind a request's secret key, for HTTP routes only a secret key may call:
 * none is UNAUTHENTICATED, any other credential (a customer session token) FORBIDDEN with `refusal`.
 */
export async function secretKeyCaller(viewers: ViewerResolver, authorization: string | undefined, refusal: string) {
  const viewer = await viewers.resolve(authorization);
  if (viewer.kind === 'anonymous') throw new AppError('UNAUTHENTICATED', 'Send a secret key: Authorization: Bearer sk_…');
  if (viewer.kind !== 'merchant') throw new AppError('FORBIDDEN', refusal);
  return { merchantId: viewer.merchantId, actor: { kind: 'api_key' as const, apiKeyId: viewer.apiKeyId } };
}
