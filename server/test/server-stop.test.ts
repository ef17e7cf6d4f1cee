import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

/** The server as `npm start` runs it (no NODE_ENV), stopped by a signal as a container or Ctrl-C stops it. */
const serverDir = fileURLToPath(new URL('..', import.meta.url));
const children: ChildProcess[] = [];
const folders: string[] = [];
afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
});

async function startServer(readyWhen = /GraphQL API:/, logLevel = 'warn'): Promise<{ child: ChildProcess; dataDir: string; output: () => string }> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'tollgate-stop-'));
  folders.push(dataDir);
  const env: Record<string, string | undefined> = { ...process.env, PORT: '0', HOST: '127.0.0.1', TOLLGATE_DATA_DIR: dataDir, TOLLGATE_SEED_DEMO: 'false', LOG_LEVEL: logLevel };
  // Apollo installs its own signal handlers outside NODE_ENV=test: the case that hung.
  delete env.NODE_ENV;
  delete env.DATABASE_URL;
  delete env.REDIS_URL;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: serverDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not started:\n${output}`)), 90_000);
    child.stdout!.on('data', () => {
      if (readyWhen.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', () => reject(new Error(`exited:\n${output}`)));
  });
  return { child, dataDir, output: () => output };
}

function exited(child: ChildProcess, withinMs: number): Promise<number | null | 'still running'> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    const timer = setTimeout(() => resolve('still running'), withinMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

describe('stopping the server', { timeout: 180_000 }, () => {
  it('on SIGTERM closes the embedded database, removes its lock and exits 0', async () => {
    const { child, dataDir, output } = await startServer();
    child.kill('SIGTERM');
    // Exits well before the ~9 s it took when nothing was left to keep it up but the database never closed.
    expect(await exited(child, 5000), output()).toBe(0);
    expect(existsSync(path.join(dataDir, 'pglite.lock')), output()).toBe(false);
  });

  it('on SIGTERM while still starting (migrating), finishes the start, then stops as cleanly', async () => {
    const { child, dataDir, output } = await startServer(/applied migration/, 'info');
    child.kill('SIGTERM');
    expect(await exited(child, 60_000), output()).toBe(0);
    expect(existsSync(path.join(dataDir, 'pglite.lock')), output()).toBe(false);
  });
});
