import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpUsageSetup } from '../../../test/priced-usage.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { replayable } from '../gateway/gateway.settlement.ts';
import { requestHash } from '../ledger/ledger.service.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { normalizeResponse } from './normalize/index.ts';
import type { UsageRecordInput } from './usage.service.ts';
import type { ProviderResponse } from './usage.types.ts';

/**
 * What an idempotency key stands for: the whole record a caller sent under it (a response's
 * headers and request body included, where a provider reports the usage), only the events
 * actually recorded under it, and a wallet's batch charge dated by its latest usage.
 */
const now = new Date('2026-06-15T12:00:00Z');
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

/** A merchant pricing characters (1 cent each) and the QUANTITY meters `searches` (1 cent) and `units` (10^11 USD: 10^9 of them are more than an event may charge). */
async function setup() {
  const context = await httpUsageSetup(server, '100.00');
  const { merchant } = context;
  await server.services.meters.create(merchant.id, { key: 'chars', name: 'Characters', unit: 'character', source: 'CHARACTERS' });
  await server.services.priceRules.put(merchant.id, { name: 'chars', type: 'FLAT', meterKey: 'chars', config: { unitPrice: '0.01' }, effectiveFrom: new Date('2026-01-01') });
  for (const [key, unitPrice] of [['searches', '0.01'], ['units', '100000000000']] as const) {
    await server.services.meters.create(merchant.id, { key, name: key, unit: 'unit', source: 'QUANTITY' });
    await server.services.priceRules.put(merchant.id, { name: key, type: 'FLAT', meterKey: key, config: { unitPrice }, effectiveFrom: new Date('2026-01-01') });
  }
  const events = async (key: string) => server.services.prisma.usageEvent.findMany({ where: { merchantId: merchant.id, idempotencyKey: key } });
  return { ...context, events };
}

/** An ElevenLabs text-to-speech call: its body is audio (here none), its usage a header or the request's text. */
const tts = (fields: { headers?: Record<string, unknown>; requestBody?: unknown }) => ({ url: 'https://api.elevenlabs.io/v1/text-to-speech/voice-1', status: 200, body: '', ...fields });

