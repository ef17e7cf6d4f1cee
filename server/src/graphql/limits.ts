import {
  GraphQLError,
  getNamedType,
  isObjectType,
  isInterfaceType,
  Kind,
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLNamedType,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValueNode,
} from 'graphql';

/**
 * Depth and complexity limits, measured on the operation about to run (with its variables,
 * so `first: $n` is counted at its real size). Introspection is not counted: tools need it
 * and it cannot touch billing data.
 */
export interface QueryLimits {
  maxDepth: number;
  maxComplexity: number;
  /** Page size assumed for a connection queried without first/last. */
  defaultPageSize: number;
}

export interface QueryCost {
  depth: number;
  complexity: number;
}

export function measureOperation(
  schema: GraphQLSchema,
  document: DocumentNode,
  operation: OperationDefinitionNode,
  variables: Record<string, unknown> | undefined,
  defaultPageSize: number,
): QueryCost {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
  }
  const root =
    operation.operation === 'query' ? schema.getQueryType() : operation.operation === 'mutation' ? schema.getMutationType() : schema.getSubscriptionType();

  const pageSize = (value: ValueNode | undefined): number | undefined => {
    if (!value) return undefined;
    if (value.kind === Kind.INT) return Number(value.value);
    if (value.kind === Kind.VARIABLE) {
      const variable = variables?.[value.name.value];
      return typeof variable === 'number' ? variable : undefined;
    }
    return undefined;
  };

  // `visiting` stops a fragment cycle (which validation rejects anyway) from recursing forever.
  const walk = (selectionSet: SelectionSetNode, parentType: GraphQLNamedType | null | undefined, visiting: Set<string>): QueryCost => {
    let depth = 0;
    let complexity = 0;
    for (const selection of selectionSet.selections) {
      if (selection.kind === Kind.FIELD) {
        const name = selection.name.value;
        if (name.startsWith('__')) continue;
        const field = parentType && (isObjectType(parentType) || isInterfaceType(parentType)) ? parentType.getFields()[name] : undefined;
        const childType = field ? getNamedType(field.type) : undefined;
        let childCost: QueryCost = { depth: 0, complexity: 0 };
        if (selection.selectionSet) childCost = walk(selection.selectionSet, childType, visiting);
        const sizeArg = selection.arguments?.find((arg) => arg.name.value === 'first' || arg.name.value === 'last');
        const isConnection = childType?.name.endsWith('Connection') ?? false;
        const multiplier = pageSize(sizeArg?.value) ?? (isConnection ? defaultPageSize : 1);
        depth = Math.max(depth, 1 + childCost.depth);
        complexity += 1 + Math.max(1, multiplier) * childCost.complexity;
      } else {
        const fragment =
          selection.kind === Kind.FRAGMENT_SPREAD ? fragments.get(selection.name.value) : selection;
        const key = selection.kind === Kind.FRAGMENT_SPREAD ? selection.name.value : undefined;
        if (!fragment || (key && visiting.has(key))) continue;
        const typeName = fragment.typeCondition?.name.value;
        const type = typeName ? schema.getType(typeName) : parentType;
        const inner = walk(fragment.selectionSet, type, key ? new Set([...visiting, key]) : visiting);
        depth = Math.max(depth, inner.depth);
        complexity += inner.complexity;
      }
    }
    return { depth, complexity };
  };

  return walk(operation.selectionSet, root, new Set());
}

/** Throws a VALIDATION error (HTTP 400) naming the limit an operation exceeds. */
export function enforceQueryLimits(
  limits: QueryLimits,
  schema: GraphQLSchema,
  document: DocumentNode,
  operation: OperationDefinitionNode,
  variables: Record<string, unknown> | undefined,
): void {
  const cost = measureOperation(schema, document, operation, variables, limits.defaultPageSize);
  const reject = (message: string, reason: string) =>
    new GraphQLError(message, { extensions: { code: 'VALIDATION', reason, http: { status: 400 } } });
  if (cost.depth > limits.maxDepth) {
    throw reject(`Query depth ${cost.depth} exceeds the limit of ${limits.maxDepth}`, 'QUERY_TOO_DEEP');
  }
  if (cost.complexity > limits.maxComplexity) {
    throw reject(`Query complexity ${cost.complexity} exceeds the limit of ${limits.maxComplexity}`, 'QUERY_TOO_COMPLEX');
  }
}
