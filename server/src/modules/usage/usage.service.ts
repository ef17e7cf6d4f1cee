import type { MeterAggregation, PrismaClient, UsageEventStatus } from '../../generated/prisma/client.ts';
import { BulkColumns, pgArray, pgArrayOf } from '../../shared/db/arrays.ts';
import type { Database, SqlExecutor } from '../../shared/db/database.ts';
import { uuidv7 } from '../../shared/ids.ts';
import { laneOf } from '../../shared/lanes.ts';
import { AppError, invalidField, notFound } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { canonicalJson } from '../../shared/canonical-json.ts';
import { ATTOS_PER_NANO, formatAttosText, parseCurrency } from '../../shared/money.ts';
import { createdKeysetPage } from '../../shared/pagination.ts';
import { currentRequestId } from '../../shared/request-context.ts';
import { isStorableTime, MAX_FUTURE_USAGE_MS } from '../../shared/times.ts';
import { isJsonObject, isUuid, requireObjectIfGiven, requireShallowJson, requireStorableText } from '../../shared/validation.ts';
import { creditLegs, fitsDebit, planCredit, planDebit, type WalletState } from '../ledger/ledger.planner.ts';
import { insufficientFunds, isDataError, KeyFoundUsed, REPLAY_MEMORY_MS, requestHash, type Actor, type LedgerBatch, type LedgerService, type WalletTransaction } from '../ledger/ledger.service.ts';
import { customerArchived } from '../customers/customers.service.ts';
import type { Meter, MeterService } from '../meters/meters.service.ts';
import type { PlanService } from '../plans/plans.service.ts';
import { resolvePrice, type ProviderPriceService } from '../pricing/prices.service.ts';
import { formatScaledQuantity, QUANTITY_SCALE, ScaledQuantity, scaledQuantity, type Quantity } from '../pricing/decimal.ts';
import type { PriceRuleService, RuleRow } from '../pricing/rules.service.ts';
import { canonicalProviderId, normalizeResponse, responseHeaders } from './normalize/index.ts';
import { isSseBody } from './normalize/stream.ts';
import { isJsonBody, parseRequestJson, takeMalformedCounts } from './normalize/util.ts';
import { BatchPeriodCredits, capCredits, laterVersionPriced, ruleNet } from './usage.credits.ts';
import {
  estimateIncomplete, MAX_EVENT_ATTOS, meterQuantities, meterRules, periodContribution, priceUsage, PROVIDER_COST_CURRENCY, providerCost, readChargeLine, ruleScopeOf, ruleTie,
  stepPeriodTotal, storedChargeLines, volumeCreditNeed, type MeterStep, type PeriodStep, type PricedUsage, type StoredChargeLine,
} from './usage.pricing.ts';
import { blankUsage, type NormalizedUsage, type ProviderResponse } from './usage.types.ts';

/** One usage record as an app (or the gateway) reports it. */
export interface UsageRecordInput {
  /** Tollgate customer id or the merchant's externalId. */
  customer: string;
  /**
   * The caller's key: a retry with it is never charged twice. When the provider names the unit of
   * work (NormalizedUsage.billingId, e.g. a polled Replicate prediction), that id keys the event
   * instead, so every response for it is charged once; this key is kept in the event's metadata.
   */
  idempotencyKey: string;
  /** When the call happened (default now). Late events are priced at that time's prices. */
  timestamp?: Date | null;
  currency?: string | null;
  /** A normalized record … (what usageFrom reads: a provider's reported cost or a cut stream comes only in a `response`) */
  usage?: Partial<Omit<NormalizedUsage, 'details' | 'streamedText' | 'billingId' | 'providerReportedCostUsd' | 'incomplete'>> | null;
  /** … or the provider's raw response to normalize. */
  response?: ProviderResponse | null;
  /** Internal (never read from a request): `response` already normalized by the gateway, so it is not parsed twice. */
  normalized?: NormalizedUsage | null;
  /** Quantities of custom meters, by meter key. */
  quantities?: Record<string, string | number> | null;
  metadata?: Record<string, unknown> | null;
  /**
   * Internal (never read from a request): the gateway's reservation for this call, released in
   * the ledger transaction that charges it (wallet locked), so no other call can reserve the
   * freed credit before this charge is taken.
   */
  holdId?: string | null;
}

export interface UsageEventView {
  id: string;
  customerId: string;
  idempotencyKey: string;
  occurredAt: Date;
  status: UsageEventStatus;
  provider: string | null;
  model: string | null;
  currency: string;
  cost: string;
  charge: string;
  margin: string;
  /** What the customer could not pay of the priced charge (zero when fully charged). */
  shortfall: string;
  /** What a VOLUME re-pricing gave back to earlier shortfalls of the month instead of crediting it (see usage.credits.ts). */
  shortfallSettled: string;
  estimated: boolean;
  /** The provider's response ended before it reported usage (a stream cut short, an unreadable body): charged per the merchant's incomplete-stream policy. */
  incomplete: boolean;
  ledgerTransactionId: string | null;
  /** Why the provider cost is unknown (no price row for the provider/model, a unit its row does not price); null when known. */
  costProblem: string | null;
  /** How the charge was made up, a line a price rule (see StoredChargeLine). */
  chargeLines: readonly StoredChargeLine[];
}

export type UsageResult =
  | {
      ok: true;
      event: UsageEventView;
      replayed: boolean;
      error?: AppError;
      /**
       * Its provider cost is unknown (event.costProblem says why) and that cost went unpriced: it was
       * recorded at no charge, or a MARKUP rule priced it, which charged only its fee per request.
       */
      unpriced?: true;
    }
  | { ok: false; error: AppError };

const MAX_BATCH = 1000;
/** Most events charged in one combined ledger batch (see chargeTogether). */
const MAX_MERGED_EVENTS = 5000;
/**
 * Each merchant's (and actor's) customers are spread over this many charge lanes, each charging
 * its own rounds one after the other (see chargeTogether): while one lane's round is being
 * written by PostgreSQL, another's is priced in JavaScript, instead of the two taking turns.
 */
export const CUSTOMER_LANES = 3;
const INT_FIELDS = ['inputTokens', 'cachedInputTokens', 'cacheWriteTokens', 'outputTokens', 'reasoningTokens', 'characters', 'images', 'requests'] as const;
/**
 * The earliest time an event may have happened: no usage metered here is older, so an earlier
 * timestamp is a caller's mistake. PGlite reads times in the years 1-99 back as 1901-1999: a
 * period total written for year 50 was not found again, which failed the event's whole batch.
 */
const EARLIEST_USAGE_MS = Date.parse('2000-01-01T00:00:00Z');

function archivedCustomer(customerId: string, archivedAt: Date): AppError {
  return customerArchived(customerId, archivedAt, 'usage after that is not recorded');
}
/** The largest count an event stores (its columns are 32-bit integers). */
const MAX_COUNT = 2_147_483_647;
const AUDIO = /^\d{1,9}(\.\d{1,9})?$/;
/** An audio duration a provider reported: any exact non-negative decimal a period total can hold (18 places). */
const RESPONSE_AUDIO = /^\d{1,15}(\.\d{1,18})?$/;
/** The quantities of an event that states none, shared: most events state none. Never written to. */
const NO_QUANTITIES: Record<string, string | number> = Object.freeze({}) as Record<string, string | number>;
/** The meter quantities of an event that moves no meter, shared for the same reason. Never written to. */
const NO_METERED: ReadonlyMap<string, Quantity> = new Map();
const NO_STEPS: ReadonlyMap<string, RuleStep> = new Map();
const NO_CHARGE_LINES: readonly StoredChargeLine[] = Object.freeze([]);

/**
 * An event's step in the period total of the rule that prices one of its meters (see
 * advancePeriodTotals). `shared`: the step is on a MAX meter's peak that another rule (another
 * book's, say) also priced in the period before this event (see volumeCreditNeed).
 */
type RuleStep = PeriodStep & { rule: RuleRow; shared?: true };

interface ChargeRequest {
  items: Prepared[];
  resolve: (answers: Map<number, UsageResult>) => void;
  reject: (error: unknown) => void;
}

interface ChargeLane {
  queue: ChargeRequest[];
  draining: boolean;
}

/** Events count in the calendar month (UTC) they happened in, until plans define their own periods. */
export function periodStartOf(at: Date): Date {
  // setUTCFullYear, not Date.UTC: Date.UTC reads the years 0-99 as 1900-1999.
  const start = new Date(0);
  start.setUTCFullYear(at.getUTCFullYear(), at.getUTCMonth(), 1);
  return start;
}

interface Prepared {
  index: number;
  input: UsageRecordInput;
  /** The event's idempotency key: the provider's billingId when there is one, else the caller's key. */
  key: string;
  callerKey: string;
  /** Set when `key` is a billingId: repeats are replays whatever else differs. */
  billingId: string | null;
  customerRef: string;
  customerId?: string;
  /**
   * When the event happened at or after its customer was archived: that archive time. Such an
   * event is refused (archivedCustomer) unless its key is already recorded, whose first result a
   * retry answers whatever the customer's state since (see charge).
   */
  archivedAt?: Date;
  currency: string;
  occurredAt: Date;
  periodStart: Date;
  usage: NormalizedUsage;
  estimated: boolean;
  stated: Record<string, string | number>;
  hashed: HashedRecord;
  /** recordHash over the resolved customer id, set when the customer is found (resolveCustomers). */
  hash: string;
}

interface EventRow {
  id: string;
  customer_id: string;
  idempotency_key: string;
  occurred_at: Date;
  status: UsageEventStatus;
  provider: string | null;
  model: string | null;
  currency: string;
  cost_attos: string;
  charge_attos: string;
  margin_attos: string;
  estimated: boolean;
  ledger_transaction_id: string | null;
  metadata: {
    requestHash?: string; billingId?: string; callerIdempotencyKey?: string; shortfallAttos?: string; costProblem?: string;
    /** Set (true) only on events whose response ended before the provider reported usage: rows stay lean. */
    incomplete?: true;
    /** Why the event was not fully charged; `details` (required, available, currency) only on events stored since they were kept. */
    error?: { code: string; message: string; details?: Record<string, unknown> };
    /** What of a negative line settled the period's earlier shortfalls instead of being credited (see usage.credits.ts). */
    withheldCreditAttos?: string;
    pricing?: StoredChargeLine[];
  };
}

function viewOf(row: EventRow): UsageEventView {
  return {
    id: row.id,
    customerId: row.customer_id,
    idempotencyKey: row.idempotency_key,
    occurredAt: row.occurred_at instanceof Date ? row.occurred_at : new Date(row.occurred_at),
    status: row.status,
    provider: row.provider,
    model: row.model,
    currency: row.currency,
    cost: formatAttosText(row.cost_attos),
    charge: formatAttosText(row.charge_attos),
    margin: formatAttosText(row.margin_attos),
    shortfall: formatAttosText(row.metadata?.shortfallAttos ?? '0'),
    shortfallSettled: formatAttosText(row.metadata?.withheldCreditAttos ?? '0'),
    estimated: row.estimated,
    incomplete: row.metadata?.incomplete === true,
    ledgerTransactionId: row.ledger_transaction_id,
    costProblem: row.metadata?.costProblem ?? null,
    chargeLines: row.metadata?.pricing ?? NO_CHARGE_LINES,
  };
}

/**
 * A provider response's status: the HTTP status code as a number from 100 to 599. Checked for
 * every caller (an app posting over HTTP, GraphQL, the gateway): "500 Internal Server Error"
 * compared as text is not >= 400, and a status of 0 is neither, so either would be charged as a success.
 */
export function requireHttpStatus(field: string, status: unknown): void {
  if (!(Number.isInteger(status) && (status as number) >= 100 && (status as number) <= 599)) {
    throw invalidField(field, 'must be the HTTP status code as a number from 100 to 599');
  }
}

