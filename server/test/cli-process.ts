import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createPostgresDatabase, testDatabaseKind } from './databases.ts';

/** The operator CLI run as a real process, against a database of the test's own. */

export interface ProcessOutput {
  code: number | null;
  stdout: string;
  stderr: string;
}

const serverDir = fileURLToPath(new URL('..', import.meta.url));

/** A child process's exit code and all it printed. */
export function outputOf(child: ChildProcess): Promise<ProcessOutput> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk) => (stdout += chunk));
    child.stderr?.on('data', (chunk) => (stderr += chunk));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * Settings for CLI runs: a data folder of their own, and under the postgres project a database of
 * their own (`drop` removes it).
 */
export async function cliSettings(): Promise<{ env: Record<string, string>; drop: () => Promise<void> }> {
  const env: Record<string, string> = { TOLLGATE_DATA_DIR: mkdtempSync(path.join(tmpdir(), 'tollgate-cli-')), LOG_LEVEL: 'silent', NODE_ENV: 'test' };
  if (testDatabaseKind() !== 'postgres') return { env, drop: async () => undefined };
  const created = await createPostgresDatabase();
  env.DATABASE_URL = created.url;
  return { env, drop: created.drop };
}

/** `src/cli.ts` with `args`, run from the server workspace with `env` over this process's. */
export function runCli(env: Record<string, string>, ...args: string[]): Promise<ProcessOutput> {
  return outputOf(spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: serverDir, env: { ...process.env, ...env } }));
}
