import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';

let server: TestServer;
let merchant: { id: string; secret: string };

const FIELDS = 'id externalId email name metadata archived archivedAt createdAt updatedAt';

async function gql<T>(query: string, variables: Record<string, unknown> = {}) {
  return server.graphql<T>(query, variables, merchant.secret);
}

async function create(input: Record<string, unknown>) {
  return gql<{ createCustomer: Record<string, unknown> & { id: string } }>(
    `mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { ${FIELDS} } }`,
    { input },
  );
}

beforeAll(async () => {
  server = await startTestServer();
  merchant = await server.createMerchant();
});
afterAll(() => server?.close());

describe('customer CRUD', () => {
  it('creates a customer and reads it back by id and by externalId', async () => {
    const created = await create({ externalId: 'user-42', email: 'Grace@Example.com', name: ' Grace Hopper ', metadata: { tier: 'pro', seats: 3 } });
    expect(created.errors).toBeUndefined();
    const customer = created.data!.createCustomer;
    expect(customer).toMatchObject({
      externalId: 'user-42',
      email: 'grace@example.com',
      name: 'Grace Hopper',
      metadata: { tier: 'pro', seats: 3 },
      archived: false,
      archivedAt: null,
    });

    const byId = await gql<{ customer: { id: string } }>(`query ($id: ID!) { customer(id: $id) { ${FIELDS} } }`, { id: customer.id });
    expect(byId.data!.customer).toEqual(customer);
    const byExternal = await gql<{ customer: { id: string } }>('{ customer(externalId: "user-42") { id } }');
    expect(byExternal.data!.customer.id).toBe(customer.id);
  });

  it('refuses a duplicate externalId with CONFLICT naming the existing customer, and writes nothing', async () => {
    const first = await create({ externalId: 'dup' });
    const before = await server.services.prisma.customer.count({ where: { merchantId: merchant.id } });
    const second = await create({ externalId: 'dup', email: 'other@example.com' });
    expect(second.errors?.[0]?.extensions).toMatchObject({ code: 'CONFLICT', field: 'externalId', existingCustomerId: first.data!.createCustomer.id });
    expect(await server.services.prisma.customer.count({ where: { merchantId: merchant.id } })).toBe(before);
  });

  it('lets two merchants use the same externalId', async () => {
    const other = await server.createMerchant('Other');
    const mine = await create({ externalId: 'shared-id' });
    const theirs = await server.graphql<{ createCustomer: { id: string } }>(
      'mutation { createCustomer(input: { externalId: "shared-id" }) { id } }',
      {},
      other.secret,
    );
    expect(mine.errors).toBeUndefined();
    expect(theirs.errors).toBeUndefined();
    expect(theirs.data!.createCustomer.id).not.toBe(mine.data!.createCustomer.id);
  });

  it('rejects bad input with VALIDATION naming the field', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ externalId: '   ' }, 'externalId'],
      [{ externalId: 'x'.repeat(300) }, 'externalId'],
      [{ externalId: 'ok-1', email: 'not-an-email' }, 'email'],
    ];
    for (const [input, field] of cases) {
      const result = await create(input);
      expect(result.errors?.[0]?.extensions, JSON.stringify(input)).toMatchObject({ code: 'VALIDATION', field });
      expect(result.errors?.[0]?.message).toContain(field);
    }
    const notAnObject = await create({ externalId: 'ok-2', metadata: [1, 2] });
    expect(notAnObject.errors?.[0]?.extensions.code).toBe('VALIDATION');
    const missing = await create({ email: 'a@b.co' });
    expect(missing.errors?.[0]?.extensions.code).toBe('VALIDATION');
    expect(missing.errors?.[0]?.message).toContain('externalId');
  });

  it('updates only the fields given, and replaces metadata whole', async () => {
    const { id } = (await create({ externalId: 'upd', email: 'a@example.com', name: 'A', metadata: { a: 1 } })).data!.createCustomer;
    const updated = await gql<{ updateCustomer: Record<string, unknown> }>(
      `mutation ($id: ID!, $input: UpdateCustomerInput!) { updateCustomer(id: $id, input: $input) { ${FIELDS} } }`,
      { id, input: { name: 'B', metadata: { b: 2 } } },
    );
    expect(updated.errors).toBeUndefined();
    expect(updated.data!.updateCustomer).toMatchObject({ externalId: 'upd', email: 'a@example.com', name: 'B', metadata: { b: 2 } });

    const cleared = await gql<{ updateCustomer: Record<string, unknown> }>(
      'mutation ($id: ID!) { updateCustomer(id: $id, input: { email: null }) { email name } }',
      { id },
    );
    expect(cleared.data!.updateCustomer).toEqual({ email: null, name: 'B' });

    await create({ externalId: 'taken' });
    const clash = await gql('mutation ($id: ID!) { updateCustomer(id: $id, input: { externalId: "taken" }) { id } }', { id });
    expect(clash.errors?.[0]?.extensions.code).toBe('CONFLICT');
    expect((await server.services.customers.get(merchant.id, id)).externalId).toBe('upd');
  });

  it('archives and unarchives idempotently', async () => {
    const { id } = (await create({ externalId: 'arch' })).data!.createCustomer;
    const archive = () => gql<{ archiveCustomer: { archived: boolean; archivedAt: string } }>('mutation ($id: ID!) { archiveCustomer(id: $id) { archived archivedAt } }', { id });
    const first = await archive();
    const second = await archive();
    expect(first.data!.archiveCustomer.archived).toBe(true);
    expect(second.data!.archiveCustomer.archivedAt).toBe(first.data!.archiveCustomer.archivedAt);
    const restored = await gql<{ unarchiveCustomer: { archived: boolean } }>('mutation ($id: ID!) { unarchiveCustomer(id: $id) { archived } }', { id });
    expect(restored.data!.unarchiveCustomer.archived).toBe(false);
  });

  it('answers NOT_FOUND for unknown ids, including ones that are not UUIDs', async () => {
    for (const id of ['00000000-0000-4000-8000-000000000000', 'nope']) {
      const result = await gql('query ($id: ID!) { customer(id: $id) { id } }', { id });
      expect(result.errors?.[0]?.extensions.code).toBe('NOT_FOUND');
    }
    const neither = await gql('{ customer { id } }');
    expect(neither.errors?.[0]?.extensions.code).toBe('VALIDATION');
  });
});

