import type { Prisma, PrismaClient, ProviderPrice as PriceRow } from '../../generated/prisma/client.ts';
import { MERCHANT_CONFIG_CACHE, RefreshingCache } from '../../shared/cache.ts';
import { ConfigChanges } from '../../shared/config-changes.ts';
import { inPrismaTransaction, lockMerchantScope, whenCommitted, type PrismaTransaction } from '../../shared/db/prisma-transaction.ts';
import { conflict, invalidField, notFound } from '../../shared/errors.ts';
import { isUniqueViolation } from '../../shared/prisma-errors.ts';
import { isStorableTime, MAX_FUTURE_USAGE_MS } from '../../shared/times.ts';
import { isUuid } from '../../shared/validation.ts';
import { contextTiersInOrder, eventModelNames, modelNameRank, priceInForce, resoldBy, validateProviderPrice, withCanonicalRates, type ModelNames, type ProviderPrice } from './cost.ts';
import { canonicalProviderId } from '../usage/normalize/index.ts';
import { LIST_PRICES } from './list-prices.ts';
import { backdatedPastUsage, CONCURRENT_NOW_MS, effectiveFromNow, followingNow, latestPricedUsageOf } from './pricing-time.ts';
import { importModelsDevJson, type ImportSkip } from './models-dev.ts';

/**
 * The lock (see lockMerchantScope) every write of a merchant's provider prices takes, and a pricing
 * file's apply before it reads them: a write checks the rows stored (a clash, the same price again,
 * the version a file's diff showed) and then writes, which two writers side by side would each pass,
 * one of them replacing the other's price unseen.
 */
export const PROVIDER_PRICES_LOCK = 'provider-prices';

/** A price row with where it came from, so every usage event can record which one costed it. */
export interface PriceWithRef extends ProviderPrice {
  ref: string;
}

export type PriceInput = Omit<ProviderPrice, 'currency' | 'effectiveFrom'> & { effectiveFrom?: Date | null };

const listPriceRef = (price: ProviderPrice) => `list:${price.provider}/${price.model}@${price.effectiveFrom.toISOString()}`;
const LIST: readonly PriceWithRef[] = LIST_PRICES.map((price) => ({ ...price, ref: listPriceRef(price) }));

/**
 * A stored row as a price. Rows stored under a provider alias before ids were canonical still
 * price that provider's calls, and rates stored before they were canonical ("2.50", 2) read as
 * canonical ones ("2.5", "2"; see withCanonicalRates).
 */
export function toPrice(row: PriceRow): PriceWithRef {
  return { ...withCanonicalRates(row.prices as unknown as ProviderPrice), provider: canonicalProviderId(row.provider), model: row.model, currency: 'USD', effectiveFrom: row.effectiveFrom, ref: row.id };
}

/**
 * Provider costs: the shipped list prices, overridden per model by the merchant's own rows.
 * The merchant's rows are cached briefly per process; ingest reads them for every event.
 */
export class ProviderPriceService {
  private readonly cache = new RefreshingCache<string, PriceWithRef[]>(MERCHANT_CONFIG_CACHE);

  constructor(
    private readonly prisma: PrismaClient,
    private readonly changes = new ConfigChanges(),
  ) {
    changes.on('provider-prices', (merchantId) => this.cache.delete(merchantId));
  }

  rowsFor(merchantId: string): Promise<PriceWithRef[]> {
    return this.cache.get(merchantId, async () => (await this.prisma.providerPrice.findMany({ where: { merchantId } })).map(toPrice));
  }

  /** The merchant's rows as `tx` reads them (not cached): what a write in it is judged against. */
  async rowsIn(merchantId: string, tx: PrismaTransaction): Promise<PriceWithRef[]> {
    return (await tx.client.providerPrice.findMany({ where: { merchantId } })).map(toPrice);
  }

  /** The price in force at `at`: the merchant's row for the model when it has one, else the list price. */
  async priceFor(merchantId: string, provider: string, model: string, at: Date): Promise<PriceWithRef | null> {
    return resolvePrice(await this.rowsFor(merchantId), provider, model, at);
  }

