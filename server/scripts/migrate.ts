import path from 'node:path';
import { loadConfig } from '../src/config.ts';
import { openDatabase } from '../src/shared/db/database.ts';
import { migrate } from '../src/shared/db/migrator.ts';
import { errorMessage } from '../src/shared/logger.ts';

/**
 * `npm run db:migrate`: applies pending migrations to DATABASE_URL, or to the embedded database.
 * A failure (a bad setting, a database held by another process or out of reach, a migration
 * that fails) is reported as its message alone, with exit code 1, as the server and CLI do.
 */
async function main(): Promise<void> {
  const config = loadConfig();
  const db = await openDatabase(
    config.databaseUrl ? { kind: 'postgres', url: config.databaseUrl } : { kind: 'pglite', dataDir: path.join(config.dataDir, 'pglite') },
  );
  try {
    const result = await migrate(db, { log: (message) => console.log(message) });
    console.log(`${result.applied.length} applied, ${result.alreadyApplied.length} already applied`);
  } finally {
    await db.close();
  }
}

await main().catch((error: unknown) => {
  console.error(errorMessage(error));
  process.exit(1);
});
