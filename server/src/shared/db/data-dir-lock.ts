import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';

/**
 * One process at a time on an embedded database's folder. PGlite keeps the database in its own
 * process's memory and writes it back to the folder: a second process opening the same folder
 * (the CLI while `npm start` runs) reads a stale copy, its writes are lost, and the folder can be
 * left unopenable. So opening takes `<folder>.lock` (created exclusively, holding the pid) and
 * closing removes it; a lock whose process is gone (a crash) is taken over.
 */
const heldHere = new Set<string>();

export function lockDataDir(dataDir: string): () => void {
  const lockPath = `${dataDir}.lock`;
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(lockPath, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      heldHere.add(lockPath);
      return () => {
        if (!heldHere.delete(lockPath)) return;
        try {
          unlinkSync(lockPath);
        } catch {
          // Already gone: nothing to release.
        }
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw inUse(error, lockPath, dataDir);
      const holder = Number(readFileSync(lockPath, 'utf8').trim());
      if (heldHere.has(lockPath) || isRunning(holder)) throw inUse(error, lockPath, dataDir, holder);
      unlinkSync(lockPath); // left by a process that is gone
    }
  }
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

function inUse(cause: unknown, lockPath: string, dataDir: string, pid?: number): Error {
  if ((cause as NodeJS.ErrnoException).code !== 'EEXIST') return cause as Error;
  return new Error(
    `The embedded database in ${dataDir} is in use by another process${pid ? ` (pid ${pid})` : ''}: stop it first ` +
      `(the server, or another tollgate command), or set DATABASE_URL to share a PostgreSQL database between processes. ` +
      `If no such process runs, delete ${lockPath}.`,
  );
}
