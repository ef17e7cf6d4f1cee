import type { Customer, Merchant } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';
import { CustomerRef } from '../customers/customers.graphql.ts';
import { MerchantRef } from '../merchants/merchants.graphql.ts';
import type { CustomerSessionClaims } from './customer-sessions.service.ts';

interface CreatedSession {
  token: string;
  claims: CustomerSessionClaims;
}

const CustomerSessionRef = builder.objectRef<CreatedSession>('CustomerSession').implement({
  description: "A short-lived token that lets a browser read (only) this customer's data.",
  fields: (t) => ({
    token: t.exposeString('token', { description: 'Hand this to the browser (e.g. to TollgateProvider).' }),
    expiresAt: t.field({ type: 'DateTime', resolve: (session) => session.claims.expiresAt }),
    customer: t.field({
      type: CustomerRef,
      resolve: (session, _args, ctx) => ctx.services.customers.get(session.claims.merchantId, session.claims.customerId),
    }),
  }),
});

builder.mutationField('createCustomerSession', (t) =>
  t.field({
    type: CustomerSessionRef,
    description: "Call from your backend with a secret key; never expose the secret key to a browser.",
    authScopes: { merchant: true },
    args: {
      customerId: t.arg.id({ required: true }),
      ttlSeconds: t.arg.int({ description: 'From 60 up to the server maximum (24 h by default). Omitted: 3600, or the server maximum if lower.' }),
    },
    resolve: (_root, args, ctx) =>
      ctx.services.customerSessions.create(merchantIdOf(ctx), String(args.customerId), args.ttlSeconds, ctx.viewer.kind === 'merchant' ? ctx.viewer.apiKeyId : null),
  }),
);

const ViewerKindEnum = builder.enumType('ViewerKind', { values: ['MERCHANT', 'CUSTOMER'] as const });

interface ViewerShape {
  kind: 'MERCHANT' | 'CUSTOMER';
  merchantId: string;
  customerId: string | null;
  apiKeyId: string | null;
}

const ViewerRef = builder.objectRef<ViewerShape>('Viewer').implement({
  description: 'Who the credential on this request is.',
  fields: (t) => ({
    kind: t.field({ type: ViewerKindEnum, resolve: (viewer) => viewer.kind }),
    merchant: t.field({
      type: MerchantRef,
      resolve: (viewer, _args, ctx): Promise<Merchant> => ctx.services.merchants.get(viewer.merchantId),
    }),
    customer: t.field({
      type: CustomerRef,
      nullable: true,
      description: 'Set for customer session tokens.',
      resolve: (viewer, _args, ctx): Promise<Customer> | null =>
        viewer.customerId ? ctx.services.customers.get(viewer.merchantId, viewer.customerId) : null,
    }),
    apiKeyId: t.exposeID('apiKeyId', { nullable: true }),
  }),
});

builder.queryField('viewer', (t) =>
  t.field({
    type: ViewerRef,
    authScopes: { merchant: true, customer: true },
    resolve: (_root, _args, ctx): ViewerShape => {
      const viewer = ctx.viewer;
      return {
        kind: viewer.kind === 'customer' ? 'CUSTOMER' : 'MERCHANT',
        merchantId: merchantIdOf(ctx),
        customerId: viewer.kind === 'customer' ? viewer.customerId : null,
        apiKeyId: viewer.kind === 'merchant' ? viewer.apiKeyId : null,
      };
    },
  }),
);
