/**
 * Edges of the normalizers the provider tests leave out: a blank provider override, streams
 * that open with a `retry:` field, Gemini audio read from the cache, xAI's Responses usage
 * (reasoning beside output_tokens), and a response object carrying Chat Completions usage.
 */
import { describe, expect, it } from 'vitest';
import { costOf, type ProviderPrice } from '../../pricing/cost.ts';
import type { ProviderResponse } from '../usage.types.ts';
import { fixtureResponse } from '../../../../test/provider-fixtures.ts';
import { normalizeResponse } from './index.ts';
import { isSseBody } from './stream.ts';

function call(url: string, body: string | object, extra: Partial<ProviderResponse> = {}) {
  return normalizeResponse({ url, status: 200, headers: {}, body: typeof body === 'string' ? body : JSON.stringify(body), ...extra });
}

const sse = (events: [string | null, object][], eol = '\n') =>
  events.map(([event, data]) => `${event ? `event: ${event}${eol}` : ''}data: ${JSON.stringify(data)}${eol}${eol}`).join('');

describe('response.provider', () => {
  const chat = { model: 'gpt-5.4-mini', usage: { prompt_tokens: 12, completion_tokens: 3 } };

  it('a blank provider is no override: the provider is read from the URL, as with null', () => {
    for (const provider of ['', '  ']) {
      const u = call('https://api.openai.com/v1/chat/completions', chat, { provider });
      expect(u, JSON.stringify(provider)).toMatchObject({ provider: 'openai', api: 'chat.completions', billable: true, inputTokens: 12, outputTokens: 3 });
    }
  });

  it('a blank provider on an unknown host is refused for its URL, as no override at all', () => {
    expect(() => call('https://llm.internal.example/v1/chat/completions', chat, { provider: '' })).toThrow(/host "llm.internal.example"/);
  });
});

describe('streams opening with retry:', () => {
  it('are event streams, so a cut one reads as a cut stream rather than as unreadable text', () => {
    const cut = `retry: 3000\n\n${fixtureResponse('openai_chat_completion_stream_truncated.sse').body}`;
    expect(isSseBody(cut)).toBe(true);
    expect(isSseBody(`\r\nretry: 10000\r\ndata: {}\r\n\r\n`)).toBe(true);
    // Plain-text bodies that legitimately carry no usage still are not streams.
    expect(isSseBody('retrying the request later')).toBe(false);
    const u = normalizeResponse({ ...fixtureResponse('openai_chat_completion_stream_truncated.sse'), body: cut });
    expect(u).toMatchObject({ billable: false, incomplete: true, details: { reason: 'stream_truncated' } });
  });

  it('a streamed transcription opening with retry: bills its transcript.text.done usage', () => {
    const body = `retry: 3000\n\n${sse([
      ['transcript.text.delta', { type: 'transcript.text.delta', delta: 'I see' }],
      ['transcript.text.done', { type: 'transcript.text.done', text: 'I see skies', usage: { type: 'tokens', input_tokens: 14, input_token_details: { text_tokens: 0, audio_tokens: 14 }, output_tokens: 4, total_tokens: 18 } }],
    ])}`;
    const u = call('https://api.openai.com/v1/audio/transcriptions', body, { requestBody: { model: 'gpt-4o-transcribe' } });
    expect(u).toMatchObject({ billable: true, incomplete: false, inputTokens: 14, outputTokens: 4, details: { input_audio_tokens: 14 } });
  });

  it('a Cohere v2 stream opening with retry: (CRLF) bills message-end', () => {
    const usage = { billed_units: { input_tokens: 21, output_tokens: 105 }, tokens: { input_tokens: 216, output_tokens: 105 } };
    const body = `retry: 3000\r\n\r\n${sse(
      [
        ['message-start', { type: 'message-start', id: 'c1', delta: { message: { role: 'assistant' } } }],
        ['content-delta', { type: 'content-delta', index: 0, delta: { message: { content: { text: 'Hi' } } } }],
        ['message-end', { type: 'message-end', delta: { finish_reason: 'COMPLETE', usage } }],
      ],
      '\r\n',
    )}`;
    const u = call('https://api.cohere.com/v2/chat', body, { requestBody: { model: 'command-a-03-2025' } });
    expect(u).toMatchObject({ billable: true, incomplete: false, inputTokens: 21, outputTokens: 105 });
  });
});

