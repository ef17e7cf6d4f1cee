import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import {
  buildClientSchema,
  getIntrospectionQuery,
  getNamedType,
  getNullableType,
  getOperationAST,
  isEnumType,
  isInputObjectType,
  isLeafType,
  isListType,
  isNonNullType,
  isObjectType,
  isScalarType,
  Kind,
  lexicographicSortSchema,
  parse,
  printSchema,
  validate,
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLField,
  type GraphQLInputType,
  type GraphQLObjectType,
  type GraphQLOutputType,
  type IntrospectionQuery,
  type SelectionSetNode,
} from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measureOperation } from '../src/graphql/limits.ts';
import { schema } from '../src/graphql/schema.ts';
import { ERROR_CODES } from '../src/shared/errors.ts';
import { startTestServer, type TestServer } from './server.ts';

/**
 * A schema-driven fuzz of the GraphQL API over HTTP. From the executable schema (checked equal to
 * what introspection over HTTP answers), random operations are built: root Query fields (and,
 * apart, Mutation fields) with random nested selections (sometimes past the depth limit, sometimes
 * past the complexity limit), arguments of the right GraphQL type drawn from the seeded data (ids
 * that exist, of nothing, of another merchant; keys, names, cursors seen in answers) or junk
 * (unicode, NUL, lone surrogates, huge text, malformed decimals and dates, big and negative ints,
 * empty lists), inline or as variables, with aliases, fragments and __typename; a few carry a
 * value of the wrong type. They run as the merchant's secret key, a customer session token, no
 * credential and a credential that is not one.
 *
 * Every answer: a 200 or a 4xx with a JSON body (never a 5xx, never a dropped connection); every
 * error typed (a code of ERROR_CODES, never INTERNAL), with no stack or SQL in it; an operation
 * graphql-js refuses is refused as VALIDATION (400), one past the depth or complexity measure as
 * QUERY_TOO_DEEP / QUERY_TOO_COMPLEX (400); `data` has exactly the selected keys, each of its
 * type (non-null never null, enums among their values, Decimal and DateTime well formed, __typename
 * the object's type); no answer shows an id of the other merchant's, and a customer token's shows
 * its own customer only. Queries write nothing; a mutation operation none of whose fields ran wrote
 * nothing (a fingerprint of every merchant table is unchanged); nothing touches the other merchant's
 * rows. Operations also travel as GETs, in batches, beside a second operation, with an unknown
 * operationName or variables that are not an object. At the end the ledgers are whole and the
 * server still answers.
 *
 * Knobs (environment): FUZZ_RUNS (scales every property's runs), FUZZ_TIME_MS (time cap of each
 * property, 10 s by default: the file runs in about 35 s), FUZZ_SEED (replay), FUZZ_STATS=1 (print
 * the codes, reasons and per-field outcomes reached), FUZZ_DEBUG=<root field> (print its errors).
 */

// ------------------------------------------------------------------ the server and its data

const MAX_DEPTH = 10;
const MAX_COMPLEXITY = 5000;
const DEFAULT_PAGE_SIZE = 20;
const RUNS = (n: number) => Math.max(1, Math.round(n * Number(process.env.FUZZ_RUNS ?? 1)));
const TIME_MS = Number(process.env.FUZZ_TIME_MS ?? 10_000);

let server: TestServer;
let merchant: { id: string; secret: string };
let other: { id: string; secret: string };
/** The merchant's key the fuzz authenticates with: never offered to revokeApiKey / rotateApiKey. */
let mainKeyId: string;
let customerToken: string;

interface Pools {
  customers: string[];
  externalIds: string[];
  holds: string[];
  apiKeys: string[];
  credentials: string[];
  gatewayHosts: string[];
  gatewayRequests: string[];
  usageEvents: string[];
  transactions: string[];
  grants: string[];
  wallets: string[];
  meters: string[];
  plans: string[];
  rules: string[];
  models: string[];
  providers: string[];
  hosts: string[];
  idempotencyKeys: string[];
  /** Ids of the other merchant's rows, of every kind. */
  foreign: string[];
  foreignKeys: string[];
  /** Cursors seen in answers (of any connection). */
  cursors: string[];
}
const pools: Pools = {
  customers: [], externalIds: [], holds: [], apiKeys: [], credentials: [], gatewayHosts: [], gatewayRequests: [], usageEvents: [],
  transactions: [], grants: [], wallets: [], meters: [], plans: [], rules: [], models: [], providers: [], hosts: [], idempotencyKeys: [],
  foreign: [], foreignKeys: [], cursors: [],
};

async function seedGql<T = any>(query: string, variables: Record<string, unknown>, token: string): Promise<T> {
  const result = await server.graphql<T>(query, variables, token);
  expect(result.errors, `seed: ${query} ${JSON.stringify(variables)}`).toBeUndefined();
  return result.data!;
}

const GRANT = 'mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { transaction { id } grant { id } wallet { id } } }';
const DEBIT = 'mutation ($input: DebitCreditsInput!) { debitCredits(input: $input) { transaction { id } } }';
const HOLD = 'mutation ($input: CreateHoldInput!) { createHold(input: $input) { hold { id } } }';

/** The other merchant: a few rows of every kind, whose ids the fuzz offers the merchant's credential. */
async function seedOther(): Promise<void> {
  const as = (query: string, variables: Record<string, unknown> = {}) => seedGql(query, variables, other.secret);
  const customer = (await as('mutation { createCustomer(input: { externalId: "theirs", email: "x@other.example" }) { id } }')).createCustomer.id;
  const grant = await as(GRANT, { input: { customerId: customer, amount: '7', kind: 'PAID', idempotencyKey: 'other-grant' } });
  const hold = (await as(HOLD, { input: { customerId: customer, amount: '1', idempotencyKey: 'other-hold', ttlSeconds: 86_400 } })).createHold.hold.id;
  const key = (await as('mutation { createApiKey(name: "theirs") { apiKey { id } } }')).createApiKey.apiKey.id;
  const credential = (await as('mutation { setProviderCredential(provider: "openai", apiKey: "sk-other-0000") { id } }')).setProviderCredential.id;
  const host = (await as('mutation { putGatewayHost(host: "other.example.com", provider: "openai-compatible") { id } }')).putGatewayHost.id;
  await as('mutation { createMeter(input: { key: "their_meter", name: "Theirs", unit: "unit", source: QUANTITY }) { id } }');
  await as('mutation { putPlan(input: { key: "their_plan", name: "Theirs" }) { id } }');
  await as('mutation { putPriceRule(input: { name: "their_rule", type: MARKUP, provider: "openai", config: { percent: "5" } }) { id } }');
  const request = randomUUID();
  await server.services.prisma.gatewayRequest.create({
    data: { id: request, merchantId: other.id, customerId: customer, method: 'POST', host: 'api.openai.com', path: '/v1/chat/completions', status: 200, outcome: 'COMPLETED', latencyMs: 5, createdAt: new Date() },
  });
  pools.foreign.push(customer, hold, key, credential, host, request, grant.grantCredits.transaction.id, grant.grantCredits.grant.id, grant.grantCredits.wallet.id);
  pools.foreignKeys.push('their_meter', 'their_plan', 'their_rule', 'theirs');
}

