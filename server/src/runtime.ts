import path from 'node:path';
import type { Config } from './config.ts';
import type { StoredKeysCheck } from './modules/gateway/provider-credentials.service.ts';
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

/**
 * Says at start when TOLLGATE_MASTER_KEY is not the key the stored provider keys were sealed
 * with (it was changed, or this instance was given another one than its peers), instead of
 * leaving it to be found when gateway calls start failing. It warns and lets the server start:
 * changing the master key is allowed (it invalidates stored secrets, which are then set again
 * through the running API), nothing but gateway calls that need a stored key depends on them,
 * and those are refused with a message saying what to do (409 CONFLICT, reason
 * PROVIDER_KEY_UNREADABLE). A database with no provider keys (a fresh one) says nothing; a
 * check that fails (the database) never stops the start either.
 */
export async function checkMasterKey(services: Services, logger: Logger): Promise<StoredKeysCheck | undefined> {
  let check: StoredKeysCheck;
  try {
    check = await services.providerCredentials.checkStoredKeys();
  } catch (error) {
    logger.warn({ err: error }, 'could not check that TOLLGATE_MASTER_KEY decrypts the stored provider keys');
    return undefined;
  }
  if (check.unreadable === 0) return check;
  const consequence =
    'gateway calls that need them are refused (409 CONFLICT, reason PROVIDER_KEY_UNREADABLE) until each is set again with setProviderCredential; ' +
    'if the master key was changed by mistake, restart with the one they were stored under';
  const message =
    check.unreadable === check.checked
      ? `TOLLGATE_MASTER_KEY does not match this database: none of the stored provider keys checked (the newest ${check.checked}) can be decrypted with it (customer session tokens issued under the old key are refused too); ${consequence}`
      : `${check.unreadable} of the ${check.checked} newest stored provider keys cannot be decrypted with this TOLLGATE_MASTER_KEY (they were stored under another one); ${consequence}`;
  logger.warn({ checked: check.checked, unreadable: check.unreadable, examples: check.examples }, message);
  return check;
}
