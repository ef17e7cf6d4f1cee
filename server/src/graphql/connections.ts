import { resolveCursorConnection as resolvePothosCursorConnection } from '@pothos/plugin-relay';
import { invalidField } from '../shared/errors.ts';

/**
 * Relay connections with a `totalCount`: the count runs only when a client selects it,
 * with the same scope and filter as the page.
 */
export interface CountableConnection {
  countAll: () => Promise<number>;
}

export function withTotalCount<C extends object>(connection: C, countAll: () => Promise<number>): C & CountableConnection {
  return Object.assign(connection, { countAll });
}

export function totalCountOf(connection: unknown): Promise<number> {
  return (connection as CountableConnection).countAll();
}

/**
 * Pothos's resolveCursorConnection, except that:
 * - `first` with `last` is refused: Pothos pages by `first` and ignores `last` without a word,
 *   and Relay discourages sending both. Every connection resolves through here, so all refuse it.
 * - a page with no rows and no cursor given answers null for startCursor/endCursor (the schema's
 *   PageInfo allows it; Relay: null when there are no results). Pothos answers "" there, a cursor
 *   every connection refuses (decodeCreatedCursor), so `first: 0`, or an empty filter's page,
 *   handed the client a cursor it could not page on with.
 */
export async function resolveCursorConnection<U extends Promise<readonly unknown[] | null> | readonly unknown[] | null>(
  ...params: Parameters<typeof resolvePothosCursorConnection<U>>
): ReturnType<typeof resolvePothosCursorConnection<U>> {
  const { first, last } = params[0].args;
  if (first != null && last != null) {
    throw invalidField('last', 'cannot be used together with first: page forwards with first (and after), or backwards with last (and before)');
  }
  const connection = await resolvePothosCursorConnection<U>(...params);
  if (connection?.pageInfo) {
    const { pageInfo } = connection as { pageInfo: { startCursor?: string | null; endCursor?: string | null } };
    if (pageInfo.startCursor === '') pageInfo.startCursor = null;
    if (pageInfo.endCursor === '') pageInfo.endCursor = null;
  }
  return connection;
}
