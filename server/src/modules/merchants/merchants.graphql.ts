import type { Merchant } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';

const IncompleteStreamPolicyEnum = builder.enumType('IncompleteStreamPolicy', {
  description: 'A stream cut before the provider reported usage: ESTIMATE charges the output streamed so far (estimated from its text); NO_CHARGE charges nothing.',
  values: ['ESTIMATE', 'NO_CHARGE'] as const,
});

export const MerchantRef = builder.objectRef<Merchant>('Merchant').implement({
  description: 'A tenant: a business billing its own customers through Tollgate.',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    // Secret key only, as every setting: a customer told that cut streams are free (NO_CHARGE) could cut them on purpose.
    incompleteStreamPolicy: t.field({ type: IncompleteStreamPolicyEnum, authScopes: { merchant: true }, description: 'Secret key only.', resolve: (m) => m.incompleteStreamPolicy as 'ESTIMATE' | 'NO_CHARGE' }),
  }),
});

builder.queryField('merchant', (t) =>
  t.field({
    type: MerchantRef,
    description: 'The merchant the credential belongs to.',
    authScopes: { merchant: true, customer: true },
    resolve: (_root, _args, ctx) => ctx.services.merchants.get(merchantIdOf(ctx)),
  }),
);

builder.mutationField('updateMerchant', (t) =>
  t.field({
    type: MerchantRef,
    authScopes: { merchant: true },
    args: { name: t.arg.string(), incompleteStreamPolicy: t.arg({ type: IncompleteStreamPolicyEnum }) },
    resolve: (_root, args, ctx) => ctx.services.merchants.update(merchantIdOf(ctx), args),
  }),
);
