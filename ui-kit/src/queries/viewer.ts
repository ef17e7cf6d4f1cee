import { queryOptions } from '@tanstack/react-query';
import type { GraphQLClient } from '../client/graphqlClient.js';
import { shouldRetry } from '../client/retry.js';

export const VIEWER_QUERY = /* GraphQL */ `
  query Viewer {
    viewer {
      kind
      merchant { id name }
      customer { id externalId name email }
    }
  }
`;

export type ViewerKind = 'CUSTOMER' | 'MERCHANT';

export interface ViewerMerchant {
  id: string;
  name: string;
}

export interface ViewerCustomer {
  id: string;
  externalId: string;
  name: string | null;
  email: string | null;
}

export interface Viewer {
  kind: ViewerKind;
  merchant: ViewerMerchant;
  /** Set for customer session tokens, null for secret keys. */
  customer: ViewerCustomer | null;
}

/** Every query of the kit's starts with this: invalidate it to refetch everything. */
export const tollgateQueryKey = ['tollgate'] as const;

/** The viewer's key for one client's credential (GraphQLClient.cacheScope). */
export function viewerQueryKey(cacheScope: string) {
  return [...tollgateQueryKey, cacheScope, 'viewer'] as const;
}

/**
 * Keyed for the credential the client holds now; the fetch is refused (TOKEN_CHANGED) rather than
 * file another customer's viewer under this key if the token changes before it runs.
 */
export function viewerQueryOptions(client: GraphQLClient) {
  const cacheScope = client.cacheScope;
  return queryOptions({
    queryKey: viewerQueryKey(cacheScope),
    retry: shouldRetry,
    // The key changes only with the credential, so a host default of keepPreviousData would show
    // the last customer's viewer while the next one's loads.
    placeholderData: () => undefined,
    queryFn: async ({ signal }) => (await client.request<{ viewer: Viewer }>(VIEWER_QUERY, undefined, { signal, cacheScope })).viewer,
  });
}
