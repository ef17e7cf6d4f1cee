import { unwrapResolverError } from '@apollo/server/errors';
import { PothosValidationError } from '@pothos/core';
import type { GraphQLFormattedError } from 'graphql';
import { AppError, ERROR_CODES, type ErrorCode } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { currentRequestId } from '../shared/request-context.ts';

/**
 * The one place errors become what a GraphQL client sees (Apollo's formatError and the
 * graphql-ws path both call it). Known errors keep their code; GraphQL's own parse and
 * validation failures become VALIDATION; anything else is logged and masked as INTERNAL.
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
    return { message: formatted.message, locations: formatted.locations, path: formatted.path, extensions: { code: 'VALIDATION' } };
  }
  if (typeof code === 'string' && REQUEST_ERROR_CODES.has(code)) {
    const field = code === 'BAD_USER_INPUT' ? variableFieldOf(formatted.message) : undefined;
    return { message: formatted.message, locations: formatted.locations, path: formatted.path, extensions: { code: 'VALIDATION', reason: code, ...(field ? { field } : {}) } };
  }
  // Values that fail a scalar or input type are reported by graphql-js without a code.
  if (code === undefined && !formatted.path && formatted.locations) {
    return { message: formatted.message, locations: formatted.locations, extensions: { code: 'VALIDATION' } };
  }
  logger.error({ err: original, requestId, path: formatted.path }, 'internal error in GraphQL request');
  return {
    message: `Internal server error${requestId ? ` (request id ${requestId})` : ''}`,
    path: formatted.path,
    locations: formatted.locations,
    extensions: { code: 'INTERNAL', ...(requestId ? { requestId } : {}) },
  };
}

/**
 * The input field a variable's value failed at, named as our own VALIDATION errors name fields
 * (`amount`, `tiers.0.upTo`): graphql-js says it only in its message ("Variable "$input" got
 * invalid value … at "input.kind"", "Variable "$first" of required type …").
 */
export function variableFieldOf(message: string): string | undefined {
  const match = /^Variable "\$([^"]+)" (?:got invalid value .*? at "([^"]+)";|got invalid value|of required type|of non-null type)/s.exec(message);
  if (!match) return undefined;
  const [, variable, at] = match;
  if (!at || at === variable) return variable;
  return at.startsWith(`${variable}.`) ? at.slice(variable!.length + 1).replace(/\[(\d+)\]/g, '.$1') : at;
}
