import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { parseDecimalNanos } from '../../shared/money.ts';

/**
 * Property-based fuzzing of POST /v1/usage/batch: batches that mix valid events (normalized
 * records, raw provider responses seeded from shared/fixtures/providers, meter quantities) with
 * mutated ones. Checked: never a 5xx; one answer per event, in order; every ok event stored
 * exactly once and every failed one nowhere; a resend replays the ok events and moves no balance;
 * the ledger's integrity holds.
 */

const FIXTURES = new URL('../../../../../shared/fixtures/providers/', import.meta.url);
const fixture = (name: string) => readFileSync(new URL(name, FIXTURES), 'utf8');
type Meta = Record<string, { request: { url: string; body?: Record<string, unknown>; form?: Record<string, unknown> }; response: { status: number; headers?: Record<string, string> } }>;
const meta = JSON.parse(fixture('_http_meta.json')) as Meta;
const FIXTURE_NAMES = Object.keys(meta).filter((name) => !name.startsWith('_') && !name.endsWith('.txt'));
const responseOf = (name: string) => {
  const info = meta[name]!;
  return { url: info.request.url, status: info.response.status, headers: info.response.headers ?? {}, body: fixture(name), requestBody: info.request.body ?? info.request.form ?? null };
};

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

// ---------------------------------------------------------------------------------------------
// Generators. Customers are named symbolically ("$c0", "$c0ext", "$c1", "$C1") and resolved per
// run, so a counterexample prints readably.

const RECENT = new Date(Date.now() - 3_600_000).toISOString();
const nested = (depth: number): unknown => (depth === 0 ? 'bottom' : { a: nested(depth - 1) });

/** Objects with an own "__proto__" key, as JSON.parse makes them (and as the server reads them). */
const protoJunk = fc.constantFrom(JSON.parse('{"__proto__": {"polluted": 1}}') as unknown, JSON.parse('{"__proto__": 5, "units": 1}') as unknown, JSON.parse('{"constructor": {"prototype": {"x": 1}}}') as unknown);

const junk = fc.oneof(
  fc.constantFrom(null, true, false, 0, -1, 1.5, 1e308, -0, 'NaN', 'Infinity', '', '\u0000', '\ud800', '[object Object]', [], {}, [1, 'a'], { toString: 1 }),
  fc.string({ maxLength: 8 }),
  fc.integer(),
  fc.double(),
);

const weirdText = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.constantFrom('\u0000', 'a\u0000b', '\ud83d', 'x\udc00', '\u202e\u200b', ' ', '\t\n', 'é'.repeat(300), 'x'.repeat(5_000)),
);

const count = fc.oneof(
  { weight: 5, arbitrary: fc.nat({ max: 5_000 }) },
  { weight: 2, arbitrary: fc.constantFrom(-1, 1.5, 0.1, 2_147_483_647, 2_147_483_648, 3e9, Number.MAX_SAFE_INTEGER + 1, 1e308, -0, 'NaN', '12', 'Infinity', null, true, '1e3') },
  { weight: 1, arbitrary: junk },
);

const provider = fc.oneof(fc.constantFrom('openai', 'anthropic', 'OpenAI', 'custom', 'gemini', '', 'nope'), junk);
const model = fc.oneof(fc.constantFrom('gpt-5.4-mini', 'claude-haiku-4-5', 'm', '', 'nope'), junk, weirdText);

const usageArb = fc.record(
  {
    provider, model, api: fc.oneof(fc.constantFrom('chat.completions', 'messages'), junk),
    inputTokens: count, outputTokens: count, cachedInputTokens: count, cacheWriteTokens: count, reasoningTokens: count,
    characters: count, images: count, requests: count,
    audioSeconds: fc.oneof(fc.constantFrom('12.5', '0', '-1', 'NaN', '1e3', '12.', ''), fc.double(), junk),
    billable: fc.oneof(fc.boolean(), fc.constantFrom('false', 'true', 0, 1, null)),
    // Keys that are no field of a usage record: ignored once (a provider's `input_tokens` recorded
    // the call free), now refused, naming the key (checked in checkBatch).
    surprise: junk,
    input_tokens: count,
  },
  { requiredKeys: [] },
);

