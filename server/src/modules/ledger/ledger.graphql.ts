import type { CreditGrant, LedgerEntry, LedgerTransaction } from '../../generated/prisma/client.ts';
import { builder } from '../../graphql/builder.ts';
import { resolveCursorConnection, totalCountOf, withTotalCount } from '../../graphql/connections.ts';
import { merchantIdOf, merchantViewer, type Context } from '../../context.ts';
import { encodeCreatedCursor } from '../../shared/pagination.ts';
import { formatNanos, parseCurrency, parseDecimalNanos, parseFormattedNanos, requirePositiveAttos, requirePositiveNanos } from '../../shared/money.ts';
import { subscribeResynced } from '../../shared/pubsub.ts';
import { requireUuid } from '../../shared/validation.ts';
import { CONSUMPTION_KEYS, type ConsumptionKey } from './ledger.planner.ts';
import type { WalletView, TransactionFilter } from './ledger.queries.ts';
import type { HoldRecord } from './ledger.holds.ts';
import { balanceEventOf, inVersionOrder, walletTopic, type Actor, type BalanceEvent, type PostedTransaction } from './ledger.service.ts';

// ------------------------------------------------------------------ helpers

interface MoneyShape {
  nanos: bigint;
  currency: string;
}

const money = (nanos: bigint, currency: string): MoneyShape => ({ nanos, currency });

const actorOf = (ctx: Context): Actor => {
  const viewer = merchantViewer(ctx);
  return { kind: 'api_key', apiKeyId: viewer.apiKeyId };
};

const currencyArg = (value: string | null | undefined) => parseCurrency('currency', value);

/** A customer token may read only its own wallet; a secret key, any wallet of its merchant. */
const walletScopes = (_root: unknown, args: { customerId: string | number }) => ({ merchant: true, customerSelf: String(args.customerId) });

// ------------------------------------------------------------------ types

export const MoneyRef = builder.objectRef<MoneyShape>('Money').implement({
  description: 'An exact amount of one currency.',
  fields: (t) => ({
    amount: t.field({ type: 'Decimal', description: 'Decimal string, e.g. "12.50"; up to 9 decimal places.', resolve: (m) => formatNanos(m.nanos) }),
    currency: t.exposeString('currency'),
  }),
});

const CreditGrantKindEnum = builder.enumType('CreditGrantKind', { values: ['PAID', 'PROMOTIONAL', 'PLAN_INCLUDED'] as const });
const TransactionKindEnum = builder.enumType('LedgerTransactionKind', {
  values: ['USAGE', 'GRANT', 'ADJUSTMENT', 'REFUND', 'EXPIRY', 'HOLD_CAPTURE'] as const,
});
const ConsumptionKeyEnum = builder.enumType('CreditConsumptionKey', {
  description: 'Sort keys for which credit grant is spent first: EXPIRY (soonest first, never-expiring last), KIND (promotional, then plan, then paid), PRIORITY (lowest first), CREATED (oldest first).',
  values: CONSUMPTION_KEYS,
});
const HoldStatusEnum = builder.enumType('HoldStatus', { values: ['PENDING', 'CAPTURED', 'RELEASED', 'EXPIRED'] as const });

