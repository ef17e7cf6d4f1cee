import { randomUUID } from 'node:crypto';
import { getNamedType, isObjectType, type GraphQLField, type GraphQLNamedType, type GraphQLObjectType } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from './server.ts';
import { KINDS, TOKEN_REFUSED, answerOf, codesOf, expectEmpty, expectRowsAsBefore, firstEvent, leaked, namingPaths, needlesOf, needlesOfMerchant, othersNeedles, servedApi, valuesAt, type Answer, type CustomerSeedBase, type RootKind, type Snapshot, type TenantBase } from './tenant-world.ts';

/**
 * Tenant isolation over the whole GraphQL API, driven by the schema the server serves.
 *
 * Merchant A and merchant B are seeded alike (customers X, Y and an archived Z, credit, a debit,
 * holds, usage, a meter, rules, a plan, a spend limit, a provider price and credential, a key, a
 * gateway host and a logged gateway call). Every root field of Query, Mutation and Subscription
 * is classified below; a field the table does not know fails the first test. Then:
 *  - B's secret key aims every field at A's ids, keys and names: NOT_FOUND, an empty answer or
 *    null, or (for fields with nothing of A to aim at) an answer about B only;
 *  - X's session token aims every field at Y (and at B): merchant-only fields are FORBIDDEN
 *    whatever they ask, the customer's own fields FORBIDDEN for anyone but X;
 *  - X's token reads its own fields with every nested field it may see, and sees nothing of Y's.
 * After each call, no answer holds any of A's ids or names (beyond what the caller sent), and
 * every row of A, in every table with a merchant_id, is as it was.
 */

// ------------------------------------------------------------------ the world

interface CustomerSeed extends CustomerSeedBase {
  adjustKey: string;
  debitKey: string;
  holdKey: string;
  usageKey: string;
  usageEventId: string;
}

interface Tenant extends TenantBase<CustomerSeed> {
  /** A hold of X's, captured in part. */
  capturedHoldId: string;
  apiKey: { id: string; secret: string };
  credential: { id: string; secret: string };
  gatewayRequestId: string;
}

interface World {
  a: Tenant;
  b: Tenant;
  /** Cursors of A's rows in A's lists (customers, ledgerTransactions, usageEvents, gatewayRequests). */
  aCursors: Record<string, string>;
  /** X of A's session token. */
  xToken: string;
}

const api = servedApi();
const { ok, rootType, connect, overWebSocket, rowsOf, snapshot, seedMerchant, watched, grantAndRename } = api;
let server: TestServer;
let w: World;

/** A's rows as seeded; nothing after the seeding may change them (until the subscription tests act as A). */
let baseline: Snapshot;
/** Every id and tagged string in A's rows, and A's secrets: none may reach B. */
let aNeedles: Set<string>;
/** What of A's X's token must not see: Y's and Z's rows, A's secrets, and all of B. */
let notForX: Set<string>;
/** B's ids and tagged strings: a list B reads must show some of them. */
let bNeedles: Set<string>;

/** A root field called with `token`: over HTTP, or (a subscription) over a graphql-ws socket of its own. */
const call = (kind: RootKind, field: string, args: Record<string, unknown>, token: string, skip?: ReadonlySet<string>): Promise<Answer> =>
  api.call(kind, field, args, token, kind === 'Subscription' ? connect(token) : 'http', skip);

/**
 * What of A's an answer to B holds. B may have stored a string of A's itself (an externalId or an
 * idempotency key it reused, see SAME_NAMES): that one, read back from B's own rows, is not A's.
 */
async function leakedToB(answer: Answer): Promise<string[]> {
  const found = leaked(answer, aNeedles);
  if (found.length === 0) return found;
  const bHas = needlesOf(Object.values(await rowsOf(w.b.merchant.id)).flat(), w.a.tag);
  return found.filter((needle) => !bHas.has(needle));
}

/** Every row of A, in every table with a merchant_id, is as in the baseline. */
async function expectAUnchanged(what: string) {
  expectRowsAsBefore(what, baseline, await snapshot(w.a.merchant.id));
}

// ------------------------------------------------------------------ seeding

