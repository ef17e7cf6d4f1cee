/**
 * Edges found in review: an `event: message` line (the SSE default type spelled out), image
 * bodies that write the absent one of `url` / `b64_json` as null, Vertex AI's multi-region
 * hosts, and generated output cut streams left out of the estimate (refusals, tool-call
 * arguments, Bedrock's Mistral and Nova chunks).
 */
import { describe, expect, it } from 'vitest';
import type { ProviderResponse } from '../usage.types.ts';
import { detectProvider, normalizeResponse, parseSse } from './index.ts';

function call(url: string, body: unknown, extra: Partial<ProviderResponse> = {}) {
  return normalizeResponse({ url, status: 200, headers: {}, body: typeof body === 'string' ? body : JSON.stringify(body), ...extra });
}

/** An SSE body: every event named `name`, or, with null, by its data's `type` (or not at all). */
function sse(events: unknown[], name: string | null = null): string {
  let text = '';
  for (const data of events) {
    const type = name ?? (data as { type?: unknown }).type;
    if (typeof type === 'string') text += `event: ${type}\n`;
    text += `data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;
  }
  return text;
}

describe('an explicit `event: message` is the default event type, as if there were no event line', () => {
  it('parseSse reports it as the default type', () => {
    expect(parseSse('event: message\ndata: {"a":1}\n\nevent:message\r\ndata: [DONE]\r\n\r\n')).toEqual([
      { event: '', data: '{"a":1}', complete: true },
      { event: '', data: '[DONE]', complete: true },
    ]);
  });

  const chunk = (delta: object) => ({ id: 'c', object: 'chat.completion.chunk', model: 'gpt-5.4-mini', choices: [{ index: 0, delta, finish_reason: null }] });

  it('an error chunk ending such a chat stream is a provider error, never charged, not a cut stream to estimate', () => {
    const body = sse([chunk({ role: 'assistant', content: '' }), chunk({ content: 'Hello there, how are you' }), { error: { message: 'The server had an error', type: 'server_error', code: null } }], 'message');
    const u = call('https://api.openai.com/v1/chat/completions', body);
    expect(u).toMatchObject({ billable: false, incomplete: false, requests: 0, details: { error: 'server_error' } });
  });

  it('a whole Responses stream so framed is billed from its response.completed', () => {
    const body = sse(
      [
        { type: 'response.created', sequence_number: 0, response: { id: 'r', model: 'gpt-5.4-mini', status: 'in_progress', usage: null } },
        { type: 'response.output_text.delta', sequence_number: 1, delta: 'Hi' },
        { type: 'response.completed', sequence_number: 2, response: { id: 'r', model: 'gpt-5.4-mini', status: 'completed', output: [], usage: { input_tokens: 86, output_tokens: 214, input_tokens_details: { cached_tokens: 0 }, output_tokens_details: { reasoning_tokens: 192 } } } },
      ],
      'message',
    );
    expect(call('https://api.openai.com/v1/responses', body)).toMatchObject({ billable: true, incomplete: false, model: 'gpt-5.4-mini', inputTokens: 86, outputTokens: 214, reasoningTokens: 192 });
  });

  it('a whole Anthropic stream so framed is billed from message_start and its last message_delta', () => {
    const body = sse(
      [
        { type: 'message_start', message: { id: 'm', type: 'message', role: 'assistant', model: 'claude-sonnet-4-6', content: [], usage: { input_tokens: 2204, cache_read_input_tokens: 14336, cache_creation_input_tokens: 0, output_tokens: 2 } } },
        { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hi' } },
        { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 689 } },
        { type: 'message_stop' },
      ],
      'message',
    );
    expect(call('https://api.anthropic.com/v1/messages', body)).toMatchObject({ billable: true, incomplete: false, model: 'claude-sonnet-4-6', inputTokens: 16540, cachedInputTokens: 14336, outputTokens: 689 });
  });
});

describe('OpenAI-shape image bodies that write the absent one of url / b64_json as null', () => {
  // A proxy that serializes the SDK's Image model (LiteLLM, a Python service) writes every field.
  const make = (data: string) =>
    JSON.stringify({
      created: 1,
      data: [
        { b64_json: data, revised_prompt: null, url: null },
        { b64_json: data, revised_prompt: null, url: null },
      ],
      usage: { input_tokens: 52, input_tokens_details: { image_tokens: 0, text_tokens: 52 }, output_tokens: 2112, total_tokens: 2164 },
    });
  const request = { requestBody: { model: 'gpt-image-1.5', n: 2 } };

  it('count each image once, however large the body', () => {
    const small = call('https://api.openai.com/v1/images/generations', make('AAAA'), request);
    const large = call('https://api.openai.com/v1/images/generations', make('A'.repeat(100_000)), request);
    expect(small).toMatchObject({ images: 2, inputTokens: 52, outputTokens: 2112 });
    expect(large).toEqual(small);
  });

  it('a dall-e answer with URLs and a null b64_json, too', () => {
    const body = JSON.stringify({ created: 1, data: Array.from({ length: 3 }, (_, i) => ({ b64_json: null, revised_prompt: 'p'.repeat(30_000), url: `https://x/${i}.png` })) });
    expect(call('https://api.openai.com/v1/images/generations', body, { requestBody: { model: 'dall-e-3' } })).toMatchObject({ images: 3 });
  });
});

