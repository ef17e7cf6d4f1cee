import { createHash, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../../config.ts';
import type { GatewayOutcome, GatewayRequest, PrismaClient } from '../../generated/prisma/client.ts';
import { AppError, httpStatusFor, invalidField, notFound } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { RefreshingCache } from '../../shared/cache.ts';
import { ConfigChanges } from '../../shared/config-changes.ts';
import { ATTOS_PER_NANO, formatAttos, formatNanos, parseCurrency } from '../../shared/money.ts';
import { createdKeysetPage } from '../../shared/pagination.ts';
import { isUuid } from '../../shared/validation.ts';
import type { Viewer, ViewerResolver } from '../auth/viewer.ts';
import { MAX_HOLD_TTL_SECONDS, type Actor, type LedgerService } from '../ledger/ledger.service.ts';
import type { SpendLimitService } from '../limits/spend-limits.service.ts';
import { creditCovers, customerRefusal, spendLimitAllows } from '../limits/usage-access.service.ts';
import { normalizeResponse } from '../usage/normalize/index.ts';
import { definitionForName, findProviderPath, splitUrl, type Match, type UrlParts } from '../usage/normalize/registry.ts';
import type { UsageRecordInput, UsageService } from '../usage/usage.service.ts';
import type { NormalizedUsage, ProviderResponse } from '../usage/usage.types.ts';
import type { BalanceCache } from './balance-cache.ts';
import { routeOf, vetDestination, type Destination, type Route } from './destination.ts';
import { forward, upstreamHeaders, type ForwardResult } from './forward.ts';
import type { GatewaySettingsService } from './gateway-settings.service.ts';
import type { GatewayRequestLog, GatewaySettlement } from './gateway.settlement.ts';
import { HoldRenewal } from './hold-renewal.ts';
import { KeyRedactor, redactedHeaders, redactedText } from './key-redaction.ts';
import { createdJobId, GatewayJobs, jobCallOf, type JobCall, type JobRecord } from './jobs.ts';
import { CREDENTIAL_HEADERS, providerKeyHeader, tollgateCredential } from './provider-auth.ts';
import { maxUsageOf } from './reserve.ts';
import { decodeRequestBody } from './request-encoding.ts';
import { meteredRequestBody, parseRequestJson, utf8JsonOf, withoutCharset, withoutJsonBom, withStreamUsage } from './request-body.ts';

export const FORWARD_PATH = '/v1/forward';

/** Who is calling through the gateway, on whose behalf. */
interface Caller {
  merchantId: string;
  actor: Actor;
  customer: CustomerGate;
}

interface CustomerGate {
  id: string;
  archived: boolean;
  blockedReason: string | null;
  blocked: boolean;
}

/** Lookups the gateway repeats on every call are cached this long; revocations and blocks drop them at once (ConfigChanges), so this bounds only a lost message. */
const AUTH_TTL_MS = 5_000;
const CUSTOMER_TTL_MS = 2_000;
const LIMIT_TTL_MS = 1_000;
/** Short-lived caches stay bounded: past this many entries the oldest make room. */
const MAX_CACHED = 50_000;
/** A reservation outlives the wait for a first byte and one stall by this much, then expires by itself unless renewed (HoldRenewal). */
const HOLD_GRACE_SECONDS = 60;
/** How long shutdown waits for an unreachable database to come back before logging the calls it could not charge. */
const SHUTDOWN_GRACE_MS = 10_000;

/** Answered by Tollgate instead of the provider: a JSON body the app can show. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }

  static of(error: AppError, status = httpStatusFor(error.code)): Refusal {
    return new Refusal(status, error.code, error.message, error.details);
  }
}

/**
 * Refused while the request body was still arriving (larger than the gateway takes). The rest of
 * it is never read, so the connection cannot carry another request: the answer closes it, or the
 * caller's next request on it would wait behind a body nobody reads.
 */
class UnreadBody extends Refusal {}

/** The caller hung up while its request body was still arriving: its failure, not the gateway's. */
class CallerLeft extends Error {}

/**
 * The AI gateway: `/v1/forward?u=<provider URL>` (or `/v1/forward/<URL-encoded base URL>/…`,
 * which SDKs can use as their base URL). Before the provider is called it checks the caller,
 * the target, the customer and the customer's credit, all from memory on a warm path; then
 * it relays the response as it streams and charges the usage afterwards.
 */
export class GatewayService {
  private readonly viewerCache = new RefreshingCache<string, Viewer>({ ttlMs: AUTH_TTL_MS, maxEntries: MAX_CACHED });
  private readonly customerCache = new RefreshingCache<string, CustomerGate | null>({ ttlMs: CUSTOMER_TTL_MS, maxEntries: MAX_CACHED });
  private readonly limitCache = new RefreshingCache<string, { spentAttos: bigint; resetsAt: Date }>({ ttlMs: LIMIT_TTL_MS, maxEntries: MAX_CACHED });
  /** Provider jobs created through the gateway and their customers (pruned by startJobPruning). */
  readonly jobs: GatewayJobs;
  /** The reservations of the calls in flight, each renewed while its call runs. */
  private readonly renewals = new Set<HoldRenewal>();
  /** The calls being handled: each is settled (charged, logged) only as it ends, so draining waits for them too. */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly config: Config,
    private readonly prisma: PrismaClient,
    private readonly viewers: ViewerResolver,
    private readonly settings: GatewaySettingsService,
    private readonly balances: BalanceCache,
    private readonly spendLimits: SpendLimitService,
    private readonly usage: UsageService,
    private readonly ledger: LedgerService,
    private readonly settlement: GatewaySettlement,
    private readonly logger: Logger,
    changes = new ConfigChanges(),
  ) {
    this.jobs = new GatewayJobs(prisma, logger);
    // A revoked key stops here at once, not when its cached check expires: so do the customer
    // session tokens it minted.
    changes.on('api-keys', (merchantId) => this.viewerCache.deleteWhereValue((viewer) => viewer.kind !== 'anonymous' && viewer.merchantId === merchantId));
    // So do a blocked or archived customer, and one created or renamed (its externalId) a moment ago.
    changes.on('customers', (merchantId) => this.customerCache.deleteWhere((key) => key.startsWith(`${merchantId}|`)));
    // A new customer can only turn a "not found" into a found one: the others stay cached.
    changes.on('new-customers', (merchantId) => this.customerCache.deleteWhere((key, gate) => key.startsWith(`${merchantId}|`) && !gate));
  }

  /**
   * Resolves once every call in flight has ended, and every call has been charged and logged
   * and every job it created recorded.
   */
  async drain(): Promise<void> {
    for (;;) {
      await Promise.allSettled([...this.inFlight]);
      await Promise.all([this.settlement.drain(), this.jobs.drain()]);
      if (this.inFlight.size === 0 && !this.settlement.busy) return;
    }
  }

  /**
   * Drains for shutdown (the server has stopped taking calls): as drain(), but a database that
   * cannot be reached is waited for only `graceMs`; the calls still unsettled then are logged
   * with their usage records (GatewaySettlement.close).
   */
  async close(graceMs = SHUTDOWN_GRACE_MS): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
    await Promise.all([this.settlement.close(graceMs), this.jobs.drain()]);
    await this.drain();
  }

  /** Renews at once the reservation of every call in flight, as their timers do in time (tests move the clock instead of waiting). */
  async renewHolds(): Promise<void> {
    await Promise.all([...this.renewals].map((renewal) => renewal.renew()));
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const call = this.handleCall(req, res);
    this.inFlight.add(call);
    try {
      await call;
    } finally {
      this.inFlight.delete(call);
    }
  }

  private async handleCall(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const startedAt = performance.now();
    const requestId = randomUUID();
    const receivedAt = new Date();
    res.setHeader('x-tollgate-request-id', requestId);
    let caller: Caller | undefined;
    let route: Route | undefined;
    let holdId: string | null = null;
    let renewal: HoldRenewal | null = null;
    let merchantId = '';
    const log = (outcome: GatewayOutcome, status: number, extra: Partial<GatewayRequestLog> = {}): GatewayRequestLog => ({
      id: requestId,
      merchantId,
      customerId: caller?.customer.id ?? null,
      provider: route?.provider ?? null,
      method: req.method ?? 'GET',
      host: route?.url.host ?? '',
      path: route?.url.pathname ?? '',
      status,
      outcome,
      errorCode: null,
      streamed: false,
      latencyMs: Math.round(performance.now() - startedAt),
      ttfbMs: null,
      createdAt: receivedAt,
      ...extra,
    });
    try {
      const viewer = await this.viewer(req);
      merchantId = viewer.merchantId;
      assertForwardableMethod(req.method ?? 'GET');
      const settings = await this.settings.settingsFor(viewer.merchantId);
      const destinationOptions = { merchantHosts: settings.hosts, allowPrivateNetworks: this.config.gateway.allowPrivateNetworks };
      // The URL and the allow-list (and a host given as an address) first: no DNS, so a refused
      // call never resolves a name. The name is resolved and vetted once the call would go out (below).
      route = routeOf(targetOf(req.url ?? ''), destinationOptions);
      caller = { merchantId: viewer.merchantId, actor: viewer.actor, customer: await this.customer(viewer, header(req, 'x-tollgate-customer')) };
      // Refused once the customer is known, so the refusal is logged under it (gatewayRequests(customerId)).
      assertActive(caller.customer);
      const currency = this.currency(req);
      const providerKey = await this.providerKey(req, viewer.merchantId, route, settings.callerProviderKeys);
      const request = await decodeRequestBody(req.headers['content-encoding'], await readBody(req, this.config.gateway.maxRequestBytes), this.config.gateway.maxRequestBytes);
      if (!request.ok) throw new Refusal(request.status, request.code, request.message, request.details);
      // Read (and forwarded) as a lenient provider reads it: past a byte order mark, and as UTF-8 when written in UTF-16 or UTF-32.
      const transcoded = utf8JsonOf(request.body);
      const received = transcoded ?? withoutJsonBom(request.body);
      const routed = assertMeterable(route, req.method ?? 'GET', received);
      // A streamed chat completion is sent asking for its usage, or OpenAI would report none.
      const body = (routed && withStreamUsage(routed.provider, routed.match.api, route.url, received)) ?? received;
      // Only the job APIs of image and video providers (create, poll, cancel) are anything here.
      const job = routed ? jobCallOf(routed.provider, routed.parts, routed.match, req.method ?? 'GET') : null;
      // A job's poll is charged for the model its create named: fal's result URL names only the app.
      const jobModel = job?.kind === 'byId' ? await this.assertJobAccess(caller, job) : null;
      await this.assertCredit(caller.customer.id, currency);
      await this.assertUnderSpendLimit(caller.merchantId, caller.customer.id, currency, settings.spendLimits);
      // SSRF protection: the name is resolved only now, after every check that needs no DNS (a
      // refused call costs no lookup, and a failing DNS does not hide a 404, 403, 402 or 429),
      // and before a hold is taken. Every address it resolves to must be public; the socket
      // connects to the one vetted here (pinnedLookup), never to a second answer.
      const destination = await vetDestination(route, destinationOptions);
      if (settings.reserveMaxCost) holdId = await this.reserve(caller, destination, body, currency, requestId);
      // A stream may last far longer than the hold's TTL: it is renewed until the call ends.
      if (holdId) renewal = this.renewing(caller.merchantId, holdId);

      // A body decoded above goes as plain bytes: its Content-Encoding no longer applies.
      const headers = upstreamHeaders(
        req.headers,
        (name) => CREDENTIAL_HEADERS.has(name) || name.startsWith('x-tollgate-') || name === 'cookie' || (request.decoded && name === 'content-encoding'),
      );
      // Re-encoded as UTF-8 above: a charset the caller named no longer applies (JSON defines none but UTF-8).
      if (transcoded && typeof headers['content-type'] === 'string') headers['content-type'] = withoutCharset(headers['content-type']);
      // Ask for an uncompressed body: the copy kept for metering must be readable as it passes.
      headers['accept-encoding'] = 'identity';
      if (providerKey) {
        const [name, value] = providerKeyHeader(destination.provider, providerKey);
        headers[name] = value;
      }
      // The caller left while it was being admitted: the provider is not called and the hold is
      // released. (req.destroyed is no sign of this: a request is destroyed once its body is read.)
      if (res.destroyed) {
        this.settlement.enqueue(caller.merchantId, caller.actor, null, log('CLIENT_ABORTED', 499), holdId);
        return;
      }
      const result = await forward(
        { destination, method: req.method ?? 'GET', headers, body, timeoutMs: this.config.gateway.timeoutMs, idleTimeoutMs: this.config.gateway.idleTimeoutMs, startedAt, providerKey },
        res,
        (status, message) => sendJson(res, status, status === 504 ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNREACHABLE', message, {}),
      );
      const usage = this.usageOf(caller, destination, result, body, req, requestId, currency, receivedAt, jobModel, providerKey);
      this.settlement.enqueue(caller.merchantId, caller.actor, usage, log(result.outcome, result.status, { streamed: result.streamed, ttfbMs: result.ttfbMs }), holdId);
      if (job?.kind === 'create') this.recordJob(caller, job, result, requestId, routed?.match.model ?? null);
    } catch (error) {
      if (error instanceof CallerLeft) {
        res.destroy();
        if (merchantId) this.settlement.enqueue(merchantId, caller?.actor ?? { kind: 'system', apiKeyId: null }, null, log('CLIENT_ABORTED', 499), holdId);
        return;
      }
      const refusal = error instanceof Refusal ? error : error instanceof AppError ? Refusal.of(error) : null;
      if (!refusal) {
        this.logger.error({ err: error, requestId }, 'gateway call failed');
        if (merchantId) this.settlement.enqueue(merchantId, { kind: 'system', apiKeyId: null }, null, log('UNREACHABLE', 500, { errorCode: 'INTERNAL' }), holdId);
        if (!res.headersSent) sendJson(res, 500, 'INTERNAL', 'The gateway failed on its side; this call was not charged', { requestId });
        else res.destroy();
        return;
      }
      sendJson(res, refusal.status, refusal.code, refusal.message, refusal.details, refusal instanceof UnreadBody);
      // Refusals are logged too (who was stopped, and why), once the merchant is known.
      if (merchantId) this.settlement.enqueue(merchantId, { kind: 'system', apiKeyId: null }, null, log('REFUSED', refusal.status, { errorCode: refusal.code }));
    } finally {
      // Finished, aborted or failed: settlement now captures or releases the hold.
      if (renewal) {
        renewal.stop();
        this.renewals.delete(renewal);
      }
    }
  }

  // ------------------------------------------------------------------ admission

  private async viewer(req: IncomingMessage): Promise<{ merchantId: string; actor: Actor; customerId: string | null }> {
    const credential = tollgateCredential(req.headers);
    if (!credential) {
      throw new Refusal(401, 'UNAUTHENTICATED', 'Send your Tollgate secret key (with x-tollgate-customer) or a customer session token as "Authorization: Bearer …"');
    }
    const cacheKey = createHash('sha256').update(credential).digest('base64');
    const viewer = await this.viewerCache.get(cacheKey, () => this.viewers.resolve(credential));
    if (viewer.kind === 'merchant') {
      // A cached check outlives a rotated key's grace period by up to AUTH_TTL_MS otherwise.
      if (viewer.validUntil && viewer.validUntil.getTime() <= Date.now()) throw new Refusal(401, 'UNAUTHENTICATED', 'This secret key has been revoked');
      return { merchantId: viewer.merchantId, actor: { kind: 'api_key', apiKeyId: viewer.apiKeyId }, customerId: null };
    }
    if (viewer.kind === 'customer') {
      if (viewer.expiresAt.getTime() <= Date.now()) throw new Refusal(401, 'UNAUTHENTICATED', 'The customer session token has expired');
      if (viewer.mintedByValidUntil && viewer.mintedByValidUntil.getTime() <= Date.now()) {
        throw new Refusal(401, 'UNAUTHENTICATED', 'The customer session has ended: the secret key that created it was revoked');
      }
      // Who, in the audit trail: the secret key that minted this customer's session (null only for a session minted before that was kept).
      return { merchantId: viewer.merchantId, actor: { kind: 'customer', apiKeyId: viewer.mintedBy }, customerId: viewer.customerId };
    }
    throw new Refusal(401, 'UNAUTHENTICATED', 'A credential is required');
  }

  private async customer(viewer: { merchantId: string; customerId: string | null }, named: string | undefined): Promise<CustomerGate> {
    if (viewer.customerId) {
      // A token whose customer is archived or gone has ended, as GraphQL answers it (see
      // CustomerSessionService.authenticate): 401, even while the token's check is still cached here.
      const own = await this.customerGate(viewer.merchantId, viewer.customerId, true);
      if (!own) throw new Refusal(401, 'UNAUTHENTICATED', 'The customer session has ended: the customer no longer exists');
      if (own.archived) throw new Refusal(401, 'UNAUTHENTICATED', 'The customer session has ended: the customer was archived');
      // A token may name its own customer as a secret key would (its id in any case, or its
      // externalId): the name is resolved as the secret key's is, and must come to the token's own.
      if (named && named.toLowerCase() !== viewer.customerId.toLowerCase()) {
        const gate = await this.customerGate(viewer.merchantId, named, false);
        // Another customer, or none: refused alike, so a token cannot tell which names exist.
        if (gate?.id !== own.id) throw new Refusal(403, 'FORBIDDEN', 'A customer session token may only call on behalf of its own customer');
      }
      return own;
    }
    if (!named) throw Refusal.of(invalidField('x-tollgate-customer', 'header is required with a secret key: the customer id or your externalId to charge'));
    // A header names it by id or externalId, and Tollgate's id wins when another customer's
    // externalId is that same text (as it does for POST /v1/usage).
    const gate = await this.customerGate(viewer.merchantId, named, false);
    if (!gate) throw Refusal.of(notFound('Customer', named));
    return gate;
  }

  /** The customer `ref` names (cached): by id only, or by id or externalId. */
  private customerGate(merchantId: string, ref: string, byIdOnly: boolean): Promise<CustomerGate | null> {
    return this.customerCache.get(`${merchantId}|${byIdOnly ? 'id' : 'ref'}|${ref}`, async () => {
      const id = isUuid(ref) ? ref.toLowerCase() : null;
      if (byIdOnly && !id) return null;
      const matches = await this.prisma.customer.findMany({
        where: { merchantId, OR: [...(id ? [{ id }] : []), ...(byIdOnly ? [] : [{ externalId: ref }])] },
        select: { id: true, archivedAt: true, blockedAt: true, blockedReason: true },
        take: 2,
      });
      const found = matches.find((match) => match.id === id) ?? matches[0];
      return found ? { id: found.id, archived: found.archivedAt !== null, blocked: found.blockedAt !== null, blockedReason: found.blockedReason } : null;
    });
  }

  private currency(req: IncomingMessage): string {
    try {
      return parseCurrency('x-tollgate-currency', header(req, 'x-tollgate-currency'));
    } catch (error) {
      throw Refusal.of(error as AppError);
    }
  }

  private async providerKey(req: IncomingMessage, merchantId: string, destination: Route, callerKeysAllowed: boolean): Promise<string | null> {
    const own = header(req, 'x-tollgate-provider-key');
    if (own !== undefined) {
      if (!callerKeysAllowed) throw new Refusal(403, 'FORBIDDEN', 'This merchant does not let callers bring their own provider key (x-tollgate-provider-key)');
      if (!/^[\x21-\x7e]{1,4096}$/.test(own)) throw Refusal.of(invalidField('x-tollgate-provider-key', 'must be printable characters with no spaces'));
      return own;
    }
    const stored = await this.settings.providerKey(merchantId, destination.provider);
    // A self-hosted OpenAI-compatible server (vLLM, Ollama, …) may need no key at all.
    if (!stored && destination.provider !== 'openai-compatible') {
      throw new Refusal(400, 'PROVIDER_KEY_MISSING', `No ${destination.provider} API key is stored for the gateway: add one with setProviderCredential`, {
        provider: destination.provider,
      });
    }
    return stored;
  }

  /** Refuses before the provider is called when the customer cannot pay; the cache answers, the database confirms a no. */
  private async assertCredit(customerId: string, currency: string): Promise<void> {
    let spendable = await this.balances.get(customerId, currency);
    if (creditCovers(spendable)) return;
    spendable = await this.balances.refresh(customerId, currency);
    if (creditCovers(spendable)) return;
    throw new Refusal(402, 'INSUFFICIENT_FUNDS', 'The customer has no credit left: top up to continue', {
      customerId,
      currency,
      available: formatNanos(spendable.available),
    });
  }

  /**
   * 429 once the month's charges reach the customer's spend limit. The month-to-date total is
   * re-read at most every LIMIT_TTL_MS per customer, so calls in flight together can pass the
   * limit by what they cost; credit, not this limit, is what the ledger enforces exactly.
   */
  private async assertUnderSpendLimit(merchantId: string, customerId: string, currency: string, limits: Map<string, bigint>): Promise<void> {
    const cacheKey = `${customerId}|${currency}`;
    const limitNanos = limits.get(cacheKey);
    if (limitNanos === undefined) return;
    const spent = await this.limitCache.get(cacheKey, () => this.spendLimits.spentThisMonth(merchantId, customerId, currency));
    const state = { limitNanos, ...spent };
    if (!spendLimitAllows(state.limitNanos, state.spentAttos)) {
      throw new Refusal(429, 'SPEND_LIMIT_REACHED', `The customer reached its monthly spend limit of ${formatNanos(state.limitNanos)} ${currency}`, {
        customerId,
        currency,
        limit: formatNanos(state.limitNanos),
        spent: formatAttos(state.spentAttos),
        resetsAt: state.resetsAt.toISOString(),
      });
    }
  }

  /**
   * Holds the call's maximum price (its output cap and generously counted prompt, at today's
   * price and the merchant's rules), so calls in flight together cannot spend more than the
   * customer has. Calls we cannot bound (images, audio, no model) are not reserved.
   */
  private async reserve(caller: Caller, destination: Destination, body: Buffer, currency: string, requestId: string): Promise<string | null> {
    const usage = maxUsageOf(destination.provider, destination.url, body);
    if (!usage) return null;
    const { chargeAttos } = await this.usage.quote(caller.merchantId, usage, caller.customer.id, currency);
    if (chargeAttos <= 0n) return null;
    const amountNanos = (chargeAttos + ATTOS_PER_NANO - 1n) / ATTOS_PER_NANO;
    try {
      const { hold } = await this.ledger.createHold(caller.merchantId, caller.actor, {
        customerId: caller.customer.id, currency, amountNanos, ttlSeconds: this.holdTtlSeconds(), idempotencyKey: `gateway-hold:${requestId}`, description: `Gateway call ${requestId} (${usage.model})`,
      });
      return hold.id;
    } catch (error) {
      if (error instanceof AppError && error.code === 'INSUFFICIENT_FUNDS') {
        throw new Refusal(402, 'INSUFFICIENT_FUNDS', `The customer's credit does not cover this call's maximum cost of ${formatNanos(amountNanos)} ${currency}: top up, or ask for fewer tokens`, {
          customerId: caller.customer.id,
          currency,
          required: formatNanos(amountNanos),
        });
      }
      // Archived since the gate last read it (the gate's view is cached for a moment): refused as the gate would.
      if (error instanceof AppError && error.details?.reason === 'CUSTOMER_ARCHIVED') {
        if (caller.actor.kind === 'customer') throw new Refusal(401, 'UNAUTHENTICATED', 'The customer session has ended: the customer was archived');
        throw new Refusal(403, 'CUSTOMER_ARCHIVED', 'This customer is archived and cannot make calls', { customerId: caller.customer.id });
      }
      throw error;
    }
  }

  /**
   * How long a reservation lasts: the wait for a first byte and one stall, plus a grace. Never
   * beyond what the ledger allows (a timeout of days): renewal keeps longer calls covered.
   */
  private holdTtlSeconds(): number {
    return Math.min(Math.ceil((this.config.gateway.timeoutMs + this.config.gateway.idleTimeoutMs) / 1000) + HOLD_GRACE_SECONDS, MAX_HOLD_TTL_SECONDS);
  }

  /** Starts renewing a call's hold; the call stops it when it ends. */
  private renewing(merchantId: string, holdId: string): HoldRenewal {
    const renewal = new HoldRenewal(this.ledger, this.logger, merchantId, holdId, this.holdTtlSeconds());
    this.renewals.add(renewal);
    return renewal;
  }

  /**
   * A poll or cancel of a job by its id. A customer session token reaches only the jobs the
   * gateway created for its own customer: any other id (another customer's, or one created
   * outside the gateway) is answered 404 as if it did not exist. A secret key reaches any id
   * (jobs its backend created with the provider directly), except one the gateway created for
   * another customer than x-tollgate-customer names: that poll would charge the wrong customer.
   * Returns the model the job was created for, when recorded (see GatewayJobs.record).
   */
  private async assertJobAccess(caller: Caller, job: Extract<JobCall, { kind: 'byId' }>): Promise<string | null> {
    const byToken = caller.actor.kind === 'customer';
    if (!byToken && job.ids.length === 0) return null;
    const records = await this.jobs.records(caller.merchantId, job.provider, job.ids, byToken);
    const owners = new Map([...records].map(([id, record]) => [id, record.customerId]));
    const details = { provider: job.provider, jobId: job.ids.length === 1 ? job.ids[0]! : job.ids };
    if (byToken) {
      if (job.ids.length === 0 || job.ids.some((id) => owners.get(id) !== caller.customer.id)) {
        throw new Refusal(404, 'NOT_FOUND', `No such ${job.provider} job: it is not one this customer created through the gateway`, details);
      }
      return sharedModel(records);
    }
    if ([...owners.values()].some((owner) => owner !== caller.customer.id)) {
      throw new Refusal(
        403,
        'FORBIDDEN',
        `This ${job.provider} job was created through the gateway for another customer than x-tollgate-customer names: ` +
          'poll it on behalf of that customer, or the charge would land on the wrong customer',
        details,
      );
    }
    return sharedModel(records);
  }

  // ------------------------------------------------------------------ settlement

  /**
   * Remembers which customer a job created through the gateway is for, from the response kept
   * for metering. Written in the background: the caller already has its response.
   */
  private recordJob(caller: Caller, job: Extract<JobCall, { kind: 'create' }>, result: ForwardResult, requestId: string, model: string | null): void {
    // A job exists only once the provider accepted the create (a cut response still names it when its id arrived).
    if (result.upstreamStatus === null || result.upstreamStatus < 200 || result.upstreamStatus >= 300) return;
    try {
      const jobId = createdJobId(job.provider, result.body);
      if (jobId) this.jobs.record(caller.merchantId, job.provider, jobId, caller.customer.id, model);
    } catch (error) {
      this.logger.error({ err: error, requestId }, 'gateway job not recorded');
    }
  }

  /** The usage to record for a finished call, or null when there is nothing to charge. */
  private usageOf(
    caller: Caller, destination: Destination, result: ForwardResult, body: Buffer, req: IncomingMessage, requestId: string, currency: string, receivedAt: Date,
    jobModel: string | null, providerKey: string | null,
  ): UsageRecordInput | null {
    // Only a success is charged: provider errors are relayed, never charged; a redirect or any
    // other answer outside 2xx did no work (normalizers that count the request's text, such as
    // speech, would charge it); a call that never got an answer produced nothing.
    if (result.upstreamStatus === null || result.upstreamStatus < 200 || result.upstreamStatus >= 300) return null;
    // The request's model, size… for responses that lack them: from its JSON, or from a form's text fields.
    const requestBody = meteredRequestBody(String(req.headers['content-type'] ?? ''), body);
    // The answer is kept in the usage record, which is logged whole should its charge be given
    // up on: a provider key it quotes is masked there as in what the caller got (same length,
    // so nothing metered changes).
    const masking = KeyRedactor.applies(providerKey);
    const response: ProviderResponse = {
      url: destination.url.href,
      status: result.upstreamStatus,
      headers: masking ? redactedHeaders(result.upstreamHeaders, providerKey) : result.upstreamHeaders,
      body: masking ? redactedText(result.body ?? '', providerKey) : (result.body ?? ''),
      provider: destination.provider,
      ...(requestBody !== undefined ? { requestBody } : {}),
      // A polled job's model rides in the response too: a record given up on and replayed from
      // its log line (POST /v1/usage) is then priced for that model, as the gateway would have.
      ...(jobModel ? { model: jobModel } : {}),
    };
    let normalized: NormalizedUsage;
    try {
      normalized = normalizeResponse(response);
    } catch (error) {
      this.logger.warn({ err: error, requestId }, 'gateway response could not be metered');
      return null;
    }
    // Listing models, counting tokens…: nothing billable and nothing to estimate.
    if (!normalized.billable && !normalized.incomplete) return null;
    if (jobModel) normalized = { ...normalized, model: jobModel };
    return {
      customer: caller.customer.id,
      idempotencyKey: `gateway:${requestId}`,
      // When the call started, fixed per call (a retry replays): a customer archived while it ran
      // was archived after it, so the usage the provider served is still charged.
      timestamp: receivedAt,
      currency,
      response,
      normalized,
      metadata: { gatewayRequestId: requestId, cut: result.cut },
    };
  }

  // ------------------------------------------------------------------ queries

  async requestsPage(merchantId: string, filter: { customerId?: string | null; outcome?: GatewayOutcome | null }, page: { before?: string; after?: string; limit: number; inverted: boolean }): Promise<GatewayRequest[]> {
    const keyset = createdKeysetPage(page);
    return this.prisma.gatewayRequest.findMany({
      where: { merchantId, ...(filter.customerId ? { customerId: filter.customerId } : {}), ...(filter.outcome ? { outcome: filter.outcome } : {}), ...keyset.where },
      orderBy: keyset.orderBy,
      take: page.limit,
    });
  }

  async request(merchantId: string, id: string): Promise<GatewayRequest | null> {
    return isUuid(id) ? this.prisma.gatewayRequest.findFirst({ where: { id, merchantId } }) : null;
  }
}