/** The fuzzed merchant: customers with wallets, grants, debits, holds, usage, meters, rules, plans, limits, prices, keys… */
async function seedMerchant(): Promise<void> {
  const as = (query: string, variables: Record<string, unknown> = {}) => seedGql(query, variables, merchant.secret);
  mainKeyId = (await as('{ viewer { apiKeyId } }')).viewer.apiKeyId;

  // Configuration: meters, provider prices, plans, price rules, gateway settings.
  for (const meter of [
    { key: 'out', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' },
    { key: 'searches', name: 'Searches', unit: 'search', source: 'QUANTITY', aggregation: 'SUM' },
    { key: 'old_meter', name: 'Old', unit: 'call', source: 'REQUESTS' },
  ]) await as('mutation ($input: CreateMeterInput!) { createMeter(input: $input) { id } }', { input: meter });
  await as('mutation { archiveMeter(key: "old_meter") { id } }');
  pools.meters.push('out', 'searches', 'old_meter');
  await as('mutation ($input: SetProviderPriceInput!) { setProviderPrice(input: $input) { ref } }', {
    input: { provider: 'openai', model: 'fuzz-model', rates: { perMillionTokens: { input: '0.15', output: '0.60' } }, effectiveFrom: '2024-01-01T00:00:00Z' },
  });
  pools.models.push('fuzz-model', 'gpt-4o-mini', 'claude-3-5-sonnet-20241022');
  pools.providers.push('openai', 'anthropic', 'claude', 'gemini', 'openai-compatible');
  for (const plan of [{ key: 'pro', name: 'Pro', description: 'The pro plan' }, { key: 'legacy', name: 'Legacy' }]) {
    await as('mutation ($input: PutPlanInput!) { putPlan(input: $input) { id } }', { input: plan });
  }
  await as('mutation { archivePlan(key: "legacy") { id } }');
  pools.plans.push('pro', 'legacy');
  for (const rule of [
    { name: 'markup', type: 'MARKUP', provider: 'openai', config: { percent: '20' }, effectiveFrom: '2024-01-01T00:00:00Z' },
    { name: 'search-fee', type: 'FLAT', meterKey: 'searches', config: { unitPrice: '0.01' }, effectiveFrom: '2024-01-01T00:00:00Z' },
    { name: 'pro-out', planKey: 'pro', type: 'GRADUATED', meterKey: 'out', config: { tiers: [{ upTo: 1000, unitPrice: '0.00001' }, { upTo: null, unitPrice: '0.000005' }] }, effectiveFrom: '2024-01-01T00:00:00Z' },
    { name: 'retired', type: 'FLAT', meterKey: 'out', config: { unitPrice: '0.000001' }, effectiveFrom: '2024-01-01T00:00:00Z' },
  ]) await as('mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { id } }', { input: rule });
  await as('mutation { archivePriceRule(name: "retired") { id } }');
  pools.rules.push('markup', 'search-fee', 'pro-out', 'retired');

  // Customers: one with credit in two currencies, a blocked one, one on a plan, one without credit, an archived one.
  for (const [index, extra] of [
    { name: 'Ada', email: 'ada@example.com', metadata: { tier: 'gold', tags: ['a', 'b'] } },
    { name: 'Bob', email: 'bob@example.com' },
    { name: 'Cy' },
    {},
    { name: 'Gone', email: 'gone@example.com' },
  ].entries()) {
    const externalId = `user-${index}`;
    const id = (await as('mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }', { input: { externalId, ...extra } })).createCustomer.id;
    pools.customers.push(id);
    pools.externalIds.push(externalId);
  }
  const [c0, c1, c2, c3, c4] = pools.customers as [string, string, string, string, string];
  await as('mutation ($id: ID!) { blockCustomer(id: $id, reason: "abuse") { id } }', { id: c1 });
  await as('mutation ($id: ID!) { archiveCustomer(id: $id) { id } }', { id: c4 });
  await as('mutation ($id: ID!) { setCustomerPlan(customerId: $id, planKey: "pro") { id } }', { id: c2 });

  // The ledger: grants of every kind, a debit, an adjustment, a refund, holds pending / captured / released.
  const inAWeek = new Date(Date.now() + 7 * 86_400_000).toISOString();
  for (const input of [
    { customerId: c0, amount: '100', kind: 'PAID', idempotencyKey: 'seed-g1', metadata: { order: 1 } },
    { customerId: c0, amount: '5', kind: 'PROMOTIONAL', idempotencyKey: 'seed-g2', expiresAt: inAWeek, priority: 1 },
    { customerId: c0, amount: '10', kind: 'PAID', currency: 'EUR', idempotencyKey: 'seed-g3' },
    { customerId: c1, amount: '50', kind: 'PAID', idempotencyKey: 'seed-g4' },
    { customerId: c2, amount: '20', kind: 'PLAN_INCLUDED', idempotencyKey: 'seed-g5', description: 'plan credit' },
  ]) {
    const granted = (await as(GRANT, { input })).grantCredits;
    pools.transactions.push(granted.transaction.id);
    pools.grants.push(granted.grant.id);
    pools.wallets.push(granted.wallet.id);
  }
  pools.transactions.push((await as(DEBIT, { input: { customerId: c0, amount: '3.25', idempotencyKey: 'seed-d1', description: 'a debit' } })).debitCredits.transaction.id);
  await as('mutation { adjustBalance(input: { customerId: "' + c1 + '", amount: "2.5", idempotencyKey: "seed-a1", reason: "goodwill" }) { replayed } }');
  await as('mutation { refundCredits(input: { customerId: "' + c1 + '", amount: "1", idempotencyKey: "seed-r1", reason: "refund" }) { replayed } }');
  const pending = (await as(HOLD, { input: { customerId: c0, amount: '2', idempotencyKey: 'seed-h1', ttlSeconds: 86_400, description: 'pending' } })).createHold.hold.id;
  const captured = (await as(HOLD, { input: { customerId: c0, amount: '1.5', idempotencyKey: 'seed-h2', ttlSeconds: 86_400 } })).createHold.hold.id;
  await as('mutation ($id: ID!) { captureHold(id: $id, amount: "1") { replayed } }', { id: captured });
  const released = (await as(HOLD, { input: { customerId: c1, amount: '1', idempotencyKey: 'seed-h3', ttlSeconds: 86_400 } })).createHold.hold.id;
  await as('mutation ($id: ID!) { releaseHold(id: $id) { id } }', { id: released });
  pools.holds.push(pending, captured, released);
  await as('mutation ($id: ID!) { setOverdraftLimit(customerId: $id, limit: "5") { id } }', { id: c2 });
  await as('mutation ($id: ID!) { setSpendLimit(customerId: $id, amount: "50") { id } }', { id: c0 });
  await as('mutation ($id: ID!) { setSpendLimit(customerId: $id, amount: "10", currency: "EUR") { id } }', { id: c1 });
  pools.idempotencyKeys.push('seed-g1', 'seed-g2', 'seed-d1', 'seed-a1', 'seed-r1', 'seed-h1', 'seed-h2', 'seed-u1', 'hold-capture:x', 'usage:1');

  // Usage: charged, charged by a meter rule, uncharged (no credit).
  const RECORD = 'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { event { id } } }';
  for (const input of [
    { customer: c0, idempotencyKey: 'seed-u1', usage: { provider: 'openai', model: 'fuzz-model', inputTokens: 1000, outputTokens: 500 } },
    { customer: 'user-2', idempotencyKey: 'seed-u2', quantities: { searches: 3 }, metadata: { source: 'seed' } },
    { customer: c3, idempotencyKey: 'seed-u3', usage: { provider: 'openai', model: 'fuzz-model', inputTokens: 10, outputTokens: 10 } },
  ]) pools.usageEvents.push((await as(RECORD, { input })).recordUsage.event.id);

  // Keys, credentials, hosts, gateway calls.
  pools.apiKeys.push((await as('mutation { createApiKey(name: "ci") { apiKey { id } } }')).createApiKey.apiKey.id);
  const revoked = (await as('mutation { createApiKey(name: "old", mode: TEST) { apiKey { id } } }')).createApiKey.apiKey.id;
  await as('mutation ($id: ID!) { revokeApiKey(id: $id) { id } }', { id: revoked });
  pools.apiKeys.push(revoked);
  pools.credentials.push((await as('mutation { setProviderCredential(provider: "anthropic", apiKey: "sk-ant-fuzz-1234") { id } }')).setProviderCredential.id);
  pools.gatewayHosts.push((await as('mutation { putGatewayHost(host: "llm.example.com", provider: "openai-compatible") { id } }')).putGatewayHost.id);
  pools.hosts.push('llm.example.com', 'llm.example.com:8080', '*.example.org', 'localhost', '127.0.0.1', 'exa mple.com', '');
  for (const [index, outcome] of (['COMPLETED', 'REFUSED', 'UPSTREAM_ERROR'] as const).entries()) {
    const id = randomUUID();
    await server.services.prisma.gatewayRequest.create({
      data: {
        id, merchantId: merchant.id, customerId: index === 2 ? null : c0, provider: 'openai', method: 'POST', host: 'api.openai.com', path: '/v1/chat/completions',
        status: outcome === 'REFUSED' ? 402 : outcome === 'UPSTREAM_ERROR' ? 500 : 200, outcome, errorCode: outcome === 'REFUSED' ? 'INSUFFICIENT_FUNDS' : null,
        latencyMs: 10 + index, ttfbMs: 3, usageEventId: index === 0 ? pools.usageEvents[0] : null, createdAt: new Date(Date.now() - index * 1000),
      },
    });
    pools.gatewayRequests.push(id);
  }

  customerToken = (await as('mutation ($id: ID!) { createCustomerSession(customerId: $id) { token } }', { id: c0 })).createCustomerSession.token;
}

beforeAll(async () => {
  server = await startTestServer();
  merchant = await server.createMerchant('Fuzzed merchant');
  other = await server.createMerchant('Other merchant');
  await seedOther();
  await seedMerchant();
});
afterAll(async () => {
  if (process.env.FUZZ_STATS) console.log([...stats].sort().map(([key, n]) => `${key}: ${n}`).join('\n'));
  await server?.close();
});

// ------------------------------------------------------------------ randomness

/** A small seeded generator (mulberry32): one fast-check integer drives the whole operation, so a seed replays it. */
class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from nothing');
    return items[Math.floor(this.next() * items.length)]!;
  }
  weighted<T>(...options: [number, () => T][]): T {
    let at = this.next() * options.reduce((sum, [weight]) => sum + weight, 0);
    for (const [weight, make] of options) {
      if ((at -= weight) < 0) return make();
    }
    return options[options.length - 1]![1]();
  }
  shuffle<T>(items: readonly T[]): T[] {
    const copy = [...items];
    for (let i = copy.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      [copy[i], copy[j]] = [copy[j]!, copy[i]!];
    }
    return copy;
  }
  uuid(): string {
    const hex = Array.from({ length: 32 }, () => '0123456789abcdef'[this.int(0, 15)]).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20)}`;
  }
}

// ------------------------------------------------------------------ argument values

const JUNK_TEXT = [
  '', ' ', '\t\n', '\u0000', 'a\u0000b', '\ud800', 'x\udc00y', '\u202e\u200b', '🔥💸', 'e\u0301', 'ǅ', "'; DROP TABLE customers; --", '%', '_%_', '\\',
  '"quoted"', '../../etc/passwd', '<script>alert(1)</script>', 'null', 'undefined', '{}', 'NaN', ' padded ', 'ＦＵＬＬ', '١٢٣', 'USD', 'usd', 'pro', 'out',
];
const HUGE_TEXT = ['x'.repeat(10_000), 'é'.repeat(70_000), '🔥'.repeat(40_000), 'a\u0000'.repeat(5_000), 'k'.repeat(256)];

function unicodeText(r: Rng): string {
  const ranges: [number, number][] = [[0x20, 0x7e], [0x00, 0x1f], [0xa0, 0x24f], [0x300, 0x36f], [0x590, 0x6ff], [0x4e00, 0x4fff], [0x1f300, 0x1f64f], [0xd800, 0xdfff], [0xfff0, 0xffff], [0x10fff0, 0x10ffff]];
  let text = '';
  for (let n = r.int(1, 12); n > 0; n--) {
    const [low, high] = r.pick(ranges);
    text += String.fromCodePoint(r.int(low, high));
  }
  return text;
}
const asciiWord = (r: Rng) => Array.from({ length: r.int(1, 10) }, () => 'abcdefghijklmnopqrstuvwxyz0123456789-_'[r.int(0, 37)]).join('');

/**
 * How the operation being built draws its values: `sane` mostly valid ones (to get past input checks
 * to the work behind them), `huge` often huge text, `session` the session customer's ids mostly.
 * Set by buildOperation, which runs synchronously.
 */
const flavour = { sane: false, huge: false, session: false };
/** The weight of odd values beside valid ones. */
const J = () => (flavour.sane ? 0.1 : 1);

function text(r: Rng): string {
  if (flavour.huge && r.chance(0.5)) return r.pick(HUGE_TEXT);
  return r.weighted<string>([4, () => asciiWord(r)], [2 * J(), () => unicodeText(r)], [3 * J(), () => r.pick(JUNK_TEXT)], [J(), () => r.pick(HUGE_TEXT)]);
}

const allIds = () => [
  ...pools.customers, ...pools.holds, ...pools.apiKeys, ...pools.credentials, ...pools.gatewayHosts, ...pools.gatewayRequests,
  ...pools.usageEvents, ...pools.transactions, ...pools.grants, ...pools.wallets,
];

/** The ids an ID argument names, by its field and name. */
function idPool(field: string, name: string): string[] {
  if (name === 'customerId') return pools.customers;
  const byField: Record<string, string[]> = {
    customer: pools.customers, archiveCustomer: pools.customers, unarchiveCustomer: pools.customers, blockCustomer: pools.customers,
    unblockCustomer: pools.customers, updateCustomer: pools.customers, hold: pools.holds, captureHold: pools.holds, releaseHold: pools.holds,
    revokeApiKey: pools.apiKeys, rotateApiKey: pools.apiKeys, revokeProviderCredential: pools.credentials, removeGatewayHost: pools.gatewayHosts,
    gatewayRequest: pools.gatewayRequests,
  };
  return byField[field] ?? allIds();
}

function idValue(r: Rng, field: string, name: string): unknown {
  const own = idPool(field, name);
  if (flavour.session && own === pools.customers && r.chance(0.7)) return pools.customers[0];
  return r.weighted<unknown>(
    [10, () => r.pick(own)],
    [2 * J(), () => r.pick(allIds())],
    [3 * J(), () => r.pick(pools.foreign)],
    [2 * J(), () => r.uuid()],
    [1, () => r.pick(own).toUpperCase()],
    [J(), () => ` ${r.pick(own)}\t`],
    [2 * J(), () => text(r)],
    [J(), () => r.pick([0, 1, -1, 2147483647, 12345678901234])],
  );
}

function stringValue(r: Rng, field: string, name: string): string {
  const known = (items: string[], fresh: () => string = () => asciiWord(r)) =>
    r.weighted<string>([6, () => r.pick(items)], [J(), () => r.pick(pools.foreignKeys)], [2, fresh], [2 * J(), () => text(r)]);
  switch (name) {
    case 'externalId':
    case 'externalIds':
      return known(pools.externalIds, () => `user-${r.int(0, 9)}`);
    case 'customer':
      return r.weighted<string>([4, () => r.pick(pools.customers)], [3, () => r.pick(pools.externalIds)], [J(), () => r.pick(pools.foreign)], [2 * J(), () => text(r)]);
    case 'key':
      return known(field.includes('Meter') || field === 'createMeter' ? pools.meters : field.includes('Plan') ? pools.plans : [...pools.meters, ...pools.plans], () => `k_${asciiWord(r)}`);
    case 'planKey':
      return known(pools.plans);
    case 'name':
      return field === 'archivePriceRule' ? known(pools.rules) : text(r);
    case 'model':
      return known(pools.models);
    case 'provider':
      return known(pools.providers);
    case 'host':
      return known(pools.hosts);
    case 'currency':
      return r.weighted<string>([6, () => r.pick(['USD', 'EUR'])], [2 * J(), () => r.pick(['usd', ' eur ', 'JPY', 'XXX', 'US', 'USDD', '', 'U$D', 'usd\u0000', 'ınr'])], [J(), () => text(r)]);
    case 'idempotencyKey':
      return r.weighted<string>([6, () => r.uuid()], [2, () => r.pick(pools.idempotencyKeys)], [2 * J(), () => text(r)]);
    case 'after':
    case 'before':
      return r.weighted<string>(
        [4, () => (pools.cursors.length ? r.pick(pools.cursors) : text(r))],
        [2, () => Buffer.from(r.pick(['arrayconnection:5', 'cursor:-1', '{"id":"x"}', '', `${r.uuid()}`, 'offset:99999999999'])).toString('base64')],
        [2, () => text(r)],
      );
    case 'json':
      return r.pick([
        '{}', '[]', 'null', 'not json', '{"openai":{"id":"openai","models":{}}}', '{"p":{"id":"p","models":{"m":{"id":"m","cost":{"input":0.1,"output":"x"}}}}}',
        '{"openai":{"id":"openai","models":{"fuzz-import":{"id":"fuzz-import","cost":{"input":1,"output":2}}}}}', text(r),
      ]);
    case 'apiKey':
      return r.pick(['sk-fuzz-9999', 'x', '', 'sk-' + 'z'.repeat(500), text(r)]);
    case 'email':
      return r.pick(['a@example.com', 'not-an-email', '', text(r)]);
    case 'url':
      return r.pick(['https://api.openai.com/v1/chat/completions', 'https://api.anthropic.com/v1/messages', 'ftp://nope', '', 'http://127.0.0.1:1/x', text(r)]);
    case 'body':
      return r.pick(['{}', '{"usage":{"prompt_tokens":10,"completion_tokens":5},"model":"fuzz-model"}', 'data: {}\n\n', 'not json', '', text(r)]);
    default:
      return text(r);
  }
}

const NOW = Date.now();
function dateValue(r: Rng): unknown {
  return r.weighted<unknown>(
    [5, () => new Date(NOW + r.int(-400, 30) * 86_400_000 + r.int(0, 86_399_999)).toISOString()],
    [2, () => r.pick(['2024-01-01T00:00:00Z', '2026-04-01T14:00:00+02:00', '2026-04-01', '1970-01-01T00:00:00Z', '0001-01-01T00:00:00Z', '9999-12-31T23:59:59.999Z'])],
    [3 * J(), () => r.pick(['yesterday', '', ' ', '2026-02-30T00:00:00Z', '0000-01-01T00:00:00Z', '+275760-09-13T00:00:00.000Z', '10000-01-01T00:00:00Z', '2026-13-01T00:00:00Z', '2026-06-01T25:00:00Z', '2026-06-01T12:00:00', 'T', '2026-06-01T12:00:00Z\u0000', text(r)])],
    [J(), () => r.pick([0, 1_700_000_000, -1])],
  );
}

function decimalValue(r: Rng): unknown {
  return r.weighted<unknown>(
    [6, () => r.pick(['0', '1', '2.5', '12.50', '0.000000001', '100', '999999999', '-1', '-0.5', '1000000000', '0.1234567891', ' 3 ', '00012', '0.0000000000000000001', '-0'])],
    [1, () => `${r.int(0, 10_000)}.${r.int(0, 999_999_999)}`],
    [3 * J(), () => r.pick(['', ' ', 'abc', 'NaN', 'Infinity', '-Infinity', '1e3', '1E-2', '+1', '1.', '.5', '1,5', '0x10', '1.2.3', '١', '１', '99999999999999999999999', '1'.repeat(400), '-', '--1', '1\u0000', '\ud800'])],
    [J(), () => r.pick([5, 0, -3, 2 ** 53, 1.5])],
  );
}

function intValue(r: Rng, name: string): number {
  const pick = (common: number[]) => (r.chance(0.85) ? r.pick(common) : r.pick([-2147483648, -1, 0, 2147483647, r.int(-1000, 1_000_000)]));
  switch (name) {
    case 'first':
    case 'last':
      return pick([-5, -1, 0, 1, 2, 3, 5, 10, 20, 50, 100, 101, 1000, 2147483647]);
    case 'ttlSeconds':
      return pick([-1, 0, 1, 59, 60, 300, 3600, 86_400, 604_800, 604_801, 2147483647]);
    case 'priority':
      return pick([-1, 0, 1, 5, 100]);
    case 'expireOldKeyInSeconds':
      return pick([-1, 0, 60, 86_400]);
    case 'status':
      return pick([0, 100, 200, 201, 204, 400, 429, 500, 999, -1]);
    default:
      return pick([0, 1, 10, 1000, 1_000_000, -1]);
  }
}

/** A JSON object with name-safe keys mostly, odd ones sometimes (then it can only travel as a variable). */
function jsonObject(r: Rng, depth = 0): Record<string, unknown> {
  if (depth === 0 && r.chance(0.03)) {
    let deep: unknown = 1;
    for (let n = r.pick([10, 63, 64, 65, 200]); n > 0; n--) deep = { a: deep };
    return deep as Record<string, unknown>;
  }
  const entries: [string, unknown][] = [];
  for (let n = r.int(0, 4); n > 0; n--) {
    const key = r.weighted<string>([6, () => r.pick(['a', 'tier', 'plan', 'count', 'nested', 'list'])], [1, () => r.pick(['b c', '', 'é', '__proto__', 'constructor', '\u0000', 'x'.repeat(300)])]);
    entries.push([key, jsonValue(r, depth + 1)]);
  }
  // Object.fromEntries makes "__proto__" an own key, as JSON.parse would.
  return Object.fromEntries(entries);
}
function jsonValue(r: Rng, depth: number): unknown {
  return r.weighted<unknown>(
    [3, () => text(r)],
    [3, () => r.pick([0, 1, -1, 1.5, 1e300, -0, 2 ** 53 + 2, 12345])],
    [1, () => r.chance(0.5)],
    [1, () => null],
    [depth < 3 ? 2 : 0, () => Array.from({ length: r.int(0, 3) }, () => jsonValue(r, depth + 1))],
    [depth < 3 ? 2 : 0, () => jsonObject(r, depth + 1)],
  );
}
function jsonObjectValue(r: Rng, name: string): unknown {
  const shaped: Record<string, unknown[]> = {
    config: [{ percent: '10' }, { unitPrice: '0.001', perUnits: 1000 }, { tiers: [{ upTo: 100, unitPrice: '0.01' }, { upTo: null, unitPrice: '0.005' }] }, { packageSize: 100, packagePrice: '1' }, { unitPrice: 'abc' }, { percent: -5 }, { tiers: [] }, { minimumCharge: '1', percent: '1' }],
    rates: [{ perMillionTokens: { input: '0.15', output: '0.60' } }, { perRequest: '0.01' }, { perMillionTokens: 'x' }, { perImage: '-1' }, { perMillionTokens: { input: 1e308 } }],
    quantities: [{ searches: 3 }, { searches: -1 }, { searches: '2.5' }, { nope: 1 }, { searches: 1e30 }],
    headers: [{ 'content-type': 'application/json' }, { 'x-request-id': 'abc' }],
    requestBody: [{ model: 'fuzz-model', max_tokens: 10 }],
  };
  const options = shaped[name];
  return options && r.chance(flavour.sane ? 0.95 : 0.7) ? structuredClone(r.pick(options)) : jsonObject(r);
}

/**
 * In a sane operation, inputs whose fields depend on each other are made coherent, so they reach
 * the work behind their checks (a rule's config for its type, a usage record of one kind).
 */
const SANE: Record<string, (value: Record<string, unknown>, r: Rng) => void> = {
  PutPriceRuleInput(value, r) {
    const type = r.pick(['MARKUP', 'FLAT', 'GRADUATED', 'VOLUME', 'PACKAGE']);
    value.type = type;
    const configs: Record<string, unknown> = {
      MARKUP: { percent: r.pick(['10', '0', '150.5']), ...(r.chance(0.3) ? { feePerRequest: '0.001' } : {}) },
      FLAT: { unitPrice: r.pick(['0.001', '1', '0']), ...(r.chance(0.3) ? { perUnits: r.pick([1, 1000]) } : {}) },
      GRADUATED: { tiers: [{ upTo: r.pick([10, 1000]), unitPrice: '0.01' }, { upTo: null, unitPrice: '0.005', flatFee: '1' }] },
      VOLUME: { tiers: [{ upTo: 100, unitPrice: '0.02' }, { upTo: null, unitPrice: '0.01' }] },
      PACKAGE: { packageSize: r.pick([1, 100]), packagePrice: '1' },
    };
    value.config = configs[type];
    if (type === 'MARKUP') {
      delete value.meterKey;
      value.provider = r.pick(['openai', 'anthropic', 'claude']);
    } else value.meterKey = r.pick(pools.meters);
  },
  RecordUsageInput(value, r) {
    delete value.usage;
    delete value.quantities;
    delete value.response;
    if (r.chance(0.6)) {
      value.usage = { provider: r.pick(['openai', 'anthropic']), model: r.pick(pools.models), inputTokens: r.int(0, 100_000), outputTokens: r.int(0, 10_000), ...(r.chance(0.3) ? { cachedInputTokens: r.int(0, 100) } : {}) };
    } else if (r.chance(0.7)) {
      value.quantities = { searches: r.pick([1, 3, '2.5', 0]) };
    } else {
      value.response = {
        url: 'https://api.openai.com/v1/chat/completions',
        body: JSON.stringify({ model: 'fuzz-model', usage: { prompt_tokens: r.int(0, 1000), completion_tokens: r.int(0, 1000) } }),
      };
    }
    if (r.chance(0.5)) delete value.timestamp;
    if (r.chance(0.5)) delete value.currency;
  },
  UsageNumbersInput(value, r) {
    for (const key of Object.keys(value)) if (typeof value[key] === 'number') value[key] = r.int(0, 10_000);
  },
};

/** A value of the wrong GraphQL type for wherever it goes. */
const WRONG = [1.5, 'str', true, {}, [], 2 ** 31, -(2 ** 31) - 1, 1e20, null, [[1]], { nested: { deeper: 1 } }];

interface Build {
  r: Rng;
  vars: Map<string, { type: string; value: unknown; omit: boolean }>;
  fragments: string[];
  counter: number;
  /** Arguments written inline, as variables, or either. */
  mode: 'inline' | 'variables' | 'mixed';
  /** Sometimes a value of the wrong type, a required argument left out, an unknown input field. */
  chaos: boolean;
  /** Prefer object fields: deep selections. */
  deep: boolean;
}

function inputValue(b: Build, typed: GraphQLInputType, name: string, field: string, depth: number): unknown {
  const { r } = b;
  if (b.chaos && r.chance(0.06)) return r.pick(WRONG);
  const type = getNullableType(typed);
  if (!isNonNullType(typed) && r.chance(0.06 * J())) return null;
  if (isListType(type)) {
    const length = r.weighted<number>([2, () => 0], [3, () => 1], [2, () => r.int(2, 4)]);
    return Array.from({ length }, () => inputValue(b, type.ofType, name, field, depth + 1));
  }
  if (isInputObjectType(type)) {
    const value: Record<string, unknown> = {};
    for (const inner of Object.values(type.getFields())) {
      const required = isNonNullType(inner.type) && inner.defaultValue === undefined;
      if (required ? b.chaos && r.chance(0.05) : !r.chance(0.5)) continue;
      value[inner.name] = inputValue(b, inner.type, inner.name, field, depth + 1);
    }
    if (b.chaos && r.chance(0.05)) value.bogus = 1;
    if (flavour.sane) SANE[type.name]?.(value, r);
    return value;
  }
  if (isEnumType(type)) {
    const names = type.getValues().map((v) => v.name);
    return b.chaos && r.chance(0.1) ? r.pick(['NOPE', names[0]!.toLowerCase(), '']) : r.pick(names);
  }
  switch (type.name) {
    case 'ID':
      return idValue(r, field, name);
    case 'String':
      return stringValue(r, field, name);
    case 'Int':
      return intValue(r, name);
    case 'Boolean':
      return r.chance(0.5);
    case 'Decimal':
      return decimalValue(r);
    case 'DateTime':
      return dateValue(r);
    case 'JSONObject':
      return jsonObjectValue(r, name);
    case 'JSONObjectOrText':
      // A provider request body: the object, or its text as an app that kept the raw body sends it.
      return r.chance(0.5) ? jsonObjectValue(r, name) : JSON.stringify(jsonObjectValue(r, name));
    default:
      throw new Error(`no generator for scalar ${type.name}`);
  }
}

const NAME = /^[_A-Za-z][_0-9A-Za-z]*$/;

/** An untyped value (a JSONObject's) as a GraphQL literal; null when it cannot be written inline. */
function untypedLiteral(value: unknown): string | null {
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : null;
  if (Array.isArray(value)) {
    const items = value.map(untypedLiteral);
    return items.includes(null) ? null : `[${items.join(', ')}]`;
  }
  if (typeof value === 'object') {
    const parts: string[] = [];
    for (const [key, inner] of Object.entries(value)) {
      const written = untypedLiteral(inner);
      if (!NAME.test(key) || written === null) return null;
      parts.push(`${key}: ${written}`);
    }
    return `{${parts.join(', ')}}`;
  }
  return null;
}

/** A value as a GraphQL literal of `type` (enums bare); null when it cannot be written inline. */
function literal(value: unknown, type: GraphQLInputType): string | null {
  if (value === null) return 'null';
  const nullable = getNullableType(type);
  if (isListType(nullable)) {
    if (!Array.isArray(value)) return literal(value, nullable.ofType);
    const items = value.map((item) => literal(item, nullable.ofType));
    return items.includes(null) ? null : `[${items.join(', ')}]`;
  }
  if (isInputObjectType(nullable) && typeof value === 'object' && !Array.isArray(value)) {
    const parts: string[] = [];
    for (const [key, inner] of Object.entries(value as Record<string, unknown>)) {
      const innerType = nullable.getFields()[key]?.type;
      const written = innerType ? literal(inner, innerType) : untypedLiteral(inner);
      if (written === null) return null;
      parts.push(`${key}: ${written}`);
    }
    return `{${parts.join(', ')}}`;
  }
  if (isEnumType(nullable) && typeof value === 'string' && NAME.test(value) && !['true', 'false', 'null'].includes(value)) return value;
  return untypedLiteral(value);
}

// ------------------------------------------------------------------ operations

type As = 'merchant' | 'customer' | 'anonymous' | 'junk';

interface Operation {
  kind: 'query' | 'mutation';
  as: As;
  text: string;
  variables: Record<string, unknown>;
  operationName?: string;
  /**
   * How it travels: POSTed as JSON mostly; sometimes as a GET (queries), in a batch of two, with an
   * operationName the document lacks, beside a second operation, or with variables that are not an object.
   */
  envelope: 'post' | 'get' | 'batch' | 'unknownName' | 'twoOperations' | 'variablesNotObject';
}

function argumentsText(b: Build, field: GraphQLField<unknown, unknown>): string {
  const { r } = b;
  const parts: string[] = [];
  for (const arg of field.args) {
    const required = isNonNullType(arg.type) && arg.defaultValue === undefined;
    if (required ? b.chaos && r.chance(0.04) : !r.chance(0.45)) continue;
    const value = inputValue(b, arg.type, arg.name, field.name, 0);
    const asVariable = b.mode === 'variables' || (b.mode === 'mixed' && r.chance(0.5));
    let written = asVariable ? null : literal(value, arg.type);
    if (written === null) {
      const name = `v${b.counter++}`;
      // A nullable variable given as null may be left out of the variables instead (the argument is then absent).
      const omit = !isNonNullType(arg.type) && value === null && r.chance(0.5);
      const type = b.chaos && r.chance(0.05) ? r.pick(['String', 'Int!', '[ID!]', 'JSONObject']) : String(arg.type);
      b.vars.set(name, { type, value, omit });
      written = `$${name}`;
    }
    parts.push(`${arg.name}: ${written}`);
  }
  return parts.length ? `(${parts.join(', ')})` : '';
}

function fieldText(b: Build, field: GraphQLField<unknown, unknown>, depthLeft: number, alias?: string): string {
  const named = getNamedType(field.type);
  const sub = isObjectType(named) ? ` { ${selectionText(b, named, depthLeft - 1)} }` : '';
  const directive = b.r.chance(0.04) ? ` @${b.r.pick(['include', 'skip'])}(if: ${b.r.chance(0.5)})` : '';
  return `${alias ? `${alias}: ` : ''}${field.name}${argumentsText(b, field)}${directive}${sub}`;
}

/** A selection of `type`'s fields, `depthLeft` levels deep at most (1: leaves only). */
function selectionText(b: Build, type: GraphQLObjectType, depthLeft: number): string {
  const { r } = b;
  const fields = Object.values(type.getFields());
  const leaves = fields.filter((field) => isLeafType(getNamedType(field.type)));
  const objects = fields.filter((field) => !isLeafType(getNamedType(field.type)));
  const candidates = depthLeft > 1 ? fields : leaves;
  if (candidates.length === 0) return '__typename';
  let chosen: GraphQLField<unknown, unknown>[];
  if (b.deep && depthLeft > 1 && objects.length > 0) {
    chosen = [r.pick(objects), ...r.shuffle(leaves).slice(0, r.int(0, 2))];
  } else {
    const most = r.chance(0.15) ? candidates.length : Math.min(candidates.length, 4);
    chosen = r.shuffle(candidates).slice(0, r.int(1, most));
  }
  const parts: string[] = [];
  for (const field of chosen) {
    parts.push(fieldText(b, field, depthLeft, r.chance(0.12) ? `a${b.counter++}` : undefined));
    // The same field again under another name, with arguments of its own.
    if (r.chance(0.06)) parts.push(fieldText(b, field, depthLeft, `${field.name}_${b.counter++}`));
  }
  if (r.chance(0.12)) parts.push('__typename');
  if (parts.length > 1 || r.chance(0.5)) {
    // Some of the selection moves into a fragment: inline with or without a type, or named.
    const at = r.int(0, parts.length - 1);
    const moved = parts.splice(at).join(' ');
    const how = r.int(0, 9);
    if (how === 0) parts.push(`... on ${type.name} { ${moved} }`);
    else if (how === 1) parts.push(`... { ${moved} }`);
    else if (how === 2) {
      const name = `F${b.counter++}`;
      b.fragments.push(`fragment ${name} on ${type.name} { ${moved} }`);
      parts.push(`...${name}`);
    } else parts.push(moved);
  }
  return parts.join(' ');
}

const CUSTOMER_ROOTS = ['viewer', 'merchant', 'customer', 'wallet', 'wallets'];

const ROOT_WEIGHTS: Record<string, number> = {
  // Rarely: each costs a fifth of the complexity budget, and the whole ledger is read.
  ledgerIntegrity: 0.3,
  importModelsDevPrices: 0.5,
};

function buildOperation(seed: number, kind: 'query' | 'mutation', as: As): Operation {
  const r = new Rng(seed);
  flavour.sane = r.chance(0.4);
  flavour.huge = r.chance(0.08);
  flavour.session = as === 'customer';
  const b: Build = {
    r, vars: new Map(), fragments: [], counter: 0,
    mode: r.pick(['inline', 'variables', 'mixed'] as const),
    chaos: !flavour.sane && r.chance(0.25),
    deep: false,
  };
  const root = kind === 'query' ? schema.getQueryType()! : schema.getMutationType()!;
  const depth = r.weighted<number>([6, () => r.int(2, 5)], [3, () => r.int(6, 10)], [2, () => r.int(11, 16)]);
  b.deep = depth > MAX_DEPTH ? r.chance(0.8) : r.chance(0.15);
  // A customer token may read only these roots (the rest are refused FORBIDDEN): mostly pick among them.
  const fields = Object.values(root.getFields()).filter((field) => as !== 'customer' || kind !== 'query' || r.chance(0.25) || CUSTOMER_ROOTS.includes(field.name));
  const roots = kind === 'mutation' || as === 'customer' ? r.weighted<number>([8, () => 1], [2, () => r.int(2, 3)]) : r.weighted<number>([5, () => 1], [4, () => r.int(2, 4)]);
  const chosen: GraphQLField<unknown, unknown>[] = [];
  while (chosen.length < roots) {
    const field = r.pick(fields);
    if ((ROOT_WEIGHTS[field.name] ?? 1) < 1 && !r.chance(ROOT_WEIGHTS[field.name]!)) continue;
    chosen.push(field);
  }
  const seen = new Set<string>();
  const parts = chosen.map((field) => {
    // A root field chosen twice needs a name of its own.
    const alias = seen.has(field.name) || r.chance(0.15) ? `r${b.counter++}` : undefined;
    seen.add(field.name);
    return fieldText(b, field, depth, alias);
  });
  if (r.chance(0.08)) parts.push('__typename');
  const definitions = [...b.vars].map(([name, { type }]) => `$${name}: ${type}`);
  const variables = Object.fromEntries([...b.vars].filter(([, { omit }]) => !omit).map(([name, { value }]) => [name, value]));
  const operationName = r.chance(0.4) ? `Fuzz${r.int(0, 999)}` : undefined;
  const head = kind === 'query' && !operationName && definitions.length === 0 && r.chance(0.5)
    ? ''
    : `${kind}${operationName ? ` ${operationName}` : ''}${definitions.length ? `(${definitions.join(', ')})` : ''} `;
  let text = `${head}{ ${parts.join(' ')} }${b.fragments.map((fragment) => `\n${fragment}`).join('')}`;
  const envelope = r.weighted<Operation['envelope']>(
    [40, () => 'post'], [kind === 'query' ? 3 : 0, () => 'get'], [1, () => 'batch'], [1, () => 'unknownName'], [1, () => 'twoOperations'], [1, () => 'variablesNotObject'],
  );
  if (envelope === 'twoOperations') text += '\nquery Other { __typename }';
  const named = envelope === 'unknownName' ? { operationName: 'NoSuchOperation' } : operationName && (envelope === 'twoOperations' ? r.chance(0.5) : r.chance(0.5)) ? { operationName } : {};
  return { kind, as, text, variables, envelope, ...named };
}

// ------------------------------------------------------------------ answers

interface AnswerError {
  message: string;
  path?: (string | number)[];
  locations?: unknown;
  extensions?: { code?: unknown; reason?: unknown; [key: string]: unknown };
}
interface Answer {
  status: number;
  data: any;
  errors: AnswerError[] | undefined;
}

const TYPED_CODES: readonly string[] = ERROR_CODES.filter((code) => code !== 'INTERNAL');
/** Codes (and reasons) seen, by where: printed with FUZZ_STATS=1, and checked to be typed. */
const stats = new Map<string, number>();
const count = (key: string) => stats.set(key, (stats.get(key) ?? 0) + 1);

/** What must never reach a client: a stack frame, SQL or the database's own words, a file of ours. */
const LEAKS: RegExp[] = [
  /\n\s+at [^\n]+:\d+:\d+/, /\bat (?:async )?[\w.<>]+ \([^)]*:\d+:\d+\)/, /\.(?:ts|js|mjs|cjs):\d+/, /node_modules/, /\/work\//,
  /\bSELECT\b[\s\S]*\bFROM\b/i, /\bINSERT INTO\b/i, /\bUPDATE\s+"?\w+"?\s+SET\b/i, /\bDELETE FROM\b/i, /\bduplicate key value\b/i,
  /\bviolates\b[\s\S]*\bconstraint\b/i, /invalid input syntax for type/i, /\bprisma\b/i, /\bpglite\b/i, /\bP20\d\d\b/, /\bSQLSTATE\b/i, /\bERROR:\s/,
  /relation "\w+" does not exist/i, /column "\w+"/i, /out of range for type/i, /\bTypeError\b|\bRangeError\b|\bReferenceError\b/, /Cannot read propert/i, /is not a function/,
  /\bundefined\b.*\bnull\b.*\bobject\b/i,
];

function tokenFor(as: As, r: Rng): string | undefined {
  if (as === 'merchant') return merchant.secret;
  if (as === 'customer') return customerToken;
  if (as === 'anonymous') return undefined;
  return r.pick([
    'sk_test_nope', `sk_live_${'x'.repeat(40)}`, `${customerToken.slice(0, -4)}AAAA`, `${merchant.secret}x`, randomUUID(), 'null', 'Bearer', 'cst_', `${'a'.repeat(5000)}`,
  ]);
}

async function send(operation: Operation, token: string | undefined): Promise<Answer> {
  const label = describeOperation(operation);
  const request = { query: operation.text, variables: operation.variables, ...(operation.operationName ? { operationName: operation.operationName } : {}) };
  const auth: Record<string, string> = token !== undefined ? { authorization: `Bearer ${token}` } : {};
  let response: Response;
  try {
    const url = `${server.url}/graphql?${new URLSearchParams({ query: request.query, variables: JSON.stringify(request.variables), ...(request.operationName ? { operationName: request.operationName } : {}) })}`;
    // A GET names its operation in the URL: only when that stays short (a long URL is refused by Node's parser, not by us).
    if (operation.envelope === 'get' && url.length < 4000) {
      response = await fetch(url, { headers: { accept: 'application/json', 'apollo-require-preflight': 'true', ...auth } });
    } else {
      const body = operation.envelope === 'batch' ? [request, request] : operation.envelope === 'variablesNotObject' ? { ...request, variables: ['not', 'an', 'object'] } : request;
      response = await fetch(`${server.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify(body) });
    }
  } catch (error) {
    throw new Error(`the connection dropped: ${String(error)}\n${label}`, { cause: error });
  }
  const body = await response.text();
  expect(response.status === 200 || (response.status >= 400 && response.status < 500), `HTTP ${response.status} ${body.slice(0, 2000)}\n${label}`).toBe(true);
  let parsed: { data?: unknown; errors?: AnswerError[] };
  try {
    parsed = JSON.parse(body) as typeof parsed;
  } catch {
    throw new Error(`HTTP ${response.status} answered with a body that is not JSON: ${body.slice(0, 500)}\n${label}`);
  }
  expect(typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed), `a JSON object: ${body.slice(0, 500)}\n${label}`).toBe(true);
  return { status: response.status, data: parsed.data, errors: parsed.errors };
}

