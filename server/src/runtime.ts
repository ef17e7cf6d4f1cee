import path from 'node:path';
import type { Config } from './config.ts';
import { createServices, type Services } from './services.ts';
import { openDatabase, type Database } from './shared/db/database.ts';
import { migrate } from './shared/db/migrator.ts';
import type { Logger } from './shared/logger.ts';
import { InMemoryPubSub, type PubSub } from './shared/pubsub.ts';
import { RedisPubSub } from './shared/redis-pubsub.ts';

/** Opens the database (migrating it), the event bus and the services: what main, the CLI and tests share. */
export async function openRuntime(
  config: Config,
  logger: Logger,
  options: { db?: Database; clock?: () => Date } = {},
): Promise<{ services: Services; close(): Promise<void> }> {
  const db =
    options.db ??
    (await openDatabase(
      config.databaseUrl ? { kind: 'postgres', url: config.databaseUrl } : { kind: 'pglite', dataDir: path.join(config.dataDir, 'pglite') },
    ));
  try {
    await migrate(db, { log: (message) => logger.info(message) });
  } catch (error) {
    await db.close();
    throw error;
  }
  const pubsub: PubSub = config.redisUrl ? new RedisPubSub(config.redisUrl, logger) : new InMemoryPubSub();
  const services = createServices({ config, db, pubsub, logger, clock: options.clock });
  return {
    services,
    async close() {
      await services.stop();
      await pubsub.close();
      await db.close();
    },
  };
}