const CreditGrantRef = builder.objectRef<CreditGrant>('CreditGrant').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    kind: t.field({ type: CreditGrantKindEnum, resolve: (g) => g.kind }),
    amount: t.field({ type: MoneyRef, resolve: (g) => money(g.amount, g.currency) }),
    remaining: t.field({ type: MoneyRef, resolve: (g) => money(g.remaining, g.currency) }),
    priority: t.exposeInt('priority'),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', nullable: true }),
    expiredAt: t.expose('expiredAt', { type: 'DateTime', nullable: true }),
    holdId: t.exposeID('holdId', {
      nullable: true,
      description: 'Set on credit kept past its expiry for a pending hold: only that hold\'s capture may spend it, and what it leaves expires when the hold ends.',
    }),
    description: t.exposeString('description', { nullable: true }),
    // The grant's metadata is the one its transaction carries: the merchant's, like the transaction's.
    metadata: t.field({ type: 'JSONObject', authScopes: { merchant: true }, description: 'Secret key only.', resolve: (g) => g.metadata }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

const LedgerEntryRef = builder.objectRef<LedgerEntry & { accountKind?: string }>('LedgerEntry').implement({
  description: 'One leg of a transaction. The legs of a transaction sum to zero.',
  fields: (t) => ({
    id: t.id({ description: 'The transaction id and the leg\'s place in it ("<transactionId>:<leg>").', resolve: (e) => `${e.transactionId}:${e.leg}` }),
    walletId: t.exposeID('walletId', { nullable: true }),
    accountId: t.exposeID('accountId', { nullable: true, description: 'A merchant counter-account (revenue, promotional, …).' }),
    grantId: t.exposeID('grantId', { nullable: true }),
    amount: t.field({ type: MoneyRef, resolve: (e) => money(e.amount, e.currency) }),
  }),
});

const ActorRef = builder.objectRef<{ kind: string; apiKeyId: string | null }>('LedgerActor').implement({
  description: 'Who caused a change: an API key, a customer token (gateway calls), or the system (expiry, schedules).',
  fields: (t) => ({
    kind: t.exposeString('kind'),
    apiKeyId: t.exposeID('apiKeyId', { nullable: true, description: 'The secret key used; for a customer token, the key that minted its session. Null for the system.' }),
  }),
});

const LedgerTransactionRef = builder.objectRef<LedgerTransaction>('LedgerTransaction').implement({
  description: 'One balance change, with its audit trail.',
  fields: (t) => ({
    id: t.exposeID('id'),
    kind: t.field({ type: TransactionKindEnum, resolve: (x) => x.kind }),
    customerId: t.exposeID('customerId'),
    walletId: t.exposeID('walletId'),
    amount: t.field({ type: MoneyRef, description: 'Change to the wallet (negative for charges).', resolve: (x) => money(x.amount, x.currency) }),
    balanceAfter: t.field({ type: MoneyRef, resolve: (x) => money(x.balanceAfter, x.currency) }),
    idempotencyKey: t.exposeString('idempotencyKey'),
    description: t.exposeString('description', { nullable: true }),
    // The audit trail's own fields are the merchant's: a customer's token reading its wallet is refused them.
    reason: t.exposeString('reason', { nullable: true, authScopes: { merchant: true }, description: 'Why a merchant adjusted or refunded (secret key only).' }),
    metadata: t.field({ type: 'JSONObject', authScopes: { merchant: true }, description: 'Secret key only.', resolve: (x) => x.metadata }),
    sourceRef: t.exposeString('sourceRef', { nullable: true }),
    actor: t.field({ type: ActorRef, authScopes: { merchant: true }, description: 'Who made the change (secret key only).', resolve: (x) => ({ kind: x.actorKind, apiKeyId: x.actorApiKeyId }) }),
    occurredAt: t.expose('occurredAt', { type: 'DateTime' }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    entries: t.field({
      type: [LedgerEntryRef],
      authScopes: { merchant: true },
      description: 'Both sides of the change, the counter-accounts included (secret key only).',
      resolve: (x, _args, ctx) => ctx.services.ledgerQueries.entries(x.merchantId, x.id),
    }),
  }),
});

const ActorKindEnum = builder.enumType('LedgerActorKind', {
  description: 'Who caused a change: a secret key, a customer token (gateway calls), or the system (expiry).',
  values: { API_KEY: { value: 'api_key' }, CUSTOMER: { value: 'customer' }, SYSTEM: { value: 'system' } } as const,
});

const TransactionFilterInput = builder.inputType('LedgerTransactionFilter', {
  fields: (t) => ({
    kinds: t.field({ type: [TransactionKindEnum] }),
    actorApiKeyId: t.id({ description: 'Made with this API key (LedgerActor.apiKeyId; secret key only).' }),
    actorKind: t.field({ type: ActorKindEnum, description: 'Made by this kind of actor (LedgerActor.kind; secret key only).' }),
    createdAfter: t.field({ type: 'DateTime', description: 'Created at or after this time (inclusive).' }),
    createdBefore: t.field({ type: 'DateTime', description: 'Created before this time (exclusive): createdAfter and createdBefore of adjacent windows share their bound, and no row falls in both.' }),
    idempotencyKey: t.string(),
  }),
});

const WalletRef = builder.objectRef<WalletView>('Wallet').implement({
  description: "One customer's credit in one currency.",
  fields: (t) => ({
    id: t.exposeID('id'),
    customerId: t.exposeID('customerId'),
    currency: t.exposeString('currency'),
    balance: t.field({ type: MoneyRef, resolve: (w) => money(w.balance, w.currency) }),
    available: t.field({ type: MoneyRef, description: 'Balance minus pending holds: what a new charge may use.', resolve: (w) => money(w.available, w.currency) }),
    held: t.field({ type: MoneyRef, resolve: (w) => money(w.held, w.currency) }),
    overdraftLimit: t.field({ type: MoneyRef, description: 'How far below zero usage may go (0: prepaid only).', resolve: (w) => money(w.overdraftLimit, w.currency) }),
    // A connection, not a list: a wallet gets a grant with every top-up, so its history has no
    // bound, and a list's cost could not be known before it ran (see graphql/limits.ts).
    grants: t.connection(
      {
        type: CreditGrantRef,
        description: 'Oldest first.',
        args: { includeInactive: t.arg.boolean({ defaultValue: false, description: 'Also list used-up and expired grants.' }) },
        resolve: async (w, args, ctx) => {
          const includeInactive = args.includeInactive ?? false;
          const connection = await resolveCursorConnection<Promise<CreditGrant[]>>(
            { args, toCursor: (x: CreditGrant) => encodeCreatedCursor(x), defaultSize: 20, maxSize: 100 },
            (page) => ctx.services.ledgerQueries.grantsPage(w.id, includeInactive, page),
          );
          return withTotalCount(connection, () => ctx.services.ledgerQueries.countGrants(w.id, includeInactive));
        },
      },
      {
        name: 'WalletGrantConnection',
        fields: (t) => ({
          totalCount: t.int({ resolve: totalCountOf }),
          nodes: t.field({ type: [CreditGrantRef], description: "The page's grants, without their cursors.", resolve: (connection) => connection.edges.map((edge) => edge!.node) }),
        }),
      },
    ),
    holds: t.connection(
      {
        type: HoldRef,
        description: 'Newest first: what makes up `held`, and what earlier holds became.',
        args: { status: t.arg({ type: [HoldStatusEnum], description: 'Only holds in these states (a pending hold past its time is EXPIRED).' }) },
        resolve: async (w, args, ctx) => {
          const connection = await resolveCursorConnection<Promise<HoldRecord[]>>(
            { args, toCursor: (x: HoldRecord) => encodeCreatedCursor(x), defaultSize: 20, maxSize: 100 },
            (page) => ctx.services.ledgerQueries.holdsPage(w.merchantId, w, args.status, page),
          );
          return withTotalCount(connection, () => ctx.services.ledgerQueries.countHolds(w.merchantId, w, args.status));
        },
      },
      {
        name: 'WalletHoldConnection',
        fields: (t) => ({
          totalCount: t.int({ resolve: totalCountOf }),
          nodes: t.field({ type: [HoldRef], description: "The page's holds, without their cursors.", resolve: (connection) => connection.edges.map((edge) => edge!.node) }),
        }),
      },
    ),
    transactions: t.connection(
      {
        type: LedgerTransactionRef,
        description: 'Newest first.',
        args: { filter: t.arg({ type: TransactionFilterInput }) },
        resolve: async (w, args, ctx) => {
          const filter = args.filter as TransactionFilter | null | undefined;
          // Who made a change is the merchant's (LedgerTransaction.actor): not to be found out by filtering on it either.
          if (filter?.actorApiKeyId != null || filter?.actorKind != null) merchantViewer(ctx);
          const connection = await resolveCursorConnection<Promise<LedgerTransaction[]>>(
            { args, toCursor: (x: LedgerTransaction) => encodeCreatedCursor(x), defaultSize: 20, maxSize: 100 },
            (page) => ctx.services.ledgerQueries.transactionsPage(w.merchantId, { walletId: w.id }, filter, page),
          );
          return withTotalCount(connection, () => ctx.services.ledgerQueries.countTransactions(w.merchantId, { walletId: w.id }, filter));
        },
      },
      { name: 'WalletTransactionConnection', fields: (t) => ({ totalCount: t.int({ resolve: totalCountOf }) }) },
    ),
    version: t.string({
      description: 'Raised by every change to the wallet (balance, holds, overdraft limit), as a decimal integer: of two readings, a query\'s or a pushed balanceUpdated, the higher version is the newer state.',
      resolve: (w) => w.version.toString(),
    }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
  }),
});

const HoldRef = builder.objectRef<HoldRecord>('Hold').implement({
  description: 'Reserved credit: counts against the available balance until captured, released or expired.',
  fields: (t) => ({
    id: t.exposeID('id'),
    customerId: t.exposeID('customerId'),
    amount: t.field({ type: MoneyRef, resolve: (h) => money(h.amount, h.currency) }),
    capturedAmount: t.field({ type: MoneyRef, resolve: (h) => money(h.capturedAmount, h.currency) }),
    status: t.field({ type: HoldStatusEnum, resolve: (h) => h.status }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
    idempotencyKey: t.exposeString('idempotencyKey'),
    description: t.exposeString('description', { nullable: true }),
    captureTransactionId: t.exposeID('captureTransactionId', { nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    createdBy: t.field({
      type: ActorRef, nullable: true, authScopes: { merchant: true },
      description: 'Who placed it: an API key, a customer token through the gateway (secret key only; null for holds placed before Tollgate recorded it).',
      resolve: (h) => h.createdBy,
    }),
    finalizedAt: t.expose('finalizedAt', { type: 'DateTime', nullable: true, description: 'When it was captured, released or expired; null while pending.' }),
    finalizedBy: t.field({
      type: ActorRef, nullable: true, authScopes: { merchant: true },
      description: 'Who captured or released it, or the system when it expired (secret key only; null while pending, and for holds settled before Tollgate recorded it).',
      resolve: (h) => h.finalizedBy,
    }),
  }),
});

// Results carry the posted transaction (or the first one, on a replay) and the wallet after it.
interface OperationShape {
  transaction: PostedTransaction | null;
  replayed: boolean;
  merchantId: string;
  customerId: string;
  currency: string;
  grantId?: string;
}

/**
 * The shared shape of the wallet mutations: scope to the merchant, resolve the currency, run
 * the operation as the calling key, and return it with the wallet it touched.
 */
async function walletOperation<R extends { transaction: PostedTransaction | null; replayed: boolean }>(
  ctx: Context,
  input: { customerId: string | number; currency?: string | null },
  run: (merchantId: string, actor: Actor, target: { customerId: string; currency: string }) => Promise<R>,
): Promise<R & OperationShape> {
  const merchantId = merchantIdOf(ctx);
  const target = { customerId: String(input.customerId), currency: currencyArg(input.currency) };
  const result = await run(merchantId, actorOf(ctx), target);
  return { ...result, merchantId, ...target };
}

/** Scoped to the merchant although the id comes from its own operation: no lookup by id alone. */
const loadTransaction = (ctx: Context, merchantId: string, posted: PostedTransaction | null) =>
  posted ? ctx.services.prisma.ledgerTransaction.findFirstOrThrow({ where: { id: posted.id, merchantId } }) : null;

const LedgerOperationRef = builder.objectRef<OperationShape>('LedgerOperationResult').implement({
  fields: (t) => ({
    transaction: t.field({ type: LedgerTransactionRef, nullable: true, resolve: (r, _args, ctx) => loadTransaction(ctx, r.merchantId, r.transaction) }),
    replayed: t.exposeBoolean('replayed', { description: 'True when the idempotency key was seen before: nothing moved this time.' }),
    grant: t.field({
      type: CreditGrantRef,
      nullable: true,
      description: 'The grant the credit went to: grantCredits, or a positive adjustBalance (promotional credit); null for the others.',
      resolve: (r, _args, ctx) => (r.grantId ? ctx.services.prisma.creditGrant.findFirst({ where: { id: r.grantId, merchantId: r.merchantId } }) : null),
    }),
    wallet: t.field({ type: WalletRef, resolve: (r, _args, ctx) => ctx.services.ledgerQueries.wallet(r.merchantId, r.customerId, r.currency) }),
  }),
});

const HoldResultRef = builder.objectRef<{ hold: HoldRecord; transaction: PostedTransaction | null; replayed: boolean }>('HoldResult').implement({
  fields: (t) => ({
    hold: t.field({ type: HoldRef, resolve: (r) => r.hold }),
    transaction: t.field({ type: LedgerTransactionRef, nullable: true, resolve: (r, _args, ctx) => loadTransaction(ctx, r.hold.merchantId, r.transaction) }),
    replayed: t.exposeBoolean('replayed'),
    wallet: t.field({ type: WalletRef, resolve: (r, _args, ctx) => ctx.services.ledgerQueries.wallet(r.hold.merchantId, r.hold.customerId, r.hold.currency) }),
  }),
});

const IntegrityRef = builder.objectRef<{ ok: boolean; walletsChecked: number; transactionsChecked: number; violations: string[] }>('LedgerIntegrityReport').implement({
  fields: (t) => ({
    ok: t.exposeBoolean('ok'),
    walletsChecked: t.exposeInt('walletsChecked'),
    transactionsChecked: t.exposeInt('transactionsChecked'),
    violations: t.exposeStringList('violations'),
  }),
});

const BalanceUpdateRef = builder.objectRef<BalanceEvent & { merchantId: string }>('BalanceUpdate').implement({
  description: 'Pushed after every committed change to a wallet.',
  fields: (t) => ({
    customerId: t.id({ resolve: (e) => e.customerId }),
    // The event's own figures, read back without the input limit: a wallet may hold more than a caller may send at once.
    balance: t.field({ type: MoneyRef, resolve: (e) => money(parseFormattedNanos(e.balance), e.currency) }),
    available: t.field({ type: MoneyRef, resolve: (e) => money(parseFormattedNanos(e.available), e.currency) }),
    transactionIds: t.idList({ resolve: (e) => e.transactionIds }),
    version: t.string({
      nullable: true,
      description:
        "The wallet's version the figures show (see Wallet.version): a client merging a wallet query with these pushes keeps whichever is higher. Null only from a server instance older than this field.",
      resolve: (e) => (typeof e.version === 'string' ? e.version : null),
    }),
    wallet: t.field({ type: WalletRef, resolve: (e, _args, ctx) => ctx.services.ledgerQueries.wallet(e.merchantId, e.customerId, e.currency) }),
  }),
});

// ------------------------------------------------------------------ queries

builder.queryFields((t) => ({
  wallet: t.field({
    type: WalletRef,
    description: "A customer's wallet in one currency. One not used yet reads as empty (its id is the one it will have); reading never creates it.",
    args: { customerId: t.arg.id({ required: true }), currency: t.arg.string({ defaultValue: 'USD' }) },
    authScopes: walletScopes,
    resolve: (_root, args, ctx) => ctx.services.ledgerQueries.wallet(merchantIdOf(ctx), String(args.customerId), currencyArg(args.currency)),
  }),
  wallets: t.field({
    type: [WalletRef],
    args: { customerId: t.arg.id({ required: true }) },
    authScopes: walletScopes,
    resolve: (_root, args, ctx) => ctx.services.ledgerQueries.wallets(merchantIdOf(ctx), String(args.customerId)),
  }),
  hold: t.field({
    type: HoldRef,
    args: { id: t.arg.id({ required: true }) },
    authScopes: { merchant: true },
    resolve: (_root, args, ctx) => ctx.services.ledger.getHold(merchantIdOf(ctx), String(args.id)),
  }),
  ledgerTransactions: t.connection(
    {
      type: LedgerTransactionRef,
      description: 'The audit trail across all customers, newest first.',
      authScopes: { merchant: true },
      args: { customerId: t.arg.id(), filter: t.arg({ type: TransactionFilterInput }) },
      resolve: async (_root, args, ctx) => {
        const merchantId = merchantIdOf(ctx);
        // Checked here: Prisma fails a non-UUID id as an internal error.
        const scope = args.customerId != null ? { customerId: requireUuid('customerId', String(args.customerId)) } : {};
        const filter = args.filter as TransactionFilter | null | undefined;
        const connection = await resolveCursorConnection<Promise<LedgerTransaction[]>>(
          { args, toCursor: (x: LedgerTransaction) => encodeCreatedCursor(x), defaultSize: 20, maxSize: 100 },
          (page) => ctx.services.ledgerQueries.transactionsPage(merchantId, scope, filter, page),
        );
        return withTotalCount(connection, () => ctx.services.ledgerQueries.countTransactions(merchantId, scope, filter));
      },
    },
    { name: 'LedgerTransactionConnection', fields: (t) => ({ totalCount: t.int({ resolve: totalCountOf }) }) },
  ),
  ledgerIntegrity: t.field({
    type: IntegrityRef,
    description: 'Checks that the books balance: cached balances equal the sum of their entries, and every transaction sums to zero.',
    authScopes: { merchant: true },
    resolve: (_root, _args, ctx) => ctx.services.ledgerQueries.integrity(merchantIdOf(ctx)),
  }),
}));

// ------------------------------------------------------------------ mutations

const GrantCreditsInput = builder.inputType('GrantCreditsInput', {
  fields: (t) => ({
    customerId: t.id({ required: true }),
    amount: t.field({ type: 'Decimal', required: true }),
    currency: t.string({ defaultValue: 'USD' }),
    kind: t.field({ type: CreditGrantKindEnum, required: true }),
    expiresAt: t.field({ type: 'DateTime' }),
    priority: t.int({ description: 'Lower is spent first when the consumption order uses PRIORITY.' }),
    description: t.string(),
    metadata: t.field({ type: 'JSONObject' }),
    idempotencyKey: t.string({ required: true }),
  }),
});

const AdjustBalanceInput = builder.inputType('AdjustBalanceInput', {
  fields: (t) => ({
    customerId: t.id({ required: true }),
    amount: t.field({ type: 'Decimal', required: true, description: 'Positive adds credit, negative removes it.' }),
    currency: t.string({ defaultValue: 'USD' }),
    reason: t.string({ required: true }),
    idempotencyKey: t.string({ required: true }),
    expiresAt: t.field({ type: 'DateTime', description: 'When credit added (a positive amount) expires; never by default. Refused with a negative amount, or in the past.' }),
  }),
});

const RefundCreditsInput = builder.inputType('RefundCreditsInput', {
  fields: (t) => ({
    customerId: t.id({ required: true }),
    amount: t.field({ type: 'Decimal', required: true }),
    currency: t.string({ defaultValue: 'USD' }),
    reason: t.string({ required: true }),
    idempotencyKey: t.string({ required: true }),
  }),
});

const DebitCreditsInput = builder.inputType('DebitCreditsInput', {
  fields: (t) => ({
    customerId: t.id({ required: true }),
    amount: t.field({ type: 'Decimal', required: true, description: 'May be finer than a nano; the remainder is carried to the next charge.' }),
    currency: t.string({ defaultValue: 'USD' }),
    idempotencyKey: t.string({ required: true }),
    description: t.string(),
    metadata: t.field({ type: 'JSONObject' }),
  }),
});

const CreateHoldInput = builder.inputType('CreateHoldInput', {
  fields: (t) => ({
    customerId: t.id({ required: true }),
    amount: t.field({ type: 'Decimal', required: true }),
    currency: t.string({ defaultValue: 'USD' }),
    ttlSeconds: t.int({ defaultValue: 300, description: 'The hold releases itself after this long.' }),
    idempotencyKey: t.string({ required: true }),
    description: t.string(),
  }),
});

builder.mutationFields((t) => ({
  grantCredits: t.field({
    type: LedgerOperationRef,
    authScopes: { merchant: true },
    args: { input: t.arg({ type: GrantCreditsInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      walletOperation(ctx, input, (merchantId, actor, target) =>
        ctx.services.ledger.grantCredits(merchantId, actor, {
          ...target,
          amountNanos: requirePositiveNanos('amount', input.amount),
          kind: input.kind,
          expiresAt: input.expiresAt,
          priority: input.priority,
          description: input.description,
          metadata: input.metadata,
          idempotencyKey: input.idempotencyKey,
        }),
      ),
  }),
  adjustBalance: t.field({
    type: LedgerOperationRef,
    authScopes: { merchant: true },
    args: { input: t.arg({ type: AdjustBalanceInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      walletOperation(ctx, input, (merchantId, actor, target) =>
        ctx.services.ledger.adjustBalance(merchantId, actor, {
          ...target,
          amountNanos: parseDecimalNanos('amount', input.amount),
          reason: input.reason,
          idempotencyKey: input.idempotencyKey,
          expiresAt: input.expiresAt,
        }),
      ),
  }),
  refundCredits: t.field({
    type: LedgerOperationRef,
    description: 'Removes paid credit (only paid grants are drawn from).',
    authScopes: { merchant: true },
    args: { input: t.arg({ type: RefundCreditsInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      walletOperation(ctx, input, (merchantId, actor, target) =>
        ctx.services.ledger.refundCredits(merchantId, actor, {
          ...target,
          amountNanos: requirePositiveNanos('amount', input.amount),
          reason: input.reason,
          idempotencyKey: input.idempotencyKey,
        }),
      ),
  }),
  debitCredits: t.field({
    type: LedgerOperationRef,
    description: 'Charges a wallet directly. Refused with INSUFFICIENT_FUNDS when available credit (plus any overdraft allowance) is short.',
    authScopes: { merchant: true },
    args: { input: t.arg({ type: DebitCreditsInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      walletOperation(ctx, input, (merchantId, actor, target) =>
        ctx.services.ledger.debit(merchantId, actor, {
          ...target,
          amountAttos: requirePositiveAttos('amount', input.amount),
          idempotencyKey: input.idempotencyKey,
          description: input.description,
          metadata: input.metadata,
        }),
      ),
  }),
  createHold: t.field({
    type: HoldResultRef,
    authScopes: { merchant: true },
    args: { input: t.arg({ type: CreateHoldInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const result = await ctx.services.ledger.createHold(merchantIdOf(ctx), actorOf(ctx), {
        customerId: String(input.customerId),
        currency: currencyArg(input.currency),
        amountNanos: requirePositiveNanos('amount', input.amount),
        ttlSeconds: input.ttlSeconds ?? 300,
        idempotencyKey: input.idempotencyKey,
        description: input.description,
      });
      return { ...result, transaction: null };
    },
  }),
  captureHold: t.field({
    type: HoldResultRef,
    description: 'Charges up to the held amount (default: all of it) and frees the rest.',
    authScopes: { merchant: true },
    args: { id: t.arg.id({ required: true }), amount: t.arg({ type: 'Decimal' }) },
    resolve: (_root, args, ctx) =>
      ctx.services.ledger.captureHold(merchantIdOf(ctx), actorOf(ctx), String(args.id), args.amount == null ? null : parseDecimalNanos('amount', args.amount)),
  }),
  releaseHold: t.field({
    type: HoldRef,
    authScopes: { merchant: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: (_root, args, ctx) => ctx.services.ledger.releaseHold(merchantIdOf(ctx), actorOf(ctx), String(args.id)),
  }),
  setOverdraftLimit: t.field({
    type: WalletRef,
    description: "Lets usage take this customer's balance down to minus the limit (0 = prepaid only).",
    authScopes: { merchant: true },
    args: { customerId: t.arg.id({ required: true }), currency: t.arg.string({ defaultValue: 'USD' }), limit: t.arg({ type: 'Decimal', required: true }) },
    resolve: async (_root, args, ctx) => {
      const merchantId = merchantIdOf(ctx);
      const currency = currencyArg(args.currency);
      await ctx.services.ledger.setOverdraftLimit(merchantId, String(args.customerId), currency, parseDecimalNanos('limit', args.limit));
      return ctx.services.ledgerQueries.wallet(merchantId, String(args.customerId), currency);
    },
  }),
  setCreditConsumptionOrder: t.field({
    type: [ConsumptionKeyEnum],
    description: 'Which grants are spent first. Keys left out break ties in the default order.',
    authScopes: { merchant: true },
    args: { order: t.arg({ type: [ConsumptionKeyEnum], required: true }) },
    resolve: (_root, args, ctx) => ctx.services.ledger.setConsumptionOrder(merchantIdOf(ctx), args.order as ConsumptionKey[]),
  }),
}));

builder.queryField('creditConsumptionOrder', (t) =>
  t.field({
    type: [ConsumptionKeyEnum],
    authScopes: { merchant: true },
    resolve: (_root, _args, ctx) => ctx.services.ledger.store.consumptionOrder(merchantIdOf(ctx)),
  }),
);

// ------------------------------------------------------------------ subscription

builder.subscriptionField('balanceUpdated', (t) =>
  t.field({
    type: BalanceUpdateRef,
    description: "Pushes every committed change to the customer's wallets (optionally one currency).",
    args: { customerId: t.arg.id({ required: true }), currency: t.arg.string() },
    authScopes: walletScopes,
    subscribe: async (_root, args, ctx) => {
      const merchantId = merchantIdOf(ctx);
      const customerId = await ctx.services.ledger.assertCustomer(merchantId, String(args.customerId));
      // Left out (or null) watches every currency; given, it must be one, as everywhere else: "" is
      // a mistake, not a wish for all of them.
      const currency = args.currency != null ? currencyArg(args.currency) : null;
      // Events missed while the PubSub was interrupted (Redis) are made up for by the wallets as
      // they are once it is back, read with their versions and ordered as any event.
      const events = subscribeResynced(ctx.services.pubsub, walletTopic(customerId), async () => {
        const wallets = currency === null
          ? await ctx.services.ledgerQueries.wallets(merchantId, customerId)
          : [await ctx.services.ledgerQueries.wallet(merchantId, customerId, currency)];
        return wallets.map((wallet) => balanceEventOf(wallet));
      });
      // Events of one wallet published by two instances may cross on the way: one arriving after
      // a newer state shows the newer figures (see inVersionOrder), so the last pushed is the wallet as it is.
      const newest = new Map<string, BalanceEvent>();
      return selectEvents(events, (payload) => {
        const event = payload as unknown as BalanceEvent;
        if (currency !== null && event.currency !== currency) return null;
        // A state already pushed, announced again with nothing posted (a re-sync after a quiet outage), is not pushed twice.
        if (Array.isArray(event.transactionIds) && event.transactionIds.length === 0 && newest.get(event.walletId)?.version === event.version) return null;
        return inVersionOrder(event, newest);
      });
    },
    resolve: (event, _args, ctx) => ({ ...(event as unknown as BalanceEvent), merchantId: merchantIdOf(ctx) }),
  }),
);

/**
 * The events `pick` answers for (what it answers; null skips one). A plain iterator, not an async
 * generator: a generator waiting for its next event queues `return()` until one comes, so a
 * subscription completed (or a socket closed) on a quiet wallet kept its listener, and its Redis
 * channel, until the wallet next changed.
 */
function selectEvents<T, U>(events: AsyncIterableIterator<T>, pick: (event: T) => U | null): AsyncIterableIterator<U> {
  return {
    async next(): Promise<IteratorResult<U>> {
      for (;;) {
        const result = await events.next();
        if (result.done) return { done: true, value: undefined };
        const picked = pick(result.value);
        if (picked !== null) return { done: false, value: picked };
      }
    },
    async return(): Promise<IteratorResult<U>> {
      await events.return?.();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}
