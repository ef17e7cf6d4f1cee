import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../config.ts';
import { openRuntime } from '../../runtime.ts';
import { createLogger } from '../../shared/logger.ts';
import { createPostgresDatabase } from '../../../test/databases.ts';

/** Price rules written side by side, from two instances, on PostgreSQL. */
let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
let runtimes: Awaited<ReturnType<typeof openRuntime>>[] = [];

beforeAll(async () => {
  database = await createPostgresDatabase();
  const config = loadConfig({ DATABASE_URL: database.url, TOLLGATE_MASTER_KEY: randomBytes(32).toString('hex'), NODE_ENV: 'test' });
  runtimes = [await openRuntime(config, createLogger('silent'))];
  runtimes.push(await openRuntime(config, createLogger('silent')));
}, 60_000);

afterAll(async () => {
  for (const runtime of runtimes) await runtime.close();
  await database?.drop();
});

describe('price rules written at the same moment', () => {
  it('never leave a tie: of eight rules for one target from two instances, one is written and seven are CONFLICT', async () => {
    const { merchant } = await runtimes[0]!.services.merchants.create({ name: 'racing rules' });
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, (_, index) =>
        runtimes[index % 2]!.services.priceRules
          .put(merchant.id, { name: `markup-${index}`, type: 'MARKUP', provider: 'openai', config: { percent: String(10 + index) } })
          .then(() => 'written', (error: { code?: string }) => error.code ?? String(error)),
      ),
    );
    expect(outcomes.filter((outcome) => outcome === 'written')).toHaveLength(1);
    expect(outcomes.filter((outcome) => outcome === 'CONFLICT')).toHaveLength(7);
    expect(await runtimes[1]!.services.priceRules.versions(merchant.id)).toHaveLength(1);
  });
});
