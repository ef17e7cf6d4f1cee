import {
  defaultFieldResolver,
  GraphQLError,
  SchemaMetaFieldDef,
  TypeMetaFieldDef,
  getIntrospectionQuery,
  getNamedType,
  getNullableType,
  getOperationAST,
  isAbstractType,
  isEnumType,
  isInputObjectType,
  isInterfaceType,
  isIntrospectionType,
  isListType,
  isObjectType,
  isWrappingType,
  Kind,
  parse,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLField,
  type GraphQLNamedType,
  type GraphQLResolveInfo,
  type GraphQLSchema,
  type GraphQLType,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValueNode,
} from 'graphql';

/**
 * Depth and complexity limits, measured on the operation about to run (with its variables,
 * so `first: $n` is counted at its real size).
 *
 * Introspection is measured too, against its own budget: one full introspection of this schema
 * costs more than the default budget of a data query, and tools need it. Its depth is not
 * limited (graphql-js's own introspection query nests `ofType` nine deep).
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
  /** The cost of the operation's `__schema` / `__type` selections, kept apart from complexity. */
  introspection: number;
}

/**
 * Rows assumed for a list field that takes no first/last (plans, meters, providerPrices…):
 * these lists are a merchant's configuration, usually a handful to a few dozen rows, and
 * counting them as one item let a thousand aliases of one through.
 */
export const UNPAGINATED_LIST_SIZE = 10;

/** The most rows a connection returns: the maxSize every connection resolver passes to Pothos. */
export const MAX_PAGE_SIZE = 100;

/**
 * Fields that cost far more than the one row they return, priced at a fixed cost in place of 1,
 * so aliasing them a thousand times is refused. A whole-ledger check reads every leg,
 * transaction, wallet and grant of the merchant (several full scans): priced as five full pages.
 * A count visits every row its filter matches, however few it returns: half a full page.
 * By field name: every `totalCount` here is a connection's count, every `spentThisMonth` a spend limit's sum, `usageAccess` a wallet read and that sum,
 * every `metadata` a caller's JSON object.
 */
export const FIELD_COSTS: ReadonlyMap<string, number> = new Map([
  ['ledgerIntegrity', 5 * MAX_PAGE_SIZE],
  ['totalCount', MAX_PAGE_SIZE / 2],
  // A spend limit's month so far sums the customer's usage events of the month: a count's cost.
  ['spentThisMonth', MAX_PAGE_SIZE / 2],
  // A customer's access check reads its wallet and limits and sums its month's usage events, whichever fields are asked for.
  ['usageAccess', MAX_PAGE_SIZE / 2],
  // Free-form JSON of up to 16 KB, where another field answers a few bytes: at 1 each, 5,000 of
  // them (aliased, or a page's rows) made an 80 MB answer within the limit; at 10, 8 MB.
  ['metadata', 10],
]);

/**
 * A mutation writes, in its own transaction, however little it answers: each one at the root of
 * an operation costs this much, so a single request cannot alias hundreds of writes
 * (5,000 by default allows 200).
 */
export const MUTATION_COST = 25;

/**
 * Mutations that cost far more than one write: an import parses and writes a whole price table
 * (thousands of rows, seconds of work), so an operation holds at most two of them by default.
 */
export const MUTATION_COSTS: ReadonlyMap<string, number> = new Map([['importModelsDevPrices', 2500]]);

/**
 * Introspection may cost this many full introspections of the schema per operation: twice,
 * so a tool that asks a little more than graphql-js's query still fits, while a thousand
 * aliased copies of it (a 61 MB answer) do not.
 */
const FULL_INTROSPECTIONS_ALLOWED = 2;

/** How many items an introspection list (`types`, `fields`, `args`…) holds in this schema. */
interface ListSize {
  /** The longest such list: the size assumed when one object is asked for (`__type(name:)`). */
  largest: number;
  /** Items per parent on average: the size assumed when every parent is listed, as in `types { fields }`. */
  average: number;
}

