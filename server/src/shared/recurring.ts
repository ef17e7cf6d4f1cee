import type { Logger } from './logger.ts';

/**
 * Runs `task` every `intervalMs` in this process, never two runs at once (a run still going when
 * the next is due is skipped), logging a failure instead of stopping. The timer does not keep the
 * process alive. Answers a function that stops it.
 */
export function startRecurring(name: string, intervalMs: number, task: () => Promise<void>, logger: Logger): () => void {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    task()
      .catch((error: unknown) => logger.error({ err: error }, `${name} failed`))
      .finally(() => {
        running = false;
      });
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
