import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { getIntrospectionQuery, getOperationAST, Kind, parse, print } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fragmentChainTooLong, MAX_FRAGMENT_CHAIN } from '../src/graphql/limits.ts';
import { startTestServer, type TestServer } from './server.ts';

/** Bad requests get a clear, coded error and a 4xx, never a crash or a partial write. */
let server: TestServer;
let merchant: { id: string; secret: string };

beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_MAX_QUERY_COMPLEXITY: '600', TOLLGATE_MAX_BODY_SIZE: '64kb' });
  merchant = await server.createMerchant();
});
afterAll(() => server?.close());

async function post(body: string, headers: Record<string, string> = {}) {
  const response = await fetch(`${server.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}`, ...headers },
    body,
  });
  const text = await response.text();
  return { status: response.status, body: JSON.parse(text) as { errors?: { message: string; extensions: Record<string, unknown> }[]; data?: unknown; error?: Record<string, unknown> }, requestId: response.headers.get('x-request-id') };
}

describe('bad input', () => {
  it('malformed JSON → 400 VALIDATION', async () => {
    const result = await post('{"query": "{ viewer { kind } }"');
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'MALFORMED_JSON' });
    expect(result.body.errors?.[0]?.extensions.requestId).toBe(result.requestId);
  });

  it('a body with no query → 400 VALIDATION', async () => {
    const result = await post('{"variables": {}}');
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.extensions.code).toBe('VALIDATION');
  });

  it('a query that does not parse → 400 VALIDATION', async () => {
    const result = await post(JSON.stringify({ query: '{ viewer { kind ' }));
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.extensions.code).toBe('VALIDATION');
  });

  it('unknown fields in the query → 400 VALIDATION naming the field', async () => {
    const result = await post(JSON.stringify({ query: '{ viewer { kind secretSauce } }' }));
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.extensions.code).toBe('VALIDATION');
    expect(result.body.errors?.[0]?.message).toContain('secretSauce');
  });

  it('unknown input fields in variables → VALIDATION, and nothing is written', async () => {
    const result = await post(
      JSON.stringify({
        query: 'mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { id } }',
        variables: { input: { externalId: 'never-created', plan: 'gold' } },
      }),
    );
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.extensions.code).toBe('VALIDATION');
    expect(result.body.errors?.[0]?.message).toContain('plan');
    expect(await server.services.prisma.customer.count({ where: { externalId: 'never-created' } })).toBe(0);
  });

  it('a value of the wrong type → VALIDATION', async () => {
    const result = await post(JSON.stringify({ query: 'query ($n: Int) { customers(first: $n) { totalCount } }', variables: { n: 'ten' } }));
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.extensions.code).toBe('VALIDATION');
    const date = await post(JSON.stringify({ query: '{ customers(filter: { createdAfter: "yesterday" }) { totalCount } }' }));
    expect(date.body.errors?.[0]?.extensions.code).toBe('VALIDATION');
  });

  it('an over-deep query → 400 VALIDATION before anything runs', async () => {
    // This schema has no cycles (its deepest path is 4), so prove the limit with a lower one.
    const shallow = await startTestServer({ TOLLGATE_MAX_QUERY_DEPTH: '3' });
    try {
      const key = (await shallow.createMerchant()).secret;
      const ok = await shallow.graphql('{ viewer { customer { id } merchant { id } } }', {}, key);
      expect(ok.status).toBe(200);
      expect(ok.errors).toBeUndefined();
      const tooDeep = await shallow.graphql('{ customers { edges { node { id } } } }', {}, key);
      expect(tooDeep.status).toBe(400);
      expect(tooDeep.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_DEEP' });
      expect(tooDeep.errors?.[0]?.message).toBe('Query depth 4 exceeds the limit of 3');
      // Fragments count where they are spread.
      const viaFragment = await shallow.graphql('{ customers { ...Edges } } fragment Edges on CustomerConnection { edges { node { id } } }', {}, key);
      expect(viaFragment.status).toBe(400);
      // Introspection has no depth limit (graphql-js's own query nests ofType nine deep).
      const introspection = await shallow.graphql('{ __schema { types { fields { type { ofType { ofType { name } } } } } } }', {}, key);
      expect(introspection.status).toBe(200);
    } finally {
      await shallow.close();
    }
  });

  it('a long chain of fragments → 400 VALIDATION, even anonymous, where validating it would overflow the stack (a 500)', async () => {
    const roomy = await startTestServer();
    try {
      const chain = (length: number) =>
        'query { viewer { ...F0 } } ' + Array.from({ length }, (_, i) => `fragment F${i} on Viewer { kind ${i + 1 < length ? `...F${i + 1}` : ''} }`).join(' ');
      const send = (query: string) => fetch(`${roomy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) });
      const overflowing = await send(chain(20_000)); // ~880 kB, under the 1 MB body limit
      expect(overflowing.status).toBe(400);
      expect(((await overflowing.json()) as { errors: { extensions: unknown }[] }).errors[0]!.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_DEEP' });
      expect((await send(chain(MAX_FRAGMENT_CHAIN + 1))).status).toBe(400);
      // Fragments nothing spreads are validated all the same, so their chains count too.
      const unused = await send(`query { __typename } ${chain(20_000).slice('query { viewer { ...F0 } } '.length)}`);
      expect(unused.status).toBe(400);
      // As deep as the limit, it runs (anonymous: the viewer answers UNAUTHENTICATED, not a refusal of the document).
      const fine = await roomy.graphql(chain(MAX_FRAGMENT_CHAIN), {}, (await roomy.createMerchant()).secret);
      expect(fine.errors).toBeUndefined();
      expect(fine.data).toEqual({ viewer: { kind: 'MERCHANT' } });
      // Many spreads of one fragment are no chain.
      const wide = `query { viewer { ${Array.from({ length: 200 }, (_, i) => `a${i}: merchant { ...M }`).join(' ')} } } fragment M on Merchant { id }`;
      expect(fragmentChainTooLong(wide)).toBe(false);
    } finally {
      await roomy.close();
    }
  });

  it('a persisted query whose hash does not match, or of an unknown version → 400 VALIDATION, not INTERNAL', async () => {
    for (const persistedQuery of [{ version: 1, sha256Hash: 'abc' }, { version: 2, sha256Hash: 'abc' }]) {
      const result = await post(JSON.stringify({ query: '{ viewer { kind } }', extensions: { persistedQuery } }));
      expect(result.status, JSON.stringify(persistedQuery)).toBe(400);
      expect(result.body.errors?.[0]?.extensions, JSON.stringify(persistedQuery)).toMatchObject({ code: 'VALIDATION', reason: 'BAD_REQUEST' });
    }
  });

  it('an over-complex query → 400 VALIDATION naming the limit', async () => {
    const result = await post(JSON.stringify({ query: '{ customers(first: 100) { edges { cursor node { id externalId email name } } } }' }));
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_COMPLEX' });
    expect(result.body.errors?.[0]?.message).toMatch(/complexity \d+ exceeds the limit of 600/);
    const viaVariable = await post(
      JSON.stringify({ query: 'query ($n: Int) { customers(first: $n) { edges { cursor node { id externalId email name } } } }', variables: { n: 100 } }),
    );
    expect(viaVariable.status).toBe(400);
    const small = await post(JSON.stringify({ query: '{ customers(first: 10) { edges { cursor node { id externalId email name } } } }' }));
    expect(small.status).toBe(200);
  });

  it("an over-complex query whose size comes from a variable's default → 400", async () => {
    const result = await post(JSON.stringify({ query: 'query ($n: Int = 100) { customers(first: $n) { edges { cursor node { id externalId email name } } } }' }));
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_COMPLEX' });
  });

  it('many aliases of an unpaginated list → 400', async () => {
    const aliases = Array.from({ length: 100 }, (_, i) => `p${i}: providerPrices { provider model currency }`).join(' ');
    const result = await post(JSON.stringify({ query: `{ ${aliases} }` }));
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_COMPLEX' });
  });

  it('introspection: the full query is served to anyone, aliased copies of it are refused', async () => {
    const anonymous = (query: string) =>
      fetch(`${server.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) });
    const once = await anonymous(getIntrospectionQuery());
    expect(once.status).toBe(200);
    expect(((await once.json()) as { data: { __schema: { types: unknown[] } } }).data.__schema.types.length).toBeGreaterThan(10);

    const document = parse(getIntrospectionQuery());
    const schemaField = print(getOperationAST(document)!.selectionSet.selections[0]!);
    const fragments = document.definitions.filter((definition) => definition.kind === Kind.FRAGMENT_DEFINITION).map((fragment) => print(fragment));
    const copies = `{ ${Array.from({ length: 50 }, (_, i) => `copy${i}: ${schemaField}`).join(' ')} } ${fragments.join(' ')}`;
    const refused = await anonymous(copies);
    expect(refused.status).toBe(400);
    const body = (await refused.json()) as { data?: unknown; errors: { message: string; extensions: Record<string, unknown> }[] };
    expect(body.data).toBeUndefined();
    expect(body.errors[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_COMPLEX' });
    expect(body.errors[0]?.message).toMatch(/^Introspection complexity \d+ exceeds the limit of \d+$/);
  });

  it('a body that does not decompress as its Content-Encoding says → 400 VALIDATION, on every route', async () => {
    const event = JSON.stringify({ customer: 'nobody', idempotencyKey: 'corrupt-body', usage: { inputTokens: 1 } });
    for (const encoding of ['gzip', 'deflate']) {
      const graphql = await post(JSON.stringify({ query: '{ viewer { kind } }' }), { 'content-encoding': encoding });
      expect(graphql.status).toBe(400);
      expect(graphql.body.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'MALFORMED_CONTENT_ENCODING' });
      expect(graphql.body.errors?.[0]?.message).toContain(encoding);

      const usage = await fetch(`${server.url}/v1/usage`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': encoding, authorization: `Bearer ${merchant.secret}` },
        body: event,
      });
      expect(usage.status).toBe(400);
      expect(await usage.json()).toMatchObject({ error: { code: 'VALIDATION', reason: 'MALFORMED_CONTENT_ENCODING' } });
    }
    // Cut short mid-stream is as bad as not compressed at all.
    const truncated = gzipSync(JSON.stringify({ query: '{ viewer { kind } }' })).subarray(0, 12);
    const cut = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', authorization: `Bearer ${merchant.secret}` },
      body: truncated,
    });
    expect(cut.status).toBe(400);
    // Bodies that are what they say are read as usual.
    // x-gzip is gzip (RFC 9110), as the gateway reads it.
    for (const [encoding, compress] of [['gzip', gzipSync], ['x-gzip', gzipSync], ['deflate', deflateSync]] as const) {
      const ok = await fetch(`${server.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': encoding, authorization: `Bearer ${merchant.secret}` },
        body: compress(JSON.stringify({ query: '{ viewer { kind } }' })),
      });
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ data: { viewer: { kind: 'MERCHANT' } } });
    }
  });

  it('an oversized body → 413 VALIDATION', async () => {
    const result = await post(JSON.stringify({ query: '{ viewer { kind } }', variables: { padding: 'x'.repeat(100_000) } }));
    expect(result.status).toBe(413);
    expect(result.body.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'BODY_TOO_LARGE' });
  });

  it("answers in GraphQL's shape on every path Express serves GraphQL on (any letter case, a trailing slash)", async () => {
    const send = async (path: string, body: RequestInit['body'], headers: Record<string, string> = {}) => {
      const response = await fetch(`${server.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}`, ...headers },
        body,
      });
      return { status: response.status, body: (await response.json()) as { errors?: { extensions: Record<string, unknown> }[]; data?: unknown; error?: unknown } };
    };
    for (const path of ['/graphql/', '/GraphQL', '/GRAPHQL/?x=1']) {
      expect(await send(path, JSON.stringify({ query: '{ viewer { kind } }' })), path).toEqual({ status: 200, body: { data: { viewer: { kind: 'MERCHANT' } } } });
      const refusals = [
        [await send(path, '{"query": "{ viewer { kind } }"'), 400, 'MALFORMED_JSON'],
        [await send(path, JSON.stringify({ query: '{ viewer { kind } }', variables: { padding: 'x'.repeat(100_000) } })), 413, 'BODY_TOO_LARGE'],
        [await send(path, '{}', { 'content-encoding': 'x-unknown' }), 415, 'UNSUPPORTED_ENCODING'],
        [await send(path, gzipSync('{}').subarray(0, 12), { 'content-encoding': 'gzip' }), 400, 'MALFORMED_CONTENT_ENCODING'],
      ] as const;
      for (const [result, status, reason] of refusals) {
        expect(result.status, `${path} ${reason}`).toBe(status);
        expect(result.body.error, `${path} ${reason}`).toBeUndefined();
        expect(result.body.errors?.[0]?.extensions, `${path} ${reason}`).toMatchObject({ code: 'VALIDATION', reason });
      }
    }
    // A path that only begins with the same letters is no GraphQL path.
    const elsewhere = await send('/graphqlx', '{');
    expect(elsewhere).toMatchObject({ status: 404, body: { error: { code: 'NOT_FOUND' } } });
  });

  it('an encoding or charset the JSON routes cannot read → 415 naming it, and the codings they read', async () => {
    const send = (headers: Record<string, string>) => fetch(`${server.url}/v1/usage`, {
      method: 'POST', headers: { authorization: `Bearer ${merchant.secret}`, 'content-type': 'application/json', ...headers }, body: '{}',
    });
    const coding = await send({ 'content-encoding': 'compress' });
    expect(coding.status).toBe(415);
    const codingError = ((await coding.json()) as { error: Record<string, unknown> }).error;
    expect(codingError).toMatchObject({ code: 'VALIDATION', reason: 'UNSUPPORTED_ENCODING', contentEncoding: 'compress' });
    expect(codingError.supported).toEqual(expect.arrayContaining(['gzip', 'x-gzip', 'deflate', 'br']));
    // Each coding it lists is read.
    for (const listed of codingError.supported as string[]) {
      const body = listed === 'gzip' || listed === 'x-gzip' ? gzipSync('{}') : listed === 'deflate' ? deflateSync('{}') : listed === 'br' ? brotliCompressSync('{}') : null;
      if (!body) continue;
      const accepted = await fetch(`${server.url}/v1/usage`, {
        method: 'POST', headers: { authorization: `Bearer ${merchant.secret}`, 'content-type': 'application/json', 'content-encoding': listed }, body,
      });
      expect(accepted.status, listed).toBe(400);
      expect(((await accepted.json()) as { error: { reason?: string } }).error.reason, listed).not.toBe('UNSUPPORTED_ENCODING');
    }
    const charset = await send({ 'content-type': 'application/json; charset=latin1' });
    expect(charset.status).toBe(415);
    expect(((await charset.json()) as { error: Record<string, unknown> }).error).toMatchObject({ code: 'VALIDATION', reason: 'UNSUPPORTED_CHARSET' });
  });

  it('a subscription over HTTP → 400 pointing at WebSocket', async () => {
    const result = await post(JSON.stringify({ query: 'subscription ($id: ID!) { customerUpdated(id: $id) { id } }', variables: { id: merchant.id } }));
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.extensions.reason).toBe('SUBSCRIPTION_OVER_HTTP');
  });

  it('unknown routes → 404 with a JSON body', async () => {
    const response = await fetch(`${server.url}/v1/nothing-here`);
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ error: { code: 'NOT_FOUND' } });
  });

  it('internal errors are masked as INTERNAL with a request id, never a stack trace', async () => {
    const original = server.services.merchants.get.bind(server.services.merchants);
    server.services.merchants.get = async () => {
      throw new Error('connection string postgres://admin:hunter2@db leaked?');
    };
    try {
      const result = await post(JSON.stringify({ query: '{ merchant { id } }' }), { 'x-request-id': 'req-abc-123' });
      const error = result.body.errors?.[0];
      expect(error?.extensions).toEqual({ code: 'INTERNAL', requestId: 'req-abc-123' });
      expect(JSON.stringify(result.body)).not.toMatch(/hunter2|stack|at .*\.ts/);
    } finally {
      server.services.merchants.get = original;
    }
  });
});