/** Where a selection sits inside introspection, which decides how many items a list is assumed to hold. */
interface IntrospectionPlace {
  /** Below an introspection list every parent is listed, not one chosen by name. */
  enumerating: boolean;
  /** How many `ofType`s in a row lead here. */
  ofTypeLevel: number;
}

/**
 * The deepest nesting of selections (fields, inline fragments and fragment spreads, introspection's
 * included) a document may have, its fragments counted where they are spread. The parser stops each
 * definition near a thousand levels, but chained fragments nest one inside another, to tens of
 * thousands of levels: graphql-js's validation of overlapping fields and the measure below both
 * recurse through them, and overflowed the stack (answering INTERNAL, a 500) before the depth limit
 * was measured. Far beyond any real query (introspection nests about fifteen deep) and several
 * times below where validation runs out of stack (about 750 levels of two chains compared).
 */
export const MAX_SELECTION_NESTING = 200;

/** A selection set's cost, with what its connection pays once apart from what each row of the page pays. */
interface SelectionCost extends QueryCost {
  /** A connection's own fields (totalCount, pageInfo): paid once, not once per row of its page. */
  perConnection: number;
}

/** Connection types as Pothos names them; their `edges` are the page. */
const isConnectionType = (type: GraphQLNamedType | null | undefined): boolean => type?.name.endsWith('Connection') ?? false;

interface SchemaFacts {
  introspectionLists: Map<string, ListSize>;
  /** The most list / non-null wrappers around one type (`[X!]!` has three): deeper `ofType`s are null. */
  deepestWrapping: number;
  introspectionBudget?: number;
}

const factsBySchema = new WeakMap<GraphQLSchema, SchemaFacts>();

function schemaFacts(schema: GraphQLSchema): SchemaFacts {
  let facts = factsBySchema.get(schema);
  if (!facts) {
    facts = { introspectionLists: introspectionListSizes(schema), deepestWrapping: deepestWrapping(schema) };
    factsBySchema.set(schema, facts);
  }
  return facts;
}

function introspectionListSizes(schema: GraphQLSchema): Map<string, ListSize> {
  const types = Object.values(schema.getTypeMap());
  const directives = schema.getDirectives();
  const fields = types.flatMap((type) => (isObjectType(type) || isInterfaceType(type) ? Object.values(type.getFields()) : []));
  const sizeOf = (counts: number[]): ListSize => ({
    largest: Math.max(0, ...counts),
    average: counts.length ? Math.ceil(counts.reduce((sum, count) => sum + count, 0) / counts.length) : 0,
  });
  const perType = (count: (type: GraphQLNamedType) => number) => sizeOf(types.map(count));
  return new Map([
    ['types', sizeOf([types.length])],
    ['directives', sizeOf([directives.length])],
    ['fields', perType((type) => (isObjectType(type) || isInterfaceType(type) ? Object.keys(type.getFields()).length : 0))],
    ['inputFields', perType((type) => (isInputObjectType(type) ? Object.keys(type.getFields()).length : 0))],
    ['enumValues', perType((type) => (isEnumType(type) ? type.getValues().length : 0))],
    ['interfaces', perType((type) => (isObjectType(type) || isInterfaceType(type) ? type.getInterfaces().length : 0))],
    ['possibleTypes', perType((type) => (isAbstractType(type) ? schema.getPossibleTypes(type).length : 0))],
    ['args', sizeOf([...fields, ...directives].map((owner) => owner.args.length))],
  ]);
}

function deepestWrapping(schema: GraphQLSchema): number {
  const wrappers = (type: GraphQLType): number => (isWrappingType(type) ? 1 + wrappers(type.ofType) : 0);
  const outputFields = Object.values(schema.getTypeMap()).flatMap((type) => (isObjectType(type) || isInterfaceType(type) ? Object.values(type.getFields()) : []));
  const inputFields = Object.values(schema.getTypeMap()).flatMap((type) => (isInputObjectType(type) ? Object.values(type.getFields()) : []));
  const args = [...outputFields, ...schema.getDirectives()].flatMap((owner) => owner.args);
  return Math.max(0, ...[...outputFields, ...inputFields, ...args].map((typed) => wrappers(typed.type)));
}