async function seedTenant(name: string): Promise<Tenant> {
  const seeded = await seedMerchant(name, { describedPlan: true });
  const { tag, merchant, model, planKey } = seeded;
  const s = merchant.secret;

  const customer = async (letter: string): Promise<CustomerSeed> => {
    const externalId = `${tag}-${letter}-ext`;
    const email = `${tag}-${letter}@example.com`;
    const created = await ok<{ createCustomer: { id: string } }>(s, 'mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }', {
      input: { externalId, email, name: `${tag} ${letter} name`, metadata: { note: `${tag}-${letter}-private-note` } },
    });
    const id = created.createCustomer.id;
    const keys = { grantKey: `${tag}-${letter}-grant`, adjustKey: `${tag}-${letter}-adjust`, debitKey: `${tag}-${letter}-debit`, holdKey: `${tag}-${letter}-hold`, usageKey: `${tag}-${letter}-usage` };
    const granted = await ok<{ grantCredits: { wallet: { id: string } } }>(s, 'mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { wallet { id } } }', {
      input: { customerId: id, amount: '100', kind: 'PAID', idempotencyKey: keys.grantKey, description: `${tag} ${letter} top-up`, metadata: { invoice: `${tag}-${letter}-invoice` } },
    });
    await ok(s, 'mutation ($input: AdjustBalanceInput!) { adjustBalance(input: $input) { replayed } }', {
      input: { customerId: id, amount: '5', reason: `${tag} ${letter} goodwill`, idempotencyKey: keys.adjustKey },
    });
    await ok(s, 'mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed } }', {
      input: { customerId: id, amount: '1', idempotencyKey: keys.debitKey, description: `${tag} ${letter} debit` },
    });
    const held = await ok<{ createHold: { hold: { id: string } } }>(s, 'mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }', {
      input: { customerId: id, amount: '2', ttlSeconds: 3600, idempotencyKey: keys.holdKey, description: `${tag} ${letter} hold` },
    });
    const usage = await ok<{ recordUsage: { event: { id: string } } }>(s, 'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { event { id } } }', {
      input: { customer: id, idempotencyKey: keys.usageKey, usage: { provider: 'openai', model, inputTokens: 1000, outputTokens: 500 }, metadata: { trace: `${tag}-${letter}-trace` } },
    });
    return { id, externalId, email, walletId: granted.grantCredits.wallet.id, ...keys, holdId: held.createHold.hold.id, usageEventId: usage.recordUsage.event.id };
  };
  const x = await customer('x');
  const y = await customer('y');
  const zCreated = await customer('z');
  await ok(s, 'mutation ($id: ID!) { archiveCustomer(id: $id) { id } }', { id: zCreated.id });

  // X: on the plan, with a hold captured in part. Y: blocked, with a spend limit and an overdraft allowance.
  await ok(s, 'mutation ($id: ID!, $plan: String) { setCustomerPlan(customerId: $id, planKey: $plan) { id } }', { id: x.id, plan: planKey });
  const toCapture = await ok<{ createHold: { hold: { id: string } } }>(s, 'mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }', {
    input: { customerId: x.id, amount: '3', idempotencyKey: `${tag}-x-hold-captured` },
  });
  const capturedHoldId = toCapture.createHold.hold.id;
  await ok(s, 'mutation ($id: ID!) { captureHold(id: $id, amount: "1") { replayed } }', { id: capturedHoldId });
  await ok(s, 'mutation ($id: ID!) { setSpendLimit(customerId: $id, amount: "50") { id } }', { id: y.id });
  await ok(s, 'mutation ($id: ID!) { setOverdraftLimit(customerId: $id, limit: "10") { id } }', { id: y.id });
  await ok(s, 'mutation ($id: ID!, $reason: String) { blockCustomer(id: $id, reason: $reason) { id } }', { id: y.id, reason: `${tag} y blocked` });

  const key = await ok<{ createApiKey: { secret: string; apiKey: { id: string } } }>(s, 'mutation ($name: String!) { createApiKey(name: $name) { secret apiKey { id } } }', { name: `${tag}-ci` });
  const credentialSecret = `sk-${tag}-provider-secret-0123456789`;
  const credential = await ok<{ setProviderCredential: { id: string } }>(s, 'mutation ($key: String!) { setProviderCredential(provider: "openai", apiKey: $key) { id } }', { key: credentialSecret });
  const host = `${tag}.example.com`;
  const gatewayHost = await ok<{ putGatewayHost: { id: string } }>(s, 'mutation ($host: String!) { putGatewayHost(host: $host, provider: "openai") { id } }', { host });
  const order = name === 'alpha' ? ['PRIORITY', 'EXPIRY'] : ['KIND'];
  await ok(s, 'mutation ($order: [CreditConsumptionKey!]!) { setCreditConsumptionOrder(order: $order) }', { order });
  await ok(s, 'mutation { updateGatewaySettings(reserveMaxCost: true) { id } }');
  // A logged gateway call of Y's (the gateway itself is tested elsewhere).
  const gatewayRequestId = randomUUID();
  await server.services.prisma.gatewayRequest.create({
    data: { id: gatewayRequestId, merchantId: merchant.id, customerId: y.id, provider: 'openai', method: 'POST', host, path: `/v1/${tag}/chat`, status: 200, outcome: 'COMPLETED', latencyMs: 12, createdAt: new Date() },
  });

  return {
    ...seeded,
    x,
    y,
    z: { id: zCreated.id, externalId: zCreated.externalId },
    capturedHoldId,
    host,
    hostId: gatewayHost.putGatewayHost.id,
    apiKey: { id: key.createApiKey.apiKey.id, secret: key.createApiKey.secret },
    credential: { id: credential.setProviderCredential.id, secret: credentialSecret },
    gatewayRequestId,
  };
}

// ------------------------------------------------------------------ the classification

/**
 * How a call ends: refused (NOT_FOUND, FORBIDDEN), answered with nothing (EMPTY: every list
 * empty and every count 0; NULL), or answered about the caller's own tenant (OWN; OWN_ROWS also
 * shows some of the caller's own rows, so an empty answer cannot pass for isolation).
 */
type Expectation = 'NOT_FOUND' | 'FORBIDDEN' | 'VALIDATION' | 'EMPTY' | 'NULL' | 'OWN' | 'OWN_ROWS';

interface Probe {
  why: string;
  args: (w: World) => Record<string, unknown>;
  expect: Expectation;
  /** More checks of a successful answer's data (the field's value). */
  check?: (value: any, w: World) => void | Promise<void>;
}

/**
 * merchant: secret keys only (a session token is FORBIDDEN whatever it asks).
 * self: a secret key for any customer of its merchant; a session token for its own customer only.
 * any: every credential, answering about the caller itself.
 */
type Access = 'merchant' | 'self' | 'any';

interface FieldPlan {
  access: Access;
  /** B's secret key aimed at A's objects (or, with nothing to aim at, reading and writing B's own). */
  cross: Probe[];
  /** For `self`: what X's token is refused (Y's, Z's, B's customers, lookups by externalId). */
  notSelf?: ((w: World) => Record<string, unknown>)[];
  /** For `self` and `any`: X's token reading its own. */
  own?: (w: World) => Record<string, unknown>;
}

const p = (why: string, expect: Expectation, args: Probe['args'] = () => ({}), check?: Probe['check']): Probe => ({ why, expect, args, check });
const fresh = (w: World, what: string) => `${w.b.tag}-${what}-${randomUUID().slice(0, 6)}`;

