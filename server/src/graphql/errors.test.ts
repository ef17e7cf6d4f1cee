import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/server.ts';
import { execute, GraphQLError, parse, validate } from 'graphql';
import type { Logger } from '../shared/logger.ts';
import { formatGraphQLError } from './errors.ts';
import { inputFieldOf } from './input-field.ts';
import { schema } from './schema.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

describe('inputFieldOf', () => {
  /** graphql-js's own errors for `query`, as both Apollo and graphql-ws see them: validation's, else execution's. */
  const errorsOf = async (query: string, variableValues: Record<string, unknown> = {}) => {
    const document = parse(query);
    const invalid = validate(schema, document);
    if (invalid.length > 0) return invalid;
    const result = await execute({ schema, document, variableValues, contextValue: {} });
    return [...(result.errors ?? [])];
  };
  const fieldOf = async (query: string, variableValues?: Record<string, unknown>) => inputFieldOf((await errorsOf(query, variableValues))[0]);

  it('names the input field a variable failed at, as VALIDATION errors name fields', async () => {
    const grant = 'mutation ($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }';
    expect(await fieldOf(grant, { input: { customerId: 'x', amount: '1', kind: 'NOPE', idempotencyKey: 'k' } })).toBe('kind');
    expect(await fieldOf('query ($first: Int) { customers(first: $first) { totalCount } }', { first: 'ten' })).toBe('first');
    expect(await fieldOf('query ($c: ID!) { customer(id: $c) { id } }', {})).toBe('id');
    const usage = { customer: 'c', idempotencyKey: 'k', usage: { inputTokens: 'many' } };
    expect(await fieldOf('mutation ($u: RecordUsageInput!) { recordUsage(input: $u) { event { id } } }', { u: usage })).toBe('usage.inputTokens');
    expect(await fieldOf('mutation ($n: Int) { recordUsage(input: { customer: "c", idempotencyKey: "k", usage: { inputTokens: $n } }) { event { id } } }', { n: 1.5 })).toBe('usage.inputTokens');
    expect(await fieldOf('mutation { recordUsage(input: { customer: "c", idempotencyKey: "k", usage: { inputTokens: 1.5 } }) { event { id } } }')).toBe('usage.inputTokens');
  });

  it('names the field an input object lacks or does not define, inline or in a variable', async () => {
    expect(await fieldOf('mutation { createCustomer(input: { externalId: "x", plan: "gold" }) { id } }')).toBe('plan');
    expect(await fieldOf('mutation ($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }', { i: { externalId: 'x', plan: 'gold' } })).toBe('plan');
    expect(await fieldOf('mutation { grantCredits(input: { customerId: "x", kind: PAID, idempotencyKey: "k" }) { replayed } }')).toBe('amount');
    expect(await fieldOf('mutation ($g: GrantCreditsInput!) { grantCredits(input: $g) { replayed } }', { g: { customerId: 'x', kind: 'PAID', idempotencyKey: 'k' } })).toBe('amount');
    expect(await fieldOf('query ($f: CustomerFilter) { customers(filter: $f) { totalCount } }', { f: { nope: 1 } })).toBe('filter.nope');
  });

  it('reads the path only from where graphql-js writes it, whatever text the value holds', async () => {
    const query = 'query ($f: CustomerFilter) { customers(filter: $f) { totalCount } }';
    expect(await fieldOf(query, { f: { createdAfter: 'x at "f.email"' } })).toBe('filter.createdAfter');
    expect(await fieldOf(query, { f: { externalIds: ['a', 5] } })).toBe('filter.externalIds.1');
  });

  it('names nothing it cannot find, and never throws', async () => {
    expect(inputFieldOf((await errorsOf('{ viewer { kind secretSauce } }'))[0])).toBeUndefined();
    expect(inputFieldOf(new GraphQLError('Syntax Error: Unexpected Name "x".'))).toBeUndefined();
    expect(inputFieldOf(new Error('not GraphQL'))).toBeUndefined();
    expect(inputFieldOf(undefined)).toBeUndefined();
    // A message naming a variable, on a node under no argument.
    const stray = parse('{ a }').definitions[0]!;
    expect(inputFieldOf(new GraphQLError('Variable "$a" got invalid value 1; x', { nodes: stray }))).toBeUndefined();
  });

  it('gives graphql-ws, whose errors carry no code, the field too', async () => {
    const [error] = await errorsOf('query ($t: DateTime) { customers(filter: { createdAfter: $t }) { totalCount } }', { t: 'soon' });
    const logger = { error: () => undefined } as unknown as Logger;
    expect(formatGraphQLError(error!.toJSON(), error, logger).extensions).toEqual({ code: 'VALIDATION', field: 'filter.createdAfter' });
  });
});