describe('a raw provider response whose usage is in its headers or its request body, sent again under its key', () => {
  it('with another billing header is a CONFLICT, not a replay of the first (which charged 120 characters, not 4,000)', async () => {
    const { customer, post, balance, events } = await setup();
    const first = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'tts-1', response: tts({ headers: { 'character-cost': '120' } }) });
    expect(first).toMatchObject({ status: 200, body: { replayed: false, event: { status: 'CHARGED', charge: '1.20' } } });
    const after = await balance();
    const other = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'tts-1', response: tts({ headers: { 'character-cost': '4000' } }) });
    expect(other).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT', field: 'idempotencyKey' } } });
    expect(await balance()).toBe(after);
    expect(await events('tts-1')).toHaveLength(1);
  });

  it('with another request body (object or text) is a CONFLICT', async () => {
    const { customer, post, balance } = await setup();
    const first = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'tts-2', response: tts({ requestBody: { text: 'hello', model_id: 'eleven_v3' } }) });
    expect(first).toMatchObject({ status: 200, body: { replayed: false, event: { charge: '0.05' } } });
    const asText = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'tts-3', response: tts({ requestBody: '{"text":"hello","model_id":"eleven_v3"}' }) });
    expect(asText).toMatchObject({ status: 200, body: { replayed: false, event: { charge: '0.05' } } });
    const after = await balance();
    const longer = { text: 'hello, and a much longer text that costs more', model_id: 'eleven_v3' };
    expect(await post('/v1/usage', { customer: customer.id, idempotencyKey: 'tts-2', response: tts({ requestBody: longer }) })).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT' } } });
    expect(await post('/v1/usage', { customer: customer.id, idempotencyKey: 'tts-3', response: tts({ requestBody: JSON.stringify(longer) }) })).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT' } } });
    // The same request with its keys in another order is the same record.
    expect(await post('/v1/usage', { customer: customer.id, idempotencyKey: 'tts-2', response: tts({ requestBody: { model_id: 'eleven_v3', text: 'hello' } }) }))
      .toMatchObject({ status: 200, body: { replayed: true, event: { id: first.body.event.id } } });
    expect(await balance()).toBe(after);
  });

  it('with the same headers named in another case and order, or as numbers (GraphQL), is a replay', async () => {
    const { merchant, customer, post, balance } = await setup();
    const first = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'tts-4', response: tts({ headers: { 'Character-Cost': '120', 'Request-Id': 'r-1' } }) });
    expect(first).toMatchObject({ status: 200, body: { replayed: false, event: { charge: '1.20' } } });
    const after = await balance();
    expect(await post('/v1/usage', { customer: customer.id, idempotencyKey: 'tts-4', response: tts({ headers: { 'request-id': 'r-1', 'character-cost': 120 } }) }))
      .toMatchObject({ status: 200, body: { replayed: true, event: { id: first.body.event.id } } });
    const answer = await server.graphql<{ recordUsage: { replayed: boolean; event: { id: string } } }>(
      'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { replayed event { id } } }',
      { input: { customer: customer.externalId, idempotencyKey: 'tts-4', response: tts({ headers: { 'REQUEST-ID': 'r-1', 'Character-Cost': 120 } }) } },
      merchant.secret,
    );
    expect(answer.errors).toBeUndefined();
    expect(answer.data?.recordUsage).toEqual({ replayed: true, event: { id: first.body.event.id } });
    expect(await balance()).toBe(after);
  });

  it('recorded before headers and request bodies were hashed replays when sent as before; another record is still a CONFLICT', async () => {
    const { customer, post, balance, events } = await setup();
    // Its customer named by its externalId and its provider in another case: the previous version
    // hashed the customer's id and the provider's, as this one does.
    const response = { ...tts({ headers: { 'character-cost': '120' }, requestBody: { text: 'hello' } }), provider: 'ElevenLabs' };
    const sent = { customer: customer.externalId, idempotencyKey: 'tts-old', response };
    expect(await post('/v1/usage', sent)).toMatchObject({ status: 200, body: { replayed: false } });
    const [stored] = await events('tts-old');
    const metadata = stored!.metadata as Record<string, unknown>;
    // The hash as the previous version wrote it: the response's url, status, body and provider, nothing of its headers or request.
    const before = requestHash({ customer: customer.id, currency: 'USD', occurredAt: null, usage: null, response: [response.url, 200, '', 'elevenlabs'], stated: {} });
    expect(before).not.toBe(metadata.requestHash);
    await server.services.prisma.usageEvent.update({ where: { id: stored!.id }, data: { metadata: { ...metadata, requestHash: before } as object } });
    const after = await balance();
    expect(await post('/v1/usage', sent)).toMatchObject({ status: 200, body: { replayed: true, event: { id: stored!.id } } });
    expect(await post('/v1/usage', { ...sent, response: { ...response, body: 'other' } })).toMatchObject({ status: 409 });
    expect(await balance()).toBe(after);
  });

  it("logged by the gateway (its upstream headers and request text) and replayed by an operator through POST /v1/usage is a replay, not a CONFLICT", async () => {
    const { merchant, customer, post, balance } = await setup();
    const requestId = randomUUID();
    const response: ProviderResponse = {
      url: 'https://api.elevenlabs.io/v1/text-to-speech/voice-1', status: 200, provider: 'elevenlabs', body: '',
      headers: { 'content-type': 'audio/mpeg', 'character-cost': '42', 'request-id': 'req-9', date: 'Mon, 15 Jun 2026 12:00:00 GMT' },
      requestBody: '{"text":"Hello from the gateway","model_id":"eleven_v3","voice_settings":{"stability":0.5}}',
    };
    // The record GatewayService.usageOf builds for a finished call.
    const record: UsageRecordInput = {
      customer: customer.id, idempotencyKey: `gateway:${requestId}`, timestamp: new Date(now.getTime() - 1000), currency: 'USD', response, normalized: normalizeResponse(response),
      metadata: { gatewayRequestId: requestId, cut: false },
    };
    const [settled] = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [record]);
    expect(settled).toMatchObject({ ok: true, replayed: false, event: { charge: '0.42' } });
    const after = await balance();
    const replayed = await post('/v1/usage', JSON.parse(JSON.stringify(replayable(record))));
    expect(replayed).toMatchObject({ status: 200, body: { replayed: true, event: { id: settled!.ok ? settled!.event.id : null } } });
    expect(await balance()).toBe(after);
  });
});

