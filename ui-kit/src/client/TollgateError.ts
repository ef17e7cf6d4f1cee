/** One entry of a GraphQL response's `errors` list, as the Tollgate server sends it. */
export interface GraphQLErrorEntry {
  message: string;
  path?: ReadonlyArray<string | number>;
  extensions?: { code?: string; [key: string]: unknown };
}

/**
 * The only error type the client throws, so UI code can branch on `code` alone (a misconfigured
 * client aside: see GraphQLClient.cacheScope). `code` is the server's `errors[0].extensions.code`
 * (UNAUTHENTICATED, VALIDATION, ...); NETWORK, BAD_RESPONSE and HTTP_ERROR mean no usable GraphQL
 * answer arrived (NETWORK also when the token getter failed). The client itself refuses, before
 * sending, with FORBIDDEN a secret key in a browser and with TOKEN_CHANGED a query keyed for
 * another token (RequestOptions.cacheScope).
 */
export class TollgateError extends Error {
  readonly code: string;
  /** HTTP status of the response; 0 when no response arrived. */
  readonly status: number;
  /** Every error the server returned (empty when the failure was not a GraphQL error). */
  readonly errors: readonly GraphQLErrorEntry[];

  constructor(code: string, message: string, status: number, errors: readonly GraphQLErrorEntry[] = [], options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TollgateError';
    this.code = code;
    this.status = status;
    this.errors = errors;
  }
}
