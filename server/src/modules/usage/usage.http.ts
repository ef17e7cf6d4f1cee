import { Router, type NextFunction, type Request, type Response } from 'express';
import { sendError } from '../../http/errors.ts';
import { jsonBody } from '../../http/json-body.ts';
import { secretKeyCaller } from '../../http/secret-key.ts';
import type { Services } from '../../services.ts';
import { AppError, httpStatusFor, invalidField } from '../../shared/errors.ts';
import { isoTimes, parseIsoTime } from '../../shared/times.ts';
import { requireObjectIfGiven, requireShallowJson } from '../../shared/validation.ts';
import { responseHeaders } from './normalize/index.ts';
import { requireHttpStatus, type UsageRecordInput, type UsageResult } from './usage.service.ts';

/**
 * HTTP ingestion for apps that would rather POST than speak GraphQL:
 *   POST /v1/usage        one record  → 200 { event, replayed } | 4xx { error }
 *   POST /v1/usage/batch  { events: [...] } (≤ 1,000) → 200 { results: [{ index, ok, event | error }], summary }
 * Authenticated with a secret key. Bad events are answered one by one; good ones are kept.
 * A batch sent with `Prefer: return=minimal` (RFC 7240) is answered with only the events that
 * need the caller's attention (failed, recorded but not fully charged, or left unpriced because
 * their provider cost is unknown: recorded free, or charged only a markup's fee; see the event's costProblem) and the summary: a
 * high-volume sender already knows its events by their idempotency keys, and the full answer
 * (about 400 bytes an event) costs both sides more to write and read than the batch they sent.
 */
/**
 * A text field of the record, or undefined when absent or null. Anything else is refused, as
 * GraphQL's String refuses it: String() would make "[object Object]" of an object (one key for
 * every such event) or throw a TypeError (answered 500) for one whose toString is not a function.
 */
