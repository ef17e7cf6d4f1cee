/**
 * What an import of a models.dev file says it did: `imported` counts the prices written, and
 * `unchanged` those already stored with the same rates (not written again), so a daily
 * re-import of the same file says it imported none — through the service, GraphQL and the CLI.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase, testDatabaseKind } from '../../../test/databases.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';

/** Three models and one entry that is skipped (a negative rate); `bump` changes the first model's output rate. */
const file = (bump = false) =>
  JSON.stringify({
    acme: {
      models: {
        'counted-1': { cost: { input: 1, output: bump ? 3 : 2 } },
        'counted-2': { cost: { input: 0.5, output: 1.5 } },
        'counted-3': { cost: { input: 4, output: 8, cache_read: 0.4 } },
        'counted-bad': { cost: { input: -1, output: 2 } },
      },
    },
  });

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const IMPORT = 'mutation ($json: String!, $from: DateTime) { importModelsDevPrices(json: $json, effectiveFrom: $from) { imported unchanged skipped } }';

describe('importModelsDevPrices counts', () => {
  it('"from now": the first import writes every price, the same file again writes none and says they are unchanged, a changed price is the one imported', async () => {
    const merchant = await server.createMerchant();
    const run = async (json: string) => {
      const answer = await server.graphql<{ importModelsDevPrices: { imported: number; unchanged: number; skipped: { entries: unknown[] } } }>(IMPORT, { json, from: null }, merchant.secret);
      expect(answer.errors).toBeUndefined();
      const { imported, unchanged, skipped } = answer.data!.importModelsDevPrices;
      return { imported, unchanged, skipped: skipped.entries.length, stored: await server.services.prisma.providerPrice.count({ where: { merchantId: merchant.id } }) };
    };
    expect(await run(file())).toEqual({ imported: 3, unchanged: 0, skipped: 1, stored: 3 });
    expect(await run(file())).toEqual({ imported: 0, unchanged: 3, skipped: 1, stored: 3 });
    expect(await run(file(true))).toEqual({ imported: 1, unchanged: 2, skipped: 1, stored: 4 });
  });

  it('at a given time: the same prices at the same time again are unchanged, not imported', async () => {
    const merchant = await server.createMerchant();
    const at = new Date('2025-03-01T00:00:00Z');
    const prices = server.services.providerPrices;
    expect(await prices.importModelsDev(merchant.id, file(), at)).toMatchObject({ imported: 3, unchanged: 0 });
    expect(await prices.importModelsDev(merchant.id, file(), at)).toMatchObject({ imported: 0, unchanged: 3 });
    expect(await prices.importModelsDev(merchant.id, file(true), new Date('2025-04-01T00:00:00Z'))).toMatchObject({ imported: 3, unchanged: 0 });
  });
});

describe('tollgate prices import', { timeout: 180_000 }, () => {
  const serverDir = fileURLToPath(new URL('../../..', import.meta.url));
  let env: Record<string, string>;
  let dropDatabase: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    env = { TOLLGATE_DATA_DIR: mkdtempSync(path.join(tmpdir(), 'tollgate-import-counts-')), LOG_LEVEL: 'silent', NODE_ENV: 'test' };
    if (testDatabaseKind() === 'postgres') {
      const created = await createPostgresDatabase();
      env.DATABASE_URL = created.url;
      dropDatabase = created.drop;
    }
  });
  afterAll(() => dropDatabase?.());

  const cli = (...args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: serverDir, env: { ...process.env, ...env } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.stderr.on('data', (chunk) => (stderr += chunk));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });

  it('prints how many prices were written and how many were already in force unchanged', async () => {
    const created = await cli('merchant', 'create', '--name', 'Daily Import Co');
    expect(created.code, created.stderr).toBe(0);
    const merchantId = /merchant ([0-9a-f-]{36})/.exec(created.stdout)![1]!;
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-import-counts-file-'));
    const same = path.join(dir, 'api.json');
    const bumped = path.join(dir, 'api-bumped.json');
    writeFileSync(same, file());
    writeFileSync(bumped, file(true));
    const firstLine = async (target: string) => {
      const run = await cli('prices', 'import', target, '--merchant', merchantId);
      expect(run.code, run.stderr).toBe(0);
      return run.stdout.split('\n')[0];
    };
    expect(await firstLine(same)).toBe('imported 3 price(s), 0 unchanged; skipped 1');
    expect(await firstLine(same)).toBe('imported 0 price(s), 3 unchanged; skipped 1');
    expect(await firstLine(bumped)).toBe('imported 1 price(s), 2 unchanged; skipped 1');
  });
});