describe('Gemini audio read from the cache', () => {
  const url = 'https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent';
  const body = {
    candidates: [{ content: { parts: [{ text: 'ok' }], role: 'model' }, finishReason: 'STOP' }],
    usageMetadata: {
      promptTokenCount: 100,
      cachedContentTokenCount: 40,
      candidatesTokenCount: 20,
      thoughtsTokenCount: 30,
      toolUsePromptTokenCount: 7,
      totalTokenCount: 157,
      promptTokensDetails: [{ modality: 'TEXT', tokenCount: 60 }, { modality: 'AUDIO', tokenCount: 40 }],
      cacheTokensDetails: [{ modality: 'AUDIO', tokenCount: 40 }],
    },
    modelVersion: 'gemini-2.5-flash',
  };
  // Gemini 2.5 Flash: audio input dearer than text; cache reads at their own rate.
  const price: ProviderPrice = {
    provider: 'google', model: 'gemini-2.5-flash', currency: 'USD', effectiveFrom: new Date('2025-01-01T00:00:00Z'),
    perMillionTokens: { input: '0.30', cachedInput: '0.03', inputAudio: '1.00', output: '2.50' },
  };

  it('is priced as a cache read only, not also at the audio input rate', () => {
    const u = call(url, body);
    expect(u).toMatchObject({ inputTokens: 107, cachedInputTokens: 40, outputTokens: 50, reasoningTokens: 30 });
    // The whole prompt's audio was read from the cache: none of the uncached input is audio.
    expect(u.details).toMatchObject({ input_audio_tokens: 0, cached_audio_tokens: 40, prompt_audio_tokens: 40, input_text_tokens: 60 });
    // 67 uncached text × 0.30 + 40 cached × 0.03 + 50 output × 2.50, per million
    expect(costOf(u, price)).toBe(146_300_000_000_000n);
  });

  it('audio partly cached: only the uncached part takes the audio rate', () => {
    const partly = {
      ...body,
      usageMetadata: { ...body.usageMetadata, cachedContentTokenCount: 25, cacheTokensDetails: [{ modality: 'AUDIO', tokenCount: 10 }, { modality: 'TEXT', tokenCount: 15 }] },
    };
    const u = call(url, partly);
    expect(u.details).toMatchObject({ input_audio_tokens: 30, cached_audio_tokens: 10 });
    // 30 uncached audio × 1.00 + 52 uncached text × 0.30 + 25 cached × 0.03 + 50 × 2.50
    expect(costOf(u, price)).toBe(171_350_000_000_000n);
  });

  it('without a cache split, the prompt audio is as reported', () => {
    const { cacheTokensDetails: _, ...usageMetadata } = body.usageMetadata;
    expect(call(url, { ...body, usageMetadata: { ...usageMetadata, cachedContentTokenCount: 0 } }).details).toMatchObject({ input_audio_tokens: 40 });
  });
});

describe('Responses API usage beyond OpenAI', () => {
  const response = (usage: object) => ({ id: 'resp_1', object: 'response', status: 'completed', model: 'grok-4', output: [], usage });

  it('xAI: reasoning reported beside output_tokens (the total says so) is billed as output', () => {
    const u = call('https://api.x.ai/v1/responses', response({ input_tokens: 100, input_tokens_details: { cached_tokens: 10 }, output_tokens: 20, output_tokens_details: { reasoning_tokens: 30 }, total_tokens: 150 }));
    expect(u).toMatchObject({ provider: 'xai', billable: true, inputTokens: 100, cachedInputTokens: 10, outputTokens: 50, reasoningTokens: 30 });
  });

  it('OpenAI: reasoning inside output_tokens is not added again', () => {
    const u = call('https://api.openai.com/v1/responses', response({ input_tokens: 100, output_tokens: 50, output_tokens_details: { reasoning_tokens: 30 }, total_tokens: 150 }));
    expect(u).toMatchObject({ inputTokens: 100, outputTokens: 50, reasoningTokens: 30 });
  });

  it('a response object with a Chat Completions usage block is read by that shape, not as free', () => {
    const u = call(
      'https://llm.internal.example/v1/responses',
      response({ prompt_tokens: 686, completion_tokens: 123, total_tokens: 809, prompt_tokens_details: { cached_tokens: 679 }, completion_tokens_details: { reasoning_tokens: 112 } }),
      { provider: 'openai-compatible' },
    );
    expect(u).toMatchObject({ api: 'responses', billable: true, inputTokens: 686, cachedInputTokens: 679, outputTokens: 123, reasoningTokens: 112 });
  });
});

describe('Anthropic cache writes given only by their TTL split', () => {
  const usage = { input_tokens: 10, cache_creation_input_tokens: null, cache_read_input_tokens: 0, cache_creation: { ephemeral_5m_input_tokens: 100, ephemeral_1h_input_tokens: 200 }, output_tokens: 5 };

  it('a null cache_creation_input_tokens beside the split bills both TTLs', () => {
    const u = call('https://api.anthropic.com/v1/messages', { id: 'msg_1', type: 'message', model: 'claude-opus-4-8', content: [], usage });
    expect(u).toMatchObject({ inputTokens: 310, cacheWriteTokens: 300, outputTokens: 5, details: { cache_write_5m_tokens: 100, cache_write_1h_tokens: 200 } });
    // Opus 4.8: 10 × 5 + 100 × 6.25 + 200 × 10 + 5 × 25, per million
    const price: ProviderPrice = {
      provider: 'anthropic', model: 'claude-opus-4-8', currency: 'USD', effectiveFrom: new Date('2026-01-01T00:00:00Z'),
      perMillionTokens: { input: '5', cachedInput: '0.5', cacheWrite: '6.25', cacheWrite1h: '10', output: '25' },
    };
    expect(costOf(u, price)).toBe(2_800_000_000_000_000n);
  });

  it('the same in a stream: message_start has the split, message_delta the output', () => {
    const body = sse([
      ['message_start', { type: 'message_start', message: { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-opus-4-8', content: [], usage: { ...usage, output_tokens: 1 } } }],
      ['message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 5 } }],
      ['message_stop', { type: 'message_stop' }],
    ]);
    expect(call('https://api.anthropic.com/v1/messages', body)).toMatchObject({ billable: true, inputTokens: 310, cacheWriteTokens: 300, outputTokens: 5 });
  });

  it('a reported total still wins over the split', () => {
    const u = call('https://api.anthropic.com/v1/messages', { model: 'claude-opus-4-8', usage: { ...usage, cache_creation_input_tokens: 300, cache_creation: { ephemeral_5m_input_tokens: 0, ephemeral_1h_input_tokens: 0 } } });
    expect(u).toMatchObject({ inputTokens: 310, cacheWriteTokens: 300, details: { cache_write_5m_tokens: 0, cache_write_1h_tokens: 0 } });
  });
});