function describeOperation(operation: Operation): string {
  const variables = JSON.stringify(operation.variables, (_key, value: unknown) => (typeof value === 'string' && value.length > 200 ? `${value.slice(0, 40)}…(${value.length} chars)` : value));
  const text = operation.text.replace(/"((?:[^"\\]|\\.){200,})"/g, (_all, inner: string) => `"${inner.slice(0, 40)}…(${inner.length} chars)"`);
  return `as ${operation.as}, ${operation.envelope}${operation.operationName ? ` (operationName ${operation.operationName})` : ''}:\n${text}\nvariables: ${variables}`;
}

/** Every error typed and clean; returns the answer's description for further messages. */
function checkErrors(operation: Operation, answer: Answer): string {
  const label = `${describeOperation(operation)}\n→ HTTP ${answer.status} ${JSON.stringify(answer.errors ?? null)?.slice(0, 3000)}`;
  expect(answer.errors !== undefined || answer.data !== undefined, `an answer carries data or errors\n${label}`).toBe(true);
  if (answer.errors !== undefined) {
    expect(Array.isArray(answer.errors) && answer.errors.length > 0, `errors is a non-empty list\n${label}`).toBe(true);
  }
  for (const error of answer.errors ?? []) {
    const code = error.extensions?.code;
    count(`${operation.kind} as ${operation.as}: ${String(code)}${error.extensions?.reason ? `/${String(error.extensions.reason)}` : ''}`);
    expect(typeof error.message === 'string' && error.message.length > 0, `every error has a message\n${label}`).toBe(true);
    expect(TYPED_CODES, `every error has a typed code (never INTERNAL)\n${label}`).toContain(code);
    expect(error.extensions, `no stack trace in extensions\n${label}`).not.toHaveProperty('stacktrace');
    expect(error.extensions, `no exception in extensions\n${label}`).not.toHaveProperty('exception');
    for (const leak of LEAKS) expect(error.message, `no internals in messages (${leak})\n${label}`).not.toMatch(leak);
  }
  if (answer.status !== 200) {
    expect(answer.errors?.length, `a ${answer.status} carries errors\n${label}`).toBeGreaterThan(0);
    expect(answer.data ?? null, `a ${answer.status} carries no data\n${label}`).toBeNull();
  }
  return label;
}

