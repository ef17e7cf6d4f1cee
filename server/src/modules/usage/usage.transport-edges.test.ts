import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpUsageSetup } from '../../../test/priced-usage.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { canonicalJson } from '../../shared/canonical-json.ts';
import { laneOf } from '../../shared/lanes.ts';
import { requestHash } from '../ledger/ledger.service.ts';
import { CUSTOMER_LANES } from './usage.service.ts';

/** Usage over HTTP as clients send it: the body's type, what an error answer carries to find it in the logs, and a record read alike over HTTP and GraphQL. */
const now = new Date('2026-06-15T12:00:00Z');
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 };

describe('a usage body that is not sent as JSON', () => {
  // fetch() sends a string body as text/plain, Python's requests.post(url, data=…) with no
  // Content-Type at all, curl -d as a form: the JSON parser leaves such a body unread, and the
  // event was refused as "event: must be a JSON object" though it is one.
  it('is answered 415 naming the Content-Type to send, on both routes, and records nothing', async () => {
    const { merchant, customer, stored } = await httpUsageSetup(server);
    const event = { customer: customer.id, idempotencyKey: 'typed', usage };
    const routes = [['/v1/usage', event], ['/v1/usage/batch', { events: [event] }]] as const;
    for (const [path, body] of routes) {
      for (const type of ['text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', undefined]) {
        const response = await fetch(`${server.url}${path}`, {
          method: 'POST', headers: { authorization: `Bearer ${merchant.secret}`, ...(type ? { 'content-type': type } : {}) }, body: Buffer.from(JSON.stringify(body)),
        });
        expect(response.status, `${path} ${type}`).toBe(415);
        const answer = (await response.json()) as { error: Record<string, unknown> };
        expect(answer.error, `${path} ${type}`).toMatchObject({ code: 'VALIDATION', reason: 'UNSUPPORTED_MEDIA_TYPE', contentType: type ?? null });
        expect(answer.error.message).toContain('Content-Type: application/json');
      }
    }
    expect(await stored()).toEqual([]);
    // Sent as JSON, the same event is recorded; a request with no body at all is still told what an event is.
    const sent = await fetch(`${server.url}/v1/usage`, { method: 'POST', headers: { authorization: `Bearer ${merchant.secret}`, 'content-type': 'application/json; charset=utf-8' }, body: JSON.stringify(event) });
    expect(sent.status).toBe(200);
    const empty = await fetch(`${server.url}/v1/usage`, { method: 'POST', headers: { authorization: `Bearer ${merchant.secret}` } });
    expect(empty.status).toBe(400);
    expect(((await empty.json()) as { error: unknown }).error).toMatchObject({ code: 'VALIDATION', field: 'event' });
    expect(await stored()).toEqual(['typed']);
  });
});

