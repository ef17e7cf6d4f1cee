import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpUsageSetup } from '../../../test/priced-usage.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { requestHash } from '../ledger/ledger.service.ts';

/**
 * One record, read the same way by both ingestion paths (GraphQL recordUsage, HTTP POST /v1/usage
 * and /v1/usage/batch): what one takes the other takes, and a retry on either path, its values
 * written another way, is the same record under its key (a replay), not a CONFLICT.
 */
const now = new Date('2026-06-15T12:00:00Z');
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

const RECORD = 'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { replayed event { id status model cost charge } } }';

type Answer = { status: number; body: any };

/** httpUsageSetup, with `graphql` answering a recordUsage as POST /v1/usage answers (status 200, or the error's code). */
async function setup() {
  const world = await httpUsageSetup(server);
  const graphql = async (input: Record<string, unknown>): Promise<Answer> => {
    const answer = await server.graphql<{ recordUsage: Record<string, unknown> }>(RECORD, { input }, world.merchant.secret);
    if (answer.errors) return { status: 0, body: { error: { ...answer.errors[0]!.extensions, message: answer.errors[0]!.message } } };
    return { status: 200, body: answer.data!.recordUsage };
  };
  const http = (record: Record<string, unknown>) => world.post('/v1/usage', record);
  return { ...world, graphql, http };
}

/** An OpenAI speech call: its body is audio, its characters are in the request's text (11 here). */
const REQUEST = { model: 'tts-1', input: 'Hello there', voice: 'alloy' };
const speech = (requestBody: unknown) => ({ url: 'https://api.openai.com/v1/audio/speech', status: 200, body: 'ID3\u0003audio', requestBody });