// ------------------------------------------------------------------ the shape of `data`

const DECIMAL_OUT = /^-?\d+(\.\d+)?$/;
const DATETIME_OUT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/;

function skipped(node: { directives?: readonly { name: { value: string }; arguments?: readonly { value: { kind: string; value?: unknown } }[] }[] }): boolean {
  for (const directive of node.directives ?? []) {
    const value = directive.arguments?.[0]?.value;
    if (value?.kind !== Kind.BOOLEAN) continue;
    if (directive.name.value === 'skip' && value.value === true) return true;
    if (directive.name.value === 'include' && value.value === false) return true;
  }
  return false;
}

/** The fields a selection set asks of an object, by response key (fragments spread, skipped fields left out). */
function collectFields(selectionSet: SelectionSetNode, fragments: Map<string, FragmentDefinitionNode>, into = new Map<string, { name: string; sets: SelectionSetNode[] }>()) {
  for (const selection of selectionSet.selections) {
    if (skipped(selection)) continue;
    if (selection.kind === Kind.FIELD) {
      const key = selection.alias?.value ?? selection.name.value;
      const entry = into.get(key) ?? { name: selection.name.value, sets: [] };
      if (selection.selectionSet) entry.sets.push(selection.selectionSet);
      into.set(key, entry);
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      collectFields(selection.selectionSet, fragments, into);
    } else {
      collectFields(fragments.get(selection.name.value)!.selectionSet, fragments, into);
    }
  }
  return into;
}