  /**
   * Adds a price row; a change to an existing model is a new row with a later effectiveFrom
   * (default now: moved past the merchant's usage already priced, see fromNow). History is kept:
   * a given effectiveFrom at or before usage already priced that the row could cost is refused
   * (VALIDATION, see latestPricedUsageOf); a row that may already have costed events is never
   * replaced, so writing a different price at its effectiveFrom is a CONFLICT, and writing the
   * same one is a no-op that answers the stored row. A row scheduled further ahead than any event
   * can be timestamped has costed nothing yet, and is replaced (`tollgate apply` reschedules prices that way).
   * `tx`: write inside that transaction (the cache is dropped once it commits); `movedNow`: the
   * moment "from now" stands for, when the caller already read it in `tx` (see putAll's). A row
   * stored at that very moment is then a clash, as for a date given: a config file planned
   * before it was written is refused rather than written a millisecond later over it.
   */
  async add(merchantId: string, input: PriceInput, source = 'manual', tx?: PrismaTransaction, movedNow?: Date): Promise<PriceRow> {
    const given = input.effectiveFrom ?? null;
    // Checked before any query; "from now" is then read just before the write (see fromNow).
    const row = storedRow(input, given ?? new Date());
    const raced = `A price for ${row.provider}/${row.model}${given ? ` at ${row.effectiveFrom.toISOString()}` : ''} was written at the same moment by another request: try again`;
    const write = async (on: PrismaTransaction) => {
      // Judged against the rows stored once the lock is held (see PROVIDER_PRICES_LOCK); "now" is read after it too.
      await lockMerchantScope(on, PROVIDER_PRICES_LOCK, merchantId);
      const rows = given ? [row] : [{ ...row, effectiveFrom: movedNow ?? (await fromNow(on.client, merchantId, new Date(), [row])) }];
      return (await this.write(on.client, merchantId, rows, source, given !== null)).rows;
    };
    const written = tx
      ? // The failed insert has aborted the caller's transaction: it may run it again.
        await write(tx).catch(raceLost(raced))
      : await retryOnRace(() => inPrismaTransaction(this.prisma, write), raced);
    whenCommitted(tx, () => this.changes.changed('provider-prices', merchantId));
    return written[0]!;
  }

  /**
   * Deletes one of the merchant's price rows (by id, a PriceWithRef's `ref`) that is scheduled
   * further ahead than any event can be timestamped (see add): it has costed nothing yet, so
   * cancelling it rewrites no history (`tollgate apply` cancels a scheduled price its file no
   * longer lists). A row in force, or taking effect sooner than that, may have costed events and
   * is refused (CONFLICT), as is a row of another merchant or none (NOT_FOUND).
   * `tx`: delete inside that transaction (the cache is dropped once it commits).
   */
  async cancelScheduled(merchantId: string, id: string, tx?: PrismaTransaction): Promise<void> {
    if (!isUuid(id)) throw notFound('Provider price', id);
    const prisma = tx?.client ?? this.prisma;
    const settled = new Date(Date.now() + MAX_FUTURE_USAGE_MS);
    const { count } = await prisma.providerPrice.deleteMany({ where: { id, merchantId, effectiveFrom: { gt: settled } } });
    if (count === 0) {
      const row = await prisma.providerPrice.findFirst({ where: { id, merchantId } });
      if (!row) throw notFound('Provider price', id);
      throw conflict(
        `The price for ${row.provider}/${row.model} from ${row.effectiveFrom.toISOString()} is in force, or takes effect within the minutes ahead that usage may be ` +
          'timestamped, so it may already have costed events, and prices in force are history that is kept: add the new price with a later effectiveFrom.',
        { field: 'effectiveFrom', models: [`${row.provider}/${row.model}`] },
      );
    }
    whenCommitted(tx, () => this.changes.changed('provider-prices', merchantId));
  }

  /**
   * Imports a whole models.dev file; malformed entries are skipped and reported, not fatal. Rows
   * that clash with stored history, or dated at or before usage already priced (see add), refuse
   * the whole import before anything is written.
   * `imported`: the prices written (added, or replacing one scheduled ahead); `unchanged`: those
   * already stored with the same rates, at that effectiveFrom or (from now) in force, so not
   * written again (a daily re-import of the same file imports none); `skipped`: the entries refused.
   */
  async importModelsDev(merchantId: string, fileText: string, effectiveFrom?: Date | null): Promise<{ imported: number; unchanged: number; skipped: ImportSkip[] }> {
    const given = effectiveFrom ?? null;
    const { rows, skipped } = importModelsDevJson(fileText, { effectiveFrom: given ?? new Date() });
    const stored = rows.map((price) => storedRow(price, given ?? new Date()));
    const { unchanged } = await retryOnRace(
      () =>
        inPrismaTransaction(this.prisma, async (tx) => {
          await lockMerchantScope(tx, PROVIDER_PRICES_LOCK, merchantId);
          // "From now": after the merchant's usage already priced (see fromNow), read in the transaction that writes.
          const from = given ?? (await fromNow(tx.client, merchantId, new Date(), stored));
          return this.write(tx.client, merchantId, given ? stored : stored.map((row) => ({ ...row, effectiveFrom: from })), 'models.dev', given !== null);
        }, { timeout: 30_000 }),
      `Prices ${given ? `from ${given.toISOString()} ` : ''}were written at the same moment by another import or request: try again`,
    );
    this.changes.changed('provider-prices', merchantId);
    return { imported: rows.length - unchanged, unchanged, skipped };
  }

