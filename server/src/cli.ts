import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, logLevelFrom } from './config.ts';
import { isActive } from './modules/api-keys/api-keys.service.ts';
import { applyPricingChanges, commandDirectory, describeChanges, loadPricingConfig, planPricingConfig, unlistedByFile } from './modules/pricing/config-apply.ts';
import { openRuntime } from './runtime.ts';
import type { Services } from './services.ts';
import { createLogger, errorMessage } from './shared/logger.ts';
import { parseIsoTime } from './shared/times.ts';

/**
 * Operator commands: `npm run tollgate -- <command>`. They use the same database settings as
 * the server (DATABASE_URL, or PGlite under TOLLGATE_DATA_DIR: stop the server first there,
 * since an embedded database has one process at a time).
 */
const USAGE = `usage: npm run tollgate -- <command> [options]
  merchant create --name <name> [--live]     create a merchant and print its first secret key
  merchant list                              list merchants
  key create --merchant <id> [--name <name>] [--live]
  key list --merchant <id>
  key revoke --merchant <id> --key <key id>
  apply <file> --merchant <id> [--dry-run] [--yes]
                                             pricing as code: show what the file changes, then apply it
  prices import <file> --merchant <id> [--effective-from <ISO time>]
                                             import a provider price table in the models.dev api.json format
                                             (any size: the GraphQL mutation takes what fits in one request)
  migrate                                    apply pending database migrations`;

/** The options each command takes (see USAGE). */
const OPTIONS: Record<string, readonly string[]> = {
  'merchant create': ['name', 'live'],
  'merchant list': [],
  'key create': ['merchant', 'name', 'live'],
  'key list': ['merchant'],
  'key revoke': ['merchant', 'key'],
  apply: ['merchant', 'dry-run', 'yes'],
  'prices import': ['merchant', 'effective-from'],
  migrate: [],
};

/** The options each command cannot do without. */
const REQUIRED: Record<string, readonly string[]> = {
  'merchant create': ['name'],
  'key create': ['merchant'],
  'key list': ['merchant'],
  'key revoke': ['merchant', 'key'],
  apply: ['merchant'],
  'prices import': ['merchant'],
};

/** A relative path as `apply` reads one: from where the command was typed (see commandDirectory). */
const typedPath = (file: string) => path.resolve(commandDirectory(), file);

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      name: { type: 'string' },
      merchant: { type: 'string' },
      key: { type: 'string' },
      // No defaults: an option present in `values` was given (see OPTIONS).
      live: { type: 'boolean' },
      'dry-run': { type: 'boolean' },
      'effective-from': { type: 'string' },
      yes: { type: 'boolean', short: 'y' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const command = positionals.join(' ');
  if (values.help || command === 'help' || !command) {
    console.log(USAGE);
    // Help that was asked for succeeded; no command at all is a usage error.
    return values.help || command ? 0 : 2;
  }
  // An option the command does not take is refused, not ignored: `prices import --dry-run` wrote
  // the whole table, and `apply --effective-from` applied from now, each without a word.
  const name = positionals[0] === 'apply' && positionals.length === 2 ? 'apply' : positionals[0] === 'prices' && positionals[1] === 'import' && positionals.length === 3 ? 'prices import' : command;
  const takes = OPTIONS[name];
  const stray = takes && Object.keys(values).find((option) => !takes.includes(option));
  if (stray) throw new Error(`--${stray} is not an option of "${name}" (${takes.length ? `it takes ${takes.map((option) => `--${option}`).join(', ')}` : 'it takes none'})\n${USAGE}`);
  // Refused before the database is opened: a typo neither creates a data folder and its master key,
  // nor waits on a database that is unreachable or in use.
  if (!takes) {
    console.error(`unknown command "${command}"\n${USAGE}`);
    return 2;
  }
  const missing = REQUIRED[name]?.find((option) => !values[option as keyof typeof values]);
  if (missing) throw new Error(`--${missing} is required\n${USAGE}`);
  const config = loadConfig();
  // LOG_LEVEL as loadConfig checked it, with the CLI's own default: quieter than the server's.
  const logger = createLogger(logLevelFrom(process.env, 'warn'));
  const runtime = await openRuntime(config, logger);
  const { services } = runtime;
  const mode = values.live ? 'live' : 'test';
  const need = (value: string | undefined, flag: string): string => {
    if (!value) throw new Error(`--${flag} is required\n${USAGE}`);
    return value;
  };
  try {
    if (positionals[0] === 'apply' && positionals.length === 2) {
      return await applyConfig(services, positionals[1]!, need(values.merchant, 'merchant'), values['dry-run'] ?? false, values.yes ?? false);
    }
    if (positionals[0] === 'prices' && positionals[1] === 'import' && positionals.length === 3) {
      return await importPrices(services, positionals[2]!, need(values.merchant, 'merchant'), values['effective-from']);
    }
    switch (command) {
      case 'merchant create': {
        const { merchant, key } = await services.merchants.create({ name: need(values.name, 'name'), keyMode: mode });
        console.log(`merchant ${merchant.id} (${merchant.name})\nsecret key (shown once): ${key.secret}`);
        return 0;
      }
      case 'merchant list':
        for (const merchant of await services.merchants.list()) console.log(`${merchant.id}  ${merchant.name}`);
        return 0;
      case 'key create': {
        const merchant = await services.merchants.get(need(values.merchant, 'merchant'));
        const key = await services.apiKeys.create(merchant.id, { name: values.name ?? 'CLI key', mode });
        console.log(`key ${key.apiKey.id}\nsecret key (shown once): ${key.secret}`);
        return 0;
      }
      case 'key list': {
        // Looked up first: a merchant that does not exist is an error, not an empty list.
        const merchant = await services.merchants.get(need(values.merchant, 'merchant'));
        for (const key of await services.apiKeys.list(merchant.id, { includeRevoked: true })) {
          console.log(`${key.id}  ${key.prefix}…${key.last4}  ${key.name}  ${keyState(key)}`);
        }
        return 0;
      }
      case 'key revoke': {
        const merchant = await services.merchants.get(need(values.merchant, 'merchant'));
        const key = await services.apiKeys.revoke(merchant.id, need(values.key, 'key'));
        console.log(`revoked ${key.id} at ${key.revokedAt?.toISOString()}`);
        return 0;
      }
      case 'migrate':
        // Opening the runtime has already applied pending migrations.
        console.log('database is up to date');
        return 0;
      default:
        console.error(`unknown command "${command}"\n${USAGE}`);
        return 2;
    }
  } finally {
    await runtime.close();
  }
}

