import type { Prisma, PriceRule as RuleRow, PriceRuleType, PrismaClient } from '../../generated/prisma/client.ts';
import { invalidField, notFound } from '../../shared/errors.ts';
import { requireNonEmpty } from '../../shared/validation.ts';
import { validateRule, type PricingRule } from './rules.ts';

export type { RuleRow };

export interface RuleInput {
  name: string;
  type: PriceRuleType;
  meterKey?: string | null;
  provider?: string | null;
  model?: string | null;
  planId?: string | null;
  /** Kind-specific settings: unitPrice/perUnits, percent/feePerRequest, tiers, packageSize/packagePrice, minimumCharge. */
  config: Record<string, unknown>;
  effectiveFrom?: Date | null;
}

/** A stored rule as the pricing math wants it. */
export function toPricingRule(row: Pick<RuleRow, 'id' | 'type' | 'meterKey' | 'provider' | 'model' | 'config'>): PricingRule {
  return { ...(row.config as object), kind: row.type, id: row.id, meter: row.meterKey, provider: row.provider, model: row.model } as PricingRule;
}

/**
 * The versions in force at `at`: for each rule name, the latest version effective by then.
 * Changing a price never rewrites history; it adds a version with a later effectiveFrom.
 */
export function rulesInForce<R extends Pick<RuleRow, 'name' | 'effectiveFrom' | 'archivedAt'>>(rows: readonly R[], at: Date): R[] {
  const latest = new Map<string, R>();
  for (const row of rows) {
    if (row.effectiveFrom > at) continue;
    const current = latest.get(row.name);
    if (!current || row.effectiveFrom > current.effectiveFrom) latest.set(row.name, row);
  }
  return [...latest.values()].filter((row) => !row.archivedAt || row.archivedAt > at);
}

export class PriceRuleService {
  private readonly cache = new Map<string, { rows: RuleRow[]; at: number }>();

  constructor(private readonly prisma: PrismaClient) {}

  /** Every version of the default price book (plans add their own later), cached briefly. */
  async allVersions(merchantId: string): Promise<RuleRow[]> {
    const cached = this.cache.get(merchantId);
    if (cached && Date.now() - cached.at < 30_000) return cached.rows;
    const rows = await this.prisma.priceRule.findMany({ where: { merchantId, planId: null }, orderBy: [{ name: 'asc' }, { effectiveFrom: 'asc' }] });
    this.cache.set(merchantId, { rows, at: Date.now() });
    return rows;
  }

  /** Creates a rule, or a new version of the rule with this name (from effectiveFrom, default now). */
  async put(merchantId: string, input: RuleInput): Promise<RuleRow> {
    const name = requireNonEmpty('name', input.name, 100);
    if (input.planId) throw invalidField('planId', 'plans are not available yet; omit it for the default price book');
    const candidate = toPricingRule({ id: 'new', type: input.type, meterKey: input.meterKey ?? null, provider: input.provider ?? null, model: input.model ?? null, config: input.config as Prisma.JsonObject });
    validateRule(candidate);
    const effectiveFrom = input.effectiveFrom ?? new Date();
    const latest = await this.prisma.priceRule.findFirst({ where: { merchantId, planId: null, name }, orderBy: { effectiveFrom: 'desc' } });
    if (latest && effectiveFrom <= latest.effectiveFrom) {
      throw invalidField('effectiveFrom', `must be after the current version's (${latest.effectiveFrom.toISOString()}): history is never rewritten`);
    }
    const row = await this.prisma.priceRule.create({
      data: {
        merchantId,
        name,
        type: input.type,
        meterKey: input.meterKey ?? null,
        provider: input.provider ?? null,
        model: input.model ?? null,
        config: input.config as Prisma.InputJsonObject,
        effectiveFrom,
      },
    });
    this.cache.delete(merchantId);
    return row;
  }

  /** Stops a rule from `at` (default now); earlier events keep the price they were charged. */
  async archive(merchantId: string, name: string, at = new Date()): Promise<RuleRow> {
    const latest = await this.prisma.priceRule.findFirst({ where: { merchantId, planId: null, name }, orderBy: { effectiveFrom: 'desc' } });
    if (!latest) throw notFound('Price rule', name);
    this.cache.delete(merchantId);
    return latest.archivedAt ? latest : this.prisma.priceRule.update({ where: { id: latest.id }, data: { archivedAt: at } });
  }
}