  /**
   * Writes rows of one merchant (see add): every clash is found before anything is written.
   * `dated`: the rows' effectiveFrom was given, so it is checked against usage already priced
   * ("from now" was moved past it, see fromNow). `rows`: the stored row of each, in order;
   * `unchanged`: how many of them were stored already with the same rates, and not written.
   */
  private async write(prisma: Pick<PrismaClient, 'providerPrice' | '$queryRaw'>, merchantId: string, rows: StoredRow[], source: string, dated: boolean): Promise<{ rows: PriceRow[]; unchanged: number }> {
    const times = [...new Set(rows.map((row) => row.effectiveFrom.getTime()))].map((time) => new Date(time));
    const existing = new Map<string, PriceRow>();
    for (const stored of await prisma.providerPrice.findMany({ where: { merchantId, effectiveFrom: { in: times } } })) existing.set(rowKey(stored), stored);
    const settled = Date.now() + MAX_FUTURE_USAGE_MS;
    const clashes: PriceRow[] = [];
    // "From now", the price already in force for the model changes nothing if it is the same: a
    // row is not written again (an import run every day would add the whole table each time).
    const inForce = dated ? null : await latestRowsBefore(prisma, merchantId, rows);
    const plan = rows.map((row) => {
      const current = existing.get(rowKey(row));
      const previous = inForce?.get(modelKey(row));
      if (!current && previous && sameRates(previous, row)) return { row, current: previous, same: true };
      if (!current) return { row, current };
      if (sameRates(current, row)) return { row, current, same: true };
      if (current.effectiveFrom.getTime() <= settled) clashes.push(current);
      return { row, current };
    });
    if (clashes.length > 0) {
      const names = clashes.map((row) => `${row.provider}/${row.model}`);
      throw conflict(
        `A different price for ${names.length === 1 ? names[0] : `${names.length} models (${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''})`} already takes effect at ` +
          `${clashes[0]!.effectiveFrom.toISOString()}, and prices in force are history that is kept: add the new price with a later effectiveFrom.`,
        { field: 'effectiveFrom', models: names },
      );
    }
    // A row written at or before usage already priced that it could have costed would cost a
    // late event at that moment another way than its neighbours were: history is never rewritten.
    // A row stored already with the same rates changes nothing, so writing it again still answers it.
    const changing = plan.filter(({ same }) => !same).map(({ row }) => row);
    if (dated && changing.length > 0) {
      const earliest = new Date(earliestTime(changing));
      const priced = await latestPricedUsageOf(prisma, merchantId, earliest, (pair) => changing.some((row) => priceCouldCost(row, pair)));
      if (priced) throw backdatedPastUsage(`the merchant's latest usage of ${changing.length === 1 ? changing[0]!.model : 'these models'} already priced`, priced);
    }
    const written = new Map<string, PriceRow>();
    const fresh: StoredRow[] = [];
    for (const { row, current, same } of plan) {
      if (same) written.set(rowKey(row), current!);
      else if (current) written.set(rowKey(row), await prisma.providerPrice.update({ where: { id: current.id }, data: { prices: row.prices, source } }));
      else fresh.push(row);
    }
    if (fresh.length > 0) {
      // One statement for a whole imported table, in one order for every writer: two inserting the
      // same rows in other orders could each wait on the other's (a deadlock, not a unique violation).
      fresh.sort((a, b) => (rowKey(a) < rowKey(b) ? -1 : rowKey(a) > rowKey(b) ? 1 : 0));
      for (const created of await prisma.providerPrice.createManyAndReturn({ data: fresh.map((row) => ({ merchantId, ...row, source })) })) written.set(rowKey(created), created);
    }
    return { rows: rows.map((row) => written.get(rowKey(row))!), unchanged: plan.filter(({ same }) => same).length };
  }

