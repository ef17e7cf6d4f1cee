import { createApp } from './app.ts';
import { loadConfig } from './config.ts';
import { startJobPruning } from './modules/gateway/jobs.ts';
import { startExpirySchedule } from './modules/ledger/ledger.schedule.ts';
import { seedDemoMerchant } from './modules/merchants/demo-seed.ts';
import { checkMasterKey, openRuntime } from './runtime.ts';
import { createLogger } from './shared/logger.ts';

const config = loadConfig();
const logger = createLogger(config.logLevel);
const runtime = await openRuntime(config, logger);
const app = await createApp(runtime.services);
const { port } = await app.listen(config.port, config.host);
const stopExpiry = startExpirySchedule(runtime.services.ledger, config.expiryIntervalMs, logger);
const stopJobPruning = startJobPruning(runtime.services.gateway.jobs, config.gateway.jobRetentionDays, 3600 * 1000, logger);
// The default names the port listened on (PORT=0 picks one); a URL the operator set is printed as given.
const publicUrl = process.env.TOLLGATE_PUBLIC_URL ? config.publicUrl : config.publicUrl.replace(/:\d+$/, `:${port}`);

const demo = config.seedDemo ? await seedDemoMerchant(runtime.services) : undefined;
const database = config.databaseUrl ? 'PostgreSQL (DATABASE_URL)' : `embedded PGlite in ${config.dataDir}/pglite`;
console.log(`
  Tollgate is running on ${database}
  GraphQL API:  ${publicUrl}/graphql
  Playground:   ${publicUrl}/playground
${demo ? `  Demo merchant "${demo.merchant.name}" created. Its secret key (shown once):\n    ${demo.secret}\n  Try: curl -s ${publicUrl}/graphql -H 'content-type: application/json' -H 'authorization: Bearer ${demo.secret}' -d '{"query":"{ viewer { merchant { name } } }"}'\n` : '  New secret keys: npm run tollgate -- key create --merchant <merchant id>\n'}`);

// After the banner, where an operator looks: a master key the stored provider keys were not sealed with.
await checkMasterKey(runtime.services, logger);

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'shutting down');
  stopExpiry();
  stopJobPruning();
  await app.close();
  await runtime.close();
  process.exit(0);
}
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));
