import type { Prisma, PrismaClient, ProviderPrice as PriceRow } from '../../generated/prisma/client.ts';
import { MERCHANT_CONFIG_CACHE, RefreshingCache } from '../../shared/cache.ts';
import { invalidField } from '../../shared/errors.ts';
import { priceInForce, validateProviderPrice, type ProviderPrice } from './cost.ts';
import { LIST_PRICES } from './list-prices.ts';
import { importModelsDevJson } from './models-dev.ts';

/** A price row with where it came from, so every usage event can record which one costed it. */
export interface PriceWithRef extends ProviderPrice {
  ref: string;
}

export type PriceInput = Omit<ProviderPrice, 'currency' | 'effectiveFrom'> & { effectiveFrom?: Date | null };

const listPriceRef = (price: ProviderPrice) => `list:${price.provider}/${price.model}@${price.effectiveFrom.toISOString()}`;
const LIST: readonly PriceWithRef[] = LIST_PRICES.map((price) => ({ ...price, ref: listPriceRef(price) }));

function toPrice(row: PriceRow): PriceWithRef {
  return { ...(row.prices as unknown as ProviderPrice), provider: row.provider, model: row.model, currency: 'USD', effectiveFrom: row.effectiveFrom, ref: row.id };
}

/**
 * Provider costs: the shipped list prices, overridden per model by the merchant's own rows.
 * The merchant's rows are cached briefly per process; ingest reads them for every event.
 */
export class ProviderPriceService {
  private readonly cache = new RefreshingCache<string, PriceWithRef[]>(MERCHANT_CONFIG_CACHE);

  constructor(private readonly prisma: PrismaClient) {}

  rowsFor(merchantId: string): Promise<PriceWithRef[]> {
    return this.cache.get(merchantId, async () => (await this.prisma.providerPrice.findMany({ where: { merchantId } })).map(toPrice));
  }

  /** The price in force at `at`: the merchant's row for the model when it has one, else the list price. */
  async priceFor(merchantId: string, provider: string, model: string, at: Date): Promise<PriceWithRef | null> {
    return resolvePrice(await this.rowsFor(merchantId), provider, model, at);
  }

  /** Adds a price row; a change to an existing model is a new row with a later effectiveFrom. */
  async add(merchantId: string, input: PriceInput, source = 'manual'): Promise<PriceRow> {
    const effectiveFrom = input.effectiveFrom ?? new Date();
    const price = validateProviderPrice({ ...input, currency: 'USD', effectiveFrom });
    const { provider, model, effectiveFrom: _from, currency: _currency, ...prices } = price;
    if (!provider.trim()) throw invalidField('provider', 'must not be empty');
    if (!model.trim()) throw invalidField('model', 'must not be empty');
    const row = await this.prisma.providerPrice.upsert({
      where: { merchantId_provider_model_effectiveFrom: { merchantId, provider, model, effectiveFrom } },
      create: { merchantId, provider, model, prices: prices as Prisma.InputJsonObject, effectiveFrom, source },
      update: { prices: prices as Prisma.InputJsonObject, source },
    });
    this.cache.delete(merchantId);
    return row;
  }

  /** Imports a whole models.dev file; malformed entries are skipped and reported, not fatal. */
  async importModelsDev(merchantId: string, fileText: string, effectiveFrom = new Date()) {
    const { rows, skipped } = importModelsDevJson(fileText, { effectiveFrom });
    for (const row of rows) await this.add(merchantId, row, 'models.dev');
    return { imported: rows.length, skipped };
  }

  async list(merchantId: string, filter: { provider?: string | null; model?: string | null }): Promise<PriceWithRef[]> {
    const own = await this.rowsFor(merchantId);
    return [...own, ...LIST].filter(
      (price) => (!filter.provider || price.provider === filter.provider) && (!filter.model || price.model === filter.model),
    );
  }
}

/** Merchant rows win over list rows for the same model; otherwise the most specific match in force. */
export function resolvePrice(merchantRows: readonly PriceWithRef[], provider: string, model: string, at: Date): PriceWithRef | null {
  return priceInForce(merchantRows, provider, model, at) ?? priceInForce(LIST, provider, model, at);
}
