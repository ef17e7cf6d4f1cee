import { QueryClient, QueryClientContext, QueryClientProvider } from '@tanstack/react-query';
import { useContext, useInsertionEffect, useMemo, useRef, useState, type ReactNode } from 'react';
import { createGraphQLClient, type TokenGetter } from '../client/graphqlClient.js';
import { TollgateContext } from './TollgateContext.js';

interface TollgateProviderBaseProps {
  /** Full URL of the Tollgate GraphQL endpoint. */
  endpoint: string;
  /** The app's QueryClient; defaults to the one already provided above, if any. */
  queryClient?: QueryClient;
  children?: ReactNode;
}

/** A token the app holds now. Cached data is filed under the token unless cacheScope names the customer. */
export interface TollgateTokenProps extends TollgateProviderBaseProps {
  /** A customer session token. A secret key works only server-side: in a browser requests are refused (FORBIDDEN). */
  token: string;
  getToken?: never;
  /**
   * Names the customer the token belongs to, so a refreshed token for the same customer keeps the
   * cache. Leave it out and each token is a scope of its own.
   */
  cacheScope?: string;
}

/** A getter the provider calls before every request, for tokens the app fetches or refreshes. */
export interface TollgateTokenGetterProps extends TollgateProviderBaseProps {
  token?: never;
  /** Returns the customer session token to send (or a promise of it); called before every request. */
  getToken: TokenGetter;
  /**
   * Names the customer (e.g. your user id): cached data is filed under it. Every token the getter
   * returns must be this customer's; when another signs in, pass their scope.
   */
  cacheScope: string;
}

export type TollgateProviderProps = TollgateTokenProps | TollgateTokenGetterProps;

export function TollgateProvider(props: TollgateProviderProps) {
  const { endpoint, token, getToken, cacheScope, queryClient, children } = props;
  assertCredential(props);

  // Read the context directly: useQueryClient() throws when there is none.
  const hostClient = useContext(QueryClientContext);
  const external = queryClient ?? hostClient;
  // A kit must not own global state: a QueryClient is created only when the app has none.
  const [ownClient, setOwnClient] = useState<QueryClient | undefined>(() => (external ? undefined : new QueryClient()));
  if (!external && !ownClient) {
    // The queryClient prop was removed after mount. Setting state during render makes React
    // re-render at once, before anything is committed.
    setOwnClient(new QueryClient());
  }
  const activeClient = external ?? ownClient;

  // Requests call the getter the app passed last: an inline arrow is a new function every render,
  // and a new client for each would re-render every consumer for nothing. Insertion effects run
  // before any layout or passive effect, so no request of this commit sees the previous getter.
  const latestGetter = useRef(getToken);
  useInsertionEffect(() => {
    latestGetter.current = getToken;
  });
  const usesGetter = getToken !== undefined;

  // The client's cache scope is cacheScope when given, else it follows the token: another
  // customer's token never sees this one's cache.
  const client = useMemo(
    () =>
      usesGetter
        ? createGraphQLClient({ endpoint, cacheScope, getToken: () => latestGetter.current?.() })
        : createGraphQLClient({ endpoint, getToken: () => token, ...(cacheScope !== undefined ? { cacheScope } : {}) }),
    [endpoint, cacheScope, usesGetter, token],
  );

  if (!activeClient) return null;
  const content = <TollgateContext value={client}>{children}</TollgateContext>;
  // The host's own provider already supplies its client to everything below.
  if (activeClient === hostClient) return content;
  return <QueryClientProvider client={activeClient}>{content}</QueryClientProvider>;
}

/** The types make the forms exclusive; this holds plain-JS callers (and casts) to the same. */
function assertCredential({ token, getToken, cacheScope }: TollgateProviderProps): void {
  if (token !== undefined && getToken !== undefined) throw new Error('TollgateProvider takes token or getToken, not both.');
  if (token === undefined && getToken === undefined) throw new Error('TollgateProvider needs a token or getToken.');
  if (getToken !== undefined && (typeof cacheScope !== 'string' || cacheScope === '')) {
    throw new Error("TollgateProvider: getToken needs a cacheScope naming the customer (e.g. your user id), so one customer's cached data is never shown to another.");
  }
}
