/**
 * Stream review: the SSE framings the WHATWG rules allow, applied to the real provider streams
 * (the fixtures), and stream shapes of the routed families: usage in Moonshot's finishing choice,
 * Anthropic-compatible deltas that zero the input side, errors inside a 200 stream (counted never,
 * estimated never), Gemini's growing usageMetadata, and a cut Cohere stream on Bedrock.
 */
import { describe, expect, it } from 'vitest';
import type { ProviderResponse } from '../usage.types.ts';
import { fixtureResponse } from '../../../../test/provider-fixtures.ts';
import { normalizeResponse } from './index.ts';

function call(url: string, body: string, extra: Partial<ProviderResponse> = {}) {
  return normalizeResponse({ url, status: 200, headers: {}, body, ...extra });
}

/** Data-only SSE (OpenAI chat, Gemini): one `data:` line per event. */
const dataEvents = (events: (object | string)[], eol = '\n') =>
  events.map((e) => `data: ${typeof e === 'string' ? e : JSON.stringify(e)}${eol}${eol}`).join('');

const STREAMS = ['anthropic_messages_stream.sse', 'openai_chat_completion_stream_include_usage.sse', 'openai_responses_stream.sse'];

/** Rewritings of a stream that the SSE rules say carry the same events. */
const FRAMINGS: [string, (body: string) => string][] = [
  ['CRLF line ends', (s) => s.replace(/\n/g, '\r\n')],
  ['lone CR line ends', (s) => s.replace(/\n/g, '\r')],
  ['a leading byte-order mark', (s) => `\uFEFF${s}`],
  ['no space after the colon', (s) => s.replace(/^data: /gm, 'data:').replace(/^event: /gm, 'event:')],
  ['no blank line after the final event', (s) => s.replace(/\n+$/, '')],
  ['comment lines between events', (s) => s.replace(/\n\n/g, '\n: keep-alive\n\n')],
  ['each JSON split over two data: lines', (s) => s.replace(/^data: (\{.*),"/gm, 'data: $1,\ndata: "')],
];

describe('SSE framing of the real provider streams', () => {
  for (const fixture of STREAMS) {
    for (const [name, rewrite] of FRAMINGS) {
      it(`${fixture}: ${name} meters as the original`, () => {
        const f = fixtureResponse(fixture);
        const original = normalizeResponse(f);
        expect(original).toMatchObject({ billable: true, incomplete: false });
        expect(normalizeResponse({ ...f, body: rewrite(f.body) })).toEqual(original);
      });
    }
  }
});

describe('usage chunks', () => {
  it('Moonshot (Kimi) streams its usage inside the finishing choice: billed from it, not estimated', () => {
    // Wire shape of api.moonshot.cn: `choices[0].usage` beside finish_reason, no top-level usage.
    const body = dataEvents([
      { id: 'c', object: 'chat.completion.chunk', model: 'kimi-k2.6', choices: [{ index: 0, delta: { content: 'Hi' }, finish_reason: null }] },
      { id: 'c', object: 'chat.completion.chunk', model: 'kimi-k2.6', choices: [{ index: 0, delta: {}, finish_reason: 'stop', usage: { prompt_tokens: 39, completion_tokens: 211, total_tokens: 250, cached_tokens: 7 } }] },
      '[DONE]',
    ]);
    const u = call('https://api.moonshot.ai/v1/chat/completions', body);
    expect(u).toMatchObject({ billable: true, incomplete: false, model: 'kimi-k2.6', inputTokens: 39, cachedInputTokens: 7, outputTokens: 211 });
    // Cut before that chunk, it is still a cut stream.
    const cut = call('https://api.moonshot.ai/v1/chat/completions', body.slice(0, body.indexOf('data: {', 1)));
    expect(cut).toMatchObject({ billable: false, incomplete: true, streamedText: 'Hi', details: { reason: 'stream_truncated' } });
  });

  it('an Anthropic-compatible message_delta that sends the input side as 0 does not erase message_start', () => {
    // SGLang's /v1/messages (and proxies built like it) zero input_tokens on the final delta.
    const body = [
      'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"glm-4.6","content":[],"usage":{"input_tokens":1200,"cache_read_input_tokens":300,"output_tokens":1}}}\n\n',
      'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n',
      'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":0,"cache_read_input_tokens":0,"output_tokens":45}}\n\n',
      'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ].join('');
    const u = call('https://api.z.ai/api/anthropic/v1/messages', body);
    expect(u).toMatchObject({ billable: true, inputTokens: 1500, cachedInputTokens: 300, outputTokens: 45 });
  });

  it('Anthropic: a repeated message_delta (cumulative) is counted once', () => {
    const f = fixtureResponse('anthropic_messages_stream.sse');
    const twice = f.body.replace(/(event: message_delta\n.*\n\n)/, '$1$1');
    expect(twice).not.toBe(f.body);
    expect(normalizeResponse({ ...f, body: twice })).toEqual(normalizeResponse(f));
  });

  it('Gemini (CRLF, final chunk without its blank line): usageMetadata grows per chunk, the last one counts', () => {
    const chunk = (text: string, n: number, finish?: string) => ({
      candidates: [{ content: { parts: [{ text }], role: 'model' }, index: 0, ...(finish ? { finishReason: finish } : {}) }],
      usageMetadata: { promptTokenCount: 10, candidatesTokenCount: n, totalTokenCount: 10 + n },
      modelVersion: 'gemini-3.8-flash',
    });
    const body = dataEvents([chunk('a', 1), chunk('b', 2), chunk('c', 3, 'STOP')], '\r\n').replace(/\r\n\r\n$/, '');
    const u = call('https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse', body);
    expect(u).toMatchObject({ billable: true, inputTokens: 10, outputTokens: 3 });
  });

  it('Cohere v2 (CRLF) and Mistral streams bill their end usage', () => {
    const cohere = [
      'event: message-start\ndata: {"id":"x","type":"message-start","delta":{"message":{"role":"assistant"}}}\n\n',
      'event: content-delta\ndata: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hi"}}}}\n\n',
      'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":5,"output_tokens":2},"tokens":{"input_tokens":70,"output_tokens":2}}}}\n\n',
    ].join('');
    const c = call('https://api.cohere.com/v2/chat', cohere.replace(/\n/g, '\r\n'), { requestBody: { model: 'command-a-03-2025' } });
    expect(c).toMatchObject({ billable: true, inputTokens: 5, outputTokens: 2 });
    const mistral = dataEvents([
      { id: 'm', object: 'chat.completion.chunk', model: 'mistral-small-latest', choices: [{ index: 0, delta: { role: 'assistant', content: 'Hi' }, finish_reason: null }] },
      { id: 'm', object: 'chat.completion.chunk', model: 'mistral-small-latest', choices: [{ index: 0, delta: { content: '' }, finish_reason: 'stop' }], usage: { prompt_tokens: 8, total_tokens: 10, completion_tokens: 2 } },
      '[DONE]',
    ]);
    expect(call('https://api.mistral.ai/v1/chat/completions', mistral)).toMatchObject({ billable: true, inputTokens: 8, outputTokens: 2 });
  });
});

describe('errors inside a 200 stream, after some text: never charged, never estimated', () => {
  it('OpenAI chat: an {"error":…} data line after content', () => {
    const f = fixtureResponse('openai_chat_completion_stream_include_usage.sse');
    const cut = f.body.slice(0, f.body.indexOf('"finish_reason":"stop"'));
    const body = cut.slice(0, cut.lastIndexOf('data: ')) + dataEvents([{ error: { message: 'boom', type: 'server_error', code: null } }]);
    expect(normalizeResponse({ ...f, body })).toMatchObject({ billable: false, incomplete: false, streamedText: null, details: { error: 'server_error' } });
  });

  it('an OpenAI-compatible server writing its error fields at the top level ({"object":"error",…}, older vLLM, Mistral)', () => {
    const body = dataEvents([
      { id: 'c', object: 'chat.completion.chunk', model: 'm', choices: [{ index: 0, delta: { content: 'Hi' }, finish_reason: null }] },
      { object: 'error', message: 'CUDA out of memory', type: 'InternalServerError', param: null, code: 500 },
      '[DONE]',
    ]);
    const u = call('https://api.deepinfra.com/v1/openai/chat/completions', body);
    expect(u).toMatchObject({ billable: false, incomplete: false, streamedText: null, details: { error: 'InternalServerError' } });
  });

  it('Anthropic: event: error after text', () => {
    const f = fixtureResponse('anthropic_messages_stream.sse');
    const body = `${f.body.slice(0, f.body.indexOf('event: message_delta'))}event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n`;
    expect(normalizeResponse({ ...f, body })).toMatchObject({ billable: false, incomplete: false, details: { error: 'overloaded_error' } });
  });

  it('Gemini: an error chunk after text (CRLF)', () => {
    const body = dataEvents(
      [
        { candidates: [{ content: { parts: [{ text: 'a' }], role: 'model' } }], usageMetadata: { promptTokenCount: 10, candidatesTokenCount: 1, totalTokenCount: 11 } },
        { error: { code: 500, message: 'Internal error', status: 'INTERNAL' } },
      ],
      '\r\n',
    );
    const u = call('https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse', body);
    expect(u).toMatchObject({ billable: false, incomplete: false, details: { error: 'INTERNAL' } });
  });
});

describe('Bedrock InvokeModelWithResponseStream, cut before its invocation metrics', () => {
  const frame = (o: object) => JSON.stringify({ chunk: { bytes: Buffer.from(JSON.stringify(o)).toString('base64') } });
  const url = (model: string) => `https://bedrock-runtime.us-east-1.amazonaws.com/model/${model}/invoke-with-response-stream`;

  it('Cohere Command R keeps the text it streamed (text-generation events) for the estimate', () => {
    const body = [
      frame({ is_finished: false, event_type: 'stream-start', generation_id: 'g' }),
      frame({ is_finished: false, event_type: 'text-generation', text: 'Hello' }),
      frame({ is_finished: false, event_type: 'text-generation', text: ' world' }),
    ].join('');
    expect(call(url('cohere.command-r-plus-v1:0'), body)).toMatchObject({ billable: false, incomplete: true, streamedText: 'Hello world' });
  });

  it('Cohere Command keeps the text of its generations[]', () => {
    const body = [frame({ generations: [{ text: 'Hello', is_finished: false }] }), frame({ generations: [{ text: ' there', is_finished: false }] })].join('');
    expect(call(url('cohere.command-text-v14'), body)).toMatchObject({ incomplete: true, streamedText: 'Hello there' });
  });
});
