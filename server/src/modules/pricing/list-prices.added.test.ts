/**
 * The list prices added for Claude 3.5 Sonnet and OpenAI's audio models (gpt-4o-audio-preview,
 * the gpt-4o realtime previews, gpt-4o-mini-tts): calls cost exactly the cited rates (worked out
 * by hand in each test), through the normalizer, the lookup and costOf; a call dated before a
 * row's effectiveFrom is not costed by it; aliases left out stay unpriced.
 */
import { describe, expect, it } from 'vitest';
import { AppError } from '../../shared/errors.ts';
import { parseDecimalAttos } from '../../shared/money.ts';
import { normalizeResponse } from '../usage/normalize/index.ts';
import { blankUsage, type NormalizedUsage, type ProviderResponse } from '../usage/usage.types.ts';
import { costOf } from './cost.ts';
import { resolvePrice } from './prices.service.ts';

const usd = (text: string) => parseDecimalAttos('expected', text);

const JSON_HEADERS = { 'content-type': 'application/json' };

const response = (url: string, body: unknown, requestBody?: unknown): ProviderResponse => ({
  url, status: 200, headers: JSON_HEADERS, body: typeof body === 'string' ? body : JSON.stringify(body), requestBody,
});

/** The row that prices the usage at `at` and its cost, or null when no row does. */
function costed(usage: NormalizedUsage, at: string): { pricedAs: string; cost: bigint } | null {
  const price = resolvePrice([], usage.provider, usage.model!, new Date(at));
  return price && { pricedAs: `${price.provider}/${price.model}`, cost: costOf(usage, price) };
}

const listCost = (call: ProviderResponse, at: string) => costed(normalizeResponse(call), at);

const anthropicMessage = (model: string, usage: Record<string, unknown>) =>
  response('https://api.anthropic.com/v1/messages', { id: 'msg_1', type: 'message', role: 'assistant', model, content: [{ type: 'text', text: 'ok' }], stop_reason: 'end_turn', usage });

const openaiChat = (model: string, usage: Record<string, unknown>) =>
  response('https://api.openai.com/v1/chat/completions', {
    id: 'chatcmpl-1', object: 'chat.completion', created: 1_757_000_000, model,
    choices: [{ index: 0, message: { role: 'assistant', content: null, audio: { id: 'audio_1', data: 'AAAA', transcript: 'ok' } }, finish_reason: 'stop' }], usage,
  });

describe('Claude 3.5 Sonnet', () => {
  // 1K × $3 + 2K 5-minute writes × $3.75 + 10K reads × $0.30 + 500 × $15 = 0.003 + 0.0075 + 0.003 + 0.0075
  const usage = { input_tokens: 1_000, cache_creation_input_tokens: 2_000, cache_read_input_tokens: 10_000, output_tokens: 500 };

  it('both snapshots are priced by the undated row at $3 / $3.75 / $0.30 / $15', () => {
    expect(listCost(anthropicMessage('claude-3-5-sonnet-20241022', usage), '2025-03-01T00:00:00Z')).toEqual({ pricedAs: 'anthropic/claude-3-5-sonnet', cost: usd('0.021') });
    expect(listCost(anthropicMessage('claude-3-5-sonnet-20240620', usage), '2024-09-01T00:00:00Z')).toEqual({ pricedAs: 'anthropic/claude-3-5-sonnet', cost: usd('0.021') });
  });

  it('1-hour cache writes at $6', () => {
    const call = anthropicMessage('claude-3-5-sonnet-20241022', { ...usage, cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 2_000 } });
    // 2K × $6 in the place of 2K × $3.75: 0.021 − 0.0075 + 0.012
    expect(listCost(call, '2025-06-01T00:00:00Z')?.cost).toBe(usd('0.0255'));
  });

  it('is not costed before its launch on 2024-06-20', () => {
    expect(listCost(anthropicMessage('claude-3-5-sonnet-20240620', usage), '2024-06-19T23:59:59Z')).toBeNull();
    expect(listCost(anthropicMessage('claude-3-5-sonnet-20240620', usage), '2024-06-20T00:00:00Z')?.cost).toBe(usd('0.021'));
  });

  it('Vertex AI and Bedrock name the October snapshot their own way and get the same price', () => {
    const at = new Date('2025-03-01T00:00:00Z');
    expect(resolvePrice([], 'vertex', 'claude-3-5-sonnet-v2@20241022', at)).toMatchObject({ provider: 'anthropic', model: 'claude-3-5-sonnet-v2', perMillionTokens: { input: '3', output: '15' } });
    expect(resolvePrice([], 'vertex', 'claude-3-5-sonnet@20240620', at)).toMatchObject({ provider: 'anthropic', model: 'claude-3-5-sonnet' });
    expect(resolvePrice([], 'bedrock', 'anthropic.claude-3-5-sonnet-20241022-v2:0', at)).toMatchObject({ provider: 'anthropic', model: 'claude-3-5-sonnet' });
  });
});

