import { PothosValidationError } from '@pothos/core';
import { GraphQLError, Kind, parse, visit, type ASTNode, type DocumentNode, type OperationDefinitionNode, type Source } from 'graphql';

/**
 * The input a refused request is at fault for, named as the services name fields in their own
 * VALIDATION errors: `amount` (a field of the `input` argument goes by its own name),
 * `filter.createdAfter`, `first`, `priceRules.0.effectiveFrom`.
 *
 * graphql-js and Pothos refuse input at three layers, and none says which argument it was:
 * - a variable's value (`$a = 1.5`): the error points at the variable's definition, so the
 *   argument is where the operation uses the variable (inside an input object literal, the path
 *   to it); a value nested in the variable is named in the message (`at "a.amount"`).
 * - a literal written in the query (`amount: 1.5`): the error points at the value node, found
 *   again in the document.
 * - Pothos's own argument checks (a negative `first`): the message names the argument.
 * The formatter is handed the error alone, so the document is parsed again from the error's
 * source, and indexed once for all of a request's errors. Undefined when no input can be named.
 */
export function inputFieldOf(error: unknown): string | undefined {
  try {
    const path = pathOf(error);
    if (!path?.length) return undefined;
    // The fields of an `input` argument are named bare, as the services name them.
    if (path[0] === 'input' && path.length > 1) path.shift();
    return path.join('.');
  } catch {
    return undefined; // a hint only: never a reason to fail formatting the error itself
  }
}

type Segment = string | number;

const NAME = '[_A-Za-z][_0-9A-Za-z]*';
/** Pothos's own argument checks: `Argument "first" must be a non-negative integer`. */
const POTHOS_ARGUMENT = new RegExp(`^Argument "(${NAME})"`);
/** An input object's field missing or unknown; inline, graphql-js names the type too (`"GrantCreditsInput.amount"`). */
const FIELD_AT_FAULT = new RegExp(`^Field "(?:${NAME}\\.)?(${NAME})" (?:of required type .* was not provided|is not defined by type)`, 's');

function pathOf(error: unknown): Segment[] | undefined {
  if (!(error instanceof GraphQLError)) return undefined;
  const original = error instanceof PothosValidationError ? error : error.originalError;
  if (original instanceof PothosValidationError) {
    const argument = POTHOS_ARGUMENT.exec(original.message)?.[1];
    return argument ? [argument] : undefined;
  }
  const nodes = error.nodes ?? [];
  const source = nodes[0]?.loc?.source;
  if (!source) return undefined;
  const index = indexOf(source);
  const reason = original?.message ?? error.message;
  // Validation errors about a variable point at its use after its definition; try the use first.
  for (const node of [...nodes].reverse()) {
    if (node.kind === Kind.VARIABLE_DEFINITION) {
      const variable = node.variable.name.value;
      const used = index.variableUse(node, variable);
      if (!used) continue;
      return [...segmentsOf(used), ...variablePath(error.message, variable, original?.message), ...fieldAtFault(reason)];
    }
    const found = index.underArguments.get(keyOf(node));
    if (found) return node.kind === Kind.OBJECT_FIELD ? segmentsOf(found) : [...segmentsOf(found), ...fieldAtFault(reason)];
  }
  return undefined;
}

/** The field of an input object that is missing or unknown, when that is what the message says. */
function fieldAtFault(message: string): Segment[] {
  const field = FIELD_AT_FAULT.exec(message)?.[1];
  return field ? [field] : [];
}

/**
 * The path inside a variable's value that graphql-js refused: its message is
 * `Variable "$a" got invalid value <value> at "a.config.tiers[1]"; <reason>`. The reason is
 * cut off the end first, so no text in the value can pass for the path.
 */
function variablePath(message: string, variable: string, reason: string | undefined): Segment[] {
  if (reason === undefined || !message.endsWith(`; ${reason}`)) return [];
  const head = message.slice(0, message.length - reason.length - 2);
  const at = ` at "${variable}`;
  const start = head.lastIndexOf(at);
  if (start < 0 || !head.endsWith('"')) return [];
  const rest = head.slice(start + at.length, -1);
  const segments = rest.match(new RegExp(`\\.${NAME}|\\[\\d+\\]`, 'g')) ?? [];
  if (segments.join('') !== rest) return [];
  return segments.map((segment) => (segment.startsWith('.') ? segment.slice(1) : Number(segment.slice(1, -1))));
}

