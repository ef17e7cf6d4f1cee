import { Agent, createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { listenLocally, type LocalServer } from './local-server.ts';
import { graphqlData, type TestServer } from './server.ts';

/** A request the local provider got. */
export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A local provider that keeps every request it gets (`seen`) and answers as `handler` says (each test sets it). */
export interface RecordingProvider {
  server: LocalServer;
  seen: RecordedRequest[];
  handler: (req: IncomingMessage, body: Buffer, res: ServerResponse) => void;
}

export async function recordingProvider(): Promise<RecordingProvider> {
  const provider: Omit<RecordingProvider, 'server'> = { seen: [], handler: (_req, _body, res) => res.end() };
  const server = await listenLocally(createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      provider.seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      provider.handler(req, body, res);
    });
  }));
  return Object.assign(provider, { server });
}

export interface GatewayTenant {
  merchantId: string;
  secret: string;
  customerId: string;
  externalId: string;
}

let tenants = 0;

/**
 * A merchant with `providerHost` allowed as OpenAI and an OpenAI key stored (reserving each
 * call's maximum cost when asked), and a customer holding `credit` USD.
 */
export async function gatewayTenant(server: TestServer, providerHost: string, options: { credit?: string; reserveMaxCost?: boolean } = {}): Promise<GatewayTenant> {
  const { credit = '10', reserveMaxCost = false } = options;
  const merchant = await server.createMerchant();
  await graphqlData(server, `mutation($host: String!) { putGatewayHost(host: $host, provider: "openai") { id } }`, { host: providerHost }, merchant.secret);
  await graphqlData(server, `mutation { setProviderCredential(provider: "openai", apiKey: "sk-provider-secret-0001") { id } }`, {}, merchant.secret);
  if (reserveMaxCost) await graphqlData(server, `mutation { updateGatewaySettings(reserveMaxCost: true) { gatewayReserveMaxCost } }`, {}, merchant.secret);
  const externalId = `gateway-tenant-${++tenants}`;
  const created = await graphqlData(server, `mutation($e: String!) { createCustomer(input: { externalId: $e }) { id } }`, { e: externalId }, merchant.secret);
  const customerId = created.createCustomer.id as string;
  if (credit !== '0') {
    await graphqlData(server, `mutation($c: ID!, $a: Decimal!) { grantCredits(input: { customerId: $c, amount: $a, kind: PAID, idempotencyKey: "seed" }) { __typename } }`, { c: customerId, a: credit }, merchant.secret);
  }
  return { merchantId: merchant.id, secret: merchant.secret, customerId, externalId };
}

export interface GatewayAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * A call through the gateway, as the tenant's secret key for its customer unless `headers` say
 * otherwise, read whole. A body given as a list of pieces goes chunked (no content-length), as a
 * caller streaming its body sends it.
 */
export function callGateway(
  server: TestServer,
  tenant: GatewayTenant,
  target: string,
  init: { method?: string; headers?: Record<string, string>; body?: string | Buffer | Buffer[]; agent?: Agent } = {},
): Promise<GatewayAnswer> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(`${server.url}/v1/forward?u=${encodeURIComponent(target)}`, {
      method: init.method ?? 'POST',
      agent: init.agent,
      headers: { authorization: `Bearer ${tenant.secret}`, 'x-tollgate-customer': tenant.customerId, ...init.headers },
    });
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    request.on('error', reject);
    if (Array.isArray(init.body)) {
      for (const piece of init.body) request.write(piece);
      request.end();
    } else {
      request.end(init.body);
    }
  });
}
