import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';
import { formatAttos } from '../../shared/money.ts';
import { MoneyRef } from '../ledger/ledger.graphql.ts';
import { ACCESS_REFUSALS, type UsageAccess } from './usage-access.service.ts';

const UsageAccessReasonEnum = builder.enumType('UsageAccessReason', {
  description:
    'Why a customer may not make a call now, as the gateway would refuse it: CUSTOMER_ARCHIVED (403), CUSTOMER_BLOCKED (403), ' +
    'INSUFFICIENT_FUNDS (402: no credit left, or less than the amount asked about), SPEND_LIMIT_REACHED (429: the monthly spend limit is reached, or the amount would pass it).',
  values: ACCESS_REFUSALS,
});

const UsageAccessRef = builder.objectRef<UsageAccess>('UsageAccess').implement({
  description:
    "Whether a customer may make a call now, by the gateway's rules, for an app that calls providers itself and reports usage after (recordUsage, POST /v1/usage). " +
    'Read from the database when asked: a top-up or a charge a moment ago counts.',
  fields: (t) => ({
    allowed: t.exposeBoolean('allowed'),
    reason: t.field({ type: UsageAccessReasonEnum, nullable: true, description: 'The first rule that refuses (in the order listed), or null when allowed.', resolve: (access) => access.reason }),
    customerId: t.exposeID('customerId'),
    currency: t.exposeString('currency'),
    available: t.field({ type: MoneyRef, description: 'Balance minus pending holds, as the wallet shows it.', resolve: (access) => ({ nanos: access.available, currency: access.currency }) }),
    overdraftLimit: t.field({ type: MoneyRef, description: 'How far below zero the wallet may go: counted as credit.', resolve: (access) => ({ nanos: access.overdraftLimit, currency: access.currency }) }),
    limit: t.field({
      type: MoneyRef,
      nullable: true,
      description: 'The monthly spend limit in this currency; null when the customer has none (then spentThisMonth and resetsAt are null too).',
      resolve: (access) => (access.spendLimit ? { nanos: access.spendLimit.limitNanos, currency: access.currency } : null),
    }),
    spentThisMonth: t.field({
      type: 'Decimal',
      nullable: true,
      description: "What the customer's usage events were charged so far this month in this currency, as SpendLimit.spentThisMonth.",
      resolve: (access) => (access.spendLimit ? formatAttos(access.spendLimit.spentAttos) : null),
    }),
    resetsAt: t.field({ type: 'DateTime', nullable: true, description: 'When the month the limit counts ends.', resolve: (access) => access.spendLimit?.resetsAt ?? null }),
  }),
});

builder.queryField('usageAccess', (t) =>
  t.field({
    type: UsageAccessRef,
    description:
      'May this customer make a call now? The gateway checks this itself; an app that meters after the call asks it first. With `amount` (what the call may cost, ≥ 0), ' +
      'credit must cover it and it must not pass the spend limit. A customer session token may ask only about its own customer.',
    args: { customerId: t.arg.id({ required: true }), currency: t.arg.string({ defaultValue: 'USD' }), amount: t.arg({ type: 'Decimal' }) },
    authScopes: (_root, args) => ({ merchant: true, customerSelf: String(args.customerId) }),
    resolve: (_root, args, ctx) => ctx.services.usageAccess.check(merchantIdOf(ctx), { customer: String(args.customerId), currency: args.currency, amount: args.amount }),
  }),
);
