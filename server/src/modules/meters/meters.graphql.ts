import type { Meter } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';

const MeterSourceEnum = builder.enumType('MeterSource', {
  description: 'Where a meter reads its quantity from in a usage record.',
  values: ['INPUT_TOKENS', 'CACHED_INPUT_TOKENS', 'OUTPUT_TOKENS', 'TOTAL_TOKENS', 'REQUESTS', 'IMAGES', 'AUDIO_SECONDS', 'CHARACTERS', 'QUANTITY'] as const,
});
const MeterAggregationEnum = builder.enumType('MeterAggregation', { values: ['SUM', 'COUNT', 'MAX'] as const });

export const MeterRef = builder.objectRef<Meter>('Meter').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    key: t.exposeString('key'),
    name: t.exposeString('name'),
    unit: t.exposeString('unit'),
    source: t.field({ type: MeterSourceEnum, resolve: (m) => m.source }),
    aggregation: t.field({ type: MeterAggregationEnum, resolve: (m) => m.aggregation }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    archivedAt: t.expose('archivedAt', { type: 'DateTime', nullable: true }),
  }),
});

const CreateMeterInput = builder.inputType('CreateMeterInput', {
  fields: (t) => ({
    key: t.string({ required: true, description: 'Stable id used in usage records and price rules, e.g. "output_tokens".' }),
    name: t.string({ required: true }),
    unit: t.string({ required: true }),
    source: t.field({ type: MeterSourceEnum, required: true }),
    aggregation: t.field({ type: MeterAggregationEnum }),
  }),
});

builder.queryField('meters', (t) =>
  t.field({
    type: [MeterRef],
    authScopes: { merchant: true },
    args: { includeArchived: t.arg.boolean({ defaultValue: false }) },
    resolve: (_root, args, ctx) => ctx.services.meters.list(merchantIdOf(ctx), args.includeArchived ?? false),
  }),
);

builder.mutationField('createMeter', (t) =>
  t.field({
    type: MeterRef,
    authScopes: { merchant: true },
    args: { input: t.arg({ type: CreateMeterInput, required: true }) },
    resolve: (_root, { input }, ctx) => ctx.services.meters.create(merchantIdOf(ctx), input),
  }),
);

builder.mutationField('archiveMeter', (t) =>
  t.field({
    type: MeterRef,
    description: 'Stops ingest counting the meter; its key stays taken and its history is kept. Idempotent.',
    authScopes: { merchant: true },
    args: { key: t.arg.string({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.meters.archive(merchantIdOf(ctx), args.key),
  }),
);

builder.mutationField('unarchiveMeter', (t) =>
  t.field({
    type: MeterRef,
    description: 'Makes an archived meter active again: ingest counts it and price rules may name it from now on. Idempotent.',
    authScopes: { merchant: true },
    args: { key: t.arg.string({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.meters.unarchive(merchantIdOf(ctx), args.key),
  }),
);
