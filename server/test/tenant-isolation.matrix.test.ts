import { randomUUID } from 'node:crypto';
import { getNamedType, isObjectType, type GraphQLSchema } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestServer } from './server.ts';
import { KINDS, TOKEN_REFUSED, UUID, answerOf, codesOf, cursorsIn, expectEmpty, expectRowsAsBefore, firstEvent, jsonOf, leaked, merchantTables, namingPaths, needlesOf, needlesOfMerchant, othersNeedles, servedApi, valuesAt, type Answer, type CustomerSeedBase, type RootKind, type Snapshot, type TenantBase, type Via } from './tenant-world.ts';

/**
 * Tenant isolation, the credentials and paths tenant-isolation.test.ts does not walk:
 *  - every root field (Query, Mutation, Subscription) aimed at merchant A's objects with no
 *    credential (HTTP and graphql-ws), with credentials that no longer hold (a revoked key, an
 *    archived customer's token, a forged one), with a customer token of another merchant, with
 *    A's own customer X's token, and with B's secret key naming A's ids in capitals or padded;
 *  - every connection, paged through with a customer filter (and from another customer's
 *    cursors): exactly that customer's rows, checked against the database, as A's key and as
 *    X's token;
 *  - subscriptions to one's own customer are never pushed another merchant's changes.
 * Every root field must be in FIELDS (with arguments aimed at A's objects) or in the small
 * NO_FOREIGN_ID allow-list, and every field taking arguments below the root must be a connection
 * with an oracle in CONNECTIONS: a new field fails the first tests until it is classified here.
 * After every probe no answer holds A's data beyond what it was sent, and A's rows (every table
 * with a merchant_id) are as seeded.
 */

// ------------------------------------------------------------------ the world

interface Tenant extends TenantBase<CustomerSeedBase> {
  apiKeyId: string;
  credentialId: string;
  /** Logged gateway calls of X's and Y's, interleaved. */
  gatewayRequestIds: { x: string[]; y: string[] };
  /** X's session token, Z's (minted before Z was archived), and a key revoked since. */
  xToken: string;
  zToken: string;
  revokedSecret: string;
}

interface World {
  a: Tenant;
  b: Tenant;
  /** A cursor of one of A's Y rows in each of A's root lists, and in Y's wallet lists. */
  yCursors: Record<string, string>;
}

const api = servedApi();
const { ok, rootType, connect, call, rowsOf, snapshot, seedMerchant, watched, grantAndRename } = api;
let server: TestServer;
let schema: GraphQLSchema;
let w: World;
let baseline: Snapshot;
/** A's ids and tagged strings, and its secrets. */
let aNeedles: Set<string>;
/** What X's token must not see: Y's and Z's ids and strings, A's secrets, and all of B. */
let notForX: Set<string>;

// ------------------------------------------------------------------ A's rows

/**
 * One digest per table of the merchant's rows, in one statement: this file's probes are many, so
 * each compares digests, and the full snapshot is read only to show a change.
 */
let digestQuery: string | undefined;
async function digest(merchantId: string): Promise<Record<string, string>> {
  return server.services.db.withConnection(async (connection) => {
    if (!digestQuery) {
      // A key's last use is stamped after the request that used it.
      const row = `(to_jsonb(r) - 'last_used_at')::text`;
      digestQuery = ['merchants', ...(await merchantTables(connection))]
        .map((table) => `SELECT '${table}' AS name, count(*)::text || ':' || coalesce(md5(string_agg(${row}, ',' ORDER BY ${row})), '') AS digest FROM "${table}" r WHERE ${table === 'merchants' ? 'id' : 'merchant_id'} = $1`)
        .join(' UNION ALL ');
    }
    const rows = await connection.query<{ name: string; digest: string }>(digestQuery, [merchantId]);
    return Object.fromEntries(rows.map((row) => [row.name, row.digest]));
  });
}
let baselineDigest: Record<string, string>;

async function expectAUnchanged(where: string) {
  if (jsonOf(await digest(w.a.merchant.id)) === jsonOf(baselineDigest)) return;
  expectRowsAsBefore(where, baseline, await snapshot(w.a.merchant.id));
  expect.fail(`${where}: merchant A's rows changed`);
}

// ------------------------------------------------------------------ the classification

/**
 * merchant: secret keys only. self: a secret key, or a customer token for its own customer.
 * any: every credential, about the caller itself.
 */
type Access = 'merchant' | 'self' | 'any';
/** What B's secret key gets for A's objects: refused, an empty answer, or null. */
type Refusal = 'NOT_FOUND' | 'EMPTY' | 'NULL';

interface Aimed {
  access: Access;
  /** Arguments naming A's objects: A's Y where a customer is named. */
  args: (w: World) => Record<string, unknown>;
  /** More argument sets, for naming arguments the first leaves out (one of two lookups). */
  also?: (w: World) => Record<string, unknown>[];
  /** B's key with these ids (in capitals, or padded): how it is refused. */
  b: Refusal;
}

const NO_FOREIGN_ID: Record<string, Access> = {
  'Query.apiKeys': 'merchant',
  'Query.creditConsumptionOrder': 'merchant',
  'Query.gatewayHosts': 'merchant',
  'Query.ledgerIntegrity': 'merchant',
  'Query.merchant': 'any',
  'Query.meters': 'merchant',
  'Query.plans': 'merchant',
  'Query.providerCredentials': 'merchant',
  'Query.viewer': 'any',
  'Mutation.setCreditConsumptionOrder': 'merchant',
  'Mutation.updateGatewaySettings': 'merchant',
};

const m = (args: Aimed['args'], b: Refusal = 'NOT_FOUND'): Aimed => ({ access: 'merchant', args, b });
const own = (args: Aimed['args']): Aimed => ({ access: 'self', args, b: 'NOT_FOUND' });