describe('an event refused by POST /v1/usage', () => {
  // INTERNAL and every other error body of the HTTP routes carries the request's id (README:
  // details are logged under it); the answer of a refused event was written past that and had none.
  it('carries the requestId of its x-request-id header, as every other error answer does', async () => {
    const { merchant, customer } = await httpUsageSetup(server);
    const refused = [
      { customer: customer.id, idempotencyKey: 'neg', usage: { ...usage, inputTokens: -1 } },
      { customer: 'nobody', idempotencyKey: 'who', usage },
    ];
    for (const body of refused) {
      const response = await fetch(`${server.url}/v1/usage`, { method: 'POST', headers: { authorization: `Bearer ${merchant.secret}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect(response.status).toBeGreaterThanOrEqual(400);
      const { error } = (await response.json()) as { error: Record<string, unknown> };
      expect(error.requestId, body.idempotencyKey).toBe(response.headers.get('x-request-id'));
      expect(typeof error.requestId).toBe('string');
    }
  });
});

describe('an event of a batch that could not be stored while the rest was', () => {
  // README: an INTERNAL error carries the requestId its details are logged under. The events of a
  // batch part that failed answered INTERNAL with no requestId, and the log line named none either.
  it('answers INTERNAL with the requestId of the response, the events stored beside it charged', async () => {
    const { merchant, customer } = await httpUsageSetup(server);
    let other = await server.services.customers.create(merchant.id, { externalId: 'other-0' });
    for (let i = 1; laneOf(other.id, CUSTOMER_LANES) === laneOf(customer.id, CUSTOMER_LANES); i++) {
      other = await server.services.customers.create(merchant.id, { externalId: `other-${i}` });
    }
    const sql = (text: string) => server.services.db.withConnection((connection) => connection.exec(text));
    await sql(`CREATE FUNCTION refuse_lane_test() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
      IF NEW.customer_id = '${other.id}' THEN RAISE EXCEPTION 'disk full (test)'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER refuse_lane_test BEFORE INSERT ON usage_events FOR EACH ROW EXECUTE FUNCTION refuse_lane_test()`);
    let response: Response;
    try {
      response = await fetch(`${server.url}/v1/usage/batch`, {
        method: 'POST', headers: { authorization: `Bearer ${merchant.secret}`, 'content-type': 'application/json' },
        body: JSON.stringify({ events: [{ customer: customer.id, idempotencyKey: 'kept', usage }, { customer: other.id, idempotencyKey: 'lost', usage }] }),
      });
    } finally {
      await sql('DROP TRIGGER refuse_lane_test ON usage_events; DROP FUNCTION refuse_lane_test()');
    }
    expect(response.status).toBe(200);
    const { results } = (await response.json()) as { results: Record<string, any>[] };
    expect(results[0]).toMatchObject({ ok: true, event: { status: 'CHARGED' } });
    expect(results[1]).toMatchObject({ ok: false, error: { code: 'INTERNAL', retryable: true } });
    expect(results[1]!.error.requestId).toBe(response.headers.get('x-request-id'));
  });
});

describe('a transcription record with its audio seconds as a JSON number', () => {
  // GraphQL's Decimal reads a JSON 90 as "90", which is what the event stores; over HTTP the number
  // was hashed as a number, so the same record sent the other way (or its seconds quoted) was
  // another record under the key: a CONFLICT instead of the first answer.
  const transcription = { provider: 'openai', model: 'whisper-1', api: 'audio.transcriptions', audioSeconds: 90 };
  const RECORD = 'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { replayed event { id charge } } }';

  it('replays over GraphQL, and over HTTP with the seconds as text, charging once', async () => {
    const { merchant, customer, post, balance, stored } = await httpUsageSetup(server);
    const first = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'audio', usage: transcription });
    expect(first).toMatchObject({ status: 200, body: { replayed: false, event: { charge: '0.009' } } });
    const after = await balance();
    const overGraphql = await server.graphql<any>(RECORD, { input: { customer: customer.id, idempotencyKey: 'audio', usage: transcription } }, merchant.secret);
    expect(overGraphql.errors).toBeUndefined();
    expect(overGraphql.data.recordUsage).toMatchObject({ replayed: true, event: { id: first.body.event.id } });
    const quoted = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'audio', usage: { ...transcription, audioSeconds: '90' } });
    expect(quoted).toMatchObject({ status: 200, body: { replayed: true, event: { id: first.body.event.id } } });
    // Another duration is another record.
    const other = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'audio', usage: { ...transcription, audioSeconds: 91 } });
    expect(other).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT', field: 'idempotencyKey' } } });
    expect(await balance()).toBe(after);
    expect(await stored()).toEqual(['audio']);
  });

  it('recorded when its hash held the number as sent still replays as sent', async () => {
    const { customer, post, balance } = await httpUsageSetup(server);
    const first = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'audio-old', usage: transcription });
    expect(first.status).toBe(200);
    const row = await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: first.body.event.id } });
    const metadata = row.metadata as Record<string, unknown>;
    const asSent = requestHash({ customer: customer.id, currency: 'USD', occurredAt: null, usage: canonicalJson(transcription, 'usage', true), response: null, stated: {} });
    expect(asSent).not.toBe(metadata.requestHash);
    await server.services.prisma.usageEvent.update({ where: { id: row.id }, data: { metadata: { ...metadata, requestHash: asSent } as object } });
    const after = await balance();
    const again = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'audio-old', usage: transcription });
    expect(again).toMatchObject({ status: 200, body: { replayed: true, event: { id: row.id } } });
    expect(await balance()).toBe(after);
  });
});

describe('an event recorded but not fully paid for', () => {
  // HTTP's chargeError carried required, available and currency; GraphQL's only its code and message.
  it('answers the same amounts over GraphQL as over HTTP', async () => {
    const { merchant, customer, post } = await httpUsageSetup(server, '0.000001');
    const over = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'over-http', usage });
    expect(over.body.chargeError).toMatchObject({ code: 'INSUFFICIENT_FUNDS', currency: 'USD' });
    const RECORD = 'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { chargeError { code required available currency } } }';
    const answer = await server.graphql<{ recordUsage: { chargeError: Record<string, unknown> } }>(RECORD, { input: { customer: customer.id, idempotencyKey: 'over-graphql', usage } }, merchant.secret);
    expect(answer.errors).toBeUndefined();
    const { code, required, available, currency } = over.body.chargeError;
    // The same call again, on a wallet the first left empty: the same price, nothing available.
    expect(answer.data!.recordUsage.chargeError).toEqual({ code, required, available: '0.00', currency });
    expect(Number(available)).toBeGreaterThan(0);
  });
});
