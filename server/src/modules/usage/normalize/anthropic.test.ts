/**
 * Anthropic Messages beyond the recorded fixtures: beta usage.iterations, TTL split, streams cut
 * at different points, in-stream errors, older delta shapes. Shapes per anthropic-sdk types.
 */
import { describe, expect, it } from 'vitest';
import type { ProviderResponse } from '../usage.types.ts';
import { normalizeResponse } from './index.ts';

const URL_ = 'https://api.anthropic.com/v1/messages';

function call(body: unknown, extra: Partial<ProviderResponse> = {}) {
  return normalizeResponse({ url: URL_, status: 200, headers: {}, body: typeof body === 'string' ? body : JSON.stringify(body), ...extra });
}

function sse(events: [string, object][], eol = '\n', withEventLines = true): string {
  return events.map(([event, data]) => `${withEventLines ? `event: ${event}${eol}` : ''}data: ${JSON.stringify(data)}${eol}${eol}`).join('');
}

const message = (usage: object, model = 'claude-opus-4-8') => ({
  model,
  id: 'msg_1',
  type: 'message',
  role: 'assistant',
  content: [{ type: 'text', text: 'Done.' }],
  stop_reason: 'end_turn',
  stop_sequence: null,
  usage,
});

const start = (usage: object) => ['message_start', { type: 'message_start', message: { model: 'claude-sonnet-4-6', id: 'msg_2', type: 'message', role: 'assistant', content: [], stop_reason: null, usage } }] as [string, object];
const text = (t: string) => ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: t } }] as [string, object];
const delta = (usage: object, stop: string | null = 'end_turn') => ['message_delta', { type: 'message_delta', delta: { stop_reason: stop, stop_sequence: null }, usage }] as [string, object];
const stop: [string, object] = ['message_stop', { type: 'message_stop' }];