describe('customer list', () => {
  let pager: { id: string; secret: string };
  const ids: string[] = [];

  beforeAll(async () => {
    pager = await server.createMerchant('Pager');
    for (let i = 0; i < 25; i++) {
      const customer = await server.services.customers.create(pager.id, {
        externalId: `p-${String(i).padStart(2, '0')}`,
        email: i % 5 === 0 ? `vip${i}@example.com` : `user${i}@example.com`,
        name: i % 5 === 0 ? `VIP ${i}` : `User ${i}`,
      });
      ids.push(customer.id);
    }
    await server.services.customers.archive(pager.id, ids[3]!);
  });

  type Page = { customers: { totalCount: number; edges: { cursor: string; node: { id: string; externalId: string } }[]; pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; endCursor: string; startCursor: string } } };
  const LIST = `query ($first: Int, $after: String, $last: Int, $before: String, $filter: CustomerFilter) {
    customers(first: $first, after: $after, last: $last, before: $before, filter: $filter) {
      totalCount edges { cursor node { id externalId } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }`;

  it('pages forward newest first with no gaps or repeats, excluding archived customers', async () => {
    const seen: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await server.graphql<Page>(LIST, { first: 10, after }, pager.secret);
      expect(page.errors).toBeUndefined();
      const { edges, pageInfo, totalCount } = page.data!.customers;
      expect(totalCount).toBe(24);
      seen.push(...edges.map((edge) => edge.node.id));
      if (!pageInfo.hasNextPage) break;
      after = pageInfo.endCursor;
    }
    // Newest first; customers created in the same millisecond come in id order (the cursor's tiebreak).
    const rows = await server.services.prisma.customer.findMany({ where: { id: { in: ids.filter((id) => id !== ids[3]) } }, select: { id: true, createdAt: true } });
    const expected = rows
      .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
      .map((row) => row.id);
    expect(expected).toHaveLength(24);
    expect(seen).toEqual(expected);
  });

  it('pages backward with last/before', async () => {
    const firstPage = await server.graphql<Page>(LIST, { first: 10 }, pager.secret);
    const lastFive = await server.graphql<Page>(LIST, { last: 5, before: firstPage.data!.customers.pageInfo.endCursor }, pager.secret);
    expect(lastFive.errors).toBeUndefined();
    expect(lastFive.data!.customers.edges.map((edge) => edge.node.id)).toEqual(
      firstPage.data!.customers.edges.slice(4, 9).map((edge) => edge.node.id),
    );
    expect(lastFive.data!.customers.pageInfo.hasPreviousPage).toBe(true);
  });

  it('filters by search, email, externalIds, status and creation time', async () => {
    const search = await server.graphql<Page>(LIST, { first: 50, filter: { search: 'vip' } }, pager.secret);
    expect(search.data!.customers.totalCount).toBe(5);
    const email = await server.graphql<Page>(LIST, { first: 50, filter: { email: 'USER7@example.com' } }, pager.secret);
    expect(email.data!.customers.edges.map((edge) => edge.node.externalId)).toEqual(['p-07']);
    const byExternal = await server.graphql<Page>(LIST, { filter: { externalIds: ['p-01', 'p-02', 'p-03'] } }, pager.secret);
    expect(byExternal.data!.customers.edges.map((edge) => edge.node.externalId).sort()).toEqual(['p-01', 'p-02']);
    const archived = await server.graphql<Page>(LIST, { filter: { status: 'ARCHIVED' } }, pager.secret);
    expect(archived.data!.customers.edges.map((edge) => edge.node.id)).toEqual([ids[3]]);
    const all = await server.graphql<Page>(LIST, { filter: { status: 'ALL' } }, pager.secret);
    expect(all.data!.customers.totalCount).toBe(25);
    const future = await server.graphql<Page>(LIST, { filter: { createdAfter: new Date(Date.now() + 60_000).toISOString() } }, pager.secret);
    expect(future.data!.customers.totalCount).toBe(0);
  });

  it('serves a page larger than the maximum (100) as a capped page, and rejects cursors it did not issue', async () => {
    const big = await server.graphql<Page>(LIST, { first: 150 }, pager.secret);
    expect(big.errors).toBeUndefined();
    expect(big.data!.customers.edges.length).toBe(24);
    const bad = await server.graphql<Page>(LIST, { first: 5, after: 'garbage' }, pager.secret);
    expect(bad.errors?.[0]?.extensions.code).toBe('VALIDATION');
  });
});

