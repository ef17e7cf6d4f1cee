import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * SQL that takes a database from one Prisma schema to another, computed offline.
 * Prisma 7's CLI needs a schema-engine binary it cannot download here; Prisma 6.19's
 * WebAssembly engine diffs two datamodels with no network and no database.
 */

const require = createRequire(import.meta.url);
const PRISMA6_CLI = path.join(path.dirname(require.resolve('prisma6/package.json')), 'build', 'index.js');

/** Prisma 6 wants `url` in the datasource and has no use for our generators. */
function toPrisma6Schema(schema: string): string {
  return schema
    .replace(/generator\s+\w+\s*\{[^}]*\}/g, '')
    .replace(/datasource\s+db\s*\{[^}]*\}/, 'datasource db {\n  provider = "postgresql"\n  url      = env("DATABASE_URL")\n}');
}

/** `from` null means an empty database. Returns the SQL script (possibly only comments). */
export function diffSchemas(from: string | null, to: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-diff-'));
  try {
    writeFileSync(path.join(dir, 'to.prisma'), toPrisma6Schema(to));
    // engine "js" selects the bundled WebAssembly schema engine. It opens the adapter even
    // for a schema-to-schema diff, so hand it a throwaway in-memory PGlite.
    writeFileSync(
      path.join(dir, 'prisma.config.ts'),
      `import { PGlite } from ${JSON.stringify(require.resolve('@electric-sql/pglite'))};
       import { PrismaPGlite } from ${JSON.stringify(require.resolve('pglite-prisma-adapter'))};
       export default { experimental: { adapter: true }, engine: 'js', schema: 'to.prisma',
         adapter: async () => new PrismaPGlite(new PGlite()) };\n`,
    );
    const fromArgs = from === null ? ['--from-empty'] : ['--from-schema-datamodel', path.join(dir, 'from.prisma')];
    if (from !== null) writeFileSync(path.join(dir, 'from.prisma'), toPrisma6Schema(from));
    return execFileSync(
      process.execPath,
      [PRISMA6_CLI, 'migrate', 'diff', ...fromArgs, '--to-schema-datamodel', path.join(dir, 'to.prisma'), '--script'],
      {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, DATABASE_URL: 'postgresql://offline@localhost:5432/offline', CHECKPOINT_DISABLE: '1', PRISMA_HIDE_UPDATE_MESSAGE: '1',
          // Point the CLI's engine download check at any file: the wasm engine does the work.
          PRISMA_QUERY_ENGINE_LIBRARY: '/bin/true', PRISMA_SCHEMA_ENGINE_BINARY: '/bin/true' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function readSchemaFile(file: string): string {
  return readFileSync(file, 'utf8');
}
