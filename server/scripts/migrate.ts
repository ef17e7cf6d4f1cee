import path from 'node:path';
import { loadConfig } from '../src/config.ts';
import { openDatabase } from '../src/shared/db/database.ts';
import { migrate } from '../src/shared/db/migrator.ts';

/** `npm run db:migrate`: applies pending migrations to DATABASE_URL, or to the embedded database. */
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
