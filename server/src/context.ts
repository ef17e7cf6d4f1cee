import type { Viewer } from './modules/auth/viewer.ts';
import type { Services } from './services.ts';
import { forbidden, unauthenticated } from './shared/errors.ts';
import type { Logger } from './shared/logger.ts';

/** Per-request (or per-subscription) context handed to every resolver. */
export interface Context {
  viewer: Viewer;
  services: Services;
  requestId: string;
  logger: Logger;
  /** The most fields this operation may resolve (the complexity limit; see limitResolvedFields). */
  maxResolvedFields?: number;
}

/** The tenant every query is scoped to; scope-auth has already required a credential. */
export function merchantIdOf(ctx: Context): string {
  if (ctx.viewer.kind === 'anonymous') throw unauthenticated();
  return ctx.viewer.merchantId;
}

/** For fields only a secret key may use (the schema's `merchant` scope guarantees it). */
export function merchantViewer(ctx: Context): Extract<Viewer, { kind: 'merchant' }> {
  if (ctx.viewer.kind === 'anonymous') throw unauthenticated();
  if (ctx.viewer.kind !== 'merchant') throw forbidden('A secret key is required');
  return ctx.viewer;
}
