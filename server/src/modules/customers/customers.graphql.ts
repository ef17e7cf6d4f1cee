import type { Customer } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';
import { resolveCursorConnection, totalCountOf, withTotalCount } from '../../graphql/connections.ts';
import { invalidField } from '../../shared/errors.ts';
import { encodeCreatedCursor } from '../../shared/pagination.ts';
import { subscribeResynced, withScheduledPushes } from '../../shared/pubsub.ts';
import { customerTopic, type CustomerFilter } from './customers.service.ts';

export const CustomerRef = builder.objectRef<Customer>('Customer').implement({
  description: "One of a merchant's users, identified by the merchant's own externalId.",
  fields: (t) => ({
    id: t.exposeID('id'),
    externalId: t.exposeString('externalId'),
    email: t.exposeString('email', { nullable: true }),
    name: t.exposeString('name', { nullable: true }),
    metadata: t.field({ type: 'JSONObject', authScopes: { merchant: true }, description: 'Secret key only: your notes on the customer are not shown to its session token.', resolve: (customer) => customer.metadata }),
    archived: t.boolean({ resolve: (customer) => customer.archivedAt !== null }),
    archivedAt: t.expose('archivedAt', { type: 'DateTime', nullable: true }),
    blocked: t.boolean({ description: 'Blocked customers cannot call through the gateway.', resolve: (customer) => customer.blockedAt !== null }),
    blockedAt: t.expose('blockedAt', { type: 'DateTime', nullable: true }),
    blockedReason: t.exposeString('blockedReason', { nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
  }),
});

const CustomerStatusEnum = builder.enumType('CustomerStatus', { values: ['ACTIVE', 'ARCHIVED', 'ALL'] as const });

const CustomerFilterInput = builder.inputType('CustomerFilter', {
  fields: (t) => ({
    status: t.field({ type: CustomerStatusEnum, description: 'Default ACTIVE.' }),
    search: t.string({ description: 'Case-insensitive part of the name, email or externalId.' }),
    email: t.string(),
    externalIds: t.stringList(),
    createdAfter: t.field({ type: 'DateTime', description: 'Created at or after this time (inclusive).' }),
    createdBefore: t.field({ type: 'DateTime', description: 'Created before this time (exclusive): createdAfter and createdBefore of adjacent windows share their bound, and no row falls in both.' }),
  }),
});

const CreateCustomerInput = builder.inputType('CreateCustomerInput', {
  fields: (t) => ({
    externalId: t.string({ required: true, description: "Your own id for this user; unique among your customers." }),
    email: t.string(),
    name: t.string(),
    metadata: t.field({ type: 'JSONObject' }),
  }),
});

const UpdateCustomerInput = builder.inputType('UpdateCustomerInput', {
  description: 'Only the fields given change; metadata is replaced whole.',
  fields: (t) => ({
    externalId: t.string(),
    email: t.string(),
    name: t.string(),
    metadata: t.field({ type: 'JSONObject' }),
  }),
});

/** A customer token may only ever see its own customer; a secret key sees the whole tenant. */
const selfOrMerchant = (_root: unknown, args: { id?: string | number | null }) => ({
  merchant: true,
  customerSelf: String(args.id ?? ''),
});

builder.queryField('customer', (t) =>
  t.field({
    type: CustomerRef,
    description: 'A customer by Tollgate id or by your externalId (give exactly one).',
    args: { id: t.arg.id(), externalId: t.arg.string() },
    authScopes: (root, args, ctx) =>
      args.externalId !== undefined && args.externalId !== null && ctx.viewer.kind === 'customer'
        ? { merchant: true }
        : selfOrMerchant(root, args),
    resolve: (_root, args, ctx) => {
      const merchantId = merchantIdOf(ctx);
      if ((args.id == null) === (args.externalId == null)) throw invalidField('id', 'give exactly one of id and externalId');
      return args.id != null
        ? ctx.services.customers.get(merchantId, String(args.id))
        : ctx.services.customers.getByExternalId(merchantId, args.externalId!);
    },
  }),
);

builder.queryField('customers', (t) =>
  t.connection(
    {
      type: CustomerRef,
      description: 'Customers, newest first.',
      authScopes: { merchant: true },
      args: { filter: t.arg({ type: CustomerFilterInput }) },
      resolve: async (_root, args, ctx) => {
        const merchantId = merchantIdOf(ctx);
        const filter = args.filter as CustomerFilter | null | undefined;
        const connection = await resolveCursorConnection<Promise<Customer[]>>(
          { args, toCursor: (customer: Customer) => encodeCreatedCursor(customer), defaultSize: 20, maxSize: 100 },
          (page): Promise<Customer[]> => ctx.services.customers.page(merchantId, filter, page),
        );
        return withTotalCount(connection, () => ctx.services.customers.count(merchantId, filter));
      },
    },
    {
      fields: (t) => ({
        totalCount: t.int({ description: 'How many customers match the filter, across all pages.', resolve: totalCountOf }),
      }),
    },
  ),
);

builder.mutationField('createCustomer', (t) =>
  t.field({
    type: CustomerRef,
    authScopes: { merchant: true },
    args: { input: t.arg({ type: CreateCustomerInput, required: true }) },
    resolve: (_root, args, ctx) => ctx.services.customers.create(merchantIdOf(ctx), args.input),
  }),
);

builder.mutationField('updateCustomer', (t) =>
  t.field({
    type: CustomerRef,
    authScopes: { merchant: true },
    args: { id: t.arg.id({ required: true }), input: t.arg({ type: UpdateCustomerInput, required: true }) },
    resolve: (_root, args, ctx) => ctx.services.customers.update(merchantIdOf(ctx), String(args.id), args.input),
  }),
);

builder.mutationField('archiveCustomer', (t) =>
  t.field({
    type: CustomerRef,
    description: 'Hides the customer from default lists and stops new sessions; history is kept. Idempotent.',
    authScopes: { merchant: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.customers.archive(merchantIdOf(ctx), String(args.id)),
  }),
);

builder.mutationField('unarchiveCustomer', (t) =>
  t.field({
    type: CustomerRef,
    authScopes: { merchant: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.customers.unarchive(merchantIdOf(ctx), String(args.id)),
  }),
);

builder.mutationField('blockCustomer', (t) =>
  t.field({
    type: CustomerRef,
    description: 'Stops the customer from calling through the gateway (403 CUSTOMER_BLOCKED) until unblocked; data and credit are kept.',
    authScopes: { merchant: true },
    args: { id: t.arg.id({ required: true }), reason: t.arg.string({ description: 'Shown to the app in the 403 error.' }) },
    resolve: (_root, args, ctx) => ctx.services.customers.block(merchantIdOf(ctx), String(args.id), args.reason ?? null),
  }),
);

builder.mutationField('unblockCustomer', (t) =>
  t.field({
    type: CustomerRef,
    authScopes: { merchant: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.customers.unblock(merchantIdOf(ctx), String(args.id)),
  }),
);

builder.subscriptionField('customerUpdated', (t) =>
  t.field({
    type: CustomerRef,
    description: 'Pushes the customer each time it changes, a scheduled plan change included as it takes effect.',
    args: { id: t.arg.id({ required: true }) },
    authScopes: selfOrMerchant,
    subscribe: async (_root, args, ctx) => {
      // Resolving first both checks tenancy and gives a clear NOT_FOUND before subscribing.
      const merchantId = merchantIdOf(ctx);
      const customer = await ctx.services.customers.get(merchantId, String(args.id));
      const event = { customerId: customer.id };
      // After an interruption of the PubSub (Redis), the customer is pushed as it is: a change announced meanwhile was missed.
      const published = subscribeResynced(ctx.services.pubsub, customerTopic(customer.id), async () => [event]);
      // A plan change scheduled ahead takes effect with no write to announce it: pushed at its moment.
      return withScheduledPushes(published, () => ctx.services.plans.nextScheduledChange(merchantId, customer.id), event);
    },
    resolve: (_event, args, ctx) => ctx.services.customers.get(merchantIdOf(ctx), String(args.id)),
  }),
);
