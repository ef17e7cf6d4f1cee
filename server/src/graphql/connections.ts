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
