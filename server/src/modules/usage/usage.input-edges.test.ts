import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpUsageSetup } from '../../../test/priced-usage.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';

/** Usage input at its edges: each bad event refused alone, naming its field; the good ones around it charged. */
const now = new Date('2026-06-15T12:00:00Z');
let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({}, { clock: () => now });
});
afterAll(() => server?.close());

const setup = () => httpUsageSetup(server);

const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 100 };
const chatBody = JSON.stringify({ id: 'x', object: 'chat.completion', model: 'gpt-5.4-mini', choices: [], usage: { prompt_tokens: 1000, completion_tokens: 100, total_tokens: 1100 } });

describe('a normalized usage record over HTTP', () => {
  it('refuses a provider, model, api or audioSeconds that is not text (or, for audioSeconds, a number), naming the field: never read as "[object Object]" or the text of a list', async () => {
    const { customer, post, stored } = await setup();
    const bad = [
      ['provider', ['openai']],
      ['provider', { id: 'openai' }],
      ['provider', 0],
      ['provider', { toString: 1 }],
      ['model', { name: 'gpt-5.4-mini' }],
      ['model', ['gpt-5.4-mini']],
      ['model', 5],
      ['model', true],
      ['api', {}],
      ['audioSeconds', ['1.5']],
      ['audioSeconds', { toString: 1 }],
    ] as const;
    const events = [
      { customer: customer.id, idempotencyKey: 'good', usage },
      ...bad.map(([field, value], index) => ({ customer: customer.id, idempotencyKey: `bad-${index}`, usage: { ...usage, [field]: value } })),
    ];
    const { status, body } = await post('/v1/usage/batch', { events });
    expect(status).toBe(200);
    expect(body.results[0]).toMatchObject({ ok: true, event: { status: 'CHARGED', provider: 'openai', model: 'gpt-5.4-mini' } });
    bad.forEach(([field], index) => expect(body.results[index + 1], `${field} #${index}`).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: `usage.${field}` } }));
    expect(await stored()).toEqual(['good']);
  });
});

describe("a normalized record's model and api with spaces around them", () => {
  // Pricing ignored the spaces, but the event kept them: "gpt-5.4-mini " was another model to the usage lists.
  it('are stored trimmed, and priced as without them', async () => {
    const { customer, post } = await setup();
    const padded = { ...usage, model: ' gpt-5.4-mini \n', api: ' chat.completions ' };
    const first = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'padded', usage: padded });
    expect(first.status).toBe(200);
    expect(first.body.event).toMatchObject({ model: 'gpt-5.4-mini', status: 'CHARGED' });
    const stored = await server.services.prisma.usageEvent.findFirstOrThrow({ where: { customerId: customer.id, idempotencyKey: 'padded' } });
    expect([stored.model, stored.api]).toEqual(['gpt-5.4-mini', 'chat.completions']);
    const plain = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'plain', usage: { ...usage, api: 'chat.completions' } });
    expect(plain.body.event.charge).toBe(first.body.event.charge);
  });
});