const FIELDS: Record<string, Aimed> = {
  'Query.customer': { ...own((w) => ({ id: w.a.y.id })), also: (w) => [{ externalId: w.a.y.externalId }, { externalId: w.a.x.externalId }] },
  'Query.customers': m((w) => ({ filter: { status: 'ALL', externalIds: [w.a.y.externalId], search: w.a.tag, email: w.a.y.email }, after: w.yCursors.customers }), 'EMPTY'),
  'Query.gatewayRequest': m((w) => ({ id: w.a.gatewayRequestIds.y[0] }), 'NULL'),
  'Query.gatewayRequests': m((w) => ({ customerId: w.a.y.id, after: w.yCursors.gatewayRequests }), 'EMPTY'),
  'Query.hold': m((w) => ({ id: w.a.y.holdId })),
  'Query.ledgerTransactions': {
    ...m((w) => ({ customerId: w.a.y.id, filter: { idempotencyKey: w.a.y.grantKey }, after: w.yCursors.ledgerTransactions }), 'EMPTY'),
    also: (w) => [{ filter: { actorApiKeyId: w.a.merchant.apiKeyId } }],
  },
  'Query.plan': m((w) => ({ key: w.a.planKey })),
  'Query.priceRules': m((w) => ({ planKey: w.a.planKey })),
  'Query.providerPrices': m((w) => ({ model: w.a.model }), 'EMPTY'),
  'Query.usageAccess': own((w) => ({ customerId: w.a.y.id })),
  'Query.usageEvents': m((w) => ({ customerId: w.a.y.id, after: w.yCursors.usageEvents }), 'EMPTY'),
  'Query.wallet': own((w) => ({ customerId: w.a.y.id })),
  'Query.wallets': own((w) => ({ customerId: w.a.y.id })),
  'Mutation.adjustBalance': m((w) => ({ input: { customerId: w.a.y.id, amount: '5', reason: `${w.a.tag} probe`, idempotencyKey: `${w.a.tag}-probe-adjust` } })),
  'Mutation.archiveCustomer': m((w) => ({ id: w.a.y.id })),
  'Mutation.archiveMeter': m((w) => ({ key: w.a.meterKey })),
  'Mutation.archivePlan': m((w) => ({ key: w.a.planKey })),
  'Mutation.archivePriceRule': m((w) => ({ name: w.a.planRuleName, planKey: w.a.planKey })),
  'Mutation.blockCustomer': m((w) => ({ id: w.a.x.id, reason: 'probe' })),
  'Mutation.captureHold': m((w) => ({ id: w.a.y.holdId, amount: '1' })),
  'Mutation.createApiKey': m((w) => ({ name: `${w.a.tag}-probe-key` })),
  'Mutation.createCustomer': m((w) => ({ input: { externalId: `${w.a.tag}-probe-customer`, email: w.a.y.email, name: `${w.a.tag} probe` } })),
  'Mutation.createCustomerSession': m((w) => ({ customerId: w.a.y.id })),
  'Mutation.createHold': m((w) => ({ input: { customerId: w.a.y.id, amount: '1', idempotencyKey: `${w.a.tag}-probe-hold` } })),
  'Mutation.createMeter': m((w) => ({ input: { key: `${w.a.tag}_probe`.replaceAll('-', '_'), name: `${w.a.tag} probe`, unit: 'call', source: 'REQUESTS' } })),
  'Mutation.debitCredits': m((w) => ({ input: { customerId: w.a.y.id, amount: '1', idempotencyKey: `${w.a.tag}-probe-debit` } })),
  'Mutation.grantCredits': m((w) => ({ input: { customerId: w.a.y.id, amount: '1', kind: 'PAID', idempotencyKey: `${w.a.tag}-probe-grant` } })),
  'Mutation.importModelsDevPrices': m((w) => ({ json: JSON.stringify({ openai: { id: 'openai', models: { [w.a.model]: { id: w.a.model, cost: { input: 7, output: 7 } } } } }) })),
  'Mutation.putGatewayHost': m((w) => ({ host: w.a.host, provider: 'openai' })),
  'Mutation.putPlan': m((w) => ({ input: { key: w.a.planKey, name: `${w.a.tag} hijacked` } })),
  'Mutation.putPriceRule': m((w) => ({ input: { name: w.a.planRuleName, planKey: w.a.planKey, type: 'FLAT', meterKey: w.a.meterKey, model: w.a.model, config: { unitPrice: '9' } } })),
  'Mutation.recordUsage': m((w) => ({ input: { customer: w.a.y.id, idempotencyKey: `${w.a.tag}-probe-usage`, usage: { provider: 'openai', model: w.a.model, outputTokens: 5 }, quantities: { [w.a.meterKey]: 5 } } })),
  'Mutation.refundCredits': m((w) => ({ input: { customerId: w.a.y.id, amount: '1', reason: 'probe', idempotencyKey: `${w.a.tag}-probe-refund` } })),
  'Mutation.releaseHold': m((w) => ({ id: w.a.y.holdId })),
  'Mutation.removeGatewayHost': m((w) => ({ id: w.a.hostId })),
  'Mutation.removeSpendLimit': m((w) => ({ customerId: w.a.y.id })),
  'Mutation.revokeApiKey': m((w) => ({ id: w.a.apiKeyId })),
  'Mutation.revokeProviderCredential': m((w) => ({ id: w.a.credentialId })),
  'Mutation.rotateApiKey': m((w) => ({ id: w.a.apiKeyId, expireOldKeyInSeconds: 60 })),
  'Mutation.cancelScheduledPlanChange': m((w) => ({ customerId: w.a.y.id })),
  'Mutation.setCustomerPlan': m((w) => ({ customerId: w.a.y.id, planKey: w.a.planKey })),
  'Mutation.setOverdraftLimit': m((w) => ({ customerId: w.a.y.id, limit: '1000' })),
  'Mutation.setProviderCredential': m((w) => ({ provider: 'openai', apiKey: `sk-${w.a.tag}-probe-0123456789` })),
  'Mutation.setProviderPrice': m((w) => ({ input: { provider: 'openai', model: w.a.model, rates: { perMillionTokens: { input: '9' } } } })),
  'Mutation.setSpendLimit': m((w) => ({ customerId: w.a.y.id, amount: '1' })),
  'Mutation.unarchiveCustomer': m((w) => ({ id: w.a.z.id })),
  'Mutation.unarchiveMeter': m((w) => ({ key: w.a.archivedMeterKey })),
  'Mutation.unblockCustomer': m((w) => ({ id: w.a.y.id })),
  'Mutation.updateCustomer': m((w) => ({ id: w.a.y.id, input: { name: `${w.a.tag} hijacked`, externalId: `${w.a.tag}-hijacked`, email: w.a.x.email, metadata: {} } })),
  'Mutation.updateMerchant': m((w) => ({ name: `${w.a.tag} Inc`, incompleteStreamPolicy: 'NO_CHARGE' })),
  'Subscription.balanceUpdated': own((w) => ({ customerId: w.a.y.id })),
  'Subscription.customerUpdated': own((w) => ({ id: w.a.y.id })),
};

