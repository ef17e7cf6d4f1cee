/**
 * Anthropic streams and the cache-write TTL split (usage.cache_creation): message_start sends it,
 * and a message_delta that repeats it as zeros (Anthropic-compatible servers, as with the input
 * count) must not erase it, while a delta that reports real, non-zero final counts still wins.
 */
import { describe, expect, it } from 'vitest';
import { costOf, type ProviderPrice } from '../../pricing/cost.ts';
import { normalizeResponse } from './index.ts';

const URL = 'https://api.anthropic.com/v1/messages';

const sse = (events: [string, object][]) => events.map(([event, data]) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`).join('');

function stream(startUsage: object, deltaUsage: object, { stop = true } = {}) {
  const events: [string, object][] = [
    ['message_start', { type: 'message_start', message: { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-opus-4-8', content: [], usage: startUsage } }],
    ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hi' } }],
    ['message_delta', { type: 'message_delta', delta: stop ? { stop_reason: 'end_turn' } : {}, usage: deltaUsage }],
  ];
  if (stop) events.push(['message_stop', { type: 'message_stop' }]);
  return normalizeResponse({ url: URL, status: 200, headers: {}, body: sse(events) });
}

/** Opus 4.8: $5 input, $6.25 a 5-minute write, $10 a 1-hour write, $25 output, per million. */
const OPUS: ProviderPrice = {
  provider: 'anthropic', model: 'claude-opus-4-8', currency: 'USD', effectiveFrom: new Date('2026-01-01T00:00:00Z'),
  perMillionTokens: { input: '5', cachedInput: '0.5', cacheWrite: '6.25', cacheWrite1h: '10', output: '25' },
};
/** attos of `tokens` at `usdPerMillion` (a whole number of USD, or one with two decimals). */
const attos = (tokens: number, usdPerMillion: number) => (BigInt(Math.round(usdPerMillion * 100)) * BigInt(tokens) * 10n ** 16n) / 1_000_000n;

const start = {
  input_tokens: 10,
  cache_read_input_tokens: 0,
  cache_creation_input_tokens: 300,
  cache_creation: { ephemeral_5m_input_tokens: 100, ephemeral_1h_input_tokens: 200 },
  output_tokens: 1,
};
const ZERO_SPLIT = { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 };
/** 10 input, 100 written for 5 minutes, 200 for an hour, 5 output. */
const EXPECTED_COST = attos(10, 5) + attos(100, 6.25) + attos(200, 10) + attos(5, 25);

describe('Anthropic stream: a zero TTL split in message_delta', () => {
  it('does not erase message_start’s split (the 1-hour writes keep their rate)', () => {
    const u = stream(start, { input_tokens: 0, cache_read_input_tokens: 0, cache_creation_input_tokens: 0, cache_creation: ZERO_SPLIT, output_tokens: 5 });
    expect(u).toMatchObject({ billable: true, incomplete: false, inputTokens: 310, cacheWriteTokens: 300, outputTokens: 5, details: { cache_write_5m_tokens: 100, cache_write_1h_tokens: 200 } });
    expect(costOf(u, OPUS)).toBe(EXPECTED_COST);
  });

  it('does not erase it beside a repeated, non-zero total either', () => {
    const u = stream(start, { input_tokens: 10, cache_creation_input_tokens: 300, cache_creation: ZERO_SPLIT, output_tokens: 5 });
    expect(u).toMatchObject({ inputTokens: 310, cacheWriteTokens: 300, details: { cache_write_5m_tokens: 100, cache_write_1h_tokens: 200 } });
    expect(costOf(u, OPUS)).toBe(EXPECTED_COST);
  });

  it('does not empty the cache-write total when message_start gave only the split', () => {
    const u = stream({ ...start, cache_creation_input_tokens: null }, { cache_creation_input_tokens: 0, cache_creation: ZERO_SPLIT, output_tokens: 5 });
    expect(u).toMatchObject({ inputTokens: 310, cacheWriteTokens: 300, details: { cache_write_5m_tokens: 100, cache_write_1h_tokens: 200 } });
    expect(costOf(u, OPUS)).toBe(EXPECTED_COST);
  });

  it('a zero split in both events stays zero (nothing was written)', () => {
    const u = stream({ ...start, cache_creation_input_tokens: 0, cache_creation: ZERO_SPLIT }, { cache_creation: ZERO_SPLIT, output_tokens: 5 });
    expect(u).toMatchObject({ inputTokens: 10, cacheWriteTokens: 0, details: { cache_write_5m_tokens: 0, cache_write_1h_tokens: 0 } });
  });

  it('a cut stream keeps message_start’s split as well', () => {
    const u = stream(start, { cache_creation: ZERO_SPLIT, output_tokens: 3 }, { stop: false });
    expect(u).toMatchObject({ billable: false, incomplete: true, cacheWriteTokens: 300, details: { cache_write_5m_tokens: 100, cache_write_1h_tokens: 200 } });
  });
});

describe('Anthropic stream: a non-zero TTL split in message_delta still wins', () => {
  it('the delta’s final counts replace message_start’s (server tools sampled again and wrote more)', () => {
    const u = stream(start, {
      input_tokens: 40,
      cache_read_input_tokens: 300,
      cache_creation_input_tokens: 500,
      cache_creation: { ephemeral_5m_input_tokens: 100, ephemeral_1h_input_tokens: 400 },
      output_tokens: 5,
    });
    expect(u).toMatchObject({ inputTokens: 840, cachedInputTokens: 300, cacheWriteTokens: 500, details: { cache_write_5m_tokens: 100, cache_write_1h_tokens: 400 } });
    expect(costOf(u, OPUS)).toBe(attos(40, 5) + attos(300, 0.5) + attos(100, 6.25) + attos(400, 10) + attos(5, 25));
  });

  it('a delta split with one TTL at zero is a real split, not a placeholder', () => {
    const u = stream(
      { ...start, cache_creation: { ephemeral_5m_input_tokens: 300, ephemeral_1h_input_tokens: 0 } },
      { cache_creation_input_tokens: 300, cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 300 }, output_tokens: 5 },
    );
    expect(u).toMatchObject({ cacheWriteTokens: 300, details: { cache_write_5m_tokens: 0, cache_write_1h_tokens: 300 } });
  });

  it('a delta split without a total (or with a zero one) is not cut down to message_start’s total', () => {
    // The split is its own total (see counts()): the 1-hour part must not exceed a stale total.
    for (const total of [undefined, 0]) {
      const u = stream(start, { cache_creation_input_tokens: total, cache_creation: { ephemeral_5m_input_tokens: 100, ephemeral_1h_input_tokens: 400 }, output_tokens: 5 });
      expect(u, String(total)).toMatchObject({ inputTokens: 510, cacheWriteTokens: 500, details: { cache_write_5m_tokens: 100, cache_write_1h_tokens: 400 } });
      expect(costOf(u, OPUS), String(total)).toBe(attos(10, 5) + attos(100, 6.25) + attos(400, 10) + attos(5, 25));
    }
  });

  it('a delta with no split at all keeps message_start’s (older streams)', () => {
    const u = stream(start, { output_tokens: 5 });
    expect(u).toMatchObject({ cacheWriteTokens: 300, details: { cache_write_5m_tokens: 100, cache_write_1h_tokens: 200 } });
    expect(costOf(u, OPUS)).toBe(EXPECTED_COST);
  });
});
