/**
 * Asynchronous provider jobs created through the gateway, and whose they are.
 *
 * Image and video providers create a job and are then polled by its id: Replicate
 * (`POST /v1/predictions` → `GET /v1/predictions/{id}`, `POST …/{id}/cancel`), fal
 * (`POST queue.fal.run/{app}` → `…/requests/{id}`, `…/requests/{id}/status[/stream]`,
 * `PUT …/requests/{id}/cancel`), Stability (`GET /v2beta/results/{id}`) and Black Forest Labs
 * (`GET /v1/get_result?id=…`). The provider key is the merchant's, so the provider answers any
 * id; the gateway remembers which customer each job it created was for (table gateway_jobs),
 * and a poll or cancel is checked against that before the provider is called.
 *
 * Only job paths of these four providers touch the table: `jobCallOf` answers null for every
 * other call without any work.
 */
import type { PrismaClient } from '../../generated/prisma/client.ts';
import type { Logger } from '../../shared/logger.ts';
import { startRecurring } from '../../shared/recurring.ts';
import { replicateRoot, type Match, type UrlParts } from '../usage/normalize/registry.ts';

export type JobProvider = 'replicate' | 'fal' | 'stability' | 'bfl';

/** A call that creates a job (its id is in the response) or reaches one by id (`ids`: every id the URL names). */
export type JobCall = { kind: 'create'; provider: JobProvider } | { kind: 'byId'; provider: JobProvider; ids: string[] };

/** Longer than any provider's id; a longer one in a response is not recorded. */
const MAX_JOB_ID = 200;
/** Positive answers kept in memory: a job's customer never changes once recorded. */
const MAX_CACHED_OWNERS = 100_000;
/**
 * A job created through another instance a moment ago may not be recorded yet when its first
 * poll arrives here: an id found nowhere is looked for once more after this long, when asked.
 */
const LATE_RECORD_MS = 200;
/** Attempts to write one job's record before giving up (logged). */
const RECORD_ATTEMPTS = 3;

/**
 * Whether a routed call creates a job or reaches one by id; null for everything else. `provider`
 * is the canonical id of the destination's provider, `match` what the registry routed the URL to
 * and `parts` the provider's own path within it (findProviderPath): ids are read past any
 * prefix a proxy in front of the provider adds, where the provider's path has them.
 * A path naming a job is checked whatever the method; a create only with the method that creates.
 */
export function jobCallOf(provider: string, parts: UrlParts, match: Match, method: string): JobCall | null {
  const create = method === match.method;
  switch (provider) {
    case 'replicate': {
      const segments = parts.path.split('/');
      const root = replicateRoot(segments);
      // /v1/predictions/{id}[/cancel]: the router sends every path under a prediction's id here.
      if (segments[root] === 'predictions' && segments.length >= root + 2) return { kind: 'byId', provider, ids: [canonicalId(segments[root + 1]!)] };
      return create ? { kind: 'create', provider } : null;
    }
    case 'fal':
      if (match.api === 'queue.result' || match.api === 'queue.status') return { kind: 'byId', provider, ids: idsAfter(parts.path, 'requests') };
      return create ? { kind: 'create', provider } : null;
    case 'stability':
      if (match.api === 'results') return { kind: 'byId', provider, ids: idsAfter(parts.path, 'results') };
      return create ? { kind: 'create', provider } : null;
    case 'bfl':
      if (match.api === 'get_result') return { kind: 'byId', provider, ids: new URLSearchParams(parts.query).getAll('id').map(canonicalId) };
      return create ? { kind: 'create', provider } : null;
    default:
      return null;
  }
}

/** The id of the job a create answered with (Replicate `id`, fal `request_id`, Stability and BFL `id`), or null. */
export function createdJobId(provider: JobProvider, body: string | null): string | null {
  if (!body) return null;
  const text = body.trimStart();
  if (!text.startsWith('{')) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return null;
  const id = (parsed as Record<string, unknown>)[provider === 'fal' ? 'request_id' : 'id'];
  return typeof id === 'string' && id.length > 0 && id.length <= MAX_JOB_ID && /^[\x21-\x7e]+$/.test(id) ? canonicalId(id) : null;
}

/**
 * An id as the provider reads it: percent-decoded and lower-case, so a poll spelling an id
 * differently (`%72…`, upper case) meets the same record. Ids are random (lower-case base32,
 * UUIDs, hex), so folding case never joins two real ones.
 */
function canonicalId(raw: string): string {
  let decoded = raw;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    // Not valid percent-encoding: kept as given, which matches no recorded id.
  }
  return decoded.toLowerCase();
}

/** Every path segment that follows a `marker` segment (fal: `…/requests/{id}/…`, Stability: `/v2beta/results/{id}`). */
function idsAfter(path: string, marker: string): string[] {
  const segments = path.split('/');
  const ids: string[] = [];
  for (let i = 0; i < segments.length - 1; i++) if (segments[i] === marker) ids.push(canonicalId(segments[i + 1]!));
  return ids;
}

/** A recorded job: the customer it was created for, and the model its create named. */
export interface JobRecord {
  customerId: string;
  model: string | null;
}

