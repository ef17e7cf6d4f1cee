import { Router, type Request, type Response } from 'express';
import { sendError } from '../../http/errors.ts';
import { secretKeyCaller } from '../../http/secret-key.ts';
import type { Services } from '../../services.ts';
import { AppError, httpStatusFor, invalidField } from '../../shared/errors.ts';
import { formatAttos, formatNanos } from '../../shared/money.ts';
import type { UsageAccess } from './usage-access.service.ts';

/** The query parameters GET /v1/access reads: another (a misspelt `amout`) is refused, or the check would run without it and say yes. */
const ACCESS_PARAMS: ReadonlySet<string> = new Set(['customer', 'currency', 'amount']);

/** A query parameter given at most once, or undefined when absent. */
function param(req: Request, name: string): string | undefined {
  const value = req.query[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw invalidField(name, 'must be given once');
  return value;
}

/** The answer's JSON: amounts as decimal strings, the spend limit's fields null when the customer has none. */
function present(access: UsageAccess) {
  return {
    customerId: access.customerId,
    currency: access.currency,
    allowed: access.allowed,
    reason: access.reason,
    available: formatNanos(access.available),
    overdraftLimit: formatNanos(access.overdraftLimit),
    limit: access.spendLimit ? formatNanos(access.spendLimit.limitNanos) : null,
    spentThisMonth: access.spendLimit ? formatAttos(access.spendLimit.spentAttos) : null,
    resetsAt: access.spendLimit ? access.spendLimit.resetsAt.toISOString() : null,
  };
}

/**
 * "May this customer make a call now?" over HTTP, for apps that call providers themselves and
 * report usage after (POST /v1/usage):
 *   GET /v1/access?customer=<id or externalId>&currency=USD&amount=0.01
 *     → 200 { customerId, currency, allowed, reason, available, overdraftLimit, limit, spentThisMonth, resetsAt } | 4xx { error }
 * Authenticated with a secret key. A refusal is an answer (200, allowed: false), not an error.
 */
export function usageAccessRoutes(services: Services): Router {
  const router = Router();
  router.get('/v1/access', async (req: Request, res: Response, next) => {
    try {
      const { merchantId } = await secretKeyCaller(services.viewers, req.headers.authorization, 'Access is checked with a secret key (a customer session token asks GraphQL usageAccess)');
      for (const name of Object.keys(req.query)) {
        if (!ACCESS_PARAMS.has(name)) throw invalidField(name.length > 64 ? `${name.slice(0, 64)}…` : name, `is not a parameter of /v1/access: its parameters are ${[...ACCESS_PARAMS].join(', ')}`);
      }
      const customer = param(req, 'customer')?.trim();
      if (!customer) throw invalidField('customer', 'is required: a customer id or your externalId');
      const access = await services.usageAccess.check(merchantId, { customer, currency: param(req, 'currency'), amount: param(req, 'amount') }, { byExternalId: true });
      res.json(present(access));
    } catch (error) {
      if (error instanceof AppError) return sendError(req, res, httpStatusFor(error.code), error.code, error.message, error.details);
      next(error);
    }
  });
  return router;
}
