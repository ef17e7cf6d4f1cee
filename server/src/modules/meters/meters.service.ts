import type { Meter, MeterAggregation, MeterSource, Prisma, PrismaClient } from '../../generated/prisma/client.ts';
import { MERCHANT_CONFIG_CACHE, RefreshingCache } from '../../shared/cache.ts';
import { ConfigChanges } from '../../shared/config-changes.ts';
import { whenCommitted, type PrismaTransaction } from '../../shared/db/prisma-transaction.ts';
import { conflict, invalidField, notFound } from '../../shared/errors.ts';
import { isUniqueViolation } from '../../shared/prisma-errors.ts';
import { requireNonEmpty } from '../../shared/validation.ts';
import type { NormalizedUsage } from '../usage/usage.types.ts';

export type { Meter };

const KEY = /^[a-z][a-z0-9_.-]{0,63}$/;

export type MeterInput = { key: string; name: string; unit: string; source: MeterSource; aggregation?: MeterAggregation | null };

/** A meter key as given in the API or a config file, or a VALIDATION error naming `field`. */
export function parseMeterKey(field: string, key: unknown): string {
  if (typeof key !== 'string' || !KEY.test(key)) throw invalidField(field, 'must start with a letter and use a-z, 0-9, "_", "-" or "." (at most 64)');
  return key;
}

/** A meter's name and unit checked and trimmed; errors name `prefix` + the field ("meters.0.name"). */
export function meterLabels(input: { name?: unknown; unit?: unknown }, prefix = ''): { name: string; unit: string } {
  const text = (field: string, value: unknown, maxLength: number) => {
    if (typeof value !== 'string') throw invalidField(`${prefix}${field}`, 'must be text');
    return requireNonEmpty(`${prefix}${field}`, value, maxLength);
  };
  return { name: text('name', input.name, 255), unit: text('unit', input.unit, 32) };
}

/** How much of a meter one usage record carries; decimal strings for fractional units. */
export function meterQuantity(source: MeterSource, usage: NormalizedUsage, stated: Record<string, string | number> = {}, key = ''): bigint | string {
  switch (source) {
    case 'INPUT_TOKENS':
      return BigInt(usage.inputTokens);
    case 'CACHED_INPUT_TOKENS':
      return BigInt(usage.cachedInputTokens);
    case 'UNCACHED_INPUT_TOKENS': {
      // Cache reads and writes are parts of the input; a provider that reports them above it is read as having none uncached.
      const uncached = usage.inputTokens - usage.cachedInputTokens - usage.cacheWriteTokens;
      return BigInt(uncached > 0 ? uncached : 0);
    }
    case 'CACHE_WRITE_TOKENS':
      return BigInt(usage.cacheWriteTokens);
    case 'OUTPUT_TOKENS':
      return BigInt(usage.outputTokens);
    case 'REASONING_TOKENS':
      return BigInt(usage.reasoningTokens);
    case 'TOTAL_TOKENS':
      return BigInt(usage.inputTokens + usage.outputTokens);
    case 'REQUESTS':
      return BigInt(usage.requests);
    case 'IMAGES':
      return BigInt(usage.images);
    case 'AUDIO_SECONDS':
      return usage.audioSeconds ?? 0n;
    case 'CHARACTERS':
      return BigInt(usage.characters);
    case 'QUANTITY': {
      // Own keys only: a meter keyed "constructor" must not read the one every object inherits.
      const value = Object.hasOwn(stated, key) ? stated[key] : undefined;
      return value === undefined ? 0n : typeof value === 'number' ? BigInt(value) : value;
    }
  }
}

export class MeterService {
  private readonly cache = new RefreshingCache<string, Meter[]>(MERCHANT_CONFIG_CACHE);

  constructor(
    private readonly prisma: PrismaClient,
    private readonly changes = new ConfigChanges(),
  ) {
    changes.on('meters', (merchantId) => this.cache.delete(merchantId));
  }

  /** `tx`: write inside that transaction (the cache is dropped once it commits). */
  async create(merchantId: string, input: MeterInput, tx?: PrismaTransaction): Promise<Meter> {
    const key = parseMeterKey('key', input.key);
    try {
      const meter = await (tx?.client ?? this.prisma).meter.create({
        data: {
          merchantId,
          key,
          ...meterLabels(input),
          source: input.source,
          aggregation: input.aggregation ?? 'SUM',
        },
      });
      whenCommitted(tx, () => this.changes.changed('meters', merchantId));
      return meter;
    } catch (error) {
      if (isUniqueViolation(error)) throw conflict(`A meter with key "${input.key}" already exists`, { field: 'key' });
      throw error;
    }
  }

  /** Renames or re-units a meter (its source is fixed: counting something else needs a new key). */
  async update(merchantId: string, key: string, input: { name: string; unit: string; aggregation?: MeterAggregation | null }, tx?: PrismaTransaction): Promise<Meter> {
    const prisma = tx?.client ?? this.prisma;
    const labels = meterLabels(input);
    const meter = await this.byKey(merchantId, key, prisma);
    const updated = await prisma.meter.update({
      where: { id: meter.id },
      data: { ...labels, aggregation: input.aggregation ?? 'SUM', archivedAt: null },
    });
    whenCommitted(tx, () => this.changes.changed('meters', merchantId)); // after the write: a load racing it must not be kept
    return updated;
  }

  async archive(merchantId: string, key: string): Promise<Meter> {
    const meter = await this.byKey(merchantId, key);
    if (meter.archivedAt) return meter;
    const archived = await this.prisma.meter.update({ where: { id: meter.id }, data: { archivedAt: new Date() } });
    this.changes.changed('meters', merchantId);
    return archived;
  }

  /**
   * Makes an archived meter active again under its key (which archiving kept taken): ingest counts it
   * from now on, and its price rules price it again. Usage recorded while it was archived stays uncounted.
   */
  async unarchive(merchantId: string, key: string): Promise<Meter> {
    const meter = await this.byKey(merchantId, key);
    if (!meter.archivedAt) return meter;
    const restored = await this.prisma.meter.update({ where: { id: meter.id }, data: { archivedAt: null } });
    this.changes.changed('meters', merchantId); // after the write, as archive: a load racing it must not be kept
    return restored;
  }

  /** Active meters, cached briefly: ingest reads them for every batch. */
  active(merchantId: string): Promise<Meter[]> {
    return this.cache.get(merchantId, () => this.prisma.meter.findMany({ where: { merchantId, archivedAt: null }, orderBy: { key: 'asc' } }));
  }

  async list(merchantId: string, includeArchived: boolean): Promise<Meter[]> {
    return this.prisma.meter.findMany({ where: { merchantId, ...(includeArchived ? {} : { archivedAt: null }) }, orderBy: { key: 'asc' } });
  }

  /** The merchant's meter with this key, archived or not, or NOT_FOUND (another merchant's is not found either). */
  private async byKey(merchantId: string, key: string, prisma: Prisma.TransactionClient = this.prisma): Promise<Meter> {
    // A key create refuses names no meter, so it is not looked up (the database would refuse one with NUL).
    const meter = KEY.test(key) ? await prisma.meter.findUnique({ where: { merchantId_key: { merchantId, key } } }) : null;
    if (!meter) throw notFound('Meter', key);
    return meter;
  }
}