const fixtureName = fc.constantFrom(...FIXTURE_NAMES);
type RawResponse = Record<string, unknown>;
const responseMutation: fc.Arbitrary<(response: RawResponse) => RawResponse> = fc.oneof(
  { weight: 4, arbitrary: fc.constant((r: RawResponse) => r) },
  fc.double({ min: 0, max: 1, noNaN: true }).map((f) => Object.assign((r: RawResponse) => (typeof r.body === 'string' ? { ...r, body: r.body.slice(0, Math.floor(r.body.length * f)) } : r), { toString: () => `truncate(${f})` })),
  fc.oneof(fc.constantFrom('200', '500', 0, 99, 600, 200.5, -200, null, 'OK', 1e308), junk).map((status) => Object.assign((r: RawResponse) => ({ ...r, status }), { toString: () => `status(${JSON.stringify(status)})` })),
  fc.oneof(fc.constantFrom('not a url', '', 'https://unknown.example.com/v1/x', 'ftp://api.openai.com/v1/chat/completions', 'https://api.openai.com', 'https://api.openai.com/v1/chat/completions?x=\u0000', 'http://[::1', 'https://api.anthropic.com/v1/messages'), junk).map((url) => Object.assign((r: RawResponse) => ({ ...r, url }), { toString: () => `url(${JSON.stringify(url)})` })),
  fc.oneof(weirdText, junk, fc.constantFrom('{', '{}', 'null', '[]', 'data: {"usage":', 'event: x\ndata: [DONE]\n\n', '<html>502</html>')).map((body) => Object.assign((r: RawResponse) => ({ ...r, body }), { toString: () => `body(${JSON.stringify(body)})` })),
  fc.oneof(junk, protoJunk, fc.constantFrom({ 'x-a': ['1', ['2']] }, { 'content-type': 5 }, nested(80), { 'x-\u0000': 'a' })).map((headers) => Object.assign((r: RawResponse) => ({ ...r, headers }), { toString: () => `headers(${JSON.stringify(headers)?.slice(0, 60)})` })),
  fc.oneof(junk, protoJunk, fc.jsonValue({ maxDepth: 3 }), fc.constantFrom(nested(80), { model: 5 }, { model: 'a\u0000' })).map((requestBody) => Object.assign((r: RawResponse) => ({ ...r, requestBody }), { toString: () => `requestBody(${JSON.stringify(requestBody)?.slice(0, 60)})` })),
  fc.oneof(provider, weirdText).map((p) => Object.assign((r: RawResponse) => ({ ...r, provider: p }), { toString: () => `provider(${JSON.stringify(p)})` })),
  fc.oneof(model).map((m) => Object.assign((r: RawResponse) => ({ ...r, model: m }), { toString: () => `model(${JSON.stringify(m)})` })),
  // A key that is no field of a provider response: refused (see checkBatch).
  fc.tuple(fc.constantFrom('request_body', 'statusCode', 'surprise'), junk).map(([key, value]) => Object.assign((r: RawResponse) => ({ ...r, [key]: value }), { toString: () => `extraKey(${key})` })),
  fc.constant(Object.assign((r: RawResponse) => ({ url: r.url, status: r.status }), { toString: () => 'dropBody' })),
  // An SSE stream cut mid-way: the body up to a random point inside a `data:` line.
  fc.nat().map((n) => Object.assign((r: RawResponse) => {
    if (typeof r.body !== 'string') return r;
    const body = r.body;
    const lines = [...body.matchAll(/data: /g)].map((m) => m.index);
    const cut = lines.length ? lines[n % lines.length]! + 6 + (n % 40) : Math.floor(body.length / 2);
    return { ...r, body: body.slice(0, cut) };
  }, { toString: () => `sseCut(${n})` })),
);
const responseArb = fc.tuple(fixtureName, fc.array(responseMutation, { maxLength: 2 })).map(([name, mutations]) => ({ name, mutations }));

const quantitiesArb = fc.oneof(
  fc.record({ units: fc.oneof(fc.nat({ max: 1_000 }), fc.constantFrom('1.5', '0.000000000000000001', '999999999999999', '1e3', '-1', -1, 1.5, 'NaN')) }),
  fc.dictionary(fc.oneof(fc.constantFrom('units', 'nope', '\u0000', '__proto__'), fc.string({ maxLength: 4 })), count, { maxKeys: 3 }),
  protoJunk,
  fc.constantFrom('7', '25', ['5'], [3, 4], 5, true),
  junk,
);

