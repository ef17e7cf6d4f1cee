import { buildSchema, execute, getIntrospectionQuery, getOperationAST, Kind, parse, print, type GraphQLSchema } from 'graphql';
import { describe, expect, it } from 'vitest';
import { enforceQueryLimits, FIELD_COSTS, limitResolvedFields, MAX_PAGE_SIZE, measureOperation, MUTATION_COST, UNPAGINATED_LIST_SIZE } from './limits.ts';
import { schema } from './schema.ts';

function measure(query: string, variables?: Record<string, unknown>, on: GraphQLSchema = schema) {
  const document = parse(query);
  return measureOperation(on, document, getOperationAST(document)!, variables, 20);
}

/** The defaults in config.ts. */
const DEFAULT_LIMITS = { maxDepth: 10, maxComplexity: 5000, defaultPageSize: 20 };

function enforce(query: string, variables?: Record<string, unknown>, limits = DEFAULT_LIMITS) {
  const document = parse(query);
  enforceQueryLimits(limits, schema, document, getOperationAST(document)!, variables);
}

/** graphql-js's introspection query with its `__schema` selection asked `copies` times under aliases. */
function aliasedIntrospection(copies: number): string {
  const document = parse(getIntrospectionQuery());
  const schemaField = print(getOperationAST(document)!.selectionSet.selections[0]!);
  const fragments = document.definitions.filter((definition) => definition.kind === Kind.FRAGMENT_DEFINITION).map((fragment) => print(fragment));
  return `{ ${Array.from({ length: copies }, (_, i) => `copy${i}: ${schemaField}`).join(' ')} } ${fragments.join(' ')}`;
}

