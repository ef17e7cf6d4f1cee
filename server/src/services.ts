import type { Config } from './config.ts';
import type { PrismaClient } from './generated/prisma/client.ts';
import { ApiKeyService } from './modules/api-keys/api-keys.service.ts';
import { CustomerSessionService } from './modules/auth/customer-sessions.service.ts';
import { ViewerResolver } from './modules/auth/viewer.ts';
import { CustomerService } from './modules/customers/customers.service.ts';
import { BalanceCache } from './modules/gateway/balance-cache.ts';
import { GatewaySettingsService } from './modules/gateway/gateway-settings.service.ts';
import { GatewayService } from './modules/gateway/gateway.service.ts';
import { GatewaySettlement } from './modules/gateway/gateway.settlement.ts';
import { ProviderCredentialService } from './modules/gateway/provider-credentials.service.ts';
import { SpendLimitService } from './modules/limits/spend-limits.service.ts';
import { UsageAccessService } from './modules/limits/usage-access.service.ts';
import { LedgerQueries } from './modules/ledger/ledger.queries.ts';
import { LedgerService } from './modules/ledger/ledger.service.ts';
import { MerchantService } from './modules/merchants/merchants.service.ts';
import { MeterService } from './modules/meters/meters.service.ts';
import { PlanService } from './modules/plans/plans.service.ts';
import { ProviderPriceService } from './modules/pricing/prices.service.ts';
import { PriceRuleService } from './modules/pricing/rules.service.ts';
import { UsageService } from './modules/usage/usage.service.ts';
import type { Database } from './shared/db/database.ts';
import type { Logger } from './shared/logger.ts';
import { ConfigChanges } from './shared/config-changes.ts';
import type { PubSub } from './shared/pubsub.ts';

/** Every domain service, wired once per process and shared by HTTP, GraphQL, the CLI and tests. */
export interface Services {
  config: Config;
  db: Database;
  prisma: PrismaClient;
  pubsub: PubSub;
  logger: Logger;
  apiKeys: ApiKeyService;
  merchants: MerchantService;
  customers: CustomerService;
  customerSessions: CustomerSessionService;
  viewers: ViewerResolver;
  ledger: LedgerService;
  ledgerQueries: LedgerQueries;
  meters: MeterService;
  providerPrices: ProviderPriceService;
  priceRules: PriceRuleService;
  plans: PlanService;
  usage: UsageService;
  providerCredentials: ProviderCredentialService;
  gatewaySettings: GatewaySettingsService;
  gateway: GatewayService;
  spendLimits: SpendLimitService;
  /** "May this customer make a call now?" for apps that meter after the call: the gateway's rules, read fresh. */
  usageAccess: UsageAccessService;
  /** Stops background work these services started (cache subscriptions). */
  stop(): Promise<void>;
}

export function createServices(deps: { config: Config; db: Database; pubsub: PubSub; logger: Logger; clock?: () => Date }): Services {
  const { config, db, pubsub, logger } = deps;
  const clock = deps.clock ?? (() => new Date());
  const prisma = db.prisma;
  const ledger = new LedgerService(db, pubsub, logger, clock);
  // Configuration caches dropped on every instance when a merchant changes it.
  const changes = new ConfigChanges(pubsub, logger);
  const meters = new MeterService(prisma, changes);
  const providerPrices = new ProviderPriceService(prisma, changes);
  const plans = new PlanService(db, pubsub, clock, changes);
  const priceRules = new PriceRuleService(prisma, plans, changes);
  const apiKeys = new ApiKeyService(prisma, changes);
  const customers = new CustomerService(prisma, pubsub, changes);
  const customerSessions = new CustomerSessionService(config.masterKey, customers, config.customerSessionMaxTtlSeconds, prisma);
  const viewers = new ViewerResolver(apiKeys, customerSessions);
  const usage = new UsageService(db, prisma, ledger, meters, providerPrices, priceRules, plans, logger, clock);
  const providerCredentials = new ProviderCredentialService(prisma, config.masterKey);
  const spendLimits = new SpendLimitService(prisma, pubsub, clock);
  const ledgerQueries = new LedgerQueries(db, ledger, clock);
  const gatewaySettings = new GatewaySettingsService(prisma, providerCredentials, spendLimits, changes);
  const balances = new BalanceCache(db, pubsub);
  const gateway = new GatewayService(config, prisma, viewers, gatewaySettings, balances, spendLimits, usage, ledger, new GatewaySettlement(db, usage, ledger, logger), logger, changes);
  return {
    config,
    db,
    prisma,
    pubsub,
    logger,
    apiKeys,
    merchants: new MerchantService(prisma, apiKeys),
    customers,
    customerSessions,
    viewers,
    ledger,
    ledgerQueries,
    meters,
    providerPrices,
    priceRules,
    plans,
    usage,
    providerCredentials,
    gatewaySettings,
    gateway,
    spendLimits,
    usageAccess: new UsageAccessService(customers, ledgerQueries, spendLimits),
    async stop() {
      await gateway.drain();
      balances.close();
      changes.stop();
    },
  };
}