/**
 * Free reads of a known provider that the normalizer does not route (so meters nothing on),
 * forwarded all the same: listing and describing models (GET …/models, …/models/{id}) and
 * counting tokens (Anthropic POST /v1/messages/count_tokens, Gemini and Vertex …:countTokens,
 * Claude on Vertex POST …/publishers/anthropic/models/count-tokens:rawPredict).
 * Providers charge nothing for these. Keep this list to reads that cost nothing.
 */
const FREE_READS: readonly ((method: string, path: string) => boolean)[] = [
  (method, path) => (method === 'GET' || method === 'HEAD') && /\/models(\/[^/:]+)?$/.test(path),
  (method, path) => method === 'POST' && path.endsWith('/v1/messages/count_tokens'),
  (method, path) => method === 'POST' && path.endsWith(':countTokens'),
  (method, path) => method === 'POST' && path.endsWith('/publishers/anthropic/models/count-tokens:rawPredict'),
];

/**
 * Refuses, before the provider is called, a request the gateway could forward with the
 * merchant's provider key but never charge: a path of a known provider the normalizer does not
 * recognise (batches, fine-tuning, files, retrieving a stored response…) unless it is a free
 * read; a recognised path called with another method than the one metered there (GET
 * /v1/chat/completions lists every stored completion, GET /v1/predictions every prediction);
 * and an OpenAI Responses create with `background: true` (queued: its usage is only in a later
 * retrieval). A merchant's own OpenAI-compatible server (vLLM, Ollama…) is not checked.
 * A call through a proxy that puts its own prefix before the provider's path is routed as
 * metering routes it (findProviderPath), so it passes or is refused exactly as the call without
 * the prefix would be.
 * Returns what the call was routed to, with the provider's own path within the URL (null for a
 * server that is not checked or a free read the registry does not route).
 */