  /** Rows named as filtered: trimmed and case-insensitively, a provider by its id or an alias (as priceInForce matches them). */
  async list(merchantId: string, filter: { provider?: string | null; model?: string | null }): Promise<PriceWithRef[]> {
    const own = await this.rowsFor(merchantId);
    const provider = filter.provider?.trim() ? canonicalProviderId(filter.provider).toLowerCase() : null;
    const model = filter.model?.trim() ? filter.model.trim().toLowerCase() : null;
    return [...own, ...LIST].filter(
      (price) => (!provider || canonicalProviderId(price.provider).toLowerCase() === provider) && (!model || price.model.trim().toLowerCase() === model),
    );
  }
}

/**
 * Merchant rows win over list rows for the same model; otherwise the most specific match in force.
 * With no row for the provider that served the call, a cloud that resells a model maker's models
 * is costed at the maker's price (see resoldBy). A model named with the prefix of the provider
 * that served it or of that maker ("google/gemini-2.0-flash-001" on Vertex AI's OpenAI-compatible
 * endpoint) is matched without it too, below its whole name (see priceInForce).
 */
export function resolvePrice(merchantRows: readonly PriceWithRef[], provider: string, model: string, at: Date): PriceWithRef | null {
  const maker = resoldBy(provider, model);
  const owners = maker ? [maker.provider] : [];
  const own = closerOf(priceInForce(merchantRows, provider, model, at, owners), priceInForce(LIST, provider, model, at, owners), eventModelNames(provider, model));
  if (own) return own;
  return maker && closerOf(priceInForce(merchantRows, maker.provider, maker.model, at), priceInForce(LIST, maker.provider, maker.model, at), eventModelNames(maker.provider, maker.model));
}

/**
 * The merchant's row, unless the list row names the model more closely: a merchant's "gpt-4o"
 * is the same model as the list's "gpt-4o", not as its "gpt-4o-2024-05-13", a snapshot still
 * served at its own (dearer) price, which the merchant's undated row would otherwise cost.
 */
function closerOf(mine: PriceWithRef | null, listed: PriceWithRef | null, names: ModelNames): PriceWithRef | null {
  if (!mine || !listed) return mine ?? listed;
  return modelNameRank(listed.model, names) > modelNameRank(mine.model, names) ? listed : mine;
}

/**
 * Whether a price row of `row.provider`/`row.model` could cost events of this provider and model,
 * whatever other rows there are: as resolvePrice matches (the name exactly or as a dated
 * snapshot, without its owner's prefix, or the maker's row of a model a cloud resells).
 */
export function priceCouldCost(row: { provider: string; model: string }, event: { provider: string | null; model: string | null }): boolean {
  if (event.provider === null || event.model === null) return false;
  const probe = [{ ...row, currency: 'USD', effectiveFrom: new Date(0) } as ProviderPrice];
  const maker = resoldBy(event.provider, event.model);
  return priceInForce(probe, event.provider, event.model, FAR_FUTURE, maker ? [maker.provider] : []) !== null
    || (maker !== null && priceInForce(probe, maker.provider, maker.model, FAR_FUTURE) !== null);
}

const FAR_FUTURE = new Date('9999-01-01T00:00:00Z');

/**
 * When prices "from now" for `rows`' models take effect: now, or a millisecond after the
 * merchant's latest usage already priced when some is stamped at or after now (usage may be
 * stamped up to MAX_FUTURE_USAGE_MS ahead; see effectiveFromNow), so that no charged event is
 * costed by the new price. A price "from now" of one of these models written just before (moved
 * past the same usage, or in the same millisecond; see concurrentVersionAt) is followed a
 * millisecond later, as a new version, rather than taken for a clash (or for the same row).
 */
async function fromNow(prisma: Pick<PrismaClient, 'providerPrice' | '$queryRaw'>, merchantId: string, now: Date, rows: readonly StoredRow[]): Promise<Date> {
  const from = await effectiveFromNow(prisma, merchantId, now);
  const models = new Set(rows.map(modelKey));
  const near = await prisma.providerPrice.findMany({
    where: { merchantId, effectiveFrom: { gte: from, lt: new Date(from.getTime() + CONCURRENT_NOW_MS) } },
    select: { provider: true, model: true, effectiveFrom: true },
  });
  return followingNow(from, near.filter((stored) => models.has(modelKey(stored))).map((stored) => stored.effectiveFrom));
}

interface StoredRow {
  provider: string;
  model: string;
  effectiveFrom: Date;
  prices: Prisma.InputJsonObject;
}

/**
 * A validated price as stored: the provider's id (not an alias), trimmed names, and the rates
 * alone in `prices`, each as the shortest decimal string of its value (see withCanonicalRates).
 */