/**
 * A text field of a normalized record ("" when absent or null). Anything else is refused, as
 * GraphQL's String refuses it: String() read ["openai"] as the provider "openai", an object as
 * "[object Object]" (a model no price row names: recorded free), and threw for one whose toString
 * is not a function (an error naming no field).
 */
function usageText(value: unknown, field: string): string {
  if (value === undefined || value === null) return '';
  if (typeof value !== 'string') throw invalidField(field, 'must be text');
  return value;
}

/** A normalized record from the caller: whole, non-negative numbers, or a clear error. */
function usageFrom(given: NonNullable<UsageRecordInput['usage']>): NormalizedUsage {
  if (typeof given !== 'object' || Array.isArray(given)) throw invalidField('usage', 'must be an object');
  const usage = blankUsage();
  usage.provider = canonicalProviderId(usageText(given.provider, 'usage.provider').toLowerCase());
  // Trimmed as pricing reads them: kept with spaces, "gpt-4o " was another model to the usage lists.
  usage.api = usageText(given.api, 'usage.api').trim();
  usage.model = usageText(given.model, 'usage.model').trim() || null;
  for (const field of INT_FIELDS) {
    const value = given[field];
    if (value === undefined || value === null) continue;
    if (!Number.isSafeInteger(value) || (value as number) < 0 || (value as number) > MAX_COUNT) throw invalidField(`usage.${field}`, 'must be a whole number from 0 to 2,147,483,647');
    usage[field] = value as number;
  }
  if (given.audioSeconds != null) {
    const seconds: unknown = given.audioSeconds;
    if ((typeof seconds !== 'string' && typeof seconds !== 'number') || !AUDIO.test(String(seconds))) throw invalidField('usage.audioSeconds', 'must be a decimal number of seconds, e.g. "12.5"');
    usage.audioSeconds = String(seconds);
  }
  if (usage.cachedInputTokens + usage.cacheWriteTokens > usage.inputTokens) {
    throw invalidField('usage.cachedInputTokens', 'cached and cache-write tokens are part of inputTokens and cannot exceed it');
  }
  if (usage.reasoningTokens > usage.outputTokens) throw invalidField('usage.reasoningTokens', 'reasoning tokens are part of outputTokens and cannot exceed it');
  if (usage.requests === 0) usage.requests = 1;
  if (given.billable != null && typeof given.billable !== 'boolean') throw invalidField('usage.billable', 'must be true or false');
  usage.billable = given.billable ?? true;
  return usage;
}

/**
 * A provider response's usage: normalized here when an app posted the raw response, or already
 * by the gateway. A body an app posted that its API's normalizer cannot read at all (not JSON,
 * not the API's stream, cut short) is bad input, answered as such so the app can fix what it
 * forwards; the gateway, which saw the call itself, records such a body as incomplete instead.
 * A count beyond what an event stores is refused, rather than failing the event's whole batch.
 */
function responseUsage(response: ProviderResponse, normalized: NormalizedUsage | null | undefined): NormalizedUsage {
  takeMalformedCounts();
  let usage = normalized ?? normalizeResponse(response);
  const model = response.model?.trim();
  if (model) usage = { ...usage, model };
  if (!normalized && takeMalformedCounts() > 0) throw invalidField('response.body', 'reports a count (in its body or headers) that is negative or not a whole number: nothing was recorded');
  if (usage.audioSeconds !== null && !RESPONSE_AUDIO.test(usage.audioSeconds)) {
    throw invalidField('response.body', `reports an audio duration that is not a non-negative number of seconds (${usage.audioSeconds}): nothing was recorded`);
  }
  if (!normalized && usage.incomplete && (usage.details.reason === 'unparseable_body' || unreadableStream(response.body, usage))) {
    throw invalidField('response.body', `is not a response the ${usage.provider} ${usage.api} API returns (neither its JSON nor its stream): nothing was recorded`);
  }
  for (const field of INT_FIELDS) {
    if (usage[field] > MAX_COUNT) throw invalidField('response.body', `reports ${field} beyond 2,147,483,647`);
  }
  return usage;
}

/** Control characters other than whitespace near the start: a binary body (Bedrock's event-stream frames), not a page of text. */
function looksBinary(body: string): boolean {
  for (let i = 0; i < Math.min(body.length, 512); i++) {
    const code = body.charCodeAt(i);
    if (code < 9 || (code > 13 && code < 32)) return true;
  }
  return false;
}

/**
 * Text read as a stream cut before anything arrived, that never looked like JSON or a stream
 * (an HTML error page, say). Bodies that legitimately carry no usage (a transcription as plain
 * text, audio) are normalized as such, not as a cut stream, and are recorded as before.
 */
function unreadableStream(body: string, usage: NormalizedUsage): boolean {
  return usage.details.reason === 'stream_truncated' && !usage.streamedText && !usage.details.streamed_other_chars
    && body.trim() !== '' && !looksBinary(body) && !isJsonBody(body) && !isSseBody(body);
}

/**
 * What a retry must send again to be answered as a replay rather than a CONFLICT. The caller's
 * objects are hashed in canonical form (keys sorted, as a client may serialize a retry in another
 * order, and a usage count sent as null the same as one left out). The provider's response body
 * is its bytes, hashed as they are, with the provider named for it (it picks the normalizer), and
 * its headers and request body when given (where some providers report the usage: ElevenLabs
 * bills by a header, an images call's size and quality are in its request), the request by the
 * JSON object it is whether sent as one or as its text. Decimal quantities go by their value
 * (12, "12.0" and "012" seconds alike), as GraphQL's Decimal keeps a retry's text. The customer goes by
 * its id, however the caller named it (id or externalId). Events recorded by earlier versions hold
 * older forms of the hash (see HashForm and earlierHashes).
 */
function recordHash(customer: string, record: HashedRecord): string {
  return requestHash({ customer, ...record });
}

/**
 * What recordHash hashes besides the customer, worked out when the event is read (its depth is
 * checked there, an error of that event alone): the customer is known only once resolved.
 */
interface HashedRecord {
  currency: string;
  occurredAt: string | null;
  usage: unknown;
  response: unknown;
  stated: unknown;
  /** Left undefined when not given (or in a form before they were hashed), so JSON leaves them out: such records keep their earlier hash. */
  responseHeaders?: unknown;
  requestBody?: unknown;
}

/**
 * How a version of Tollgate hashed a record: each later version hashed one thing more exactly,
 * and an event keeps the hash it was recorded with (see earlierHashes).
 */
interface HashForm {
  /** Objects with their keys sorted, a usage count sent as null the same as one left out (before: the objects as sent). */
  canonical: boolean;
  /** A provider (of a usage record or a response) by the id it is stored as (before: as named). */
  providerIds: boolean;
  /**
   * A usage record's audio seconds as the text they are stored as (before: the number as sent):
   * GraphQL's Decimal reads a JSON 12 as "12", so the same record over HTTP was another record there.
   */
  audioText: boolean;
  /** A response's headers and request body, when given (before: neither, so a call billed by them replayed another one). */
  exchange: boolean;
  /**
   * Audio seconds and stated meter quantities by their value, "12.000" as "12" and a quantity's
   * "3" as 3 (before: as written, so a retry writing them otherwise, as another client or
   * GraphQL's Decimal keeps them, was a CONFLICT).
   */
  decimalValues: boolean;
  /** A request body sent as the text of a JSON object hashed as that object, as the normalizers read either (before: its text as sent). */
  requestBodyValue: boolean;
}

const HASH_FORM: HashForm = { canonical: true, providerIds: true, audioText: true, exchange: true, decimalValues: true, requestBodyValue: true };

function hashedRecord(input: UsageRecordInput, currency: string, stated: Record<string, string | number>, form: HashForm = HASH_FORM): HashedRecord {
  const given = input.usage ?? null;
  const response = input.response;
  const sent = response ? [response.url, response.status, response.body] : null;
  const providerOf = (name: string) => (form.providerIds ? canonicalProviderId(name.trim().toLowerCase()) : name);
  let usage = form.providerIds && given && typeof given.provider === 'string' ? { ...given, provider: providerOf(given.provider) } : given;
  const seconds: unknown = usage?.audioSeconds;
  if (form.audioText && seconds != null) {
    // Checked by usageFrom (digits with at most one point) before the record is hashed.
    const text = form.decimalValues ? decimalValue(String(seconds)) : String(seconds);
    if (text !== seconds) usage = { ...usage, audioSeconds: text };
  }
  const hashed: HashedRecord = {
    currency, occurredAt: input.timestamp?.toISOString() ?? null,
    usage: form.canonical ? canonicalJson(usage, 'usage', true) : usage,
    // The model only when given: records from before it existed keep their hash. A blank provider
    // is no provider (see normalizeResponse): a retry leaving it out is the same record.
    response: sent && form.canonical ? [...sent, response!.provider?.trim() ? providerOf(response!.provider) : null, ...(response!.model ? [response!.model] : [])] : sent,
    stated: form.canonical ? canonicalJson(form.decimalValues ? quantityValues(stated) : stated, 'quantities', true) : stated,
  };
  if (response && form.exchange) {
    // As the normalizers read them (names lower-cased, values as text: what HTTP hands over,
    // whatever GraphQL passed), in sorted order; none is the same as no headers.
    const headers = responseHeaders(response.headers);
    if (Object.keys(headers).length > 0) hashed.responseHeaders = canonicalJson(headers, 'response.headers', false);
    // The object in canonical form (a null in it is the provider's, kept), or its text.
    const request = response.requestBody;
    if (request != null) hashed.requestBody = typeof request !== 'string' ? canonicalJson(request, 'response.requestBody', false) : form.requestBodyValue ? requestBodyValue(request) : request;
  }
  return hashed;
}

/**
 * A decimal's text without the zeros that do not change its value: "012.50" as "12.5", "12.000"
 * as "12". The text is one the record's checks let through (digits, at most one point followed
 * by digits); one already so is answered as it is, without a copy.
 */
