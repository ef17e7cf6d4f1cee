import { createApp } from './app.ts';
import { loadConfig } from './config.ts';
import { startJobPruning } from './modules/gateway/jobs.ts';
import { startExpirySchedule } from './modules/ledger/ledger.schedule.ts';
import { seedDemoMerchant } from './modules/merchants/demo-seed.ts';
import { checkMasterKey, openRuntime } from './runtime.ts';
import { createLogger, errorMessage, type Logger } from './shared/logger.ts';

type Runtime = Awaited<ReturnType<typeof openRuntime>>;
type App = Awaited<ReturnType<typeof createApp>>;
interface Opened {
  logger?: Logger;
  runtime?: Runtime;
  app?: App;
  stop?: () => void;
}

/** What the start has opened so far: a stop (a signal, a failed start) closes it. */
const opened: Opened = {};

/**
 * A start that fails (a setting out of range, an embedded database another process holds, a
 * database that cannot be reached or migrated, a port in use) says why in one line and exits 1,
 * as the CLI does: an uncaught error would print a stack trace that buries the message.
 */
async function fail(error: unknown): Promise<never> {
  console.error(errorMessage(error));
  // Closing releases what was taken (the embedded database's lock and files), as a stop would,
  // unless it hangs.
  setTimeout(() => process.exit(1), 10_000).unref();
  opened.stop?.();
  await opened.app?.close().catch(() => undefined);
  await opened.runtime?.close().catch(() => undefined);
  process.exit(1);
}

async function start(): Promise<void> {
  try {
    const config = loadConfig();
    const logger = (opened.logger = createLogger(config.logLevel));
    const runtime = (opened.runtime = await openRuntime(config, logger));
    const app = (opened.app = await createApp(runtime.services));
    const { port } = await app.listen(config.port, config.host);
    const stopExpiry = startExpirySchedule(runtime.services.ledger, config.expiryIntervalMs, logger);
    const stopJobPruning = startJobPruning(runtime.services.gateway.jobs, config.gateway.jobRetentionDays, 3600 * 1000, logger);
    opened.stop = () => {
      stopExpiry();
      stopJobPruning();
    };
    // The default names the port listened on (PORT=0 picks one); a URL the operator set is printed as given.
    const publicUrl = process.env.TOLLGATE_PUBLIC_URL?.trim() ? config.publicUrl : config.publicUrl.replace(/:\d+$/, `:${port}`);

    const demo = config.seedDemo ? await seedDemoMerchant(runtime.services) : undefined;
    const database = config.databaseUrl ? 'PostgreSQL (DATABASE_URL)' : `embedded PGlite in ${config.dataDir}/pglite`;
    console.log(`
  Tollgate is running on ${database}
  GraphQL API:  ${publicUrl}/graphql
  Playground:   ${publicUrl}/playground
${demo ? `  Demo merchant "${demo.merchant.name}" created. Its secret key (shown once):\n    ${demo.secret}\n  Try: curl -s ${publicUrl}/graphql -H 'content-type: application/json' -H 'authorization: Bearer ${demo.secret}' -d '{"query":"{ viewer { merchant { name } } }"}'\n` : '  A merchant: npm run tollgate -- merchant create --name <name> (prints its first secret key)\n  More keys:  npm run tollgate -- key create --merchant <merchant id>\n'}`);
  } catch (error) {
    await fail(error);
  }
}

let starting: Promise<void> | null = null;
let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  // A signal during the start lets it finish (or fail), then stops what it opened.
  await starting;
  opened.logger?.info({ signal }, 'shutting down');
  opened.stop?.();
  try {
    await opened.app?.close();
    await opened.runtime?.close();
  } catch (error) {
    opened.logger?.error({ err: error }, 'shutdown did not complete cleanly');
    process.exit(1);
  }
  process.exit(0);
}
// Taken over before anything is opened: a signal the default handler took (even one sent the
// moment the banner appears) would kill the process with the embedded database open and its
// lock left behind.
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));

starting = start();
await starting;

// After the banner, where an operator looks: a master key the stored provider keys were not sealed with.
if (!stopping) await checkMasterKey(opened.runtime!.services, opened.logger!);
