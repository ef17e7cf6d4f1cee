/**
 * Vertex AI takes two kinds of credential: an OAuth access token as `Authorization: Bearer`, and
 * a Google API key (Vertex AI express mode's, or a Cloud API key) in `x-goog-api-key`. A stored
 * express-mode key sent as a Bearer token is refused by Google (401), so every call failed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callGateway, gatewayTenant, recordingProvider, type RecordingProvider } from '../../../test/gateway-harness.ts';
import { graphqlData, startTestServer, type TestServer } from '../../../test/server.ts';
import { providerKeyHeader } from './provider-auth.ts';

let server: TestServer;
let vertex: RecordingProvider;

beforeAll(async () => {
  [server, vertex] = await Promise.all([startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' }), recordingProvider()]);
  vertex.handler = (_req, _body, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ candidates: [{ content: { role: 'model', parts: [{ text: 'hi' }] } }], usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 1, totalTokenCount: 4 } }));
  };
});
afterAll(() => Promise.all([server?.close(), vertex?.server.close()]));

/** What Vertex AI received for a generateContent call made with `storedKey` as the merchant's Vertex key. */
async function sentWith(storedKey: string) {
  const tenant = await gatewayTenant(server, vertex.server.host);
  await graphqlData(server, `mutation($host: String!) { putGatewayHost(host: $host, provider: "vertex") { id } }`, { host: vertex.server.host }, tenant.secret);
  await graphqlData(server, `mutation($key: String!) { setProviderCredential(provider: "vertex", apiKey: $key) { id } }`, { key: storedKey }, tenant.secret);
  const answer = await callGateway(server, tenant, `http://${vertex.server.host}/v1/publishers/google/models/gemini-2.5-flash:generateContent`, {
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
  });
  expect(answer.status).toBe(200);
  return vertex.seen.at(-1)!.headers;
}

describe('the Vertex AI key the gateway sends', () => {
  it('goes in x-goog-api-key when it is an express-mode key, with no Authorization header', async () => {
    const key = 'AQ.Ab8RN6LexampleExpressModeKey_0123456789-abcdefghij';
    const headers = await sentWith(key);
    expect(headers['x-goog-api-key']).toBe(key);
    expect(headers.authorization).toBeUndefined();
  });

  it('goes in x-goog-api-key when it is a Google Cloud API key', async () => {
    const key = 'AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe';
    const headers = await sentWith(key);
    expect(headers['x-goog-api-key']).toBe(key);
    expect(headers.authorization).toBeUndefined();
  });

  it('stays a Bearer token when it is an OAuth access token', async () => {
    const token = 'ya29.a0AfB_byExampleAccessToken0123456789';
    const headers = await sentWith(token);
    expect(headers.authorization).toBe(`Bearer ${token}`);
    expect(headers['x-goog-api-key']).toBeUndefined();
  });

  it('reads a key only by its whole shape: a token that merely contains an API key prefix stays Bearer', () => {
    expect(providerKeyHeader('vertex', 'xAIzaSyNotReallyAKey')).toEqual(['authorization', 'Bearer xAIzaSyNotReallyAKey']);
    expect(providerKeyHeader('vertex', 'AQ.has spaces')).toEqual(['authorization', 'Bearer AQ.has spaces']);
    // Gemini's own API keeps its one style.
    expect(providerKeyHeader('google', 'ya29.token')).toEqual(['x-goog-api-key', 'ya29.token']);
  });
});