const metadataArb = fc.oneof(
  fc.constantFrom(undefined, null, { team: 'search' }, 'team=search', [1, 2], 7, nested(70), nested(20), { k: '\u0000' }, { '\u0000': 1 }, { big: 'x'.repeat(20_000) }, { n: 1e308 }, { s: '\ud800' }),
  fc.jsonValue({ maxDepth: 4 }),
  fc.object({ maxDepth: 3 }),
  protoJunk,
);

const timestampArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.constantFrom(RECENT, RECENT.replace('Z', '123456Z'), RECENT.replace('Z', '+14:00'), '2026-02-30T00:00:00Z', '1999-12-31T23:59:59Z', '2999-01-01T00:00:00Z', '0000-01-01T00:00:00Z', '+275760-09-13T00:00:00Z', '2026-06-01T12:00:00', 'NaN', '', 1_700_000_000_000, null, '2026-06-01T12:00:00+25:00') },
);

const customerArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('$c0', '$c0ext', '$c1', '$C1', ' $c0 ') },
  { weight: 1, arbitrary: fc.oneof(fc.constantFrom('nobody', randomUUID(), '', '   ', 'a\u0000', 'x'.repeat(300)), junk) },
);

const keyArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('k0', 'k1', 'k2', 'k3', ' k0 ', 'k4') },
  { weight: 2, arbitrary: fc.string({ minLength: 1, maxLength: 10 }) },
  { weight: 1, arbitrary: fc.oneof(fc.constantFrom('', '  ', 'a\u0000', '\udfff', 'k'.repeat(200), 'k'.repeat(201), undefined), junk, weirdText) },
);

interface EventSpec {
  customer: unknown;
  customerField: 'customer' | 'customerId';
  idempotencyKey: unknown;
  body: { usage: unknown } | { response: { name: string; mutations: ((r: RawResponse) => RawResponse)[] } } | { quantities: unknown } | { usage: unknown; response: { name: string; mutations: ((r: RawResponse) => RawResponse)[] } } | Record<string, never>;
  timestamp: unknown;
  metadata: unknown;
  currency: unknown;
  extra: Record<string, unknown>;
}

/** Every field of an event at its wildest: almost never a valid event as a whole. */
const wildSpecArb: fc.Arbitrary<EventSpec> = fc.record({
  customer: customerArb,
  customerField: fc.constantFrom('customer' as const, 'customer' as const, 'customerId' as const),
  idempotencyKey: keyArb,
  body: fc.oneof(
    { weight: 4, arbitrary: usageArb.map((usage) => ({ usage })) },
    { weight: 4, arbitrary: responseArb.map((response) => ({ response })) },
    { weight: 2, arbitrary: quantitiesArb.map((quantities) => ({ quantities })) },
    { weight: 1, arbitrary: fc.tuple(usageArb, responseArb).map(([usage, response]) => ({ usage, response })) },
    { weight: 1, arbitrary: fc.constant({}) },
  ),
  timestamp: timestampArb,
  metadata: metadataArb,
  currency: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.oneof(fc.constantFrom('USD', 'usd', ' eur ', 'EUR', 'XXX', 'ZZZ', '', 'US\u0000', 'USDD'), junk) }),
  // Besides customerId, no field of an event: the internal ones (normalized, holdId) were never
  // read from a request, and every such key is now refused rather than ignored (see checkBatch).
  extra: fc.dictionary(fc.constantFrom('unknown', 'normalized', 'holdId', 'constructor', 'customerId', 'idempotency_key'), junk, { maxKeys: 2 }),
});

/** A well-formed event (it may still fail for a good reason: a key reused with other content). */
const validUsageArb = fc.record({ provider: fc.constantFrom('openai', 'anthropic', 'custom'), model: fc.constantFrom('gpt-5.4-mini', 'claude-haiku-4-5', 'm'), inputTokens: fc.nat({ max: 100_000 }), outputTokens: fc.nat({ max: 10_000 }) }, { requiredKeys: ['provider'] });
const validSpecArb: fc.Arbitrary<EventSpec> = fc.record({
  customer: fc.constantFrom('$c0', '$c0ext', '$c1', '$C1', ' $c0 '),
  customerField: fc.constantFrom('customer' as const, 'customerId' as const),
  idempotencyKey: fc.oneof(fc.constantFrom('k0', 'k1', 'k2', 'k3', ' k0 ', 'k4'), fc.stringMatching(/^[\w.:-]{1,16}$/)),
  body: fc.oneof(
    validUsageArb.map((usage) => ({ usage })),
    fixtureName.map((name) => ({ response: { name, mutations: [] } })),
    fc.nat({ max: 1_000 }).map((units) => ({ quantities: { units } })),
  ),
  timestamp: fc.constantFrom(undefined, RECENT),
  metadata: fc.oneof(fc.constant(undefined), fc.dictionary(fc.stringMatching(/^[a-z]{1,6}$/), fc.oneof(fc.integer(), fc.boolean(), fc.stringMatching(/^[\w ]{0,10}$/)), { maxKeys: 3 })),
  currency: fc.constantFrom(undefined, 'USD', 'usd', 'EUR'),
  // A well-formed event has no key besides its fields: an unknown one (`{ unknown: 1 }`, once
  // ignored here) is refused now, as GraphQL refuses it.
  extra: fc.constant({}),
});

