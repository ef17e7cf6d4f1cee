import { queryOptions } from '@tanstack/react-query';
import type { GraphQLClient } from '../client/graphqlClient.js';

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

export const viewerQueryKey = ['tollgate', 'viewer'] as const;

export function viewerQueryOptions(client: GraphQLClient) {
  return queryOptions({
    queryKey: viewerQueryKey,
    queryFn: async ({ signal }) => (await client.request<{ viewer: Viewer }>(VIEWER_QUERY, undefined, { signal })).viewer,
  });
}
