/**
 * Scripted providers for gateway tests that need a provider answering byte for byte as they
 * script it (compressed bodies, huge documents, streams paced by 'drain'): a tenant charging 25%
 * over cost, a local provider allowed for it, a call read as raw bytes, and its charges.
 */
import { createServer, request as httpRequest, type IncomingHttpHeaders, type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGzip } from 'node:zlib';
import type { TestServer } from './server.ts';

export interface Tenant {
  merchantId: string;
  secret: string;
  customerId: string;
}

/** Helpers bound to the test file's server, read when they run (it starts in beforeAll). */
export function scriptedGateway(serverOf: () => TestServer) {
  async function gql<T = Record<string, unknown>>(query: string, variables: Record<string, unknown>, token: string): Promise<T> {
    const response = await serverOf().graphql<T>(query, variables, token);
    if (response.errors) throw new Error(JSON.stringify(response.errors));
    return response.data as T;
  }

  /** A merchant charging 25% over cost, with an OpenAI key stored and a customer holding credit. */
  async function tenant(policy: 'ESTIMATE' | 'NO_CHARGE' = 'ESTIMATE'): Promise<Tenant> {
    const server = serverOf();
    const merchant = await server.createMerchant();
    await gql(`mutation($p: String!, $k: String!) { setProviderCredential(provider: $p, apiKey: $k) { id } }`, { p: 'openai', k: 'openai-provider-key-0001' }, merchant.secret);
    await gql(`mutation($policy: IncompleteStreamPolicy!) { updateMerchant(incompleteStreamPolicy: $policy) { id } }`, { policy }, merchant.secret);
    await server.services.priceRules.put(merchant.id, { name: 'markup', type: 'MARKUP', config: { percent: '25' }, effectiveFrom: new Date('2026-01-01') });
    const created = await gql<{ createCustomer: { id: string } }>(`mutation { createCustomer(input: { externalId: "user-1" }) { id } }`, {}, merchant.secret);
    const customerId = created.createCustomer.id;
    await gql(`mutation($c: ID!) { grantCredits(input: { customerId: $c, amount: "10", kind: PAID, idempotencyKey: "seed" }) { __typename } }`, { c: customerId }, merchant.secret);
    return { merchantId: merchant.id, secret: merchant.secret, customerId };
  }

  /** A scripted OpenAI provider on a local port, allowed for the tenant. */
  async function provider(t: Tenant, handler: RequestListener): Promise<{ url: string; close: () => Promise<void> }> {
    const scripted = createServer((req, res) => {
      req.resume();
      handler(req, res);
    });
    await new Promise<void>((resolve) => scripted.listen(0, '127.0.0.1', resolve));
    const host = `127.0.0.1:${(scripted.address() as AddressInfo).port}`;
    await gql(`mutation($host: String!) { putGatewayHost(host: $host, provider: "openai") { id } }`, { host }, t.secret);
    return {
      url: `http://${host}`,
      close: () => {
        scripted.closeAllConnections();
        return new Promise((resolve) => scripted.close(() => resolve()));
      },
    };
  }

  /** A call through the gateway, read as raw bytes: nothing on the caller's side decodes them. */
  function call(t: Tenant, target: string, body: unknown): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const request = httpRequest(`${serverOf().url}/v1/forward?u=${encodeURIComponent(target)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${t.secret}`, 'x-tollgate-customer': t.customerId },
      });
      request.on('response', (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, body: Buffer.concat(chunks) }));
        response.on('error', reject);
      });
      request.on('error', reject);
      request.end(JSON.stringify(body));
    });
  }

  /** The tenant's usage events, once its `count` calls are logged and charged. */
  async function charges(t: Tenant, count: number) {
    const server = serverOf();
    const deadline = Date.now() + 10_000;
    while ((await server.services.prisma.gatewayRequest.count({ where: { merchantId: t.merchantId } })) < count) {
      if (Date.now() > deadline) throw new Error(`expected ${count} logged gateway calls`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await server.services.gateway.drain();
    const events = await server.services.prisma.usageEvent.findMany({ where: { merchantId: t.merchantId }, orderBy: { createdAt: 'asc' } });
    return events.map((event) => ({ charge: BigInt(event.chargeAttos.toFixed(0)), status: event.status, estimated: event.estimated, cut: (event.metadata as { cut?: boolean }).cut }));
  }

  return { gql, tenant, provider, call, charges };
}

/** Writes `chunks` one after the other, each once the previous one drained. */
export async function writeAll(res: NodeJS.WritableStream, chunks: Buffer[]): Promise<void> {
  for (const chunk of chunks) {
    if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
  }
}

/** `events` gzip-compressed as a provider streams them: flushed after each, so each decodes on arrival. */
export async function gzipStream(events: Buffer[]): Promise<Buffer[]> {
  const gzip = createGzip();
  const pieces: Buffer[] = [];
  let current: Buffer[] = [];
  gzip.on('data', (data: Buffer) => current.push(data));
  for (const event of events) {
    gzip.write(event);
    await new Promise<void>((resolve) => gzip.flush(() => resolve()));
    pieces.push(Buffer.concat(current));
    current = [];
  }
  await new Promise((ended) => {
    gzip.once('end', ended);
    gzip.end();
  });
  pieces.push(Buffer.concat(current));
  return pieces;
}