describe("a provider response's request body sent as text (the JSON document as a string)", () => {
  it('is taken over GraphQL as over HTTP, and read alike: the same model and characters, the same charge', async () => {
    const { customer, graphql, http, stored } = await setup();
    const overHttp = await http({ customer: customer.id, idempotencyKey: 'http', response: speech(JSON.stringify(REQUEST)) });
    expect(overHttp).toMatchObject({ status: 200, body: { replayed: false, event: { status: 'CHARGED', model: 'tts-1' } } });
    const overGraphql = await graphql({ customer: customer.id, idempotencyKey: 'graphql', response: speech(JSON.stringify(REQUEST)) });
    expect(overGraphql).toMatchObject({ status: 200, body: { replayed: false, event: { status: 'CHARGED', model: 'tts-1', cost: overHttp.body.event.cost, charge: overHttp.body.event.charge } } });
    // Text that is no JSON document is taken as text on both paths, as the gateway hands over a text body.
    const plain = await graphql({ customer: customer.id, idempotencyKey: 'plain', response: speech('Hello there') });
    expect(plain).toMatchObject({ status: 200, body: { replayed: false } });
    expect(await stored()).toEqual(['graphql', 'http', 'plain']);
    const rows = await server.services.prisma.usageEvent.findMany({ where: { customerId: customer.id, idempotencyKey: { in: ['http', 'graphql'] } }, select: { characters: true } });
    expect(rows).toEqual([{ characters: 11 }, { characters: 11 }]);
  });

  it('written inline in the query, as text or as an object, is taken too', async () => {
    const { merchant, customer } = await setup();
    const inline = (key: string, requestBody: string) =>
      server.graphql<{ recordUsage: { event: { model: string; cost: string } } }>(
        `mutation { recordUsage(input: { customer: "${customer.id}", idempotencyKey: "${key}", response: { url: "https://api.openai.com/v1/audio/speech", body: "ID3", requestBody: ${requestBody} } }) { event { model cost } } }`,
        {},
        merchant.secret,
      );
    const asText = await inline('text', JSON.stringify(JSON.stringify(REQUEST)));
    expect(asText.errors).toBeUndefined();
    const asObject = await inline('object', '{ model: "tts-1", input: "Hello there", voice: "alloy" }');
    expect(asObject.errors).toBeUndefined();
    expect(asText.data!.recordUsage.event).toEqual(asObject.data!.recordUsage.event);
    expect(asText.data!.recordUsage.event.model).toBe('tts-1');
    // An object literal is read as a JSONObject is: an integer no JSON number holds exactly is refused, naming the field.
    const rounded = await inline('rounded', '{ model: "tts-1", input: "Hello", n: 12345678901234567891 }');
    expect(rounded.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'response.requestBody' });
    expect(rounded.errors?.[0]?.message).toMatch(/as a string/);
  });

  it('sent once and retried on the other path, in either form, is a replay charged once; another request is a CONFLICT', async () => {
    const { customer, graphql, http, balance, stored } = await setup();
    const asText = JSON.stringify(REQUEST);
    // The same document written another way: keys in another order, spaced out.
    const reformatted = `{ "voice": "alloy",\n  "input": "Hello there", "model": "tts-1" }`;
    const send = { http, graphql };
    const cases = [
      ['http', asText, [['graphql', asText], ['graphql', REQUEST], ['http', REQUEST], ['http', reformatted]]],
      ['http', REQUEST, [['graphql', asText], ['graphql', REQUEST], ['http', reformatted]]],
      ['graphql', asText, [['http', REQUEST], ['http', asText], ['graphql', reformatted]]],
      ['graphql', REQUEST, [['http', asText], ['graphql', reformatted]]],
    ] as const;
    const firsts = new Map<string, string>();
    for (const [path, body] of cases) {
      const key = `${path}-${typeof body}`;
      const first = await send[path]({ customer: customer.id, idempotencyKey: key, response: speech(body) });
      expect(first, key).toMatchObject({ status: 200, body: { replayed: false, event: { status: 'CHARGED' } } });
      firsts.set(key, first.body.event.id);
    }
    const after = await balance();
    for (const [path, body, retries] of cases) {
      const key = `${path}-${typeof body}`;
      for (const [retryPath, retryBody] of retries) {
        const retry = await send[retryPath]({ customer: customer.id, idempotencyKey: key, response: speech(retryBody) });
        expect(retry, `${key} retried over ${retryPath} as ${typeof retryBody}`).toMatchObject({ status: 200, body: { replayed: true, event: { id: firsts.get(key) } } });
      }
      // Another request (a longer text to speak) is another record, in either form, on either path.
      const longer = { ...REQUEST, input: 'Hello there, and a much longer text to speak' };
      for (const [retryPath, retryBody] of [['http', longer], ['http', JSON.stringify(longer)], ['graphql', longer], ['graphql', JSON.stringify(longer)]] as const) {
        const other = await send[retryPath]({ customer: customer.id, idempotencyKey: key, response: speech(retryBody) });
        expect(other, `${key}: another request over ${retryPath} as ${typeof retryBody}`).toMatchObject({ body: { error: { code: 'CONFLICT', field: 'idempotencyKey' } } });
      }
    }
    expect(await balance()).toBe(after);
    expect(await stored()).toEqual([...firsts.keys()].sort());
  });

  it('recorded when its hash held the text as sent replays when sent as before; another request is still a CONFLICT', async () => {
    const { customer, http, graphql, balance } = await setup();
    const asText = JSON.stringify(REQUEST);
    const first = await http({ customer: customer.id, idempotencyKey: 'text-old', response: speech(asText) });
    expect(first.status).toBe(200);
    const row = await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: first.body.event.id } });
    const metadata = row.metadata as Record<string, unknown>;
    // The hash as the previous version wrote it: the request body's text as sent.
    const response = ['https://api.openai.com/v1/audio/speech', 200, 'ID3\u0003audio', null];
    const asSent = requestHash({ customer: customer.id, currency: 'USD', occurredAt: null, usage: null, response, stated: {}, requestBody: asText });
    expect(asSent).not.toBe(metadata.requestHash);
    await server.services.prisma.usageEvent.update({ where: { id: row.id }, data: { metadata: { ...metadata, requestHash: asSent } as object } });
    const after = await balance();
    expect(await http({ customer: customer.id, idempotencyKey: 'text-old', response: speech(asText) })).toMatchObject({ status: 200, body: { replayed: true, event: { id: row.id } } });
    expect(await graphql({ customer: customer.id, idempotencyKey: 'text-old', response: speech(asText) })).toMatchObject({ status: 200, body: { replayed: true, event: { id: row.id } } });
    const longer = JSON.stringify({ ...REQUEST, input: 'Hello there, and more' });
    expect(await http({ customer: customer.id, idempotencyKey: 'text-old', response: speech(longer) })).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT' } } });
    expect(await balance()).toBe(after);
  });

  it('as a list, a number or a boolean is refused over GraphQL as over HTTP, naming the field, and nothing is recorded', async () => {
    const { merchant, customer, graphql, http, stored } = await setup();
    for (const [index, requestBody] of [[REQUEST], 42, true, []].entries()) {
      const overHttp = await http({ customer: customer.id, idempotencyKey: `bad-http-${index}`, response: speech(requestBody) });
      expect(overHttp, JSON.stringify(requestBody)).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION', field: 'response.requestBody' } } });
      const overGraphql = await graphql({ customer: customer.id, idempotencyKey: `bad-graphql-${index}`, response: speech(requestBody) });
      expect(overGraphql, JSON.stringify(requestBody)).toMatchObject({ body: { error: { code: 'VALIDATION', field: 'response.requestBody' } } });
      expect(overGraphql.body.error.message).toMatch(/JSON object, or its text/);
    }
    // Written inline, too.
    for (const literal of ['42', 'true', '["a"]']) {
      const inline = await server.graphql(
        `mutation { recordUsage(input: { customer: "${customer.id}", idempotencyKey: "inline", response: { url: "https://api.openai.com/v1/audio/speech", body: "ID3", requestBody: ${literal} } }) { replayed } }`,
        {},
        merchant.secret,
      );
      expect(inline.errors?.[0]?.extensions, literal).toMatchObject({ code: 'VALIDATION', field: 'response.requestBody' });
    }
    expect(await stored()).toEqual([]);
  });
});