/** Arguments that name an object, or a string of A's a lookup could match. */
const NAMING = new Set(['id', 'key', 'name', 'planKey', 'meterKey', 'customerId', 'customer', 'externalId', 'externalIds', 'idempotencyKey', 'model', 'host', 'email', 'search', 'after', 'before', 'json', 'apiKey']);
/** A string of A's: an id of A's rows, a tagged name, or a cursor of one of A's rows. */
function isAs(value: unknown): boolean {
  if (typeof value !== 'string') return false;
  const text = value.toLowerCase();
  if (aNeedles.has(text) || text.includes(w.a.tag)) return true;
  return cursorsIn({ cursor: value }).some((decoded) => [...aNeedles].some((needle) => UUID.test(needle) && decoded.includes(needle)));
}

/** Every string of A's in `args` in capitals, or padded with spaces (ids as a careless client sends them). */
function variant(args: Record<string, unknown>, how: 'upper' | 'padded'): { args: Record<string, unknown>; changed: boolean } {
  let changed = false;
  const walk = (value: unknown): unknown => {
    if (typeof value === 'string' && UUID.test(value) && aNeedles.has(value.toLowerCase())) {
      changed = true;
      return how === 'upper' ? value.toUpperCase() : ` ${value} `;
    }
    if (Array.isArray(value)) return value.map(walk);
    if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v)]));
    return value;
  };
  return { args: walk(args) as Record<string, unknown>, changed };
}

/** Every connection in the schema, with how to read its rows of one customer from the database. */
interface ConnectionOracle {
  /** The query paging it for X (`$id`, or `$x` its externalId), from `$after`, `$first` rows a page. */
  query: string;
  /** Where the page is in the answer. */
  at: (data: any) => any;
  /** The ids of X's rows, from the database. */
  rows: (w: World) => Promise<string[]>;
  /** The node's customer, when the node says it. */
  customerOf?: (node: any) => string;
  /** The name of Y's cursor in w.yCursors. */
  yCursor: string;
  /** X's token may page it (under its own wallet). */
  token: boolean;
}

const PAGE_VARS = '$first: Int, $after: String';
const PAGE_ARGS = 'first: $first, after: $after';
const prisma = () => server.services.prisma;
const idsOf = (rows: { id: string }[]) => rows.map((row) => row.id).sort();

