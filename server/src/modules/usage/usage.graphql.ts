import { resolveCursorConnection } from '../../graphql/connections.ts';
import { builder } from '../../graphql/builder.ts';
import { merchantIdOf, merchantViewer } from '../../context.ts';
import { encodeCreatedCursor } from '../../shared/pagination.ts';
import { formatAttosText } from '../../shared/money.ts';
import { requireUuid } from '../../shared/validation.ts';
import { readChargeLine } from './usage.pricing.ts';
import type { UsageEventView, UsageRecordInput, UsageResult } from './usage.service.ts';

const UsageStatusEnum = builder.enumType('UsageEventStatus', {
  description:
    'CHARGED: priced and charged. NOT_BILLABLE: nothing to charge (error response, zero price). UNCHARGED: the customer could not pay anything (no credit, no overdraft allowance). PARTIALLY_CHARGED: what the customer had left was charged; `shortfall` is the rest.',
  values: ['CHARGED', 'NOT_BILLABLE', 'UNCHARGED', 'PARTIALLY_CHARGED'] as const,
});

interface UsageChargeView {
  priceRuleId: string | null;
  amount: string;
  quantity: string | null;
}

const UsageChargeRef = builder.objectRef<UsageChargeView>('UsageCharge').implement({
  description: "One price rule's part of an event's charge.",
  fields: (t) => ({
    priceRuleId: t.exposeID('priceRuleId', { nullable: true, description: 'The version of the rule that applied (see priceRules).' }),
    amount: t.field({ type: 'Decimal', resolve: (c) => c.amount }),
    quantity: t.field({ type: 'Decimal', nullable: true, description: "The meter quantity the rule priced; null for a markup over cost.", resolve: (c) => c.quantity }),
  }),
});

function chargesOf(lines: readonly unknown[]): UsageChargeView[] {
  return lines.map((line) => {
    const { ruleId, chargeAttos, quantity } = readChargeLine(line);
    return { priceRuleId: ruleId, amount: formatAttosText(chargeAttos), quantity };
  });
}

export const UsageEventRef = builder.objectRef<UsageEventView>('UsageEvent').implement({
  description: 'One metered call: what it cost you, what the customer was charged, and the margin. Amounts are exact decimals in `currency`.',
  fields: (t) => ({
    id: t.exposeID('id'),
    customerId: t.exposeID('customerId'),
    idempotencyKey: t.exposeString('idempotencyKey'),
    occurredAt: t.expose('occurredAt', { type: 'DateTime' }),
    status: t.field({ type: UsageStatusEnum, resolve: (e) => e.status }),
    provider: t.exposeString('provider', { nullable: true }),
    model: t.exposeString('model', { nullable: true }),
    currency: t.exposeString('currency'),
    cost: t.field({ type: 'Decimal', resolve: (e) => e.cost }),
    charge: t.field({ type: 'Decimal', resolve: (e) => e.charge }),
    margin: t.field({ type: 'Decimal', resolve: (e) => e.margin }),
    shortfall: t.field({ type: 'Decimal', description: 'Priced but not paid: the customer ran out of credit (UNCHARGED, PARTIALLY_CHARGED).', resolve: (e) => e.shortfall }),
    shortfallSettled: t.field({
      type: 'Decimal',
      description:
        "What this event's VOLUME re-pricing (the month's units moving to a cheaper tier) gave back to the month's earlier shortfalls instead of crediting the customer: only what was paid comes back.",
      resolve: (e) => e.shortfallSettled,
    }),
    estimated: t.exposeBoolean('estimated', { description: 'The stream ended before the provider reported usage; the charge is an estimate.' }),
    incomplete: t.exposeBoolean('incomplete', {
      description:
        "The provider's response ended before it reported usage (a stream cut short, a body that could not be read). Charged by the merchant's incompleteStreamPolicy: on an estimate (`estimated`), or not at all (NOT_BILLABLE).",
    }),
    ledgerTransactionId: t.exposeID('ledgerTransactionId', { nullable: true }),
    charges: t.field({
      type: [UsageChargeRef],
      description: 'How `charge` was priced, a line a rule: the markup over cost and each meter\'s rule. Empty when no rule applied (the cost passed through). The lines add up to `charge + shortfall - shortfallSettled`.',
      resolve: (e) => chargesOf(e.chargeLines),
    }),
    costProblem: t.exposeString('costProblem', {
      nullable: true,
      description:
        'Why the provider cost is unknown (no price for this provider/model, a unit its price does not cover, or tokens given without a provider); null when it is known. With no rule pricing the event otherwise, it was recorded NOT_BILLABLE at no charge: add a provider price to bill such events.',
    }),
  }),
});

const ChargeErrorRef = builder.objectRef<{ code: string; message: string; details: Record<string, unknown> }>('UsageChargeError').implement({
  fields: (t) => {
    // The amounts POST /v1/usage answers beside the code, so an app can tell the customer what to top up.
    const detail = (name: string) => (error: { details: Record<string, unknown> }) => (typeof error.details[name] === 'string' ? (error.details[name] as string) : null);
    return {
      code: t.exposeString('code'),
      message: t.exposeString('message'),
      required: t.field({ type: 'Decimal', nullable: true, description: 'What the charge needed, rounded up to a billionth of the currency unit.', resolve: detail('required') }),
      available: t.field({ type: 'Decimal', nullable: true, description: 'What the wallet had available for it.', resolve: detail('available') }),
      currency: t.string({ nullable: true, resolve: detail('currency') }),
    };
  },
});