/** The introspection budget: what graphql-js's full introspection query (every option on) costs here. */
function introspectionBudget(schema: GraphQLSchema): number {
  const facts = schemaFacts(schema);
  if (facts.introspectionBudget === undefined) {
    const document = parse(
      getIntrospectionQuery({
        descriptions: true,
        specifiedByUrl: true,
        directiveIsRepeatable: true,
        schemaDescription: true,
        inputValueDeprecation: true,
        oneOf: true,
      }),
    );
    const cost = measureOperation(schema, document, getOperationAST(document)!, undefined, 0);
    facts.introspectionBudget = FULL_INTROSPECTIONS_ALLOWED * cost.introspection;
  }
  return facts.introspectionBudget;
}

function fieldDefinition(schema: GraphQLSchema, parentType: GraphQLNamedType | null | undefined, name: string): GraphQLField<unknown, unknown> | undefined {
  // The root's meta fields are not among its getFields().
  if (name === SchemaMetaFieldDef.name && parentType === schema.getQueryType()) return SchemaMetaFieldDef;
  if (name === TypeMetaFieldDef.name && parentType === schema.getQueryType()) return TypeMetaFieldDef;
  return parentType && (isObjectType(parentType) || isInterfaceType(parentType)) ? parentType.getFields()[name] : undefined;
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
  const variableDefaults = new Map(operation.variableDefinitions?.map((definition) => [definition.variable.name.value, definition.defaultValue]));
  const { introspectionLists, deepestWrapping } = schemaFacts(schema);
  const mutationType = schema.getMutationType();
  const root = operation.operation === 'query' ? schema.getQueryType() : operation.operation === 'mutation' ? mutationType : schema.getSubscriptionType();

  /** A page size as given: undefined when left out (the argument's default applies), null when given as null. */
  const pageSize = (value: ValueNode | undefined): number | null | undefined => {
    if (!value) return undefined;
    if (value.kind === Kind.INT) return Number(value.value);
    if (value.kind === Kind.VARIABLE) {
      const variable = variables?.[value.name.value];
      // A variable left out takes its declared default, as it does when the operation runs.
      if (variable === undefined) return pageSize(variableDefaults.get(value.name.value));
      return typeof variable === 'number' ? variable : null;
    }
    return null;
  };

  const sizeArgument = (selection: FieldNode, field: GraphQLField<unknown, unknown> | undefined, name: 'first' | 'last') => {
    const given = pageSize(selection.arguments?.find((arg) => arg.name.value === name)?.value);
    if (given !== undefined) return given;
    const declared = field?.args.find((arg) => arg.name === name)?.defaultValue;
    return typeof declared === 'number' ? declared : null;
  };

  const itemCount = (selection: FieldNode, field: GraphQLField<unknown, unknown> | undefined, parentType: GraphQLNamedType | null | undefined) => {
    // Pothos returns `first ?? last` rows: the larger of the two is never an undercount, in any order.
    const sizes = [sizeArgument(selection, field, 'first'), sizeArgument(selection, field, 'last')].filter((size) => size !== null);
    if (sizes.length > 0) return Math.min(Math.max(...sizes), MAX_PAGE_SIZE);
    if (!field) return 1;
    if (isConnectionType(getNamedType(field.type))) return defaultPageSize;
    // A connection's edges (or nodes) are the page its field already counted.
    return isListType(getNullableType(field.type)) && !isConnectionType(parentType) ? UNPAGINATED_LIST_SIZE : 1;
  };

  const introspectionItems = (name: string, place: IntrospectionPlace): number => {
    // An `ofType` chain longer than any type's wrapping in this schema ends in null.
    if (name === 'ofType') return place.ofTypeLevel < deepestWrapping ? 1 : 0;
    const list = introspectionLists.get(name);
    if (!list) return 1;
    return place.enumerating ? list.average : list.largest;
  };

  const fragmentCosts = new Map<string, SelectionCost>();

  // `visiting` stops a fragment cycle (which validation rejects anyway) from recursing forever.
  const walk = (
    selectionSet: SelectionSetNode,
    parentType: GraphQLNamedType | null | undefined,
    visiting: Set<string>,
    place: IntrospectionPlace,
    nesting: number,
  ): SelectionCost => {
    if (nesting > MAX_SELECTION_NESTING) {
      throw new GraphQLError(`Selections are nested more than ${MAX_SELECTION_NESTING} deep`, {
        extensions: { code: 'VALIDATION', reason: 'QUERY_TOO_DEEP', http: { status: 400 } },
      });
    }
    let depth = 0;
    let complexity = 0;
    let introspection = 0;
    let perConnection = 0;
    for (const selection of selectionSet.selections) {
      if (selection.kind === Kind.FIELD) {
        const name = selection.name.value;
        // Answered from the type the executor already holds: no resolver, no rows. Unaliased it is
        // free (clients add it to every selection, and repeats merge into one key); each alias is
        // one more key in every row of the answer, so it counts as a field: 40,000 free aliases
        // under a page of 100 turned a 700 KB query into a 79 MB answer.
        if (name === '__typename') {
          if (selection.alias && selection.alias.value !== name) {
            if (parentType && isIntrospectionType(parentType)) introspection += 1;
            else if (isConnectionType(parentType)) perConnection += 1;
            else complexity += 1;
          }
          continue;
        }
        const field = fieldDefinition(schema, parentType, name);
        const childType = field ? getNamedType(field.type) : undefined;
        const isIntrospection = name.startsWith('__') || (parentType ? isIntrospectionType(parentType) : false);
        const items = isIntrospection ? introspectionItems(name, place) : Math.max(1, itemCount(selection, field, parentType));
        const childPlace: IntrospectionPlace = {
          enumerating: place.enumerating || (isIntrospection && introspectionLists.has(name)),
          ofTypeLevel: isIntrospection && name === 'ofType' ? place.ofTypeLevel + 1 : 0,
        };
        const child =
          selection.selectionSet && items > 0
            ? walk(selection.selectionSet, childType, visiting, childPlace, nesting + 1)
            : { depth: 0, complexity: 0, introspection: 0, perConnection: 0 };
        if (isIntrospection) {
          introspection += 1 + items * child.introspection;
        } else {
          depth = Math.max(depth, 1 + child.depth);
          const own = parentType && parentType === mutationType ? (MUTATION_COSTS.get(name) ?? MUTATION_COST) : (FIELD_COSTS.get(name) ?? 1);
          const cost = own + items * child.complexity + child.perConnection;
          // `edges` and `nodes` are the page (counted by the connection's size); the rest once per connection.
          if (isConnectionType(parentType) && name !== 'edges' && name !== 'nodes') perConnection += cost;
          else complexity += cost;
        }
      } else {
        const fragment =
          selection.kind === Kind.FRAGMENT_SPREAD ? fragments.get(selection.name.value) : selection;
        const key = selection.kind === Kind.FRAGMENT_SPREAD ? selection.name.value : undefined;
        if (!fragment || (key && visiting.has(key))) continue;
        const typeName = fragment.typeCondition?.name.value;
        const type = typeName ? schema.getType(typeName) : parentType;
        // A named fragment costs the same wherever it is spread (at one place in introspection):
        // measured once, a thousand aliases spreading it stay cheap to measure.
        const memoKey = key && `${key}:${place.enumerating}:${place.ofTypeLevel}`;
        let inner = memoKey ? fragmentCosts.get(memoKey) : undefined;
        if (!inner) {
          inner = walk(fragment.selectionSet, type, key ? new Set([...visiting, key]) : visiting, place, nesting + 1);
          if (memoKey) fragmentCosts.set(memoKey, inner);
        }
        depth = Math.max(depth, inner.depth);
        complexity += inner.complexity;
        introspection += inner.introspection;
        perConnection += inner.perConnection;
      }
    }
    return { depth, complexity, introspection, perConnection };
  };

  const { depth, complexity, introspection } = walk(operation.selectionSet, root, new Set(), { enumerating: false, ofTypeLevel: 0 }, 0);
  return { depth, complexity, introspection };
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
  const budget = introspectionBudget(schema);
  if (cost.introspection > budget) {
    throw reject(`Introspection complexity ${cost.introspection} exceeds the limit of ${budget}`, 'QUERY_TOO_COMPLEX');
  }
}

