import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { printedSchema, schemaDrift } from '../src/graphql/print.ts';

const committedFile = fileURLToPath(new URL('../../schema.graphql', import.meta.url));

describe('schema.graphql', () => {
  it('is the SDL printed from the code (run `npm run schema` after changing the API)', () => {
    expect(schemaDrift(readFileSync(committedFile, 'utf8'))).toBeUndefined();
  });

  it('a stale copy is caught, naming the first differing line', () => {
    const current = printedSchema();
    const stale = current.replace('  externalId: String!\n', '');
    expect(stale).not.toBe(current);
    expect(schemaDrift(stale)).toMatch(/stale at line \d+: .*Run `npm run schema`/);
    expect(schemaDrift(current + 'type Extra { id: ID }\n')).toMatch(/stale at line/);
  });
});
