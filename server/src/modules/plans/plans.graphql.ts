import type { Plan } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';
import { CustomerRef } from '../customers/customers.graphql.ts';
import type { ScheduledPlanChange } from './plans.service.ts';

/** Plan.priceRules is added by pricing.graphql.ts: pricing depends on plans, not the other way round. */
export const PlanRef = builder.objectRef<Plan>('Plan').implement({
  description:
    'A named price book customers can be put on. Its rules price what they cover (the markup, each meter); the default price book prices the rest. ' +
    'An archived plan cannot be newly assigned, but customers already on it keep being priced by it.',
  fields: (t) => ({
    id: t.exposeID('id'),
    key: t.exposeString('key', { description: 'Stable identifier used in the API and config files, e.g. "pro".' }),
    name: t.exposeString('name'),
    description: t.exposeString('description', { nullable: true }),
    archivedAt: t.expose('archivedAt', { type: 'DateTime', nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

const PutPlanInput = builder.inputType('PutPlanInput', {
  fields: (t) => ({
    key: t.string({ required: true, description: '1 to 64 lowercase letters, digits, "-" or "_"; unique among your plans.' }),
    name: t.string({ required: true }),
    description: t.string({ description: 'Replaced whole: omitted clears it.' }),
  }),
});

builder.objectField(CustomerRef, 'plan', (t) =>
  t.field({
    type: PlanRef,
    nullable: true,
    description: 'The plan the customer is on now; null when the default price book prices its usage.',
    resolve: (customer, _args, ctx) => ctx.services.plans.currentOf(merchantIdOf(ctx), customer.id),
  }),
);

const PlanChangeRef = builder.objectRef<ScheduledPlanChange>('PlanChange').implement({
  description: "A change of the customer's plan that takes effect later.",
  fields: (t) => ({
    plan: t.expose('plan', { type: PlanRef, nullable: true, description: 'The plan from effectiveFrom on; null: back to the default price book.' }),
    effectiveFrom: t.expose('effectiveFrom', { type: 'DateTime' }),
  }),
});

builder.objectField(CustomerRef, 'scheduledPlanChanges', (t) =>
  t.field({
    type: [PlanChangeRef],
    description: 'Plan changes scheduled ahead by setCustomerPlan (effectiveFrom after now), soonest first; cancelScheduledPlanChange removes them.',
    resolve: (customer, _args, ctx) => ctx.services.plans.scheduledOf(merchantIdOf(ctx), customer.id),
  }),
);

builder.queryFields((t) => ({
  plans: t.field({
    type: [PlanRef],
    description: 'Your plans by key; archived ones only when asked for.',
    authScopes: { merchant: true },
    args: { includeArchived: t.arg.boolean({ defaultValue: false }) },
    resolve: (_root, args, ctx) => ctx.services.plans.list(merchantIdOf(ctx), args.includeArchived ?? false),
  }),
  plan: t.field({
    type: PlanRef,
    authScopes: { merchant: true },
    args: { key: t.arg.string({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.plans.get(merchantIdOf(ctx), args.key),
  }),
}));

builder.mutationFields((t) => ({
  putPlan: t.field({
    type: PlanRef,
    description: 'Creates the plan, or sets its name and description (putting an archived plan restores it). Idempotent.',
    authScopes: { merchant: true },
    args: { input: t.arg({ type: PutPlanInput, required: true }) },
    resolve: (_root, { input }, ctx) => ctx.services.plans.put(merchantIdOf(ctx), input),
  }),
  archivePlan: t.field({
    type: PlanRef,
    description: 'No one new can be put on the plan; customers already on it keep it until moved. Idempotent.',
    authScopes: { merchant: true },
    args: { key: t.arg.string({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.plans.archive(merchantIdOf(ctx), args.key),
  }),
  setCustomerPlan: t.field({
    type: CustomerRef,
    description:
      'Puts the customer on a plan (planKey null: back to the default price book) from effectiveFrom (default now; later schedules the change). ' +
      "History is never rewritten: effectiveFrom must be after the customer's latest plan change (a scheduled one included) and after its usage already priced " +
      '(usage may be stamped up to 5 minutes ahead); without effectiveFrom, the change takes effect now, or a millisecond after such usage stamped at or after now. ' +
      'A change scheduled by mistake is undone with cancelScheduledPlanChange.',
    authScopes: { merchant: true },
    args: { customerId: t.arg.id({ required: true }), planKey: t.arg.string(), effectiveFrom: t.arg({ type: 'DateTime' }) },
    resolve: (_root, args, ctx) => ctx.services.plans.assign(merchantIdOf(ctx), String(args.customerId), args.planKey ?? null, args.effectiveFrom),
  }),
  cancelScheduledPlanChange: t.field({
    type: CustomerRef,
    description:
      "Removes the customer's plan changes that have not taken effect yet (scheduled by setCustomerPlan with a later effectiveFrom): the customer stays on the plan in force now " +
      'and can be given another change at once. Idempotent: with none scheduled, the customer is answered unchanged. A change taking effect within the 5 minutes ahead that ' +
      'usage may be stamped (and a few seconds more), or one that has already priced usage, cannot be cancelled: CONFLICT (field effectiveFrom), and nothing is removed.',
    authScopes: { merchant: true },
    args: { customerId: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.plans.cancelScheduled(merchantIdOf(ctx), String(args.customerId)),
  }),
}));
