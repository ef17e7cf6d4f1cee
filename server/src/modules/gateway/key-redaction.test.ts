/**
 * The merchant's provider key, quoted back by a provider (an error naming it, a server echoing
 * the request), reaches the caller masked: in the body however it is cut into chunks, and in the
 * headers. Anything else passes untouched, and a stream is not held back by the check.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { callGateway, gatewayTenant, recordingProvider, type GatewayTenant, type RecordingProvider } from '../../../test/gateway-harness.ts';
import { seededRandom } from '../../../test/seeded-random.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { KeyRedactor, maskOf, redactedHeaders } from './key-redaction.ts';

/** The key gatewayTenant stores for OpenAI. */
const PROVIDER_KEY = 'sk-provider-secret-0001';
const MASK = '*'.repeat(PROVIDER_KEY.length - 4) + '0001';

describe('KeyRedactor', () => {
  const relay = (key: string, chunks: string[]) => {
    const redactor = new KeyRedactor(key);
    const out = chunks.map((chunk) => redactor.push(Buffer.from(chunk)));
    return { out: out.map(String), whole: Buffer.concat([...out, redactor.end()]).toString() };
  };

  it('masks every occurrence at its own length, keeping the last four characters', () => {
    expect(maskOf(Buffer.from(PROVIDER_KEY)).toString()).toBe(MASK);
    const { whole } = relay(PROVIDER_KEY, [`{"error":"bad key ${PROVIDER_KEY}","again":"${PROVIDER_KEY}"}`]);
    expect(whole).toBe(`{"error":"bad key ${MASK}","again":"${MASK}"}`);
  });

  it('masks a key cut anywhere across chunks, at every cut, and loses no other byte', () => {
    const body = `Incorrect API key provided: ${PROVIDER_KEY}. You can find your API key at ...`;
    for (let cut = 0; cut <= body.length; cut++) {
      expect(relay(PROVIDER_KEY, [body.slice(0, cut), body.slice(cut)]).whole).toBe(body.replace(PROVIDER_KEY, MASK));
    }
    const random = seededRandom(7);
    for (let round = 0; round < 200; round++) {
      const chunks: string[] = [];
      for (let at = 0; at < body.length; ) {
        const size = random.int(1, 6);
        chunks.push(body.slice(at, at + size));
        at += size;
      }
      const { whole } = relay(PROVIDER_KEY, chunks);
      expect(whole).not.toContain(PROVIDER_KEY);
      expect(whole).toBe(body.replace(PROVIDER_KEY, MASK));
    }
  });

  it('masks overlapping occurrences of a key that repeats its own start, so no whole key shows across two masks', () => {
    const key = 'abcd1234abcd';
    const { whole } = relay(key, ['x abcd1234abcd1234abcd y']);
    expect(whole).not.toContain(key);
    expect(whole).toHaveLength('x abcd1234abcd1234abcd y'.length);
  });

  it('holds nothing back from a chunk that cannot begin the key: an SSE event goes at once', () => {
    const { out } = relay(PROVIDER_KEY, ['data: {"a":1}\n\n', 'data: [DONE]\n\n']);
    expect(out).toEqual(['data: {"a":1}\n\n', 'data: [DONE]\n\n']);
  });

  it('holds back only an end that could begin the key, and gives it up when the next chunk shows it was not', () => {
    const { out, whole } = relay(PROVIDER_KEY, ['token sk-pro', 'cessing done']);
    expect(out).toEqual(['token ', 'sk-processing done']);
    expect(whole).toBe('token sk-processing done');
  });

  it('masks the key in header values, and leaves short keys alone', () => {
    expect(redactedHeaders({ 'x-debug': `auth=Bearer ${PROVIDER_KEY}`, 'x-list': ['a', PROVIDER_KEY], 'content-length': 3 }, PROVIDER_KEY)).toEqual({
      'x-debug': `auth=Bearer ${MASK}`, 'x-list': ['a', MASK], 'content-length': 3,
    });
    expect(KeyRedactor.applies('short')).toBe(false);
    expect(redactedHeaders({ a: 'short' }, 'short')).toEqual({ a: 'short' });
  });
});

