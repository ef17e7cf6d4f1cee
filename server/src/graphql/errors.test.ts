import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/server.ts';
import { variableFieldOf } from './errors.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

describe('variableFieldOf', () => {
  it('names the input field a variable failed at, as VALIDATION errors name fields', () => {
    expect(variableFieldOf('Variable "$input" got invalid value "NOPE" at "input.kind"; Value "NOPE" does not exist in "CreditGrantKind" enum.')).toBe('kind');
    expect(variableFieldOf('Variable "$input" got invalid value 5 at "input.config.tiers[1].upTo"; Expected type "String".')).toBe('config.tiers.1.upTo');
    expect(variableFieldOf('Variable "$first" got invalid value "ten"; Int cannot represent non-integer value: "ten"')).toBe('first');
    expect(variableFieldOf('Variable "$c" of required type "ID!" was not provided.')).toBe('c');
    expect(variableFieldOf('Syntax Error: Unexpected Name "x".')).toBeUndefined();
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
});
