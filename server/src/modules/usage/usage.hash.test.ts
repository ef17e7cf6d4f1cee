import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { requestHash } from '../ledger/ledger.service.ts';
import { parseDecimalNanos } from '../../shared/money.ts';

/**
 * A retry is told from a reuse of its key by a hash of the record. Clients serialize the same
 * record with its keys in any order (a map, another library, another language): a retry must
 * still replay, and events stored before the hash sorted keys must still replay as sent.
 */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({}, { clock: () => new Date('2026-06-15T12:00:00Z') });
});
afterAll(() => server?.close());

async function setup() {
  const merchant = await server.createMerchant(`m-${randomUUID().slice(0, 8)}`);
  const customer = await server.services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
  await server.services.ledger.grantCredits(merchant.id, { kind: 'system', apiKeyId: null }, {
    customerId: customer.id, currency: 'USD', amountNanos: parseDecimalNanos('amount', '10.00'), kind: 'PAID', idempotencyKey: 'seed',
  });
  for (const key of ['units', 'searches']) {
    await server.services.meters.create(merchant.id, { key, name: key, unit: 'unit', source: 'QUANTITY' });
    await server.services.priceRules.put(merchant.id, { name: key, type: 'FLAT', meterKey: key, config: { unitPrice: '0.01' }, effectiveFrom: new Date('2026-01-01') });
  }
  /** POST /v1/usage with the body's text as given, so its keys go in the order written. */
  const post = async (text: string) => {
    const response = await fetch(`${server.url}/v1/usage`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${merchant.secret}` }, body: text });
    return { status: response.status, body: (await response.json()) as any };
  };
  const balance = async () => (await server.services.ledgerQueries.wallet(merchant.id, customer.id, 'USD')).balance;
  const events = () => server.services.prisma.usageEvent.count({ where: { merchantId: merchant.id } });
  return { merchant, customer, post, balance, events };
}

describe('replaying a usage record', () => {
  // A usage record held nested objects only under keys that are not its fields, which are now
  // refused (see usage.strict-input.test.ts): its own keys, and the event's, are what a client reorders.
  it('with its keys in another order is a replay: nothing is charged again', async () => {
    const { customer, post, balance, events } = await setup();
    const first = await post(`{"customer":"${customer.externalId}","idempotencyKey":"k-usage",
      "usage":{"provider":"openai","model":"gpt-5.4-mini","api":"chat.completions","inputTokens":1000,"cachedInputTokens":10,"outputTokens":100}}`);
    expect(first).toMatchObject({ status: 200, body: { replayed: false, event: { status: 'CHARGED' } } });
    const after = await balance();
    const again = await post(`{"usage":{"outputTokens":100,"cachedInputTokens":10,"inputTokens":1000,"api":"chat.completions","model":"gpt-5.4-mini","provider":"openai"},
      "idempotencyKey":"k-usage","customer":"${customer.externalId}"}`);
    expect(again).toMatchObject({ status: 200, body: { replayed: true, event: { id: first.body.event.id, charge: first.body.event.charge } } });
    expect(await balance()).toBe(after);
    expect(await events()).toBe(1);
  });

  it('with its quantities in another order is a replay', async () => {
    const { customer, post, balance, events } = await setup();
    const first = await post(`{"customer":"${customer.id}","idempotencyKey":"k-quantities","quantities":{"units":3,"searches":"2"},"metadata":{"team":"a","run":1}}`);
    expect(first).toMatchObject({ status: 200, body: { replayed: false, event: { status: 'CHARGED', charge: '0.05' } } });
    const after = await balance();
    const again = await post(`{"metadata":{"run":1,"team":"a"},"quantities":{"searches":"2","units":3},"idempotencyKey":"k-quantities","customer":"${customer.id}"}`);
    expect(again).toMatchObject({ status: 200, body: { replayed: true, event: { id: first.body.event.id } } });
    expect(await balance()).toBe(after);
    expect(await events()).toBe(1);
  });

  it('with a count sent as null instead of left out is a replay', async () => {
    const { customer, post, balance, events } = await setup();
    const first = await post(`{"customer":"${customer.id}","idempotencyKey":"k-null","usage":{"provider":"openai","model":"gpt-5.4-mini","inputTokens":1000,"outputTokens":10}}`);
    expect(first).toMatchObject({ status: 200, body: { replayed: false } });
    const after = await balance();
    const again = await post(`{"customer":"${customer.id}","idempotencyKey":"k-null","usage":{"provider":"openai","model":"gpt-5.4-mini","inputTokens":1000,"outputTokens":10,"cachedInputTokens":null}}`);
    expect(again).toMatchObject({ status: 200, body: { replayed: true, event: { id: first.body.event.id } } });
    expect(await balance()).toBe(after);
    expect(await events()).toBe(1);
  });

  it('of a provider response named as another provider is a CONFLICT, not a replay of the first', async () => {
    const { customer, post, balance } = await setup();
    const body = JSON.stringify({ id: 'x', model: 'gpt-5.4-mini', usage: { prompt_tokens: 1000, completion_tokens: 10, total_tokens: 1010 } });
    const response = (provider: string) => ({ url: 'https://llm.example.com/v1/chat/completions', status: 200, body, provider });
    const first = await post(JSON.stringify({ customer: customer.id, idempotencyKey: 'k-provider', response: response('openai') }));
    expect(first).toMatchObject({ status: 200, body: { event: { provider: 'openai' } } });
    const after = await balance();
    expect(await post(JSON.stringify({ customer: customer.id, idempotencyKey: 'k-provider', response: response('groq') }))).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT' } } });
    expect(await post(JSON.stringify({ customer: customer.id, idempotencyKey: 'k-provider', response: response('openai') }))).toMatchObject({ status: 200, body: { replayed: true } });
    expect(await balance()).toBe(after);
  });

  it('with different content is still a CONFLICT, however its keys are ordered', async () => {
    const { customer, post, balance } = await setup();
    await post(`{"customer":"${customer.id}","idempotencyKey":"k-usage","usage":{"provider":"openai","model":"gpt-5.4-mini","inputTokens":1000,"outputTokens":2}}`);
    await post(`{"customer":"${customer.id}","idempotencyKey":"k-quantities","quantities":{"units":3,"searches":2}}`);
    const after = await balance();
    for (const changed of [
      `{"usage":{"outputTokens":2,"inputTokens":1001,"model":"gpt-5.4-mini","provider":"openai"},"idempotencyKey":"k-usage","customer":"${customer.id}"}`,
      // The same counts under each other's names.
      `{"usage":{"outputTokens":1000,"inputTokens":2,"model":"gpt-5.4-mini","provider":"openai"},"idempotencyKey":"k-usage","customer":"${customer.id}"}`,
      `{"quantities":{"searches":3,"units":2},"idempotencyKey":"k-quantities","customer":"${customer.id}"}`,
      // Another quantity written as text ("3" is the same quantity as 3: see usage.input-consistency.test.ts).
      `{"quantities":{"searches":2,"units":"3.5"},"idempotencyKey":"k-quantities","customer":"${customer.id}"}`,
    ]) {
      expect(await post(changed), changed).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT', field: 'idempotencyKey' } } });
    }
    expect(await balance()).toBe(after);
  });

  it('recorded before keys were sorted (its hash of the record as sent) replays when sent as before', async () => {
    const { merchant, customer, post, balance } = await setup();
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', outputTokens: 100, inputTokens: 1000 };
    const quantities = { units: 3, searches: 2 };
    const sent = JSON.stringify({ customer: customer.externalId, idempotencyKey: 'k-old', usage, quantities });
    expect(await post(sent)).toMatchObject({ status: 200, body: { replayed: false } });
    const stored = await server.services.prisma.usageEvent.findFirstOrThrow({ where: { merchantId: merchant.id, idempotencyKey: 'k-old' } });
    const metadata = stored.metadata as Record<string, unknown>;
    // The hash as earlier versions wrote it: the objects as sent, keys unsorted, the customer as named.
    const parts = (usageOf: object, stated: object) => ({ customer: customer.externalId, currency: 'USD', occurredAt: null, usage: usageOf, response: null, stated });
    const sorted = { inputTokens: 1000, model: 'gpt-5.4-mini', outputTokens: 100, provider: 'openai' };
    expect(metadata.requestHash).toBe(requestHash({ ...parts(sorted, { searches: 2, units: 3 }), customer: customer.id }));
    const oldForm = requestHash(parts(usage, quantities));
    expect(oldForm).not.toBe(metadata.requestHash);
    await server.services.prisma.usageEvent.update({ where: { id: stored.id }, data: { metadata: { ...metadata, requestHash: oldForm } as object } });
    const after = await balance();
    expect(await post(sent)).toMatchObject({ status: 200, body: { replayed: true, event: { id: stored.id } } });
    expect(await balance()).toBe(after);
    // Its hash still tells a different record apart.
    const changed = JSON.stringify({ customer: customer.externalId, idempotencyKey: 'k-old', usage: { ...usage, inputTokens: 999 }, quantities });
    expect(await post(changed)).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT' } } });
  });

  it('naming its customer by the other identifier (externalId or id) is a replay', async () => {
    const { merchant, customer, post, balance, events } = await setup();
    const record = (name: string, key: string) => JSON.stringify({ customer: name, idempotencyKey: key, usage: { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 10 } });
    for (const [first, retry, key] of [[customer.externalId, customer.id, 'k-by-external'], [customer.id, customer.externalId, 'k-by-id'], [customer.id, customer.id.toUpperCase(), 'k-by-upper']] as const) {
      const answer = await post(record(first, key));
      expect(answer).toMatchObject({ status: 200, body: { replayed: false, event: { status: 'CHARGED' } } });
      const after = await balance();
      expect(await post(record(retry, key)), key).toMatchObject({ status: 200, body: { replayed: true, event: { id: answer.body.event.id } } });
      expect(await balance()).toBe(after);
    }
    expect(await events()).toBe(3);
    // Another customer is still another record.
    const other = await server.services.customers.create(merchant.id, { externalId: `user-${randomUUID().slice(0, 8)}` });
    expect(await post(record(other.id, 'k-by-id'))).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT' } } });
  });

  it('recorded when its hash named the customer as the caller did replays, by that name', async () => {
    const { merchant, customer, post, balance } = await setup();
    const usage = { inputTokens: 1000, model: 'gpt-5.4-mini', outputTokens: 100, provider: 'openai' };
    const sent = JSON.stringify({ customer: customer.externalId, idempotencyKey: 'k-named', usage });
    expect(await post(sent)).toMatchObject({ status: 200, body: { replayed: false } });
    const stored = await server.services.prisma.usageEvent.findFirstOrThrow({ where: { merchantId: merchant.id, idempotencyKey: 'k-named' } });
    const metadata = stored.metadata as Record<string, unknown>;
    const byName = requestHash({ customer: customer.externalId, currency: 'USD', occurredAt: null, usage, response: null, stated: {} });
    expect(byName).not.toBe(metadata.requestHash);
    await server.services.prisma.usageEvent.update({ where: { id: stored.id }, data: { metadata: { ...metadata, requestHash: byName } as object } });
    const after = await balance();
    expect(await post(sent)).toMatchObject({ status: 200, body: { replayed: true, event: { id: stored.id } } });
    expect(await post(JSON.stringify({ customer: customer.externalId, idempotencyKey: 'k-named', usage: { ...usage, outputTokens: 101 } }))).toMatchObject({ status: 409 });
    expect(await balance()).toBe(after);
  });
});

describe('a key sent twice in one batch', () => {
  it('for the same record answers the second as a replay of the first, charged once; for another record, CONFLICT', async () => {
    const { merchant, customer, balance, events } = await setup();
    const usage = { provider: 'openai', model: 'gpt-5.4-mini', inputTokens: 1000, outputTokens: 10 };
    const before = await balance();
    const results = await server.services.usage.record(merchant.id, { kind: 'system', apiKeyId: null }, [
      { customer: customer.id, idempotencyKey: 'twice', usage },
      { customer: customer.externalId, idempotencyKey: 'twice', usage: { ...usage } },
      { customer: customer.id, idempotencyKey: 'twice', usage: { ...usage, outputTokens: 11 } },
    ]);
    expect(results.map((result) => (result.ok ? ['ok', result.replayed] : ['error', result.error.code]))).toEqual([['ok', false], ['ok', true], ['error', 'CONFLICT']]);
    const [first, second] = results;
    expect(first!.ok && second!.ok && second!.event.id === first!.event.id && second!.event.charge === first!.event.charge).toBe(true);
    expect(await events()).toBe(1);
    expect(before - (await balance())).toBe(first!.ok ? parseDecimalNanos('charge', first!.event.charge) : -1n);
  });

  it('naming its provider by an alias, or in another case, is a replay (usage record or response)', async () => {
    const { customer, post, balance, events } = await setup();
    const record = (provider: string) => JSON.stringify({ customer: customer.id, idempotencyKey: 'k-alias', usage: { provider, model: 'claude-haiku-4-5', inputTokens: 1200, outputTokens: 300 } });
    const first = await post(record('anthropic'));
    expect(first).toMatchObject({ status: 200, body: { replayed: false, event: { provider: 'anthropic' } } });
    const body = JSON.stringify({ id: 'x', model: 'meta-llama/Llama-3.3-70B-Instruct-Turbo', usage: { prompt_tokens: 1000, completion_tokens: 10, total_tokens: 1010 } });
    const response = (provider: string) => JSON.stringify({ customer: customer.id, idempotencyKey: 'k-alias-response', response: { url: 'https://llm.example.com/v1/chat/completions', status: 200, body, provider } });
    const byId = await post(response('together'));
    expect(byId).toMatchObject({ status: 200, body: { replayed: false, event: { provider: 'together' } } });
    const after = await balance();
    for (const retry of ['claude', 'Anthropic', ' CLAUDE ']) {
      expect(await post(record(retry)), retry).toMatchObject({ status: 200, body: { replayed: true, event: { id: first.body.event.id } } });
    }
    expect(await post(response('together-ai'))).toMatchObject({ status: 200, body: { replayed: true, event: { id: byId.body.event.id } } });
    expect(await balance()).toBe(after);
    expect(await events()).toBe(2);
    // Another provider is still another record.
    expect(await post(record('openai'))).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT' } } });
  });

  it('recorded when its hash named the provider as the caller did replays, by that name', async () => {
    const { merchant, customer, post, balance } = await setup();
    const usage = { inputTokens: 1000, model: 'claude-haiku-4-5', outputTokens: 100, provider: 'claude' };
    const sent = JSON.stringify({ customer: customer.id, idempotencyKey: 'k-provider-named', usage });
    expect(await post(sent)).toMatchObject({ status: 200, body: { replayed: false } });
    const stored = await server.services.prisma.usageEvent.findFirstOrThrow({ where: { merchantId: merchant.id, idempotencyKey: 'k-provider-named' } });
    const metadata = stored.metadata as Record<string, unknown>;
    const asNamed = requestHash({ customer: customer.id, currency: 'USD', occurredAt: null, usage, response: null, stated: {} });
    expect(asNamed).not.toBe(metadata.requestHash);
    await server.services.prisma.usageEvent.update({ where: { id: stored.id }, data: { metadata: { ...metadata, requestHash: asNamed } as object } });
    const after = await balance();
    expect(await post(sent)).toMatchObject({ status: 200, body: { replayed: true, event: { id: stored.id } } });
    expect(await post(JSON.stringify({ customer: customer.id, idempotencyKey: 'k-provider-named', usage: { ...usage, outputTokens: 101 } }))).toMatchObject({ status: 409 });
    expect(await balance()).toBe(after);
  });
});