/** Values answers show that later operations may name: each type's id (or key, or name) goes to its pool. */
const HARVEST: Record<string, Partial<Record<string, keyof Pools>>> = {
  Customer: { id: 'customers', externalId: 'externalIds' },
  Hold: { id: 'holds', idempotencyKey: 'idempotencyKeys' },
  ApiKey: { id: 'apiKeys' },
  ProviderCredential: { id: 'credentials' },
  GatewayHost: { id: 'gatewayHosts', host: 'hosts' },
  GatewayRequest: { id: 'gatewayRequests' },
  UsageEvent: { id: 'usageEvents', idempotencyKey: 'idempotencyKeys' },
  LedgerTransaction: { id: 'transactions', idempotencyKey: 'idempotencyKeys' },
  CreditGrant: { id: 'grants' },
  Wallet: { id: 'wallets' },
  Meter: { key: 'meters' },
  Plan: { key: 'plans' },
  PriceRule: { name: 'rules', model: 'models', provider: 'providers' },
  ProviderPrice: { model: 'models', provider: 'providers' },
};
const POOL_CAP = 80;

/** Who the answer being checked is for: what it may show. */
const reader: { as: As } = { as: 'merchant' };

/** No answer shows another merchant's row, and a customer's token sees its own customer only. */
function checkTenancy(type: GraphQLObjectType, field: string, value: unknown, path: string, label: string): void {
  if (typeof value !== 'string') return;
  const id = value.toLowerCase();
  const fieldType = getNamedType(type.getFields()[field]!.type);
  if (fieldType.name === 'ID') expect(pools.foreign, `${path}: another merchant's id\n${label}`).not.toContain(id);
  if (reader.as !== 'customer') return;
  if (field === 'customerId' || (type.name === 'Customer' && field === 'id')) {
    expect(id, `${path}: a customer token sees its own customer only\n${label}`).toBe(pools.customers[0]);
  }
  if (type.name === 'Merchant' && field === 'id') expect(id, `${path}\n${label}`).toBe(merchant.id);
}

