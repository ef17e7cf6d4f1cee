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
  type GraphQLObjectType,
  type GraphQLOutputType,
  type GraphQLSchema,
  type IntrospectionQuery,
} from 'graphql';
import { createClient, type Client } from 'graphql-ws';
import { expect } from 'vitest';
import WebSocket from 'ws';
import { customerTopic } from '../src/modules/customers/customers.service.ts';
import { walletTopic } from '../src/modules/ledger/ledger.service.ts';
import type { SqlExecutor } from '../src/shared/db/database.ts';
import { startTestServer, waitForSubscribers, type GraphQLResponse, type TestServer } from './server.ts';

/**
 * What the tenant-isolation tests (tenant-isolation.test.ts, tenant-isolation.matrix.test.ts)
 * share: the server they probe and the schema it serves, operations built from that schema and
 * sent over HTTP or graphql-ws, a merchant's rows read from every table with a merchant_id, and
 * the detectors that find one tenant's ids and names in an answer.
 *
 * What each file seeds, how it classifies the fields, and how it decides that merchant A's rows
 * are unchanged stay in that file.
 */

// ------------------------------------------------------------------ the world

/** What each file seeds for customers X, Y (and Z) of a merchant, at the least. */
export interface CustomerSeedBase {
  id: string;
  externalId: string;
  email: string;
  walletId: string;
  /** A pending hold of the customer's. */
  holdId: string;
  /** The idempotency key of the customer's first grant. */
  grantKey: string;
}

/** A merchant named after `tag` and its catalog, as seedMerchant makes them; every name in it holds `tag`. */
export interface MerchantSeed {
  tag: string;
  merchant: { id: string; secret: string; apiKeyId: string };
  /** A model the merchant has its own provider price for. */
  model: string;
  meterKey: string;
  archivedMeterKey: string;
  planKey: string;
  /** A rule of the default book. */
  ruleName: string;
  /** A rule of the plan's, on the meter. */
  planRuleName: string;
}

/** What each file seeds for merchants A and B, at the least. */
export interface TenantBase<Customer extends CustomerSeedBase> extends MerchantSeed {
  x: Customer;
  y: Customer;
  /** An archived customer. */
  z: { id: string; externalId: string };
  host: string;
  hostId: string;
}

/** A name unique to this run: `base` and a few random characters, found again in every string seeded from it. */
const tagged = (base: string) => `${base}${randomUUID().slice(0, 8)}`;

// ------------------------------------------------------------------ the served API

export type RootKind = 'Query' | 'Mutation' | 'Subscription';
export const KINDS: RootKind[] = ['Query', 'Mutation', 'Subscription'];

/** How a call travels: a POST, or an operation on an open graphql-ws socket. */
export type Via = 'http' | Client;