const CONNECTIONS: Record<string, ConnectionOracle> = {
  'Query.customers': {
    query: `query ($x: String!, ${PAGE_VARS}) { list: customers(filter: { externalIds: [$x], status: ALL }, ${PAGE_ARGS}) { totalCount edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }`,
    at: (data) => data.list,
    rows: async (w) => [w.a.x.id],
    yCursor: 'customers',
    token: false,
  },
  'Query.gatewayRequests': {
    query: `query ($id: ID!, ${PAGE_VARS}) { list: gatewayRequests(customerId: $id, ${PAGE_ARGS}) { edges { cursor node { id customerId } } pageInfo { hasNextPage endCursor } } }`,
    at: (data) => data.list,
    rows: async (w) => idsOf(await prisma().gatewayRequest.findMany({ where: { merchantId: w.a.merchant.id, customerId: w.a.x.id } })),
    customerOf: (node) => node.customerId,
    yCursor: 'gatewayRequests',
    token: false,
  },
  'Query.ledgerTransactions': {
    query: `query ($id: ID!, ${PAGE_VARS}) { list: ledgerTransactions(customerId: $id, ${PAGE_ARGS}) { totalCount edges { cursor node { id customerId walletId } } pageInfo { hasNextPage endCursor } } }`,
    at: (data) => data.list,
    rows: async (w) => idsOf(await prisma().ledgerTransaction.findMany({ where: { merchantId: w.a.merchant.id, customerId: w.a.x.id } })),
    customerOf: (node) => node.customerId,
    yCursor: 'ledgerTransactions',
    token: false,
  },
  'Query.usageEvents': {
    query: `query ($id: ID!, ${PAGE_VARS}) { list: usageEvents(customerId: $id, ${PAGE_ARGS}) { edges { cursor node { id customerId } } pageInfo { hasNextPage endCursor } } }`,
    at: (data) => data.list,
    rows: async (w) => idsOf(await prisma().usageEvent.findMany({ where: { merchantId: w.a.merchant.id, customerId: w.a.x.id } })),
    customerOf: (node) => node.customerId,
    yCursor: 'usageEvents',
    token: false,
  },
  'Wallet.grants': {
    query: `query ($id: ID!, ${PAGE_VARS}) { wallet(customerId: $id) { list: grants(includeInactive: true, ${PAGE_ARGS}) { totalCount edges { cursor node { id } } pageInfo { hasNextPage endCursor } } } }`,
    at: (data) => data.wallet.list,
    rows: async (w) => idsOf(await prisma().creditGrant.findMany({ where: { walletId: w.a.x.walletId } })),
    yCursor: 'grants',
    token: true,
  },
  'Wallet.holds': {
    query: `query ($id: ID!, ${PAGE_VARS}) { wallet(customerId: $id) { list: holds(${PAGE_ARGS}) { totalCount edges { cursor node { id customerId } } pageInfo { hasNextPage endCursor } } } }`,
    at: (data) => data.wallet.list,
    rows: async (w) => idsOf(await prisma().hold.findMany({ where: { walletId: w.a.x.walletId } })),
    customerOf: (node) => node.customerId,
    yCursor: 'holds',
    token: true,
  },
  'Wallet.transactions': {
    query: `query ($id: ID!, ${PAGE_VARS}) { wallet(customerId: $id) { list: transactions(${PAGE_ARGS}) { totalCount edges { cursor node { id customerId walletId } } pageInfo { hasNextPage endCursor } } } }`,
    at: (data) => data.wallet.list,
    rows: async (w) => idsOf(await prisma().ledgerTransaction.findMany({ where: { walletId: w.a.x.walletId } })),
    customerOf: (node) => node.customerId,
    yCursor: 'transactions',
    token: true,
  },
};

// ------------------------------------------------------------------ seeding

/** `full`: rows to page through (X's and Y's interleaved); B needs only its customers and tokens. */
async function seedTenant(name: string, full: boolean): Promise<Tenant> {
  const seeded = await seedMerchant(name);
  const { tag, merchant, model, planKey } = seeded;
  const s = merchant.secret;

  const customers: Record<string, { id: string; externalId: string; email: string; holdIds: string[] }> = {};
  for (const letter of ['x', 'y', 'z']) {
    const externalId = `${tag}-${letter}-ext`;
    const email = `${tag}-${letter}@example.com`;
    const created = await ok(s, 'mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }', {
      input: { externalId, email, name: `${tag} ${letter} name`, metadata: { note: `${tag}-${letter}-note` } },
    });
    customers[letter] = { id: created.createCustomer.id, externalId, email, holdIds: [] };
  }
  // X's and Y's rows interleaved, so a page of one customer's rows has the other's between them.
  for (let i = 0; i < (full ? 3 : 1); i++) {
    for (const letter of i === 0 ? ['x', 'y', 'z'] : ['x', 'y']) {
      const c = customers[letter]!;
      await ok(s, 'mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }', {
        input: { customerId: c.id, amount: '50', kind: i === 1 ? 'PROMOTIONAL' : 'PAID', idempotencyKey: `${tag}-${letter}-grant-${i}`, description: `${tag} ${letter} grant` },
      });
      await ok(s, 'mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { replayed } }', { input: { customerId: c.id, amount: '1', idempotencyKey: `${tag}-${letter}-debit-${i}` } });
      const held = await ok(s, 'mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }', {
        input: { customerId: c.id, amount: '2', ttlSeconds: 3600, idempotencyKey: `${tag}-${letter}-hold-${i}` },
      });
      c.holdIds.push(held.createHold.hold.id);
      await ok(s, 'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { replayed } }', {
        input: { customer: c.id, idempotencyKey: `${tag}-${letter}-usage-${i}`, usage: { provider: 'openai', model, inputTokens: 1000, outputTokens: 500 } },
      });
    }
  }
  for (const letter of full ? ['x', 'y'] : []) {
    const c = customers[letter]!;
    await ok(s, 'mutation ($id: ID!) { captureHold(id: $id, amount: "1") { replayed } }', { id: c.holdIds[1] });
    await ok(s, 'mutation ($id: ID!) { releaseHold(id: $id) { id } }', { id: c.holdIds[2] });
  }
  const [x, y, z] = [customers.x!, customers.y!, customers.z!];
  await ok(s, 'mutation ($id: ID!, $plan: String) { setCustomerPlan(customerId: $id, planKey: $plan) { id } }', { id: x.id, plan: planKey });
  await ok(s, 'mutation ($id: ID!) { setSpendLimit(customerId: $id, amount: "50") { id } }', { id: y.id });
  await ok(s, 'mutation ($id: ID!) { blockCustomer(id: $id, reason: "probe") { id } }', { id: y.id });

  const session = async (id: string) => (await ok(s, 'mutation ($id: ID!) { createCustomerSession(customerId: $id, ttlSeconds: 3600) { token } }', { id })).createCustomerSession.token as string;
  const xToken = await session(x.id);
  const zToken = await session(z.id);
  await ok(s, 'mutation ($id: ID!) { archiveCustomer(id: $id) { id } }', { id: z.id });

  const key = await ok(s, 'mutation ($name: String!) { createApiKey(name: $name) { apiKey { id } } }', { name: `${tag}-ci` });
  const revoked = await ok(s, 'mutation ($name: String!) { createApiKey(name: $name) { secret apiKey { id } } }', { name: `${tag}-revoked` });
  await ok(s, 'mutation ($id: ID!) { revokeApiKey(id: $id) { id } }', { id: revoked.createApiKey.apiKey.id });
  const credential = await ok(s, 'mutation ($key: String!) { setProviderCredential(provider: "openai", apiKey: $key) { id } }', { key: `sk-${tag}-provider-0123456789` });
  const host = `${tag}.example.com`;
  const gatewayHost = await ok(s, 'mutation ($host: String!) { putGatewayHost(host: $host, provider: "openai") { id } }', { host });

  // Logged gateway calls (the gateway itself is tested elsewhere), X's and Y's interleaved.
  const gatewayRequestIds = { x: [] as string[], y: [] as string[] };
  const start = Date.now() - 60_000;
  for (let i = 0; i < (full ? 6 : 2); i++) {
    const letter = i % 2 === 0 ? 'x' : 'y';
    const id = randomUUID();
    gatewayRequestIds[letter].push(id);
    await server.services.prisma.gatewayRequest.create({
      data: { id, merchantId: merchant.id, customerId: customers[letter]!.id, provider: 'openai', method: 'POST', host, path: `/v1/${tag}/${letter}`, status: 200, outcome: 'COMPLETED', latencyMs: 5, createdAt: new Date(start + i * 1000) },
    });
  }
  const wallet = async (id: string) => (await ok(s, 'query ($id: ID!) { wallet(customerId: $id) { id } }', { id })).wallet.id as string;
  const seed = async (c: typeof x, letter: string): Promise<CustomerSeedBase> => ({ id: c.id, externalId: c.externalId, email: c.email, walletId: await wallet(c.id), holdId: c.holdIds[0]!, grantKey: `${tag}-${letter}-grant-0` });
  return {
    ...seeded, x: await seed(x, 'x'), y: await seed(y, 'y'), z: { id: z.id, externalId: z.externalId },
    host, hostId: gatewayHost.putGatewayHost.id,
    apiKeyId: key.createApiKey.apiKey.id, credentialId: credential.setProviderCredential.id, gatewayRequestIds,
    xToken, zToken, revokedSecret: revoked.createApiKey.secret,
  };
}