function textOf(record: Record<string, unknown>, key: string, field: string, message: string): string | undefined {
  const value = record[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw invalidField(field, message);
  return value;
}

/**
 * The fields an event, its normalized usage record and its provider response may have: those
 * GraphQL's RecordUsageInput, UsageNumbersInput and ProviderResponseInput declare (with
 * `customerId` for `customer`, read over HTTP only). Any other key is refused, as
 * GraphQL refuses it and as Stripe answers "Received unknown parameter": read as absent, a
 * provider's `input_tokens` recorded the call free (its cost unknown, so NOT_BILLABLE), a `meta`
 * dropped the caller's data, and nothing told the caller why.
 */
const EVENT_FIELDS: ReadonlySet<string> = new Set(['customer', 'customerId', 'idempotencyKey', 'timestamp', 'currency', 'usage', 'response', 'quantities', 'metadata']);
const USAGE_FIELDS: ReadonlySet<string> = new Set([
  'provider', 'model', 'api', 'inputTokens', 'cachedInputTokens', 'cacheWriteTokens', 'outputTokens', 'reasoningTokens', 'audioSeconds', 'characters', 'images', 'requests', 'billable',
]);
const RESPONSE_FIELDS: ReadonlySet<string> = new Set(['url', 'status', 'headers', 'body', 'requestBody', 'provider', 'model']);
/** The fields of a batch body: a key beside `events` (a misspelt one, an option the route does not have) is refused as an event's is. */
const BATCH_FIELDS: ReadonlySet<string> = new Set(['events']);
/** Names a provider writes its usage under, for the field of ours that means the same (OpenAI's prompt tokens include cached ones, as inputTokens does). */
const FIELD_ALIASES: ReadonlyMap<string, string> = new Map([
  ['prompt_tokens', 'inputTokens'], ['completion_tokens', 'outputTokens'], ['cached_tokens', 'cachedInputTokens'],
  ['cache_read_input_tokens', 'cachedInputTokens'], ['cache_creation_input_tokens', 'cacheWriteTokens'], ['meta', 'metadata'],
]);

/**
 * Refuses the first key of `value` that is not one of `known`. Runs for every event, so the
 * happy path is a for-in over the object's keys and a Set lookup each: no array, no regex.
 * (JSON.parse makes plain objects whose only enumerable keys are their own, "__proto__" included.)
 */
function refuseUnknownKeys(value: object, known: ReadonlySet<string>, at: string, what: string): void {
  for (const key in value) if (!known.has(key)) throw unknownField(key, known, at, what);
}

/** The error for an unknown key (only ever built on the way out): its field, and ours it most likely meant. */
function unknownField(key: string, known: ReadonlySet<string>, at: string, what: string) {
  const name = key.length > 64 ? `${key.slice(0, 64)}…` : key;
  // input_tokens, InputTokens, input-tokens: inputTokens in another case or with separators.
  const bare = key.replace(/[_\-\s]/g, '').toLowerCase();
  const meant = FIELD_ALIASES.get(key.toLowerCase()) ?? [...known].find((field) => field.toLowerCase() === bare);
  const hint = meant && known.has(meant) ? `did you mean ${meant}?` : `its fields are ${[...known].join(', ')}`;
  return invalidField(`${at}${name}`, `is not a field of ${what}, so nothing was recorded: ${hint}`);
}

function parseRecord(raw: unknown, index?: number): UsageRecordInput {
  const at = index === undefined ? '' : `events.${index}.`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw invalidField(`${at}event`, 'must be a JSON object');
  const record = raw as Record<string, unknown>;
  refuseUnknownKeys(record, EVENT_FIELDS, at, 'a usage event');
  // A list or other non-object is refused as such when the record is read (UsageService.prepare).
  if (record.usage !== null && typeof record.usage === 'object' && !Array.isArray(record.usage)) refuseUnknownKeys(record.usage, USAGE_FIELDS, `${at}usage.`, 'a usage record');
  let timestamp: Date | null = null;
  if (record.timestamp !== undefined && record.timestamp !== null) {
    // Strict, as the GraphQL DateTime scalar: `new Date` would roll February 30th over and read a
    // time without a zone in the server's own zone.
    timestamp = typeof record.timestamp === 'string' ? parseIsoTime(record.timestamp) : null;
    if (!timestamp) throw invalidField(`${at}timestamp`, 'must be an ISO-8601 time with its zone, e.g. 2026-06-01T12:00:00Z');
  }
  // Checked here too (as in UsageService.prepare) so that a batch names the event's place.
  for (const field of ['response', 'quantities'] as const) requireObjectIfGiven(`${at}${field}`, record[field]);
  const response = record.response as UsageRecordInput['response'] | undefined;
  if (response) refuseUnknownKeys(response, RESPONSE_FIELDS, `${at}response.`, 'a provider response');
  if (response && (typeof response !== 'object' || typeof response.url !== 'string' || typeof response.body !== 'string')) {
    throw invalidField(`${at}response`, 'needs url and body (the provider response text)');
  }
  // Checked again with the event (for GraphQL too); here, so that a batch names the event's place.
  if (response && response.status != null) requireHttpStatus(`${at}response.status`, response.status);
  if (response && response.provider != null && typeof response.provider !== 'string') {
    throw invalidField(`${at}response.provider`, 'must be text: a provider id such as "openai"');
  }
  if (response && response.model != null && typeof response.model !== 'string') {
    throw invalidField(`${at}response.model`, 'must be text: the model the call was made for');
  }
  // Checked before responseHeaders reads it (lists are joined recursively); requestBody is checked with the event.
  if (response) requireShallowJson(`${at}response.headers`, response.headers);
  const customerField = record.customer != null ? 'customer' : 'customerId';
  // Both given, `customer` won silently: the event meant for customerId's customer was charged to another.
  if (record.customer != null && record.customerId != null && record.customerId !== record.customer) {
    throw invalidField(`${at}customerId`, 'names another customer than customer: give one of them');
  }
  return {
    customer: textOf(record, customerField, `${at}${customerField}`, 'must be text: a customer id or your externalId') ?? '',
    idempotencyKey: textOf(record, 'idempotencyKey', `${at}idempotencyKey`, 'must be text') ?? '',
    timestamp,
    // A currency sent as something else was read as none, and the event charged in USD.
    currency: textOf(record, 'currency', `${at}currency`, 'must be text: a currency code such as "USD"') ?? null,
    usage: (record.usage as UsageRecordInput['usage']) ?? null,
    // A provider sent as null (serializers write unset fields so) is none, as GraphQL reads it.
    response: response ? { ...response, status: response.status ?? 200, headers: responseHeaders(response.headers, `${at}response.headers`), provider: response.provider ?? undefined, model: response.model ?? undefined } : null,
    quantities: (record.quantities as UsageRecordInput['quantities']) ?? null,
    metadata: (record.metadata as UsageRecordInput['metadata']) ?? null,
  };
}

/** Whether the event names its customer as `customerId` (the HTTP-only name) rather than `customer`. */
function namesCustomerId(raw: unknown): boolean {
  return raw !== null && typeof raw === 'object' && (raw as Record<string, unknown>).customer == null && (raw as Record<string, unknown>).customerId != null;
}

/**
 * The service's answer about the event's customer (unknown, blank), naming the field as the event
 * sent it: an event that sent customerId was told about `customer`, a field it does not have.
 */
function asSent(result: UsageResult, raw: unknown): UsageResult {
  if (result.ok || result.error.details.field !== 'customer' || !namesCustomerId(raw)) return result;
  const { error } = result;
  return { ok: false, error: new AppError(error.code, error.message.replace(/^customer:/, 'customerId:'), { ...error.details, field: 'customerId' }) };
}

/** parseRecord, with whatever else reading the event throws answered as its own VALIDATION error (not a 500, nor the batch's). */
function readRecord(raw: unknown, index?: number): UsageRecordInput {
  try {
    return parseRecord(raw, index);
  } catch (error) {
    if (error instanceof AppError) throw error;
    throw invalidField(index === undefined ? 'event' : `events.${index}`, error instanceof Error ? error.message : 'could not be read');
  }
}

/**
 * One result as it is answered; `index` is the event's place in a batch (absent for a single
 * record). The event's time goes as ISO text rather than a Date: JSON.stringify leaves its fast
 * path for every object with a toJSON method it meets (a 1,000-event answer took twice as long).
 */
function present(result: UsageResult, index?: number, iso: (time: Date) => string = isoTimes()) {
  if (!result.ok) return { index, ok: false, error: { ...result.error.details, code: result.error.code, message: result.error.message } };
  const e = result.event;
  // The charge lines are left to GraphQL (UsageEvent.charges): the answer stays as small as before.
  const event = {
    id: e.id, customerId: e.customerId, idempotencyKey: e.idempotencyKey, occurredAt: iso(e.occurredAt), status: e.status, provider: e.provider, model: e.model,
    currency: e.currency, cost: e.cost, charge: e.charge, margin: e.margin, shortfall: e.shortfall, shortfallSettled: e.shortfallSettled, estimated: e.estimated, incomplete: e.incomplete, ledgerTransactionId: e.ledgerTransactionId,
    costProblem: e.costProblem,
  };
  if (!result.error) return { index, ok: true, replayed: result.replayed, event };
  return { index, ok: true, replayed: result.replayed, event, chargeError: { ...result.error.details, code: result.error.code, message: result.error.message } };
}

/** Whether the request asks for `return=minimal` among its Prefer header's preferences (RFC 7240). */
export function prefersMinimal(prefer: string | undefined): boolean {
  if (!prefer) return false;
  return prefer.split(',').some((preference) => preference.split(';')[0]!.trim().toLowerCase().replace(/\s*=\s*/, '=').replace(/"/g, '') === 'return=minimal');
}

export function usageRoutes(services: Services): Router {
  const router = Router();
  const authenticate = (req: Request) => secretKeyCaller(services.viewers, req.headers.authorization, 'Usage is reported with a secret key');
  const handle = (work: (req: Request, res: Response) => Promise<void>) => async (req: Request, res: Response) => {
    try {
      await work(req, res);
    } catch (error) {
      if (error instanceof AppError) return sendError(req, res, httpStatusFor(error.code), error.code, error.message, error.details);
      throw error;
    }
  };
  // The caller is checked before its body is read: a batch may be megabytes, and nobody without
  // a key gets the server to buffer and parse that much.
  type Caller = Awaited<ReturnType<typeof authenticate>>;
  const callerFirst = async (req: Request, res: Response, next: NextFunction) => {
    try {
      res.locals.caller = await authenticate(req);
    } catch (error) {
      if (error instanceof AppError) return sendError(req, res, httpStatusFor(error.code), error.code, error.message, error.details);
      return next(error);
    }
    next();
  };
  const callerOf = (res: Response) => res.locals.caller as Caller;
  // A body the JSON parser left unread, sent as another type or with none (fetch's text/plain for
  // a string, Python's requests with data=): read as no body, it was refused as "must be a JSON
  // object" (the batch: "must be an array") though it may well be one.
  const jsonOnly = (req: Request, res: Response, next: NextFunction) => {
    const sent = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    if (req.body !== undefined || !sent || req.is('application/json')) return next();
    const contentType = req.get('content-type') ?? null;
    sendError(req, res, 415, 'VALIDATION', `Send the body as JSON with Content-Type: application/json (it came ${contentType ? `as ${contentType}` : 'with no Content-Type'})`, {
      reason: 'UNSUPPORTED_MEDIA_TYPE', contentType,
    });
  };

  router.post(
    '/v1/usage',
    callerFirst,
    ...jsonBody({ limit: services.config.maxBodyBytes }),
    jsonOnly,
    handle(async (req, res) => {
      const { merchantId, actor } = callerOf(res);
      const result = asSent(await services.usage.recordOne(merchantId, actor, readRecord(req.body)), req.body);
      const body = present(result);
      // Through sendError, as every other error of the route: with the requestId the logs carry.
      if (!result.ok) return sendError(req, res, httpStatusFor(result.error.code), result.error.code, result.error.message, result.error.details);
      // Recorded but not chargeable: the app should stop this customer.
      res.status(result.error ? httpStatusFor(result.error.code) : 200).json(body);
    }),
  );

  router.post(
    '/v1/usage/batch',
    callerFirst,
    ...jsonBody({ limit: services.config.maxBatchBodyBytes }),
    jsonOnly,
    handle(async (req, res) => {
      const { merchantId, actor } = callerOf(res);
      const body: unknown = req.body;
      if (body !== null && typeof body === 'object' && !Array.isArray(body)) refuseUnknownKeys(body, BATCH_FIELDS, '', 'a usage batch');
      const events = (body as { events?: unknown })?.events;
      if (!Array.isArray(events)) throw invalidField('events', 'must be an array of usage records');
      if (events.length === 0) throw invalidField('events', 'must not be empty');
      if (events.length > 1000) throw invalidField('events', 'at most 1,000 events per batch');
      const parsed: (UsageRecordInput | AppError)[] = events.map((raw, index) => {
        try {
          return readRecord(raw, index);
        } catch (error) {
          return error as AppError;
        }
      });
      const valid = parsed.filter((item): item is UsageRecordInput => !(item instanceof AppError));
      const recorded = await services.usage.record(merchantId, actor, valid);
      const minimal = prefersMinimal(req.get('prefer'));
      let next = 0;
      let ok = 0;
      let replayed = 0;
      const iso = isoTimes();
      const results: ReturnType<typeof present>[] = [];
      parsed.forEach((item, index) => {
        const result: UsageResult = item instanceof AppError ? { ok: false, error: item } : asSent(recorded[next++]!, events[index]);
        if (result.ok) {
          ok++;
          if (result.replayed) replayed++;
          // Unpriced events need attention too: their cost is unknown, so it went uncharged.
          if (minimal && !result.error && !result.unpriced) return;
        }
        results.push(present(result, index, iso));
      });
      if (minimal) res.set('preference-applied', 'return=minimal');
      res.json({ results, summary: { received: events.length, ok, failed: events.length - ok, replayed } });
    }),
  );
  return router;
}
