import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/**
 * `npm start` and `npm test` run through turbo, which in strict mode hands a task only the
 * variables turbo.json passes through: a documented setting missing there is silently ignored
 * (NODE_ENV=production once started the server in development mode, demo merchant and all).
 */
const root = new URL('../../', import.meta.url);
const readme = readFileSync(new URL('README.md', root), 'utf8');
const turbo = JSON.parse(readFileSync(new URL('turbo.json', root), 'utf8')) as { globalPassThroughEnv: string[] };

describe('turbo.json', () => {
  it('passes every environment variable the README documents to the tasks it runs', () => {
    const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## Using the API'));
    const documented = new Set([
      ...[...table.matchAll(/^\| `([A-Z][A-Z0-9_]*)` \|/gm)].map((match) => match[1]!),
      ...[...(/^Test-only:.*$/m.exec(table)?.[0] ?? '').matchAll(/`([A-Z][A-Z0-9_]*)`/g)].map((match) => match[1]!),
      // libpq's variables a DATABASE_URL may leave to them (`PGHOST`), named in the table's text.
      ...[...table.matchAll(/`(PG[A-Z]+)`/g)].map((match) => match[1]!),
    ]);
    const reaches = (name: string) => turbo.globalPassThroughEnv.some((pattern) => (pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) : pattern === name));
    expect(documented.size).toBeGreaterThan(20);
    expect(documented).toContain('NODE_ENV');
    expect(documented).toContain('PGHOST');
    expect([...documented].filter((name) => !reaches(name))).toEqual([]);
  });
});
