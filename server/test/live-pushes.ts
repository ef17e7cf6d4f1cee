import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';

/** GraphQL subscriptions over WebSocket to one server, each collecting the data it pushes. */
export class LivePushes {
  private readonly clients: Client[] = [];

  /** Getters: a test's server and key exist only once its beforeAll has run. */
  constructor(
    private readonly serverUrl: () => string,
    private readonly secret: () => string,
  ) {}

  /** Subscribes and answers the list its pushes are added to. */
  watch<T>(query: string, variables: Record<string, unknown>): T[] {
    const client = createClient({
      url: this.serverUrl().replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${this.secret()}` }, retryAttempts: 0,
    });
    this.clients.push(client);
    const pushed: T[] = [];
    client.subscribe<T>({ query, variables }, {
      next: (result) => {
        if (result.data) pushed.push(result.data);
      },
      error: () => undefined,
      complete: () => undefined,
    });
    return pushed;
  }

  async dispose(): Promise<void> {
    await Promise.all(this.clients.map((client) => client.dispose()));
  }
}
