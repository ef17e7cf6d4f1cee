import type { ApiKey } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantViewer } from '../../context.ts';
import { isActive, type CreatedApiKey } from './api-keys.service.ts';

const ApiKeyModeEnum = builder.enumType('ApiKeyMode', {
  values: { TEST: { value: 'test' }, LIVE: { value: 'live' } } as const,
});

export const ApiKeyRef = builder.objectRef<ApiKey>('ApiKey').implement({
  description: 'A secret key. The key itself is never shown again after it is created.',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    mode: t.field({ type: ApiKeyModeEnum, resolve: (key) => key.mode }),
    prefix: t.exposeString('prefix', { description: 'The first characters, e.g. sk_test_Ab12.' }),
    last4: t.exposeString('last4'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    lastUsedAt: t.expose('lastUsedAt', { type: 'DateTime', nullable: true }),
    revokedAt: t.expose('revokedAt', {
      type: 'DateTime',
      nullable: true,
      description: 'When the key stops (or stopped) working; in the future during a rotation grace period.',
    }),
    active: t.boolean({ resolve: (key) => isActive(key) }),
    rotatedFromId: t.exposeID('rotatedFromId', { nullable: true }),
  }),
});

const CreatedApiKeyRef = builder.objectRef<CreatedApiKey>('CreatedApiKey').implement({
  fields: (t) => ({
    apiKey: t.field({ type: ApiKeyRef, resolve: (created) => created.apiKey }),
    secret: t.exposeString('secret', { description: 'The whole key. Store it now: it is not retrievable later.' }),
  }),
});

builder.queryField('apiKeys', (t) =>
  t.field({
    type: [ApiKeyRef],
    authScopes: { merchant: true },
    args: { includeRevoked: t.arg.boolean({ defaultValue: false }) },
    resolve: (_root, args, ctx) =>
      ctx.services.apiKeys.list(merchantViewer(ctx).merchantId, { includeRevoked: args.includeRevoked ?? false }),
  }),
);

builder.mutationField('createApiKey', (t) =>
  t.field({
    type: CreatedApiKeyRef,
    authScopes: { merchant: true },
    args: {
      name: t.arg.string({ required: true }),
      mode: t.arg({ type: ApiKeyModeEnum, description: 'Defaults to the mode of the key making the call.' }),
    },
    resolve: (_root, args, ctx) => {
      const viewer = merchantViewer(ctx);
      return ctx.services.apiKeys.create(viewer.merchantId, { name: args.name, mode: args.mode ?? viewer.mode });
    },
  }),
);

builder.mutationField('revokeApiKey', (t) =>
  t.field({
    type: ApiKeyRef,
    authScopes: { merchant: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.apiKeys.revoke(merchantViewer(ctx).merchantId, String(args.id)),
  }),
);

builder.mutationField('rotateApiKey', (t) =>
  t.field({
    type: CreatedApiKeyRef,
    description: 'Issues a replacement key; the old one keeps working for expireOldKeyInSeconds (default 0).',
    authScopes: { merchant: true },
    args: {
      id: t.arg.id({ required: true }),
      expireOldKeyInSeconds: t.arg.int({ defaultValue: 0 }),
    },
    resolve: (_root, args, ctx) =>
      ctx.services.apiKeys.rotate(merchantViewer(ctx).merchantId, String(args.id), args.expireOldKeyInSeconds ?? 0),
  }),
);
