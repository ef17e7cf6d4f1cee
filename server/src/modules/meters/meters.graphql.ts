import type { Meter } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';

const MeterSourceEnum = builder.enumType('MeterSource', {
  description: 'Where a meter reads its quantity from in a usage record.',
  values: {
    INPUT_TOKENS: { description: 'Every prompt token, cache reads and writes included.' },
    CACHED_INPUT_TOKENS: { description: 'Prompt tokens read from a cache.' },
    UNCACHED_INPUT_TOKENS: { description: 'Prompt tokens neither read from nor written to a cache: price them apart from CACHED_INPUT_TOKENS for a cache discount.' },
    CACHE_WRITE_TOKENS: { description: 'Prompt tokens written to a cache.' },
    OUTPUT_TOKENS: { description: 'Every generated token, reasoning included.' },
    REASONING_TOKENS: { description: 'Reasoning tokens, a part of the output.' },
    TOTAL_TOKENS: { description: 'Input and output tokens.' },
    REQUESTS: { description: 'One per call.' },
    IMAGES: { description: 'Images generated.' },
    AUDIO_SECONDS: { description: 'Seconds of audio (fractional).' },
    CHARACTERS: { description: 'Characters (code points) of speech input.' },
    QUANTITY: { description: "The quantity the usage record states for this meter's key (custom meters)." },
  } as const,
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