const QUERY: Record<string, FieldPlan> = {
  apiKeys: { access: 'merchant', cross: [p('lists only its own keys', 'OWN_ROWS', () => ({ includeRevoked: true }))] },
  creditConsumptionOrder: {
    access: 'merchant',
    cross: [p('reads its own setting', 'OWN', () => ({}), (order) => expect(order).toEqual(['KIND', 'EXPIRY', 'PRIORITY', 'CREATED']))],
  },
  customer: {
    access: 'self',
    cross: [
      p("A's customer by id", 'NOT_FOUND', (w) => ({ id: w.a.y.id })),
      p("A's customer by id in capitals", 'NOT_FOUND', (w) => ({ id: w.a.y.id.toUpperCase() })),
      p("A's archived customer", 'NOT_FOUND', (w) => ({ id: w.a.z.id })),
      p("A's customer by externalId", 'NOT_FOUND', (w) => ({ externalId: w.a.y.externalId })),
    ],
    notSelf: [(w) => ({ id: w.a.y.id }), (w) => ({ id: w.a.y.id.toUpperCase() }), (w) => ({ id: w.a.z.id }), (w) => ({ id: w.b.x.id }), (w) => ({ externalId: w.a.y.externalId }), (w) => ({ externalId: w.a.x.externalId })],
    own: (w) => ({ id: w.a.x.id }),
  },
  customers: {
    access: 'merchant',
    cross: [
      p('lists and counts only its own', 'OWN_ROWS', () => ({ filter: { status: 'ALL' } }), async (connection, w) =>
        expect(connection.totalCount).toBe(await server.services.prisma.customer.count({ where: { merchantId: w.b.merchant.id } })),
      ),
      p("filtered by A's externalIds", 'EMPTY', (w) => ({ filter: { status: 'ALL', externalIds: [w.a.x.externalId, w.a.y.externalId, w.a.z.externalId] } })),
      p("searching A's names", 'EMPTY', (w) => ({ filter: { status: 'ALL', search: w.a.tag } })),
      p("filtered by A's customer's email", 'EMPTY', (w) => ({ filter: { status: 'ALL', email: w.a.x.email } })),
      p("paged from A's cursor", 'OWN', (w) => ({ filter: { status: 'ALL' }, before: w.aCursors.customers })),
      p("paged from A's cursor, forwards", 'OWN', (w) => ({ filter: { status: 'ALL' }, after: w.aCursors.customers })),
    ],
  },
  gatewayHosts: { access: 'merchant', cross: [p('lists only its own hosts', 'OWN_ROWS')] },
  gatewayRequest: { access: 'merchant', cross: [p("A's logged call", 'NULL', (w) => ({ id: w.a.gatewayRequestId }))] },
  gatewayRequests: {
    access: 'merchant',
    cross: [
      p('lists only its own calls', 'OWN_ROWS'),
      p("filtered by A's customer", 'EMPTY', (w) => ({ customerId: w.a.y.id })),
      p("paged from A's cursor", 'OWN', (w) => ({ before: w.aCursors.gatewayRequests })),
      p("paged from A's cursor, forwards", 'OWN', (w) => ({ after: w.aCursors.gatewayRequests })),
    ],
  },
  hold: {
    access: 'merchant',
    cross: [p("A's pending hold", 'NOT_FOUND', (w) => ({ id: w.a.y.holdId })), p("A's captured hold", 'NOT_FOUND', (w) => ({ id: w.a.capturedHoldId }))],
  },
  ledgerIntegrity: {
    access: 'merchant',
    cross: [
      p('checks and counts only its own books', 'OWN', () => ({}), async (report, w) => {
        expect(report.ok).toBe(true);
        expect(report.walletsChecked).toBe(await server.services.prisma.wallet.count({ where: { merchantId: w.b.merchant.id } }));
        expect(report.transactionsChecked).toBe(await server.services.prisma.ledgerTransaction.count({ where: { merchantId: w.b.merchant.id } }));
      }),
    ],
  },
  ledgerTransactions: {
    access: 'merchant',
    cross: [
      p('lists and counts only its own', 'OWN_ROWS', () => ({}), async (connection, w) =>
        expect(connection.totalCount).toBe(await server.services.prisma.ledgerTransaction.count({ where: { merchantId: w.b.merchant.id } })),
      ),
      p("filtered by A's customer", 'EMPTY', (w) => ({ customerId: w.a.y.id })),
      p("filtered by A's idempotency key", 'EMPTY', (w) => ({ filter: { idempotencyKey: w.a.y.grantKey } })),
      p("filtered by A's API key", 'EMPTY', (w) => ({ filter: { actorApiKeyId: w.a.merchant.apiKeyId } })),
      p("paged from A's cursor", 'OWN', (w) => ({ before: w.aCursors.ledgerTransactions })),
      p("paged from A's cursor, forwards", 'OWN', (w) => ({ after: w.aCursors.ledgerTransactions })),
    ],
  },
  merchant: { access: 'any', cross: [p('is its own merchant', 'OWN', () => ({}), (merchant, w) => expect(merchant.id).toBe(w.b.merchant.id))], own: () => ({}) },
  meters: { access: 'merchant', cross: [p('lists only its own meters', 'OWN_ROWS', () => ({ includeArchived: true }))] },
  plan: { access: 'merchant', cross: [p("A's plan by key", 'NOT_FOUND', (w) => ({ key: w.a.planKey }))] },
  plans: { access: 'merchant', cross: [p('lists only its own plans', 'OWN_ROWS', () => ({ includeArchived: true }))] },
  priceRules: {
    access: 'merchant',
    cross: [p('lists only its own default book', 'OWN_ROWS'), p("A's plan's rules", 'NOT_FOUND', (w) => ({ planKey: w.a.planKey }))],
  },
  providerCredentials: { access: 'merchant', cross: [p('lists only its own credentials', 'OWN_ROWS', () => ({ includeRevoked: true }))] },
  providerPrices: {
    access: 'merchant',
    cross: [p('lists its own prices and the list prices', 'OWN_ROWS', () => ({ provider: 'openai' })), p("A's own model", 'EMPTY', (w) => ({ model: w.a.model }))],
  },
  usageAccess: {
    access: 'self',
    cross: [p("A's customer", 'NOT_FOUND', (w) => ({ customerId: w.a.y.id })), p("A's customer in capitals, with an amount", 'NOT_FOUND', (w) => ({ customerId: w.a.y.id.toUpperCase(), amount: '1' }))],
    notSelf: [(w) => ({ customerId: w.a.y.id }), (w) => ({ customerId: w.a.z.id }), (w) => ({ customerId: w.b.x.id })],
    own: (w) => ({ customerId: w.a.x.id }),
  },
  usageEvents: {
    access: 'merchant',
    cross: [
      p('lists only its own events', 'OWN_ROWS'),
      p("filtered by A's customer", 'EMPTY', (w) => ({ customerId: w.a.y.id })),
      p("paged from A's cursor", 'OWN', (w) => ({ before: w.aCursors.usageEvents })),
      p("paged from A's cursor, forwards", 'OWN', (w) => ({ after: w.aCursors.usageEvents })),
    ],
  },
  viewer: { access: 'any', cross: [p('is its own key', 'OWN', () => ({}), (viewer, w) => expect(viewer).toMatchObject({ kind: 'MERCHANT', merchant: { id: w.b.merchant.id }, customer: null }))], own: () => ({}) },
  wallet: {
    access: 'self',
    cross: [p("A's customer's wallet", 'NOT_FOUND', (w) => ({ customerId: w.a.y.id })), p("A's customer's unused wallet", 'NOT_FOUND', (w) => ({ customerId: w.a.y.id, currency: 'EUR' }))],
    notSelf: [(w) => ({ customerId: w.a.y.id }), (w) => ({ customerId: w.a.y.id, currency: 'EUR' }), (w) => ({ customerId: w.a.z.id }), (w) => ({ customerId: w.b.x.id })],
    own: (w) => ({ customerId: w.a.x.id }),
  },
  wallets: {
    access: 'self',
    cross: [p("A's customer's wallets", 'NOT_FOUND', (w) => ({ customerId: w.a.y.id }))],
    notSelf: [(w) => ({ customerId: w.a.y.id }), (w) => ({ customerId: w.b.x.id })],
    own: (w) => ({ customerId: w.a.x.id }),
  },
};