describe('gpt-4o-audio-preview', () => {
  // 200 text × $2.50 + 800 audio × $40 in; 100 text × $10 + 500 audio × $80 out = 0.0005 + 0.032 + 0.001 + 0.04
  const usage = {
    prompt_tokens: 1_000, completion_tokens: 600, total_tokens: 1_600,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 800, text_tokens: 200 },
    completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 500, text_tokens: 100 },
  };

  it('prices text and audio tokens apart, each dated snapshot from its release', () => {
    expect(listCost(openaiChat('gpt-4o-audio-preview-2024-12-17', usage), '2025-03-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4o-audio-preview-2024-12-17', cost: usd('0.0735') });
    expect(listCost(openaiChat('gpt-4o-audio-preview-2025-06-03', usage), '2025-07-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4o-audio-preview-2025-06-03', cost: usd('0.0735') });
    expect(listCost(openaiChat('gpt-4o-audio-preview-2024-12-17', usage), '2024-12-16T23:59:59Z')).toBeNull();
    expect(listCost(openaiChat('gpt-4o-audio-preview-2025-06-03', usage), '2025-06-02T23:59:59Z')).toBeNull();
  });

  it('leaves the moving alias and the 2024-10-01 snapshot unpriced rather than guessed', () => {
    expect(listCost(openaiChat('gpt-4o-audio-preview', usage), '2025-07-01T00:00:00Z')).toBeNull();
    expect(listCost(openaiChat('gpt-4o-audio-preview-2024-10-01', usage), '2025-03-01T00:00:00Z')).toBeNull();
  });
});

describe('gpt-4o realtime previews', () => {
  /** A Realtime response.done's usage as recorded (the Realtime API has no HTTP response to normalize). */
  const realtime = (model: string) => blankUsage({
    provider: 'openai', api: 'realtime', model, requests: 1,
    inputTokens: 1_000, cachedInputTokens: 200, outputTokens: 300,
    details: { input_audio_tokens: 600, output_audio_tokens: 250 },
  });

  it('gpt-4o-realtime-preview snapshots: 200 text × $5 + 600 audio × $40 + 200 cached × $2.50 + 50 text × $20 + 250 audio × $80', () => {
    // 0.001 + 0.024 + 0.0005 + 0.001 + 0.02
    expect(costed(realtime('gpt-4o-realtime-preview-2024-12-17'), '2025-03-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4o-realtime-preview-2024-12-17', cost: usd('0.0465') });
    expect(costed(realtime('gpt-4o-realtime-preview-2025-06-03'), '2025-07-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4o-realtime-preview-2025-06-03', cost: usd('0.0465') });
    expect(costed(realtime('gpt-4o-realtime-preview-2024-12-17'), '2024-12-16T23:59:59Z')).toBeNull();
    expect(costed(realtime('gpt-4o-realtime-preview'), '2025-07-01T00:00:00Z')).toBeNull();
    expect(costed(realtime('gpt-4o-realtime-preview-2024-10-01'), '2025-03-01T00:00:00Z')).toBeNull();
  });

  it('gpt-4o-mini-realtime-preview, by its dated name too: 200 × $0.60 + 600 × $10 + 200 × $0.30 + 50 × $2.40 + 250 × $20', () => {
    // 0.00012 + 0.006 + 0.00006 + 0.00012 + 0.005
    expect(costed(realtime('gpt-4o-mini-realtime-preview-2024-12-17'), '2025-03-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4o-mini-realtime-preview', cost: usd('0.0113') });
    expect(costed(realtime('gpt-4o-mini-realtime-preview'), '2025-03-01T00:00:00Z')?.cost).toBe(usd('0.0113'));
    expect(costed(realtime('gpt-4o-mini-realtime-preview-2024-12-17'), '2024-12-16T23:59:59Z')).toBeNull();
  });
});

describe('gpt-4o-mini-tts', () => {
  const streamed = (model: string) => ({
    ...response('https://api.openai.com/v1/audio/speech', [
      `data: ${JSON.stringify({ type: 'speech.audio.delta', audio: 'AAAA' })}\n\n`,
      `data: ${JSON.stringify({ type: 'speech.audio.done', usage: { input_tokens: 14, output_tokens: 101, total_tokens: 115 } })}\n\n`,
    ].join(''), { model, input: 'Hello there', voice: 'coral', stream_format: 'sse' }),
    headers: { 'content-type': 'text/event-stream' },
  });

  it('a streamed call is costed by its tokens: 14 × $0.60 + 101 audio × $12 per 1M, its snapshot by the undated row', () => {
    // 0.0000084 + 0.001212
    expect(listCost(streamed('gpt-4o-mini-tts'), '2025-06-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4o-mini-tts', cost: usd('0.0012204') });
    expect(listCost(streamed('gpt-4o-mini-tts-2025-12-15'), '2026-03-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4o-mini-tts', cost: usd('0.0012204') });
    expect(listCost(streamed('gpt-4o-mini-tts-2025-03-20'), '2025-03-19T23:59:59Z')).toBeNull();
  });

  it('a call without a stream reports only characters, which have no list price: refused, not costed as free', () => {
    const binary = { ...response('https://api.openai.com/v1/audio/speech', '', { model: 'gpt-4o-mini-tts', input: 'Hello there', voice: 'coral' }), headers: { 'content-type': 'audio/mpeg' } };
    let refused: unknown;
    try {
      listCost(binary, '2025-06-01T00:00:00Z');
    } catch (error) {
      refused = error;
    }
    expect(refused).toBeInstanceOf(AppError);
    expect(refused).toMatchObject({ code: 'VALIDATION', details: { field: 'price.perCharacter' } });
  });
});