describe('query cost', () => {
  it('counts depth through fields and fragments; introspection has no depth', () => {
    expect(measure('{ viewer { kind } }').depth).toBe(2);
    expect(measure('{ customers { edges { node { id } } } }').depth).toBe(4);
    expect(measure('{ customers { ...E } } fragment E on CustomerConnection { edges { node { id } } }').depth).toBe(4);
    expect(measure('{ __schema { types { fields { type { name } } } } viewer { kind } }').depth).toBe(2);
  });

  it('multiplies a connection by its page size, from literals, variables or the default', () => {
    const literal = measure('{ customers(first: 10) { edges { node { id } } } }');
    // customers(1) + 10 × (edges(1) + node(1) + id(1))
    expect(literal.complexity).toBe(1 + 10 * 3);
    expect(measure('query ($n: Int) { customers(first: $n) { edges { node { id } } } }', { n: 50 }).complexity).toBe(1 + 50 * 3);
    expect(measure('{ customers { edges { node { id } } } }').complexity).toBe(1 + 20 * 3);
    expect(measure('{ viewer { kind merchant { id name } } }').complexity).toBe(5);
  });

  it("takes a page size left to a variable's declared default, or to the argument's", () => {
    const query = 'query ($n: Int = 100) { customers(first: $n) { edges { node { id } } } }';
    expect(measure(query).complexity).toBe(1 + 100 * 3);
    expect(measure(query, {}).complexity).toBe(1 + 100 * 3);
    expect(measure(query, { n: 5 }).complexity).toBe(1 + 5 * 3);

    const withDefault = buildSchema(`
      type Query { items(first: Int = 50, last: Int): ItemConnection! }
      type ItemConnection { edges: [ItemEdge!]! }
      type ItemEdge { node: Item! }
      type Item { id: ID! }
    `);
    expect(measure('{ items { edges { node { id } } } }', undefined, withDefault).complexity).toBe(1 + 50 * 3);
    expect(measure('query ($n: Int) { items(first: $n) { edges { node { id } } } }', {}, withDefault).complexity).toBe(1 + 50 * 3);
  });

  it('prices a page given both first and last at the larger, null as absent, at most a full page', () => {
    const rows = (args: string, variables?: Record<string, unknown>) =>
      (measure(`query ($f: Int, $l: Int) { customers(${args}) { edges { node { id externalId } } } }`, variables).complexity - 1) / 4;
    // Pothos returns `first ?? last` rows, whichever comes first in the text.
    expect(rows('last: 1, first: 100')).toBe(100);
    expect(rows('first: 1, last: 100')).toBe(100);
    expect(rows('first: null, last: 100')).toBe(100);
    expect(rows('last: 100, first: null')).toBe(100);
    expect(rows('first: $f, last: $l', { f: 1, l: 100 })).toBe(100);
    expect(rows('first: $f, last: $l', { f: null, l: 100 })).toBe(100);
    expect(rows('last: $l, first: $f', { l: 1, f: 100 })).toBe(100);
    expect(rows('first: null, last: null')).toBe(20);
    // Pothos caps every page at its maxSize.
    expect(rows('first: 1000')).toBe(MAX_PAGE_SIZE);

    // The audit's case: refused with first alone, so refused with a smaller last before it.
    const tight = { ...DEFAULT_LIMITS, maxComplexity: 100 };
    const page = (args: string) => `{ customers(${args}) { edges { node { id externalId } } } }`;
    expect(() => enforce(page('first: 100'), undefined, tight)).toThrow(/complexity 401 exceeds the limit of 100/);
    expect(() => enforce(page('last: 1, first: 100'), undefined, tight)).toThrow(/complexity 401 exceeds/);
    expect(() => enforce(page('first: null, last: 100'), undefined, tight)).toThrow(/complexity 401 exceeds/);
    expect(() => enforce('query ($f: Int, $l: Int) { customers(last: $l, first: $f) { edges { node { id externalId } } } }', { l: 1, f: 100 }, tight)).toThrow(/complexity 401 exceeds/);
  });

  it('prices a whole-ledger check and a count at their fixed cost, a count once per connection', () => {
    const integrity = FIELD_COSTS.get('ledgerIntegrity')!;
    const count = FIELD_COSTS.get('totalCount')!;
    expect(measure('{ ledgerIntegrity { ok } }').complexity).toBe(integrity + 1);
    // ledgerTransactions(1) + totalCount, whatever the page size.
    expect(measure('{ ledgerTransactions(first: 0) { totalCount } }').complexity).toBe(1 + count);
    expect(measure('{ customers(first: 100) { totalCount } }').complexity).toBe(1 + count);
    // The page's rows are per row; the count and pageInfo, once.
    expect(measure('{ customers(first: 10) { totalCount pageInfo { hasNextPage } edges { node { id } } } }').complexity).toBe(1 + count + 2 + 10 * 3);
    expect(measure('{ customers { ...C } } fragment C on QueryCustomersConnection { totalCount }').complexity).toBe(1 + count);
    // A count under a list is paid for each of its parents.
    expect(measure('query ($c: ID!) { wallets(customerId: $c) { transactions { totalCount } } }').complexity).toBe(1 + UNPAGINATED_LIST_SIZE * (1 + count));
    // A spend limit's month so far is a sum over the month's usage: a count's price, per limit.
    expect(measure('query ($e: String!) { customer(externalId: $e) { spendLimits { spentThisMonth } } }').complexity).toBe(1 + 1 + UNPAGINATED_LIST_SIZE * FIELD_COSTS.get('spentThisMonth')!);

    // The audit's floods: 1,200 integrity checks, 2,500 counts in one request.
    const checks = Array.from({ length: 1200 }, (_, i) => `i${i}: ledgerIntegrity { ok }`).join(' ');
    const counts = Array.from({ length: 2500 }, (_, i) => `c${i}: ledgerTransactions(first: 0) { totalCount }`).join(' ');
    for (const flood of [checks, counts]) {
      let refusal: unknown;
      try {
        enforce(`{ ${flood} }`);
      } catch (error) {
        refusal = error;
      }
      expect(refusal).toMatchObject({ message: expect.stringMatching(/^Query complexity \d+ exceeds the limit of 5000$/), extensions: { code: 'VALIDATION', reason: 'QUERY_TOO_COMPLEX' } });
    }
    // One check, or a page with its count, still fits.
    expect(() => enforce('{ ledgerIntegrity { ok violations } ledgerTransactions(first: 100) { totalCount edges { node { id } } } }')).not.toThrow();
  });

  it('prices a metadata object at its fixed cost, in a page for each row: 500 aliased customers\' metadata (up to 8 MB) is the most one query gets', () => {
    const metadata = FIELD_COSTS.get('metadata')!;
    expect(metadata).toBe(10);
    expect(measure('query ($e: String!) { customer(externalId: $e) { metadata } }').complexity).toBe(1 + metadata);
    expect(measure('{ customers(first: 100) { edges { node { id metadata } } } }').complexity).toBe(1 + 100 * (2 + 1 + metadata));
    // Aliased at 1 each, 5,000 of them (up to 80 MB) were within the default limit.
    const aliased = (n: number) => `{ ${Array.from({ length: n }, (_, i) => `c${i}: customer(externalId: "x") { metadata }`).join(' ')} }`;
    expect(() => enforce(aliased(Math.floor(5000 / (1 + metadata))))).not.toThrow();
    expect(() => enforce(aliased(Math.floor(5000 / (1 + metadata)) + 1))).toThrow(/complexity \d+ exceeds the limit of 5000/);
  });

  it('holds the fixed costs while the query runs too: a list longer than measured stops at its price, not at one a field', async () => {
    const tiny = limitResolvedFields(buildSchema('type Row { id: ID metadata: String } type Query { rows: [Row] }'));
    const rows = Array.from({ length: 20 }, (_, i) => ({ id: String(i), metadata: 'x'.repeat(16) }));
    const run = (query: string) => execute({ schema: tiny, document: parse(query), rootValue: { rows }, contextValue: { maxResolvedFields: 60 } });
    // 1 + 20 ids: within 60.
    expect((await run('{ rows { id } }')).errors).toBeUndefined();
    // Each row's metadata is 10: the fifth row's (1 + 5 × 11 = 56, then 66) is past it.
    const cut = await run('{ rows { id metadata } }');
    expect(cut.errors?.[0]?.extensions).toMatchObject({ reason: 'QUERY_TOO_COMPLEX' });
    expect(cut.errors?.[0]?.path).toEqual(['rows', 5, 'metadata']);
  });

  it('counts every mutation as a write, and an import as a whole table: aliasing them is refused', () => {
    // createMeter(25) + id(1)
    expect(measure('mutation { createMeter(input: { key: "k", name: "K", unit: "u", source: REQUESTS }) { id } }').complexity).toBe(MUTATION_COST + 1);
    const writes = Array.from({ length: 250 }, (_, i) => `a${i}: archiveMeter(key: "k${i}") { id }`).join(' ');
    expect(() => enforce(`mutation { ${writes} }`)).toThrow(/complexity \d+ exceeds the limit of 5000/);
    const imports = Array.from({ length: 3 }, (_, i) => `i${i}: importModelsDevPrices(json: $j) { imported }`).join(' ');
    expect(() => enforce(`mutation ($j: String!) { ${imports} }`, { j: '{}' })).toThrow(/complexity \d+ exceeds the limit of 5000/);
    expect(() => enforce('mutation ($j: String!) { importModelsDevPrices(json: $j) { imported } }', { j: '{}' })).not.toThrow();
    // A field named like a mutation, below the root, is an ordinary field.
    expect(measure('{ viewer { kind } }').complexity).toBe(2);
  });

  it('counts a list without first/last at an estimated size, but not the edges of a page', () => {
    // providerPrices(1) + size × (provider(1) + model(1))
    expect(measure('{ providerPrices { provider model } }').complexity).toBe(1 + UNPAGINATED_LIST_SIZE * 2);
    const aliases = Array.from({ length: 1600 }, (_, i) => `p${i}: providerPrices { provider model }`).join(' ');
    expect(() => enforce(`{ ${aliases} }`)).toThrow(/complexity \d+ exceeds the limit of 5000/);
    expect(measure('{ customers(first: 10) { edges { node { id } } } }').complexity).toBe(1 + 10 * 3);
  });

  it("counts introspection against its own budget: one full introspection fits, aliased copies don't", () => {
    expect(measure(getIntrospectionQuery()).introspection).toBeGreaterThan(1000);
    expect(measure(getIntrospectionQuery()).complexity).toBe(0);
    // __typename is answered from the type the executor holds: still free.
    expect(measure('{ viewer { __typename kind merchant { __typename id } } }')).toEqual(measure('{ viewer { kind merchant { id } } }'));
    // graphql-js's query, as GraphiQL, Apollo Sandbox and graphql-codegen send it.
    expect(() => enforce(getIntrospectionQuery())).not.toThrow();
    expect(() =>
      enforce(getIntrospectionQuery({ descriptions: true, specifiedByUrl: true, directiveIsRepeatable: true, schemaDescription: true, inputValueDeprecation: true, oneOf: true, typeDepth: 20 })),
    ).not.toThrow();
    expect(() => enforce('{ __type(name: "Customer") { name fields { name type { name kind ofType { name } } } } }')).not.toThrow();

    expect(() => enforce(aliasedIntrospection(3))).toThrow(/Introspection complexity \d+ exceeds the limit of \d+/);
    expect(() => enforce(aliasedIntrospection(1000))).toThrow(/Introspection complexity/);
    // Copies nested under one `__schema`, and one type's fields asked over and over.
    const types = Array.from({ length: 100 }, (_, i) => `t${i}: types { name fields { name args { name } type { name } } }`).join(' ');
    expect(() => enforce(`{ __schema { ${types} } }`)).toThrow(/Introspection complexity/);
    const fields = Array.from({ length: 2000 }, (_, i) => `f${i}: fields { name }`).join(' ');
    expect(() => enforce(`{ __type(name: "Query") { ${fields} } }`)).toThrow(/Introspection complexity/);
  });
});
