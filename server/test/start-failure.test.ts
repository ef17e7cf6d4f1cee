import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { lockDataDir } from '../src/shared/db/data-dir-lock.ts';

/**
 * A server (or `npm run db:migrate`) that cannot start says why in one line and exits 1, as the
 * CLI does, instead of dying on an uncaught error whose stack trace buries the message.
 */
const serverDir = fileURLToPath(new URL('..', import.meta.url));

function run(script: string, extraEnv: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: Record<string, string | undefined> = {
    ...process.env,
    TOLLGATE_DATA_DIR: mkdtempSync(path.join(tmpdir(), 'tollgate-start-')),
    TOLLGATE_MASTER_KEY: '1'.repeat(64),
    TOLLGATE_SEED_DEMO: 'false',
    HOST: '127.0.0.1',
    PORT: '0',
    NODE_ENV: 'test',
    LOG_LEVEL: 'warn',
    ...extraEnv,
  };
  delete env.DATABASE_URL;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: serverDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    // A server that did start would run until stopped: stop it, and let the test fail on its code.
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function expectRefusal(result: { code: number | null; stderr: string }, message: string) {
  expect(result.code, result.stderr).toBe(1);
  expect(result.stderr.trim()).toBe(message);
  expect(result.stderr).not.toMatch(/^\s+at /m);
}

describe('a start that fails', { timeout: 90_000 }, () => {
  it.each(['src/main.ts', 'scripts/migrate.ts'])('%s: a bad setting is named, with no stack trace', async (script) => {
    expectRefusal(await run(script, { PORT: 'abc' }), 'PORT must be a whole number from 0 to 65535 (0 picks a free port), got "abc"');
  });

  it('src/main.ts: an unknown LOG_LEVEL is named, not left to pino', async () => {
    expectRefusal(await run('src/main.ts', { LOG_LEVEL: 'warning' }), 'LOG_LEVEL must be one of trace, debug, info, warn, error, fatal, silent, got "warning"');
  });

  it('src/main.ts: a port already in use is named in one line', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as AddressInfo;
    try {
      expectRefusal(await run('src/main.ts', { PORT: String(port) }), `listen EADDRINUSE: address already in use 127.0.0.1:${port}`);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it.each(['src/main.ts', 'scripts/migrate.ts'])('%s: an embedded database another process holds is refused in one line', async (script) => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'tollgate-start-held-'));
    const unlock = lockDataDir(path.join(dataDir, 'pglite'));
    try {
      const result = await run(script, { TOLLGATE_DATA_DIR: dataDir });
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr).toMatch(new RegExp(`in use by another process \\(pid ${process.pid}\\): stop it first`));
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).not.toMatch(/^\s+at /m);
    } finally {
      unlock();
    }
  });
});