const RecordUsageResultRef = builder.objectRef<Extract<UsageResult, { ok: true }>>('RecordUsageResult').implement({
  fields: (t) => ({
    event: t.field({ type: UsageEventRef, resolve: (r) => r.event }),
    replayed: t.exposeBoolean('replayed', { description: 'This idempotency key was seen before: the first result, nothing charged again.' }),
    chargeError: t.field({
      type: ChargeErrorRef,
      nullable: true,
      description: 'Set when the usage was recorded but could not be charged (INSUFFICIENT_FUNDS).',
      resolve: (r) => (r.error ? { code: r.error.code, message: r.error.message, details: r.error.details } : null),
    }),
  }),
});

const UsageNumbersInput = builder.inputType('UsageNumbersInput', {
  description: 'A normalized usage record. Token counts follow OpenAI semantics: inputTokens includes cached and cache-write tokens; outputTokens includes reasoning.',
  fields: (t) => ({
    provider: t.string({ description: 'A provider id, or one of its aliases (claude, gemini, azure, …), stored as the id.' }),
    model: t.string(),
    api: t.string(),
    inputTokens: t.int(),
    cachedInputTokens: t.int(),
    cacheWriteTokens: t.int(),
    outputTokens: t.int(),
    reasoningTokens: t.int(),
    audioSeconds: t.field({ type: 'Decimal' }),
    characters: t.int(),
    images: t.int(),
    requests: t.int(),
    billable: t.boolean({ description: 'False for a call that did the provider no billable work (it failed): recorded NOT_BILLABLE at no charge. Default true.' }),
  }),
});

const ProviderResponseInput = builder.inputType('ProviderResponseInput', {
  description: "A provider's raw response, normalized by Tollgate: JSON or an SSE stream's text.",
  fields: (t) => ({
    url: t.string({ required: true, description: 'The provider URL the request went to (identifies provider and API).' }),
    status: t.int({ defaultValue: 200 }),
    headers: t.field({ type: 'JSONObject' }),
    body: t.string({ required: true }),
    requestBody: t.field({ type: 'JSONObjectOrText', description: 'The request the call was made with, as a JSON object or its text (the raw body as sent).' }),
    provider: t.string({ description: 'Overrides detection from the URL.' }),
    model: t.string({ description: "The model the call was made for, where the response cannot name it (a fal queue result's URL names only the app): replaces the model read from the response." }),
  }),
});

const RecordUsageInput = builder.inputType('RecordUsageInput', {
  fields: (t) => ({
    customer: t.string({ required: true, description: 'Tollgate customer id or your externalId.' }),
    idempotencyKey: t.string({ required: true }),
    timestamp: t.field({ type: 'DateTime', description: 'When the call happened; default now. Late events use the prices of their time.' }),
    currency: t.string({ defaultValue: 'USD' }),
    usage: t.field({ type: UsageNumbersInput }),
    response: t.field({ type: ProviderResponseInput }),
    quantities: t.field({ type: 'JSONObject', description: 'Custom meter quantities by meter key, e.g. { "searches": 3 }.' }),
    metadata: t.field({
      type: 'JSONObject',
      description: 'Your own data, kept on the event. Keys Tollgate writes there itself (requestHash, billingId, callerIdempotencyKey, pricing, passThrough, costProblem, providerReportedCostUsd, error, pricedChargeAttos, shortfallAttos, withheldCreditAttos, incomplete) are dropped.',
    }),
  }),
});

builder.mutationField('recordUsage', (t) =>
  t.field({
    type: RecordUsageResultRef,
    description: 'Post-request metering: records, prices and charges one call. Idempotent by idempotencyKey.',
    authScopes: { merchant: true },
    args: { input: t.arg({ type: RecordUsageInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const viewer = merchantViewer(ctx);
      const result = await ctx.services.usage.recordOne(viewer.merchantId, { kind: 'api_key', apiKeyId: viewer.apiKeyId }, {
        ...input,
        response: input.response ? { ...input.response, status: input.response.status ?? 200, headers: (input.response.headers ?? {}) as Record<string, string>, provider: input.response.provider ?? undefined, model: input.response.model ?? undefined } : null,
      } as UsageRecordInput);
      if (!result.ok) throw result.error;
      return result;
    },
  }),
);

builder.queryField('usageEvents', (t) =>
  t.connection({
    type: UsageEventRef,
    description: 'Usage events, the most recent first by when the usage happened (occurredAt; a late event takes its place in time).',
    authScopes: { merchant: true },
    args: { customerId: t.arg.id() },
    resolve: (_root, args, ctx) => {
      // Checked here: Prisma fails a non-UUID id as an internal error.
      const customerId = args.customerId != null ? requireUuid('customerId', String(args.customerId)) : null;
      return resolveCursorConnection<Promise<UsageEventView[]>>(
        { args, toCursor: (event: UsageEventView) => encodeCreatedCursor({ createdAt: event.occurredAt, id: event.id }), defaultSize: 20, maxSize: 100 },
        (page) => ctx.services.usage.page(merchantIdOf(ctx), customerId, page),
      );
    },
  }),
);