// ------------------------------------------------------------------ setup

beforeAll(async () => {
  ({ server, schema } = await api.start());

  const a = await seedTenant('alpha', true);
  const b = await seedTenant('beta', false);
  const yCursors: Record<string, string> = {};
  for (const list of ['customers', 'ledgerTransactions', 'usageEvents', 'gatewayRequests']) {
    const page = await ok(a.merchant.secret, `{ ${list}(first: 100${list === 'customers' ? ', filter: { status: ALL }' : ''}) { edges { cursor node { id ${list === 'customers' ? '' : 'customerId'} } } } }`);
    const ofY = page[list].edges.filter((edge: any) => (list === 'customers' ? edge.node.id : edge.node.customerId) === a.y.id);
    // A row of Y's from the middle of the list: rows of X's lie on both sides of it.
    yCursors[list] = ofY[Math.floor(ofY.length / 2)].cursor;
  }
  const yWallet = await ok(a.merchant.secret, 'query ($id: ID!) { wallet(customerId: $id) { grants(includeInactive: true, first: 100) { edges { cursor } } holds(first: 100) { edges { cursor } } transactions(first: 100) { edges { cursor } } } }', { id: a.y.id });
  for (const list of ['grants', 'holds', 'transactions']) {
    const edges = yWallet.wallet[list].edges;
    yCursors[list] = edges[Math.floor(edges.length / 2)].cursor;
  }
  w = { a, b, yCursors };

  await new Promise((resolve) => setTimeout(resolve, 100));
  baseline = await snapshot(a.merchant.id);
  baselineDigest = await digest(a.merchant.id);
  const aRows = await rowsOf(a.merchant.id);
  const bRows = await rowsOf(b.merchant.id);
  const secretsOf = (t: Tenant) => [t.merchant.secret, t.revokedSecret, t.xToken, t.zToken].map((secret) => secret.toLowerCase());
  aNeedles = new Set([...needlesOfMerchant(aRows, a.tag), ...secretsOf(a)]);
  // The probes' own merchant id is not A's to hide from A's own customer; it is from B (below).
  const bNeedles = needlesOf(Object.values(bRows).flat(), b.tag);
  notForX = new Set([...othersNeedles(aRows, a.tag, a.x.id, [a.y.id, a.z.id]), ...secretsOf(a).filter((s) => s !== a.xToken.toLowerCase()), ...bNeedles]);
  notForX.delete(a.merchant.id);
  notForX.delete(a.x.id);
  expect(notForX.has(a.y.id)).toBe(true);
  expect(notForX.has(a.y.walletId)).toBe(true);
  expect(aNeedles.has(a.y.holdId)).toBe(true);
}, 120_000);

afterAll(() => api.close());

// ------------------------------------------------------------------ the classification is complete

const fieldKey = (kind: RootKind, field: string) => `${kind}.${field}`;
const accessOf = (key: string): Access => FIELDS[key]?.access ?? NO_FOREIGN_ID[key]!;
/** What the allow-listed fields that require arguments are called with (nothing of anyone's). */
const PLAIN_ARGS: Record<string, Record<string, unknown>> = { 'Mutation.setCreditConsumptionOrder': { order: ['KIND'] } };
const argsOf = (key: string): Record<string, unknown> => FIELDS[key]?.args(w) ?? PLAIN_ARGS[key] ?? {};
/** Every argument set a field is probed with. */
const argSets = (key: string): Record<string, unknown>[] => (FIELDS[key] ? [FIELDS[key].args(w), ...(FIELDS[key].also?.(w) ?? [])] : [argsOf(key)]);
const split = (key: string) => key.split('.') as [RootKind, string];

