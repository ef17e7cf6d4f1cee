import type { ProviderCredential } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';

const ProviderCredentialRef = builder.objectRef<ProviderCredential>('ProviderCredential').implement({
  description: 'Your API key for an AI provider, used by the gateway. The key itself is never returned.',
  fields: (t) => ({
    id: t.exposeID('id'),
    provider: t.exposeString('provider'),
    last4: t.exposeString('last4'),
    active: t.boolean({ resolve: (credential) => credential.revokedAt === null }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    revokedAt: t.expose('revokedAt', { type: 'DateTime', nullable: true }),
  }),
});

builder.queryField('providerCredentials', (t) =>
  t.field({
    type: [ProviderCredentialRef],
    authScopes: { merchant: true },
    args: { includeRevoked: t.arg.boolean({ defaultValue: false }) },
    resolve: (_root, args, ctx) => ctx.services.providerCredentials.list(merchantIdOf(ctx), args.includeRevoked ?? false),
  }),
);

builder.mutationField('setProviderCredential', (t) =>
  t.field({
    type: ProviderCredentialRef,
    description: 'Stores (encrypted) the API key the gateway uses for a provider, replacing the current one.',
    authScopes: { merchant: true },
    args: { provider: t.arg.string({ required: true }), apiKey: t.arg.string({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.providerCredentials.set(merchantIdOf(ctx), args.provider, args.apiKey),
  }),
);

builder.mutationField('revokeProviderCredential', (t) =>
  t.field({
    type: ProviderCredentialRef,
    authScopes: { merchant: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.providerCredentials.revoke(merchantIdOf(ctx), String(args.id)),
  }),
);
