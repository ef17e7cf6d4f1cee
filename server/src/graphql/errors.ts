import { unwrapResolverError } from '@apollo/server/errors';
import { PothosValidationError } from '@pothos/core';
import type { GraphQLFormattedError } from 'graphql';
import { AppError, ERROR_CODES, type ErrorCode } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { currentRequestId } from '../shared/request-context.ts';
import { inputFieldOf } from './input-field.ts';

/**
 * The one place errors become what a GraphQL client sees (Apollo's formatError and the
 * graphql-ws path both call it). Known errors keep their code; GraphQL's own parse and
 * validation failures become VALIDATION, with the input at fault as `field` when one is (see
 * inputFieldOf); anything else is logged and masked as INTERNAL.
 */
const REQUEST_ERROR_CODES = new Set([
  'GRAPHQL_PARSE_FAILED',
  'GRAPHQL_VALIDATION_FAILED',
  'BAD_USER_INPUT',
  'BAD_REQUEST',
  'OPERATION_RESOLUTION_FAILURE',
  'PERSISTED_QUERY_NOT_FOUND',
  'PERSISTED_QUERY_NOT_SUPPORTED',
]);

const isOurCode = (code: unknown): code is ErrorCode => ERROR_CODES.includes(code as ErrorCode);

/** `requestId` defaults to the HTTP request's (AsyncLocalStorage); WebSocket callers pass their own. */
export function formatGraphQLError(formatted: GraphQLFormattedError, error: unknown, logger: Logger, requestId = currentRequestId()): GraphQLFormattedError {
  const original = unwrapResolverError(error);
  const code = formatted.extensions?.code;
  if (original instanceof AppError || isOurCode(code)) {
    const { stacktrace: _stack, ...extensions } = formatted.extensions ?? {};
    return { ...formatted, extensions };
  }
  // Pothos refuses arguments its plugins validate (a negative `first`) before any resolver runs.
  if (original instanceof PothosValidationError) {
    return { message: formatted.message, locations: formatted.locations, path: formatted.path, extensions: { code: 'VALIDATION', ...fieldOf(error) } };
  }
  if (typeof code === 'string' && REQUEST_ERROR_CODES.has(code)) {
    return { message: formatted.message, locations: formatted.locations, path: formatted.path, extensions: { code: 'VALIDATION', reason: code, ...fieldOf(error) } };
  }
  // Apollo's refusals of a malformed request (a persisted query whose hash does not match, an
  // unknown protocol version) carry only the 4xx status they answer with (Apollo labels them
  // INTERNAL_SERVER_ERROR for want of a code): the client's mistake.
  if (codeOf(error) === undefined && isClientStatus(statusOf(error))) {
    return { message: formatted.message, locations: formatted.locations, extensions: { code: 'VALIDATION', reason: 'BAD_REQUEST' } };
  }
  // Values that fail a scalar or input type are reported by graphql-js without a code.
  if (code === undefined && !formatted.path && formatted.locations) {
    return { message: formatted.message, locations: formatted.locations, extensions: { code: 'VALIDATION', ...fieldOf(error) } };
  }
  logger.error({ err: original, requestId, path: formatted.path }, 'internal error in GraphQL request');
  return {
    message: `Internal server error${requestId ? ` (request id ${requestId})` : ''}`,
    path: formatted.path,
    locations: formatted.locations,
    extensions: { code: 'INTERNAL', ...(requestId ? { requestId } : {}) },
  };
}

function fieldOf(error: unknown): { field?: string } {
  const field = inputFieldOf(error);
  return field ? { field } : {};
}

function codeOf(error: unknown): unknown {
  return (error as { extensions?: { code?: unknown } } | null)?.extensions?.code;
}

function statusOf(error: unknown): unknown {
  const extensions = (error as { extensions?: { http?: { status?: unknown } } } | null)?.extensions;
  return extensions?.http?.status;
}

function isClientStatus(status: unknown): boolean {
  return typeof status === 'number' && status >= 400 && status < 500;
}
