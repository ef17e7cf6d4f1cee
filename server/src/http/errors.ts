import type { NextFunction, Request, Response } from 'express';
import { AppError, httpStatusFor, type ErrorCode } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { currentRequestId } from '../shared/request-context.ts';

/**
 * The one place HTTP routes turn errors into responses: 4xx/5xx with a JSON body.
 * The GraphQL path answers in GraphQL's shape ({ errors: [...] }); other routes in
 * `{ error: { code, message } }`.
 */
export function sendError(req: Request, res: Response, status: number, code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
  const requestId = currentRequestId();
  if (req.path === '/graphql') {
    res.status(status).json({ errors: [{ message, extensions: { ...details, code, ...(requestId ? { requestId } : {}) } }] });
  } else {
    res.status(status).json({ error: { ...details, code, message, ...(requestId ? { requestId } : {}) } });
  }
}

interface BodyParserError {
  type?: string;
  status?: number;
  limit?: number;
}

export function errorHandler(logger: Logger) {
  return (error: unknown, req: Request, res: Response, _next: NextFunction) => {
    if (res.headersSent) return;
    const parserError = error as BodyParserError;
    if (parserError?.type === 'entity.too.large') {
      return sendError(req, res, 413, 'VALIDATION', `Request body is larger than the limit of ${parserError.limit} bytes`, { reason: 'BODY_TOO_LARGE' });
    }
    if (parserError?.type === 'entity.parse.failed') {
      return sendError(req, res, 400, 'VALIDATION', 'Request body is not valid JSON', { reason: 'MALFORMED_JSON' });
    }
    if (parserError?.type === 'encoding.unsupported' || parserError?.type === 'charset.unsupported') {
      return sendError(req, res, 415, 'VALIDATION', 'Unsupported request body encoding', { reason: 'UNSUPPORTED_ENCODING' });
    }
    if (error instanceof AppError) {
      return sendError(req, res, httpStatusFor(error.code), error.code, error.message, error.details);
    }
    logger.error({ err: error, requestId: currentRequestId(), path: req.path }, 'unhandled error in HTTP route');
    return sendError(req, res, 500, 'INTERNAL', 'Internal server error');
  };
}