describe('the classification', () => {
  it('names every root field exactly once: FIELDS (aimed at A) or NO_FOREIGN_ID; a new field must be added to one', () => {
    const served = KINDS.flatMap((kind) => Object.keys(rootType(kind).getFields()).map((field) => fieldKey(kind, field))).sort();
    expect([...Object.keys(FIELDS), ...Object.keys(NO_FOREIGN_ID)].sort()).toEqual(served);
    expect(Object.keys(FIELDS).filter((key) => key in NO_FOREIGN_ID)).toEqual([]);
  });

  it('allows no foreign id in NO_FOREIGN_ID: those fields take no argument that names an object', () => {
    const naming = Object.keys(NO_FOREIGN_ID).filter((key) => {
      const [kind, field] = split(key);
      return namingPaths(rootType(kind).getFields()[field]!, NAMING).length > 0;
    });
    expect(naming).toEqual([]);
  });

  it("aims every argument of FIELDS that names an object at one of A's", () => {
    const missing: string[] = [];
    for (const key of Object.keys(FIELDS)) {
      const [kind, field] = split(key);
      const sets = argSets(key);
      const paths = namingPaths(rootType(kind).getFields()[field]!, NAMING);
      expect(paths.length, `${key} names nothing: it belongs in NO_FOREIGN_ID`).toBeGreaterThan(0);
      for (const path of paths) {
        // `before` pages as `after` does, which every connection is given (and paged from Y's cursor below).
        if (path[0] === 'before') continue;
        const aimedAt = sets.some((args) => valuesAt(args, path).some(isAs));
        if (!aimedAt) missing.push(`${key}(${path.join('.')})`);
      }
    }
    expect(missing).toEqual([]);
  });

  it("the detectors see A's data where it is: Y's wallet read by A's key, and a change to A's rows", async () => {
    const query = 'query ($id: ID!) { wallet(customerId: $id) { id customerId holds { nodes { id } } transactions { edges { cursor node { id idempotencyKey } } } } }';
    const ofY = answerOf('', {}, await server.graphql(query, { id: w.a.y.id }, w.a.merchant.secret));
    expect(leaked(ofY, notForX)).toEqual(expect.arrayContaining([w.a.y.id, w.a.y.walletId]));
    expect(leaked(ofY, aNeedles).length).toBeGreaterThan(5);
    expect(isAs(w.yCursors.transactions)).toBe(true);
    expect(isAs(w.b.y.id)).toBe(false);
  });

  it('knows every field below the root that takes arguments: each is a connection with a database oracle', () => {
    const withArgs: string[] = [];
    const connections: string[] = [];
    for (const type of Object.values(schema.getTypeMap())) {
      if (!isObjectType(type) || type.name.startsWith('__')) continue;
      for (const field of Object.values(type.getFields())) {
        const named = getNamedType(field.type);
        if (isObjectType(named) && 'edges' in named.getFields() && 'pageInfo' in named.getFields()) connections.push(`${type.name}.${field.name}`);
        if (!KINDS.includes(type.name as RootKind) && field.args.length > 0) withArgs.push(`${type.name}.${field.name}`);
      }
    }
    expect(connections.sort()).toEqual(Object.keys(CONNECTIONS).sort());
    expect(withArgs.filter((key) => !(key in CONNECTIONS))).toEqual([]);
  });
});


// ------------------------------------------------------------------ credentials that hold no right to A

async function expectRefused(answer: Answer, field: string, codes: string[], where: string) {
  const got = codesOf(answer.response);
  expect(got.length, `${where}: refused, ${JSON.stringify(answer.response)}`).toBeGreaterThan(0);
  for (const code of got) expect(codes, `${where}: ${JSON.stringify(answer.response.errors)}`).toContain(code);
  expect((answer.response.data as Record<string, unknown> | null | undefined)?.[field] ?? null, `${where}: no data`).toBeNull();
}

// The keys are known before the schema is read; the first test checks they are the schema's.
const FIELD_KEYS = [...Object.keys(FIELDS), ...Object.keys(NO_FOREIGN_ID)].sort();

describe('no credential', () => {
  for (const key of FIELD_KEYS) {
    it(`${key}: UNAUTHENTICATED over HTTP and over graphql-ws, and nothing of A changes`, async () => {
      const [kind, field] = split(key);
      const ws = connect();
      for (const args of argSets(key)) {
        if (kind !== 'Subscription') {
          const answer = await call(kind, field, args, undefined);
          await expectRefused(answer, field, ['UNAUTHENTICATED'], `${key} over HTTP`);
          expect(leaked(answer, aNeedles), `${key}: leaked`).toEqual([]);
        }
        const overWs = await call(kind, field, args, undefined, ws);
        await expectRefused(overWs, field, ['UNAUTHENTICATED'], `${key} over graphql-ws`);
        expect(leaked(overWs, aNeedles), `${key}: leaked`).toEqual([]);
      }
      await expectAUnchanged(`${key} with no credential`);
    });
  }
});