/**
 * The longest chain of fragments spreading one another that a document may hold. graphql-js
 * validates fragments recursively, so a document of thousands of chained fragments (`...F0`,
 * `fragment F0 { ...F1 }`, …: under a megabyte) overflows the stack before any limit above is
 * measured; such a document is refused first. Real clients nest fragments a few levels deep.
 */
export const MAX_FRAGMENT_CHAIN = 50;

/**
 * Whether `query` chains fragments deeper than MAX_FRAGMENT_CHAIN. Costs nothing for a query
 * with few spreads; otherwise parses it (unparsable text is left to the server's own parse) and
 * measures the chain without recursion.
 */
export function fragmentChainTooLong(query: string, parsed = lazyDocument(query)): boolean {
  let spreads = 0;
  for (let at = query.indexOf('...'); at !== -1 && spreads <= MAX_FRAGMENT_CHAIN; at = query.indexOf('...', at + 3)) spreads++;
  if (spreads <= MAX_FRAGMENT_CHAIN) return false;
  const document = parsed();
  if (!document) return false;
  // A definition is one link of the chain, and each fragment it spreads one more (with the operation: limit + 1).
  return deeperThan(document, MAX_FRAGMENT_CHAIN + 1, (selectionSet) => {
    const spreads: Spread[] = [];
    const pending: SelectionSetNode[] = [selectionSet];
    while (pending.length > 0) {
      for (const selection of pending.pop()!.selections) {
        if (selection.kind === Kind.FRAGMENT_SPREAD) spreads.push({ name: selection.name.value, adds: 1 });
        else if (selection.selectionSet) pending.push(selection.selectionSet);
      }
    }
    return { own: 1, spreads };
  });
}

