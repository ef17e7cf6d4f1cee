import type { PriceRule } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf } from '../../context.ts';
import { invalidField } from '../../shared/errors.ts';
import { PlanRef } from '../plans/plans.graphql.ts';
import { toPrice, type PriceInput, type PriceWithRef } from './prices.service.ts';

const ProviderPriceRef = builder.objectRef<PriceWithRef>('ProviderPrice').implement({
  description: 'What a provider charges for a model, from effectiveFrom. Rates are exact decimal strings (USD).',
  fields: (t) => ({
    ref: t.exposeString('ref', { description: 'The row id, or "list:…" for a price that ships with Tollgate.' }),
    provider: t.exposeString('provider'),
    model: t.exposeString('model'),
    currency: t.exposeString('currency'),
    effectiveFrom: t.expose('effectiveFrom', { type: 'DateTime' }),
    rates: t.field({
      type: 'JSONObject',
      description: 'perMillionTokens { input cachedInput cachedInputAudio cacheWrite cacheWrite1h output reasoning inputAudio outputAudio inputImage outputImage }, contextTiers, perImage, perImageBy, perAudioSecond, perAudioMinute, perCharacter, perMillionCharacters, perRequest.',
      resolve: ({ provider: _p, model: _m, currency: _c, effectiveFrom: _e, ref: _r, ...rates }) => rates,
    }),
  }),
});

const PriceRuleTypeEnum = builder.enumType('PriceRuleType', { values: ['FLAT', 'MARKUP', 'GRADUATED', 'VOLUME', 'PACKAGE'] as const });

const PriceRuleRef = builder.objectRef<PriceRule>('PriceRule').implement({
  description: 'What the merchant charges: for a meter, a provider or a model. A change is a new version from its effectiveFrom. Versions are per price book (the default book, or a plan) and name.',
  fields: (t) => ({
    id: t.exposeID('id'),
    name: t.exposeString('name'),
    plan: t.field({
      type: PlanRef,
      nullable: true,
      description: 'The plan this rule belongs to; null for the default price book.',
      resolve: (rule, _args, ctx) => (rule.planId ? ctx.services.plans.byId(merchantIdOf(ctx), rule.planId) : null),
    }),
    type: t.field({ type: PriceRuleTypeEnum, resolve: (r) => r.type }),
    meterKey: t.exposeString('meterKey', { nullable: true }),
    provider: t.exposeString('provider', { nullable: true }),
    model: t.exposeString('model', { nullable: true }),
    // The column (default "USD") is never written and never read by pricing: answering it would
    // claim a currency the rule does not keep to (README, "priced by your rules").
    currency: t.string({
      nullable: true,
      description:
        "Always null: a rule carries no currency. Its amounts (unit prices, tiers, packages, fees, minimumCharge) are charged in each event's own currency, in that currency's wallet; " +
        'a MARKUP prices only USD events, since provider costs are in USD.',
      deprecationReason: 'A rule carries no currency: its amounts are charged in the currency of the event it prices.',
      resolve: () => null,
    }),
    config: t.field({ type: 'JSONObject', resolve: (r) => r.config }),
    effectiveFrom: t.expose('effectiveFrom', { type: 'DateTime' }),
    archivedAt: t.expose('archivedAt', { type: 'DateTime', nullable: true }),
  }),
});

const SetProviderPriceInput = builder.inputType('SetProviderPriceInput', {
  fields: (t) => ({
    provider: t.string({ required: true, description: 'A provider id, or one of its aliases (claude, gemini, azure, …), stored as the id.' }),
    model: t.string({ required: true }),
    rates: t.field({ type: 'JSONObject', required: true, description: 'Decimal strings, e.g. { "perMillionTokens": { "input": "0.15", "output": "0.60" } }.' }),
    effectiveFrom: t.field({
      type: 'DateTime',
      description: 'Default now. Earlier events keep the price in force at their time; a given time must come after usage of the model already priced.',
    }),
  }),
});

const PutPriceRuleInput = builder.inputType('PutPriceRuleInput', {
  fields: (t) => ({
    name: t.string({ required: true, description: 'Rules are versioned by name within their price book.' }),
    planKey: t.string({ description: "The plan whose rule this is; omitted: the default price book." }),
    type: t.field({ type: PriceRuleTypeEnum, required: true }),
    meterKey: t.string(),
    provider: t.string({ description: 'A provider id, or one of its aliases (claude, gemini, azure, …), stored as the id.' }),
    model: t.string(),
    config: t.field({
      type: 'JSONObject',
      required: true,
      description: 'FLAT { unitPrice, perUnits }, MARKUP { percent, feePerRequest }, GRADUATED/VOLUME { tiers: [{ upTo, unitPrice, flatFee }] }, PACKAGE { packageSize, packagePrice }; any but VOLUME: minimumCharge (the least one event is charged).',
    }),
    effectiveFrom: t.field({ type: 'DateTime', description: 'Default now. A given time must come after usage already priced that the rule matches.' }),
  }),
});