describe('credentials that no longer hold (or never did)', () => {
  it("every field: A's revoked key, archived Z's session token, a forged token and a forged key are UNAUTHENTICATED (401)", async () => {
    const [payload] = w.a.xToken.slice('tgcs_'.length).split('.');
    const forged = { revoked: w.a.revokedSecret, archived: w.a.zToken, 'forged token': `tgcs_${payload}.${'A'.repeat(43)}`, 'forged key': `sk_test_${'Z'.repeat(43)}` };
    for (const [what, token] of Object.entries(forged)) {
      const fields = FIELD_KEYS.filter((key) => !key.startsWith('Subscription.'));
      const answers = await Promise.all(fields.map((key) => call(...split(key), argsOf(key), token)));
      for (const [i, answer] of answers.entries()) {
        const key = fields[i]!;
        expect(answer.response.status, `${key} with ${what}`).toBe(401);
        await expectRefused(answer, split(key)[1], ['UNAUTHENTICATED'], `${key} with ${what}`);
        expect(leaked(answer, aNeedles), `${key} with ${what}: leaked`).toEqual([]);
      }
    }
    await expectAUnchanged('credentials that no longer hold');
  });

  it('over graphql-ws: a socket opened with them is closed (4403) before any operation, subscriptions included', async () => {
    for (const token of [w.a.revokedSecret, w.a.zToken]) {
      for (const key of ['Subscription.balanceUpdated', 'Subscription.customerUpdated', 'Query.wallet', 'Mutation.grantCredits']) {
        const [kind, field] = split(key);
        const answer = await call(kind, field, argsOf(key), undefined, connect(token));
        expect(codesOf(answer.response), key).toEqual(['CLOSED 4403']);
      }
    }
    await expectAUnchanged('sockets with credentials that no longer hold');
  });
});

describe("another merchant's customer token (B's X)", () => {
  for (const key of FIELD_KEYS) {
    it(`${key}: FORBIDDEN, or (viewer, merchant) about B only`, async () => {
      const [kind, field] = split(key);
      const via: Via = kind === 'Subscription' ? connect(w.b.xToken) : 'http';
      for (const args of argSets(key)) {
        const answer = await call(kind, field, args, w.b.xToken, via, TOKEN_REFUSED);
        const where = `${key} as B's X ${JSON.stringify(args)}`;
        if (accessOf(key) === 'any') {
          expect(answer.response.errors, where).toBeUndefined();
          expect(answer.text).toContain(w.b.merchant.id);
        } else {
          await expectRefused(answer, field, ['FORBIDDEN'], where);
        }
        expect(leaked(answer, aNeedles), `${where}: leaked`).toEqual([]);
      }
      await expectAUnchanged(`${key} as B's customer`);
    });
  }
});

describe("A's customer X's token aimed at Y, Z and A's objects (as sent, in capitals, padded)", () => {
  for (const key of FIELD_KEYS) {
    it(`${key}: FORBIDDEN (viewer and merchant: about X and A only)`, async () => {
      const [kind, field] = split(key);
      const ws = kind === 'Subscription' ? connect(w.a.xToken) : undefined;
      for (const plain of argSets(key)) {
        for (const args of [plain, variant(plain, 'upper').args, variant(plain, 'padded').args]) {
          const answer = await call(kind, field, args, w.a.xToken, ws ?? 'http', TOKEN_REFUSED);
          const where = `${key} as X ${JSON.stringify(args)}`;
          if (accessOf(key) === 'any') expect(answer.response.errors, where).toBeUndefined();
          else await expectRefused(answer, field, ['FORBIDDEN'], where);
          expect(leaked(answer, notForX), `${where}: leaked`).toEqual([]);
        }
      }
      await expectAUnchanged(`${key} as X`);
    });
  }
});

describe("merchant B's secret key naming A's ids in capitals, or padded with spaces", () => {
  for (const key of Object.keys(FIELDS).sort()) {
    it(`${key}: refused or empty, nothing of A's`, async () => {
      const [kind, field] = split(key);
      const ws = kind === 'Subscription' ? connect(w.b.merchant.secret) : undefined;
      let probed = 0;
      for (const plain of argSets(key)) {
        for (const how of ['upper', 'padded'] as const) {
          const { args, changed } = variant(plain, how);
          if (!changed) continue;
          probed++;
          const answer = await call(kind, field, args, w.b.merchant.secret, ws ?? 'http');
          const where = `${key} as B ${JSON.stringify(args)}`;
          expect(codesOf(answer.response), `${where}: never INTERNAL`).not.toContain('INTERNAL');
          const refusal = FIELDS[key]!.b;
          if (refusal === 'NOT_FOUND' || answer.response.errors) {
            await expectRefused(answer, field, ['NOT_FOUND', 'VALIDATION'], where);
          } else if (refusal === 'NULL') {
            expect(answer.response.data[field], where).toBeNull();
          } else {
            expectEmpty(answer.response.data[field], where);
          }
          expect(leaked(answer, aNeedles), `${where}: leaked`).toEqual([]);
        }
      }
      await expectAUnchanged(`${key} as B, ids in capitals or padded`);
      // Fields naming A only by names, keys or cursors have no id to write otherwise.
      if (probed === 0) expect(JSON.stringify(argSets(key))).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}-/i);
    });
  }
});

// ------------------------------------------------------------------ lists filtered by customer

/** Every node of a connection, page by page (two rows a page), from `after` on. */
async function pageAll(oracle: ConnectionOracle, token: string, customerId: string, after?: string) {
  const nodes: any[] = [];
  let totalCount: number | undefined;
  let cursor = after;
  for (let pages = 0; pages < 50; pages++) {
    const query = oracle.query;
    const variables: Record<string, unknown> = { id: customerId, x: w.a.x.externalId, first: 2, after: cursor ?? null };
    // customers names X by externalId; the others by id.
    if (!query.includes('$id')) delete variables.id;
    if (!query.includes('$x')) delete variables.x;
    const response = await server.graphql<any>(query, variables, token);
    expect(response.errors, query).toBeUndefined();
    const page = oracle.at(response.data);
    nodes.push(...page.edges.map((edge: any) => edge.node));
    totalCount = page.totalCount;
    if (!page.pageInfo.hasNextPage) return { nodes, totalCount };
    cursor = page.pageInfo.endCursor;
  }
  throw new Error('more than 50 pages');
}

