/**
 * Domain errors with stable codes. Services throw these; the GraphQL layer and the HTTP
 * routes translate them in exactly one place each (graphql/errors.ts, http/errors.ts).
 */
export const ERROR_CODES = [
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'NOT_FOUND',
  'VALIDATION',
  'CONFLICT',
  'INSUFFICIENT_FUNDS',
  'RATE_LIMITED',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

const HTTP_STATUS: Record<ErrorCode, number> = {
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  VALIDATION: 400,
  CONFLICT: 409,
  INSUFFICIENT_FUNDS: 402,
  RATE_LIMITED: 429,
  INTERNAL: 500,
};

export function httpStatusFor(code: ErrorCode): number {
  return HTTP_STATUS[code];
}

export class AppError extends Error {
  readonly code: ErrorCode;
  /** Extra machine-readable detail that is safe to show a client (never secrets). */
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'AppError';
    this.code = code;
    this.details = details;
  }

  /**
   * graphql-js copies an original error's `extensions` onto the GraphQLError it wraps it in,
   * so a thrown AppError reaches clients with its code and details and no stack.
   */
  get extensions(): Record<string, unknown> {
    return { ...this.details, code: this.code };
  }
}

export const unauthenticated = (message = 'Authentication required: send a secret key or a customer session token') =>
  new AppError('UNAUTHENTICATED', message);

export const forbidden = (message = 'This credential may not do that') => new AppError('FORBIDDEN', message);

export const notFound = (what: string, id?: string) =>
  new AppError('NOT_FOUND', id ? `${what} ${id} was not found` : `${what} was not found`, { resource: what });

/** A bad value in one input field; `field` is the path a client can point a user at. */
export const invalidField = (field: string, message: string) =>
  new AppError('VALIDATION', `${field}: ${message}`, { field });

export const conflict = (message: string, details: Record<string, unknown> = {}) =>
  new AppError('CONFLICT', message, details);
