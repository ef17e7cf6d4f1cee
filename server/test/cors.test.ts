/**
 * Cross-origin access: a browser app on another origin calls the API and the gateway with a
 * customer session token. Preflights are answered before any route (the GraphQL server would
 * refuse them as possible CSRF, the gateway forward them), and TOLLGATE_CORS_ORIGINS decides
 * which origins may read the answers; a provider's own CORS headers never decide it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCorsOrigins } from '../src/http/cors.ts';
import { scriptedGateway } from './scripted-gateway.ts';
import { startTestServer, type TestServer } from './server.ts';

const APP = 'https://app.example.com';
let open: TestServer;
let listed: TestServer;
const gateway = scriptedGateway(() => open);
const listedGateway = scriptedGateway(() => listed);

beforeAll(async () => {
  [open, listed] = await Promise.all([
    startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' }),
    startTestServer({ TOLLGATE_CORS_ORIGINS: `${APP}/, https://Admin.Example.com`, TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' }),
  ]);
});
afterAll(() => Promise.all([open?.close(), listed?.close()]));

const preflight = (server: TestServer, path: string, origin: string, headers = 'authorization,content-type') =>
  fetch(`${server.url}${path}`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': headers } });

describe('by default (any origin)', () => {
  it('answers the preflight of /graphql and lets the app read the answer made with its session token', async () => {
    const merchant = await open.createMerchant();
    const customer = await open.services.customers.create(merchant.id, { externalId: 'cors-1' });
    const { token } = await open.services.customerSessions.create(merchant.id, customer.id, 600);
    const answered = await preflight(open, '/graphql', APP);
    expect(answered.status).toBe(204);
    expect(answered.headers.get('access-control-allow-origin')).toBe('*');
    expect(answered.headers.get('access-control-allow-headers')).toBe('authorization,content-type');
    expect(answered.headers.get('access-control-allow-methods')).toContain('POST');
    const actual = await fetch(`${open.url}/graphql`, {
      method: 'POST',
      headers: { origin: APP, 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: '{ viewer { kind } }' }),
    });
    expect(actual.status).toBe(200);
    expect(await actual.json()).toEqual({ data: { viewer: { kind: 'CUSTOMER' } } });
    expect(actual.headers.get('access-control-allow-origin')).toBe('*');
    expect(actual.headers.get('access-control-expose-headers')).toContain('x-request-id');
  });

  it("answers the gateway's preflight itself (the provider is not called), and the provider's CORS headers give way to Tollgate's", async () => {
    const t = await gateway.tenant();
    const seen: string[] = [];
    const upstream = await gateway.provider(t, (req, res) => {
      seen.push(`${req.method} ${req.url}`);
      const body = JSON.stringify({ id: 'c', object: 'chat.completion', model: 'gpt-5.4-mini', choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } });
      res.writeHead(200, { 'content-type': 'application/json', 'access-control-allow-origin': 'https://provider.example' });
      res.end(body);
    });
    try {
      const target = `${upstream.url}/v1/chat/completions`;
      const answered = await preflight(open, `/v1/forward?u=${encodeURIComponent(target)}`, APP, 'authorization,content-type,x-stainless-os');
      expect(answered.status).toBe(204);
      expect(answered.headers.get('access-control-allow-headers')).toBe('authorization,content-type,x-stainless-os');
      expect(seen).toEqual([]);
      const response = await fetch(`${open.url}/v1/forward?u=${encodeURIComponent(target)}`, {
        method: 'POST',
        headers: { origin: APP, 'content-type': 'application/json', authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.customerId },
        body: JSON.stringify({ model: 'gpt-5.4-mini', messages: [] }),
      });
      expect(response.status).toBe(200);
      expect(response.headers.get('access-control-allow-origin')).toBe('*');
      expect(seen).toEqual(['POST /v1/chat/completions']);
    } finally {
      await upstream.close();
    }
  });

  it('leaves requests without an Origin (servers, curl) as they were', async () => {
    const response = await fetch(`${open.url}/healthz`);
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('TOLLGATE_CORS_ORIGINS', () => {
  it('allows only the origins it lists (any case, trailing slash ignored), naming the origin and varying on it', async () => {
    for (const origin of [APP, 'https://admin.example.com']) {
      const answered = await preflight(listed, '/graphql', origin);
      expect(answered.status, origin).toBe(204);
      expect(answered.headers.get('access-control-allow-origin'), origin).toBe(origin);
      expect(answered.headers.get('vary'), origin).toContain('Origin');
    }
    const refused = await preflight(listed, '/graphql', 'https://evil.example');
    expect(refused.status).toBe(204);
    expect(refused.headers.get('access-control-allow-origin')).toBeNull();
    expect(refused.headers.get('access-control-allow-headers')).toBeNull();
    const actual = await fetch(`${listed.url}/healthz`, { headers: { origin: 'https://evil.example' } });
    expect(actual.headers.get('access-control-allow-origin')).toBeNull();
  });

  it("keeps Vary: Origin on a gateway answer whose provider sends a Vary of its own", async () => {
    const t = await listedGateway.tenant();
    const upstream = await listedGateway.provider(t, (_req, res) => {
      const body = JSON.stringify({ id: 'c', object: 'chat.completion', model: 'gpt-5.4-mini', choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } });
      res.writeHead(200, { 'content-type': 'application/json', vary: 'Accept-Encoding' });
      res.end(body);
    });
    try {
      const response = await fetch(`${listed.url}/v1/forward?u=${encodeURIComponent(`${upstream.url}/v1/chat/completions`)}`, {
        method: 'POST',
        headers: { origin: APP, 'content-type': 'application/json', authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.customerId },
        body: JSON.stringify({ model: 'gpt-5.4-mini', messages: [] }),
      });
      await response.arrayBuffer();
      expect(response.status).toBe(200);
      expect(response.headers.get('access-control-allow-origin')).toBe(APP);
      expect(response.headers.get('vary')).toBe('Origin, Accept-Encoding');
    } finally {
      await upstream.close();
    }
  });

  it('parses *, none and lists', () => {
    expect(parseCorsOrigins(undefined)).toBe('*');
    expect(parseCorsOrigins(' * ')).toBe('*');
    expect(parseCorsOrigins('none')).toEqual([]);
    expect(parseCorsOrigins('https://A.example/, https://b.example')).toEqual(['https://a.example', 'https://b.example']);
    // As browsers send it: the default port is left out.
    expect(parseCorsOrigins('https://app.example.com:443, http://localhost:5173')).toEqual(['https://app.example.com', 'http://localhost:5173']);
  });

  it('stops the server at start on an entry no Origin header could ever equal, naming the setting', () => {
    for (const entry of ['app.example.com', 'https://app.example.com/app', 'https://*.example.com', 'ftp://files.example.com', 'https://app.example.com?x=1']) {
      expect(() => parseCorsOrigins(`https://ok.example, ${entry}`), entry).toThrow(`TOLLGATE_CORS_ORIGINS: "${entry}" is not an origin`);
    }
  });
});