const MUTATION: Record<string, FieldPlan> = {
  adjustBalance: {
    access: 'merchant',
    cross: [
      p("A's customer", 'NOT_FOUND', (w) => ({ input: { customerId: w.a.y.id, amount: '5', reason: 'probe', idempotencyKey: fresh(w, 'adjust') } })),
      p("A's customer, with A's own idempotency key", 'NOT_FOUND', (w) => ({ input: { customerId: w.a.y.id, amount: '5', reason: `${w.a.tag} y goodwill`, idempotencyKey: w.a.y.adjustKey } })),
    ],
  },
  archiveCustomer: { access: 'merchant', cross: [p("A's customer", 'NOT_FOUND', (w) => ({ id: w.a.y.id }))] },
  archiveMeter: { access: 'merchant', cross: [p("A's meter by key", 'NOT_FOUND', (w) => ({ key: w.a.meterKey }))] },
  archivePlan: { access: 'merchant', cross: [p("A's plan by key", 'NOT_FOUND', (w) => ({ key: w.a.planKey }))] },
  archivePriceRule: {
    access: 'merchant',
    cross: [
      p("A's default-book rule by name", 'NOT_FOUND', (w) => ({ name: w.a.ruleName })),
      p("A's plan's rule", 'NOT_FOUND', (w) => ({ name: w.a.planRuleName, planKey: w.a.planKey })),
    ],
  },
  blockCustomer: { access: 'merchant', cross: [p("A's customer", 'NOT_FOUND', (w) => ({ id: w.a.x.id, reason: 'probe' }))] },
  captureHold: {
    access: 'merchant',
    cross: [p("A's pending hold", 'NOT_FOUND', (w) => ({ id: w.a.y.holdId })), p("A's pending hold, in part", 'NOT_FOUND', (w) => ({ id: w.a.x.holdId, amount: '1' }))],
  },
  createApiKey: { access: 'merchant', cross: [p('creates its own key', 'OWN', (w) => ({ name: fresh(w, 'key') }))] },
  createCustomer: { access: 'merchant', cross: [p('creates its own customer', 'OWN', (w) => ({ input: { externalId: fresh(w, 'customer') } }))] },
  createCustomerSession: { access: 'merchant', cross: [p("A's customer", 'NOT_FOUND', (w) => ({ customerId: w.a.x.id }))] },
  createHold: {
    access: 'merchant',
    cross: [p("A's customer, with A's own idempotency key", 'NOT_FOUND', (w) => ({ input: { customerId: w.a.y.id, amount: '2', ttlSeconds: 3600, idempotencyKey: w.a.y.holdKey, description: `${w.a.tag} y hold` } }))],
  },
  createMeter: { access: 'merchant', cross: [p('creates its own meter', 'OWN', (w) => ({ input: { key: fresh(w, 'm').replaceAll('-', '_'), name: 'probe', unit: 'call', source: 'REQUESTS' } }))] },
  debitCredits: {
    access: 'merchant',
    cross: [p("A's customer, with A's own idempotency key", 'NOT_FOUND', (w) => ({ input: { customerId: w.a.y.id, amount: '1', idempotencyKey: w.a.y.debitKey, description: `${w.a.tag} y debit` } }))],
  },
  grantCredits: {
    access: 'merchant',
    cross: [p("A's customer, with A's own idempotency key", 'NOT_FOUND', (w) => ({ input: { customerId: w.a.y.id, amount: '100', kind: 'PAID', idempotencyKey: w.a.y.grantKey } }))],
  },
  importModelsDevPrices: {
    access: 'merchant',
    cross: [
      p('imports into its own prices', 'OWN', (w) => ({ json: JSON.stringify({ openai: { id: 'openai', models: { [`${w.b.tag}-imported`]: { id: `${w.b.tag}-imported`, cost: { input: 1, output: 2 } } } } }) })),
    ],
  },
  putGatewayHost: { access: 'merchant', cross: [p('adds its own host', 'OWN', (w) => ({ host: `${fresh(w, 'h')}.example.com`, provider: 'openai' }))] },
  putPlan: { access: 'merchant', cross: [p('creates its own plan', 'OWN', (w) => ({ input: { key: fresh(w, 'plan'), name: 'probe' } }))] },
  putPriceRule: {
    access: 'merchant',
    cross: [
      p("a rule in A's plan", 'NOT_FOUND', (w) => ({ input: { name: fresh(w, 'rule'), planKey: w.a.planKey, type: 'FLAT', meterKey: w.b.meterKey, config: { unitPrice: '1' } } })),
      p("a rule on A's meter", 'VALIDATION', (w) => ({ input: { name: fresh(w, 'rule'), type: 'FLAT', meterKey: w.a.meterKey, config: { unitPrice: '1' } } })),
    ],
  },
  recordUsage: {
    access: 'merchant',
    cross: [
      p("A's customer by id, with A's own idempotency key", 'NOT_FOUND', (w) => ({ input: { customer: w.a.y.id, idempotencyKey: w.a.y.usageKey, usage: { provider: 'openai', model: w.a.model, inputTokens: 1000, outputTokens: 500 } } })),
      p("A's customer by externalId", 'NOT_FOUND', (w) => ({ input: { customer: w.a.y.externalId, idempotencyKey: fresh(w, 'usage'), usage: { provider: 'openai', model: w.a.model, outputTokens: 5 } } })),
    ],
  },
  refundCredits: {
    access: 'merchant',
    cross: [p("A's customer, with A's idempotency key", 'NOT_FOUND', (w) => ({ input: { customerId: w.a.y.id, amount: '1', reason: 'probe', idempotencyKey: w.a.y.grantKey } }))],
  },
  releaseHold: { access: 'merchant', cross: [p("A's pending hold", 'NOT_FOUND', (w) => ({ id: w.a.y.holdId }))] },
  removeGatewayHost: { access: 'merchant', cross: [p("A's host", 'NOT_FOUND', (w) => ({ id: w.a.hostId }))] },
  removeSpendLimit: { access: 'merchant', cross: [p("A's customer's limit", 'NOT_FOUND', (w) => ({ customerId: w.a.y.id }))] },
  revokeApiKey: {
    access: 'merchant',
    cross: [p("A's extra key", 'NOT_FOUND', (w) => ({ id: w.a.apiKey.id }))],
  },
  revokeProviderCredential: { access: 'merchant', cross: [p("A's credential", 'NOT_FOUND', (w) => ({ id: w.a.credential.id }))] },
  rotateApiKey: { access: 'merchant', cross: [p("A's extra key", 'NOT_FOUND', (w) => ({ id: w.a.apiKey.id, expireOldKeyInSeconds: 60 }))] },
  setCreditConsumptionOrder: { access: 'merchant', cross: [p('sets its own order', 'OWN', () => ({ order: ['KIND'] }))] },
  cancelScheduledPlanChange: { access: 'merchant', cross: [p("A's customer's scheduled changes", 'NOT_FOUND', (w) => ({ customerId: w.a.y.id }))] },
  setCustomerPlan: {
    access: 'merchant',
    cross: [
      p("A's customer onto A's plan", 'NOT_FOUND', (w) => ({ customerId: w.a.y.id, planKey: w.a.planKey })),
      p("A's customer off its plan", 'NOT_FOUND', (w) => ({ customerId: w.a.x.id, planKey: null })),
      p("its own customer onto A's plan", 'NOT_FOUND', (w) => ({ customerId: w.b.y.id, planKey: w.a.planKey })),
    ],
  },
  setOverdraftLimit: { access: 'merchant', cross: [p("A's customer", 'NOT_FOUND', (w) => ({ customerId: w.a.x.id, limit: '1000' }))] },
  setProviderCredential: { access: 'merchant', cross: [p('sets its own credential (not revoking A\'s)', 'OWN', (w) => ({ provider: 'openai', apiKey: `sk-${fresh(w, 'cred')}-0123456789` }))] },
  setProviderPrice: { access: 'merchant', cross: [p('sets its own price', 'OWN', (w) => ({ input: { provider: 'openai', model: fresh(w, 'model'), rates: { perMillionTokens: { input: '3' } } } }))] },
  setSpendLimit: { access: 'merchant', cross: [p("A's customer", 'NOT_FOUND', (w) => ({ customerId: w.a.x.id, amount: '1' }))] },
  unarchiveCustomer: { access: 'merchant', cross: [p("A's archived customer", 'NOT_FOUND', (w) => ({ id: w.a.z.id }))] },
  unarchiveMeter: { access: 'merchant', cross: [p("A's archived meter by key", 'NOT_FOUND', (w) => ({ key: w.a.archivedMeterKey }))] },
  unblockCustomer: { access: 'merchant', cross: [p("A's blocked customer", 'NOT_FOUND', (w) => ({ id: w.a.y.id }))] },
  updateCustomer: { access: 'merchant', cross: [p("A's customer", 'NOT_FOUND', (w) => ({ id: w.a.y.id, input: { name: 'hijacked', email: 'hijacked@example.com', metadata: {} } }))] },
  updateGatewaySettings: { access: 'merchant', cross: [p('changes its own settings', 'OWN', () => ({ callerProviderKeys: true, reserveMaxCost: false }))] },
  updateMerchant: {
    access: 'merchant',
    cross: [p('renames itself', 'OWN', (w) => ({ name: `${w.b.tag} Renamed`, incompleteStreamPolicy: 'NO_CHARGE' }), (merchant, w) => expect(merchant.id).toBe(w.b.merchant.id))],
  },
};