describe('the gateway relaying an answer that quotes its provider key', () => {
  let server: TestServer;
  let provider: RecordingProvider;
  let t: GatewayTenant;

  beforeAll(async () => {
    server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' });
    provider = await recordingProvider();
    t = await gatewayTenant(server, provider.server.host);
  });

  afterAll(async () => {
    await Promise.all([server?.close(), provider?.server.close()]);
  });

  const chat = () =>
    callGateway(server, t, `http://${provider.server.host}/v1/chat/completions`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
    });

  it('an error quoting the key, in its body cut mid-key and in a header, reaches the caller masked, at its own length', async () => {
    const body = JSON.stringify({ error: { message: `Incorrect API key provided: ${PROVIDER_KEY}.`, type: 'invalid_request_error' } });
    const cut = body.indexOf(PROVIDER_KEY) + 6;
    provider.handler = (_req, _body, res) => {
      res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-echo-authorization': `Bearer ${PROVIDER_KEY}` });
      res.write(body.slice(0, cut));
      setTimeout(() => res.end(body.slice(cut)), 20);
    };
    const answer = await chat();
    // The key did go to the provider: it is the answer that must not carry it back.
    expect(provider.seen.at(-1)!.headers.authorization).toBe(`Bearer ${PROVIDER_KEY}`);
    expect(answer.status).toBe(401);
    expect(answer.body).not.toContain(PROVIDER_KEY);
    expect(answer.body).toBe(body.replace(PROVIDER_KEY, MASK));
    expect(answer.headers['x-echo-authorization']).toBe(`Bearer ${MASK}`);
    expect(answer.headers['content-length']).toBe(String(Buffer.byteLength(body)));
  });

  it('a streamed (chunked) error is masked too', async () => {
    provider.handler = (_req, _body, res) => {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.write('key sk-provider-');
      res.end('secret-0001 refused');
    };
    const answer = await chat();
    expect(answer.status).toBe(400);
    expect(answer.body).toBe(`key ${MASK} refused`);
  });

  it('a successful answer quoting it (a server echoing the request) is masked too; one that does not is relayed byte for byte', async () => {
    const quoting = JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion', model: 'gpt-4o-mini', choices: [], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }, echo: PROVIDER_KEY });
    const plain = 'data: {"id":"c","choices":[]}\n\ndata: [DONE]\n\n';
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(quoting);
    };
    expect(await chat()).toMatchObject({ status: 200, body: quoting.replace(PROVIDER_KEY, MASK) });
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(plain);
    };
    expect(await chat()).toMatchObject({ status: 200, body: plain });
  });

  it("is masked in the usage record too, which is logged should the call's charge be given up on", async () => {
    const quoting = JSON.stringify({ id: 'chatcmpl-2', object: 'chat.completion', model: 'gpt-4o-mini', choices: [], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }, echo: PROVIDER_KEY });
    provider.handler = (_req, _body, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-echo-authorization': `Bearer ${PROVIDER_KEY}` });
      res.end(quoting);
    };
    // Earlier calls charged first: only this one meets the refusal below.
    await server.services.gateway.drain();
    const errors = vi.spyOn(server.services.logger, 'error');
    const sql = (text: string) => server.services.db.withConnection((connection) => connection.exec(text));
    // Every charge of this merchant's usage fails, so the gateway gives the call up and logs it with its usage record.
    await sql(`CREATE FUNCTION refuse_usage_key_test() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
        IF NEW.merchant_id = '${t.merchantId}' THEN RAISE EXCEPTION 'refused (test)'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER refuse_usage_key_test BEFORE INSERT ON usage_events FOR EACH ROW EXECUTE FUNCTION refuse_usage_key_test()`);
    let given: unknown[][];
    try {
      const answer = await chat();
      expect(answer).toMatchObject({ status: 200, body: quoting.replace(PROVIDER_KEY, MASK) });
      await server.services.gateway.drain();
      given = errors.mock.calls.filter(([fields, message]) => String(message).startsWith('gateway call not charged') && (fields as { requestId?: string }).requestId === answer.headers['x-tollgate-request-id']);
    } finally {
      await sql('DROP TRIGGER refuse_usage_key_test ON usage_events; DROP FUNCTION refuse_usage_key_test()');
      errors.mockRestore();
    }
    expect(given).toHaveLength(1);
    const { usage } = given[0]![0] as { usage: { response: { body: string; headers: Record<string, string> } } };
    expect(JSON.stringify(given[0]![0])).not.toContain(PROVIDER_KEY);
    // The record still replays as the call would have been charged: only the key is masked.
    expect(usage.response.body).toBe(quoting.replace(PROVIDER_KEY, MASK));
    expect(usage.response.headers['x-echo-authorization']).toBe(`Bearer ${MASK}`);
  });
});
