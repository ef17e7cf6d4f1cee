import { TollgateError, type GraphQLErrorEntry } from './TollgateError.js';

/** Returns the bearer token to send; nothing means the request goes without one. */
export type TokenGetter = () => string | null | undefined | Promise<string | null | undefined>;

export interface GraphQLClientOptions {
  /** Full URL of the Tollgate GraphQL endpoint, e.g. https://billing.example.com/graphql */
  endpoint: string;
  getToken: TokenGetter;
  /** What this client's cached query results are filed under (see cacheScopeOf); the endpoint by default. */
  cacheScope?: string;
}

export type GraphQLVariables = Record<string, unknown>;

export interface RequestOptions {
  signal?: AbortSignal;
}

export interface GraphQLClient {
  readonly endpoint: string;
  /** Query keys include it: results fetched with one credential are never served for another. */
  readonly cacheScope: string;
  /**
   * Resolves with `data` or throws a TollgateError. Response bodies are parsed with plain
   * JSON.parse: money amounts arrive as decimal strings and must stay strings.
   */
  request<TData, TVariables extends GraphQLVariables = GraphQLVariables>(
    query: string,
    variables?: TVariables,
    options?: RequestOptions,
  ): Promise<TData>;
}

interface GraphQLResponseBody<TData> {
  data?: TData | null;
  errors?: GraphQLErrorEntry[];
}

export function createGraphQLClient({ endpoint, getToken, cacheScope = endpoint }: GraphQLClientOptions): GraphQLClient {
  return {
    endpoint,
    cacheScope,
    async request<TData, TVariables extends GraphQLVariables = GraphQLVariables>(
      query: string,
      variables?: TVariables,
      options: RequestOptions = {},
    ): Promise<TData> {
      const token = await getToken();
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/json',
      };
      if (token) headers.authorization = `Bearer ${token}`;

      let response: Response;
      try {
        // Looked up per call rather than captured, so polyfills and test stubs installed later apply.
        response = await globalThis.fetch(endpoint, {
          method: 'POST',
          headers,
          body: JSON.stringify(variables === undefined ? { query } : { query, variables }),
          ...(options.signal ? { signal: options.signal } : {}),
        });
      } catch (error) {
        // Cancellation is not a failure; TanStack Query recognises the abort itself.
        if (options.signal?.aborted) throw error;
        throw new TollgateError('NETWORK', `Could not reach ${endpoint}: ${messageOf(error)}`, 0, [], { cause: error });
      }

      let body: GraphQLResponseBody<TData> | undefined;
      try {
        body = (await response.json()) as GraphQLResponseBody<TData>;
      } catch {
        body = undefined; // e.g. an HTML error page from a proxy; reported below by status
      }

      const errors = Array.isArray(body?.errors) ? body.errors : [];
      const first = errors[0];
      if (first) {
        const code = typeof first.extensions?.code === 'string' ? first.extensions.code : 'UNKNOWN';
        throw new TollgateError(code, first.message, response.status, errors);
      }
      if (!response.ok) {
        throw new TollgateError('HTTP_ERROR', `Tollgate answered ${response.status} ${response.statusText}`.trim(), response.status);
      }
      if (body?.data == null) {
        throw new TollgateError('BAD_RESPONSE', 'Tollgate answered without data or errors', response.status);
      }
      return body.data;
    },
  };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
