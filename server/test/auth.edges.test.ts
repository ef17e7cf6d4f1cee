import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiKeyMode } from '../src/modules/api-keys/api-keys.service.ts';
import { testServerWithMerchant, type TestServer } from './server.ts';

let server: TestServer;
let merchant: { id: string; secret: string };
const { start, close } = testServerWithMerchant();

beforeAll(async () => ({ server, merchant } = await start()));
afterAll(close);

const viewerKind = async (token: string) => {
  const result = await server.graphql<{ viewer: { kind: string } }>('{ viewer { kind } }', {}, token);
  return result.data?.viewer.kind ?? result.errors?.[0]?.extensions.code;
};

describe('creating a merchant', () => {
  it('writes nothing when its first key cannot be created: no merchant left without a key', async () => {
    const before = await server.services.merchants.count();
    // A mode the database refuses (the CLI checks it; the service is the last line).
    await expect(server.services.merchants.create({ name: 'Half made', keyMode: 'prod' as ApiKeyMode })).rejects.toThrow();
    expect(await server.services.merchants.count()).toBe(before);
  });
});

describe('a customer session token whose customer no longer exists', () => {
  it('is UNAUTHENTICATED, as one whose customer was archived', async () => {
    const customer = await server.services.customers.create(merchant.id, { externalId: 'deleted-later' });
    const minted = await server.graphql<{ createCustomerSession: { token: string } }>(
      'mutation ($id: ID!) { createCustomerSession(customerId: $id, ttlSeconds: 600) { token } }',
      { id: customer.id },
      merchant.secret,
    );
    const token = minted.data!.createCustomerSession.token;
    expect(await viewerKind(token)).toBe('CUSTOMER');
    // Removed by hand (an operator erasing a user who never used a wallet).
    await server.services.prisma.customer.delete({ where: { id: customer.id } });
    expect(await viewerKind(token)).toBe('UNAUTHENTICATED');
    expect(await server.services.customerSessions.archivedAmong([customer.id])).toEqual(new Set([customer.id]));
  });
});
