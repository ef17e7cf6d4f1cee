import { useContext } from 'react';
import type { GraphQLClient } from '../client/graphqlClient.js';
import { TollgateContext } from '../provider/TollgateContext.js';

export function useTollgateClient(): GraphQLClient {
  const client = useContext(TollgateContext);
  if (!client) throw new Error('useTollgateClient must be used inside <TollgateProvider>');
  return client;
}