/**
 * The records: written after the create's response has gone out (never blocking or failing it),
 * read before a poll or cancel by id is forwarded.
 */
export class GatewayJobs {
  /** Records being written, by key: a poll arriving meanwhile waits for its record. */
  private readonly pending = new Map<string, Promise<void>>();
  private readonly known = new Map<string, JobRecord>();

  constructor(
    private readonly prisma: PrismaClient,
    private readonly logger: Logger,
  ) {}

  /**
   * Remembers that `jobId` was created for `customerId`, with the model its create named (null
   * when none); returns at once. The first record of an id stays.
   */
  record(merchantId: string, provider: JobProvider, jobId: string, customerId: string, model: string | null = null): void {
    const key = keyOf(merchantId, provider, jobId);
    const previous = this.pending.get(key) ?? Promise.resolve();
    const writing = previous.then(() => this.write(merchantId, provider, jobId, { customerId, model })).finally(() => {
      if (this.pending.get(key) === writing) this.pending.delete(key);
    });
    this.pending.set(key, writing);
  }

  /**
   * The record of each of `jobIds` (its customer and model); ids never recorded are absent. With
   * `waitForLate`, ids not found are looked for once more after LATE_RECORD_MS (see there).
   */
  async records(merchantId: string, provider: JobProvider, jobIds: readonly string[], waitForLate = false): Promise<Map<string, JobRecord>> {
    const found = await this.lookup(merchantId, provider, jobIds);
    const missing = jobIds.filter((jobId) => !found.has(jobId));
    if (!waitForLate || missing.length === 0) return found;
    await new Promise((resolve) => setTimeout(resolve, LATE_RECORD_MS));
    for (const [jobId, record] of await this.lookup(merchantId, provider, missing)) found.set(jobId, record);
    return found;
  }

  /**
   * Forgets jobs created before `before`, in batches (short transactions on a large table), and
   * answers how many. Providers keep a job's result far shorter (Black Forest Labs ten minutes,
   * Replicate an hour, Stability a day); a poll of a forgotten job by token is refused as unknown.
   */
  async prune(before: Date, batchSize = 10_000): Promise<number> {
    let total = 0;
    for (;;) {
      const deleted = await this.prisma.$executeRaw`
        DELETE FROM gateway_jobs WHERE ctid = ANY(ARRAY(SELECT ctid FROM gateway_jobs WHERE created_at < ${before} LIMIT ${batchSize}))`;
      total += deleted;
      if (deleted < batchSize) return total;
    }
  }

  /** Resolves once every record started so far is written (or given up on). */
  async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending.values()]);
  }

  /** Owners from memory or the table, once any record of the same id being written here is done. */
  private async lookup(merchantId: string, provider: JobProvider, jobIds: readonly string[]): Promise<Map<string, JobRecord>> {
    const found = new Map<string, JobRecord>();
    const unknown: string[] = [];
    for (const jobId of new Set(jobIds)) {
      const key = keyOf(merchantId, provider, jobId);
      await this.pending.get(key);
      const cached = this.known.get(key);
      if (cached) found.set(jobId, cached);
      else unknown.push(jobId);
    }
    if (unknown.length === 0) return found;
    const rows = await this.prisma.gatewayJob.findMany({
      where: { merchantId, provider, jobId: { in: unknown } },
      select: { jobId: true, customerId: true, model: true },
    });
    for (const row of rows) {
      const record = { customerId: row.customerId, model: row.model };
      found.set(row.jobId, record);
      this.remember(keyOf(merchantId, provider, row.jobId), record);
    }
    return found;
  }

  private async write(merchantId: string, provider: JobProvider, jobId: string, record: JobRecord): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        const { count } = await this.prisma.gatewayJob.createMany({ data: [{ merchantId, provider, jobId, ...record }], skipDuplicates: true });
        // Not written: the id was recorded before, and that record is the one that counts.
        if (count === 1) this.remember(keyOf(merchantId, provider, jobId), record);
        return;
      } catch (error) {
        if (attempt >= RECORD_ATTEMPTS) {
          // Its customer's polls by token are refused (404) from now on; a secret key still reaches it.
          this.logger.error({ err: error, merchantId, provider, jobId }, 'gateway job not recorded');
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 50 * 4 ** attempt));
      }
    }
  }

  private remember(key: string, record: JobRecord): void {
    if (this.known.size >= MAX_CACHED_OWNERS && !this.known.has(key)) this.known.delete(this.known.keys().next().value as string);
    this.known.set(key, record);
  }
}

function keyOf(merchantId: string, provider: string, jobId: string): string {
  return `${merchantId}|${provider}|${jobId}`;
}

/**
 * Prunes job records older than `retentionDays` every `intervalMs` in this process; every
 * instance may run it (deleting twice is harmless).
 */
export function startJobPruning(jobs: Pick<GatewayJobs, 'prune'>, retentionDays: number, intervalMs: number, logger: Logger): () => void {
  return startRecurring('pruning gateway jobs', intervalMs, async () => {
    const pruned = await jobs.prune(new Date(Date.now() - retentionDays * 24 * 3600 * 1000));
    if (pruned > 0) logger.info({ pruned }, 'forgot gateway jobs past their retention');
  }, logger);
}
