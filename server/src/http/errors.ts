import type { NextFunction, Request, Response } from 'express';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import zlib from 'node:zlib';
import { AppError, ERROR_CODES, httpStatusFor, type ErrorCode } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { currentRequestId } from '../shared/request-context.ts';

/**
 * The paths Express serves GraphQL on: `app.use('/graphql', …)` matches regardless of letter case,
 * with or without a trailing slash (and below it).
 */
const GRAPHQL_PATH = /^\/graphql(?:\/|$)/i;

/**
 * Content codings the JSON routes' body parser (body-parser, with x-gzip read as gzip: see
 * jsonBody) reads, as a 415 lists them. zstd only where Node's zlib has it (Node 22.15 and later).
 */
const BODY_CODINGS: readonly string[] = ['gzip', 'x-gzip', 'deflate', 'br', ...('createZstdDecompress' in zlib ? ['zstd'] : [])];

/** The request's path as it arrived, whatever router it is in now (req.path is relative to a mount point). */
function originalPath(req: Request): string {
  const url = req.originalUrl;
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

/**
 * The one place HTTP routes turn errors into responses: 4xx/5xx with a JSON body.
 * The GraphQL path answers in GraphQL's shape ({ errors: [...] }); other routes in
 * `{ error: { code, message } }`.
 */
export function sendError(req: Request, res: Response, status: number, code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
  const requestId = currentRequestId();
  if (GRAPHQL_PATH.test(originalPath(req))) {
    res.status(status).json({ errors: [{ message, extensions: { ...details, code, ...(requestId ? { requestId } : {}) } }] });
  } else {
    res.status(status).json({ error: { ...details, code, message, ...(requestId ? { requestId } : {}) } });
  }
}

/** The fields body-parser, raw-body and other http-errors users put on what they throw. */
interface BodyParserError {
  type?: string;
  status?: number;
  statusCode?: number;
  limit?: number;
  /** The Content-Encoding or charset refused (encoding.unsupported, charset.unsupported). */
  encoding?: string;
  charset?: string;
  /** Whether the message was written for the client (http-errors sets it for 4xx). */
  expose?: boolean;
  message?: string;
}

/** The 4xx status an error from middleware asks for, if any: anything else stays a 500. */
function clientErrorStatus(error: BodyParserError | undefined): number | undefined {
  const status = error?.status ?? error?.statusCode;
  return typeof status === 'number' && Number.isInteger(status) && status >= 400 && status < 500 ? status : undefined;
}

function codeForStatus(status: number): ErrorCode {
  return ERROR_CODES.find((code) => httpStatusFor(code) === status) ?? 'VALIDATION';
}

/**
 * A request Node's HTTP parser refused before any route saw it (headers over its 16 KB limit, a
 * control character in a header, a request line that is not HTTP, headers that took too long):
 * answered as every other 4xx is, with a JSON body, where Node would send a bare status line.
 * The connection is closed after it: what follows on it cannot be read as requests.
 */
export function answerClientError(error: NodeJS.ErrnoException, socket: Duplex): void {
  // A response under way on this connection (a kept-alive one): a second one cannot follow it.
  const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (error.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const [status, reason, message] =
    error.code === 'HPE_HEADER_OVERFLOW' ? [431, 'HEADERS_TOO_LARGE', 'Request headers are larger than the server accepts (16 KB in all)']
    : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'REQUEST_TIMEOUT', 'The request did not arrive in time']
    : [400, 'MALFORMED_REQUEST', `The request is not valid HTTP${error.code ? ` (${error.code})` : ''}`];
  const body = JSON.stringify({ error: { code: 'VALIDATION', reason, message } });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
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
    if (parserError?.type === 'encoding.unsupported') {
      const coding = parserError.encoding ?? req.header('content-encoding') ?? '';
      return sendError(req, res, 415, 'VALIDATION', `Unsupported request body encoding "${coding}": send it uncompressed or in ${BODY_CODINGS.join(', ')}`, {
        reason: 'UNSUPPORTED_ENCODING', contentEncoding: coding, supported: BODY_CODINGS,
      });
    }
    if (parserError?.type === 'charset.unsupported') {
      return sendError(req, res, 415, 'VALIDATION', `Unsupported request body charset "${parserError.charset ?? ''}": send UTF-8`, { reason: 'UNSUPPORTED_CHARSET' });
    }
    if (error instanceof AppError) {
      return sendError(req, res, httpStatusFor(error.code), error.code, error.message, error.details);
    }
    const status = clientErrorStatus(parserError);
    const encoding = req.header('content-encoding')?.trim().toLowerCase();
    // body-parser passes a failed gunzip/inflate on as a bare 400 carrying zlib's message.
    if (status === 400 && !parserError.type && encoding && encoding !== 'identity') {
      return sendError(req, res, 400, 'VALIDATION', `Request body is not valid ${encoding} data (Content-Encoding: ${encoding})`, {
        reason: 'MALFORMED_CONTENT_ENCODING',
      });
    }
    if (status !== undefined) {
      const message = parserError.expose && parserError.message ? parserError.message : `The request was refused (HTTP ${status})`;
      return sendError(req, res, status, codeForStatus(status), message);
    }
    logger.error({ err: error, requestId: currentRequestId(), path: req.path }, 'unhandled error in HTTP route');
    return sendError(req, res, 500, 'INTERNAL', 'Internal server error');
  };
}
