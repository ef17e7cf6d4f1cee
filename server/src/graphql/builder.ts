import SchemaBuilder from '@pothos/core';
import RelayPlugin from '@pothos/plugin-relay';
import ScopeAuthPlugin from '@pothos/plugin-scope-auth';
import { GraphQLError, Kind, valueFromASTUntyped } from 'graphql';
import type { Context } from '../context.ts';
import { forbidden, unauthenticated } from '../shared/errors.ts';
import { isStorableTime, parseIsoTime } from '../shared/times.ts';

/**
 * The schema builder: plugins, scalars and auth scopes. It declares no domain types; each
 * module adds its own in modules/<noun>/<noun>.graphql.ts.
 */
export const builder = new SchemaBuilder<{
  Context: Context;
  DefaultFieldNullability: false;
  AuthScopes: {
    /** A merchant's secret key: the whole tenant. */
    merchant: boolean;
    /** Any customer session token. */
    customer: boolean;
    /** A customer session token for this customer id. */
    customerSelf: string;
  };
  Scalars: {
    DateTime: { Input: Date; Output: Date | string };
    JSONObject: { Input: Record<string, unknown>; Output: unknown };
    Decimal: { Input: string; Output: string };
  };
}>({
  plugins: [ScopeAuthPlugin, RelayPlugin],
  defaultFieldNullability: false,
  scopeAuth: {
    // Check a subscription's scopes when it starts, not only when an event arrives.
    authorizeOnSubscribe: true,
    authScopes: async (ctx) => ({
      merchant: ctx.viewer.kind === 'merchant',
      customer: ctx.viewer.kind === 'customer',
      // Customer ids are UUIDs, which name the same customer in either case.
      customerSelf: (customerId: string) => ctx.viewer.kind === 'customer' && ctx.viewer.customerId.toLowerCase() === customerId.toLowerCase(),
    }),
    // No credential at all is "who are you?"; a credential without the right is "not allowed".
    unauthorizedError: (_parent, ctx, _info, result) =>
      ctx.viewer.kind === 'anonymous' ? unauthenticated() : forbidden(result.message),
  },
  relay: {
    clientMutationId: 'omit',
    cursorType: 'String',
    nodeQueryOptions: false,
    nodesQueryOptions: false,
  },
});

builder.queryType({});
builder.mutationType({});
builder.subscriptionType({});

builder.scalarType('DateTime', {
  description: 'An instant, as an ISO-8601 string in UTC.',
  serialize: (value) => (value instanceof Date ? value.toISOString() : new Date(value).toISOString()),
  parseValue: (value) => parseDateTime(value),
  parseLiteral: (ast) => {
    if (ast.kind !== Kind.STRING) throw new GraphQLError('DateTime must be an ISO-8601 string');
    return parseDateTime(ast.value);
  },
});

function parseDateTime(value: unknown): Date {
  const date = typeof value === 'string' ? parseIsoTime(value) : null;
  if (!date) {
    throw new GraphQLError('DateTime must be an ISO-8601 date and time with its zone, e.g. 2026-04-01T12:00:00Z or 2026-04-01T14:00:00+02:00 (a date alone, 2026-04-01, is midnight UTC)');
  }
  if (!isStorableTime(date)) throw new GraphQLError('DateTime must be between the years 1 and 9999');
  return date;
}

builder.scalarType('JSONObject', {
  description: 'A JSON object (keys and values of your choosing).',
  serialize: (value) => value,
  parseValue: (value) => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new GraphQLError('Expected a JSON object');
    return value as Record<string, unknown>;
  },
  // Written inline (`metadata: { plan: "pro" }`) as well as passed as a variable.
  parseLiteral: (ast, variables) => {
    if (ast.kind !== Kind.OBJECT) throw new GraphQLError('Expected a JSON object');
    return valueFromASTUntyped(ast, variables) as Record<string, unknown>;
  },
});

builder.scalarType('Decimal', {
  description: 'An exact decimal number as a string, e.g. "12.50". Money is never a float.',
  serialize: (value) => String(value),
  parseValue: (value) => {
    if (typeof value !== 'string' && typeof value !== 'number') throw new GraphQLError('Decimal must be a string such as "12.50"');
    // Numbers are accepted only when they are integers: a JSON float may already have lost digits.
    if (typeof value === 'number' && !Number.isSafeInteger(value)) throw new GraphQLError('Pass fractional Decimal values as strings, e.g. "0.15"');
    return String(value);
  },
  parseLiteral: (ast) => {
    if (ast.kind === Kind.STRING || ast.kind === Kind.INT) return ast.value;
    throw new GraphQLError('Decimal must be a string such as "12.50"');
  },
});