describe('an event refused for what it names, with the field at fault', () => {
  it('a response from a host Tollgate does not know names response.url; an unknown provider override names response.provider; the batch around them is charged', async () => {
    const { customer, post, stored } = await setup();
    const events = [
      { customer: customer.id, idempotencyKey: 'good', response: { url: 'https://api.openai.com/v1/chat/completions', status: 200, body: chatBody } },
      { customer: customer.id, idempotencyKey: 'host', response: { url: 'https://llm.internal.example/v1/chat/completions', status: 200, body: chatBody } },
      { customer: customer.id, idempotencyKey: 'override', response: { url: 'https://api.openai.com/v1/chat/completions', status: 200, body: chatBody, provider: 'nope' } },
    ];
    const { status, body } = await post('/v1/usage/batch', { events });
    expect(status).toBe(200);
    expect(body.results[0]).toMatchObject({ ok: true, event: { status: 'CHARGED' } });
    expect(body.results[1]).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'response.url', host: 'llm.internal.example' } });
    expect(body.results[2]).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'response.provider', provider: 'nope' } });
    const single = await post('/v1/usage', events[1]);
    expect(single).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION', field: 'response.url' } } });
    expect(await stored()).toEqual(['good']);
  });

  it('an unknown customer is NOT_FOUND naming the customer field, over HTTP and GraphQL; the batch around it is charged', async () => {
    const { merchant, customer, post, stored } = await setup();
    const { status, body } = await post('/v1/usage/batch', {
      events: [
        { customer: customer.externalId, idempotencyKey: 'good', usage },
        { customer: 'nobody', idempotencyKey: 'unknown', usage },
        { customer: randomUUID(), idempotencyKey: 'unknown-id', usage },
      ],
    });
    expect(status).toBe(200);
    expect(body.results[0]).toMatchObject({ ok: true, event: { status: 'CHARGED' } });
    expect(body.results[1]).toMatchObject({ ok: false, error: { code: 'NOT_FOUND', field: 'customer', resource: 'Customer' } });
    expect(body.results[2]).toMatchObject({ ok: false, error: { code: 'NOT_FOUND', field: 'customer' } });
    const answer = await server.graphql<any>(
      'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { event { id } } }',
      { input: { customer: 'nobody', idempotencyKey: 'gql', usage } },
      merchant.secret,
    );
    expect(answer.errors?.[0]?.extensions).toMatchObject({ code: 'NOT_FOUND', field: 'customer' });
    expect(await stored()).toEqual(['good']);
  });
});

describe('a provider response URL', () => {
  it('with a line end or spaces around it (read from a file or an environment variable) is the same API: charged, not recorded free as a path that bills nothing', async () => {
    const { customer, post } = await setup();
    const url = 'https://api.openai.com/v1/chat/completions';
    const urls = [url, `${url}\n`, `${url}\r\n`, ` ${url}\t`, `\n${url} `];
    const { status, body } = await post('/v1/usage/batch', {
      events: urls.map((u, index) => ({ customer: customer.id, idempotencyKey: `u-${index}`, response: { url: u, status: 200, body: chatBody } })),
    });
    expect(status).toBe(200);
    const clean = body.results[0].event;
    expect(clean).toMatchObject({ status: 'CHARGED', provider: 'openai', model: 'gpt-5.4-mini' });
    urls.forEach((u, index) => expect(body.results[index], JSON.stringify(u)).toMatchObject({ ok: true, event: { status: 'CHARGED', cost: clean.cost, charge: clean.charge } }));
  });
});

describe("a provider response's blank provider", () => {
  // A blank provider is no override (the provider is read from the URL), and a retry that leaves
  // it out is the same record: the two once hashed differently, so the retry was a CONFLICT.
  it('is read as none: charged by its URL, and a retry leaving it out, or sending null, replays it', async () => {
    const { customer, post, stored } = await setup();
    const response = { url: 'https://api.openai.com/v1/chat/completions', status: 200, body: chatBody };
    const first = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'blank', response: { ...response, provider: ' ' } });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ replayed: false, event: { status: 'CHARGED', provider: 'openai' } });
    for (const again of [response, { ...response, provider: null }, { ...response, provider: '' }] as { provider?: string | null }[]) {
      const retried = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'blank', response: again });
      expect(retried.body, JSON.stringify(again.provider)).toMatchObject({ replayed: true, event: { id: first.body.event.id } });
    }
    expect(await stored()).toEqual(['blank']);
  });
});

describe('a count in a response header', () => {
  it('is read as a count in a body is: digits only; "0x10", "1e3" or "+5" is refused as malformed, not read as the number Number() makes of it', async () => {
    const { customer, post, stored } = await setup();
    const url = 'https://bedrock-runtime.us-west-2.amazonaws.com/model/meta.llama3-70b-instruct-v1%3A0/invoke';
    const response = (input: string) => ({ url, status: 200, body: '{"generation":"Hi","stop_reason":"stop"}', headers: { 'x-amzn-bedrock-input-token-count': input, 'x-amzn-bedrock-output-token-count': '2' } });
    const bad = ['0x10', '1e3', '+5', '0b11', '16.0'];
    const { status, body } = await post('/v1/usage/batch', {
      events: [
        { customer: customer.id, idempotencyKey: 'digits', response: response('16') },
        { customer: customer.id, idempotencyKey: 'spaced', response: response(' 16 ') },
        ...bad.map((input, index) => ({ customer: customer.id, idempotencyKey: `bad-${index}`, response: response(input) })),
      ],
    });
    expect(status).toBe(200);
    expect(body.results[0]).toMatchObject({ ok: true });
    expect(body.results[1]).toMatchObject({ ok: true });
    bad.forEach((input, index) => expect(body.results[index + 2], input).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'response.body' } }));
    expect(await stored()).toEqual(['digits', 'spaced']);
    const counts = await server.services.prisma.usageEvent.findMany({ where: { customerId: customer.id }, select: { inputTokens: true, outputTokens: true } });
    expect(counts).toEqual([{ inputTokens: 16, outputTokens: 2 }, { inputTokens: 16, outputTokens: 2 }]);
  });
});

