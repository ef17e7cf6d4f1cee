import type { SpendLimit } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';
import { formatAttos } from '../../shared/money.ts';
import { CustomerRef } from '../customers/customers.graphql.ts';
import { MoneyRef } from '../ledger/ledger.graphql.ts';

const SpendLimitRef = builder.objectRef<SpendLimit>('SpendLimit').implement({
  description:
    "A ceiling on a customer's usage charges per calendar month (UTC) in one currency, enforced by the gateway: once the month's usage charges reach it, " +
    'gateway calls are refused (429 SPEND_LIMIT_REACHED) until the month ends or the limit is raised. Usage reported with recordUsage or POST /v1/usage is recorded and charged past it ' +
    '(it already happened), and calls in flight together may pass it by what they cost.',
  fields: (t) => ({
    id: t.exposeID('id'),
    customerId: t.exposeID('customerId'),
    limit: t.field({ type: MoneyRef, resolve: (limit) => ({ nanos: limit.amountNanos, currency: limit.currency }) }),
    spentThisMonth: t.field({
      type: 'Decimal',
      description: "What the customer's usage events were charged so far this month in this currency (exact, may be finer than nanos); direct debits (debitCredits) are not counted.",
      resolve: async (limit, _args, ctx) => formatAttos((await ctx.services.spendLimits.spentThisMonth(limit.merchantId, limit.customerId, limit.currency)).spentAttos),
    }),
    resetsAt: t.field({ type: 'DateTime', resolve: (_limit, _args, ctx) => ctx.services.spendLimits.currentMonth().end }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
  }),
});

builder.objectField(CustomerRef, 'spendLimits', (t) =>
  t.field({
    type: [SpendLimitRef],
    authScopes: { merchant: true },
    resolve: (customer, _args, ctx) => ctx.services.spendLimits.list(merchantIdOf(ctx), customer.id),
  }),
);

builder.mutationField('setSpendLimit', (t) =>
  t.field({
    type: SpendLimitRef,
    description: 'Sets (or changes) the monthly spend limit of a customer in a currency: the gateway refuses its calls once the month\'s usage charges reach it (recordUsage is never refused for it).',
    authScopes: { merchant: true },
    args: { customerId: t.arg.id({ required: true }), amount: t.arg({ type: 'Decimal', required: true }), currency: t.arg.string({ defaultValue: 'USD' }) },
    resolve: (_root, args, ctx) => ctx.services.spendLimits.set(merchantIdOf(ctx), { customerId: String(args.customerId), amount: args.amount, currency: args.currency }),
  }),
);

builder.mutationField('removeSpendLimit', (t) =>
  t.boolean({
    description: 'Lifts the limit; true when there was one.',
    authScopes: { merchant: true },
    args: { customerId: t.arg.id({ required: true }), currency: t.arg.string({ defaultValue: 'USD' }) },
    resolve: (_root, args, ctx) => ctx.services.spendLimits.remove(merchantIdOf(ctx), String(args.customerId), args.currency),
  }),
);