/** A transcription record: whisper-1 is priced per minute of audio ($0.006: 12 seconds cost 0.0012). */
const transcription = (audioSeconds: unknown) => ({ provider: 'openai', model: 'whisper-1', api: 'audio.transcriptions', audioSeconds });

describe('a decimal quantity written another way on a retry', () => {
  it('audio seconds 12, "12", "12.0", "12.000" or "012" are the same record on either path: a replay charged once; 12.5 is another', async () => {
    const { customer, graphql, http, balance, stored } = await setup();
    const first = await http({ customer: customer.id, idempotencyKey: 'audio', usage: transcription(12) });
    expect(first).toMatchObject({ status: 200, body: { replayed: false, event: { status: 'CHARGED' } } });
    const fraction = await graphql({ customer: customer.id, idempotencyKey: 'audio-fraction', usage: transcription('12.50') });
    expect(fraction).toMatchObject({ status: 200, body: { replayed: false } });
    const after = await balance();
    for (const seconds of ['12', '12.0', '12.000', '012']) {
      for (const [path, send] of [['http', http], ['graphql', graphql]] as const) {
        expect(await send({ customer: customer.id, idempotencyKey: 'audio', usage: transcription(seconds) }), `${path} ${seconds}`)
          .toMatchObject({ status: 200, body: { replayed: true, event: { id: first.body.event.id } } });
      }
    }
    expect(await http({ customer: customer.id, idempotencyKey: 'audio-fraction', usage: transcription(12.5) })).toMatchObject({ status: 200, body: { replayed: true, event: { id: fraction.body.event.id } } });
    expect(await http({ customer: customer.id, idempotencyKey: 'audio-fraction', usage: transcription('12.5000') })).toMatchObject({ status: 200, body: { replayed: true } });
    for (const seconds of ['12.5', '120', '1.2']) {
      expect(await http({ customer: customer.id, idempotencyKey: 'audio', usage: transcription(seconds) }), seconds).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT', field: 'idempotencyKey' } } });
    }
    expect(await graphql({ customer: customer.id, idempotencyKey: 'audio-fraction', usage: transcription('12.05') })).toMatchObject({ body: { error: { code: 'CONFLICT' } } });
    expect(await balance()).toBe(after);
    expect(await stored()).toEqual(['audio', 'audio-fraction']);
  });

  it('recorded when its hash held the audio seconds as written replays when written as before', async () => {
    const { customer, http, balance } = await setup();
    const first = await http({ customer: customer.id, idempotencyKey: 'audio-old', usage: transcription('12.000') });
    expect(first.status).toBe(200);
    const row = await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: first.body.event.id } });
    const metadata = row.metadata as Record<string, unknown>;
    // The hash as the previous version wrote it: the seconds' text as sent (the usage's keys sorted).
    const usage = { api: 'audio.transcriptions', audioSeconds: '12.000', model: 'whisper-1', provider: 'openai' };
    const asSent = requestHash({ customer: customer.id, currency: 'USD', occurredAt: null, usage, response: null, stated: {} });
    expect(asSent).not.toBe(metadata.requestHash);
    await server.services.prisma.usageEvent.update({ where: { id: row.id }, data: { metadata: { ...metadata, requestHash: asSent } as object } });
    const after = await balance();
    expect(await http({ customer: customer.id, idempotencyKey: 'audio-old', usage: transcription('12.000') })).toMatchObject({ status: 200, body: { replayed: true, event: { id: row.id } } });
    expect(await http({ customer: customer.id, idempotencyKey: 'audio-old', usage: transcription('13') })).toMatchObject({ status: 409 });
    expect(await balance()).toBe(after);
  });

  describe('a stated meter quantity', () => {
    async function withMeter() {
      const world = await setup();
      await server.services.meters.create(world.merchant.id, { key: 'units', name: 'Units', unit: 'unit', source: 'QUANTITY' });
      await server.services.priceRules.put(world.merchant.id, { name: 'units', type: 'FLAT', meterKey: 'units', config: { unitPrice: '0.01' }, effectiveFrom: new Date('2026-01-01') });
      return world;
    }

    it('3, "3", "3.0" or "03" is the same record on either path; "2.50" and 2.5 alike; another quantity is a CONFLICT', async () => {
      const { customer, graphql, http, balance, stored } = await withMeter();
      const first = await http({ customer: customer.id, idempotencyKey: 'units', quantities: { units: 3 } });
      expect(first).toMatchObject({ status: 200, body: { replayed: false, event: { status: 'CHARGED', charge: '0.03' } } });
      const fraction = await http({ customer: customer.id, idempotencyKey: 'units-fraction', quantities: { units: '2.50' } });
      expect(fraction).toMatchObject({ status: 200, body: { replayed: false, event: { charge: '0.025' } } });
      const after = await balance();
      for (const units of ['3', '3.0', '03', '3.000000']) {
        for (const [path, send] of [['http', http], ['graphql', graphql]] as const) {
          expect(await send({ customer: customer.id, idempotencyKey: 'units', quantities: { units } }), `${path} ${units}`)
            .toMatchObject({ status: 200, body: { replayed: true, event: { id: first.body.event.id } } });
        }
      }
      expect(await graphql({ customer: customer.id, idempotencyKey: 'units-fraction', quantities: { units: '2.5' } })).toMatchObject({ status: 200, body: { replayed: true, event: { id: fraction.body.event.id } } });
      for (const units of ['3.5', 30, '0.3', 4]) {
        expect(await http({ customer: customer.id, idempotencyKey: 'units', quantities: { units } }), String(units)).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT' } } });
      }
      expect(await balance()).toBe(after);
      expect(await stored()).toEqual(['units', 'units-fraction']);
    });

    it('recorded when its hash held the quantity as written replays when written as before', async () => {
      const { customer, http, balance } = await withMeter();
      const first = await http({ customer: customer.id, idempotencyKey: 'units-old', quantities: { units: '3.0' } });
      expect(first.status).toBe(200);
      const row = await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: first.body.event.id } });
      const metadata = row.metadata as Record<string, unknown>;
      const asSent = requestHash({ customer: customer.id, currency: 'USD', occurredAt: null, usage: null, response: null, stated: { units: '3.0' } });
      expect(asSent).not.toBe(metadata.requestHash);
      await server.services.prisma.usageEvent.update({ where: { id: row.id }, data: { metadata: { ...metadata, requestHash: asSent } as object } });
      const after = await balance();
      expect(await http({ customer: customer.id, idempotencyKey: 'units-old', quantities: { units: '3.0' } })).toMatchObject({ status: 200, body: { replayed: true, event: { id: row.id } } });
      expect(await http({ customer: customer.id, idempotencyKey: 'units-old', quantities: { units: '4.0' } })).toMatchObject({ status: 409 });
      expect(await balance()).toBe(after);
    });
  });
});

describe('a batch body with a key besides events', () => {
  it('is refused naming the key, as an unknown key of an event is, and nothing of the batch is recorded', async () => {
    const { customer, post, stored } = await setup();
    const event = { customer: customer.id, idempotencyKey: 'in-batch', usage: transcription('12') };
    const unknown = await post('/v1/usage/batch', { events: [event], foo: 1 });
    expect(unknown).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION', field: 'foo' } } });
    expect(unknown.body.error.message).toMatch(/is not a field of a usage batch.*events/);
    // Misspelt, it names the field it likely meant.
    const misspelt = await post('/v1/usage/batch', { Events: [event] });
    expect(misspelt).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION', field: 'Events' } } });
    expect(misspelt.body.error.message).toContain('did you mean events?');
    expect(await stored()).toEqual([]);
    // With events alone, the same batch is recorded.
    expect(await post('/v1/usage/batch', { events: [event] })).toMatchObject({ status: 200, body: { summary: { ok: 1 } } });
    expect(await stored()).toEqual(['in-batch']);
  });
});