describe('connections filtered by customer hold only that customer\'s rows', () => {
  for (const [key, oracle] of Object.entries(CONNECTIONS)) {
    const credentials: [string, (w: World) => string][] = [["A's key", (w) => w.a.merchant.secret]];
    if (oracle.token) credentials.push(["X's token", (w) => w.a.xToken]);
    for (const [who, tokenOf] of credentials) {
      it(`${key} for X, as ${who}: every page, and from Y's cursor on, only X's rows (the database's count)`, async () => {
        const expected = await oracle.rows(w);
        expect(expected.length, `${key}: X has rows to list`).toBeGreaterThan(key === 'Query.customers' ? 0 : 2);
        const all = await pageAll(oracle, tokenOf(w), w.a.x.id);
        expect(all.nodes.map((node) => node.id).sort(), `${key}: X's rows`).toEqual(expected);
        if (all.totalCount !== undefined) expect(all.totalCount).toBe(expected.length);
        if (oracle.customerOf) expect(new Set(all.nodes.map(oracle.customerOf))).toEqual(new Set([w.a.x.id]));

        // Paged from the cursor of one of Y's rows (in A's own lists): X's rows past it, none of Y's.
        const fromY = await pageAll(oracle, tokenOf(w), w.a.x.id, w.yCursors[oracle.yCursor]);
        for (const node of fromY.nodes) expect(expected, `${key} after Y's cursor`).toContain(node.id);
        const answer = answerOf(key, {}, { status: 200, data: fromY, errors: undefined });
        expect(leaked(answer, notForX), `${key} after Y's cursor: Y's rows`).toEqual([]);
        await expectAUnchanged(`${key} paged for X`);
      });
    }
  }

  it("customers by A's filters (externalIds, email, search) as A: only the customers they name", async () => {
    const cases: [Record<string, unknown>, string[]][] = [
      [{ status: 'ALL', externalIds: [w.a.x.externalId, w.b.y.externalId] }, [w.a.x.id]],
      [{ status: 'ALL', email: w.a.y.email }, [w.a.y.id]],
      [{ status: 'ALL', search: `${w.a.tag}-z` }, [w.a.z.id]],
      [{ status: 'ALL', search: w.b.tag }, []],
      [{ status: 'ALL', email: w.b.x.email }, []],
    ];
    for (const [filter, ids] of cases) {
      const data = await ok(w.a.merchant.secret, 'query ($filter: CustomerFilter) { customers(filter: $filter, first: 100) { totalCount edges { node { id } } } }', { filter });
      expect(data.customers.edges.map((edge: any) => edge.node.id).sort(), JSON.stringify(filter)).toEqual([...ids].sort());
      expect(data.customers.totalCount).toBe(ids.length);
    }
  });

  it("X's token reading its wallets, and Y's customer id given beside them, sees only X's", async () => {
    const data = await ok(w.a.xToken, 'query ($id: ID!) { wallets(customerId: $id) { id customerId holds(first: 100) { nodes { id customerId } } grants(first: 100, includeInactive: true) { nodes { id } } transactions(first: 100) { edges { node { id customerId walletId } } } } }', { id: w.a.x.id });
    expect(data.wallets.map((wallet: any) => wallet.id)).toEqual([w.a.x.walletId]);
    const answer = answerOf('', {}, { status: 200, data, errors: undefined });
    expect(leaked(answer, notForX)).toEqual([]);
  });
});

// ------------------------------------------------------------------ subscriptions

describe('subscriptions to one\'s own customer are never pushed another merchant\'s changes', () => {
  it("B's key watching B's X, and B's X's token watching itself: A's changes to its X (same names, same amounts) come to neither", async () => {
    const { a, b } = w;
    const subscriptions = [
      connect(b.merchant.secret).iterate({ query: 'subscription ($id: ID!) { balanceUpdated(customerId: $id) { customerId transactionIds wallet { id customerId } } }', variables: { id: b.x.id } }),
      connect(b.xToken).iterate({ query: 'subscription ($id: ID!) { balanceUpdated(customerId: $id) { customerId transactionIds wallet { id } } }', variables: { id: b.x.id } }),
      connect(b.merchant.secret).iterate({ query: 'subscription ($id: ID!) { customerUpdated(id: $id) { id externalId name } }', variables: { id: b.x.id } }),
      connect(b.xToken).iterate({ query: 'subscription ($id: ID!) { customerUpdated(id: $id) { id name } }', variables: { id: b.x.id } }),
    ];
    const firsts = subscriptions.map((subscription) => subscription.next());
    await watched(b.x.id, 2);
    try {
      // A acts first: had its events reached B's subscriptions, they would be the first ones.
      await grantAndRename(a.merchant.secret, a.x.id, { amount: '3', kind: 'PAID', idempotencyKey: 'same-key' }, 'same name');
      await grantAndRename(b.merchant.secret, b.x.id, { amount: '3', kind: 'PAID', idempotencyKey: 'same-key' }, 'same name');
      for (const first of firsts) {
        const pushed = await firstEvent(first, 10);
        expect(pushed.errors).toBeUndefined();
        const value = pushed.data.balanceUpdated ?? pushed.data.customerUpdated;
        expect(value.customerId ?? value.id).toBe(b.x.id);
        const text = JSON.stringify(pushed).toLowerCase();
        expect([...aNeedles].filter((needle) => text.includes(needle))).toEqual([]);
      }
    } finally {
      await Promise.all(subscriptions.map((subscription) => subscription.return?.()));
    }
    // A acted on its own, and the digest sees it (so it would see anyone else's change too): that is the new baseline.
    expect(await digest(a.merchant.id)).not.toEqual(baselineDigest);
    baseline = await snapshot(a.merchant.id);
    baselineDigest = await digest(a.merchant.id);
  });
});