describe('Anthropic Messages', () => {
  it('input is the sum of uncached input, cache reads and cache writes, with the 1h TTL split', () => {
    const u = call(
      message({
        input_tokens: 50,
        cache_creation_input_tokens: 2000,
        cache_read_input_tokens: 10_000,
        cache_creation: { ephemeral_5m_input_tokens: 500, ephemeral_1h_input_tokens: 1500 },
        output_tokens: 300,
        output_tokens_details: { thinking_tokens: 120 },
        server_tool_use: { web_search_requests: 2 },
        service_tier: 'priority',
        inference_geo: 'us',
      }),
    );
    expect(u).toMatchObject({ inputTokens: 12_050, cachedInputTokens: 10_000, cacheWriteTokens: 2000, outputTokens: 300, reasoningTokens: 120 });
    expect(u.details).toEqual({ cache_write_5m_tokens: 500, cache_write_1h_tokens: 1500, service_tier: 'priority', inference_geo: 'us', web_search_requests: 2 });
  });

  it('cache writes without a TTL split are at the default 5 minutes', () => {
    const u = call(message({ input_tokens: 10, cache_creation_input_tokens: 700, cache_read_input_tokens: 0, output_tokens: 5 }));
    expect(u.details).toMatchObject({ cache_write_5m_tokens: 700, cache_write_1h_tokens: 0 });
  });

  it('compaction: the iterations are summed, since the top level leaves the compaction pass out', () => {
    const u = call(
      message({
        input_tokens: 900,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
        output_tokens: 150,
        iterations: [
          { type: 'compaction', input_tokens: 180_000, output_tokens: 3500, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 },
          { type: 'message', input_tokens: 900, output_tokens: 150, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 },
        ],
      }),
    );
    expect(u).toMatchObject({ inputTokens: 180_900, outputTokens: 3650 });
    expect(u.inputTokens).toBeGreaterThan(900); // top-level only would under-bill
  });

  it('fallback: the served hop is billed at the response model, a declined hop on another model goes to details', () => {
    const u = call(
      message({
        input_tokens: 5607,
        output_tokens: 698,
        cache_creation_input_tokens: 100,
        cache_read_input_tokens: 2000,
        cache_creation: { ephemeral_1h_input_tokens: 100, ephemeral_5m_input_tokens: 0 },
        iterations: [
          { type: 'message', model: 'claude-fable-5', input_tokens: 5607, output_tokens: 2, cache_creation_input_tokens: 50, cache_read_input_tokens: 1000 },
          { type: 'fallback_message', model: 'claude-opus-4-8', input_tokens: 5607, output_tokens: 698, cache_creation_input_tokens: 100, cache_read_input_tokens: 2000 },
        ],
      }),
    );
    expect(u).toMatchObject({ model: 'claude-opus-4-8', inputTokens: 7707, cachedInputTokens: 2000, cacheWriteTokens: 100, outputTokens: 698 });
    expect(u.details).toMatchObject({
      cache_write_1h_tokens: 100,
      cache_write_5m_tokens: 0,
      'other_model.claude-fable-5.input_tokens': 6657,
      'other_model.claude-fable-5.cached_input_tokens': 1000,
      'other_model.claude-fable-5.cache_write_tokens': 50,
      'other_model.claude-fable-5.output_tokens': 2,
    });
  });

  it('a 200 body of type error is not billable', () => {
    expect(call({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' }, request_id: 'req_1' })).toMatchObject({
      billable: false,
      details: { error: 'overloaded_error' },
    });
  });
});

describe('Anthropic streams', () => {
  const startUsage = { input_tokens: 2204, cache_creation_input_tokens: 0, cache_read_input_tokens: 14_336, output_tokens: 2 };

  it('uses the last cumulative message_delta, even when an earlier one exists', () => {
    const body = sse([start(startUsage), text('a'), delta({ output_tokens: 40, input_tokens: 2204 }, null), text('b'), delta({ output_tokens: 689, input_tokens: 2204, cache_read_input_tokens: 14_336 }), stop]);
    expect(call(body)).toMatchObject({ billable: true, inputTokens: 16_540, outputTokens: 689 });
  });

  it('older streams whose message_delta has only output_tokens keep message_start input', () => {
    const body = sse([start(startUsage), text('Hi'), delta({ output_tokens: 15 }), stop]);
    expect(call(body)).toMatchObject({ inputTokens: 16_540, cachedInputTokens: 14_336, outputTokens: 15 });
  });

  it('works data-only (no event lines) and with CRLF framing', () => {
    const events = [start(startUsage), text('Hi'), delta({ output_tokens: 15 }), stop];
    expect(call(sse(events, '\r\n', false))).toMatchObject({ billable: true, inputTokens: 16_540, outputTokens: 15 });
  });

  it('cut after message_start: incomplete, input known, output not guessed from the placeholder', () => {
    const body = sse([start(startUsage), text('Migrate in '), text('this order')]) + 'event: content_block_delta\ndata: {"type":"content_bl';
    const u = call(body);
    expect(u).toMatchObject({ billable: false, incomplete: true, inputTokens: 16_540, cachedInputTokens: 14_336, outputTokens: 0, streamedText: 'Migrate in this order' });
    expect(u.model).toBe('claude-sonnet-4-6');
  });

  it('cut after an intermediate message_delta (no stop_reason) is incomplete, with the partial count', () => {
    const body = sse([start(startUsage), text('a'), delta({ output_tokens: 40 }, null), text('b')]);
    expect(call(body)).toMatchObject({ billable: false, incomplete: true, outputTokens: 40, streamedText: 'ab' });
  });

  it('an error event mid-stream is not billable', () => {
    const body = sse([start(startUsage), text('Part'), ['error', { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }]]);
    expect(call(body)).toMatchObject({ billable: false, incomplete: false, details: { error: 'overloaded_error' } });
  });

  it('the same shape from an Anthropic-compatible endpoint of another provider', () => {
    const body = sse([start({ input_tokens: 30, output_tokens: 1 }), text('ok'), delta({ output_tokens: 9 }), stop]);
    const u = normalizeResponse({ url: 'https://api.deepseek.com/anthropic/v1/messages', status: 200, headers: {}, body });
    expect(u).toMatchObject({ provider: 'deepseek', api: 'messages', inputTokens: 30, outputTokens: 9 });
  });
});

describe("Anthropic's OpenAI-compatible endpoint (/v1/chat/completions)", () => {
  it('is metered as a chat completion of the Claude model it names: a success is billed', () => {
    const u = normalizeResponse({
      url: 'https://api.anthropic.com/v1/chat/completions', status: 200, headers: {},
      body: JSON.stringify({
        id: 'msg_01', object: 'chat.completion', model: 'claude-sonnet-4-6',
        choices: [{ index: 0, message: { role: 'assistant', content: 'Hello' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 20, completion_tokens: 7, total_tokens: 27 },
      }),
    });
    expect(u).toMatchObject({ provider: 'anthropic', api: 'chat.completions', model: 'claude-sonnet-4-6', inputTokens: 20, outputTokens: 7, billable: true });
  });
});