const FIELDS = ['customer', 'customerField', 'idempotencyKey', 'body', 'timestamp', 'metadata', 'currency', 'extra'] as const;
/** A well-formed event with one to three of its fields replaced by wild ones. */
const mutatedSpecArb: fc.Arbitrary<EventSpec> = fc
  .tuple(validSpecArb, wildSpecArb, fc.subarray([...FIELDS], { minLength: 1, maxLength: 3 }))
  .map(([valid, wild, fields]) => ({ ...valid, ...Object.fromEntries(fields.map((field) => [field, wild[field]])) }));

const eventSpecArb = fc.oneof({ weight: 4, arbitrary: validSpecArb }, { weight: 5, arbitrary: mutatedSpecArb }, { weight: 1, arbitrary: wildSpecArb });

/** An event as sent: a spec, or (rarely) something that is not an event object at all. */
const eventArb = fc.oneof({ weight: 12, arbitrary: eventSpecArb }, { weight: 1, arbitrary: fc.constantFrom('not an event', 5, null, [], [{}]).map((raw) => ({ raw })) });
type EventArb = EventSpec | { raw: unknown };

/** A counterexample as printed: long strings shortened, functions (response mutations) by name. */
function shortly(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) => {
    if (typeof inner === 'string' && inner.length > 80) return `${inner.slice(0, 40)}…(${inner.length} chars)`;
    if (typeof inner === 'function') return String(inner);
    if (inner === undefined) return '<undefined>';
    return inner;
  });
}

function reporter<T>(out: fc.RunDetails<T>): void {
  if (!out.failed) return;
  const error = out.errorInstance instanceof Error ? out.errorInstance.message : String(out.errorInstance);
  throw new Error(`Property failed after ${out.numRuns} run(s), shrunk ${out.numShrinks} time(s) (seed ${out.seed}, path "${out.counterexamplePath}")\ncounterexample: ${shortly(out.counterexample)}\n${error}`);
}

// ---------------------------------------------------------------------------------------------
// Running a batch against a fresh merchant.

interface World {
  merchant: { id: string; secret: string };
  customers: { id: string; externalId: string }[];
}

async function freshWorld(): Promise<World> {
  const merchant = await server.createMerchant(`fuzz-${randomUUID().slice(0, 8)}`);
  await server.services.meters.create(merchant.id, { key: 'units', name: 'Units', unit: 'unit', source: 'QUANTITY' });
  await server.services.priceRules.put(merchant.id, { name: 'per unit', type: 'FLAT', meterKey: 'units', config: { unitPrice: '0.01' }, effectiveFrom: new Date('2024-01-01') });
  await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '20' }, effectiveFrom: new Date('2024-01-01') });
  const customers = [];
  // The second customer holds almost nothing: its events are recorded but not fully charged.
  for (const credit of ['5.00', '0.001']) {
    const customer = await server.services.customers.create(merchant.id, { externalId: `ext-${randomUUID().slice(0, 8)}` });
    await server.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', credit), kind: 'PAID', idempotencyKey: `seed-${customer.id}` });
    customers.push({ id: customer.id, externalId: customer.externalId! });
  }
  return { merchant, customers };
}