const SUBSCRIPTION: Record<string, FieldPlan> = {
  balanceUpdated: {
    access: 'self',
    cross: [p("A's customer's wallets", 'NOT_FOUND', (w) => ({ customerId: w.a.y.id }))],
    notSelf: [(w) => ({ customerId: w.a.y.id }), (w) => ({ customerId: w.b.x.id })],
  },
  customerUpdated: {
    access: 'self',
    cross: [p("A's customer", 'NOT_FOUND', (w) => ({ id: w.a.y.id }))],
    notSelf: [(w) => ({ id: w.a.y.id }), (w) => ({ id: w.b.x.id })],
  },
};

/**
 * Writes where B names things as A named them (or uses A's idempotency keys): each tenant has
 * its own namespace, so B gets its own new row, never a conflict (which would tell B what A
 * has) nor A's stored result. They run after every probe above.
 */
const SAME_NAMES: { field: string; probe: Probe }[] = [
  { field: 'createCustomer', probe: p("A's externalId", 'OWN', (w) => ({ input: { externalId: w.a.x.externalId, email: w.a.x.email } }), (c, w) => expect(c.id).not.toBe(w.a.x.id)) },
  { field: 'updateCustomer', probe: p("its own customer, to A's externalId", 'OWN', (w) => ({ id: w.b.y.id, input: { externalId: w.a.y.externalId } }), (c, w) => expect(c.id).toBe(w.b.y.id)) },
  { field: 'createMeter', probe: p("A's meter key", 'OWN', (w) => ({ input: { key: w.a.meterKey, name: 'same', unit: 'token', source: 'OUTPUT_TOKENS' } })) },
  { field: 'putPlan', probe: p("A's plan key", 'OWN', (w) => ({ input: { key: w.a.planKey, name: 'same' } })) },
  { field: 'putPriceRule', probe: p("A's rule name and model", 'OWN', (w) => ({ input: { name: w.a.ruleName, type: 'MARKUP', provider: 'openai', model: w.a.model, config: { percent: '1' } } })) },
  { field: 'setProviderPrice', probe: p("A's model", 'OWN', (w) => ({ input: { provider: 'openai', model: w.a.model, rates: { perMillionTokens: { input: '9', output: '9' } } } })) },
  { field: 'putGatewayHost', probe: p("A's host", 'OWN', (w) => ({ host: w.a.host, provider: 'openai' })) },
  {
    field: 'grantCredits',
    probe: p("its own customer, with A's idempotency key", 'OWN', (w) => ({ input: { customerId: w.b.x.id, amount: '100', kind: 'PAID', idempotencyKey: w.a.x.grantKey } }), (r) => expect(r.replayed).toBe(false)),
  },
  {
    field: 'adjustBalance',
    probe: p("its own customer, with A's idempotency key", 'OWN', (w) => ({ input: { customerId: w.b.x.id, amount: '5', reason: `${w.a.tag} x goodwill`, idempotencyKey: w.a.x.adjustKey } }), (r) => expect(r.replayed).toBe(false)),
  },
  {
    field: 'debitCredits',
    probe: p("its own customer, with A's idempotency key", 'OWN', (w) => ({ input: { customerId: w.b.x.id, amount: '1', idempotencyKey: w.a.x.debitKey, description: `${w.a.tag} x debit` } }), (r) => expect(r.replayed).toBe(false)),
  },
  {
    field: 'createHold',
    probe: p("its own customer, with A's idempotency key", 'OWN', (w) => ({ input: { customerId: w.b.x.id, amount: '2', ttlSeconds: 3600, idempotencyKey: w.a.x.holdKey, description: `${w.a.tag} x hold` } }), (r) => expect(r.replayed).toBe(false)),
  },
  {
    field: 'recordUsage',
    probe: p("its own customer, with A's idempotency key", 'OWN', (w) => ({ input: { customer: w.b.x.id, idempotencyKey: w.a.x.usageKey, usage: { provider: 'openai', model: w.a.model, inputTokens: 1000, outputTokens: 500 } } }), (r, w) => {
      expect(r.replayed).toBe(false);
      expect(r.event.customerId).toBe(w.b.x.id);
      // Priced by B's own price for the model (9 per million tokens), not A's (1 and 2).
      expect(r.event.cost).toBe('0.0135');
    }),
  },
];

