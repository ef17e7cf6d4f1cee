import SchemaBuilder from '@pothos/core';
import RelayPlugin from '@pothos/plugin-relay';
import ScopeAuthPlugin from '@pothos/plugin-scope-auth';
import { GraphQLError, Kind, valueFromASTUntyped, type ObjectValueNode, type ValueNode } from 'graphql';
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
    JSONObjectOrText: { Input: Record<string, unknown> | string; Output: unknown };
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
    if (ast.kind !== Kind.STRING) throw new GraphQLError('DateTime must be an ISO-8601 string', { nodes: ast });
    return parseDateTime(ast.value, ast);
  },
});

/**
 * Literals are refused with their node: graphql-js reports a GraphQLError from parseLiteral as
 * it is, so without one the error has no location and no input field can be named for it.
 */
function parseDateTime(value: unknown, ast?: ValueNode): Date {
  const date = typeof value === 'string' ? parseIsoTime(value) : null;
  if (!date) {
    throw new GraphQLError(
      'DateTime must be an ISO-8601 date and time with its zone, e.g. 2026-04-01T12:00:00Z or 2026-04-01T14:00:00+02:00 (a date alone, 2026-04-01, is midnight UTC)',
      { nodes: ast },
    );
  }
  if (!isStorableTime(date)) throw new GraphQLError('DateTime must be between the years 1 and 9999', { nodes: ast });
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
    if (ast.kind !== Kind.OBJECT) throw new GraphQLError('Expected a JSON object', { nodes: ast });
    return objectLiteral(ast, variables);
  },
});

/** An inline JSON object, read as a variable's would be (see refuseInexactIntegers). */
function objectLiteral(ast: ObjectValueNode, variables: Parameters<typeof valueFromASTUntyped>[1]): Record<string, unknown> {
  refuseInexactIntegers(ast);
  return valueFromASTUntyped(ast, variables) as Record<string, unknown>;
}

const NOT_OBJECT_OR_TEXT = 'Expected a JSON object, or its text as a string';

/**
 * A JSON object or a string: a provider call's request body, which POST /v1/usage takes as its
 * object or as the text it was sent as (the raw body an app kept). A list, a number or a boolean
 * is refused, as there; an object literal is read as a JSONObject's is.
 */
builder.scalarType('JSONObjectOrText', {
  description: 'A JSON object, or text: e.g. a request body as its JSON object or as the text it was sent as.',
  serialize: (value) => value,
  parseValue: (value) => {
    if (typeof value === 'string') return value;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new GraphQLError(NOT_OBJECT_OR_TEXT);
    return value as Record<string, unknown>;
  },
  parseLiteral: (ast, variables) => {
    if (ast.kind === Kind.STRING) return ast.value;
    if (ast.kind !== Kind.OBJECT) throw new GraphQLError(NOT_OBJECT_OR_TEXT, { nodes: ast });
    return objectLiteral(ast, variables);
  },
});

/**
 * Refuses an integer literal a JSON number cannot hold exactly (beyond ±2^53 - 1): it would be
 * stored rounded, 12345678901234567891 as 12345678901234567000. A float literal (0.1) is stored
 * as the same double it reads as, so it stays; non-finite ones are refused with the rest of
 * what cannot be stored (shared/validation.ts). In a variable, such an integer has already been
 * rounded by JSON.parse before the server sees it, so nothing here can tell.
 */
function refuseInexactIntegers(ast: ObjectValueNode): void {
  // Without recursion: a literal may nest as deep as the query's size allows.
  const pending: ValueNode[] = [ast];
  for (let node = pending.pop(); node; node = pending.pop()) {
    if (node.kind === Kind.INT && !Number.isSafeInteger(Number(node.value))) {
      throw new GraphQLError(
        `JSONObject integers beyond ±${Number.MAX_SAFE_INTEGER} would be stored rounded: send ${node.value} as a string, "${node.value}"`,
        { nodes: ast },
      );
    }
    if (node.kind === Kind.OBJECT) for (const field of node.fields) pending.push(field.value);
    if (node.kind === Kind.LIST) for (const item of node.values) pending.push(item);
  }
}

builder.scalarType('Decimal', {
  description: 'An exact decimal number as a string, e.g. "12.50". Money is never a float.',
  serialize: (value) => String(value),
  parseValue: (value) => {
    if (typeof value !== 'string' && typeof value !== 'number') throw new GraphQLError('Decimal must be a string such as "12.50"');
    // Numbers are accepted only when they are integers: a JSON float may already have lost digits.
    if (typeof value === 'number' && !Number.isSafeInteger(value)) {
      // 1e21 or 9007199254740993 is no fraction, but a double may have changed it just the same.
      throw new GraphQLError(Number.isInteger(value) ? 'Pass a Decimal this large as a string, e.g. "12345678901234567890": a JSON number may already have lost digits' : 'Pass fractional Decimal values as strings, e.g. "0.15"');
    }
    return String(value);
  },
  parseLiteral: (ast) => {
    if (ast.kind === Kind.STRING || ast.kind === Kind.INT) return ast.value;
    throw new GraphQLError('Decimal must be a string such as "12.50"', { nodes: ast });
  },
});