/**
 * Whether `query` nests selections deeper than MAX_SELECTION_NESTING, its fragments' selections
 * counted where they are spread. The parser stops each definition near a thousand levels, but
 * chained fragments nest one inside another: fifty of them nest tens of thousands of levels deep,
 * and graphql-js validates overlapping fields (two fields of one name, each spreading its own
 * chain) recursively through all of them, overflowing the stack: answered INTERNAL (500), before
 * the depth limit could be measured. Such a document is refused first. Costs nothing for a query
 * with few braces; otherwise parses it (unparsable text is left to the server's own parse) and
 * measures without recursion.
 */
export function selectionsTooDeep(query: string, parsed = lazyDocument(query)): boolean {
  let braces = 0;
  for (let at = query.indexOf('{'); at !== -1 && braces <= MAX_SELECTION_NESTING; at = query.indexOf('{', at + 1)) braces++;
  if (braces <= MAX_SELECTION_NESTING) return false;
  const document = parsed();
  if (!document) return false;
  // A definition's deepest selection set of its own, and the level of each fragment it spreads
  // (a spread, as an inline fragment, is one level: measureOperation's walk counts them so).
  return deeperThan(document, MAX_SELECTION_NESTING, (selectionSet) => {
    let own = 0;
    const spreads: Spread[] = [];
    const pending: { selectionSet: SelectionSetNode; level: number }[] = [{ selectionSet, level: 0 }];
    for (let next = pending.pop(); next; next = pending.pop()) {
      own = Math.max(own, next.level);
      for (const selection of next.selectionSet.selections) {
        if (selection.kind === Kind.FRAGMENT_SPREAD) spreads.push({ name: selection.name.value, adds: next.level + 1 });
        else if (selection.selectionSet) pending.push({ selectionSet: selection.selectionSet, level: next.level + 1 });
      }
    }
    return { own, spreads };
  });
}