const ImportResultRef = builder.objectRef<{ imported: number; unchanged: number; skipped: { path: string; reason: string }[] }>('PriceImportResult').implement({
  fields: (t) => ({
    imported: t.exposeInt('imported', { description: 'Prices written: added, or replacing one scheduled ahead of any usage. The same price again is not written, and counted in unchanged.' }),
    unchanged: t.exposeInt('unchanged', { description: 'Prices of the file already stored with the same rates (at effectiveFrom, or in force "from now"), so not written again.' }),
    skipped: t.field({ type: 'JSONObject', resolve: (r) => ({ entries: r.skipped }) }),
  }),
});

builder.queryFields((t) => ({
  providerPrices: t.field({
    type: [ProviderPriceRef],
    description: 'Your price rows and the list prices that ship with Tollgate (yours win for the same model).',
    authScopes: { merchant: true },
    args: { provider: t.arg.string(), model: t.arg.string() },
    resolve: (_root, args, ctx) => ctx.services.providerPrices.list(merchantIdOf(ctx), args),
  }),
  priceRules: t.field({
    type: [PriceRuleRef],
    description: 'Every version of every rule of a plan, or of the default price book when planKey is omitted.',
    authScopes: { merchant: true },
    args: { planKey: t.arg.string() },
    resolve: (_root, args, ctx) => ctx.services.priceRules.versions(merchantIdOf(ctx), args.planKey),
  }),
}));

builder.mutationFields((t) => ({
  setProviderPrice: t.field({
    type: ProviderPriceRef,
    authScopes: { merchant: true },
    args: { input: t.arg({ type: SetProviderPriceInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      // The row's identity comes from its own fields: the same names inside rates would be dropped unseen.
      const misplaced = ['provider', 'model', 'effectiveFrom'].find((key) => Object.hasOwn(input.rates as object, key));
      if (misplaced) throw invalidField(`rates.${misplaced}`, `belongs beside rates, not inside them`);
      const row = await ctx.services.providerPrices.add(merchantIdOf(ctx), { ...(input.rates as object), provider: input.provider, model: input.model, effectiveFrom: input.effectiveFrom } as PriceInput);
      // Read back as listed: the same price stored before rates were canonical answers in canonical form too.
      return toPrice(row);
    },
  }),
  importModelsDevPrices: t.field({
    type: ImportResultRef,
    description: 'Imports a whole price table in the models.dev api.json format (paste the file; nothing is fetched).',
    authScopes: { merchant: true },
    args: { json: t.arg.string({ required: true }), effectiveFrom: t.arg({ type: 'DateTime' }) },
    resolve: (_root, args, ctx) => ctx.services.providerPrices.importModelsDev(merchantIdOf(ctx), args.json, args.effectiveFrom),
  }),
  putPriceRule: t.field({
    type: PriceRuleRef,
    description: 'Creates a rule, or a new version of the rule with this name in its price book (the plan planKey, or the default book) from effectiveFrom (default now).',
    authScopes: { merchant: true },
    args: { input: t.arg({ type: PutPriceRuleInput, required: true }) },
    resolve: (_root, { input }, ctx) => ctx.services.priceRules.put(merchantIdOf(ctx), { ...input, config: input.config }),
  }),
  archivePriceRule: t.field({
    type: PriceRuleRef,
    description: 'Stops the rule from now, in the plan planKey or (omitted) the default price book; earlier events keep their price.',
    authScopes: { merchant: true },
    args: { name: t.arg.string({ required: true }), planKey: t.arg.string() },
    resolve: (_root, args, ctx) => ctx.services.priceRules.archive(merchantIdOf(ctx), args.name, args.planKey),
  }),
}));

builder.objectField(PlanRef, 'priceRules', (t) =>
  t.field({
    type: [PriceRuleRef],
    description: "Every version of the plan's rules.",
    authScopes: { merchant: true },
    resolve: (plan, _args, ctx) => ctx.services.priceRules.planVersions(merchantIdOf(ctx), plan.id),
  }),
);