describe('a variable of the wrong type', () => {
  it('is a VALIDATION error naming the field, as errors from the resolvers are', async () => {
    const merchant = await server.createMerchant();
    const grant = 'mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { replayed } }';
    const badKind = await server.graphql(grant, { input: { customerId: 'x', amount: '1', kind: 'NOPE', idempotencyKey: 'k' } }, merchant.secret);
    expect(badKind.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'kind' });
    const badFirst = await server.graphql('query($first: Int) { customers(first: $first) { totalCount } }', { first: 'ten' }, merchant.secret);
    expect(badFirst.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'first' });
    const missing = await server.graphql(grant, {}, merchant.secret);
    expect(missing.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'input' });
  });
});

describe('a JSONObject written inline', () => {
  it('is taken as passed in a variable, variables inside it included; anything but an object is VALIDATION', async () => {
    const merchant = await server.createMerchant();
    const created = await server.graphql<any>(
      'mutation ($seats: Int) { createCustomer(input: { externalId: "user_123", metadata: { plan: "pro", seats: $seats, tags: ["a", 1, null] } }) { metadata } }',
      { seats: 5 },
      merchant.secret,
    );
    expect(created.errors).toBeUndefined();
    expect(created.data.createCustomer.metadata).toEqual({ plan: 'pro', seats: 5, tags: ['a', 1, null] });
    const notObject = await server.graphql('mutation { createCustomer(input: { externalId: "user_124", metadata: "pro" }) { id } }', {}, merchant.secret);
    expect(notObject.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION' });
  });

  it('refuses an integer no JSON number holds exactly, as VALIDATION naming metadata; what a double holds is stored as written', async () => {
    const merchant = await server.createMerchant();
    const create = (externalId: string, metadata: string) =>
      server.graphql<any>(`mutation { createCustomer(input: { externalId: "${externalId}", metadata: ${metadata} }) { metadata } }`, {}, merchant.secret);
    for (const metadata of ['{ n: 12345678901234567891 }', '{ n: 9007199254740992 }', '{ deep: { list: [1, -9007199254740993] } }']) {
      const refused = await create('rounded', metadata);
      expect(refused.errors?.[0]?.extensions, metadata).toMatchObject({ code: 'VALIDATION', field: 'metadata' });
      expect(refused.errors?.[0]?.message, metadata).toMatch(/as a string/);
    }
    expect(await server.services.customers.count(merchant.id, {})).toBe(0);
    const kept = await create('exact', '{ max: 9007199254740991, min: -9007199254740991, tenth: 0.1, big: 1.5e300, asText: "12345678901234567891" }');
    expect(kept.errors).toBeUndefined();
    expect(kept.data.createCustomer.metadata).toEqual({ max: 9007199254740991, min: -9007199254740991, tenth: 0.1, big: 1.5e300, asText: '12345678901234567891' });
  });
});

describe('a VALIDATION error names the input at fault, whichever layer refuses it', () => {
  const grant = (amount: string, kind = 'PAID') => `grantCredits(input: { customerId: $c, amount: ${amount}, kind: ${kind}, idempotencyKey: "k" }) { replayed }`;
  // [what, query, variables, field]: each value written inline and passed in a variable, by any name.
  const rows: [string, string, Record<string, unknown>, string][] = [
    ['Decimal inline', `mutation ($c: ID!) { ${grant('1.5')} }`, {}, 'amount'],
    ['Decimal in a variable', `mutation ($c: ID!, $a: Decimal!) { ${grant('$a')} }`, { a: 1.5 }, 'amount'],
    ['Decimal in a whole-input variable', 'mutation ($in: GrantCreditsInput!) { grantCredits(input: $in) { replayed } }', { in: { customerId: 'x', amount: 1.5, kind: 'PAID', idempotencyKey: 'k' } }, 'amount'],
    ['Decimal refused by the service', `mutation ($c: ID!, $a: Decimal!) { ${grant('$a')} }`, { a: '1e3' }, 'amount'],
    ['Decimal in a variable used in a fragment', 'mutation ($c: ID!, $a: Decimal!) { ...G } fragment G on Mutation { grantCredits(input: { customerId: $c, amount: $a, kind: PAID, idempotencyKey: "k" }) { replayed } }', { a: 1.5 }, 'amount'],
    ['DateTime inline', '{ customers(filter: { createdAfter: "2026-02-30T00:00:00Z" }) { totalCount } }', {}, 'filter.createdAfter'],
    ['DateTime in a variable', 'query ($t: DateTime) { customers(filter: { createdAfter: $t }) { totalCount } }', { t: '2026-02-30T00:00:00Z' }, 'filter.createdAfter'],
    ['DateTime in a whole-filter variable', 'query ($f: CustomerFilter) { customers(filter: $f) { totalCount } }', { f: { createdAfter: '2026-02-30T00:00:00Z' } }, 'filter.createdAfter'],
    ['DateTime in a variable of the named operation', 'query A($t: Int) { customers(first: $t) { totalCount } } query B($t: DateTime) { customers(filter: { createdBefore: $t }) { totalCount } }', { t: 'x', operationName: 'B' }, 'filter.createdBefore'],
    ['JSONObject inline', 'mutation { createCustomer(input: { externalId: "j", metadata: "pro" }) { id } }', {}, 'metadata'],
    ['JSONObject in a variable', 'mutation ($m: JSONObject) { createCustomer(input: { externalId: "j", metadata: $m }) { id } }', { m: 'pro' }, 'metadata'],
    ['enum inline', `mutation ($c: ID!) { ${grant('"1"', 'paid')} }`, {}, 'kind'],
    ['enum in a variable', `mutation ($c: ID!, $k: CreditGrantKind!) { ${grant('"1"', '$k')} }`, { k: 'paid' }, 'kind'],
    ['Int overflow inline', '{ customers(first: 99999999999) { totalCount } }', {}, 'first'],
    ['Int overflow in a variable', 'query ($n: Int) { customers(first: $n) { totalCount } }', { n: 99999999999 }, 'first'],
    ['negative first inline', '{ customers(first: -1) { totalCount } }', {}, 'first'],
    ['negative first in a variable', 'query ($n: Int) { customers(first: $n) { totalCount } }', { n: -1 }, 'first'],
    ['a list item in a variable', 'query ($x: String!) { customers(filter: { externalIds: ["a", $x] }) { totalCount } }', { x: 5 }, 'filter.externalIds.1'],
    ['a required variable missing', `mutation ($c: ID!, $a: Decimal!) { ${grant('$a')} }`, { a: undefined }, 'amount'],
  ];

  it.each(rows)('%s', async (_what, query, variables, field) => {
    const merchant = await server.createMerchant();
    const customer = await server.services.customers.create(merchant.id, { externalId: 'holder' });
    const { operationName, ...values } = variables as { operationName?: string };
    const response = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` },
      body: JSON.stringify({ query, operationName, variables: { c: customer.id, ...values } }),
    });
    const body = (await response.json()) as { errors?: { message: string; extensions: Record<string, unknown> }[] };
    expect(body.errors?.[0]?.extensions, body.errors?.[0]?.message).toMatchObject({ code: 'VALIDATION', field });
  });
});
