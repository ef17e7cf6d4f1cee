import type { GatewayHost, Merchant, PrismaClient } from '../../generated/prisma/client.ts';
import { RefreshingCache } from '../../shared/cache.ts';
import { ConfigChanges } from '../../shared/config-changes.ts';
import { conflict, invalidField, notFound } from '../../shared/errors.ts';
import { isUniqueViolation } from '../../shared/prisma-errors.ts';
import { isUuid } from '../../shared/validation.ts';
import { canonicalProviderId, SUPPORTED_PROVIDERS } from '../usage/normalize/index.ts';
import { parseHostRule, type GatewayHostRule } from './destination.ts';
import type { SpendLimitService } from '../limits/spend-limits.service.ts';
import type { ProviderCredentialService } from './provider-credentials.service.ts';

export type { GatewayHost };

/** What the gateway needs to know about a merchant on every call. */
export interface MerchantGatewaySettings {
  hosts: GatewayHostRule[];
  callerProviderKeys: boolean;
  reserveMaxCost: boolean;
  /** Monthly spend limits in nanos by `customerId|currency`; most customers have none. */
  spendLimits: Map<string, bigint>;
}

const PROVIDER_IDS = new Set(SUPPORTED_PROVIDERS.map((provider) => provider.id));

/** Settings and provider keys are read on every forwarded call, so they are cached briefly. */
const SETTINGS_TTL_MS = 5_000;
const KEY_TTL_MS = 30_000;

/**
 * The merchant's gateway configuration: extra allowed hosts (self-hosted or OpenAI-compatible
 * endpoints), whether callers may bring their own provider key, and whether each call's
 * maximum cost is reserved before the provider is called. A change takes effect at once here
 * and, through ConfigChanges, on the other instances (their cache lifetimes bound a lost message).
 */
export class GatewaySettingsService {
  private readonly settings = new RefreshingCache<string, MerchantGatewaySettings>({ ttlMs: SETTINGS_TTL_MS, maxEntries: 10_000 });
  private readonly keys = new RefreshingCache<string, string | null>({ ttlMs: KEY_TTL_MS, maxEntries: 10_000 });

  constructor(
    private readonly prisma: PrismaClient,
    private readonly credentials: ProviderCredentialService,
    private readonly spendLimits: SpendLimitService,
    private readonly changes = new ConfigChanges(),
  ) {
    changes.on('gateway-settings', (merchantId) => this.drop(merchantId));
    credentials.onChange((merchantId) => this.forget(merchantId));
    spendLimits.onChange((merchantId) => this.forget(merchantId));
  }

  async hosts(merchantId: string): Promise<GatewayHost[]> {
    return this.prisma.gatewayHost.findMany({ where: { merchantId }, orderBy: { host: 'asc' } });
  }

  /** Allows a host; adding one that exists changes its provider. */
  async putHost(merchantId: string, input: { host: string; provider: string }): Promise<GatewayHost> {
    const rule = parseHostRule(input.host.trim().toLowerCase());
    if (!rule) throw invalidField('host', 'must be a host name, host:port, or *.domain (no scheme or path), e.g. "llm.internal.example.com:8000"');
    const host = `${rule.wildcard ? '*.' : ''}${rule.host.includes(':') ? `[${rule.host}]` : rule.host}${rule.port === null ? '' : `:${rule.port}`}`;
    const provider = canonicalProviderId(input.provider).toLowerCase();
    if (!PROVIDER_IDS.has(provider)) throw invalidField('provider', 'must be a supported provider id (e.g. openai-compatible, openai, anthropic)');
    try {
      const saved = await this.prisma.gatewayHost.upsert({
        where: { merchantId_host: { merchantId, host } },
        create: { merchantId, host, provider },
        update: { provider },
      });
      this.forget(merchantId);
      return saved;
    } catch (error) {
      if (isUniqueViolation(error)) throw conflict(`Host ${host} is already allowed`, { host });
      throw error;
    }
  }

  async removeHost(merchantId: string, id: string): Promise<GatewayHost> {
    const found = isUuid(id) ? await this.prisma.gatewayHost.findFirst({ where: { id, merchantId } }) : null;
    if (!found) throw notFound('Gateway host', id);
    await this.prisma.gatewayHost.delete({ where: { id: found.id } });
    this.forget(merchantId);
    return found;
  }

  async update(merchantId: string, input: { callerProviderKeys?: boolean | null; reserveMaxCost?: boolean | null }): Promise<Merchant> {
    const merchant = await this.prisma.merchant.update({
      where: { id: merchantId },
      data: {
        ...(input.callerProviderKeys != null ? { gatewayCallerProviderKeys: input.callerProviderKeys } : {}),
        ...(input.reserveMaxCost != null ? { gatewayReserveMaxCost: input.reserveMaxCost } : {}),
      },
    });
    this.forget(merchantId);
    return merchant;
  }

  settingsFor(merchantId: string): Promise<MerchantGatewaySettings> {
    return this.settings.get(merchantId, async () => {
      const [merchant, hosts, spendLimits] = await Promise.all([
        this.prisma.merchant.findUniqueOrThrow({ where: { id: merchantId }, select: { gatewayCallerProviderKeys: true, gatewayReserveMaxCost: true } }),
        this.prisma.gatewayHost.findMany({ where: { merchantId }, select: { host: true, provider: true } }),
        this.spendLimits.limitsOf(merchantId),
      ]);
      return { hosts, callerProviderKeys: merchant.gatewayCallerProviderKeys, reserveMaxCost: merchant.gatewayReserveMaxCost, spendLimits };
    });
  }

  /** The merchant's stored key for a provider (decrypted), or null. */
  providerKey(merchantId: string, provider: string): Promise<string | null> {
    return this.keys.get(`${merchantId}|${provider}`, () => this.credentials.keyFor(merchantId, provider));
  }

  private forget(merchantId: string): void {
    this.changes.changed('gateway-settings', merchantId);
  }

  private drop(merchantId: string): void {
    this.settings.delete(merchantId);
    this.keys.deleteWhere((key) => key.startsWith(`${merchantId}|`));
  }
}