function materialize(event: EventArb, world: World): unknown {
  if ('raw' in event) return event.raw;
  const [c0, c1] = world.customers as [World['customers'][0], World['customers'][0]];
  const names: Record<string, string> = { $c0: c0.id, $c0ext: c0.externalId, $c1: c1.id, $C1: c1.id.toUpperCase(), ' $c0 ': ` ${c0.id} ` };
  const customer = typeof event.customer === 'string' && event.customer in names ? names[event.customer] : event.customer;
  const out: Record<string, unknown> = { ...event.extra, [event.customerField]: customer, idempotencyKey: event.idempotencyKey };
  if (event.timestamp !== undefined) out.timestamp = event.timestamp;
  if (event.metadata !== undefined) out.metadata = event.metadata;
  if (event.currency !== undefined) out.currency = event.currency;
  for (const [field, value] of Object.entries(event.body)) {
    if (field === 'response') {
      const { name, mutations } = value as { name: string; mutations: ((r: RawResponse) => RawResponse)[] };
      out.response = mutations.reduce((response, mutate) => mutate(response), responseOf(name) as RawResponse);
    } else out[field] = value;
  }
  return out;
}

interface Answer {
  index: number;
  ok: boolean;
  replayed?: boolean;
  event?: { id: string; idempotencyKey: string; customerId: string };
  error?: { code: unknown; message: unknown };
}

async function postRaw(world: World, body: string) {
  const response = await fetch(`${server.url}/v1/usage/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${world.merchant.secret}` },
    body,
  });
  const text = await response.text();
  return { status: response.status, text };
}

async function postBatch(world: World, events: unknown[]): Promise<Answer[]> {
  const { status, text } = await postRaw(world, JSON.stringify({ events }));
  expect(status, text.slice(0, 500)).toBeLessThan(500);
  expect(status, text.slice(0, 500)).toBe(200);
  const body = JSON.parse(text) as { results: Answer[]; summary: { received: number; ok: number; failed: number } };
  expect(body.results).toHaveLength(events.length);
  body.results.forEach((result, i) => {
    expect(result.index).toBe(i);
    if (!result.ok) {
      expect(typeof result.error?.code, JSON.stringify(result)).toBe('string');
      expect(typeof result.error?.message, JSON.stringify(result)).toBe('string');
    } else expect(result.event?.id).toBeTypeOf('string');
  });
  expect(body.summary.received).toBe(events.length);
  expect(body.summary.ok).toBe(body.results.filter((r) => r.ok).length);
  return body.results;
}

async function storedRows(merchantId: string) {
  return server.services.db.withConnection((c) =>
    c.query<{ id: string; key: string; customerId: string; currency: string; occurredAt: Date; metadata: Record<string, unknown>; counts: Record<string, number> }>(
      `SELECT id, idempotency_key AS key, customer_id AS "customerId", currency, occurred_at AS "occurredAt", metadata,
              json_build_object('inputTokens', input_tokens, 'outputTokens', output_tokens, 'cachedInputTokens', cached_input_tokens, 'cacheWriteTokens', cache_write_tokens,
                                'reasoningTokens', reasoning_tokens, 'characters', characters, 'images', images, 'requests', requests) AS counts
         FROM usage_events WHERE merchant_id = $1`,
      [merchantId],
    ),
  );
}

async function balances(world: World) {
  const all = await Promise.all(world.customers.map((c) => server.services.ledgerQueries.wallets(world.merchant.id, c.id)));
  return all.flat().map((w) => `${w.customerId}/${w.currency}=${w.balance}/${w.held}`).sort();
}

/** The metadata keys Tollgate writes itself (usage.service.ts TOLLGATE_METADATA_KEYS). */
const TOLLGATE_METADATA_KEYS = ['requestHash', 'billingId', 'callerIdempotencyKey', 'pricing', 'passThrough', 'costProblem', 'providerReportedCostUsd', 'error', 'pricedChargeAttos', 'shortfallAttos', 'withheldCreditAttos', 'incomplete'];

const isPlainObject = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object' && !Array.isArray(value);

/** The fields of an event, a usage record and a provider response (GraphQL's input types, with customerId and billable). */
const EVENT_FIELDS = ['customer', 'customerId', 'idempotencyKey', 'timestamp', 'currency', 'usage', 'response', 'quantities', 'metadata'];
const USAGE_FIELDS = ['provider', 'model', 'api', 'inputTokens', 'cachedInputTokens', 'cacheWriteTokens', 'outputTokens', 'reasoningTokens', 'audioSeconds', 'characters', 'images', 'requests', 'billable'];
const RESPONSE_FIELDS = ['url', 'status', 'headers', 'body', 'requestBody', 'provider', 'model'];

/**
 * The paths of an event's keys that are no field of it, as sent (after JSON): those at its top
 * level, else those of its usage record; and whether its response has any.
 */
