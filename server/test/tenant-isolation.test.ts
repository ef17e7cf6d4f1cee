import { randomUUID } from 'node:crypto';
import {
  buildClientSchema,
  getIntrospectionQuery,
  getNamedType,
  isInputObjectType,
  isLeafType,
  isNonNullType,
  isObjectType,
  type GraphQLField,
  type GraphQLNamedType,
  type GraphQLObjectType,
  type GraphQLOutputType,
  type GraphQLSchema,
  type IntrospectionQuery,
} from 'graphql';
import { createClient, type Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { customerTopic } from '../src/modules/customers/customers.service.ts';
import { walletTopic } from '../src/modules/ledger/ledger.service.ts';
import { startTestServer, waitForSubscribers, type GraphQLResponse, type TestServer } from './server.ts';

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

interface CustomerSeed {
  id: string;
  externalId: string;
  email: string;
  walletId: string;
  grantKey: string;
  adjustKey: string;
  debitKey: string;
  holdKey: string;
  holdId: string;
  usageKey: string;
  usageEventId: string;
}

interface Tenant {
  tag: string;
  merchant: { id: string; secret: string };
  x: CustomerSeed;
  y: CustomerSeed;
  /** An archived customer. */
  z: { id: string; externalId: string };
  /** A hold of X's, captured in part. */
  capturedHoldId: string;
  meterKey: string;
  archivedMeterKey: string;
  planKey: string;
  ruleName: string;
  planRuleName: string;
  model: string;
  host: string;
  hostId: string;
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

let server: TestServer;
let schema: GraphQLSchema;
let w: World;
const clients: Client[] = [];

/** A's rows as seeded; nothing after the seeding may change them (until the subscription tests act as A). */
let baseline: Snapshot;
/** Every id and tagged string in A's rows, and A's secrets: none may reach B. */
let aNeedles: Set<string>;
/** What of A's X's token must not see: Y's and Z's rows, A's secrets, and all of B. */
let notForX: Set<string>;
/** B's ids and tagged strings: a list B reads must show some of them. */
let bNeedles: Set<string>;

const tagged = (base: string) => `${base}${randomUUID().slice(0, 8)}`;

// ------------------------------------------------------------------ GraphQL plumbing

/** An operation that must succeed (the seeding). */
async function ok<T = any>(secret: string, query: string, variables: Record<string, unknown> = {}): Promise<T> {
  const result = await server.graphql<T>(query, variables, secret);
  if (result.errors) throw new Error(`${query}: ${JSON.stringify(result.errors)}`);
  return result.data!;
}

type RootKind = 'Query' | 'Mutation' | 'Subscription';

function rootType(kind: RootKind): GraphQLObjectType {
  const type = kind === 'Query' ? schema.getQueryType() : kind === 'Mutation' ? schema.getMutationType() : schema.getSubscriptionType();
  return type!;
}

const MAX_SELECTION_DEPTH = 6;

/**
 * Every field of `type` that takes no required argument, nested objects included (each type
 * once on a path, so Plan → priceRules → plan stops): the widest answer the field can give.
 * `skip` holds Type.field names left out (those a customer token is refused).
 */
function selectionOf(type: GraphQLOutputType, skip: ReadonlySet<string>, path: readonly string[] = []): string {
  const named = getNamedType(type);
  if (!isObjectType(named)) return '';
  const parts: string[] = [];
  for (const field of Object.values(named.getFields())) {
    if (skip.has(`${named.name}.${field.name}`)) continue;
    if (field.args.some((arg) => isNonNullType(arg.type) && arg.defaultValue === undefined)) continue;
    const inner = getNamedType(field.type);
    if (isLeafType(inner)) parts.push(field.name);
    else if (isObjectType(inner) && !path.includes(inner.name) && inner.name !== named.name && path.length < MAX_SELECTION_DEPTH) {
      const sub = selectionOf(inner, skip, [...path, named.name]);
      if (sub) parts.push(`${field.name} ${sub}`);
    }
  }
  return parts.length > 0 ? `{ ${parts.join(' ')} }` : '';
}

/** The operation calling root field `field` with `args` (as variables) and selecting everything. */
function documentFor(kind: RootKind, field: string, args: Record<string, unknown>, skip: ReadonlySet<string> = new Set()): string {
  const definition = rootType(kind).getFields()[field];
  if (!definition) throw new Error(`${kind}.${field} is not in the schema`);
  for (const name of Object.keys(args)) {
    if (!definition.args.some((arg) => arg.name === name)) throw new Error(`${kind}.${field} takes no argument ${name}`);
  }
  const used = definition.args.filter((arg) => arg.name in args);
  const variables = used.map((arg) => `$${arg.name}: ${String(arg.type)}`).join(', ');
  const call = used.length > 0 ? `(${used.map((arg) => `${arg.name}: $${arg.name}`).join(', ')})` : '';
  return `${kind.toLowerCase()} Probe${variables ? `(${variables})` : ''} { ${field}${call} ${selectionOf(definition.type, skip)} }`;
}

interface Answer {
  request: string;
  response: GraphQLResponse<any>;
  text: string;
}

function connect(token: string): Client {
  const client = createClient({
    url: server.url.replace('http', 'ws') + '/graphql',
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
    lazy: true,
  });
  clients.push(client);
  return client;
}

/** The first thing an operation over graphql-ws answers: an event or its refusal, as an HTTP-like response. */
async function firstOfSubscription(token: string, query: string, variables: Record<string, unknown>, extensions?: Record<string, unknown>): Promise<GraphQLResponse<any>> {
  const iterator = connect(token).iterate({ query, variables, extensions });
  try {
    const outcome = await Promise.race([
      iterator.next().then(
        (value) => ({ value: value.value as { data?: unknown; errors?: GraphQLResponse<unknown>['errors'] } }),
        (error: unknown) => ({ errors: error as GraphQLResponse<unknown>['errors'] }),
      ),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer within 5 s: ${query}`)), 5000)),
    ]);
    if ('errors' in outcome) return { status: 200, data: null, errors: outcome.errors };
    return { status: 200, data: outcome.value?.data, errors: outcome.value?.errors };
  } finally {
    await iterator.return?.();
  }
}

async function call(kind: RootKind, field: string, args: Record<string, unknown>, token: string, skip?: ReadonlySet<string>): Promise<Answer> {
  const query = documentFor(kind, field, args, skip);
  const response = kind === 'Subscription' ? await firstOfSubscription(token, query, args) : await server.graphql<any>(query, args, token);
  return answerOf(`${query} ${JSON.stringify(args)}`, response, args);
}

/** The decoded cursors in `value` (under keys named like cursor, after, before). */
function cursorsIn(value: unknown): string[] {
  const cursors: string[] = [];
  JSON.stringify(value ?? null, (key, inner: unknown) => {
    if (/cursor|^after$|^before$/i.test(key) && typeof inner === 'string') cursors.push(Buffer.from(inner, 'base64url').toString('utf8'));
    return inner;
  });
  return cursors;
}

/**
 * An answer and its request as text, cursors decoded (a cursor is a row's time and id in
 * base64): a cursor the caller sent, echoed back in pageInfo, is not a leak; one it did not is.
 */
function answerOf(request: string, response: GraphQLResponse<any>, args: Record<string, unknown> = {}): Answer {
  const text = `${JSON.stringify({ data: response.data, errors: response.errors })} ${cursorsIn(response.data).join(' ')}`;
  return { request: `${request} ${cursorsIn(args).join(' ')}`.toLowerCase(), response, text: text.toLowerCase() };
}

/** The needles an answer holds that its own request did not name: what leaked. */
function leaked(answer: Answer, needles: ReadonlySet<string>): string[] {
  return [...needles].filter((needle) => answer.text.includes(needle) && !answer.request.includes(needle));
}

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

const codesOf = (response: GraphQLResponse<unknown>) => (response.errors ?? []).map((error) => error.extensions?.code);

// ------------------------------------------------------------------ A's rows

type Snapshot = Record<string, string[]>;
/** Columns that change without anyone acting on the rows: a key's last use is stamped after the request. */
const VOLATILE_COLUMNS: Record<string, readonly string[]> = { api_keys: ['last_used_at'] };

/** Every row of the merchant in every table with a merchant_id (found in the catalog, so a new table is covered), and its merchants row. */
async function rowsOf(merchantId: string): Promise<Record<string, Record<string, unknown>[]>> {
  return server.services.db.withConnection(async (connection) => {
    const tables = await connection.query<{ table_name: string }>(
      `SELECT c.table_name FROM information_schema.columns c
       JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
       WHERE c.table_schema = 'public' AND c.column_name = 'merchant_id' AND t.table_type = 'BASE TABLE'
       ORDER BY c.table_name`,
    );
    const rows: Record<string, Record<string, unknown>[]> = {
      merchants: await connection.query(`SELECT * FROM merchants WHERE id = $1`, [merchantId]),
    };
    for (const { table_name: table } of tables) rows[table] = await connection.query(`SELECT * FROM "${table}" WHERE merchant_id = $1`, [merchantId]);
    return rows;
  });
}

const jsonOf = (value: unknown) => JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));

async function snapshot(merchantId: string): Promise<Snapshot> {
  const rows = await rowsOf(merchantId);
  return Object.fromEntries(
    Object.entries(rows).map(([table, list]) => [
      table,
      list
        .map((row) => jsonOf(Object.fromEntries(Object.entries(row).filter(([column]) => !VOLATILE_COLUMNS[table]?.includes(column)))))
        .sort(),
    ]),
  );
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The ids and tagged strings of `rows` (lower case). */
function needlesOf(rows: Record<string, unknown>[], tag: string): Set<string> {
  const needles = new Set<string>();
  const visit = (value: unknown) => {
    if (typeof value === 'string') {
      if (UUID.test(value) || value.includes(tag)) needles.add(value.toLowerCase());
    } else if (Array.isArray(value)) {
      value.forEach(visit);
    } else if (value !== null && typeof value === 'object' && !(value instanceof Date) && !ArrayBuffer.isView(value)) {
      Object.values(value).forEach(visit);
    }
  };
  rows.forEach(visit);
  return needles;
}

/** The rows that are a customer's: its own, and (transitively) those naming one of its rows' ids. */
function rowsOfCustomer(all: Record<string, Record<string, unknown>[]>, customerId: string): Record<string, unknown>[] {
  const ids = new Set([customerId]);
  const found = new Set<Record<string, unknown>>();
  for (let grew = true; grew; ) {
    grew = false;
    for (const [table, rows] of Object.entries(all)) {
      if (table === 'merchants') continue;
      for (const row of rows) {
        if (found.has(row)) continue;
        const refs = Object.entries(row).filter(([column]) => column !== 'merchant_id').map(([, value]) => value);
        if (refs.some((value) => typeof value === 'string' && ids.has(value))) {
          found.add(row);
          if (typeof row.id === 'string') ids.add(row.id);
          grew = true;
        }
      }
    }
  }
  return [...found];
}

async function expectAUnchanged(what: string) {
  const now = await snapshot(w.a.merchant.id);
  for (const table of new Set([...Object.keys(baseline), ...Object.keys(now)])) {
    expect(now[table], `${what}: merchant A's ${table} changed`).toEqual(baseline[table]);
  }
}

// ------------------------------------------------------------------ seeding

async function seedTenant(name: string): Promise<Tenant> {
  const tag = tagged(name);
  const merchant = await server.createMerchant(`${tag} Inc`);
  const s = merchant.secret;
  const model = `${tag}-model`;
  await ok(s, 'mutation ($input: SetProviderPriceInput!) { setProviderPrice(input: $input) { ref } }', {
    input: { provider: 'openai', model, rates: { perMillionTokens: { input: '1', output: '2' } } },
  });
  const meterKey = `${tag}_out`;
  const archivedMeterKey = `${tag}_old`;
  for (const key of [meterKey, archivedMeterKey]) {
    await ok(s, 'mutation ($input: CreateMeterInput!) { createMeter(input: $input) { id } }', { input: { key, name: `${tag} ${key}`, unit: 'token', source: 'OUTPUT_TOKENS' } });
  }
  await ok(s, 'mutation ($key: String!) { archiveMeter(key: $key) { id } }', { key: archivedMeterKey });
  const planKey = `${tag}-pro`;
  await ok(s, 'mutation ($input: PutPlanInput!) { putPlan(input: $input) { id } }', { input: { key: planKey, name: `${tag} Pro`, description: `${tag} plan` } });
  const ruleName = `${tag}-markup`;
  const planRuleName = `${tag}-tokens`;
  await ok(s, 'mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id } }', {
    input: { name: ruleName, type: 'MARKUP', provider: 'openai', config: { percent: '20' } },
  });
  await ok(s, 'mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id } }', {
    input: { name: planRuleName, planKey, type: 'FLAT', meterKey, config: { unitPrice: '0.001' } },
  });

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
    tag,
    merchant,
    x,
    y,
    z: { id: zCreated.id, externalId: zCreated.externalId },
    capturedHoldId,
    meterKey,
    archivedMeterKey,
    planKey,
    ruleName,
    planRuleName,
    model,
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

/**
 * The nested fields a session token is refused (secret key only): the audit trail, the merchant's
 * notes and settings, the plan's rules and the spend limits. Its own reads find exactly these.
 */
const TOKEN_REFUSED = new Set([
  'Customer.metadata',
  'Customer.spendLimits',
  'Plan.priceRules',
  'Merchant.gatewayCallerProviderKeys',
  'Merchant.gatewayReserveMaxCost',
  'Merchant.incompleteStreamPolicy',
  'CreditGrant.metadata',
  'Hold.createdBy',
  'Hold.finalizedBy',
  'LedgerTransaction.actor',
  'LedgerTransaction.entries',
  'LedgerTransaction.metadata',
  'LedgerTransaction.reason',
]);
/** What X's own reads were refused, across them all. */
const refusedToTokens = new Set<string>();

const PLANS: Record<RootKind, Record<string, FieldPlan>> = { Query: QUERY, Mutation: MUTATION, Subscription: SUBSCRIPTION };
const KINDS: RootKind[] = ['Query', 'Mutation', 'Subscription'];

// ------------------------------------------------------------------ checking an answer

/** Every list in `value` is empty and every count 0. */
function expectEmpty(value: unknown, where: string) {
  const visit = (node: unknown, key: string) => {
    if (Array.isArray(node)) expect(node, `${where}: ${key}`).toEqual([]);
    else if (node !== null && typeof node === 'object') for (const [k, v] of Object.entries(node)) visit(v, k);
    else if (key === 'totalCount') expect(node, `${where}: totalCount`).toBe(0);
  };
  visit(value, '');
}

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
  server = await startTestServer({ TOLLGATE_MAX_QUERY_COMPLEXITY: '1000000', TOLLGATE_MAX_QUERY_DEPTH: '30' });
  const introspection = await server.graphql<IntrospectionQuery>(getIntrospectionQuery(), {}, (await server.createMerchant('introspection')).secret);
  expect(introspection.errors).toBeUndefined();
  schema = buildClientSchema(introspection.data!);

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
  aNeedles = new Set([...needlesOf(Object.values(aRows).flat(), a.tag), ...secretsOf(a), xToken.toLowerCase()]);
  // A's key hashes are not ids nor tagged, but are A's all the same.
  for (const key of aRows.api_keys ?? []) aNeedles.add(String(key.hash).toLowerCase());
  bNeedles = new Set([...needlesOf(Object.values(bRows).flat(), b.tag), ...secretsOf(b)]);
  bNeedles.delete(b.merchant.id.toLowerCase());

  const xSees = needlesOf(rowsOfCustomer(aRows, a.x.id), a.tag);
  xSees.add(a.x.id);
  const othersOfA = [a.y.id, a.z.id].flatMap((id) => [...needlesOf(rowsOfCustomer(aRows, id), a.tag), id]);
  notForX = new Set([...othersOfA.filter((needle) => !xSees.has(needle)), ...secretsOf(a), ...bNeedles, b.merchant.id.toLowerCase()]);
  // What the token may show about its merchant and about X is not a leak.
  notForX.delete(a.merchant.id.toLowerCase());
  expect(notForX.has(a.y.id)).toBe(true);
  expect(notForX.has(a.y.externalId.toLowerCase())).toBe(true);
  expect(aNeedles.has(a.y.holdId)).toBe(true);
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((client) => client.dispose()));
  await server?.close();
});

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
    const NAMING = new Set(['id', 'key', 'planKey', 'meterKey', 'customerId', 'customer', 'externalId', 'externalIds', 'idempotencyKey', 'model', 'host']);
    const names = (name: string, type: GraphQLNamedType) => type.name === 'ID' || NAMING.has(name);
    const missing: string[] = [];
    for (const kind of KINDS) {
      for (const [name, definition] of Object.entries(rootType(kind).getFields()) as [string, GraphQLField<unknown, unknown>][]) {
        const paths: string[][] = [];
        for (const arg of definition.args) {
          const type = getNamedType(arg.type);
          if (names(arg.name, type)) paths.push([arg.name]);
          else if (isInputObjectType(type)) {
            for (const inner of Object.values(type.getFields())) if (names(inner.name, getNamedType(inner.type))) paths.push([arg.name, inner.name]);
          }
        }
        const probes = [...PLANS[kind][name]!.cross, ...SAME_NAMES.filter((entry) => kind === 'Mutation' && entry.field === name).map((entry) => entry.probe)];
        for (const path of paths) {
          const aimed = probes.some((probe) => {
            let value: unknown = probe.args(w);
            for (const step of path) value = value === null || typeof value !== 'object' ? undefined : (value as Record<string, unknown>)[step];
            const values = Array.isArray(value) ? value : [value];
            return values.some((v) => typeof v === 'string' && aNeedles.has(v.toLowerCase()));
          });
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
      expect(await leakedToB(answerOf(`${query} ${JSON.stringify(variables)}`, response, variables)), query).toEqual([]);
    }
    await expectAUnchanged('lookups by A\'s names');
  });
});

