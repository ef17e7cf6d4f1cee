import { useQuery } from '@tanstack/react-query';
import { viewerQueryOptions } from '../queries/viewer.js';
import { useTollgateClient } from './useTollgateClient.js';

/** Who the current token belongs to: the merchant, and the customer for session tokens. */
export function useViewer() {
  return useQuery(viewerQueryOptions(useTollgateClient()));
}