function storedRow(input: PriceInput, effectiveFrom: Date): StoredRow {
  // Read back beyond year 9999 it is an Invalid Date, which breaks every lookup of the provider.
  if (!(effectiveFrom instanceof Date) || Number.isNaN(effectiveFrom.getTime()) || !isStorableTime(effectiveFrom)) {
    throw invalidField('effectiveFrom', 'must be a valid date between the years 1 and 9999');
  }
  // A currency given with the rates is checked, not overwritten: only USD is stored.
  const currency = (input as { currency?: unknown }).currency ?? 'USD';
  const price = withCanonicalRates(validateProviderPrice({ ...input, currency, effectiveFrom } as ProviderPrice));
  const { provider, model, effectiveFrom: _from, currency: _currency, ...prices } = price;
  return { provider: canonicalProviderId(provider), model: model.trim(), effectiveFrom, prices: prices as Prisma.InputJsonObject };
}

/** How many times a write of price rows runs while other writers keep inserting its rows first. */
const RACE_ATTEMPTS = 4;

/**
 * Runs a write of price rows again when another writer inserted one of them first (a unique
 * violation): the next run judges the rows against what that one stored (see add). A write of
 * several rows (an import) can lose to a different writer on each of them, and each loss leaves
 * one more row stored to be judged, so a few runs settle it. Losing every time is a CONFLICT,
 * never an INTERNAL error.
 */
async function retryOnRace<T>(write: () => Promise<T>, message: string): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (error) {
      if (!isUniqueViolation(error) || attempt === RACE_ATTEMPTS) return raceLost(message)(error);
    }
  }
}

/** A unique violation (another writer stored the same row first) as a CONFLICT with `message`. */
const raceLost =
  (message: string) =>
  (error: unknown): never => {
    if (!isUniqueViolation(error)) throw error;
    throw conflict(message, { field: 'effectiveFrom' });
  };

/** Rows that price the same calls from the same instant: names match case-insensitively when pricing (priceInForce). */
/** A price's model as rows are matched: the provider's id and the trimmed model name, in any case. */
const modelKey = (row: { provider: string; model: string }) => `${canonicalProviderId(row.provider).toLowerCase()}\u0000${row.model.trim().toLowerCase()}`;
const rowKey = (row: { provider: string; model: string; effectiveFrom: Date }) => `${modelKey(row)}\u0000${row.effectiveFrom.getTime()}`;

/** Compared by value: the stored row may predate canonical rates (see storedRow). */
const sameRates = (stored: PriceRow, row: StoredRow) => canonicalRates(withCanonicalRates(stored.prices as object)) === canonicalRates(row.prices);

/** For each model of `rows`, the merchant's latest row taking effect before the earliest of them (the price in force then). */
async function latestRowsBefore(prisma: Pick<PrismaClient, 'providerPrice'>, merchantId: string, rows: readonly StoredRow[]): Promise<Map<string, PriceRow>> {
  const latest = new Map<string, PriceRow>();
  if (rows.length === 0) return latest;
  const before = new Date(earliestTime(rows));
  const wanted = new Set(rows.map(modelKey));
  for (const stored of await prisma.providerPrice.findMany({ where: { merchantId, effectiveFrom: { lt: before } }, orderBy: { effectiveFrom: 'asc' } })) {
    if (wanted.has(modelKey(stored))) latest.set(modelKey(stored), stored);
  }
  return latest;
}

/**
 * Rates as JSON with sorted keys and no empty values, so equal rates compare equal however they were written:
 * context tiers too, in any order (the tier a request uses is the highest threshold it exceeds, wherever it is listed),
 * and image prices by their keys trimmed and in any case, as images are matched to them (validateProviderPrice
 * refuses two keys that would match alike).
 */
function canonicalRates(rates: unknown): string {
  return JSON.stringify(rates, (key, value: unknown) => {
    if (key === 'perImageBy' && value && typeof value === 'object' && !Array.isArray(value)) {
      const entries = Object.entries(value as Record<string, unknown>).filter(([, inner]) => inner != null).map(([name, inner]) => [name.trim().toLowerCase(), inner] as const);
      return Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    }
    if (key === 'contextTiers') return contextTiersInOrder(value);
    return value && typeof value === 'object' && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value as Record<string, unknown>).filter(([, inner]) => inner != null).sort(([a], [b]) => a.localeCompare(b)))
      : value;
  });
}

/** The earliest effectiveFrom, by a loop: spreading an import's hundreds of thousands of rows into Math.min overflows the stack. */
function earliestTime(rows: readonly { effectiveFrom: Date }[]): number {
  let earliest = Infinity;
  for (const row of rows) earliest = Math.min(earliest, row.effectiveFrom.getTime());
  return earliest;
}