function assertMeterable(destination: Route, method: string, body: Buffer): { provider: string; parts: UrlParts; match: Match } | null {
  if (destination.provider === 'openai-compatible') return null;
  const definition = definitionForName(destination.provider);
  if (!definition) return null;
  const parts = splitUrl(destination.url.href);
  const routed = findProviderPath(definition, parts);
  if (routed?.match.method !== method) {
    // Suffix tests: the whole path answers as the provider's tail of it would.
    if (FREE_READS.some((free) => free(method, parts.path))) return routed ? { provider: definition.id, ...routed } : null;
    const path = parts.path || '/';
    throw new Refusal(
      403,
      'ENDPOINT_NOT_METERED',
      routed
        ? `The gateway meters ${path} on ${destination.provider} only when called with ${routed.match.method}, so it does not forward ${method}: ` +
            'other methods there read or change data the provider stored, which nobody could be charged for'
        : `The gateway cannot meter ${method} ${path} on ${destination.provider}, so it does not forward it: ` +
            'only the provider APIs Tollgate meters (chat, responses, messages, embeddings, images, audio, …) and free reads such as listing models go through',
      { provider: destination.provider, method, path },
    );
  }
  if (routed.match.api === 'responses' && isBackground(body)) {
    throw new Refusal(
      400,
      'BACKGROUND_NOT_METERED',
      'OpenAI Responses with "background": true cannot go through the gateway: a queued response reports its usage only when retrieved later, ' +
        'so the gateway could not charge it. Send the request without "background" (streaming works)',
      { provider: destination.provider, field: 'background' },
    );
  }
  return { provider: definition.id, ...routed };
}

