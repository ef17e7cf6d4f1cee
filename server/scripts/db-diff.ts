import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { diffSchemas } from './prisma6-diff.ts';

/**
 * `npm run db:diff -- <name>`: writes prisma/migrations/<timestamp>_<name>/migration.sql with
 * the SQL from the schema committed at HEAD to the schema in the working tree.
 * `--from-empty` diffs from an empty database instead (the first migration).
 */

const serverDir = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
const schemaFile = path.join(serverDir, 'prisma', 'schema.prisma');

const args = process.argv.slice(2);
const fromEmpty = args.includes('--from-empty');
const name = args.find((arg) => !arg.startsWith('--'));
if (!name || !/^[a-z0-9_]+$/.test(name)) {
  console.error('usage: npm run db:diff -- <snake_case_name> [--from-empty]');
  process.exit(2);
}

function committedSchema(): string | null {
  try {
    return execFileSync('git', ['show', 'HEAD:./prisma/schema.prisma'], { cwd: serverDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return null;
  }
}

const from = fromEmpty ? null : committedSchema();
const sql = diffSchemas(from, readFileSync(schemaFile, 'utf8'));
const statements = sql.split('\n').filter((line) => line.trim() && !line.trim().startsWith('--'));
if (statements.length === 0) {
  console.error('The working schema matches the committed one: no migration written.');
  process.exit(1);
}

const stamp = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
const folder = path.join(serverDir, 'prisma', 'migrations', `${stamp}_${name}`);
mkdirSync(folder, { recursive: true });
writeFileSync(path.join(folder, 'migration.sql'), sql);
console.log(`wrote ${path.relative(process.cwd(), folder)}/migration.sql (${statements.length} lines of SQL); read it before committing`);
