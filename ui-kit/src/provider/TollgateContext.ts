import { createContext } from 'react';
import type { GraphQLClient } from '../client/graphqlClient.js';

export const TollgateContext = createContext<GraphQLClient | null>(null);
TollgateContext.displayName = 'TollgateContext';