describe('lookups and block reasons the database cannot take', () => {
  const codeOf = (result: { errors?: { extensions: Record<string, unknown> }[] }) => result.errors?.[0]?.extensions;

  it('a lookup by an externalId no customer can have is NOT_FOUND; one with spaces around finds the customer, as create trims', async () => {
    const base = (await create({ externalId: ' base ' })).data!.createCustomer;
    expect(base.externalId).toBe('base');
    expect(codeOf(await create({ externalId: 'base' }))).toMatchObject({ code: 'CONFLICT' });
    for (const externalId of [' base ', 'base\t']) {
      const found = await gql<{ customer: { id: string } }>('query ($e: String) { customer(externalId: $e) { id } }', { e: externalId });
      expect(found.errors, JSON.stringify(externalId)).toBeUndefined();
      expect(found.data!.customer.id).toBe(base.id);
    }
    for (const externalId of ['base\u0000', 'x\ud800', '\udc00', '   ']) {
      const result = await gql('query ($e: String) { customer(externalId: $e) { id } }', { e: externalId });
      expect(codeOf(result), JSON.stringify(externalId)).toMatchObject({ code: 'NOT_FOUND' });
    }
    await expect(server.services.customers.getByIdOrExternalId(merchant.id, 'base\u0000')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    // An older customer whose externalId is a newer one's id: the id names the newer one.
    const older = await server.services.customers.create(merchant.id, { externalId: `older-${Date.now()}` });
    const newer = await server.services.customers.create(merchant.id, { externalId: `newer-${Date.now()}` });
    await server.services.customers.update(merchant.id, older.id, { externalId: newer.id });
    expect((await server.services.customers.getByIdOrExternalId(merchant.id, newer.id)).id).toBe(newer.id);
  });

  it('a customers filter by email or externalIds holding text the database cannot take is VALIDATION naming the filter field', async () => {
    const count = (filter: Record<string, unknown>) => gql<{ customers: { totalCount: number } }>('query ($f: CustomerFilter) { customers(filter: $f) { totalCount } }', { f: filter });
    const cases: [Record<string, unknown>, string][] = [
      [{ email: 'a\u0000@example.com' }, 'filter.email'],
      [{ email: 'a\ud800@example.com' }, 'filter.email'],
      [{ externalIds: ['ok', 'x\u0000'] }, 'filter.externalIds'],
      [{ externalIds: ['\udfff'] }, 'filter.externalIds'],
    ];
    for (const [filter, field] of cases) expect(codeOf(await count(filter)), JSON.stringify(filter)).toMatchObject({ code: 'VALIDATION', field });
    await create({ externalId: 'listed' });
    expect((await count({ externalIds: [' listed '] })).data!.customers.totalCount).toBe(1);
  });

  it('blockCustomer refuses a reason with NUL or a lone surrogate as VALIDATION on reason, and leaves the customer unblocked', async () => {
    const { id } = (await create({ externalId: 'to-block' })).data!.createCustomer;
    const block = (reason: string) => gql<{ blockCustomer: { blocked: boolean; blockedReason: string | null } }>(
      'mutation ($id: ID!, $r: String) { blockCustomer(id: $id, reason: $r) { blocked blockedReason } }', { id, r: reason });
    for (const reason of ['x\u0000', 'unpaid \ud83d', '\udca9 spam', 'x'.repeat(501)]) {
      expect(codeOf(await block(reason)), JSON.stringify(reason)).toMatchObject({ code: 'VALIDATION', field: 'reason' });
    }
    expect(await server.services.customers.get(merchant.id, id)).toMatchObject({ blockedAt: null, blockedReason: null });
    // A whole surrogate pair is text like any other; spaces around are trimmed.
    expect((await block(' unpaid \ud83d\udca9 ')).data!.blockCustomer).toEqual({ blocked: true, blockedReason: 'unpaid \ud83d\udca9' });
  });
});

describe('customers search', () => {
  it('matches %, _ and \\ as themselves, not as LIKE wildcards', async () => {
    const own = await server.createMerchant();
    const count = async (search: string) => {
      const result = await server.graphql<{ customers: { totalCount: number } }>('query ($f: CustomerFilter) { customers(filter: $f) { totalCount } }', { f: { search } }, own.secret);
      expect(result.errors, search).toBeUndefined();
      return result.data!.customers.totalCount;
    };
    await server.services.customers.create(own.id, { externalId: 'alpha', name: 'Ann' });
    await server.services.customers.create(own.id, { externalId: 'be_ta', name: 'Bob' });
    expect(await count('%')).toBe(0);
    expect(await count('_')).toBe(1);
    expect(await count('E_T')).toBe(1);
    expect(await count('a%a')).toBe(0);
    await server.services.customers.create(own.id, { externalId: 'c\\d', name: '100%' });
    expect(await count('%')).toBe(1);
    expect(await count('\\')).toBe(1);
    expect(await count('\\d')).toBe(1);
    expect(await count('\\%')).toBe(0);
  });
});