function harvest(type: string, field: string, value: unknown): void {
  const pool = HARVEST[type]?.[field];
  if (!pool || typeof value !== 'string' || value === mainKeyId) return;
  const items = pools[pool];
  if (items.length < POOL_CAP && !items.includes(value)) items.push(value);
}

function checkObject(type: GraphQLObjectType, sets: SelectionSetNode[], value: unknown, path: string, fragments: Map<string, FragmentDefinitionNode>, label: string): void {
  expect(typeof value === 'object' && value !== null && !Array.isArray(value), `${path} is an object\n${label}`).toBe(true);
  const fields = new Map<string, { name: string; sets: SelectionSetNode[] }>();
  for (const set of sets) collectFields(set, fragments, fields);
  const object = value as Record<string, unknown>;
  expect(Object.keys(object).sort(), `${path} has exactly the selected keys\n${label}`).toEqual([...fields.keys()].sort());
  for (const [key, { name, sets: inner }] of fields) {
    const at = `${path}.${key}`;
    if (name === '__typename') {
      expect(object[key], `${at}\n${label}`).toBe(type.name);
      continue;
    }
    checkValue(type.getFields()[name]!.type, inner, object[key], at, fragments, label);
    checkTenancy(type, name, object[key], at, label);
    harvest(type.name, name, object[key]);
  }
}