/** What X's own reads were refused, across them all. */
const refusedToTokens = new Set<string>();

const PLANS: Record<RootKind, Record<string, FieldPlan>> = { Query: QUERY, Mutation: MUTATION, Subscription: SUBSCRIPTION };

// ------------------------------------------------------------------ checking an answer

async function expectOutcome(answer: Answer, field: string, probe: Pick<Probe, 'expect' | 'check'>, where: string) {
  const { response } = answer;
  const codes = codesOf(response);
  expect(codes, `${where}: never INTERNAL`).not.toContain('INTERNAL');
  if (probe.expect === 'NOT_FOUND' || probe.expect === 'FORBIDDEN' || probe.expect === 'VALIDATION') {
    expect(codes, `${where}: ${JSON.stringify(response.errors)}`).toEqual([probe.expect]);
    // A refused nullable field (gatewayRequest) answers null in its place; a non-null one, no data.
    expect((response.data as Record<string, unknown> | null | undefined)?.[field] ?? null, where).toBeNull();
    return;
  }
  expect(response.errors, `${where}: ${JSON.stringify(response.errors)}`).toBeUndefined();
  const value = (response.data as Record<string, unknown>)[field];
  if (probe.expect === 'NULL') expect(value, where).toBeNull();
  if (probe.expect === 'EMPTY') expectEmpty(value, where);
  if (probe.expect === 'OWN_ROWS') {
    expect([...bNeedles].some((needle) => answer.text.includes(needle)), `${where}: shows some of its own rows`).toBe(true);
  }
  await probe.check?.(value, w);
}

// ------------------------------------------------------------------ setup

beforeAll(async () => {
  ({ server } = await api.start());

  const a = await seedTenant('alpha');
  const b = await seedTenant('beta');
  const xToken = (await ok<{ createCustomerSession: { token: string } }>(a.merchant.secret, 'mutation ($id: ID!) { createCustomerSession(customerId: $id, ttlSeconds: 3600) { token } }', { id: a.x.id })).createCustomerSession.token;
  const aCursors: Record<string, string> = {};
  for (const list of ['customers', 'ledgerTransactions', 'usageEvents', 'gatewayRequests']) {
    const page = await ok<Record<string, { edges: { cursor: string }[] }>>(a.merchant.secret, `{ ${list}(first: 1) { edges { cursor } } }`);
    aCursors[list] = page[list]!.edges[0]!.cursor;
  }
  w = { a, b, xToken, aCursors };

  // The key's use during seeding is stamped after each request: let the last stamp land.
  await new Promise((resolve) => setTimeout(resolve, 100));
  baseline = await snapshot(a.merchant.id);
  const aRows = await rowsOf(a.merchant.id);
  const bRows = await rowsOf(b.merchant.id);
  const secretsOf = (t: Tenant) => [t.merchant.secret, t.apiKey.secret, t.credential.secret].map((s) => s.toLowerCase());
  aNeedles = new Set([...needlesOfMerchant(aRows, a.tag), ...secretsOf(a), xToken.toLowerCase()]);
  bNeedles = new Set([...needlesOf(Object.values(bRows).flat(), b.tag), ...secretsOf(b)]);
  bNeedles.delete(b.merchant.id.toLowerCase());

  notForX = new Set([...othersNeedles(aRows, a.tag, a.x.id, [a.y.id, a.z.id]), ...secretsOf(a), ...bNeedles, b.merchant.id.toLowerCase()]);
  // What the token may show about its merchant and about X is not a leak.
  notForX.delete(a.merchant.id.toLowerCase());
  expect(notForX.has(a.y.id)).toBe(true);
  expect(notForX.has(a.y.externalId.toLowerCase())).toBe(true);
  expect(aNeedles.has(a.y.holdId)).toBe(true);
}, 120_000);

afterAll(() => api.close());

// ------------------------------------------------------------------ the tests

