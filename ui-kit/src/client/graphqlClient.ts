import { cacheScopeOf } from './cacheScope.js';
import { TollgateError, type GraphQLErrorEntry } from './TollgateError.js';

/** Returns the bearer token to send; nothing means the request goes without one. */
export type TokenGetter = () => string | null | undefined | Promise<string | null | undefined>;

export interface GraphQLClientOptions {
  /** Full URL of the Tollgate GraphQL endpoint, e.g. https://billing.example.com/graphql */
  endpoint: string;
  /**
   * Called before every request. A synchronous getter also names the cache scope (see
   * `cacheScope`), so one client may follow the signed-in customer as it changes.
   */
  getToken: TokenGetter;
  /**
   * What cached query results are filed under. Leave it out and it follows the token: each read
   * of GraphQLClient.cacheScope is cacheScopeOf(endpoint, getToken()), which needs a synchronous
   * getToken. An async getToken needs it, and passing it is your promise that every token the
   * getter returns belongs to one customer (refreshes of one session): when another signs in,
   * create a new client with a new scope.
   */
  cacheScope?: string;
}

export type GraphQLVariables = Record<string, unknown>;

export interface RequestOptions {
  signal?: AbortSignal;
  /**
   * The cacheScope the caller files the result under (the kit's queryOptions pass their key's).
   * If the token resolved now has another scope (it changed since the key was made), the request
   * is refused with TOKEN_CHANGED before it is sent: one customer's data never lands in another's key.
   */
  cacheScope?: string;
}

export interface GraphQLClient {
  readonly endpoint: string;
  /**
   * Query keys include it: results fetched with one credential are never served for another.
   * Without an explicit scope it is a fingerprint of the token getToken returns at this moment
   * (never the token itself); reading it then throws an Error if getToken is async.
   */
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

/** How Tollgate's HTTP routes answer a refusal. */
interface HttpErrorBody {
  error?: { code?: unknown; message?: unknown } | null;
}

/**
 * Secret keys see a merchant's whole account; a page's scripts (and its users) must never hold one.
 * Matched past leading whitespace (the server reads `Bearer  sk_…` as the key) and past a scheme the
 * app put in the token itself, so no padding of the key gets it sent.
 */
const SECRET_KEY = /^\s*(?:bearer\s+)?sk_(test|live)_/i;

/**
 * In a browser: a page (`window`), or a Web Worker, which has no `window` but whose scripts the
 * page's users can read just the same (every worker scope has `importScripts`).
 */
function inBrowser(): boolean {
  if (typeof window !== 'undefined') return true;
  return typeof self !== 'undefined' && typeof (self as { importScripts?: unknown }).importScripts === 'function';
}

export function createGraphQLClient({ endpoint, getToken, cacheScope }: GraphQLClientOptions): GraphQLClient {
  const scopeOf = (token: string | null | undefined) => cacheScope ?? cacheScopeOf(endpoint, token);

  return {
    endpoint,
    get cacheScope() {
      if (cacheScope !== undefined) return cacheScope;
      let token: ReturnType<TokenGetter>;
      try {
        token = getToken();
      } catch (error) {
        throw tokenFailure(error);
      }
      // Not `instanceof Promise`: a promise made in another realm (an iframe's) is not one, and
      // its text would name one scope for every customer.
      if (isThenable(token)) {
        // Only the request path reports token failures; this call just learnt the getter is async.
        Promise.resolve(token).catch(() => {});
        throw new Error('createGraphQLClient: getToken is async, so whose data a query key stands for cannot be known when the key is made. Pass a cacheScope naming the customer, or a synchronous getToken.');
      }
      return scopeOf(token);
    },
    async request<TData, TVariables extends GraphQLVariables = GraphQLVariables>(
      query: string,
      variables?: TVariables,
      options: RequestOptions = {},
    ): Promise<TData> {
      let token: string | null | undefined;
      try {
        token = await getToken();
      } catch (error) {
        throw tokenFailure(error);
      }
      if (token && SECRET_KEY.test(token) && inBrowser()) {
        throw new TollgateError('FORBIDDEN', 'A secret key must never be sent from a browser: give the page a customer session token from createCustomerSession instead.', 0);
      }
      if (options.cacheScope !== undefined && options.cacheScope !== scopeOf(token)) {
        throw new TollgateError('TOKEN_CHANGED', 'The token changed after this query was keyed; a query keyed for the new token will fetch its data.', 0);
      }
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

      // Read, then parse: a body that stops arriving is the network failing (or the caller aborting),
      // while one that arrives whole but is not JSON is reported below by its status.
      let text: string;
      try {
        text = await response.text();
      } catch (error) {
        if (options.signal?.aborted) throw error;
        throw new TollgateError('NETWORK', `The answer from ${endpoint} was cut off: ${messageOf(error)}`, response.status, [], { cause: error });
      }
      let body: (GraphQLResponseBody<TData> & HttpErrorBody) | undefined;
      try {
        body = JSON.parse(text) as GraphQLResponseBody<TData> & HttpErrorBody;
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
        // Requests refused before they reach GraphQL (a path that is not the endpoint, headers too
        // large) are answered in the HTTP routes' shape, { error: { code, message } }: keep its message.
        const answered = `Tollgate answered ${response.status} ${response.statusText}`.trim();
        const serverMessage = body?.error?.message;
        throw new TollgateError('HTTP_ERROR', typeof serverMessage === 'string' ? `${answered}: ${serverMessage}` : answered, response.status);
      }
      if (body?.data == null) {
        throw new TollgateError('BAD_RESPONSE', 'Tollgate answered without data or errors', response.status);
      }
      return body.data;
    },
  };
}

/**
 * A token getter that throws is reported like the network failing (NETWORK, retried): getters
 * usually fetch the token from the app's backend. One with no token to give should return null
 * instead; the server then answers UNAUTHENTICATED, which is not retried.
 */
function tokenFailure(error: unknown): TollgateError {
  return new TollgateError('NETWORK', `Could not get a token: ${messageOf(error)}`, 0, [], { cause: error });
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null | undefined)?.then === 'function';
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