describe('subscriptions', () => {
  it("over graphql-ws, an operation's own credential never replaces the socket's", async () => {
    // Only a socket opened without one may name a credential per operation (the playground's way).
    const asX = await firstOfSubscription(w.xToken, '{ apiKeys { id name } }', {}, { headers: { authorization: `Bearer ${w.a.merchant.secret}` } });
    expect(codesOf(asX)).toEqual(['FORBIDDEN']);
    const ofY = 'subscription ($id: ID!) { balanceUpdated(customerId: $id) { customerId } }';
    const stillX = await firstOfSubscription(w.xToken, ofY, { id: w.a.y.id }, { headers: { authorization: `Bearer ${w.a.merchant.secret}` } });
    expect(codesOf(stillX)).toEqual(['FORBIDDEN']);
    const asB = await firstOfSubscription(w.b.merchant.secret, 'query ($id: ID!) { customer(id: $id) { id externalId } }', { id: w.a.x.id }, { headers: { authorization: `Bearer ${w.xToken}` } });
    expect(codesOf(asB)).toEqual(['NOT_FOUND']);
    for (const answer of [asX, stillX, asB]) expect(leaked(answerOf('', answer), notForX)).toEqual([]);
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
    await waitForSubscribers(server, walletTopic(a.x.id), 1);
    await waitForSubscribers(server, customerTopic(a.x.id), 1);
    try {
      // Y changes first: had its events reached X's subscriptions, they would be the first ones.
      await ok(a.merchant.secret, 'mutation ($id: ID!) { grantCredits(input: { customerId: $id, amount: "1", kind: PROMOTIONAL, idempotencyKey: "sub-y" }) { replayed } }', { id: a.y.id });
      await ok(a.merchant.secret, 'mutation ($id: ID!) { updateCustomer(id: $id, input: { name: "y renamed" }) { id } }', { id: a.y.id });
      await ok(a.merchant.secret, 'mutation ($id: ID!) { grantCredits(input: { customerId: $id, amount: "1", kind: PROMOTIONAL, idempotencyKey: "sub-x" }) { replayed } }', { id: a.x.id });
      await ok(a.merchant.secret, 'mutation ($id: ID!) { updateCustomer(id: $id, input: { name: "x renamed" }) { id } }', { id: a.x.id });
      const timeout = () => new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no event within 15 s')), 15_000));
      const pushedBalance = (await Promise.race([balanceNext, timeout()])).value as { data: any; errors?: unknown };
      const pushedCustomer = (await Promise.race([customerNext, timeout()])).value as { data: any; errors?: unknown };
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