describe('the classification', () => {
  it('names every root field of the schema, and nothing else: a new field must be classified here', () => {
    for (const kind of KINDS) {
      const served = Object.keys(rootType(kind).getFields()).sort();
      expect(Object.keys(PLANS[kind]).sort(), `${kind} fields`).toEqual(served);
    }
  });

  it("the detectors see A's data where it is: A's own key reading Y, and Y's data against X's token", async () => {
    const answer = await call('Query', 'wallet', { customerId: w.a.x.id }, w.a.merchant.secret);
    expect(answer.response.errors).toBeUndefined();
    expect(leaked(answer, aNeedles).length).toBeGreaterThan(5);
    const other = await call('Query', 'customer', { id: w.a.x.id }, w.a.merchant.secret);
    expect(leaked(other, aNeedles)).toContain(w.a.x.externalId.toLowerCase());
    const ofY = await call('Query', 'wallet', { customerId: w.a.y.id }, w.a.merchant.secret);
    expect(leaked({ ...ofY, request: '' }, notForX)).toEqual(expect.arrayContaining([w.a.y.id, w.a.y.walletId, w.a.y.holdId]));
    await expectAUnchanged("A's own reads");
  });

  it("aims every argument that names an object (ids, keys, customers, externalIds, idempotency keys, models, hosts) at A's from B's key", () => {
    // Narrower than the matrix's NAMING: here only what names an object, not every string a lookup could match.
    const NAMING = new Set(['id', 'key', 'planKey', 'meterKey', 'customerId', 'customer', 'externalId', 'externalIds', 'idempotencyKey', 'model', 'host']);
    const missing: string[] = [];
    for (const kind of KINDS) {
      for (const [name, definition] of Object.entries(rootType(kind).getFields())) {
        const probes = [...PLANS[kind][name]!.cross, ...SAME_NAMES.filter((entry) => kind === 'Mutation' && entry.field === name).map((entry) => entry.probe)];
        for (const path of namingPaths(definition, NAMING)) {
          const aimed = probes.some((probe) => valuesAt(probe.args(w), path).some((v) => typeof v === 'string' && aNeedles.has(v.toLowerCase())));
          if (!aimed) missing.push(`${kind}.${name}(${path.join('.')})`);
        }
      }
    }
    expect(missing).toEqual([]);
  });
});

for (const kind of KINDS) {
  describe(`${kind}: merchant B's secret key against merchant A`, () => {
    for (const [field, plan] of Object.entries(PLANS[kind])) {
      for (const probe of plan.cross) {
        it(`${field}: ${probe.why} → ${probe.expect}`, async () => {
          const args = probe.args(w);
          const answer = await call(kind, field, args, w.b.merchant.secret);
          const where = `${kind}.${field} as B (${probe.why})`;
          await expectOutcome(answer, field, probe, where);
          expect(await leakedToB(answer), `${where}: A's data in the answer: ${answer.text}`).toEqual([]);
          await expectAUnchanged(where);
        });
      }
    }
  });
}

for (const kind of KINDS) {
  describe(`${kind}: customer X's session token`, () => {
    for (const [field, plan] of Object.entries(PLANS[kind])) {
      if (plan.access === 'merchant') {
        const argsList = [...plan.cross.map((probe) => probe.args), ...SAME_NAMES.filter((entry) => kind === 'Mutation' && entry.field === field).map((entry) => entry.probe.args)];
        it(`${field}: merchant-only → FORBIDDEN, whatever it names`, async () => {
          for (const argsOf of argsList) {
            const args = argsOf(w);
            const answer = await call(kind, field, args, w.xToken);
            const where = `${kind}.${field} as X ${JSON.stringify(args)}`;
            await expectOutcome(answer, field, { expect: 'FORBIDDEN' }, where);
            expect(leaked(answer, notForX), `${where}: leaked`).toEqual([]);
            await expectAUnchanged(where);
          }
        });
      }
      for (const argsOf of plan.notSelf ?? []) {
        it(`${field}: another customer's → FORBIDDEN`, async () => {
          const args = argsOf(w);
          const answer = await call(kind, field, args, w.xToken);
          const where = `${kind}.${field} as X ${JSON.stringify(args)}`;
          await expectOutcome(answer, field, { expect: 'FORBIDDEN' }, where);
          expect(leaked(answer, notForX), `${where}: leaked`).toEqual([]);
          await expectAUnchanged(where);
        });
      }
      const own = plan.own;
      if (own) {
        it(`${field}: its own, with every nested field it may read, shows only X's`, async () => {
          const args = own(w);
          // Fields refused to a session token (metadata, audit trail, settings) are left out, one answer at a time.
          const skip = new Set<string>();
          let answer = await call(kind, field, args, w.xToken, skip);
          for (let round = 0; round < 20 && answer.response.errors; round++) {
            for (const error of answer.response.errors) {
              expect(error.extensions.code, JSON.stringify(error)).toBe('FORBIDDEN');
              const refused = fieldAt(rootType(kind), (error.path ?? []) as (string | number)[]);
              expect(refused, JSON.stringify(error)).toBeDefined();
              expect(refused!.startsWith(`${kind}.`), `the root field itself is refused: ${JSON.stringify(error)}`).toBe(false);
              skip.add(refused!);
            }
            answer = await call(kind, field, args, w.xToken, skip);
          }
          const where = `${kind}.${field} as X (own)`;
          for (const refused of skip) refusedToTokens.add(refused);
          expect([...skip].filter((refused) => !TOKEN_REFUSED.has(refused)), `${where}: refused beyond the documented secret-key-only fields`).toEqual([]);
          expect(answer.response.errors, where).toBeUndefined();
          expect(answer.response.data?.[field], where).toBeTruthy();
          expect(leaked(answer, notForX), `${where}: another's data`).toEqual([]);
          if (plan.access === 'self') expect(answer.text).toContain(w.a.x.id);
          await expectAUnchanged(where);
        });
      }
    }
  });
}

/** Type.field at the end of an error path. */
function fieldAt(root: GraphQLObjectType, path: readonly (string | number)[]): string | undefined {
  let type: GraphQLNamedType = root;
  let found: string | undefined;
  for (const step of path) {
    if (typeof step === 'number') continue;
    if (!isObjectType(type)) return undefined;
    const field: GraphQLField<unknown, unknown> | undefined = type.getFields()[step];
    if (!field) return undefined;
    found = `${type.name}.${step}`;
    type = getNamedType(field.type);
  }
  return found;
}

