import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';

/**
 * Provider response headers as apps send them: names in any case, values as JSON gives them.
 * ElevenLabs reports the characters it bills in `character-cost`; reading it wrong bills the
 * length of the request's text instead.
 */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const ELEVENLABS = 'https://api.elevenlabs.io/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb';
const REQUEST = { text: 'Hi', model_id: 'eleven_multilingual_v2' };
const RECORD = 'mutation ($input: RecordUsageInput!) { recordUsage(input: $input) { event { id } } }';

async function setup() {
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  const customer = await server.services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  const speech = (headers: unknown) => ({ customer: customer.id, idempotencyKey: randomUUID(), response: { url: ELEVENLABS, body: '', headers, requestBody: REQUEST } });
  const post = async (path: string, body: unknown) => {
    const response = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` }, body: JSON.stringify(body) });
    return { status: response.status, body: (await response.json()) as any };
  };
  const characters = async (eventId: string) => (await server.services.prisma.usageEvent.findUniqueOrThrow({ where: { id: eventId } })).characters;
  return { merchant, speech, post, characters };
}

describe('provider response headers', () => {
  it('POST /v1/usage reads a header whatever the case of its name and the type of its value', async () => {
    const { speech, post, characters } = await setup();
    for (const headers of [{ 'Character-Cost': '141' }, { 'character-cost': 141 }, { 'CHARACTER-COST': ['141'] }]) {
      const result = await post('/v1/usage', speech(headers));
      expect(result.status, JSON.stringify(headers)).toBe(200);
      expect(await characters(result.body.event.id), JSON.stringify(headers)).toBe(141);
    }
  });

  it('POST /v1/usage refuses headers that are not an object, naming the field, and writes nothing', async () => {
    const { merchant, speech, post } = await setup();
    for (const headers of ['character-cost: 141', [['character-cost', '141']], 141]) {
      const single = await post('/v1/usage', speech(headers));
      expect(single.status, JSON.stringify(headers)).toBe(400);
      expect(single.body).toMatchObject({ error: { code: 'VALIDATION', field: 'response.headers' } });
    }
    const nested = await post('/v1/usage', speech({ 'character-cost': { value: 141 } }));
    expect(nested.body).toMatchObject({ error: { code: 'VALIDATION', field: 'response.headers.character-cost' } });
    const batch = await post('/v1/usage/batch', { events: [speech({ 'Character-Cost': 141 }), speech('nope')] });
    expect(batch.status).toBe(200);
    expect(batch.body.results).toMatchObject([{ index: 0, ok: true }, { index: 1, ok: false, error: { code: 'VALIDATION', field: 'events.1.response.headers' } }]);
    expect(await server.services.prisma.usageEvent.count({ where: { merchantId: merchant.id } })).toBe(1);
  });

  it('recordUsage reads a numeric, mixed-case header instead of crashing', async () => {
    const { merchant, speech, characters } = await setup();
    const result = await server.graphql<any>(RECORD, { input: speech({ 'Character-Cost': 141, 'X-Request-Id': ['a', 'b'] }) }, merchant.secret);
    expect(result.errors).toBeUndefined();
    expect(await characters(result.data.recordUsage.event.id)).toBe(141);
    const refused = await server.graphql<any>(RECORD, { input: speech('character-cost: 141') }, merchant.secret);
    expect(refused.errors?.[0]).toMatchObject({ extensions: { code: 'VALIDATION' } });
    expect(refused.errors?.[0]?.message).toContain('headers');
  });
});