function unknownKeys(event: unknown): { named: string[]; inResponse: boolean } {
  if (!isPlainObject(event)) return { named: [], inResponse: false };
  const sent = JSON.parse(JSON.stringify(event)) as Record<string, unknown>;
  const unknownIn = (value: unknown, fields: string[]) => (isPlainObject(value) ? Object.keys(value).filter((key) => !fields.includes(key)) : []);
  const top = unknownIn(sent, EVENT_FIELDS);
  const named = top.length > 0 ? top : unknownIn(sent.usage, USAGE_FIELDS).map((key) => `usage.${key}`);
  return { named, inResponse: unknownIn(sent.response, RESPONSE_FIELDS).length > 0 };
}

/** What the runs met, so a generator that drifts into sending only junk is noticed. */
const seen = new Map<string, number>();
const tally = (what: string) => seen.set(what, (seen.get(what) ?? 0) + 1);

/** Properties 1–3 for one batch. */
async function checkBatch(specs: EventArb[]): Promise<void> {
  const world = await freshWorld();
  const events = specs.map((spec) => materialize(spec, world));
  const first = await postBatch(world, events);
  for (const result of first) tally(result.ok ? `ok ${result.replayed ? 'replayed' : 'new'}${(result as { chargeError?: unknown }).chargeError ? ' chargeError' : ''}` : `error ${String(result.error?.code)}`);

  // 2. Every ok event stored exactly once, under its (trimmed) key; no failed event stored anywhere.
  const rows = await storedRows(world.merchant.id);
  const byId = new Map(rows.map((row) => [row.id, row]));
  const okIds = new Set(first.filter((r) => r.ok).map((r) => r.event!.id));
  expect(new Set(rows.map((r) => r.id))).toEqual(okIds);
  const keys = rows.map((r) => r.key);
  expect(new Set(keys).size).toBe(keys.length);
  const okKeys = new Set<string>();
  first.forEach((result, i) => {
    if (!result.ok) return;
    const row = byId.get(result.event!.id)!;
    expect(row.key).toBe(result.event!.idempotencyKey);
    const sent = (events[i] as { idempotencyKey?: unknown }).idempotencyKey;
    expect(typeof sent).toBe('string');
    expect(row.key).toBe((sent as string).trim());
    okKeys.add(row.key);
    // What was stored is what was sent: the customer named, the currency, the time, the counts, the caller's metadata.
    const event = events[i] as Record<string, unknown>;
    const [c0, c1] = world.customers;
    const named = String(event.customer ?? event.customerId).trim();
    const customer = [c0!.id, c0!.externalId].includes(named) ? c0!.id : named.toLowerCase() === c1!.id ? c1!.id : named;
    expect(row.customerId, `event ${i}: customer`).toBe(customer);
    expect(result.event!.customerId).toBe(customer);
    expect(row.currency, `event ${i}: currency`).toBe(typeof event.currency === 'string' ? event.currency.trim().toUpperCase() : 'USD');
    if (typeof event.timestamp === 'string') expect(new Date(row.occurredAt).getTime(), `event ${i}: timestamp`).toBe(Date.parse(event.timestamp));
    // GraphQL types quantities as a JSON object; anything else (a string, a list, a number) is not meter quantities.
    if (event.quantities != null) expect(isPlainObject(event.quantities), `event ${i}: quantities ${shortly(event.quantities)} accepted`).toBe(true);
    const usage = event.usage as Record<string, unknown> | undefined;
    if (usage && !event.response) {
      for (const [field, stored] of Object.entries(row.counts)) {
        if (typeof usage[field] === 'number') expect(stored, `event ${i}: usage.${field}`).toBe(field === 'requests' && usage[field] === 0 ? 1 : usage[field]);
      }
    }
    if (event.metadata && typeof event.metadata === 'object') {
      const sent = JSON.parse(JSON.stringify(event.metadata)) as Record<string, unknown>;
      for (const key of TOLLGATE_METADATA_KEYS) delete sent[key];
      const kept = Object.fromEntries(Object.entries(row.metadata).filter(([key]) => !TOLLGATE_METADATA_KEYS.includes(key)));
      expect(kept, `event ${i}: metadata`).toEqual(sent);
    }
  });
  // 2a. An event with a key that is no field of it is refused, naming that key (one of them) when it is
  // the event's or its usage record's: never recorded as if the key were absent.
  first.forEach((result, i) => {
    const { named, inResponse } = unknownKeys(events[i]);
    if (named.length === 0 && !inResponse) return;
    tally('refused unknown key');
    expect(result.ok, `event ${i} with unknown keys ${shortly(named)} was recorded`).toBe(false);
    if (named.length > 0) {
      expect(result.error?.code, `event ${i}`).toBe('VALIDATION');
      expect(named.map((key) => `events.${i}.${key}`), `event ${i}`).toContain((result.error as { field?: unknown }).field);
    }
  });
  first.forEach((result, i) => {
    if (result.ok) return;
    const sent = (events[i] as { idempotencyKey?: unknown } | null)?.idempotencyKey;
    // A failed event's key may be held only by an ok event of the same batch that used it first.
    if (typeof sent === 'string') expect(keys.includes(sent.trim()) && !okKeys.has(sent.trim()), `event ${i} (${result.error?.code}) left a row`).toBe(false);
  });

  // 2b. The same batch again: the ok events are replays of the same events; nothing moves.
  const before = await balances(world);
  const second = await postBatch(world, events);
  first.forEach((result, i) => {
    const again = second[i]!;
    if (result.ok) {
      expect(again, `event ${i}`).toMatchObject({ ok: true, replayed: true, event: { id: result.event!.id } });
    } else if (result.error?.code !== 'INTERNAL') {
      expect(again.ok, `event ${i} failed with ${String(result.error?.code)}, then ${JSON.stringify(again).slice(0, 300)}`).toBe(false);
    }
  });
  expect(await balances(world)).toEqual(before);
  expect((await storedRows(world.merchant.id)).length).toBe(rows.length);

  // 3. The ledger's invariants.
  expect((await server.services.ledgerQueries.integrity(world.merchant.id)).violations).toEqual([]);
}