describe("a provider response's request body", () => {
  it('is the request as a JSON object or its text; a list, number or boolean is refused naming it, not read as no request (a speech call\'s characters unread)', async () => {
    const { customer, post, stored } = await setup();
    const request = { model: 'tts-1', input: 'Hello there', voice: 'alloy' };
    const response = (requestBody: unknown) => ({ url: 'https://api.openai.com/v1/audio/speech', status: 200, body: 'ID3\u0003audio', requestBody });
    const bad = [[request], 42, true, []];
    const { status, body } = await post('/v1/usage/batch', {
      events: [
        { customer: customer.id, idempotencyKey: 'object', response: response(request) },
        { customer: customer.id, idempotencyKey: 'text', response: response(JSON.stringify(request)) },
        ...bad.map((requestBody, index) => ({ customer: customer.id, idempotencyKey: `bad-${index}`, response: response(requestBody) })),
      ],
    });
    expect(status).toBe(200);
    expect(body.results[0]).toMatchObject({ ok: true, event: { model: 'tts-1' } });
    expect(body.results[1]).toMatchObject({ ok: true, event: { model: 'tts-1', cost: body.results[0].event.cost } });
    bad.forEach((requestBody, index) => expect(body.results[index + 2], JSON.stringify(requestBody)).toMatchObject({ ok: false, error: { code: 'VALIDATION', field: 'response.requestBody' } }));
    expect(await stored()).toEqual(['object', 'text']);
    const rows = await server.services.prisma.usageEvent.findMany({ where: { customerId: customer.id }, select: { characters: true } });
    expect(rows).toEqual([{ characters: 11 }, { characters: 11 }]);
  });

  it('written with bare NaN or Infinity, as lenient (Python) servers accept it, is read as the gateway reads it: a speech call is charged its characters, not recorded free', async () => {
    const { customer, post } = await setup();
    const response = (requestBody: string) => ({ url: 'https://api.openai.com/v1/audio/speech', status: 200, body: 'ID3\u0003audio', requestBody });
    const plain = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'plain', response: response('{"model":"tts-1","input":"Hello there","voice":"alloy","speed":1}') });
    expect(plain).toMatchObject({ status: 200, body: { event: { status: 'CHARGED', model: 'tts-1' } } });
    const nan = await post('/v1/usage', { customer: customer.id, idempotencyKey: 'nan', response: response('{"model":"tts-1","input":"Hello there","voice":"alloy","speed":NaN}') });
    expect(nan).toMatchObject({ status: 200, body: { event: { status: 'CHARGED', model: 'tts-1', cost: plain.body.event.cost, charge: plain.body.event.charge } } });
    // Only bare values are read as null: the same words inside a string are the text spoken.
    const infinity = await post('/v1/usage', {
      customer: customer.id, idempotencyKey: 'infinity',
      response: response('{"model":"tts-1","input":"NaN or Infinity","voice":"alloy","speed":Infinity,"x":[-Infinity]}'),
    });
    expect(infinity).toMatchObject({ status: 200, body: { event: { status: 'CHARGED', model: 'tts-1' } } });
    const rows = await server.services.prisma.usageEvent.findMany({ where: { customerId: customer.id }, select: { idempotencyKey: true, characters: true } });
    expect(rows.sort((a, b) => a.idempotencyKey.localeCompare(b.idempotencyKey))).toEqual([
      { idempotencyKey: 'infinity', characters: 15 },
      { idempotencyKey: 'nan', characters: 11 },
      { idempotencyKey: 'plain', characters: 11 },
    ]);
  });
});
