import { randomUUID } from 'node:crypto';
import { linkSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';

/**
 * One process at a time on an embedded database's folder. PGlite keeps the database in its own
 * process's memory and writes it back to the folder: a second process opening the same folder
 * (the CLI while `npm start` runs) reads a stale copy, its writes are lost, and the folder can be
 * left unopenable. So opening takes `<folder>.lock` (holding the pid) and closing removes it; a
 * lock whose process is gone (a crash) is taken over.
 *
 * Two processes starting together must never both win, so the lock file never exists without its
 * pid (it is written aside, then hard-linked into place: the link fails if a lock is there), and a
 * stale lock is taken over by renaming it aside, which only one of them can do, then checking that
 * what was moved is still the stale lock (if another process took it over meanwhile, it is put back).
 */
const heldHere = new Set<string>();
const ATTEMPTS = 5;

export function lockDataDir(dataDir: string): () => void {
  const lockPath = `${dataDir}.lock`;
  if (heldHere.has(lockPath)) throw inUse(lockPath, dataDir, process.pid);
  for (let attempt = 1; ; attempt++) {
    if (tryCreate(lockPath)) {
      heldHere.add(lockPath);
      return () => {
        if (!heldHere.delete(lockPath)) return;
        try {
          unlinkSync(lockPath);
        } catch {
          // Already gone: nothing to release.
        }
      };
    }
    const holder = readPid(lockPath);
    if (holder === undefined) continue; // released just now: try again
    if (isRunning(holder) || attempt >= ATTEMPTS) throw inUse(lockPath, dataDir, holder);
    takeOverStale(lockPath, holder);
  }
}

/** Creates the lock with this process's pid already in it; false when a lock exists. */
function tryCreate(lockPath: string): boolean {
  const aside = `${lockPath}.${process.pid}.${randomUUID()}`;
  writeFileSync(aside, String(process.pid));
  try {
    linkSync(aside, lockPath);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    unlinkSync(aside);
  }
}

/** The pid a lock names (NaN for garbage), or undefined when there is no lock any more. */
function readPid(lockPath: string): number | undefined {
  try {
    return Number(readFileSync(lockPath, 'utf8').trim());
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Moves a lock left by `stalePid` out of the way, unless another process replaced it meanwhile. */
function takeOverStale(lockPath: string, stalePid: number): void {
  const moved = `${lockPath}.stale.${randomUUID()}`;
  try {
    renameSync(lockPath, moved);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return; // someone else moved it
    throw error;
  }
  const pid = readPid(moved);
  if (pid === stalePid || (Number.isNaN(pid) && Number.isNaN(stalePid))) {
    unlinkSync(moved);
    return;
  }
  // Another process's fresh lock was moved: put it back (unless yet another lock is there now).
  try {
    linkSync(moved, lockPath);
  } catch {
    // A lock is in place again; ours to find on the next attempt.
  }
  unlinkSync(moved);
}

/** Whether a process with this pid runs (ours counts only while it holds the lock: containers reuse low pids). */
function isRunning(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function inUse(lockPath: string, dataDir: string, pid: number): Error {
  return new Error(
    `The embedded database in ${dataDir} is in use by another process${Number.isInteger(pid) && pid > 0 ? ` (pid ${pid})` : ''}: stop it first ` +
      `(the server, or another tollgate command), or set DATABASE_URL to share a PostgreSQL database between processes. ` +
      `If no such process runs, delete ${lockPath}.`,
  );
}
