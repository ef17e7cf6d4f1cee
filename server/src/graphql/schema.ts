import { builder } from './builder.ts';
import { limitResolvedFields } from './limits.ts';
import '../modules/merchants/merchants.graphql.ts';
import '../modules/api-keys/api-keys.graphql.ts';
import '../modules/customers/customers.graphql.ts';
import '../modules/auth/auth.graphql.ts';
import '../modules/ledger/ledger.graphql.ts';
import '../modules/meters/meters.graphql.ts';
import '../modules/plans/plans.graphql.ts';
import '../modules/pricing/pricing.graphql.ts';
import '../modules/usage/usage.graphql.ts';
import '../modules/gateway/provider-credentials.graphql.ts';
import '../modules/gateway/gateway.graphql.ts';
import '../modules/limits/spend-limits.graphql.ts';
import '../modules/limits/usage-access.graphql.ts';

/** Every module registers its types on import; this assembles them (each field counted against the complexity limit as it runs). */
export const schema = limitResolvedFields(builder.toSchema({ sortSchema: true }));