describe('Vertex AI multi-region endpoints (aiplatform.{us,eu}.rep.googleapis.com)', () => {
  const base = (multiRegion: string) => `https://aiplatform.${multiRegion}.rep.googleapis.com/v1/projects/p/locations/${multiRegion}/publishers`;

  it('are Vertex AI, routed as its regional and global hosts are', () => {
    expect(detectProvider(`${base('us')}/google/models/gemini-3.8-flash:generateContent`)).toEqual({ provider: 'vertex', api: 'generateContent' });
    expect(detectProvider(`${base('eu')}/google/models/gemini-3.8-flash:streamGenerateContent?alt=sse`)).toEqual({ provider: 'vertex', api: 'streamGenerateContent' });
    expect(detectProvider(`${base('eu')}/anthropic/models/claude-sonnet-4-6:rawPredict`)).toEqual({ provider: 'vertex', api: 'messages' });
    // The star stands for one label only.
    expect(detectProvider('https://aiplatform.x.us.rep.googleapis.com/v1/projects/p/locations/us/publishers/google/models/m:generateContent')).toBeNull();
  });

  it('a response from one is metered, not refused as an unknown host', () => {
    const body = { candidates: [{ content: { role: 'model', parts: [{ text: 'Hi' }] }, finishReason: 'STOP' }], usageMetadata: { promptTokenCount: 14212, cachedContentTokenCount: 12288, candidatesTokenCount: 412, thoughtsTokenCount: 893, totalTokenCount: 15517 }, modelVersion: 'gemini-3.8-flash' };
    const u = call(`${base('us')}/google/models/gemini-3.8-flash:generateContent`, body);
    expect(u).toMatchObject({ provider: 'vertex', api: 'generateContent', billable: true, model: 'gemini-3.8-flash', inputTokens: 14212, cachedInputTokens: 12288, outputTokens: 1305, reasoningTokens: 893 });
  });
});

