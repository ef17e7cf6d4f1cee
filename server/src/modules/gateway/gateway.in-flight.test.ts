import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { PROVIDER_FIXTURES } from '../../../test/fake-provider.ts';
import { scriptedGateway } from '../../../test/scripted-gateway.ts';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { MAX_HOLD_TTL_SECONDS } from '../ledger/ledger.service.ts';

/** What happens to a call while it runs: its customer archived, its reservation outlasted, a timeout of days. */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' });
});
afterAll(() => server?.close());

const { tenant, provider, call, charges } = scriptedGateway(() => server);
const completion = () => readFileSync(new URL('openai_chat_completion.json', PROVIDER_FIXTURES));

function signal(): [Promise<void>, () => void] {
  let fire!: () => void;
  const fired = new Promise<void>((resolve) => (fire = resolve));
  return [fired, fire];
}

describe('a call in flight when its customer is archived', () => {
  it('is charged: the provider served it, and it started before the archiving', async () => {
    const t = await tenant();
    const [started, start] = signal();
    const [released, release] = signal();
    const scripted = await provider(t, async (_req, res) => {
      start();
      await released;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(completion());
    });
    try {
      const pending = call(t, `${scripted.url}/v1/chat/completions`, { model: 'gpt-5.4-mini', messages: [{ role: 'user', content: 'hi' }] });
      await started;
      await server.services.customers.archive(t.merchantId, t.customerId);
      release();
      expect((await pending).status).toBe(200);
      const events = await charges(t, 1);
      const [log] = await server.services.prisma.gatewayRequest.findMany({ where: { merchantId: t.merchantId } });
      expect({ outcome: log!.outcome, charged: events.map((e) => e.charge > 0n) }).toEqual({ outcome: 'COMPLETED', charged: [true] });
    } finally {
      release();
      await scripted.close();
    }
  });
});

describe("a streamed call that runs longer than its reservation's TTL (timeout + idle timeout + 60 s)", () => {
  it('keeps its reservation while it streams: a second call the credit cannot also cover gets 402', async () => {
    let skew = 0;
    const clocked = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' }, { clock: () => new Date(Date.now() + skew) });
    const gw = scriptedGateway(() => clocked);
    const [finishedA, finishA] = signal();
    try {
      const t = await gw.tenant();
      await gw.gql(`mutation { updateGatewaySettings(reserveMaxCost: true) { gatewayReserveMaxCost } }`, {}, t.secret);
      const chunk = (extra: Record<string, unknown>) => `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'gpt-5.4-mini', ...extra })}\n\n`;
      let calls = 0;
      const [startedA, startA] = signal();
      const scripted = await gw.provider(t, async (_req, res) => {
        const first = ++calls === 1;
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(chunk({ choices: [{ index: 0, delta: { content: 'hi' }, finish_reason: null }] }));
        if (first) {
          startA();
          await finishedA;
        }
        res.write(chunk({ choices: [], usage: { prompt_tokens: 10, completion_tokens: 1_000_000, total_tokens: 1_000_010 } }));
        res.end('data: [DONE]\n\n');
      });
      const request = { model: 'gpt-5.4-mini', stream: true, max_tokens: 1_400_000, messages: [{ role: 'user', content: 'hi' }] };
      const target = `${scripted.url}/v1/chat/completions`;
      const a = gw.call(t, target, request);
      await startedA;
      expect((await clocked.services.ledgerQueries.wallet(t.merchantId, t.customerId, 'USD')).held).toBeGreaterThan(0n);
      // Nine minutes pass (the TTL is eight) with A still streaming and silent: its renewal timer
      // fires every third of the TTL meanwhile, here at each step of the clock.
      const ttlMs = (Math.ceil((clocked.config.gateway.timeoutMs + clocked.config.gateway.idleTimeoutMs) / 1000) + 60) * 1000;
      for (skew = ttlMs / 3; skew < 9 * 60_000; skew += ttlMs / 3) await clocked.services.gateway.renewHolds();
      skew = 9 * 60_000;
      const b = await gw.call(t, target, request);
      finishA();
      await a;
      const events = await gw.charges(t, b.status === 200 ? 2 : 1);
      expect({ statusB: b.status, statuses: events.map((e) => e.status) }).toEqual({ statusB: 402, statuses: ['CHARGED'] });
      // A finished call's reservation is no longer renewed.
      const extended = vi.spyOn(clocked.services.ledger, 'extendHold');
      await clocked.services.gateway.renewHolds();
      expect(extended).not.toHaveBeenCalled();
      await scripted.close();
    } finally {
      finishA();
      await clocked.close();
    }
  });
});

describe('a gateway timeout of days', () => {
  it('reserves calls with a hold of the longest TTL the ledger allows, instead of failing them 400', async () => {
    const days = await startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true', TOLLGATE_GATEWAY_TIMEOUT_MS: String(7 * 24 * 3600 * 1000) });
    const gw = scriptedGateway(() => days);
    try {
      const t = await gw.tenant();
      await gw.gql(`mutation { updateGatewaySettings(reserveMaxCost: true) { gatewayReserveMaxCost } }`, {}, t.secret);
      const scripted = await gw.provider(t, (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(completion());
      });
      const response = await gw.call(t, `${scripted.url}/v1/chat/completions`, { model: 'gpt-5.4-mini', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] });
      await scripted.close();
      expect({ status: response.status, body: response.status === 200 ? null : JSON.parse(response.body.toString()) }).toEqual({ status: 200, body: null });
      expect((await gw.charges(t, 1)).map((e) => e.status)).toEqual(['CHARGED']);
      const [hold] = await days.services.prisma.hold.findMany({ where: { merchantId: t.merchantId } });
      expect({ ttlSeconds: (hold!.expiresAt.getTime() - hold!.createdAt.getTime()) / 1000, status: hold!.status }).toEqual({ ttlSeconds: MAX_HOLD_TTL_SECONDS, status: 'RELEASED' });
    } finally {
      await days.close();
    }
  });
});
