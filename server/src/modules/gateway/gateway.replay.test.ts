import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalNanos } from '../../shared/money.ts';
import { SYSTEM_ACTOR } from '../ledger/ledger.store.ts';
import { normalizeResponse } from '../usage/normalize/index.ts';
import type { UsageRecordInput } from '../usage/usage.service.ts';
import type { ProviderResponse } from '../usage/usage.types.ts';
import { replayable } from './gateway.settlement.ts';

/** A gateway call given up on is logged with a record an operator replays through POST /v1/usage: it must charge as the gateway would have. */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

async function setup() {
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  const customer = async () => {
    const { id } = await server.services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
    await server.services.ledger.grantCredits(merchant.id, SYSTEM_ACTOR, { customerId: id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '10.00'), kind: 'PAID', idempotencyKey: `seed-${id}` });
    return id;
  };
  /** The record GatewayService.usageOf builds for a finished call. */
  const gatewayRecord = (customerId: string, response: ProviderResponse): UsageRecordInput => {
    const requestId = randomUUID();
    return {
      customer: customerId, idempotencyKey: `gateway:${requestId}`, timestamp: new Date(), currency: 'USD', response, normalized: normalizeResponse(response),
      metadata: { gatewayRequestId: requestId },
    };
  };
  const settle = async (record: UsageRecordInput) => {
    const [result] = await server.services.usage.record(merchant.id, SYSTEM_ACTOR, [record]);
    if (!result!.ok) throw result!.error;
    return result!.event;
  };
  /** The operator replaying the logged record (a JSON log line) through POST /v1/usage. */
  const replay = async (record: UsageRecordInput) => {
    const logged = JSON.parse(JSON.stringify(replayable(record)));
    const response = await fetch(`${server.url}/v1/usage`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` }, body: JSON.stringify(logged),
    });
    return { status: response.status, body: (await response.json()) as { event?: { cost: string; charge: string; costProblem?: string | null } } };
  };
  const balance = async (customerId: string) => (await server.services.ledgerQueries.wallet(merchant.id, customerId, 'USD')).balance;
  return { merchant, customer, gatewayRecord, settle, replay, balance };
}

describe('the usage record logged for a gateway call given up on, replayed', () => {
  it('charges an OpenRouter call what OpenRouter reported, as the gateway would have', async () => {
    const t = await setup();
    const response: ProviderResponse = {
      url: 'https://openrouter.ai/api/v1/chat/completions', status: 200, headers: {}, provider: 'openrouter',
      body: '{"id":"gen-1","object":"chat.completion","model":"anthropic/claude-sonnet-4.6","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100,"cost":0.5}}',
    };
    const charged = await t.settle(t.gatewayRecord(await t.customer(), response));
    expect({ cost: charged.cost, charge: charged.charge }).toEqual({ cost: '0.50', charge: '0.50' });
    const replayed = await t.replay(t.gatewayRecord(await t.customer(), response));
    expect(replayed.status).toBe(200);
    expect({ cost: replayed.body.event?.cost, charge: replayed.body.event?.charge, costProblem: replayed.body.event?.costProblem ?? null }).toEqual({ cost: '0.50', charge: '0.50', costProblem: null });
  });

  it('does not charge a Replicate prediction a second time when a later poll of it was charged', async () => {
    const t = await setup();
    await server.services.meters.create(t.merchant.id, { key: 'images', name: 'Images', unit: 'image', source: 'IMAGES' });
    await server.services.priceRules.put(t.merchant.id, { name: 'images', type: 'FLAT', meterKey: 'images', config: { unitPrice: '1.00' }, effectiveFrom: new Date('2026-01-01') });
    const poll: ProviderResponse = {
      url: 'https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu', status: 200, headers: {}, provider: 'replicate',
      body: JSON.stringify({ id: 'gm3qorzdhgbfurvjtvhg6dckhu', model: 'black-forest-labs/flux-schnell', version: 'dp-1', input: { prompt: 'x' }, error: null, status: 'succeeded', output: ['https://replicate.delivery/a.webp'], metrics: { predict_time: 1.82 } }),
    };
    const customer = await t.customer();
    const givenUp = t.gatewayRecord(customer, poll);
    await t.settle(t.gatewayRecord(customer, poll));
    expect(await t.balance(customer)).toBe(parseDecimalNanos('x', '9.00'));
    expect((await t.replay(givenUp)).status).toBe(200);
    expect(await t.balance(customer)).toBe(parseDecimalNanos('x', '9.00'));
  });
});