describe('cut streams keep what was generated (refusals, tool-call arguments, other models\' text) for the estimate', () => {
  const refusal = "I'm sorry, but I can't help with that request.";
  const args = '{"location": "Madrid, Spain", "unit": "celsius"}';

  it('OpenAI chat: a streamed refusal, and legacy function_call arguments', () => {
    const chunk = (delta: object) => ({ id: 'c', object: 'chat.completion.chunk', model: 'gpt-5.4-mini', choices: [{ index: 0, delta, finish_reason: null }] });
    const refused = call('https://api.openai.com/v1/chat/completions', sse([chunk({ role: 'assistant', content: null, refusal: '' }), chunk({ refusal: refusal.slice(0, 20) }), chunk({ refusal: refusal.slice(20) })]));
    expect(refused).toMatchObject({ incomplete: true, billable: false, details: { reason: 'stream_truncated', streamed_other_chars: refusal.length } });
    const called = call('https://api.openai.com/v1/chat/completions', sse([chunk({ role: 'assistant', content: null, function_call: { name: 'get_weather', arguments: '' } }), chunk({ function_call: { arguments: args } })]));
    expect(called).toMatchObject({ incomplete: true, details: { reason: 'stream_truncated', streamed_other_chars: args.length } });
  });

  it('OpenAI Responses: refusal, custom tool input, MCP arguments and code interpreter code deltas', () => {
    const created = { type: 'response.created', sequence_number: 0, response: { id: 'r', model: 'gpt-5.4', status: 'in_progress', usage: null } };
    for (const type of ['response.refusal.delta', 'response.custom_tool_call_input.delta', 'response.mcp_call_arguments.delta', 'response.code_interpreter_call_code.delta']) {
      const u = call('https://api.openai.com/v1/responses', sse([created, { type, sequence_number: 1, item_id: 'i', output_index: 0, delta: args }]));
      expect(u, type).toMatchObject({ incomplete: true, billable: false, model: 'gpt-5.4', details: { reason: 'stream_truncated', streamed_other_chars: args.length } });
    }
  });

  it('Cohere v2: tool-call-delta arguments', () => {
    const body = sse([
      { id: 'x', type: 'message-start', delta: { message: { role: 'assistant', content: [], tool_plan: '', tool_calls: [], citations: [] } } },
      { type: 'tool-call-start', index: 0, delta: { message: { tool_calls: { id: 't', type: 'function', function: { name: 'get_weather', arguments: '' } } } } },
      { type: 'tool-call-delta', index: 0, delta: { message: { tool_calls: { function: { arguments: args.slice(0, 10) } } } } },
      { type: 'tool-call-delta', index: 0, delta: { message: { tool_calls: { function: { arguments: args.slice(10) } } } } },
    ]);
    const u = call('https://api.cohere.com/v2/chat', body, { requestBody: { model: 'command-a-03-2025' } });
    expect(u).toMatchObject({ incomplete: true, billable: false, details: { reason: 'stream_truncated', streamed_other_chars: args.length } });
  });

  it('Bedrock InvokeModelWithResponseStream: Mistral (outputs[].text) and Amazon Nova (contentBlockDelta) chunks', () => {
    const frames = (events: object[]) => events.map((e) => `{"bytes":"${Buffer.from(JSON.stringify(e)).toString('base64')}","p":"abc"}`).join('\u0000\u0001');
    const base = 'https://bedrock-runtime.us-east-1.amazonaws.com/model';
    const mistral = call(`${base}/mistral.mistral-large-2407-v1%3A0/invoke-with-response-stream`, frames([{ outputs: [{ text: 'Hello there,', stop_reason: null }] }, { outputs: [{ text: ' friend', stop_reason: null }] }]));
    expect(mistral).toMatchObject({ incomplete: true, billable: false, streamedText: 'Hello there, friend' });
    const nova = call(`${base}/amazon.nova-pro-v1%3A0/invoke-with-response-stream`, frames([{ messageStart: { role: 'assistant' } }, { contentBlockDelta: { delta: { text: 'Hello there,' }, contentBlockIndex: 0 } }, { contentBlockDelta: { delta: { text: ' friend' }, contentBlockIndex: 0 } }]));
    expect(nova).toMatchObject({ incomplete: true, billable: false, streamedText: 'Hello there, friend' });
  });

  it('Gemini: a functionCall part, counted as its arguments written out', () => {
    const fnArgs = { location: 'Madrid, Spain', unit: 'celsius' };
    const body = sse([{ candidates: [{ content: { role: 'model', parts: [{ functionCall: { name: 'get_weather', args: fnArgs } }] }, index: 0 }], usageMetadata: { trafficType: 'ON_DEMAND' }, modelVersion: 'gemini-3.8-flash' }]);
    const u = call('https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google/models/gemini-3.8-flash:streamGenerateContent?alt=sse', body);
    expect(u).toMatchObject({ incomplete: true, billable: false, details: { reason: 'stream_truncated', streamed_other_chars: JSON.stringify(fnArgs).length } });
  });
});