describe("customer X's session token, nested", () => {
  it('was refused, across its own reads, exactly the secret-key-only fields', () => {
    expect([...refusedToTokens].sort()).toEqual([...TOKEN_REFUSED].sort());
  });

  it("reads X's wallet: its transactions, holds and grants are X's, all of them", async () => {
    const result = await server.graphql<any>(
      `query ($id: ID!) { wallet(customerId: $id) { id customerId
        transactions(first: 100) { totalCount edges { node { id customerId walletId } } }
        holds(first: 100) { totalCount nodes { id customerId } }
        grants(first: 100, includeInactive: true) { totalCount nodes { id } } } }`,
      { id: w.a.x.id },
      w.xToken,
    );
    expect(result.errors).toBeUndefined();
    const wallet = result.data.wallet;
    const prisma = server.services.prisma;
    expect(wallet.id).toBe(w.a.x.walletId);
    expect(wallet.transactions.totalCount).toBe(await prisma.ledgerTransaction.count({ where: { walletId: w.a.x.walletId } }));
    expect(wallet.holds.totalCount).toBe(await prisma.hold.count({ where: { walletId: w.a.x.walletId } }));
    expect(wallet.grants.totalCount).toBe(await prisma.creditGrant.count({ where: { walletId: w.a.x.walletId } }));
    expect(new Set(wallet.transactions.edges.map((edge: any) => edge.node.customerId))).toEqual(new Set([w.a.x.id]));
    expect(new Set(wallet.holds.nodes.map((hold: any) => hold.customerId))).toEqual(new Set([w.a.x.id]));
    expect(wallet.holds.nodes.map((hold: any) => hold.id)).toEqual(expect.arrayContaining([w.a.x.holdId, w.a.capturedHoldId]));
  });

  it("sees its customer's plan by name but not the plan's rules, nor its spend limits or metadata", async () => {
    for (const query of ['{ viewer { customer { plan { priceRules { id } } } } }', '{ viewer { customer { spendLimits { id } } } }', '{ viewer { customer { metadata } } }']) {
      const result = await server.graphql(query, {}, w.xToken);
      expect(codesOf(result), query).toEqual(['FORBIDDEN']);
    }
    const plan = await server.graphql<any>('query ($id: ID!) { customer(id: $id) { plan { key } } }', { id: w.a.x.id }, w.xToken);
    expect(plan.data.customer.plan.key).toBe(w.a.planKey);
  });
});

describe("merchant B's secret key reusing A's names and idempotency keys (after every probe above)", () => {
  for (const { field, probe } of SAME_NAMES) {
    it(`${field}: ${probe.why} → its own new row`, async () => {
      const args = probe.args(w);
      const answer = await call('Mutation', field, args, w.b.merchant.secret);
      const where = `Mutation.${field} as B (${probe.why})`;
      await expectOutcome(answer, field, probe, where);
      expect(await leakedToB(answer), `${where}: A's data in the answer: ${answer.text}`).toEqual([]);
      await expectAUnchanged(where);
    });
  }

  it("then finds its own rows by those names, never A's", async () => {
    const lookups: [string, Record<string, unknown>][] = [
      ['query ($e: String!) { customer(externalId: $e) { id } }', { e: w.a.x.externalId }],
      ['query ($e: String!) { customer(externalId: $e) { id } }', { e: w.a.y.externalId }],
      ['query ($k: String!) { plan(key: $k) { id priceRules { id } } }', { k: w.a.planKey }],
      ['query ($m: String) { providerPrices(model: $m) { ref rates } }', { m: w.a.model }],
      ['query ($k: String) { ledgerTransactions(filter: { idempotencyKey: $k }) { totalCount edges { node { id customerId } } } }', { k: w.a.x.grantKey }],
    ];
    for (const [query, variables] of lookups) {
      const response = await server.graphql<any>(query, variables, w.b.merchant.secret);
      expect(response.errors, query).toBeUndefined();
      expect(await leakedToB(answerOf(query, variables, response)), query).toEqual([]);
    }
    await expectAUnchanged('lookups by A\'s names');
  });
});

describe('subscriptions', () => {
  it("over graphql-ws, an operation's own credential never replaces the socket's", async () => {
    // Only a socket opened without one may name a credential per operation (the playground's way).
    const asX = await overWebSocket(connect(w.xToken), '{ apiKeys { id name } }', {}, { headers: { authorization: `Bearer ${w.a.merchant.secret}` } });
    expect(codesOf(asX)).toEqual(['FORBIDDEN']);
    const ofY = 'subscription ($id: ID!) { balanceUpdated(customerId: $id) { customerId } }';
    const stillX = await overWebSocket(connect(w.xToken), ofY, { id: w.a.y.id }, { headers: { authorization: `Bearer ${w.a.merchant.secret}` } });
    expect(codesOf(stillX)).toEqual(['FORBIDDEN']);
    const asB = await overWebSocket(connect(w.b.merchant.secret), 'query ($id: ID!) { customer(id: $id) { id externalId } }', { id: w.a.x.id }, { headers: { authorization: `Bearer ${w.xToken}` } });
    expect(codesOf(asB)).toEqual(['NOT_FOUND']);
    for (const answer of [asX, stillX, asB]) expect(leaked(answerOf('', {}, answer), notForX)).toEqual([]);
    await expectAUnchanged('operations over graphql-ws with a second credential');
  });

  it("X's token watching its own wallet and customer is pushed X's changes only, not Y's", async () => {
    const { a } = w;
    const balance = connect(w.xToken).iterate({
      query: `subscription ($id: ID!) { balanceUpdated(customerId: $id) { customerId transactionIds balance { amount }
        wallet { id customerId holds { nodes { id customerId } } transactions { edges { node { id customerId idempotencyKey } } } } } }`,
      variables: { id: a.x.id },
    });
    const customer = connect(w.xToken).iterate({ query: 'subscription ($id: ID!) { customerUpdated(id: $id) { id externalId name email } }', variables: { id: a.x.id } });
    const [balanceNext, customerNext] = [balance.next(), customer.next()];
    await watched(a.x.id, 1);
    try {
      // Y changes first: had its events reached X's subscriptions, they would be the first ones.
      await grantAndRename(a.merchant.secret, a.y.id, { amount: '1', kind: 'PROMOTIONAL', idempotencyKey: 'sub-y' }, 'y renamed');
      await grantAndRename(a.merchant.secret, a.x.id, { amount: '1', kind: 'PROMOTIONAL', idempotencyKey: 'sub-x' }, 'x renamed');
      const pushedBalance = await firstEvent(balanceNext, 15);
      const pushedCustomer = await firstEvent(customerNext, 15);
      expect(pushedBalance.errors).toBeUndefined();
      expect(pushedBalance.data.balanceUpdated.customerId).toBe(a.x.id);
      expect(pushedBalance.data.balanceUpdated.wallet.id).toBe(a.x.walletId);
      expect(pushedCustomer.data.customerUpdated).toMatchObject({ id: a.x.id, name: 'x renamed' });
      for (const pushed of [pushedBalance, pushedCustomer]) {
        const text = JSON.stringify(pushed).toLowerCase();
        expect([...notForX].filter((needle) => text.includes(needle))).toEqual([]);
      }
    } finally {
      await balance.return?.();
      await customer.return?.();
    }
    // A acted on its own here, and the snapshot sees it (so it would see B's changes too); what A did is the new baseline.
    const after = await snapshot(a.merchant.id);
    expect(after).not.toEqual(baseline);
    baseline = after;
  });
});
