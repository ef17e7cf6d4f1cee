import * as realFs from 'node:fs';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';

// Lets a test run "another process" between the lock's read of a stale pid and its takeover.
const hooks: { afterRead?: (file: string) => void } = {};
vi.mock('node:fs', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs')>();
  const readFileSync = ((file: realFs.PathOrFileDescriptor, options?: unknown) => {
    const content = (actual.readFileSync as (f: unknown, o?: unknown) => unknown)(file, options);
    if (typeof file === 'string' && file.endsWith('.lock')) hooks.afterRead?.(file);
    return content;
  }) as typeof actual.readFileSync;
  return { ...actual, default: { ...actual, readFileSync }, readFileSync };
});

const { lockDataDir } = await import('./data-dir-lock.ts');

const folders: string[] = [];
function dataDir(): string {
  const folder = mkdtempSync(path.join(tmpdir(), 'tg-lock-'));
  folders.push(folder);
  return path.join(folder, 'pglite');
}
afterEach(() => {
  hooks.afterRead = undefined;
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
});

describe('lockDataDir', () => {
  it('holds the folder with this pid until released, refusing a second holder meanwhile', () => {
    const dir = dataDir();
    const unlock = lockDataDir(dir);
    expect(readFileSync(`${dir}.lock`, 'utf8')).toBe(String(process.pid));
    expect(() => lockDataDir(dir)).toThrow(/is in use by another process/);
    unlock();
    expect(existsSync(`${dir}.lock`)).toBe(false);
    lockDataDir(dir)();
    // Nothing left beside it: the pid is written aside and linked into place.
    expect(readdirSync(path.dirname(dir))).toEqual([]);
  });

  it('refuses a folder a live process holds, naming it', () => {
    const dir = dataDir();
    writeFileSync(`${dir}.lock`, String(process.ppid));
    expect(() => lockDataDir(dir)).toThrow(`(pid ${process.ppid})`);
    expect(readFileSync(`${dir}.lock`, 'utf8')).toBe(String(process.ppid));
  });

  it('takes over a lock left by a process that is gone, or one holding no pid', () => {
    for (const left of ['2147483646', '', 'garbage']) {
      const dir = dataDir();
      writeFileSync(`${dir}.lock`, left);
      const unlock = lockDataDir(dir);
      expect(readFileSync(`${dir}.lock`, 'utf8'), left).toBe(String(process.pid));
      unlock();
    }
  });

  it('never removes a lock another live process took over meanwhile (two starts after a crash)', () => {
    const dir = dataDir();
    const lockPath = `${dir}.lock`;
    writeFileSync(lockPath, '2147483646'); // left by a crashed process
    // The other starting process (alive: our parent) replaces the stale lock with its own first.
    const otherPid = process.ppid;
    hooks.afterRead = (file) => {
      hooks.afterRead = undefined;
      realFs.unlinkSync(file);
      realFs.writeFileSync(file, String(otherPid));
    };
    expect(() => lockDataDir(dir)).toThrow(`(pid ${otherPid})`);
    expect(readFileSync(lockPath, 'utf8')).toBe(String(otherPid));
    expect(readdirSync(path.dirname(dir))).toEqual(['pglite.lock']);
  });
});