function checkValue(type: GraphQLOutputType, sets: SelectionSetNode[], value: unknown, path: string, fragments: Map<string, FragmentDefinitionNode>, label: string): void {
  if (isNonNullType(type)) {
    expect(value, `${path} is non-null\n${label}`).not.toBeNull();
    return checkValue(type.ofType, sets, value, path, fragments, label);
  }
  if (value === null) return;
  if (isListType(type)) {
    expect(Array.isArray(value), `${path} is a list\n${label}`).toBe(true);
    (value as unknown[]).forEach((item, index) => checkValue(type.ofType, sets, item, `${path}[${index}]`, fragments, label));
    return;
  }
  if (isObjectType(type)) return checkObject(type, sets, value, path, fragments, label);
  if (isEnumType(type)) {
    expect(type.getValues().map((v) => v.name), `${path} is a ${type.name}\n${label}`).toContain(value);
    return;
  }
  if (!isScalarType(type)) throw new Error(`unexpected output type ${String(type)}`);
  const ok: Record<string, (v: unknown) => boolean> = {
    ID: (v) => typeof v === 'string' && v.length > 0,
    String: (v) => typeof v === 'string',
    Int: (v) => Number.isInteger(v),
    Boolean: (v) => typeof v === 'boolean',
    Decimal: (v) => typeof v === 'string' && DECIMAL_OUT.test(v),
    DateTime: (v) => typeof v === 'string' && DATETIME_OUT.test(v) && !Number.isNaN(Date.parse(v)),
    JSONObject: (v) => typeof v === 'object' && v !== null && !Array.isArray(v),
  };
  expect(ok[type.name]?.(value), `${path} is a ${type.name}: ${JSON.stringify(value)?.slice(0, 200)}\n${label}`).toBe(true);
}

/** Cursors seen in answers, for later operations to page with (in any connection). */
function harvestCursors(value: unknown): void {
  if (Array.isArray(value)) return value.forEach(harvestCursors);
  if (typeof value !== 'object' || value === null) return;
  for (const [key, inner] of Object.entries(value)) {
    if (typeof inner === 'string' && /cursor$/i.test(key) && pools.cursors.length < 200 && !pools.cursors.includes(inner)) pools.cursors.push(inner);
    else harvestCursors(inner);
  }
}

/** The answer as predicted from the document (parse, validation, limits), and `data` against the selection. */
function checkAnswer(operation: Operation, answer: Answer): { label: string; document: DocumentNode | null } {
  const label = checkErrors(operation, answer);
  reader.as = operation.as;
  const codes = (answer.errors ?? []).map((error) => `${String(error.extensions?.code)}/${String(error.extensions?.reason ?? '')}`);
  let document: DocumentNode | null = null;
  const malformed = operation.envelope === 'batch' || operation.envelope === 'variablesNotObject';
  if (operation.as === 'junk' || malformed) {
    // A request that is not one GraphQL request, and a credential that is not one, are refused before the operation is read.
    expect([400, 401], label).toContain(answer.status);
    const expected = answer.status === 401 ? 'UNAUTHENTICATED' : 'VALIDATION';
    expect(operation.as === 'junk' || expected === 'VALIDATION', label).toBe(true);
    expect(malformed || expected === 'UNAUTHENTICATED', label).toBe(true);
    expect(codes.map((code) => code.split('/')[0]), label).toEqual([expected]);
    return { label, document };
  }
  try {
    document = parse(operation.text);
  } catch {
    // A literal graphql-js cannot read (a lone surrogate's escape): refused before anything runs.
    expect(answer.status, label).toBe(400);
    expect(codes, label).toEqual(['VALIDATION/GRAPHQL_PARSE_FAILED']);
    return { label, document };
  }
  const invalid = validate(schema, document);
  if (invalid.length > 0) {
    expect(answer.status, label).toBe(400);
    expect(new Set(codes), `refused as graphql-js refuses it: ${invalid.map((e) => e.message).join('; ').slice(0, 500)}\n${label}`).toEqual(new Set(['VALIDATION/GRAPHQL_VALIDATION_FAILED']));
    return { label, document };
  }
  const definition = getOperationAST(document, operation.operationName);
  if (!definition) {
    // No operationName naming one of two operations, or one naming none.
    expect(answer.status, label).toBe(400);
    expect(codes, label).toEqual(['VALIDATION/OPERATION_RESOLUTION_FAILURE']);
    return { label, document };
  }
  const cost = measureOperation(schema, document, definition, operation.variables, DEFAULT_PAGE_SIZE);
  count(`depth ${cost.depth > MAX_DEPTH ? 'over' : 'within'} the limit, complexity ${cost.complexity > MAX_COMPLEXITY ? 'over' : 'within'}`);
  if (cost.depth > MAX_DEPTH) {
    expect(answer.status, label).toBe(400);
    expect(codes, label).toEqual(['VALIDATION/QUERY_TOO_DEEP']);
    return { label, document };
  }
  if (cost.complexity > MAX_COMPLEXITY) {
    expect(answer.status, label).toBe(400);
    expect(codes, label).toEqual(['VALIDATION/QUERY_TOO_COMPLEX']);
    return { label, document };
  }
  expect(codes.filter((code) => code.endsWith('/QUERY_TOO_DEEP')), label).toEqual([]);
  if (answer.status !== 200) {
    // Valid and within the limits: only its variables can be refused before it runs.
    expect(answer.status, label).toBe(400);
    for (const code of codes) expect(code, label).toBe('VALIDATION/BAD_USER_INPUT');
    return { label, document };
  }
  const root = operation.kind === 'query' ? schema.getQueryType()! : schema.getMutationType()!;
  const fragments = new Map(document.definitions.filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION).map((d) => [d.name.value, d]));
  const rootKeys = [...collectFields(definition.selectionSet, fragments).keys()];
  for (const error of answer.errors ?? []) {
    if (error.path) expect(rootKeys, `an error's path starts at a root field\n${label}`).toContain(error.path[0]);
  }
  for (const [key, { name }] of collectFields(definition.selectionSet, fragments)) {
    const error = (answer.errors ?? []).find((e) => e.path?.[0] === key);
    count(`  ${operation.kind} ${name} as ${operation.as}: ${error ? `${String(error.extensions?.code)}${error.path!.length > 1 ? ' (below)' : ''}` : answer.data === null ? 'not run' : 'ok'}`);
    if (process.env.FUZZ_DEBUG === name && error) console.log(`${name}: ${error.message.slice(0, 300)}`);
  }
  if (answer.data === null) {
    expect(answer.errors?.length, `data null only with errors\n${label}`).toBeGreaterThan(0);
  } else {
    checkObject(root, [definition.selectionSet], answer.data, 'data', fragments, label);
    harvestCursors(answer.data);
  }
  return { label, document };
}

