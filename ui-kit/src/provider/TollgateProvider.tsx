import { QueryClient, QueryClientContext, QueryClientProvider } from '@tanstack/react-query';
import { useContext, useMemo, useState, type ReactNode } from 'react';
import { createGraphQLClient } from '../client/graphqlClient.js';
import { TollgateContext } from './TollgateContext.js';

export interface TollgateProviderProps {
  /** Full URL of the Tollgate GraphQL endpoint. */
  endpoint: string;
  /** A customer session token. A secret key works only server-side: in a browser requests are refused (FORBIDDEN). */
  token: string;
  /** The app's QueryClient; defaults to the one already provided above, if any. */
  queryClient?: QueryClient;
  children?: ReactNode;
}

export function TollgateProvider({ endpoint, token, queryClient, children }: TollgateProviderProps) {
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

  // The client's cache scope follows the token: another customer's token never sees this one's cache.
  const client = useMemo(() => createGraphQLClient({ endpoint, getToken: () => token }), [endpoint, token]);

  if (!activeClient) return null;
  const content = <TollgateContext value={client}>{children}</TollgateContext>;
  // The host's own provider already supplies its client to everything below.
  if (activeClient === hostClient) return content;
  return <QueryClientProvider client={activeClient}>{content}</QueryClientProvider>;
}
