import { renderGraphiQL } from '@graphql-yoga/render-graphiql';

/**
 * GraphiQL with every asset inlined from the npm package: the page makes no request to any
 * host but this server, so it works offline. Subscriptions go over graphql-ws on /graphql.
 */
let cached: string | undefined;

export function playgroundHtml(): string {
  cached ??= renderGraphiQL({
    title: 'Tollgate GraphQL playground',
    endpoint: '/graphql',
    subscriptionsProtocol: 'WS',
    // ASCII only: browsers refuse to send a header value with characters such as an ellipsis.
    defaultHeaders: JSON.stringify({ Authorization: 'Bearer sk_test_PASTE_YOUR_SECRET_KEY' }, null, 2),
    defaultEditorToolsVisibility: 'headers',
    shouldPersistHeaders: true,
    defaultQuery: `# Paste your secret key into the Headers tab below, then run:
query Viewer {
  viewer { kind merchant { id name } }
  customers(first: 5) { totalCount edges { node { id externalId email } } }
}
`,
  });
  return cached;
}