function isBackground(body: Buffer): boolean {
  // The key may be written with \u escapes ("backgroun\u0064"), which the provider reads as the plain key.
  if (!body.includes('"background"') && !body.includes('\\u')) return false;
  // Read as a lenient server reads it (NaN and Infinity too), or it could queue what was let through.
  const parsed = parseRequestJson(body);
  if (typeof parsed !== 'object' || parsed === null) return false;
  // Anything but absent, null or false: a lax server coerces "true" or 1 and queues the
  // response. Failing closed costs nothing, as no provider needs another value to mean false.
  const background = (parsed as { background?: unknown }).background;
  return background !== undefined && background !== null && background !== false;
}

/** The one model every polled job was created for, else null (none recorded, or several). */
function sharedModel(records: ReadonlyMap<string, JobRecord>): string | null {
  const models = new Set([...records.values()].map((record) => record.model));
  const [model] = models;
  return models.size === 1 && model ? model : null;
}

/**
 * TRACE asks the server to send back the request it received, headers and all: forwarded, the
 * answer would hand the caller the provider key the gateway injected. No provider API uses it.
 * (Node's parser refuses TRACK, IIS's variant, before any route.)
 */
function assertForwardableMethod(method: string): void {
  if (method === 'TRACE') {
    throw new Refusal(405, 'VALIDATION', `The gateway does not forward ${method}: the provider would echo the request back, provider key included`, { method });
  }
}