/** An answer and its request as text (lower case), cursors decoded. */
export interface Answer {
  request: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- answers are read field by field by the assertions
  response: GraphQLResponse<any>;
  text: string;
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

/**
 * A test server (with limits wide enough for the widest selections) and the schema it serves,
 * read by introspection; operations built from that schema and sent over HTTP or graphql-ws.
 * Made at module level, started in `beforeAll` and closed in `afterAll`; its functions may be
 * destructured.
 */
export function servedApi() {
  let started: { server: TestServer; schema: GraphQLSchema } | undefined;
  let server: TestServer | undefined;
  const clients: Client[] = [];

  const current = () => {
    if (!started) throw new Error('the server is not started: call start() in beforeAll');
    return started;
  };

  /** The server, and the schema it serves. */
  async function start() {
    server = await startTestServer({ TOLLGATE_MAX_QUERY_COMPLEXITY: '1000000', TOLLGATE_MAX_QUERY_DEPTH: '30' });
    const introspection = await server.graphql<IntrospectionQuery>(getIntrospectionQuery(), {}, (await server.createMerchant('introspection')).secret);
    expect(introspection.errors).toBeUndefined();
    started = { server, schema: buildClientSchema(introspection.data!) };
    return started;
  }

  async function close() {
    await Promise.all(clients.map((client) => client.dispose()));
    await server?.close();
  }

  /** An operation that must succeed (the seeding). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- as the tests' own gql helpers: answers are read field by field
  async function ok<T = any>(secret: string, query: string, variables: Record<string, unknown> = {}): Promise<T> {
    const result = await current().server.graphql<T>(query, variables, secret);
    if (result.errors) throw new Error(`${query}: ${JSON.stringify(result.errors)}`);
    return result.data!;
  }

  function rootType(kind: RootKind): GraphQLObjectType {
    const { schema } = current();
    return (kind === 'Query' ? schema.getQueryType() : kind === 'Mutation' ? schema.getMutationType() : schema.getSubscriptionType())!;
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

  /** A lazy graphql-ws client with `token` (or none), disposed by close(). */
  function connect(token?: string): Client {
    const client = createClient({
      url: current().server.url.replace('http', 'ws') + '/graphql',
      webSocketImpl: WebSocket,
      connectionParams: token ? { authorization: `Bearer ${token}` } : {},
      retryAttempts: 0,
      lazy: true,
    });
    clients.push(client);
    return client;
  }

  /**
   * The first thing an operation over graphql-ws answers (an event, a result or its refusal), as
   * an HTTP-like response; a socket closed on it answers the error code `CLOSED <close code>`.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- answers are read field by field by the assertions
  async function overWebSocket(client: Client, query: string, variables: Record<string, unknown>, extensions?: Record<string, unknown>): Promise<GraphQLResponse<any>> {
    const iterator = client.iterate({ query, variables, extensions });
    try {
      const outcome = await Promise.race([
        iterator.next().then(
          (value) => ({ value: value.value as { data?: unknown; errors?: GraphQLResponse<unknown>['errors'] } }),
          (error: unknown) => ({ errors: (Array.isArray(error) ? error : [{ message: String(error), extensions: { code: `CLOSED ${(error as { code?: number }).code}` } }]) as GraphQLResponse<unknown>['errors'] }),
        ),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer within 5 s: ${query}`)), 5000)),
      ]);
      if ('errors' in outcome) return { status: 200, data: null, errors: outcome.errors };
      return { status: 200, data: outcome.value?.data, errors: outcome.value?.errors };
    } finally {
      await iterator.return?.();
    }
  }

  /** Root field `field` called with `args` and `token`, selecting everything but `skip`. Subscriptions need a socket. */
  async function call(kind: RootKind, field: string, args: Record<string, unknown>, token: string | undefined, via: Via = 'http', skip?: ReadonlySet<string>): Promise<Answer> {
    const query = documentFor(kind, field, args, skip);
    if (kind === 'Subscription' && via === 'http') throw new Error('subscriptions go over graphql-ws');
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- answers are read field by field by the assertions
    const response = via === 'http' ? await current().server.graphql<any>(query, args, token) : await overWebSocket(via, query, args);
    return answerOf(query, args, response);
  }

  /** Every row of the merchant in every table with a merchant_id, and its merchants row. */
  async function rowsOf(merchantId: string): Promise<Rows> {
    return current().server.services.db.withConnection(async (connection) => {
      const rows: Rows = { merchants: await connection.query(`SELECT * FROM merchants WHERE id = $1`, [merchantId]) };
      for (const table of await merchantTables(connection)) rows[table] = await connection.query(`SELECT * FROM "${table}" WHERE merchant_id = $1`, [merchantId]);
      return rows;
    });
  }

  /** The merchant's rows as sorted JSON, table by table, less the columns that change on their own. */
  async function snapshot(merchantId: string): Promise<Snapshot> {
    const rows = await rowsOf(merchantId);
    return Object.fromEntries(
      Object.entries(rows).map(([table, list]) => [
        table,
        list.map((row) => jsonOf(Object.fromEntries(Object.entries(row).filter(([column]) => !VOLATILE_COLUMNS[table]?.includes(column))))).sort(),
      ]),
    );
  }

  /**
   * A new merchant, `name` and a few random characters its tag, with its catalog: a provider price
   * for a model of its own, a meter and an archived one, a plan, a rule in the default book and a
   * rule in the plan. `describedPlan`: the plan has a description too (one more tagged string).
   */
  async function seedMerchant(name: string, { describedPlan = false }: { describedPlan?: boolean } = {}): Promise<MerchantSeed> {
    const tag = tagged(name);
    const merchant = await current().server.createMerchant(`${tag} Inc`);
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
    await ok(s, 'mutation ($input: PutPlanInput!) { putPlan(input: $input) { id } }', { input: { key: planKey, name: `${tag} Pro`, ...(describedPlan ? { description: `${tag} plan` } : {}) } });
    const ruleName = `${tag}-markup`;
    const planRuleName = `${tag}-tokens`;
    await ok(s, 'mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id } }', {
      input: { name: ruleName, type: 'MARKUP', provider: 'openai', config: { percent: '20' } },
    });
    await ok(s, 'mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id } }', {
      input: { name: planRuleName, planKey, type: 'FLAT', meterKey, config: { unitPrice: '0.001' } },
    });
    return { tag, merchant, model, meterKey, archivedMeterKey, planKey, ruleName, planRuleName };
  }

  /** Resolves once the customer's balance topic and its customer topic each have `count` subscriptions. */
  async function watched(customerId: string, count: number) {
    await waitForSubscribers(current().server, walletTopic(customerId), count);
    await waitForSubscribers(current().server, customerTopic(customerId), count);
  }

  /** A grant to the customer, then a new name for it, by its merchant: an event on each of the customer's topics. */
  async function grantAndRename(secret: string, customerId: string, grant: { amount: string; kind: 'PAID' | 'PROMOTIONAL'; idempotencyKey: string }, name: string) {
    await ok(secret, 'mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }', { input: { customerId, ...grant } });
    await ok(secret, 'mutation ($id: ID!, $name: String) { updateCustomer(id: $id, input: { name: $name }) { id } }', { id: customerId, name });
  }

  return { start, close, ok, rootType, documentFor, connect, overWebSocket, call, rowsOf, snapshot, seedMerchant, watched, grantAndRename };
}

/** What a subscription pushes first (its iterator's next value), or an error after `seconds`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- pushed events are read field by field by the assertions
export async function firstEvent(next: Promise<IteratorResult<unknown>>, seconds: number): Promise<{ data: any; errors?: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no event within ${seconds} s`)), seconds * 1000);
  });
  try {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- as above
    return (await Promise.race([next, timeout])).value as { data: any; errors?: unknown };
  } finally {
    clearTimeout(timer);
  }
}

/** Root field arguments (one input level deep) that `naming` names, or of type ID: the paths to them. */
export function namingPaths(field: GraphQLField<unknown, unknown>, naming: ReadonlySet<string>): string[][] {
  const names = (name: string, typeName: string) => typeName === 'ID' || naming.has(name);
  const paths: string[][] = [];
  for (const arg of field.args) {
    const type = getNamedType(arg.type);
    if (names(arg.name, type.name)) paths.push([arg.name]);
    else if (isInputObjectType(type)) {
      for (const inner of Object.values(type.getFields())) if (names(inner.name, getNamedType(inner.type).name)) paths.push([arg.name, inner.name]);
    }
  }
  return paths;
}

/** The values at `path` in `args` (the items, where it is a list). */
export function valuesAt(args: Record<string, unknown>, path: readonly string[]): unknown[] {
  let value: unknown = args;
  for (const step of path) value = value === null || typeof value !== 'object' ? undefined : (value as Record<string, unknown>)[step];
  return Array.isArray(value) ? value : [value];
}

/**
 * The nested fields a session token is refused (secret key only): the audit trail, the merchant's
 * notes and settings, the plan's rules and the spend limits. Its own reads find exactly these.
 */
export const TOKEN_REFUSED: ReadonlySet<string> = new Set([
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

// ------------------------------------------------------------------ answers

/** The decoded cursors in `value` (under keys named like cursor, after, before). */
export function cursorsIn(value: unknown): string[] {
  const cursors: string[] = [];
  JSON.stringify(value ?? null, (key, inner: unknown) => {
    if (/cursor|^after$|^before$/i.test(key) && typeof inner === 'string') cursors.push(Buffer.from(inner, 'base64url').toString('utf8'));
    return inner;
  });
  return cursors;
}

/**
 * An answer and its request as text, cursors decoded (a cursor is a row's time and id in
 * base64url): a cursor the caller sent, echoed back in pageInfo, is not a leak; one it did not is.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- answers are read field by field by the assertions
export function answerOf(query: string, args: Record<string, unknown>, response: GraphQLResponse<any>): Answer {
  return {
    request: `${query} ${JSON.stringify(args)} ${cursorsIn(args).join(' ')}`.toLowerCase(),
    response,
    text: `${JSON.stringify({ data: response.data, errors: response.errors })} ${cursorsIn(response.data).join(' ')}`.toLowerCase(),
  };
}

/** The needles an answer holds that its own request did not name: what leaked. */
export const leaked = (answer: Answer, needles: ReadonlySet<string>) => [...needles].filter((needle) => answer.text.includes(needle) && !answer.request.includes(needle));

export const codesOf = (response: GraphQLResponse<unknown>) => (response.errors ?? []).map((error) => error.extensions?.code);

/** Every list in `value` is empty and every count 0. */
export function expectEmpty(value: unknown, where: string) {
  const visit = (node: unknown, key: string) => {
    if (Array.isArray(node)) expect(node, `${where}: ${key}`).toEqual([]);
    else if (node !== null && typeof node === 'object') for (const [k, v] of Object.entries(node)) visit(v, k);
    else if (key === 'totalCount') expect(node, `${where}: totalCount`).toBe(0);
  };
  visit(value, '');
}

// ------------------------------------------------------------------ a merchant's rows

/** A merchant's rows by table. */
export type Rows = Record<string, Record<string, unknown>[]>;
/** A merchant's rows by table, each row as JSON, sorted. */
export type Snapshot = Record<string, string[]>;

/** Columns that change without anyone acting on the rows: a key's last use is stamped after the request. */
const VOLATILE_COLUMNS: Record<string, readonly string[]> = { api_keys: ['last_used_at'] };

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The tables with a merchant_id column, found in the catalog (so a new table is covered). */
export async function merchantTables(connection: SqlExecutor): Promise<string[]> {
  const tables = await connection.query<{ table_name: string }>(
    `SELECT c.table_name FROM information_schema.columns c
     JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
     WHERE c.table_schema = 'public' AND c.column_name = 'merchant_id' AND t.table_type = 'BASE TABLE'
     ORDER BY c.table_name`,
  );
  return tables.map((row) => row.table_name);
}

export const jsonOf = (value: unknown) => JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));

/** Each table of merchant A's rows `now` is as it was `before` (one assertion a table, so a change names its table). */
export function expectRowsAsBefore(where: string, before: Snapshot, now: Snapshot) {
  for (const table of new Set([...Object.keys(before), ...Object.keys(now)])) {
    expect(now[table], `${where}: merchant A's ${table} changed`).toEqual(before[table]);
  }
}

/** The ids and tagged strings of `rows` (lower case). */
export function needlesOf(rows: unknown[], tag: string): Set<string> {
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

/** The needles of all a merchant's rows, and its keys' hashes (neither ids nor tagged, but the merchant's all the same). */
export function needlesOfMerchant(rows: Rows, tag: string): Set<string> {
  const needles = needlesOf(Object.values(rows).flat(), tag);
  for (const key of rows.api_keys ?? []) needles.add(String(key.hash).toLowerCase());
  return needles;
}

/** The rows that are a customer's: its own, and (transitively) those naming one of its rows' ids. */
export function rowsOfCustomer(all: Rows, customerId: string): Record<string, unknown>[] {
  const ids = new Set([customerId]);
  const found = new Set<Record<string, unknown>>();
  for (let grew = true; grew; ) {
    grew = false;
    for (const [table, rows] of Object.entries(all)) {
      if (table === 'merchants') continue;
      for (const row of rows) {
        if (found.has(row)) continue;
        if (Object.entries(row).some(([column, value]) => column !== 'merchant_id' && typeof value === 'string' && ids.has(value))) {
          found.add(row);
          if (typeof row.id === 'string') ids.add(row.id);
          grew = true;
        }
      }
    }
  }
  return [...found];
}

/**
 * What of its merchant's rows customer `own`'s token must not see: the `others`' ids and the
 * needles of their rows, less those that are in rows of its own too (and its own id).
 */
export function othersNeedles(rows: Rows, tag: string, own: string, others: readonly string[]): string[] {
  const ownSees = needlesOf(rowsOfCustomer(rows, own), tag);
  ownSees.add(own);
  return others.flatMap((id) => [...needlesOf(rowsOfCustomer(rows, id), tag), id]).filter((needle) => !ownSees.has(needle));
}
