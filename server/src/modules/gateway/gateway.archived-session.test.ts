/**
 * A customer session token whose customer is archived has ended: the gateway refuses it 401
 * UNAUTHENTICATED, as GraphQL does, even while it holds the token's check from an earlier call.
 * A secret key naming the archived customer is still refused 403 CUSTOMER_ARCHIVED.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callGateway, gatewayTenant, recordingProvider, type GatewayTenant, type RecordingProvider } from '../../../test/gateway-harness.ts';
import { graphqlData, startTestServer, type TestServer } from '../../../test/server.ts';

let server: TestServer;
let provider: RecordingProvider;

beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' });
  provider = await recordingProvider();
  provider.handler = (req, _body, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    if (req.url?.includes('/chat/completions')) {
      res.end(JSON.stringify({ id: 'c1', object: 'chat.completion', model: 'gpt-4o-mini', choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }], usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 } }));
    } else res.end('{"object":"list","data":[]}');
  };
});
afterAll(async () => {
  await Promise.all([server?.close(), provider?.server.close()]);
});

async function session(t: GatewayTenant): Promise<string> {
  const data = await graphqlData(server, `mutation($c: ID!) { createCustomerSession(customerId: $c) { token } }`, { c: t.customerId }, t.secret);
  return data.createCustomerSession.token as string;
}

const models = (t: GatewayTenant, headers: Record<string, string>) => callGateway(server, t, `http://${provider.server.host}/v1/models`, { method: 'GET', headers });
const errorOf = (answer: { status: number; body: string }) => ({ status: answer.status, code: (JSON.parse(answer.body) as { error: { code: string } }).error.code });

describe('a customer session token whose customer is archived', () => {
  it('is refused 401 UNAUTHENTICATED by the gateway as by GraphQL, though the gateway checked the token a moment before; a secret key naming the customer gets 403 CUSTOMER_ARCHIVED', async () => {
    const t = await gatewayTenant(server, provider.server.host);
    const token = await session(t);
    // Checked and cached by the gateway while the customer is active.
    expect((await models(t, { authorization: `Bearer ${token}`, 'x-tollgate-customer': '' })).status).toBe(200);
    expect((await models(t, { authorization: `Bearer ${token}`, 'x-tollgate-customer': t.externalId })).status).toBe(200);
    await server.services.customers.archive(t.merchantId, t.customerId);
    provider.seen.length = 0;

    expect(errorOf(await models(t, { authorization: `Bearer ${token}`, 'x-tollgate-customer': '' }))).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    expect(errorOf(await models(t, { authorization: `Bearer ${token}`, 'x-tollgate-customer': t.externalId }))).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    const graphql = await server.graphql(`{ viewer { customer { id } } }`, {}, token);
    expect(graphql.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect(errorOf(await models(t, {}))).toEqual({ status: 403, code: 'CUSTOMER_ARCHIVED' });
    expect(provider.seen).toEqual([]);
  });

  it('is refused 401 when the customer is archived behind the gate\'s back and the reservation finds it', async () => {
    const t = await gatewayTenant(server, provider.server.host, { reserveMaxCost: true });
    const token = await session(t);
    const chat = () => callGateway(server, t, `http://${provider.server.host}/v1/chat/completions`, {
      headers: { authorization: `Bearer ${token}`, 'x-tollgate-customer': '', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 16 }),
    });
    expect((await chat()).status).toBe(200);
    provider.seen.length = 0;
    // Straight in the database: no change event reaches the gateway's caches.
    await server.services.prisma.customer.update({ where: { id: t.customerId }, data: { archivedAt: new Date() } });
    expect(errorOf(await chat())).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    expect(provider.seen).toEqual([]);
  });
});
