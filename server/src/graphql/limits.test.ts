import { parse, getOperationAST } from 'graphql';
import { describe, expect, it } from 'vitest';
import { measureOperation } from './limits.ts';
import { schema } from './schema.ts';

function measure(query: string, variables?: Record<string, unknown>) {
  const document = parse(query);
  return measureOperation(schema, document, getOperationAST(document)!, variables, 20);
}

describe('query cost', () => {
  it('counts depth through fields and fragments, ignoring introspection', () => {
    expect(measure('{ viewer { kind } }').depth).toBe(2);
    expect(measure('{ customers { edges { node { id } } } }').depth).toBe(4);
    expect(measure('{ customers { ...E } } fragment E on CustomerConnection { edges { node { id } } }').depth).toBe(4);
    expect(measure('{ __schema { types { fields { type { name } } } } viewer { kind } }').depth).toBe(2);
  });

  it('multiplies a connection by its page size, from literals, variables or the default', () => {
    const literal = measure('{ customers(first: 10) { edges { node { id } } } }');
    // customers(1) + 10 × (edges(1) + node(1) + id(1))
    expect(literal.complexity).toBe(1 + 10 * 3);
    expect(measure('query ($n: Int) { customers(first: $n) { edges { node { id } } } }', { n: 50 }).complexity).toBe(1 + 50 * 3);
    expect(measure('{ customers { edges { node { id } } } }').complexity).toBe(1 + 20 * 3);
    expect(measure('{ viewer { kind merchant { id name } } }').complexity).toBe(5);
  });
});