/** A path as a chain from its last segment back, so that a child shares its parent's. */
interface Path {
  segment: Segment;
  parent: Path | undefined;
}

function segmentsOf(path: Path): Segment[] {
  const segments: Segment[] = [];
  for (let at: Path | undefined = path; at; at = at.parent) segments.push(at.segment);
  return segments.reverse();
}

/** A node's kind and place in its source: the same in the document parsed again. */
const keyOf = (node: ASTNode) => `${node.kind}:${node.loc?.start}:${node.loc?.end}`;

interface DocumentIndex {
  /** The path of every node under an argument (the argument, its values and object fields), by keyOf. */
  underArguments: Map<string, Path>;
  /** Where the operation defining `variable` (by `definition`) first uses it. */
  variableUse(definition: ASTNode, variable: string): Path | undefined;
}

/**
 * The last source indexed, and its index: a request's errors are formatted together, one after
 * another, so one slot serves them all (and holds on to no more than one document).
 */
let lastIndexed: { source: Source; index: DocumentIndex } | undefined;

function indexOf(source: Source): DocumentIndex {
  if (lastIndexed?.source !== source) lastIndexed = { source, index: buildIndex(parse(source)) };
  return lastIndexed.index;
}

function buildIndex(document: DocumentNode): DocumentIndex {
  const underArguments = new Map<string, Path>();
  walkArguments(document.definitions, (node, path) => {
    underArguments.set(keyOf(node), path);
  });
  const fragments = new Map(document.definitions.flatMap((definition) => (definition.kind === Kind.FRAGMENT_DEFINITION ? [[definition.name.value, definition] as const] : [])));
  const usesByOperation = new Map<OperationDefinitionNode, Map<string, Path>>();

  /** The first use of each variable in `operation`'s own selections or a fragment it spreads. */
  function usesIn(operation: OperationDefinitionNode): Map<string, Path> {
    let uses = usesByOperation.get(operation);
    if (uses) return uses;
    const roots: ASTNode[] = [operation];
    const spread = new Set<string>();
    for (let i = 0; i < roots.length; i++) {
      visit(roots[i]!, {
        FragmentSpread(node) {
          const fragment = fragments.get(node.name.value);
          if (fragment && !spread.has(node.name.value)) {
            spread.add(node.name.value);
            roots.push(fragment);
          }
        },
      });
    }
    const found = new Map<string, Path>();
    walkArguments(roots, (node, path) => {
      if (node.kind === Kind.VARIABLE && !found.has(node.name.value)) found.set(node.name.value, path);
    });
    usesByOperation.set(operation, (uses = found));
    return uses;
  }

  return {
    underArguments,
    variableUse(definition, variable) {
      const key = keyOf(definition);
      const operation = document.definitions.find(
        (candidate): candidate is OperationDefinitionNode =>
          candidate.kind === Kind.OPERATION_DEFINITION && (candidate.variableDefinitions ?? []).some((inner) => keyOf(inner) === key),
      );
      return operation ? usesIn(operation).get(variable) : undefined;
    },
  };
}

/**
 * Calls `each` with every node under an argument (of a field or a directive) in `roots`, in
 * document order, with its path from the argument's name: the argument itself, its input values
 * and object fields. Walked without recursion, however deep a literal nests.
 */
function walkArguments(roots: readonly ASTNode[], each: (node: ASTNode, path: Path) => void): void {
  const pending: { node: ASTNode; path: Path }[] = [];
  for (const root of roots) {
    visit(root, {
      Argument(node) {
        pending.push({ node, path: { segment: node.name.value, parent: undefined } });
      },
    });
  }
  pending.reverse();
  for (let next = pending.pop(); next; next = pending.pop()) {
    const { node, path } = next;
    each(node, path);
    // Pushed last first, so that they come off the stack in document order.
    if (node.kind === Kind.ARGUMENT || node.kind === Kind.OBJECT_FIELD) pending.push({ node: node.value, path });
    if (node.kind === Kind.OBJECT) {
      for (let i = node.fields.length - 1; i >= 0; i--) {
        const field = node.fields[i]!;
        pending.push({ node: field, path: { segment: field.name.value, parent: path } });
      }
    }
    if (node.kind === Kind.LIST) {
      for (let i = node.values.length - 1; i >= 0; i--) pending.push({ node: node.values[i]!, path: { segment: i, parent: path } });
    }
  }
}