/** A fragment spread, and what reaching the fragment through it adds to the measure. */
interface Spread {
  name: string;
  adds: number;
}

/**
 * Whether some definition of `document` measures more than `limit`, following the fragments it
 * spreads: a definition measures the larger of its own measure and, for each spread, what the
 * spread adds plus the fragment's measure. Every definition is a root: validation follows chains
 * through fragments nothing spreads too. Depth-first with an explicit stack, since the chains are
 * what would overflow a recursive walk; a cycle (refused by validation anyway) is not followed round.
 */
function deeperThan(document: DocumentNode, limit: number, measure: (selectionSet: SelectionSetNode) => { own: number; spreads: Spread[] }): boolean {
  const measured = new Map<string, { own: number; spreads: Spread[] }>();
  const roots: string[] = [];
  document.definitions.forEach((definition, index) => {
    if (definition.kind !== Kind.FRAGMENT_DEFINITION && definition.kind !== Kind.OPERATION_DEFINITION) return;
    const name = definition.kind === Kind.FRAGMENT_DEFINITION ? definition.name.value : `operation ${index}`;
    roots.push(name);
    measured.set(name, measure(definition.selectionSet));
  });
  const deepest = new Map<string, number>();
  const onPath = new Set<string>();
  for (const root of roots) {
    if (deepest.has(root)) continue;
    const stack: { name: string; next: number }[] = [{ name: root, next: 0 }];
    onPath.add(root);
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const { own, spreads } = measured.get(top.name)!;
      if (top.next < spreads.length) {
        const child = spreads[top.next++]!.name;
        if (!deepest.has(child) && !onPath.has(child) && measured.has(child)) {
          stack.push({ name: child, next: 0 });
          onPath.add(child);
        }
        continue;
      }
      let value = own;
      for (const spread of spreads) if (!onPath.has(spread.name)) value = Math.max(value, spread.adds + (deepest.get(spread.name) ?? 0));
      if (value > limit) return true;
      deepest.set(top.name, value);
      onPath.delete(top.name);
      stack.pop();
    }
  }
  return false;
}

/** Parses `query` once, when first asked; undefined when it does not parse (left to the server's own parse). */
function lazyDocument(query: string): () => DocumentNode | undefined {
  let parsed: { document: DocumentNode | undefined } | undefined;
  return () => {
    if (!parsed) {
      try {
        parsed = { document: parse(query, { noLocation: true }) };
      } catch {
        parsed = { document: undefined };
      }
    }
    return parsed.document;
  };
}

/**
 * The refusal (VALIDATION, QUERY_TOO_DEEP) of a document nested too deep to validate or measure
 * safely: fragments chained beyond MAX_FRAGMENT_CHAIN, or selections beyond MAX_SELECTION_NESTING.
 * Checked on the text, before graphql-js validates it, over HTTP and WebSocket alike.
 */
export function documentTooDeep(query: string): GraphQLError | undefined {
  const document = lazyDocument(query);
  const refuse = (message: string) => new GraphQLError(message, { extensions: { code: 'VALIDATION', reason: 'QUERY_TOO_DEEP' } });
  if (fragmentChainTooLong(query, document)) return refuse(`Fragments are chained more than ${MAX_FRAGMENT_CHAIN} deep`);
  if (selectionsTooDeep(query, document)) return refuse(`Selections are nested more than ${MAX_SELECTION_NESTING} deep`);
  return undefined;
}

/**
 * What an execution may still resolve, for limitResolvedFields: set on the request's context
 * (`maxResolvedFields`); a context without it is not limited (services calling the schema directly).
 */
interface Budget {
  left: number;
}

/** One budget per query or mutation (its context), and per event of a subscription (its payload: the root). */
const budgets = new WeakMap<object, { operation: Budget | null; events: WeakMap<object, Budget> }>();