/** A key in its rotation grace period still works until its revocation time. */
function keyState(key: { revokedAt: Date | null }): string {
  if (!key.revokedAt) return 'active';
  return isActive(key) ? `active until ${key.revokedAt.toISOString()}` : `revoked ${key.revokedAt.toISOString()}`;
}

/** Prints the diff first; changes only with --yes or a "y" typed at a terminal. */
async function applyConfig(services: Services, file: string, merchantRef: string, dryRun: boolean, yes: boolean): Promise<number> {
  const merchantId = (await services.merchants.get(merchantRef)).id;
  const config = await loadPricingConfig(file);
  const changes = await planPricingConfig(services, merchantId, config);
  // What the file stopped listing is left as it is (a deleted rule keeps pricing): said, with the diff.
  console.log(describeChanges(changes, await unlistedByFile(services, merchantId, config)));
  if (changes.length === 0 || dryRun) return 0;
  if (!yes && !(await confirm(`Apply ${changes.length} change(s)?`))) {
    console.log('Nothing applied (pass --yes to apply without asking).');
    return 1;
  }
  await applyPricingChanges(services, merchantId, changes);
  console.log(`Applied ${changes.length} change(s).`);
  return 0;
}

/**
 * models.dev's whole api.json can outgrow one GraphQL request (TOLLGATE_MAX_BODY_SIZE, 1 MiB by
 * default): read from disk here, it has no such bound. The same import as the mutation.
 */
async function importPrices(services: Services, file: string, merchantRef: string, effectiveFrom: string | undefined): Promise<number> {
  const merchantId = (await services.merchants.get(merchantRef)).id;
  let from: Date | null = null;
  if (effectiveFrom !== undefined) {
    // As the DateTime scalar reads it (importModelsDevPrices): a time with its zone, not read in
    // this machine's, or a date (midnight UTC); a day that does not exist (February 30th) is
    // refused, not rolled over to another.
    from = parseIsoTime(effectiveFrom);
    if (!from) throw new Error(`--effective-from must be an ISO 8601 time, e.g. 2026-07-01T00:00:00Z`);
  }
  const { readFile } = await import('node:fs/promises');
  const { imported, unchanged, skipped } = await services.providerPrices.importModelsDev(merchantId, await readFile(typedPath(file), 'utf8'), from);
  // Written, and already stored with the same rates (not written again): a daily re-import says so.
  console.log(`imported ${imported} price(s)${from ? ` in force from ${from.toISOString()}` : ''}, ${unchanged} unchanged; skipped ${skipped.length}`);
  for (const skip of skipped.slice(0, 20)) console.log(`  skipped ${skip.path}: ${skip.reason}`);
  if (skipped.length > 20) console.log(`  … and ${skipped.length - 20} more`);
  return 0;
}

/** Asks on a terminal; anywhere else (CI, pipes) the answer is no. */
async function confirm(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  const readline = await import('node:readline/promises');
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(errorMessage(error));
    process.exit(1);
  },
);