/** A batch, with some events sent twice in it (the same event again, at another place). */
const batchArb = fc
  .tuple(fc.array(eventArb, { minLength: 1, maxLength: Number(process.env.FUZZ_MAX_EVENTS ?? 8), size: process.env.FUZZ_MAX_EVENTS ? 'max' : undefined }), fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 3 }))
  .map(([events, copies]) => {
    const batch = [...events];
    for (const [from, to] of copies) batch.splice(to % (batch.length + 1), 0, events[from % events.length]!);
    return batch;
  });

/** Balances by customer's place in the world (not its id), to compare two worlds. */
async function balancesByPlace(world: World) {
  const all = await Promise.all(world.customers.map((c) => server.services.ledgerQueries.wallets(world.merchant.id, c.id)));
  return all.flatMap((wallets, place) => wallets.map((w) => `c${place}/${w.currency}=${w.balance}/${w.held}`)).sort();
}

/** The same batch sent twice at once answers as if sent one after the other, and charges as once. */
async function checkConcurrent(specs: EventArb[]): Promise<void> {
  const [twice, once] = [await freshWorld(), await freshWorld()];
  const events = specs.map((spec) => materialize(spec, twice));
  const [a, b] = await Promise.all([postBatch(twice, events), postBatch(twice, events)]);
  const single = await postBatch(once, specs.map((spec) => materialize(spec, once)));
  const rows = await storedRows(twice.merchant.id);
  const okIds = new Set([...a, ...b].filter((r) => r.ok).map((r) => r.event!.id));
  expect(new Set(rows.map((r) => r.id))).toEqual(okIds);
  a.forEach((first, i) => {
    const second = b[i]!;
    if (first.error?.code === 'INTERNAL' || second.error?.code === 'INTERNAL') return;
    expect(second.ok, `event ${i}: ${shortly(first).slice(0, 200)} vs ${shortly(second).slice(0, 200)}`).toBe(first.ok);
    expect(single[i]!.ok, `event ${i}: sent once ${shortly(single[i]).slice(0, 200)}`).toBe(first.ok);
    if (first.ok) {
      expect(second.event!.id).toBe(first.event!.id);
      // Exactly one of the two answers records the event; both replay a copy of an earlier event in the batch.
      const expected = single[i]!.replayed ? first.replayed && second.replayed : first.replayed !== second.replayed;
      expect(expected, `event ${i}: replayed ${first.replayed}/${second.replayed}, sent once ${single[i]!.replayed}`).toBe(true);
    }
  });
  expect(await balancesByPlace(twice)).toEqual(await balancesByPlace(once));
  expect((await server.services.ledgerQueries.integrity(twice.merchant.id)).violations).toEqual([]);
}