function budgetOf(context: unknown, root: unknown): Budget | null {
  const max = (context as { maxResolvedFields?: number } | null)?.maxResolvedFields;
  if (typeof max !== 'number' || typeof context !== 'object' || context === null) return null;
  let entry = budgets.get(context);
  if (!entry) budgets.set(context, (entry = { operation: null, events: new WeakMap() }));
  if (typeof root !== 'object' || root === null) return (entry.operation ??= { left: max });
  let budget = entry.events.get(root);
  if (!budget) entry.events.set(root, (budget = { left: max }));
  return budget;
}

/**
 * The complexity limit, held at run time as well: every field resolved counts against the limit
 * (one, or its FIELD_COSTS price), and past it each further field fails at once (VALIDATION, QUERY_TOO_COMPLEX) without
 * running its resolver. The measure before execution counts a list that takes no page size as
 * UNPAGINATED_LIST_SIZE rows, which some lists exceed (every version of every rule, a price table
 * imported from models.dev): aliased a few hundred times, such a query passed the measure and
 * resolved many times the limit. Wraps every field of the schema's own object types, once.
 */
export function limitResolvedFields(schema: GraphQLSchema): GraphQLSchema {
  for (const type of Object.values(schema.getTypeMap())) {
    if (!isObjectType(type) || isIntrospectionType(type)) continue;
    for (const field of Object.values(type.getFields())) {
      const resolve = field.resolve ?? defaultFieldResolver;
      if ((resolve as { budgeted?: boolean }).budgeted) continue;
      // As the measure prices it: a list longer than the measure assumed must not fetch 16 KB metadata at 1 each.
      const cost = FIELD_COSTS.get(field.name) ?? 1;
      const budgeted: typeof resolve = (source, args, context, info) => {
        const budget = budgetOf(context, info.rootValue);
        if (budget && (budget.left -= cost) < 0) throw tooManyFields(context);
        const result = resolve(source, args, context, info);
        // Aliased __typenames have no resolver to count them: they are counted here, once for
        // each object (each row of a list) this field answers.
        const typenames = budget ? aliasedTypenames(info) : 0;
        if (typenames === 0) return result;
        const charge = (value: unknown) => {
          const objects = Array.isArray(value) ? value.length : value == null ? 0 : 1;
          budget!.left -= objects * typenames;
          if (budget!.left < 0) throw tooManyFields(context);
          return value;
        };
        // Prisma's and Pothos' promises are thenables, not always Promises.
        return typeof (result as PromiseLike<unknown> | null)?.then === 'function' ? Promise.resolve(result).then(charge) : charge(result);
      };
      field.resolve = Object.assign(budgeted, { budgeted: true });
    }
  }
  return schema;
}

function tooManyFields(context: unknown): GraphQLError {
  return new GraphQLError(`The query resolves more than the limit of ${(context as { maxResolvedFields: number }).maxResolvedFields} fields: ask for fewer rows or fields`, {
    extensions: { code: 'VALIDATION', reason: 'QUERY_TOO_COMPLEX' },
  });
}

/** Aliased __typenames in a field's selection (its fragments' included), by the field's nodes (graphql-js reuses them for every row). */
const typenameCounts = new WeakMap<readonly FieldNode[], number>();

function aliasedTypenames(info: GraphQLResolveInfo): number {
  let count = typenameCounts.get(info.fieldNodes);
  if (count === undefined) {
    count = 0;
    const seen = new Set<string>();
    const pending = info.fieldNodes.flatMap((node) => (node.selectionSet ? [node.selectionSet] : []));
    for (let set = pending.pop(); set; set = pending.pop()) {
      for (const selection of set.selections) {
        if (selection.kind === Kind.FIELD) {
          if (selection.name.value === '__typename' && selection.alias && selection.alias.value !== '__typename') count++;
        } else if (selection.kind === Kind.INLINE_FRAGMENT) {
          pending.push(selection.selectionSet);
        } else if (!seen.has(selection.name.value)) {
          seen.add(selection.name.value);
          const fragment = info.fragments[selection.name.value];
          if (fragment) pending.push(fragment.selectionSet);
        }
      }
    }
    typenameCounts.set(info.fieldNodes, count);
  }
  return count;
}
