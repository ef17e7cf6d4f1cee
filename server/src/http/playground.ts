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
    // Empty until the user pastes a key: a placeholder value would be sent, and refused, with
    // the schema request. (Header values must also be ASCII, or the browser will not send them.)
    defaultHeaders: JSON.stringify({ Authorization: '' }, null, 2),
    defaultEditorToolsVisibility: 'headers',
    shouldPersistHeaders: true,
    defaultQuery: `# In the Headers tab below, set Authorization to "Bearer <your secret key>", then run:
query Viewer {
  viewer { kind merchant { id name } }
  customers(first: 5) { totalCount edges { node { id externalId email } } }
}
`,
  });
  return cached;
}
