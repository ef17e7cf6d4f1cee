import { GraphQLError, Kind, parse, type DocumentNode, type FragmentDefinitionNode, type SelectionSetNode } from 'graphql';

/**
 * A subscription may not skip or include its root field by a directive (as the GraphQL spec now
 * says, and graphql-js 17 validates). graphql-js 16 validates the one root field by collecting it
 * with no variables: with a variable (`@include(if: $on)`) that validation threw instead of
 * answering, a 500 over HTTP; `@skip(if: true)` passed as a subscription of no field at all, whose
 * execution then threw a TypeError, and graphql-ws closed the socket with 4500 and its message.
 * Checked before graphql-js validates the document, over HTTP and WebSocket alike.
 */
export function subscriptionRootDirectiveError(document: DocumentNode): GraphQLError | undefined {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
  }
  for (const operation of document.definitions) {
    if (operation.kind !== Kind.OPERATION_DEFINITION || operation.operation !== 'subscription') continue;
    // The root selection set, through the fragments it spreads (each looked at once).
    const pending: SelectionSetNode[] = [operation.selectionSet];
    const seen = new Set<string>();
    for (let selectionSet = pending.pop(); selectionSet; selectionSet = pending.pop()) {
      for (const selection of selectionSet.selections) {
        if (selection.directives?.some((directive) => directive.name.value === 'skip' || directive.name.value === 'include')) {
          const name = operation.name ? `Subscription "${operation.name.value}"` : 'Anonymous Subscription';
          return new GraphQLError(`${name} must not use @skip or @include directives in the top level selection`, { extensions: { code: 'VALIDATION' } });
        }
        if (selection.kind === Kind.INLINE_FRAGMENT) pending.push(selection.selectionSet);
        if (selection.kind === Kind.FRAGMENT_SPREAD && !seen.has(selection.name.value)) {
          seen.add(selection.name.value);
          const fragment = fragments.get(selection.name.value);
          if (fragment) pending.push(fragment.selectionSet);
        }
      }
    }
  }
  return undefined;
}

/**
 * subscriptionRootDirectiveError of a query's text: parsed only when it may apply (unparsable text
 * is left to the server's own parse). Commas and comments may stand between `@` and the
 * directive's name (`@,include`, or a `#` comment and a new line): only the words are looked for.
 */
export function subscriptionRootDirectiveErrorIn(query: string): GraphQLError | undefined {
  if (!query.includes('subscription') || !query.includes('@') || !/\b(?:skip|include)\b/.test(query)) return undefined;
  let document: DocumentNode;
  try {
    document = parse(query, { noLocation: true });
  } catch {
    return undefined;
  }
  return subscriptionRootDirectiveError(document);
}