describe('a batch holding an event refused while charging, then the corrected record under the same key', () => {
  it('records the corrected one (a misnamed quantity, then the meter it meant)', async () => {
    const { customer, post, balance, events } = await setup();
    const before = await balance();
    const { status, body } = await post('/v1/usage/batch', {
      events: [
        { customer: customer.id, idempotencyKey: 'fix-1', quantities: { serches: 3 } },
        { customer: customer.id, idempotencyKey: 'fix-1', quantities: { searches: 3 } },
      ],
    });
    expect(status).toBe(200);
    expect(body.results[0]).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'quantities.serches' } });
    expect(body.results[1]).toMatchObject({ ok: true, replayed: false, event: { status: 'CHARGED', charge: '0.03' } });
    expect(await events('fix-1')).toHaveLength(1);
    expect(before - (await balance())).toBe(30_000_000n);
    // Its retry replays it.
    expect(await post('/v1/usage', { customer: customer.externalId, idempotencyKey: 'fix-1', quantities: { searches: 3 } }))
      .toMatchObject({ status: 200, body: { replayed: true, event: { id: body.results[1].event.id } } });
  });

  it('records the corrected one after a charge too large, counting only its own units; a third record under the key is then a CONFLICT', async () => {
    const { merchant, customer, post, balance, events } = await setup();
    const before = await balance();
    const { body } = await post('/v1/usage/batch', {
      events: [
        { customer: customer.id, idempotencyKey: 'fix-2', quantities: { units: 1_000_000_000 } },
        { customer: customer.id, idempotencyKey: 'fix-2', quantities: { searches: 2 } },
        { customer: customer.id, idempotencyKey: 'other', quantities: { searches: 1 } },
        { customer: customer.id, idempotencyKey: 'fix-2', quantities: { searches: 5 } },
      ],
    });
    expect(body.results.map((result: { ok: boolean; error?: { code: string } }) => (result.ok ? 'ok' : result.error!.code))).toEqual(['VALIDATION', 'ok', 'ok', 'CONFLICT']);
    expect(body.results[1]).toMatchObject({ replayed: false, event: { charge: '0.02' } });
    expect(await events('fix-2')).toHaveLength(1);
    expect(before - (await balance())).toBe(30_000_000n);
    const totals = await server.services.db.withConnection((c) =>
      c.query<{ meter_key: string; quantity: string }>(`SELECT meter_key, quantity::text FROM usage_period_totals WHERE merchant_id = $1 ORDER BY meter_key`, [merchant.id]));
    expect(totals.map((row) => [row.meter_key, Number(row.quantity)])).toEqual([['searches', 3]]);
  });

  it('answers the same refused record sent twice with its refusal both times, and a good first record still makes a different second a CONFLICT', async () => {
    const { customer, post, events } = await setup();
    const { body } = await post('/v1/usage/batch', {
      events: [
        { customer: customer.id, idempotencyKey: 'bad', quantities: { serches: 1 } },
        { customer: customer.id, idempotencyKey: 'bad', quantities: { serches: 1 } },
        { customer: customer.id, idempotencyKey: 'good', quantities: { searches: 1 } },
        { customer: customer.externalId, idempotencyKey: 'good', quantities: { searches: 1 } },
        { customer: customer.id, idempotencyKey: 'good', quantities: { searches: 2 } },
      ],
    });
    expect(body.results.map((result: { ok: boolean; replayed?: boolean; error?: { code: string } }) => (result.ok ? `ok${result.replayed ? ' replayed' : ''}` : result.error!.code)))
      .toEqual(['VALIDATION', 'VALIDATION', 'ok', 'ok replayed', 'CONFLICT']);
    expect(body.results[4].error.message).toContain('appears twice in this batch');
    expect(await events('bad')).toHaveLength(0);
    expect(await events('good')).toHaveLength(1);
  });
});

describe("a wallet's charge for a batch of events", () => {
  it('is dated by the latest of its events, not the last in batch order', async () => {
    const { merchant, customer, post } = await setup();
    const { body } = await post('/v1/usage/batch', {
      events: [
        { customer: customer.id, idempotencyKey: 'today', quantities: { searches: 1 } },
        { customer: customer.id, idempotencyKey: 'late', timestamp: '2026-05-20T08:00:00Z', quantities: { searches: 2 } },
        { customer: customer.id, idempotencyKey: 'earlier-today', timestamp: '2026-06-15T09:00:00Z', quantities: { searches: 3 } },
      ],
    });
    const ids = new Set(body.results.map((result: { event: { ledgerTransactionId: string } }) => result.event.ledgerTransactionId));
    expect(ids.size).toBe(1);
    const transaction = await server.services.prisma.ledgerTransaction.findFirstOrThrow({ where: { merchantId: merchant.id, id: [...ids][0] as string } });
    expect(transaction.amount).toBe(-60_000_000n);
    expect(transaction.occurredAt.toISOString()).toBe(now.toISOString());
  });
});