/** A blocked or archived customer makes no calls (the rule usageAccess answers with too). */
function assertActive(gate: CustomerGate): void {
  const refusal = customerRefusal(gate);
  if (refusal === 'CUSTOMER_ARCHIVED') throw new Refusal(403, 'CUSTOMER_ARCHIVED', 'This customer is archived and cannot make calls', { customerId: gate.id });
  if (refusal === 'CUSTOMER_BLOCKED') {
    throw new Refusal(403, 'CUSTOMER_BLOCKED', `This customer is blocked${gate.blockedReason ? `: ${gate.blockedReason}` : ''}`, { customerId: gate.id });
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return typeof value === 'string' && value.trim() !== '' ? value.trim() : undefined;
}

/**
 * The provider URL a call targets. Two forms:
 *   /v1/forward?u=<URL-encoded provider URL>[&more=query]   (other query parameters are appended)
 *   /v1/forward/<URL-encoded base URL>/rest/of/path?query   (an SDK's baseURL: it appends paths)
 */
export function targetOf(url: string): unknown {
  const queryAt = url.indexOf('?');
  const path = (queryAt === -1 ? url : url.slice(0, queryAt)).replace(/^\/v1\/forward/, '');
  const search = queryAt === -1 ? '' : url.slice(queryAt + 1);
  if (path === '' || path === '/') {
    const params = new URLSearchParams(search);
    const given = params.getAll('u');
    if (given.length !== 1) return given.length === 0 ? undefined : given;
    params.delete('u');
    const rest = params.toString();
    return rest ? `${given[0]}${given[0]!.includes('?') ? '&' : '?'}${rest}` : given[0];
  }
  const [encodedBase, ...rest] = path.slice(1).split('/');
  let base: string;
  try {
    base = decodeURIComponent(encodedBase!);
  } catch {
    return encodedBase; // routeOf explains why it is not a URL
  }
  return `${base.replace(/\/+$/, '')}${rest.length > 0 ? `/${rest.join('/')}` : ''}${search ? `?${search}` : ''}`;
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new UnreadBody(413, 'VALIDATION', `The request body is larger than the gateway's limit of ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > limit) throw new UnreadBody(413, 'VALIDATION', `The request body is larger than the gateway's limit of ${limit} bytes`);
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    // The request stream fails only when the caller's connection does ("aborted").
    throw error instanceof Refusal || req.complete ? error : new CallerLeft('The caller disconnected while sending the request body');
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/**
 * Answers the caller with Tollgate's own JSON (a refusal, a provider that never answered). Being
 * Tollgate's answer, it carries Tollgate's request id as `x-request-id` too, as every other
 * Tollgate answer does (and as SDKs read a request id); a provider's answer is relayed with its
 * own `x-request-id`, Tollgate's then in `x-tollgate-request-id` alone.
 */
function sendJson(res: ServerResponse, status: number, code: string, message: string, details: Record<string, unknown>, closeConnection = false): void {
  if (res.headersSent) return;
  const body = JSON.stringify({ error: { ...details, code, message } });
  const requestId = res.getHeader('x-tollgate-request-id');
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    ...(requestId !== undefined ? { 'x-request-id': requestId } : {}),
    ...(closeConnection ? { connection: 'close' } : {}),
  });
  res.end(body);
}
