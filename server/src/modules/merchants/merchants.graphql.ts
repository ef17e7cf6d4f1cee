import type { Merchant } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';

export const MerchantRef = builder.objectRef<Merchant>('Merchant').implement({
  description: 'A tenant: a business billing its own customers through Tollgate.',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
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
    args: { name: t.arg.string({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.merchants.rename(merchantIdOf(ctx), args.name),
  }),
);