// ------------------------------------------------------------------ what the database holds

/** Every table of a merchant, as a count and a hash of its rows (less the times a read may touch). */
const TABLES = [
  'customers', 'wallets', 'ledger_accounts', 'ledger_transactions', 'ledger_entries', 'credit_grants', 'holds', 'meters', 'provider_prices',
  'price_rules', 'plans', 'customer_plans', 'usage_events', 'usage_period_totals', 'provider_credentials', 'gateway_hosts', 'gateway_requests',
  'gateway_jobs', 'spend_limits', 'api_keys',
];
const FINGERPRINT_SQL = [...TABLES.map((table) => [table, 'merchant_id']), ['merchants', 'id']]
  .map(([table, column]) => `SELECT '${table}' AS t, count(*)::int AS n,
      md5(coalesce(string_agg((to_jsonb(x) - 'updated_at' - 'last_used_at')::text, '|' ORDER BY (to_jsonb(x) - 'updated_at' - 'last_used_at')::text), '')) AS h
    FROM ${table} x WHERE ${column} = $1`)
  .join('\nUNION ALL\n');

async function fingerprint(merchantId: string): Promise<Record<string, string>> {
  const rows = await server.services.db.withConnection((connection) => connection.query<{ t: string; n: number; h: string }>(FINGERPRINT_SQL, [merchantId]));
  return Object.fromEntries(rows.map((row) => [row.t, `${row.n} rows ${row.h}`]));
}

/** Whether no mutation of an operation ran: refused whole, or its first field's resolver failed (which stops the rest: every mutation field is non-null). */
function nothingSucceeded(answer: Answer, document: DocumentNode | null, operation: Operation): boolean {
  if (answer.status !== 200 || !document) return true;
  const definition = getOperationAST(document, operation.operationName);
  if (!definition) return true;
  const fragments = new Map(document.definitions.filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION).map((d) => [d.name.value, d]));
  const first = [...collectFields(definition.selectionSet, fragments).entries()].find(([, { name }]) => name !== '__typename')?.[0];
  // An error at the field itself: its resolver failed. One below it (a nested field's argument) came after the write.
  return first !== undefined && (answer.errors ?? []).some((error) => error.path?.length === 1 && error.path[0] === first);
}

async function integrity(token: string) {
  const answer = await server.graphql<{ ledgerIntegrity: { ok: boolean; violations: string[]; walletsChecked: number; transactionsChecked: number } }>(
    '{ ledgerIntegrity { ok violations walletsChecked transactionsChecked } }', {}, token);
  expect(answer.errors).toBeUndefined();
  return answer.data!.ledgerIntegrity;
}

// ------------------------------------------------------------------ the properties

const seedArb = fc.integer({ min: 0, max: 2 ** 31 - 1 });
const params = (numRuns: number) => ({
  numRuns: RUNS(numRuns),
  seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined,
  // Shrinking a seed means little: the failing operation is printed whole instead.
  endOnFailure: true,
});

/** Runs `property` on fresh seeds until `numRuns` or the time cap, whichever comes first. */
async function fuzz(numRuns: number, property: (seed: number) => Promise<void>): Promise<number> {
  const deadline = Date.now() + TIME_MS;
  let ran = 0;
  await fc.assert(
    fc.asyncProperty(seedArb, async (seed) => {
      if (Date.now() > deadline) return;
      ran++;
      await property(seed);
    }),
    params(numRuns),
  );
  return ran;
}

/** Runs random queries as `as`; every 25 of them, checks that they wrote nothing (naming the 25 when they did). */
async function fuzzQueries(numRuns: number, as: (seed: number) => As): Promise<number> {
  let recent: string[] = [];
  let before = await fingerprint(merchant.id);
  const wroteNothing = async () => {
    const after = await fingerprint(merchant.id);
    expect(after, `queries wrote nothing; the last ones:\n${recent.join('\n---\n')}`).toEqual(before);
    recent = [];
    before = after;
  };
  const ran = await fuzz(numRuns, async (seed) => {
    const operation = buildOperation(seed, 'query', as(seed));
    const answer = await send(operation, tokenFor(operation.as, new Rng(seed ^ 0x5bd1e995)));
    recent.push(describeOperation(operation));
    checkAnswer(operation, answer);
    if (recent.length >= 25) await wroteNothing();
  });
  await wroteNothing();
  return ran;
}

describe('schema-driven GraphQL fuzz', () => {
  it('the schema served over HTTP is the executable schema the fuzz is built from', async () => {
    const answer = await server.graphql<IntrospectionQuery>(getIntrospectionQuery(), {}, merchant.secret);
    expect(answer.errors).toBeUndefined();
    const served = printSchema(lexicographicSortSchema(buildClientSchema(answer.data!)));
    expect(served).toBe(printSchema(lexicographicSortSchema(schema)));
  });

  it('random queries as the secret key: typed errors only, data as selected', async () => {
    const ran = await fuzzQueries(1500, () => 'merchant');
    expect(ran).toBeGreaterThan(20);
  }, 60_000);

  it('random queries as a customer session token', async () => {
    const ran = await fuzzQueries(700, () => 'customer');
    expect(ran).toBeGreaterThan(20);
  }, 60_000);

  it('random queries with no credential, or one that is not a credential', async () => {
    const ran = await fuzzQueries(200, (seed) => (seed % 2 === 0 ? 'anonymous' : 'junk'));
    expect(ran).toBeGreaterThan(10);
  }, 60_000);

  it('random mutations: typed errors only, and one whose fields all failed wrote nothing', async () => {
    const theirs = await fingerprint(other.id);
    const ran = await fuzz(900, async (seed) => {
      const as: As = seed % 10 < 7 ? 'merchant' : seed % 10 < 9 ? 'customer' : 'anonymous';
      // The session's customer may have been archived by an earlier run: its token would be refused whole.
      if (as === 'customer') await server.services.customers.unarchive(merchant.id, pools.customers[0]!);
      const operation = buildOperation(seed, 'mutation', as);
      const before = await fingerprint(merchant.id);
      const answer = await send(operation, tokenFor(as, new Rng(seed)));
      const { label, document } = checkAnswer(operation, answer);
      if (nothingSucceeded(answer, document, operation)) {
        expect(await fingerprint(merchant.id), `a refused mutation wrote nothing\n${label}`).toEqual(before);
      }
    });
    expect(ran).toBeGreaterThan(20);
    // Nothing the merchant's credential did touched the other merchant's rows.
    expect(await fingerprint(other.id)).toEqual(theirs);
  }, 90_000);

  it('afterwards: the ledgers are whole and the server still answers', async () => {
    const ours = await integrity(merchant.secret);
    expect(ours.violations).toEqual([]);
    expect(ours.ok).toBe(true);
    expect(ours.walletsChecked).toBeGreaterThan(0);
    const theirs = await integrity(other.secret);
    expect(theirs.ok).toBe(true);
    const again = await server.graphql<{ viewer: { kind: string } }>('{ viewer { kind merchant { id } } }', {}, merchant.secret);
    expect(again.status).toBe(200);
    expect(again.data?.viewer.kind).toBe('MERCHANT');
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });
});