function decimalValue(text: string): string {
  const point = text.indexOf('.');
  const wholeEnd = point === -1 ? text.length : point;
  let start = 0;
  while (start < wholeEnd - 1 && text.charCodeAt(start) === 48) start++;
  let end = text.length;
  if (point !== -1) {
    while (text.charCodeAt(end - 1) === 48) end--;
    if (end === point + 1) end = point;
  }
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

/**
 * Stated quantities by their value: a whole one as a number (as most are sent, so their hash is
 * unchanged), a fraction as its decimalValue. A record stating none, or only numbers (safe
 * integers, checked when read), is answered as it is.
 */
function quantityValues(stated: Record<string, string | number>): Record<string, string | number> {
  if (stated === NO_QUANTITIES) return stated;
  let values: Record<string, string | number> | undefined;
  for (const meter in stated) {
    const quantity = stated[meter]!;
    if (typeof quantity === 'number') continue;
    const decimal = decimalValue(quantity);
    // At most 15 whole digits (checked when read): a whole one is a safe integer.
    const value = decimal.includes('.') ? decimal : Number(decimal);
    if (value === quantity) continue;
    // A "__proto__" meter is refused when read, so the spread copies every quantity as data.
    values ??= { ...stated };
    values[meter] = value;
  }
  return values ?? stated;
}

/**
 * A request body's text by the JSON object it holds, read as the normalizers read it (past a byte
 * order mark, bare NaN and Infinity as null): the same request sent as an object hashes alike.
 * Text that holds no JSON object (or one nested deeper than is walked) is hashed as it is.
 */
function requestBodyValue(text: string): unknown {
  const request = parseRequestJson(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  if (!isJsonObject(request)) return text;
  try {
    return canonicalJson(request, 'response.requestBody', false);
  } catch {
    return text;
  }
}

/**
 * Post-request metering: records usage, costs it at the provider price in force when it
 * happened, prices it with the merchant's rules, and charges it through the ledger — a customer's
 * events of a batch in one transaction, so an event is either fully recorded and charged or not
 * at all (a batch goes as a few concurrent transactions over disjoint customers: see chargeTogether).
 * Each event answers for itself: bad events get their own error and good ones are kept.
 */
export class UsageService {
  private readonly chargeLanes = new Map<string, ChargeLane>();
  /** When each merchant last sent a key already recorded (a retry), in ms: its batches then read their keys first. */
  private readonly replaysSeenAt = new Map<string, number>();

  constructor(
    private readonly db: Database,
    private readonly prisma: PrismaClient,
    private readonly ledger: LedgerService,
    private readonly meters: MeterService,
    private readonly prices: ProviderPriceService,
    private readonly rules: PriceRuleService,
    private readonly plans: PlanService,
    private readonly logger: Logger,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  async recordOne(merchantId: string, actor: Actor, input: UsageRecordInput): Promise<UsageResult> {
    return (await this.record(merchantId, actor, [input]))[0]!;
  }

  async record(merchantId: string, actor: Actor, inputs: readonly UsageRecordInput[]): Promise<UsageResult[]> {
    if (inputs.length > MAX_BATCH) throw invalidField('events', `at most ${MAX_BATCH} events per batch`);
    const results: (UsageResult | undefined)[] = new Array(inputs.length);
    // Raw SQL on this path: the two reads per batch cost more in Prisma's query compiler than in the database.
    const [merchant] = await this.db.withConnection((connection) =>
      connection.query<{ policy: string }>(`SELECT incomplete_stream_policy AS policy FROM merchants WHERE id = $1`, [merchantId]),
    );
    if (!merchant) throw notFound('Merchant', merchantId);
    const prepared: Prepared[] = [];
    const now = this.clock();
    const nowPeriod = periodStartOf(now);
    inputs.forEach((input, index) => {
      try {
        prepared.push(this.prepare(index, input, merchant.policy, now, nowPeriod));
      } catch (error) {
        results[index] = { ok: false, error: error instanceof AppError ? error : invalidField('event', (error as Error).message) };
      }
    });
    await this.resolveCustomers(merchantId, prepared, results);
    const ready = prepared.filter((item) => item.customerId);
    if (ready.length > 0) {
      try {
        for (const [index, result] of await this.chargeTogether(merchantId, actor, ready)) results[index] = result;
      } catch (error) {
        this.logger.error({ err: error, merchantId, size: ready.length }, 'usage batch failed');
        throw error;
      }
    }
    return results.map((result) => result!);
  }

  /**
   * The most `usage` could be charged now, without recording anything or reading the customer's
   * period totals: provider cost at today's price, then the merchant's rules (those of
   * `customerId`'s plan first, when given), each meter aggregated as recording does (a COUNT
   * meter counts the call once, not its tokens) and priced at the most its rule can charge that
   * quantity whatever the period total before it (see maxEventChargeAttos: a free allowance
   * already used up is not quoted as free). Used to reserve a call's maximum.
   */
  async quote(merchantId: string, usage: NormalizedUsage, customerId?: string | null, currency?: string): Promise<{ costAttos: bigint; chargeAttos: bigint }> {
    const [meters, book, priceRows, planAt] = await Promise.all([
      this.meters.active(merchantId), this.rules.book(merchantId), this.prices.rowsFor(merchantId), customerId ? this.plans.planResolver(merchantId, [customerId]) : null,
    ]);
    const now = this.clock();
    const cost = providerCost(usage, () => (usage.provider && usage.model ? resolvePrice(priceRows, usage.provider, usage.model, now) : null), currency);
    const priced = priceUsage({
      usage, occurredAt: now, rules: book.defaults, planRules: planAt && customerId ? book.ofPlan(planAt(customerId, now)) : null,
      steps: new Map(meters.flatMap((meter) => {
        const quantity = meterQuantities(usage, [meter], NO_QUANTITIES).get(meter.key);
        return quantity === undefined ? [] : [[meter.key, stepPeriodTotal(meter.aggregation, 0n, quantity)] as const];
      })),
      costAttos: cost.costAttos, costProblem: cost.problem, currency: currency ?? PROVIDER_COST_CURRENCY, atMost: true,
    });
    return { costAttos: priced.costAttos, chargeAttos: priced.chargeAttos };
  }

  /** `now` and its period are read once per batch, for the events that give no timestamp. */
  private prepare(index: number, input: UsageRecordInput, policy: string, now: Date, nowPeriod: Date): Prepared {
    const key = String(input.idempotencyKey ?? '').trim();
    if (!key) throw invalidField('idempotencyKey', 'is required: a retry with the same key is never charged twice');
    if (key.length > 200) throw invalidField('idempotencyKey', 'must be at most 200 characters');
    const customerRef = String(input.customer ?? '').trim();
    if (!customerRef) throw invalidField('customer', 'is required (a customer id or your externalId)');
    requireStorableText('idempotencyKey', key);
    requireStorableText('customer', customerRef);
    if (input.metadata != null && (typeof input.metadata !== 'object' || Array.isArray(input.metadata))) throw invalidField('metadata', 'must be a JSON object');
    requireStorableText('metadata', input.metadata);
    const occurredAt = input.timestamp ?? now;
    if (Number.isNaN(occurredAt.getTime())) throw invalidField('timestamp', 'is not a valid time');
    if (!isStorableTime(occurredAt)) throw invalidField('timestamp', 'must be a time in the years 1 to 9999');
    if (occurredAt.getTime() < EARLIEST_USAGE_MS) throw invalidField('timestamp', 'must not be before 2000-01-01T00:00:00Z, the earliest usage time accepted');
    if (occurredAt.getTime() > now.getTime() + MAX_FUTURE_USAGE_MS) throw invalidField('timestamp', `must be at most ${MAX_FUTURE_USAGE_MS / 60_000} minutes ahead of the server's clock`);
    const currency = parseCurrency('currency', input.currency);
    // Checked by type, not truth: a response of "" read as none would record the event from its other fields.
    for (const field of ['response', 'quantities'] as const) requireObjectIfGiven(field, input[field]);
    if (input.usage != null && input.response) throw invalidField('usage', 'give either usage or response, not both');
    if (input.response) {
      requireHttpStatus('response.status', input.response.status);
      // Free-form JSON forwarded for metering: refused before the normalizer walks it.
      requireShallowJson('response.headers', input.response.headers);
      requireShallowJson('response.requestBody', input.response.requestBody);
      // The request the call was made with, as an object or its text (the gateway's): a list, a number
      // or a boolean was read as no request, so a TTS call's characters or an images call's model went unread.
      const requestBody = input.response.requestBody;
      if (requestBody != null && typeof requestBody !== 'string' && !isJsonObject(requestBody)) {
        throw invalidField('response.requestBody', 'must be the request as a JSON object, or its text');
      }
    }
    let stated = NO_QUANTITIES;
    for (const [meter, quantity] of Object.entries(input.quantities ?? NO_QUANTITIES)) {
      requireStorableText('quantities', meter);
      // Assigned, it would set the prototype of `stated` (or be dropped): refused, as in metadata.
      if (meter === '__proto__') throw invalidField('quantities', 'must not have a "__proto__" key');
      if (typeof quantity === 'number' ? !Number.isSafeInteger(quantity) || quantity < 0 : typeof quantity !== 'string' || !/^\d{1,15}(\.\d{1,18})?$/.test(quantity)) {
        throw invalidField(`quantities.${meter}`, 'must be a non-negative whole number or a decimal string');
      }
      if (stated === NO_QUANTITIES) stated = {};
      stated[meter] = quantity;
    }
    let usage: NormalizedUsage;
    if (input.response) usage = responseUsage(input.response, input.normalized);
    else if (input.usage != null) usage = usageFrom(input.usage);
    else if (stated !== NO_QUANTITIES) usage = blankUsage({ requests: 1 });
    else throw invalidField('usage', 'give a usage record, a provider response, or meter quantities');
    const hashed = hashedRecord(input, currency, stated);
    let estimated = false;
    if (usage.incomplete && !usage.billable && policy === 'ESTIMATE') {
      usage = estimateIncomplete(usage);
      estimated = usage.billable;
    }
    requireStorableText(input.response ? 'response' : 'usage.api', usage.api);
    requireStorableText(input.response ? 'response' : 'usage.model', usage.model);
    requireStorableText(input.response ? 'response' : 'usage.provider', usage.provider);
    const billingId = usage.billable && usage.billingId ? usage.billingId : null;
    requireStorableText('response', billingId);
    if (billingId && billingId.length > 200) throw invalidField('response', 'the provider\'s billing id is longer than 200 characters');
    const periodStart = occurredAt === now ? nowPeriod : periodStartOf(occurredAt);
    return { index, input, key: billingId ?? key, callerKey: key, billingId, customerRef, currency, occurredAt, periodStart, usage, estimated, stated, hashed, hash: '' };
  }

  /** One query for every customer in the batch, by id or externalId, within the merchant. */
  private async resolveCustomers(merchantId: string, prepared: Prepared[], results: (UsageResult | undefined)[]): Promise<void> {
    const refs = [...new Set(prepared.map((item) => item.customerRef))];
    const found = await this.db.withConnection((connection) =>
      connection.query<{ id: string; externalId: string; archivedAt: Date | null }>(
        `SELECT id, external_id AS "externalId", archived_at AS "archivedAt" FROM customers WHERE merchant_id = $1 AND (id = ANY($2::uuid[]) OR external_id = ANY($3::text[]))`,
        [merchantId, refs.filter(isUuid).map((ref) => ref.toLowerCase()), refs],
      ),
    );
    const byRef = new Map<string, (typeof found)[number]>();
    for (const customer of found) byRef.set(customer.externalId, customer);
    for (const customer of found) byRef.set(customer.id, customer); // Tollgate's id wins a tie
    for (const item of prepared) {
      const customer = byRef.get(isUuid(item.customerRef) ? item.customerRef.toLowerCase() : item.customerRef) ?? byRef.get(item.customerRef);
      if (!customer) results[item.index] = { ok: false, error: unknownCustomer(item.customerRef) };
      else {
        item.customerId = customer.id;
        // By the customer's id, however the caller named it: a retry naming it by its other identifier is the same record.
        item.hash = recordHash(customer.id, item.hashed);
        // An archived customer starts no new usage; what happened before it was archived is still
        // recorded (late, or retried). An event from after is refused in charge, once its key is
        // known to be new: a retry of one recorded before the archive (with no timestamp, so it
        // reads as now) answers its first result.
        if (customer.archivedAt && item.occurredAt >= new Date(customer.archivedAt)) item.archivedAt = new Date(customer.archivedAt);
      }
    }
  }

  /**
   * A batch's events go to their customers' charge lanes (CUSTOMER_LANES per merchant and actor;
   * a customer always to the same one, so its events keep their order). In a lane, batches that
   * arrive while another is being charged wait and then go together, in arrival order, as one
   * ledger batch: the wallets are locked, read, posted and flushed once for all of them (their
   * events would have queued on the same wallet locks anyway). The answers are those of charging
   * the batches one after the other, because a batch sharing an event key with one already taken
   * waits for the next round, and a combined batch that fails is retried batch by batch so one
   * request's failure stays its own. The lanes share no customer, so they neither wait on nor
   * deadlock with each other; each event is still recorded and charged whole or not at all.
   *
   * A lane's part that fails is tried once more; if it fails again while another part was
   * recorded, its events answer INTERNAL (not recorded, retryable) and the rest as usual; if
   * every part failed, the error is thrown.
   */
  private async chargeTogether(merchantId: string, actor: Actor, items: Prepared[]): Promise<Map<number, UsageResult>> {
    const laneKey = `${merchantId}:${actor.kind}:${actor.apiKeyId ?? ''}`;
    const { parts, repeats } = partitionByCustomer(items, CUSTOMER_LANES);
    const inLane = (lane: number, part: Prepared[]) => this.chargeIsolatingBadData(`${laneKey}:${lane}`, merchantId, actor, part);
    const settled = await Promise.allSettled([...parts].map(([lane, part]) => inLane(lane, part)));
    // Nothing written: fail the whole request, as a single transaction would.
    if (settled.every((part) => part.status === 'rejected')) throw (settled[0] as PromiseRejectedResult).reason;
    const answers = new Map<number, UsageResult>();
    for (const [p, [lane, part]] of [...parts].entries()) {
      let outcome = settled[p]!;
      if (outcome.status === 'rejected') {
        // Another part is committed, so this request answers per event: a part that fails once
        // more is reported on each of its events as not recorded (a retry with the same keys
        // records them, and replays the rest).
        outcome = await inLane(lane, part).then(
          (value): PromiseFulfilledResult<Map<number, UsageResult>> => ({ status: 'fulfilled', value }),
          (reason: unknown): PromiseRejectedResult => ({ status: 'rejected', reason }),
        );
      }
      if (outcome.status === 'fulfilled') {
        for (const [index, result] of outcome.value) answers.set(index, result);
        continue;
      }
      for (const [index, answer] of notRecorded(this.logger, merchantId, part, outcome.reason)) answers.set(index, answer);
    }
    // A key used earlier in the batch, by another customer or for another record, answers from that event (see partitionByCustomer).
    const unclaimed: Prepared[] = [];
    for (const [item, first] of repeats) {
      const answer = answers.get(first.index)!;
      // The first recorded nothing (refused, or a CONFLICT with the event stored under the key):
      // the repeat goes on its own, as it would in a later request, e.g. a retry of that very
      // event, or the record corrected after the first was refused.
      if (!answer.ok) unclaimed.push(item);
      else if (item.billingId && first.billingId) answers.set(item.index, chargedElsewhere(item.billingId, answer.event.id));
      else answers.set(item.index, { ok: false, error: repeatedKey() });
    }
    if (unclaimed.length > 0) {
      for (const [index, answer] of await this.chargeTogether(merchantId, actor, unclaimed).catch((error: unknown) => notRecorded(this.logger, merchantId, unclaimed, error))) {
        answers.set(index, answer);
      }
    }
    return answers;
  }

  /**
   * Charges a lane's part. When the database refuses an event's data (SQLSTATE class 22: a value
   * that validation did not foresee), the part is halved until that event goes alone, and it is
   * answered VALIDATION: one bad event does not sink the good ones it came with.
   */
  private async chargeIsolatingBadData(laneKey: string, merchantId: string, actor: Actor, part: Prepared[]): Promise<Map<number, UsageResult>> {
    try {
      return await this.chargeInLane(laneKey, merchantId, actor, part);
    } catch (error) {
      if (!isDataError(error)) throw error;
      if (part.length === 1) {
        this.logger.warn({ err: error, merchantId }, 'the database refused a usage event\'s data');
        const refused = new AppError('VALIDATION', `The database refused this event's data: ${(error as Error).message}`);
        return new Map([[part[0]!.index, { ok: false, error: refused }]]);
      }
      const half = Math.ceil(part.length / 2);
      const first = await this.chargeIsolatingBadData(laneKey, merchantId, actor, part.slice(0, half));
      const second = await this.chargeIsolatingBadData(laneKey, merchantId, actor, part.slice(half));
      return new Map([...first, ...second]);
    }
  }

  private chargeInLane(laneKey: string, merchantId: string, actor: Actor, items: Prepared[]): Promise<Map<number, UsageResult>> {
    let lane = this.chargeLanes.get(laneKey);
    if (!lane) this.chargeLanes.set(laneKey, (lane = { queue: [], draining: false }));
    const current = lane;
    return new Promise((resolve, reject) => {
      current.queue.push({ items, resolve, reject });
      if (!current.draining) void this.drainCharges(laneKey, current, merchantId, actor);
    });
  }

  private async drainCharges(laneKey: string, lane: ChargeLane, merchantId: string, actor: Actor): Promise<void> {
    lane.draining = true;
    try {
      while (lane.queue.length > 0) {
        const taken: ChargeRequest[] = [];
        const keys = new Set<string>();
        let size = 0;
        for (let i = 0; i < lane.queue.length; ) {
          const request = lane.queue[i]!;
          const fits = taken.length === 0 || (size + request.items.length <= MAX_MERGED_EVENTS && !request.items.some((item) => keys.has(item.key)));
          if (!fits) {
            i++;
            continue;
          }
          lane.queue.splice(i, 1);
          taken.push(request);
          size += request.items.length;
          for (const item of request.items) keys.add(item.key);
        }
        await this.chargeRequests(merchantId, actor, taken);
      }
    } finally {
      lane.draining = false;
      if (lane.queue.length === 0 && this.chargeLanes.get(laneKey) === lane) this.chargeLanes.delete(laneKey);
    }
  }

  private async chargeRequests(merchantId: string, actor: Actor, requests: ChargeRequest[]): Promise<void> {
    if (requests.length === 1) {
      const [request] = requests as [ChargeRequest];
      await this.charge(merchantId, actor, request.items).then(request.resolve, request.reject);
      return;
    }
    // Indexes are positions in each request: renumber for the combined batch, then map back.
    const combined: Prepared[] = [];
    const origin: { request: number; index: number }[] = [];
    requests.forEach((request, r) => {
      for (const item of request.items) {
        origin.push({ request: r, index: item.index });
        combined.push({ ...item, index: combined.length });
      }
    });
    let answers: Map<number, UsageResult>;
    try {
      answers = await this.charge(merchantId, actor, combined);
    } catch {
      for (const request of requests) await this.chargeRequests(merchantId, actor, [request]);
      return;
    }
    const split = requests.map(() => new Map<number, UsageResult>());
    for (const [index, result] of answers) {
      const from = origin[index]!;
      split[from.request]!.set(from.index, result);
    }
    requests.forEach((request, r) => request.resolve(split[r]!));
  }

  private async charge(merchantId: string, actor: Actor, items: Prepared[]): Promise<Map<number, UsageResult>> {
    // The events found priced beyond what an event may charge, refused in the rounds that follow (see ChargesTooLarge).
    const tooLarge = new Map<number, AppError>();
    for (let attempt = 1; ; ) {
      try {
        return await this.chargeOnce(merchantId, actor, items, tooLarge);
      } catch (error) {
        // Rolled back: charged again without them. Each such round refuses one event more, so it ends.
        if (error instanceof ChargesTooLarge) {
          for (const [index, refused] of error.refused) tooLarge.set(index, refused);
          continue;
        }
        // Rolled back: charged again from totals read afresh (see PeriodTotalsMoved).
        if (!(error instanceof PeriodTotalsMoved) || attempt >= 3) throw error;
        attempt++;
      }
    }
  }

  /** `tooLarge`: events refused, unrecorded, for a charge found too large in an earlier round (see ChargesTooLarge). */
  private async chargeOnce(merchantId: string, actor: Actor, items: Prepared[], tooLarge: ReadonlyMap<number, AppError>): Promise<Map<number, UsageResult>> {
    // Plans are resolved once for the batch (from memory, at most one query), never per event.
    const [meters, book, priceRows, planAt] = await Promise.all([
      this.meters.active(merchantId), this.rules.book(merchantId), this.prices.rowsFor(merchantId), this.plans.planResolver(merchantId, items.map((item) => item.customerId!)),
    ]);
    // An event of an archived customer from after its archive is only ever a replay (of a key already
    // recorded, which made its wallet) or refused: it locks its wallet only for its gateway hold.
    const wallets = items.filter((item) => !item.archivedAt || item.input.holdId).map((item) => ({ merchantId, customerId: item.customerId!, currency: item.currency }));
    // Keys are taken as new, unread, as the debit lanes take theirs (see LedgerService.runBatch): a
    // key found used then rolls the attempt back, and the next reads them. Not while the merchant
    // is sending retries, nor with an archived customer's event (a retry of one recorded before the
    // archive is answered as a replay, and one not recorded is refused: telling them apart needs the read).
    const keysLikelyNew =
      performance.now() - (this.replaysSeenAt.get(merchantId) ?? -Infinity) > REPLAY_MEMORY_MS && !items.some((item) => item.archivedAt)
        ? { onReplay: () => this.replaysSeenAt.set(merchantId, performance.now()) }
        : undefined;
    return this.ledger.runBatch(
      wallets,
      async (batch) => {
        const out = new Map<number, UsageResult>();
        const existing = batch.keysAssumedNew ? new Map<string, EventRow>() : await this.existingEvents(batch, merchantId, items.map((item) => item.key));
        const fresh: Prepared[] = [];
        const firstByKey = new Map<string, Prepared>();
        // Repeats of a key within the batch (a billingId, or the same record): answered as replays of the first, at the end.
        const repeats: [Prepared, Prepared][] = [];
        let holds: { holdId: string; wallet: WalletTransaction }[] | null = null;
        for (const item of items) {
          const prior = existing.get(item.key);
          // A new event of an archived customer from after its archive starts no usage (nor frees its
          // hold, as before it reached here); a retry of one recorded earlier answers as any replay. A key
          // another customer's event holds counts as new here, so the answer does not depend on whether
          // that event's lane of this batch committed first.
          if (item.archivedAt && prior?.customer_id !== item.customerId) {
            out.set(item.index, { ok: false, error: archivedCustomer(item.customerId!, item.archivedAt) });
            continue;
          }
          if (item.input.holdId) (holds ??= []).push({ holdId: item.input.holdId, wallet: batch.wallet({ merchantId, customerId: item.customerId!, currency: item.currency }) });
          if (prior) {
            out.set(item.index, replay(prior, item));
            continue;
          }
          // A key sent twice in one batch: the same record (or the same provider billing id) is
          // answered as a replay of the first, as a retry in a later batch would be. Another record
          // waits for the first's answer, out of the lanes (see partitionByCustomer); should one get
          // here all the same, it is a CONFLICT.
          const earlier = firstByKey.get(item.key);
          if (earlier && ((item.billingId && earlier.billingId) || item.hash === earlier.hash)) repeats.push([item, earlier]);
          else if (earlier) out.set(item.index, { ok: false, error: repeatedKey() });
          else {
            firstByKey.set(item.key, item);
            fresh.push(item);
          }
        }
        // The gateway's reservations for these calls are freed here, before the charges are planned.
        if (holds) await this.ledger.releaseHoldsInBatch(batch, merchantId, actor, holds);
        const misnamed = await misnamedQuantities(batch.tx, merchantId, meters, fresh);
        const quantities = new Map(fresh.map((item) => [item.index, item.usage.billable && meters.length > 0 ? meterQuantities(item.usage, meters, item.stated) : NO_METERED]));
        // Each billable event's plan rules in force at its time, looked up once for the tie check and pricing.
        const planRulesOf = new Map<number, ReturnType<typeof book.ofPlan>>();
        // An event two rules would price equally fails alone, before it counts in any period total;
        // so does one an earlier round priced beyond what an event may charge (see charge).
        const priceable = fresh.filter((item) => {
          const refused = (tooLarge.size === 0 ? undefined : tooLarge.get(item.index)) ?? (misnamed.size === 0 ? undefined : misnamed.get(item.index));
          if (refused) {
            out.set(item.index, { ok: false, error: refused });
            return false;
          }
          if (!item.usage.billable) return true;
          const planRules = book.ofPlan(planAt(item.customerId!, item.occurredAt));
          planRulesOf.set(item.index, planRules);
          const tie = ruleTie({ usage: item.usage, occurredAt: item.occurredAt, rules: book.defaults, planRules, meters: quantities.get(item.index)!.keys() });
          if (tie) out.set(item.index, { ok: false, error: tie });
          return !tie;
        });
        // The rule that prices each meter of each event: a rule's period total counts only the units it priced.
        const rulesOf = new Map<number, Map<string, RuleRow>>();
        for (const item of priceable) {
          const metered = quantities.get(item.index)!;
          if (metered.size === 0) continue;
          rulesOf.set(item.index, meterRules({ usage: item.usage, occurredAt: item.occurredAt, rules: book.defaults, planRules: planRulesOf.get(item.index), meters: metered.keys() }));
        }
        const advanced = await this.advancePeriodTotals(batch, merchantId, priceable, quantities, rulesOf, new Map(meters.map((meter) => [meter.key, meter.aggregation])));
        const { steps } = advanced;
        // An event that would take a period total past what it holds fails alone, unrecorded.
        for (const [index, error] of advanced.refused) out.set(index, { ok: false, error });
        const charged = advanced.refused.size === 0 ? priceable : priceable.filter((item) => !advanced.refused.has(item.index));
        // Price every event, then charge each wallet once for all of its events in this batch:
        // one ledger transaction per wallet instead of one per event. Every event is still
        // checked against what the customer can pay, in order, and points at its transaction.
        const rows: [EventRow, Prepared, string | null, string | null][] = [];
        const pending = new Map<string, { wallet: WalletTransaction; attos: bigint; keptAttos: bigint; events: EventRow[] }>();
        // Events of a batch mostly share provider, model and millisecond: resolve each combination
        // once, and skip even the lookup key while they repeat the event before.
        const prices = new Map<string, ReturnType<typeof resolvePrice>>();
        let last: { provider: string; model: string; time: number; price: ReturnType<typeof resolvePrice> } | null = null;
        const priceOf = (provider: string, model: string, at: Date) => {
          const time = at.getTime();
          if (last && last.time === time && last.provider === provider && last.model === model) return last.price;
          const key = `${provider}\u0000${model}\u0000${time}`;
          let price = prices.get(key);
          if (price === undefined) prices.set(key, (price = resolvePrice(priceRows, provider, model, at)));
          last = { provider, model, time, price };
          return price;
        };
        const answers: { index: number; row: EventRow; error: AppError | undefined }[] = [];
        let chargesTooLarge: Map<number, AppError> | undefined;
        const credits = new BatchPeriodCredits(batch.tx, merchantId, book.versionTime);
        // The periods whose credit some VOLUME line needs (see volumeCreditNeed), read in one
        // statement; and the events priced from what their rule charged in the period.
        const fromCharged = new Map<number, string[]>();
        for (const item of charged) {
          const moved = steps.get(item.index);
          if (!moved) continue;
          for (const [meter, step] of moved) {
            if (step.rule.type !== 'VOLUME') continue;
            const need = volumeCreditNeed(step, step.rule.planId === null ? book.defaults : (book.ofPlan(step.rule.planId) ?? []), item.periodStart);
            if (need === null) continue;
            credits.need(item.customerId!, item.currency, item.periodStart);
            if (need === 'charged') fromCharged.set(item.index, [...(fromCharged.get(item.index) ?? []), meter]);
          }
        }
        await credits.load();
        for (const item of charged) {
          const { provider, model } = item.usage;
          const cost = providerCost(item.usage, () => (provider && model ? priceOf(provider, model, item.occurredAt) : null), item.currency);
          // Each meter is priced on what this event adds to its period total (see PeriodStep).
          let moved: ReadonlyMap<string, MeterStep> | undefined = steps.get(item.index);
          const charging = fromCharged.get(item.index);
          if (moved && charging) {
            // As of this event: the batch's earlier events are folded in (see BatchPeriodCredits.add).
            const period = await credits.periodOf(item.customerId!, item.currency, item.periodStart);
            const withCharged = new Map<string, MeterStep>(moved);
            for (const meter of charging) {
              const step = moved.get(meter)!;
              const scope = ruleScopeOf(step.rule!);
              // A late event of an earlier version, after a later one priced part of the period: its own units, at its version.
              if (laterVersionPriced(period, scope, meter, step.rule!.effectiveFrom)) continue;
              withCharged.set(meter, { ...step, charged: ruleNet(period, scope, meter) });
            }
            moved = withCharged;
          }
          let priced: PricedUsage = item.usage.billable
            ? priceUsage({
                usage: item.usage, occurredAt: item.occurredAt, rules: book.defaults, planRules: planRulesOf.get(item.index),
                steps: moved ?? NO_STEPS, costAttos: cost.costAttos, costProblem: cost.problem, currency: item.currency,
              })
            : { costAttos: 0n, costProblem: null, chargeAttos: 0n, marginAttos: 0n, lines: [], passThrough: false };
          // A period re-priced lower gives back only what was paid (see usage.credits.ts).
          let withheldAttos = 0n;
          if (priced.lines.some((line) => line.chargeAttos < 0n)) {
            ({ priced, withheldAttos } = capCredits(priced, await credits.periodOf(item.customerId!, item.currency, item.periodStart)));
          }
          // A charge an event cannot store, as a cost cannot be (MAX_EVENT_ATTOS: 10^20 of the currency):
          // a rule's price or a quantity far beyond any real call. Unlike a cost (recorded unknown,
          // so that rules still price the event), a charge has no fallback but to give the usage away:
          // the event is refused, unrecorded and counted nowhere, once the batch is rolled back.
          if (priced.chargeAttos >= MAX_EVENT_ATTOS) {
            (chargesTooLarge ??= new Map()).set(item.index, chargeTooLarge(item, priced));
            continue;
          }
          const wallet = batch.wallet({ merchantId, customerId: item.customerId!, currency: item.currency });
          const group = pending.get(wallet.state.id) ?? { wallet, attos: 0n, keptAttos: 0n, events: [] };
          pending.set(wallet.state.id, group);
          let status: UsageEventStatus = priced.chargeAttos === 0n ? 'NOT_BILLABLE' : 'CHARGED';
          let error: AppError | undefined;
          let chargedAttos = priced.chargeAttos;
          if (priced.chargeAttos !== 0n) {
            // A gateway call's own reservation, settled in this batch: credit kept for it past its
            // expiry pays for it first, as a capture's would (see WalletTransaction.drawKept).
            const fromKept = item.input.holdId ? wallet.drawKept(item.input.holdId, priced.chargeAttos) : 0n;
            group.keptAttos += fromKept;
            const rest = priced.chargeAttos - fromKept;
            // Would this event still fit on top of what the wallet owes so far in this batch?
            if (rest <= 0n || fitsDebit(wallet.state, group.attos + rest, true)) group.attos += rest;
            else {
              // The usage has happened: take what the customer has left (down to its overdraft
              // floor) and record the rest as a shortfall, so a small balance cannot buy
              // unlimited calls that each cost more than it.
              const owedInBatch = planDebit(wallet.state, group.attos, { allowOverdraft: true, ignoreLimits: true }).nanos;
              const affordable = affordableAttos(wallet.state, group.attos, rest);
              chargedAttos = fromKept + affordable;
              group.attos += affordable;
              status = chargedAttos > 0n ? 'PARTIALLY_CHARGED' : 'UNCHARGED';
              const required = (priced.chargeAttos + ATTOS_PER_NANO - 1n) / ATTOS_PER_NANO;
              error = insufficientFunds(required, wallet.state.balance - wallet.state.held - owedInBatch, item.currency);
            }
          }
          const metadata: EventRow['metadata'] & Record<string, unknown> = item.input.metadata ? callerMetadataOf(item.input.metadata) : {};
          metadata.requestHash = item.hash;
          if (item.billingId) {
            metadata.billingId = item.billingId;
            metadata.callerIdempotencyKey = item.callerKey;
          }
          metadata.pricing = storedChargeLines(priced.lines);
          if (priced.passThrough && priced.chargeAttos !== 0n) metadata.passThrough = true;
          if (priced.costProblem) metadata.costProblem = priced.costProblem;
          // Kept whatever the policy made of it: a cut stream left uncharged must not read like an error response.
          if (item.usage.incomplete) metadata.incomplete = true;
          if (item.usage.providerReportedCostUsd) metadata.providerReportedCostUsd = item.usage.providerReportedCostUsd;
          if (error) {
            // With its details, so that a replay answers exactly as the first answer did.
            metadata.error = { code: error.code, message: error.message, details: error.details };
            metadata.pricedChargeAttos = priced.chargeAttos.toString();
            metadata.shortfallAttos = (priced.chargeAttos - chargedAttos).toString();
          }
          if (withheldAttos > 0n) metadata.withheldCreditAttos = withheldAttos.toString();
          credits.add(item.customerId!, item.currency, item.periodStart, { lines: priced.lines, shortfallAttos: priced.chargeAttos - chargedAttos, withheldAttos });
          const row: EventRow = {
            id: uuidv7(), customer_id: item.customerId!, idempotency_key: item.key, occurred_at: item.occurredAt, status, provider: item.usage.provider || null,
            model: item.usage.model, currency: item.currency, cost_attos: priced.costAttos.toString(), charge_attos: chargedAttos.toString(),
            margin_attos: (priced.marginAttos - (priced.chargeAttos - chargedAttos)).toString(), estimated: item.estimated, ledger_transaction_id: null, metadata,
          };
          if (status === 'CHARGED' || status === 'PARTIALLY_CHARGED') group.events.push(row);
          rows.push([row, item, cost.ref, priced.lines[0]?.ruleId ?? null]);
          answers.push({ index: item.index, row, error });
        }
        // Nothing is written yet but the period totals, which the rollback undoes (see charge).
        if (chargesTooLarge) throw new ChargesTooLarge(chargesTooLarge);
        for (const { wallet, attos, keptAttos, events } of pending.values()) {
          const transactionId = await this.postUsage(wallet, attos, keptAttos, events, actor);
          for (const row of events) row.ledger_transaction_id = transactionId;
        }
        for (const { index, row, error } of answers) out.set(index, recordedAnswer(row, false, error));
        for (const [item, first] of repeats) {
          const answer = out.get(first.index)!;
          out.set(item.index, answer.ok && item.customerId === first.customerId ? { ...answer, replayed: true } : answer.ok ? chargedElsewhere(item.billingId!, answer.event.id) : answer);
        }
        await this.insertEvents(batch, merchantId, rows);
        // A key taken as new is checked by its insert; one refused instead (a rule tie, a total
        // overflowing) may have been a retry of an event recorded before, to be answered as its replay.
        if (batch.keysAssumedNew) {
          const stored = new Set(rows.map(([row]) => row.idempotency_key));
          const refused = items.filter((item) => !stored.has(item.key)).map((item) => item.key);
          if (refused.length > 0 && (await this.anyRecorded(batch, merchantId, refused))) throw new KeyFoundUsed();
        }
        return out;
      },
      [],
      keysLikelyNew,
    );
  }

  private async anyRecorded(batch: LedgerBatch, merchantId: string, keys: string[]): Promise<boolean> {
    const rows = await batch.tx.query(`SELECT 1 FROM usage_events WHERE merchant_id = $1 AND idempotency_key = ANY($2::text[]) LIMIT 1`, [merchantId, pgArray(keys)]);
    return rows.length > 0;
  }

  /**
   * One ledger transaction for a wallet's charged events in a batch. Its idempotency key is the
   * first event's (events are themselves idempotent by their unique keys). A net credit (VOLUME
   * tiers re-pricing the period lower) comes back as promotional credit.
   */
  private async postUsage(wallet: WalletTransaction, attos: bigint, keptAttos: bigint, events: EventRow[], actor: Actor): Promise<string | null> {
    if (events.length === 0) return null;
    const label = events.length === 1 ? `${events[0]!.provider ?? 'usage'} ${events[0]!.model ?? ''}`.trim() : `Usage (${events.length} events)`;
    const common = {
      kind: 'USAGE' as const,
      idempotencyKey: `usage:${events[0]!.idempotency_key}`,
      requestHash: events[0]!.metadata.requestHash ?? '',
      counterAccount: 'USAGE_REVENUE' as const,
      description: label,
      metadata: { usageEventIds: events.map((row) => row.id), exactChargeAttos: (attos + keptAttos).toString() },
      sourceRef: events.length === 1 ? events[0]!.id : null,
      occurredAt: latestOccurredAt(events),
      actor,
    };
    if (attos >= 0n) {
      const plan = planDebit(wallet.state, attos, { allowOverdraft: true });
      if (!plan.ok) throw new Error('a batch charge exceeded what each of its events was checked against');
      // Planned first: the kept credit drawn was never part of what the plan could spend.
      const posted = await wallet.post({ ...common, legs: [...wallet.takeKeptDraws(), ...plan.legs] });
      wallet.setCarry(plan.carry);
      return posted.id;
    }
    // A net credit settles the sub-nano carry first, so its fraction is not lost either. One of
    // under a nano moves only the carry, and is posted all the same (a transaction of 0 with its
    // exact amount in metadata), as a net charge under a nano is: every charged event names the
    // ledger transaction that accounts for it.
    const credit = planCredit(wallet.state.carry, -attos);
    const keptLegs = wallet.takeKeptDraws();
    const grantId = uuidv7();
    if (credit.nanos > 0n) {
      wallet.addGrant({ id: grantId, kind: 'PROMOTIONAL', amount: credit.nanos, priority: 0, expiresAt: null, transactionId: '', description: 'Volume pricing credit', metadata: {} });
    }
    const posted = await wallet.post({ ...common, legs: [...keptLegs, ...(credit.nanos > 0n ? creditLegs(wallet.state, credit.nanos, grantId) : [])] });
    wallet.setCarry(credit.carry);
    if (credit.nanos > 0n) wallet.linkGrantTransaction(grantId, posted.id);
    return posted.id;
  }

  /** One page of events, newest first (Relay cursor connection). */
  async page(merchantId: string, customerId: string | null, page: { before?: string; after?: string; limit: number; inverted: boolean }): Promise<(UsageEventView & { createdAt: Date })[]> {
    // By when the usage happened, as the events show it (a late event takes its place in time),
    // served by the (merchant_id[, customer_id], occurred_at) indexes.
    const keyset = createdKeysetPage(page, 'occurredAt');
    const rows = await this.prisma.usageEvent.findMany({
      where: { AND: [{ merchantId, ...(customerId ? { customerId } : {}) }, keyset.where] },
      orderBy: keyset.orderBy,
      take: page.limit,
    });
    return rows.map((row) => ({
      ...viewOf({
        id: row.id, customer_id: row.customerId, idempotency_key: row.idempotencyKey, occurred_at: row.occurredAt, status: row.status, provider: row.provider,
        model: row.model, currency: row.currency, cost_attos: row.costAttos.toFixed(0), charge_attos: row.chargeAttos.toFixed(0), margin_attos: row.marginAttos.toFixed(0),
        estimated: row.estimated, ledger_transaction_id: row.ledgerTransactionId, metadata: row.metadata as EventRow['metadata'],
      }),
      createdAt: row.createdAt,
    }));
  }

  private async existingEvents(batch: LedgerBatch, merchantId: string, keys: string[]): Promise<Map<string, EventRow>> {
    const rows = await batch.tx.query<EventRow>(
      // One unique-index probe per key (LIMIT 1 keeps the planner from scanning the merchant's events).
      `SELECT e.* FROM unnest($2::text[]) AS k(key)
       CROSS JOIN LATERAL (SELECT ${EVENT_COLUMNS} FROM usage_events WHERE merchant_id = $1 AND idempotency_key = k.key LIMIT 1) e`,
      [merchantId, pgArray(keys)],
    );
    return new Map(rows.map((row) => [row.idempotency_key, row]));
  }

  /**
   * Advances each customer's running totals for the period by the batch (one statement) and
   * returns, per event and meter, the step it made: the total before it and what it added
   * (see PeriodStep for SUM, COUNT and MAX). A total belongs to a rule as well (its book and name,
   * see ruleScopeOf): an event's units of a meter count only in the total of the rule that prices
   * them (`rulesOf`), and units no rule prices count nowhere. A MAX meter's step starts from the
   * customer's peak of the meter in the period across its totals, whichever book and rule priced it
   * (`peaks`): seats paid for under one plan are not charged again under the next after a plan
   * change, nor when moving back. Those other totals are read, not locked: every batch that writes a
   * customer's totals in a currency holds its wallet's lock. The statement locks the existing
   * totals rows first (FOR UPDATE, reading their latest values: the totals before the batch, which
   * MAX cannot recover from the totals after it), then sums or maxes the batch in; each event's
   * step is worked out from there in batch order. Row locks keep concurrent batches consistent. A
   * row another transaction created after this statement began is left alone (the DO UPDATE WHERE)
   * and its events go round once more, now seeing and locking it. An event that would take one of
   * its totals past what a total holds (PERIOD_TOTAL_LIMIT) is refused (`refused`, by index) and
   * counts nowhere; the statement then writes nothing and goes again without it (see
   * refuseOverflowing), so it never fails the events it came with.
   */
  private async advancePeriodTotals(
    batch: LedgerBatch,
    merchantId: string,
    items: Prepared[],
    quantities: Map<number, ReadonlyMap<string, Quantity>>,
    rulesOf: Map<number, Map<string, RuleRow>>,
    aggregations: Map<string, MeterAggregation>,
  ): Promise<{ steps: Map<number, Map<string, RuleStep>>; refused: Map<number, AppError> }> {
    let rowsFor: TotalEntry[] = [];
    let lastPeriod: Date | null = null;
    let lastPeriodText = '';
    for (const item of items) {
      const metered = quantities.get(item.index)!;
      if (metered.size === 0) continue;
      const rules = rulesOf.get(item.index);
      if (item.periodStart !== lastPeriod) {
        lastPeriod = item.periodStart;
        lastPeriodText = item.periodStart.toISOString();
      }
      for (const [meter, quantity] of metered) {
        const rule = rules?.get(meter);
        if (!rule) continue;
        const { priceBook, ruleName } = ruleScopeOf(rule);
        const aggregation = aggregations.get(meter) ?? 'SUM';
        const peak = item.customerId + '|' + item.currency + '|' + meter + '|' + lastPeriodText;
        // The rule's name goes last: it is the only part that may hold any text.
        const key = peak + '|' + priceBook + '|' + ruleName;
        rowsFor.push({ key, running: aggregation === 'MAX' ? peak : key, item, meter, rule, aggregation, quantity, priceBook, ruleName, contribution: periodContribution(aggregation, quantity) });
      }
    }
    const refused = new Map<number, AppError>();
    let increments = incrementsOf(rowsFor);
    const before = new Map<string, ScaledQuantity>();
    // MAX meters' peaks before the batch, by TotalEntry.running; and the totals another rule's total of their peak preceded.
    const peaks = new Map<string, ScaledQuantity>();
    const shared = new Set<string>();
    for (let attempt = 1; before.size < increments.size; attempt++) {
      if (attempt > 4) throw new Error('usage period totals kept being created by concurrent batches');
      const rows = [...increments.entries()].filter(([key]) => !before.has(key)).map(([, increment]) => increment);
      // A total that this batch would take past what its column holds (NUMERIC(38,18): under 10^20)
      // would fail the statement, and with it every event of the batch: then nothing is written,
      // the totals before the batch come back instead (`overflow`, with a row of nulls when none
      // existed), the events that would take a total that far are refused, and the rest go again.
      // `peaks` reads a MAX meter's totals as of the statement (a row the upsert updates first could not
      // be locked again): its own total's latest value comes from `locked`.
      const advanced = await batch.tx.query<{
        customer_id: string | null; currency: string; meter_key: string; period_start: Date; price_book: string; rule_name: string; before: string; peak: string | null;
        shared: boolean | null; overflow: boolean;
      }>(
        `WITH increments AS (
           SELECT u.customer_id, u.currency, u.meter_key, u.period_start, u.price_book, u.rule_name,
                  CASE WHEN u.meter_key = ANY($7::text[]) THEN max(u.quantity) ELSE sum(u.quantity) END AS quantity
           FROM unnest($2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $8::text[], $9::text[], $6::numeric[])
             AS u(customer_id, currency, meter_key, period_start, price_book, rule_name, quantity)
           GROUP BY 1, 2, 3, 4, 5, 6),
         locked AS MATERIALIZED (
           SELECT t.customer_id, t.currency, t.meter_key, t.period_start, t.price_book, t.rule_name, t.quantity
           FROM usage_period_totals t JOIN increments i USING (customer_id, currency, meter_key, period_start, price_book, rule_name)
           FOR UPDATE OF t),
         peaks AS (
           SELECT t.customer_id, t.currency, t.meter_key, t.period_start, max(t.quantity) AS quantity, count(*)::int AS totals
           FROM usage_period_totals t
           WHERE (t.customer_id, t.currency, t.meter_key, t.period_start) IN (SELECT customer_id, currency, meter_key, period_start FROM increments WHERE meter_key = ANY($7::text[]))
           GROUP BY 1, 2, 3, 4),
         overflow AS MATERIALIZED (
           SELECT EXISTS (SELECT FROM increments i LEFT JOIN locked l USING (customer_id, currency, meter_key, period_start, price_book, rule_name)
             WHERE CASE WHEN i.meter_key = ANY($7::text[]) THEN GREATEST(coalesce(l.quantity, 0), i.quantity) ELSE coalesce(l.quantity, 0) + i.quantity END
               >= ${PERIOD_TOTAL_LIMIT}) AS refused),
         upserted AS (
           INSERT INTO usage_period_totals (merchant_id, customer_id, currency, meter_key, period_start, price_book, rule_name, quantity)
           SELECT $1, customer_id, currency, meter_key, period_start, price_book, rule_name, quantity FROM increments WHERE NOT (SELECT refused FROM overflow)
           ON CONFLICT (customer_id, currency, meter_key, period_start, price_book, rule_name) DO UPDATE SET quantity = CASE WHEN usage_period_totals.meter_key = ANY($7::text[])
               THEN GREATEST(usage_period_totals.quantity, excluded.quantity) ELSE usage_period_totals.quantity + excluded.quantity END
             WHERE EXISTS (SELECT FROM locked l WHERE (l.customer_id, l.currency, l.meter_key, l.period_start, l.price_book, l.rule_name)
               = (excluded.customer_id, excluded.currency, excluded.meter_key, excluded.period_start, excluded.price_book, excluded.rule_name))
           RETURNING customer_id, currency, meter_key, period_start, price_book, rule_name)
         SELECT u.customer_id, u.currency, u.meter_key, u.period_start, u.price_book, u.rule_name, coalesce(l.quantity, 0)::text AS before,
                CASE WHEN u.meter_key = ANY($7::text[]) THEN GREATEST(l.quantity, p.quantity, 0)::text END AS peak,
                coalesce(p.totals, 0) > (CASE WHEN l.customer_id IS NULL THEN 0 ELSE 1 END) AS shared, false AS overflow
         FROM upserted u LEFT JOIN locked l USING (customer_id, currency, meter_key, period_start, price_book, rule_name)
           LEFT JOIN peaks p USING (customer_id, currency, meter_key, period_start)
         UNION ALL
         SELECT l.customer_id, l.currency, l.meter_key, l.period_start, l.price_book, l.rule_name, l.quantity::text, NULL, NULL, true
         FROM overflow o LEFT JOIN locked l ON true WHERE o.refused`,
        [
          merchantId, pgArrayOf(rows, (row) => row.customerId), pgArrayOf(rows, (row) => row.currency), pgArrayOf(rows, (row) => row.meter),
          pgArrayOf(rows, (row) => row.periodStart), pgArrayOf(rows, (row) => formatScaledQuantity(row.contribution)),
          [...new Set(rows.filter((row) => row.aggregation === 'MAX').map((row) => row.meter))],
          pgArrayOf(rows, (row) => row.priceBook), pgArrayOf(rows, (row) => row.ruleName),
        ],
      );
      const peakOf = (row: (typeof advanced)[number]) => `${row.customer_id}|${row.currency.trim()}|${row.meter_key}|${new Date(row.period_start).toISOString()}`;
      const keyOf = (row: (typeof advanced)[number]) => `${peakOf(row)}|${row.price_book}|${row.rule_name}`;
      if (advanced[0]?.overflow) {
        // The totals before the batch: those advanced in an earlier round, those locked now, else none yet.
        const totals = new Map<string, bigint>();
        for (const [key, total] of before) totals.set(key, total.scaled);
        for (const row of advanced) if (row.customer_id !== null) totals.set(keyOf(row), scaledQuantity('before', row.before));
        const refusedNow = refuseOverflowing(rowsFor, totals);
        if (refusedNow.size === 0) throw new Error('a usage period total was found beyond its limit, yet no event of the batch takes it there');
        // A total already advanced holds the units of the events now refused: the batch goes again.
        if (rowsFor.some((row) => refusedNow.has(row.item.index) && before.has(row.key))) throw new PeriodTotalsMoved();
        for (const [index, error] of refusedNow) refused.set(index, error);
        rowsFor = rowsFor.filter((row) => !refusedNow.has(row.item.index));
        increments = incrementsOf(rowsFor);
        continue;
      }
      // A peak is the highest of its round's rows (each read its own total locked, the others as of the
      // statement), taken in the first round to read it: a later one also reads what this batch wrote.
      const known = new Set(peaks.keys());
      for (const row of advanced) {
        before.set(keyOf(row), new ScaledQuantity(scaledQuantity('before', row.before)));
        if (row.shared) shared.add(keyOf(row));
        if (row.peak === null) continue;
        const group = peakOf(row);
        if (known.has(group)) continue;
        const peak = scaledQuantity('peak', row.peak);
        const held = peaks.get(group);
        if (!held || held.scaled < peak) peaks.set(group, new ScaledQuantity(peak));
      }
    }
    const steps = new Map<number, Map<string, RuleStep>>();
    // The totals of each peak the batch moved so far: a total moved after another's shares the peak.
    const movedOfPeak = new Map<string, Set<string>>();
    for (const row of rowsFor) {
      const running = row.aggregation === 'MAX' ? peaks : before;
      const step: RuleStep = { ...stepPeriodTotal(row.aggregation, running.get(row.running)!, row.quantity), rule: row.rule };
      running.set(row.running, step.after);
      if (row.aggregation === 'MAX') {
        const moved = movedOfPeak.get(row.running) ?? new Set<string>();
        movedOfPeak.set(row.running, moved.add(row.key));
        if (moved.size > 1) shared.add(row.key);
        if (shared.has(row.key)) step.shared = true;
      }
      const ofItem = steps.get(row.item.index) ?? new Map<string, RuleStep>();
      steps.set(row.item.index, ofItem.set(row.meter, step));
    }
    return { steps, refused };
  }

  /**
   * One statement over parallel arrays, each column built as a literal in one pass (BulkColumns:
   * a column the whole batch shares, such as the currency or the period, goes once).
   * The metadata column travels as one JSON array instead: a text[] of JSON would be escaped
   * element by element here, and parsed twice by PostgreSQL (the array, then each document).
   * ROWS FROM zips the arrays and the JSON array's elements in order.
   */
  private async insertEvents(batch: LedgerBatch, merchantId: string, rows: [EventRow, Prepared, string | null, string | null][]): Promise<void> {
    if (rows.length === 0) return;
    const params: unknown[] = [merchantId, batch.now];
    const usage = (field: 'inputTokens' | 'cachedInputTokens' | 'cacheWriteTokens' | 'outputTokens' | 'reasoningTokens' | 'characters' | 'images' | 'requests') =>
      ([, item]: (typeof rows)[number]) => item.usage[field];
    const columns = new BulkColumns(rows, params)
      .column('id', 'uuid', ([row]) => row.id)
      .column('customer_id', 'uuid', ([row]) => row.customer_id)
      .column('idempotency_key', 'text', ([row]) => row.idempotency_key)
      .column('occurred_at', 'timestamptz', ([row]) => row.occurred_at)
      .column('period_start', 'timestamptz', ([, item]) => item.periodStart)
      .column('provider', 'text', ([row]) => row.provider)
      .column('model', 'text', ([row]) => row.model)
      .column('api', 'text', ([, item]) => item.usage.api || null)
      .column('input_tokens', 'int', usage('inputTokens'))
      .column('cached_input_tokens', 'int', usage('cachedInputTokens'))
      .column('cache_write_tokens', 'int', usage('cacheWriteTokens'))
      .column('output_tokens', 'int', usage('outputTokens'))
      .column('reasoning_tokens', 'int', usage('reasoningTokens'))
      .column('audio_seconds', 'text', ([, item]) => item.usage.audioSeconds)
      .column('characters', 'int', usage('characters'))
      .column('images', 'int', usage('images'))
      .column('requests', 'int', usage('requests'))
      .column('stated_quantities', 'text', ([, item]) => (item.stated === NO_QUANTITIES ? '{}' : JSON.stringify(item.stated)), 'jsonb')
      .column('currency', 'text', ([row]) => row.currency)
      .column('cost_attos', 'numeric', ([row]) => row.cost_attos)
      .column('charge_attos', 'numeric', ([row]) => row.charge_attos)
      .column('margin_attos', 'numeric', ([row]) => row.margin_attos)
      .column('provider_price_ref', 'text', ([, , priceRef]) => priceRef)
      .column('price_rule_id', 'uuid', ([, , , ruleId]) => ruleId)
      .column('ledger_transaction_id', 'uuid', ([row]) => row.ledger_transaction_id)
      .column('status', 'text', ([row]) => row.status, '"UsageEventStatus"')
      .column('estimated', 'bool', ([row]) => row.estimated);
    params.push(JSON.stringify(rows.map(([row]) => row.metadata)));
    // Split as json and converted one event at a time: jsonb_array_elements over the whole array
    // as jsonb took about twice as long for the same rows (nested values are copied out again).
    columns.source('metadata', `json_array_elements($${params.length}::json)`, 'jsonb');
    await batch.tx.query(
      `INSERT INTO usage_events (merchant_id, ${columns.names}, created_at) SELECT $1, ${columns.select}, $2 FROM ${columns.from}`,
      params,
    );
  }

}

/** Answers for `items` whose storing failed with `error` while the rest of their request was recorded: retryable, by the same keys. */
function notRecorded(logger: Logger, merchantId: string, items: readonly Prepared[], error: unknown): Map<number, UsageResult> {
  // Logged, and answered, under the request's id, as every other INTERNAL is: the answer is the
  // caller's only way to find why in the logs.
  const requestId = currentRequestId();
  logger.error({ err: error, merchantId, size: items.length, requestId }, 'usage batch part failed; its events were not recorded, the rest were');
  const refused = new AppError('INTERNAL', 'Not recorded: storing this event failed while the rest of its batch was recorded. Send it again with the same idempotency key.', {
    retryable: true, ...(requestId ? { requestId } : {}),
  });
  return new Map(items.map((item) => [item.index, { ok: false, error: refused }]));
}

/**
 * A batch's items by charge lane (laneOf their customer over `lanes`), in batch order within
 * each. A key that an earlier item already uses is kept out of the lanes and listed in `repeats`
 * with that first item, to be answered once the first's answer is known (see chargeTogether):
 * when it is another customer's (lanes run concurrently, so the two must not both be charged), or
 * the same customer's for another record (`hash`: the first may yet be refused while charging,
 * recording nothing, and then the repeat goes on its own). The same record again (or the same
 * provider billing id) for one customer stays in its lane, which answers it as a replay. An item
 * of an archived customer from after its archive (`archivedAt`) is never such a first, nor kept
 * out: it only replays its key if already recorded, or is refused, so it must not decide another's answer.
 */
export function partitionByCustomer<T extends { customerId?: string; key: string; archivedAt?: Date; hash?: string; billingId?: string | null }>(
  items: T[], lanes: number,
): { parts: Map<number, T[]>; repeats: [T, T][] } {
  const firstOfKey = new Map<string, T>();
  const laneOfCustomer = new Map<string, number>();
  const parts = new Map<number, T[]>();
  const repeats: [T, T][] = [];
  for (const item of items) {
    const customer = item.customerId!;
    const first = firstOfKey.get(item.key);
    if (first === undefined) {
      if (item.archivedAt === undefined) firstOfKey.set(item.key, item);
    }
    else if (first.customerId !== customer || (item.archivedAt === undefined && !(item.billingId && first.billingId) && item.hash !== first.hash)) {
      repeats.push([item, first]);
      continue;
    }
    let lane = laneOfCustomer.get(customer);
    if (lane === undefined) laneOfCustomer.set(customer, (lane = laneOf(customer, lanes)));
    const part = parts.get(lane);
    if (part) part.push(item);
    else parts.set(lane, [item]);
  }
  return { parts, repeats };
}

/** One event's units of a meter, bound for the period total of the rule that prices them (see advancePeriodTotals). */
interface TotalEntry {
  key: string;
  /**
   * The running total its step starts from: `key`, or for a MAX meter the customer's peak of the
   * meter in the period, whichever book and rule priced it (see advancePeriodTotals).
   */
  running: string;
  item: Prepared;
  meter: string;
  rule: RuleRow;
  priceBook: string;
  ruleName: string;
  aggregation: MeterAggregation;
  quantity: Quantity;
  /** What it adds to the batch's aggregate for the total (see periodContribution). */
  contribution: bigint;
}

interface TotalIncrement {
  customerId: string;
  currency: string;
  meter: string;
  periodStart: Date;
  priceBook: string;
  ruleName: string;
  aggregation: MeterAggregation;
  contribution: bigint;
}

/**
 * One statement row per customer, currency, meter, period and rule: the batch's events are summed
 * (or maxed) here, so the statement groups a few hundred rows instead of one per event and meter.
 */
/**
 * Events stating a quantity for a key that is no custom meter, refused (unrecorded) with that
 * key: a typo ("serches"), or a meter that reads its units from the usage record (`calls: 5` for a
 * REQUESTS meter), would otherwise be recorded and charged as if the quantity were not there. The
 * key of an archived meter is taken, and not counted, as the archive says: an app may send it a
 * while after the merchant archived the meter. Keys not among the cached active meters are looked
 * up (a meter just made on another instance counts too): a query only in a batch that has one.
 */
async function misnamedQuantities(tx: SqlExecutor, merchantId: string, meters: readonly Meter[], items: readonly Prepared[]): Promise<Map<number, AppError>> {
  const refused = new Map<number, AppError>();
  let sourceOf: Map<string, Meter['source']> | null = null;
  let unknown: [Prepared, string][] | null = null;
  for (const item of items) {
    if (item.stated === NO_QUANTITIES) continue;
    sourceOf ??= new Map(meters.map((meter) => [meter.key, meter.source]));
    for (const key of Object.keys(item.stated)) {
      const source = sourceOf.get(key);
      if (source === 'QUANTITY') continue;
      if (source === undefined) {
        (unknown ??= []).push([item, key]);
        continue;
      }
      refused.set(item.index, invalidField(`quantities.${key}`, `meter "${key}" counts ${source} from the usage record itself: only a QUANTITY meter takes a stated quantity`));
      break;
    }
  }
  if (!unknown) return refused;
  const stored = await tx.query<{ key: string }>(
    `SELECT key FROM meters WHERE merchant_id = $1 AND key = ANY($2::text[]) AND (archived_at IS NOT NULL OR source = 'QUANTITY')`,
    [merchantId, pgArray([...new Set(unknown.map(([, key]) => key))])],
  );
  const known = new Set(stored.map((row) => row.key));
  const custom = meters.filter((meter) => meter.source === 'QUANTITY').map((meter) => meter.key);
  for (const [item, key] of unknown) {
    if (known.has(key) || refused.has(item.index)) continue;
    const choices = custom.length > 0 ? `the QUANTITY meters are ${custom.join(', ')}` : 'there are none: create one with createMeter(source: QUANTITY)';
    refused.set(item.index, invalidField(`quantities.${key}`, `names no meter a quantity can be stated for (${choices})`));
  }
  return refused;
}

function incrementsOf(entries: readonly TotalEntry[]): Map<string, TotalIncrement> {
  const increments = new Map<string, TotalIncrement>();
  for (const { key, item, meter, priceBook, ruleName, aggregation, contribution } of entries) {
    const increment = increments.get(key);
    if (!increment) increments.set(key, { customerId: item.customerId!, currency: item.currency, meter, periodStart: item.periodStart, priceBook, ruleName, aggregation, contribution });
    else if (aggregation !== 'MAX') increment.contribution += contribution;
    else if (contribution > increment.contribution) increment.contribution = contribution;
  }
  return increments;
}

/** A period total holds less than this many units (usage_period_totals.quantity is NUMERIC(38,18)). */
const PERIOD_TOTAL_LIMIT = 10n ** 20n;
const PERIOD_TOTAL_LIMIT_SCALED = PERIOD_TOTAL_LIMIT * QUANTITY_SCALE;

/**
 * The events that would take one of their period totals to PERIOD_TOTAL_LIMIT or beyond, each
 * with its error, walking the batch in order from the totals before it (`totals`, by key; none
 * is zero): an event refused adds nothing to any of its totals, so the events after it are
 * judged without it. Only asked when the batch's totals would not all fit.
 */
function refuseOverflowing(entries: readonly TotalEntry[], totals: Map<string, bigint>): Map<number, AppError> {
  const refused = new Map<number, AppError>();
  for (let start = 0; start < entries.length; ) {
    const item = entries[start]!.item;
    let end = start;
    let over: { entry: TotalEntry; after: bigint } | null = null;
    for (; end < entries.length && entries[end]!.item === item; end++) {
      const entry = entries[end]!;
      const total = totals.get(entry.key) ?? 0n;
      const after = entry.aggregation === 'MAX' ? (entry.contribution > total ? entry.contribution : total) : total + entry.contribution;
      if (after >= PERIOD_TOTAL_LIMIT_SCALED && !over) over = { entry, after };
    }
    if (over) refused.set(item.index, totalTooLarge(over.entry, over.after));
    else {
      for (let i = start; i < end; i++) {
        const entry = entries[i]!;
        const total = totals.get(entry.key) ?? 0n;
        totals.set(entry.key, entry.aggregation === 'MAX' ? (entry.contribution > total ? entry.contribution : total) : total + entry.contribution);
      }
    }
    start = end;
  }
  return refused;
}

function totalTooLarge({ item, meter }: TotalEntry, after: bigint): AppError {
  const field = Object.hasOwn(item.stated, meter) ? `quantities.${meter}` : item.input.response ? 'response' : 'usage';
  const month = item.periodStart.toISOString().slice(0, 7);
  return invalidField(field, `takes the customer's ${month} total of meter "${meter}" to ${formatScaledQuantity(after)}, beyond the most a month's total holds `
    + `(under 100,000,000,000,000,000,000 units): nothing was recorded`);
}

/**
 * Events priced at MAX_EVENT_ATTOS or more (see chargeOnce): the batch is rolled back (the period
 * totals it advanced with their units) and charged again with them refused, so the events after
 * them are priced from totals they are not part of.
 */
class ChargesTooLarge extends Error {
  constructor(readonly refused: ReadonlyMap<number, AppError>) {
    super('usage events were priced beyond what an event may charge');
  }
}

/** The refusal of an event priced beyond what an event may charge, naming the quantity of its largest line (as totalTooLarge does) and that line's rule. */
function chargeTooLarge(item: Prepared, priced: PricedUsage): AppError {
  let largest = priced.lines[0];
  for (const line of priced.lines) if (largest && line.chargeAttos > largest.chargeAttos) largest = line;
  const meter = largest?.meter ?? null;
  const field = meter !== null && Object.hasOwn(item.stated, meter) ? `quantities.${meter}` : item.input.response ? 'response' : 'usage';
  const by = largest ? `price rule "${largest.rule}"${meter !== null ? ` on meter "${meter}"` : ''}` : 'its provider price';
  return new AppError(
    'VALIDATION',
    `${field}: is charged ${formatAttosText(priced.chargeAttos.toString())} ${item.currency} by ${by}, more than an event may charge (under 10^20 ${item.currency}): `
      + 'nothing was recorded. Check the rule\'s price and this quantity, then send the event again with the same idempotency key.',
    { field, charge: formatAttosText(priced.chargeAttos.toString()), currency: item.currency, ...(largest ? { rule: largest.rule, priceRuleId: largest.ruleId } : {}) },
  );
}

/**
 * A period total this batch already advanced turned out to need an event refused (a total another
 * batch created meanwhile, then filled near its limit): the batch is charged again from the start.
 */
class PeriodTotalsMoved extends Error {
  constructor() {
    super('usage period totals moved past their limit while the batch was charged');
  }
}

/**
 * When a wallet's charge for a batch's events happened: when the latest of them did. A batch
 * goes in the order it was sent, so its last event may be a late one of an earlier month.
 */
function latestOccurredAt(events: readonly EventRow[]): Date {
  let latest = events[0]!.occurred_at;
  for (const row of events) if (row.occurred_at > latest) latest = row.occurred_at;
  return latest;
}

/** The most that can still be debited from a wallet already owing `owedAttos` in this batch, down to its overdraft floor. */
function affordableAttos(state: WalletState, owedAttos: bigint, wantedAttos: bigint): bigint {
  const spendableNanos = state.balance - state.held + state.overdraftLimit;
  // planDebit takes floor((carry + attos) / 1e9) nanos: this total takes exactly what is spendable.
  const most = spendableNanos * ATTOS_PER_NANO - state.carry - owedAttos;
  return most <= 0n ? 0n : most < wantedAttos ? most : wantedAttos;
}

const EVENT_COLUMNS = `id, customer_id, idempotency_key, occurred_at, status::text AS status, provider, model, currency, cost_attos::text AS cost_attos,
  charge_attos::text AS charge_attos, margin_attos::text AS margin_attos, estimated, ledger_transaction_id, metadata, created_at`;

/** Metadata keys Tollgate writes on an event; replays and views read some of them back. */
const TOLLGATE_METADATA_KEYS = new Set([
  'requestHash', 'billingId', 'callerIdempotencyKey', 'pricing', 'passThrough', 'costProblem', 'providerReportedCostUsd', 'error', 'pricedChargeAttos', 'shortfallAttos',
  'withheldCreditAttos', 'incomplete',
]);

/** The caller's metadata without the keys Tollgate writes itself: a caller cannot forge them. */
function callerMetadataOf(given: Record<string, unknown>): Record<string, unknown> {
  const kept: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(given)) if (!TOLLGATE_METADATA_KEYS.has(key)) kept[key] = value;
  return kept;
}

/**
 * The answer to an event whose key already has one. Under the caller's key, a different record
 * is a CONFLICT; under a billingId, responses differ by design (each poll has its own caller key
 * and body details), so any of the same customer's is a replay of the first.
 */
function replay(row: EventRow, item: Prepared): UsageResult {
  const byBillingId = item.billingId !== null && row.metadata?.billingId === row.idempotency_key;
  if (byBillingId && row.customer_id !== item.customerId) return chargedElsewhere(item.billingId!, row.id);
  // Events recorded earlier hold older hashes, of the customer as the caller named it (and, before
  // keys were sorted, of the objects as sent), or of the provider as named: worked out only on a mismatch.
  if (!byBillingId && row.metadata?.requestHash && row.metadata.requestHash !== item.hash && !earlierHashes(item).includes(row.metadata.requestHash)) {
    return { ok: false, error: new AppError('CONFLICT', 'This idempotency key was already used for a different usage record', { field: 'idempotencyKey', usageEventId: row.id }) };
  }
  const stored = row.metadata?.error;
  const error = stored ? new AppError(stored.code as 'INSUFFICIENT_FUNDS', stored.message, stored.details ?? {}) : undefined;
  return recordedAnswer(row, true, error);
}

/**
 * The hashes earlier versions gave the item's record (see HashForm): the last hashed decimals and
 * request bodies as written, those before it no response's headers or request body, and some
 * named the customer as the caller did rather than by its id.
 */
function earlierHashes(item: Prepared): string[] {
  const customerId = item.customerId ?? item.customerRef;
  const hash = (customer: string, form: Omit<HashForm, 'exchange' | 'decimalValues' | 'requestBodyValue'>) =>
    recordHash(customer, hashedRecord(item.input, item.currency, item.stated, { ...form, exchange: false, decimalValues: false, requestBodyValue: false }));
  const beforeExchange = { canonical: true, providerIds: true, audioText: true };
  const providersAsNamed = { canonical: true, providerIds: false, audioText: false };
  const hashes = [
    // Before decimals and request bodies were hashed by their value: the form just before this one.
    recordHash(customerId, hashedRecord(item.input, item.currency, item.stated, { ...HASH_FORM, decimalValues: false, requestBodyValue: false })),
    hash(customerId, beforeExchange),
    hash(item.customerRef, beforeExchange),
    hash(item.customerRef, { canonical: false, providerIds: false, audioText: false }),
    hash(customerId, providersAsNamed),
    hash(item.customerRef, providersAsNamed),
  ];
  if (typeof item.input.usage?.audioSeconds !== 'number') return hashes;
  const audioAsSent = { canonical: true, providerIds: true, audioText: false };
  return [...hashes, hash(customerId, audioAsSent), hash(item.customerRef, audioAsSent)];
}

/**
 * A recorded event's answer. Its view (four amounts formatted as decimals) is built when first
 * read: a batch answered with `return=minimal` reads only the events that need attention.
 */
function recordedAnswer(row: EventRow, replayed: boolean, error: AppError | undefined): UsageResult {
  let view: UsageEventView | undefined;
  return {
    ok: true,
    get event() {
      return (view ??= viewOf(row));
    },
    replayed,
    ...(error ? { error } : {}),
    ...(row.metadata?.costProblem && (row.status === 'NOT_BILLABLE' || pricedByMarkup(row.metadata.pricing)) ? { unpriced: true as const } : {}),
  };
}

/** Whether a MARKUP rule priced the event: its line is the one with no meter quantity (see StoredChargeLine). */
function pricedByMarkup(lines: readonly StoredChargeLine[] | undefined): boolean {
  return lines?.some((line) => readChargeLine(line).quantity === null) ?? false;
}

/** NOT_FOUND, naming the field at fault as every other refused event does. */
function unknownCustomer(ref: string): AppError {
  const error = notFound('Customer', ref);
  return new AppError(error.code, error.message, { ...error.details, field: 'customer' });
}

function repeatedKey(): AppError {
  return new AppError('CONFLICT', 'The same idempotency key appears twice in this batch for different usage records', { field: 'idempotencyKey' });
}

function chargedElsewhere(billingId: string, usageEventId: string): UsageResult {
  return { ok: false, error: new AppError('CONFLICT', `${billingId} was already recorded for another customer`, { field: 'response', usageEventId }) };
}