/** FUZZ_RUNS and FUZZ_MAX_EVENTS (per batch) turn the search up for a longer hunt. */
const NUM_RUNS = Number(process.env.FUZZ_RUNS ?? 100);

describe('POST /v1/usage/batch, fuzzed', () => {
  it('answers every mixed batch per event, stores ok events once and failed ones never, replays, and keeps the ledger whole', async () => {
    await fc.assert(
      fc.asyncProperty(batchArb, async (specs) => {
        await checkBatch(specs);
      }),
      { numRuns: NUM_RUNS, reporter },
    );
    if (process.env.FUZZ_STATS) console.log(Object.fromEntries([...seen].sort()));
    // The mix reached both sides: events kept (some only partly paid for) and events refused.
    expect(seen.get('ok new') ?? 0).toBeGreaterThan(NUM_RUNS / 2);
    expect(seen.get('error VALIDATION') ?? 0).toBeGreaterThan(NUM_RUNS / 2);
    expect(seen.get('refused unknown key') ?? 0).toBeGreaterThan(NUM_RUNS / 4);
  }, 30_000 + NUM_RUNS * 1_000);

  it('answers the same batch sent twice at once as if sent one after the other, charging it once', async () => {
    await fc.assert(
      fc.asyncProperty(batchArb, async (specs) => {
        await checkConcurrent(specs);
      }),
      { numRuns: Math.ceil(NUM_RUNS / 4), reporter },
    );
  }, 30_000 + NUM_RUNS * 1_000);

  // Found by the fuzz above (shrunk): a `quantities` that is not an object was read with
  // Object.entries, so the text "25" stated meter "0" = "2" and meter "1" = "5", and ["5"] stated
  // meter "0" = "5"; a number or boolean was silently ignored.
  it('refuses a quantities that is not a JSON object (text, list, number), as GraphQL does', async () => {
    const world = await freshWorld();
    const customer = world.customers[0]!.id;
    const events = [
      { customer, idempotencyKey: 'q-text', quantities: '25' },
      { customer, idempotencyKey: 'q-list', quantities: ['5'] },
      { customer, idempotencyKey: 'q-number', quantities: 5, usage: { provider: 'custom', model: 'm', inputTokens: 1 } },
    ];
    const results = await postBatch(world, events);
    expect(results.map((r) => (r.ok ? 'recorded' : `${String(r.error?.code)}`))).toEqual(['VALIDATION', 'VALIDATION', 'VALIDATION']);
    expect(await storedRows(world.merchant.id)).toEqual([]);
  });

  // Found while shrinking the fuzz's junk fields: a falsy `response` ("" or 0) or `usage` (false
  // or "") was taken as absent, and the event recorded from its other fields.
  it('refuses a falsy non-object response or usage ("", false), as a falsy metadata is', async () => {
    const world = await freshWorld();
    const customer = world.customers[0]!.id;
    const events = [
      { customer, idempotencyKey: 'r-empty', quantities: { units: 1 }, response: '' },
      { customer, idempotencyKey: 'u-false', quantities: { units: 1 }, usage: false },
    ];
    const results = await postBatch(world, events);
    expect(results.map((r) => (r.ok ? 'recorded' : `${String(r.error?.code)}`))).toEqual(['VALIDATION', 'VALIDATION']);
    expect(await storedRows(world.merchant.id)).toEqual([]);
  });

  it('answers malformed top-level bodies with a 4xx, never a 5xx', async () => {
    const world = await freshWorld();
    const bodyArb = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }).map((value) => JSON.stringify(value)),
      fc.oneof(junk, fc.constant([]), fc.constant(nested(200))).map((events) => JSON.stringify({ events })),
      fc.constantFrom('', '{', '{"events": [', 'null', '"events"', '{"events": null}', JSON.stringify({ events: Array.from({ length: 1001 }, () => ({})) }), `{"events": ${'['.repeat(5000)}`, '\u0000'),
      fc.string({ unit: 'binary', maxLength: 40 }),
    );
    await fc.assert(
      fc.asyncProperty(bodyArb, async (body) => {
        const { status, text } = await postRaw(world, body);
        expect(status, text.slice(0, 300)).toBeLessThan(500);
        if (status !== 200) expect(status).toBeGreaterThanOrEqual(400);
      }),
      { numRuns: 60, reporter },
    );
  }, 60_000);
});
