/**
 * OpenAI and the OpenAI-compatible family, beyond the recorded fixtures. Bodies follow the
 * providers' documented shapes (OpenAI spec, Groq/xAI/OpenRouter/Perplexity docs).
 */
import { describe, expect, it } from 'vitest';
import type { ProviderResponse } from '../usage.types.ts';
import { costOf } from '../../pricing/cost.ts';
import { normalizeResponse } from './index.ts';

function call(url: string, body: unknown, extra: Partial<ProviderResponse> = {}) {
  return normalizeResponse({ url, status: 200, headers: {}, body: typeof body === 'string' ? body : JSON.stringify(body), ...extra });
}

/** An SSE body: `[event, data]` pairs (event null for data-only), framed with `eol`. */
function sse(events: [string | null, unknown][], eol = '\n'): string {
  let text = '';
  for (const [event, data] of events) {
    if (event) text += `event: ${event}${eol}`;
    text += `data: ${typeof data === 'string' ? data : JSON.stringify(data)}${eol}${eol}`;
  }
  return text;
}

const chunk = (model: string, delta: object, finish: string | null = null, extra: object = {}) => ({
  id: 'chatcmpl-1',
  object: 'chat.completion.chunk',
  created: 1786543390,
  model,
  choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  ...extra,
});

describe('OpenAI chat completions', () => {
  const url = 'https://api.openai.com/v1/chat/completions';

  it('a stream without include_usage ends with [DONE] but has no usage: incomplete, with its text', () => {
    const body = sse([
      [null, chunk('gpt-5.4-mini', { role: 'assistant', content: '' })],
      [null, chunk('gpt-5.4-mini', { content: 'Hello' })],
      [null, chunk('gpt-5.4-mini', { content: ' there' })],
      [null, chunk('gpt-5.4-mini', {}, 'stop')],
      [null, '[DONE]'],
    ]);
    const u = call(url, body);
    expect(u).toMatchObject({ billable: false, incomplete: true, streamedText: 'Hello there', model: 'gpt-5.4-mini', inputTokens: 0 });
    expect(u.details.reason).toBe('stream_without_usage');
  });

  it('reports cache writes, audio tokens and the service tier', () => {
    const u = call(url, {
      id: 'c',
      object: 'chat.completion',
      model: 'gpt-5.6-sol',
      service_tier: 'flex',
      choices: [],
      usage: {
        prompt_tokens: 10_000,
        completion_tokens: 900,
        total_tokens: 10_900,
        prompt_tokens_details: { cached_tokens: 4000, cache_write_tokens: 3000, audio_tokens: 120 },
        completion_tokens_details: { reasoning_tokens: 500, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 7 },
      },
    });
    expect(u).toMatchObject({ inputTokens: 10_000, cachedInputTokens: 4000, cacheWriteTokens: 3000, outputTokens: 900, reasoningTokens: 500 });
    expect(u.details).toEqual({ service_tier: 'flex', input_audio_tokens: 120, rejected_prediction_tokens: 7 });
  });

  it('an error chunk inside a 200 stream is not billable', () => {
    const body = sse([
      [null, chunk('gpt-5.4', { content: 'Par' })],
      [null, { error: { message: 'The server had an error', type: 'server_error', code: null } }],
    ]);
    expect(call(url, body)).toMatchObject({ billable: false, incomplete: false, requests: 0, details: { error: 'server_error' } });
  });

  it('a 200 body that is an error is not billable; nor is a 5xx with an HTML body', () => {
    expect(call(url, { error: { message: 'bad', type: 'invalid_request_error', code: 'context_length_exceeded' } })).toMatchObject({
      billable: false,
      details: { error: 'context_length_exceeded' },
    });
    const u = call(url, '<html>Bad gateway</html>', { status: 502, requestBody: { model: 'gpt-5.4' } });
    expect(u).toMatchObject({ billable: false, model: 'gpt-5.4', details: { error: 'http_502', http_status: 502 } });
  });

  it('a non-stream body without usage, or cut off, is incomplete rather than zero-billed', () => {
    const u = call(url, { id: 'c', model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'Hi' } }] });
    expect(u).toMatchObject({ billable: false, incomplete: true, streamedText: 'Hi', details: { reason: 'no_usage' } });
    expect(call(url, '{"id":"c","model":"m","choices":[{"ind')).toMatchObject({ billable: false, incomplete: true });
  });

  it('legacy completions streams collect choices[].text', () => {
    const body = sse([
      [null, { id: 'cmpl', object: 'text_completion', model: 'gpt-3.5-turbo-instruct', choices: [{ index: 0, text: 'Once', finish_reason: null }] }],
      [null, { id: 'cmpl', object: 'text_completion', model: 'gpt-3.5-turbo-instruct', choices: [{ index: 0, text: ' upon', finish_reason: null }] }],
    ]);
    expect(call('https://api.openai.com/v1/completions', body)).toMatchObject({ api: 'completions', incomplete: true, streamedText: 'Once upon' });
  });

  it('Azure: the prompt-filter chunk (choices: []) is not mistaken for the end of the stream', () => {
    const body = sse([
      [null, { choices: [], created: 0, id: '', model: '', object: '', prompt_filter_results: [{ prompt_index: 0, content_filter_results: {} }] }],
      [null, chunk('gpt-4o-2024-11-20', { content: 'Hel' })],
    ]);
    const u = call('https://acme.openai.azure.com/openai/deployments/prod/chat/completions?api-version=2025-04-01-preview', body);
    expect(u).toMatchObject({ provider: 'azure-openai', model: 'gpt-4o-2024-11-20', incomplete: true, streamedText: 'Hel' });
  });

  it('a cut stream that carried running usage keeps it for the policy, still not billable', () => {
    const body = sse([
      [null, chunk('Qwen/Qwen3-8B', { content: 'a' }, null, { usage: { prompt_tokens: 50, completion_tokens: 1, total_tokens: 51 } })],
      [null, chunk('Qwen/Qwen3-8B', { content: 'b' }, null, { usage: { prompt_tokens: 50, completion_tokens: 2, total_tokens: 52 } })],
    ]);
    const u = call('http://vllm:8000/v1/chat/completions', body, { provider: 'vllm' });
    expect(u).toMatchObject({ billable: false, incomplete: true, inputTokens: 50, outputTokens: 2, streamedText: 'ab' });
  });
});

describe('OpenAI Responses API', () => {
  const url = 'https://api.openai.com/v1/responses';
  const usage = (input: number, cached: number, written: number, output: number, reasoning: number) => ({
    input_tokens: input,
    input_tokens_details: { cached_tokens: cached, cache_write_tokens: written },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: reasoning },
    total_tokens: input + output,
  });
  const created = { type: 'response.created', response: { id: 'resp_1', status: 'in_progress', model: 'gpt-5.4', usage: null }, sequence_number: 0 };
  const delta = (text: string, n: number) => ({ type: 'response.output_text.delta', item_id: 'msg_1', output_index: 0, content_index: 0, delta: text, sequence_number: n });

  it('response.incomplete is terminal and still billable', () => {
    const body = sse([
      ['response.created', created],
      ['response.output_text.delta', delta('Partial', 1)],
      [
        'response.incomplete',
        {
          type: 'response.incomplete',
          response: { id: 'resp_1', status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' }, model: 'gpt-5.4', output: [], usage: usage(120, 0, 0, 64, 64) },
          sequence_number: 2,
        },
      ],
    ]);
    const u = call(url, body);
    expect(u).toMatchObject({ billable: true, incomplete: false, inputTokens: 120, outputTokens: 64, reasoningTokens: 64 });
    expect(u.details.incomplete_reason).toBe('max_output_tokens');
  });

  it('response.failed and error events are not billable', () => {
    const failed = sse([
      ['response.created', created],
      ['response.failed', { type: 'response.failed', response: { id: 'r', status: 'failed', error: { code: 'server_error', message: 'x' }, model: 'gpt-5.4', usage: null }, sequence_number: 1 }],
    ]);
    expect(call(url, failed)).toMatchObject({ billable: false, details: { error: 'server_error' } });
    const error = sse([['error', { type: 'error', code: 'rate_limit_exceeded', message: 'slow down', param: null, sequence_number: 1 }]]);
    expect(call(url, error)).toMatchObject({ billable: false, details: { error: 'rate_limit_exceeded' } });
  });

  it('works without event lines and with a trailing [DONE] (the SDK test mocks)', () => {
    const completed = { type: 'response.completed', response: { id: 'r', status: 'completed', model: 'gpt-5.4-mini', output: [], usage: usage(86, 0, 0, 214, 192) }, sequence_number: 3 };
    const u = call(url, sse([[null, created], [null, delta('Paris', 1)], [null, completed], [null, '[DONE]']]));
    expect(u).toMatchObject({ billable: true, model: 'gpt-5.4-mini', inputTokens: 86, outputTokens: 214, reasoningTokens: 192 });
  });

  it('a stream cut before the terminal event is incomplete, with its text and model', () => {
    const u = call(url, sse([['response.created', created], ['response.output_text.delta', delta('Clause ', 1)], ['response.output_text.delta', delta('14.2', 2)]]));
    expect(u).toMatchObject({ billable: false, incomplete: true, model: 'gpt-5.4', streamedText: 'Clause 14.2' });
  });

  it('counts cache writes inside input, and priced tool calls', () => {
    const u = call(url, {
      id: 'r',
      object: 'response',
      status: 'completed',
      error: null,
      model: 'gpt-5.6-sol',
      output: [{ type: 'web_search_call', id: 'ws_1', status: 'completed' }, { type: 'web_search_call', id: 'ws_2', status: 'completed' }, { type: 'message', content: [] }],
      usage: usage(10_000, 4000, 3000, 500, 100),
    });
    expect(u.inputTokens - u.cachedInputTokens - u.cacheWriteTokens).toBe(3000);
    expect(u.details.web_search_calls).toBe(2);
  });

  it('a background response still queued is not billable yet', () => {
    expect(call(url, { id: 'r', object: 'response', status: 'queued', error: null, model: 'gpt-5.4', usage: null })).toMatchObject({
      billable: false,
      incomplete: false,
      details: { status: 'queued' },
    });
  });
});

describe('OpenAI images, audio and embeddings', () => {
  it('dall-e-3 is priced per image by the request size and quality', () => {
    const u = call(
      'https://api.openai.com/v1/images/generations',
      { created: 1, data: [{ url: 'https://x/1.png', revised_prompt: 'p' }] },
      { requestBody: { model: 'dall-e-3', prompt: 'p', size: '1792x1024', quality: 'hd', n: 1 } },
    );
    expect(u).toMatchObject({ model: 'dall-e-3', images: 1, inputTokens: 0, outputTokens: 0, details: { size: '1792x1024', quality: 'hd' } });
  });

  it('Azure: the deployment in the URL is the model when neither the response nor the request names one', () => {
    const url = 'https://contoso.openai.azure.com/openai/deployments/dall-e-3/images/generations?api-version=2024-10-21';
    const body = { created: 1730000000, data: [{ revised_prompt: 'A cat', url: 'https://x/y.png' }] };
    const u = call(url, body, { requestBody: { prompt: 'A cat', size: '1024x1024', n: 1 } });
    expect(u).toMatchObject({ provider: 'azure-openai', api: 'images.generations', model: 'dall-e-3', images: 1, billable: true, details: { size: '1024x1024', quality: 'standard' } });
    const speech = call('https://contoso.openai.azure.com/openai/deployments/tts-hd/audio/speech?api-version=2025-03-01-preview', '', { requestBody: { input: 'Hello', voice: 'alloy' } });
    expect(speech).toMatchObject({ model: 'tts-hd', characters: 5 });
    // A model named by the request or the response still wins over the deployment's name.
    expect(call(url, body, { requestBody: { model: 'gpt-image-1', prompt: 'A cat' } }).model).toBe('gpt-image-1');
    const chat = call('https://contoso.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21', {
      id: 'c',
      object: 'chat.completion',
      model: 'gpt-4o-2024-11-20',
      choices: [],
      usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 },
    });
    expect(chat.model).toBe('gpt-4o-2024-11-20');
  });

  it('dall-e-2 counts the images returned, with the default size when none was asked', () => {
    const u = call('https://api.openai.com/v1/images/generations', { created: 1, data: [{ url: 'a' }, { url: 'b' }, { url: 'c' }] }, { requestBody: { model: 'dall-e-2', n: 3 } });
    expect(u).toMatchObject({ images: 3, details: { size: '1024x1024' } });
  });

  it('streamed GPT image generation bills the completed event usage', () => {
    const body = sse([
      ['image_generation.partial_image', { type: 'image_generation.partial_image', b64_json: 'AAA', partial_image_index: 0 }],
      [
        'image_generation.completed',
        { type: 'image_generation.completed', b64_json: 'BBB', size: '1024x1536', quality: 'high', usage: { input_tokens: 40, input_tokens_details: { text_tokens: 40, image_tokens: 0 }, output_tokens: 6240, total_tokens: 6280 } },
      ],
    ]);
    const u = call('https://api.openai.com/v1/images/generations', body, { requestBody: { model: 'gpt-image-1.5', stream: true } });
    expect(u).toMatchObject({ images: 1, inputTokens: 40, outputTokens: 6240, details: { output_image_tokens: 6240, size: '1024x1536', quality: 'high' } });
  });

  it('token-billed transcription reads input_token_details (singular)', () => {
    const u = call(
      'https://api.openai.com/v1/audio/transcriptions',
      { text: 'Hello.', usage: { type: 'tokens', input_tokens: 14, input_token_details: { text_tokens: 2, audio_tokens: 12 }, output_tokens: 45, total_tokens: 59 } },
      { requestBody: { model: 'gpt-4o-transcribe' } },
    );
    expect(u).toMatchObject({ model: 'gpt-4o-transcribe', inputTokens: 14, outputTokens: 45, audioSeconds: null, details: { input_audio_tokens: 12, input_text_tokens: 2 } });
  });

  it('falls back to ceil(duration) without usage, and has nothing to bill for text formats', () => {
    const whisper = call('https://api.groq.com/openai/v1/audio/transcriptions', '{"task":"transcribe","language":"en","duration":25.933313,"text":"hi","x_groq":{"id":"req_1"}}', {
      requestBody: { model: 'whisper-large-v3-turbo' },
    });
    expect(whisper).toMatchObject({ provider: 'groq', audioSeconds: '26', details: { audio_duration_seconds: '25.933313' } });
    const text = call('https://api.openai.com/v1/audio/transcriptions', 'Thanks for calling.\n', { requestBody: { model: 'whisper-1' } });
    expect(text).toMatchObject({ billable: false, incomplete: true, details: { reason: 'no_usage' } });
  });

  it('Mistral (Voxtral) transcription is billed by its prompt_audio_seconds, under the model that answered', () => {
    const body = '{"model":"voxtral-mini-2507","text":"This week…","language":"en","segments":[],"usage":{"prompt_audio_seconds":203,"prompt_tokens":4,"total_tokens":3264,"completion_tokens":635}}';
    const u = call('https://api.mistral.ai/v1/audio/transcriptions', body, { requestBody: { model: 'voxtral-mini-latest' } });
    expect(u).toMatchObject({ provider: 'mistral', api: 'audio.transcriptions', model: 'voxtral-mini-2507', billable: true, audioSeconds: '203', inputTokens: 0, outputTokens: 0 });
    expect(u.details).toMatchObject({ prompt_tokens: 4, completion_tokens: 635 });
    // Priced per minute, as Mistral bills it: the token counts beside it are not refused by the row.
    const perMinute = { provider: 'mistral', model: 'voxtral-mini-2507', currency: 'USD' as const, effectiveFrom: new Date(0), perAudioMinute: '0.002' };
    // 203 s at $0.002 a minute = $0.00676666…, rounded once to the atto.
    expect(costOf(u, perMinute)).toBe(6_766_666_666_666_667n);
    expect(call('https://api.mistral.ai/v1/audio/transcriptions', body.replace('203', '12.75')).audioSeconds).toBe('12.75');
  });

  it('streamed transcription bills transcript.text.done', () => {
    const body = sse([
      [null, { type: 'transcript.text.delta', delta: 'I see' }],
      [null, { type: 'transcript.text.done', text: 'I see skies', usage: { type: 'tokens', input_tokens: 14, input_token_details: { text_tokens: 0, audio_tokens: 14 }, output_tokens: 4, total_tokens: 18 } }],
    ]);
    expect(call('https://api.openai.com/v1/audio/transcriptions', body)).toMatchObject({ billable: true, inputTokens: 14, outputTokens: 4 });
  });

  it('Mistral (Voxtral) streamed transcription bills its transcription.done, under the model it names', () => {
    const body = sse([
      ['transcription.language', { type: 'transcription.language', audio_language: 'en' }],
      ['transcription.text.delta', { type: 'transcription.text.delta', text: 'This week' }],
      ['transcription.done', {
        type: 'transcription.done', model: 'voxtral-mini-2507', text: 'This week…', language: 'en', segments: [],
        usage: { prompt_audio_seconds: 203, prompt_tokens: 4, total_tokens: 3264, completion_tokens: 635 },
      }],
    ]);
    const url = 'https://api.mistral.ai/v1/audio/transcriptions';
    expect(call(url, body, { requestBody: { model: 'voxtral-mini-latest', stream: true } })).toMatchObject({
      provider: 'mistral', model: 'voxtral-mini-2507', billable: true, audioSeconds: '203', inputTokens: 0, outputTokens: 0,
    });
    // Cut before it: not billed as a whole, but recorded as incomplete.
    const cut = body.slice(0, body.indexOf('event: transcription.done'));
    expect(call(url, cut, { requestBody: { model: 'voxtral-mini-latest', stream: true } })).toMatchObject({ billable: false, incomplete: true, model: 'voxtral-mini-latest' });
  });

  it('speech is billed per code point of the request input; SSE speech that reports tokens, by its tokens', () => {
    const binary = call('https://api.openai.com/v1/audio/speech', '', { requestBody: { model: 'tts-1-hd', input: 'Hi 👋 ça va', voice: 'alloy' } });
    // 10 code points; the emoji is two UTF-16 units, so .length would say 11.
    expect(binary).toMatchObject({ model: 'tts-1-hd', characters: 10, billable: true });
    const body = sse([
      [null, { type: 'speech.audio.delta', audio: 'AAAA' }],
      [null, { type: 'speech.audio.done', usage: { input_tokens: 14, output_tokens: 101, total_tokens: 115 } }],
    ]);
    const streamed = call('https://api.openai.com/v1/audio/speech', body, { requestBody: { model: 'gpt-4o-mini-tts', input: 'Hello there', stream_format: 'sse' } });
    // Billed by its tokens: the characters stay a detail, so a token price row costs it.
    expect(streamed).toMatchObject({ characters: 0, inputTokens: 14, outputTokens: 101, details: { input_characters: 11 } });
    const tokenPrice = { provider: 'openai', model: 'gpt-4o-mini-tts', currency: 'USD' as const, effectiveFrom: new Date(0), perMillionTokens: { input: '0.60', output: '12.00' } };
    // 14 × $0.60 + 101 × $12.00 per million = $0.0012204
    expect(costOf(streamed, tokenPrice)).toBe(1_220_400_000_000_000n);
  });

  it('embeddings without usage are incomplete', () => {
    expect(call('https://api.mistral.ai/v1/embeddings', { object: 'list', data: [], model: 'mistral-embed' })).toMatchObject({ billable: false, incomplete: true });
  });
});

describe('OpenAI-compatible providers', () => {
  const groqChunk = (delta: object, finish: string | null, extra: object = {}) =>
    chunk('llama-3.3-70b-versatile', delta, finish, { system_fingerprint: 'fp_1', x_groq: { id: 'req_01' }, ...extra });
  const groqUsage = { queue_time: 0.021, prompt_tokens: 45, prompt_time: 0.003, completion_tokens: 12, completion_time: 0.01, total_tokens: 57, total_time: 0.013 };

  it('Groq stream: usage under x_groq.usage on the final chunk is billed, not zero', () => {
    const body = sse([
      [null, groqChunk({ role: 'assistant', content: '' }, null)],
      [null, groqChunk({ content: 'Hello' }, null)],
      [null, groqChunk({}, 'stop', { x_groq: { id: 'req_01', usage: groqUsage } })],
      [null, '[DONE]'],
    ]);
    expect(call('https://api.groq.com/openai/v1/chat/completions', body)).toMatchObject({ billable: true, inputTokens: 45, outputTokens: 12 });
  });

  it('Groq stream with include_usage: the extra usage chunk does not double the count', () => {
    const body = sse([
      [null, groqChunk({ content: 'Hello' }, null)],
      [null, groqChunk({}, 'stop', { x_groq: { id: 'req_01', usage: groqUsage } })],
      [null, { id: 'chatcmpl-1', object: 'chat.completion.chunk', model: 'llama-3.3-70b-versatile', choices: [], usage: groqUsage, x_groq: { id: 'req_01' } }],
      [null, '[DONE]'],
    ]);
    expect(call('https://api.groq.com/openai/v1/chat/completions', body)).toMatchObject({ inputTokens: 45, outputTokens: 12 });
  });

  it('OpenRouter: comments, trailing usage chunk after finish_reason, exact reported cost', () => {
    const base = { id: 'gen-1', provider: 'Anthropic', model: 'anthropic/claude-sonnet-4.6', object: 'chat.completion.chunk', created: 1 };
    const usageChunk =
      '{"id":"gen-1","provider":"Anthropic","model":"anthropic/claude-sonnet-4.6","object":"chat.completion.chunk","created":1,' +
      '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"native_finish_reason":null,"logprobs":null}],' +
      '"usage":{"prompt_tokens":1200,"completion_tokens":80,"total_tokens":1280,"cost":0.0047625000000000001,"is_byok":false,' +
      '"prompt_tokens_details":{"cached_tokens":1000,"cache_write_tokens":100,"audio_tokens":0},' +
      '"cost_details":{"upstream_inference_cost":1.5e-7},"completion_tokens_details":{"reasoning_tokens":0,"image_tokens":0}}}';
    const body =
      ': OPENROUTER PROCESSING\n\n' +
      sse([[null, { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: 'Hi' }, finish_reason: null }] }]]) +
      ': OPENROUTER PROCESSING\n\n' +
      sse([[null, { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: 'stop', native_finish_reason: 'end_turn' }] }], [null, usageChunk], [null, '[DONE]']]);
    const u = call('https://openrouter.ai/api/v1/chat/completions', body);
    expect(u).toMatchObject({ billable: true, model: 'anthropic/claude-sonnet-4.6', inputTokens: 1200, cachedInputTokens: 1000, cacheWriteTokens: 100, outputTokens: 80 });
    // The literal as sent, not the double it parses to (which would print as 0.0047625).
    expect(u.providerReportedCostUsd).toBe('0.0047625000000000001');
    expect(u.details).toMatchObject({ is_byok: 'false', upstream_inference_cost_usd: '0.00000015' });
  });

  it('OpenRouter: the reported cost is read on embeddings, Responses (JSON and stream) and transcriptions too, not only chat', () => {
    // OpenRouter lists no prices: without its reported cost these calls would be recorded free.
    const embeddings = call('https://openrouter.ai/api/v1/embeddings', {
      id: 'embd-1234567890',
      object: 'list',
      model: 'openai/text-embedding-3-small',
      data: [{ object: 'embedding', index: 0, embedding: [0.0023, -0.0093] }],
      usage: { prompt_tokens: 8, total_tokens: 8, cost: 0.00000016 },
    });
    expect(embeddings).toMatchObject({ provider: 'openrouter', api: 'embeddings', inputTokens: 8, billable: true });
    // JSON.stringify wrote 1.6e-7: its digits, moved, never through binary floating point.
    expect(embeddings.providerReportedCostUsd).toBe('0.00000016');

    const response = {
      id: 'gen-1',
      object: 'response',
      status: 'completed',
      model: 'openai/gpt-4o-mini',
      output: [],
      usage: { input_tokens: 10, input_tokens_details: { cached_tokens: 0 }, output_tokens: 25, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 35, cost: 0.0000165, is_byok: false },
    };
    const responses = call('https://openrouter.ai/api/v1/responses', response);
    expect(responses).toMatchObject({ api: 'responses', inputTokens: 10, outputTokens: 25, providerReportedCostUsd: '0.0000165', details: { is_byok: 'false' } });
    const byok = { ...response, usage: { ...response.usage, is_byok: true, cost_details: { upstream_inference_cost: 0.00019 } } };
    const streamed = call('https://openrouter.ai/api/v1/responses', sse([['response.completed', { type: 'response.completed', response: byok, sequence_number: 4 }]]));
    expect(streamed).toMatchObject({ billable: true, providerReportedCostUsd: '0.0000165', details: { is_byok: 'true', upstream_inference_cost_usd: '0.00019' } });

    const transcription = call('https://openrouter.ai/api/v1/audio/transcriptions', { text: 'Hello', usage: { seconds: 9.2, cost: 0.00092 } }, { requestBody: { model: 'openai/whisper-1' } });
    expect(transcription).toMatchObject({ model: 'openai/whisper-1', audioSeconds: '9.2', providerReportedCostUsd: '0.00092', billable: true });
  });

  it('xAI: reasoning reported beside completion_tokens is added to output', () => {
    const u = call('https://api.x.ai/v1/chat/completions', {
      id: 'x',
      object: 'chat.completion',
      model: 'grok-4.1-fast-reasoning',
      choices: [{ index: 0, message: { role: 'assistant', content: 'I am Grok' }, finish_reason: 'stop' }],
      usage: {
        prompt_tokens: 32,
        completion_tokens: 50,
        total_tokens: 370,
        prompt_tokens_details: { text_tokens: 32, audio_tokens: 0, image_tokens: 0, cached_tokens: 6 },
        completion_tokens_details: { reasoning_tokens: 288, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
        num_sources_used: 3,
      },
    });
    expect(u).toMatchObject({ inputTokens: 32, cachedInputTokens: 6, outputTokens: 338, reasoningTokens: 288, details: { num_sources_used: 3 } });
  });

  it('Perplexity: provider cost, search and citation figures in details, reasoning outside output', () => {
    const u = call('https://api.perplexity.ai/chat/completions', {
      id: 'p',
      model: 'sonar-deep-research',
      object: 'chat.completion',
      choices: [],
      usage: {
        prompt_tokens: 19,
        completion_tokens: 4200,
        total_tokens: 4219,
        citation_tokens: 9000,
        num_search_queries: 18,
        reasoning_tokens: 70_000,
        search_context_size: 'low',
        cost: { input_tokens_cost: 0.000038, output_tokens_cost: 0.0336, citation_tokens_cost: 0.018, reasoning_tokens_cost: 0.21, search_queries_cost: 0.09, total_cost: 0.351638 },
      },
    });
    expect(u).toMatchObject({ inputTokens: 19, outputTokens: 4200, reasoningTokens: 0, providerReportedCostUsd: '0.351638' });
    expect(u.details).toMatchObject({ citation_tokens: 9000, num_search_queries: 18, reasoning_tokens: 70_000, search_context_size: 'low' });
  });

  it('DeepSeek stream: the final chunk usage, cache hit counted once', () => {
    const usage = { prompt_tokens: 1315, completion_tokens: 487, total_tokens: 1802, prompt_tokens_details: { cached_tokens: 1280 }, prompt_cache_hit_tokens: 1280, prompt_cache_miss_tokens: 35 };
    const body = sse([
      [null, chunk('deepseek-v4-flash', { role: 'assistant', content: '', reasoning_content: 'think' })],
      [null, chunk('deepseek-v4-flash', { content: 'Use range(len(items)).' })],
      [null, chunk('deepseek-v4-flash', { content: '' }, 'stop', { usage })],
      [null, '[DONE]'],
    ]);
    expect(call('https://api.deepseek.com/chat/completions', body)).toMatchObject({ inputTokens: 1315, cachedInputTokens: 1280, outputTokens: 487 });
  });

  it('DeepSeek-style cache fields alone (no prompt_tokens_details, as older DeepSeek and compatible servers send): hits are cached input, hit + miss the input', () => {
    const withTotal = call('https://api.deepseek.com/chat/completions',
      JSON.stringify({ id: 'x', model: 'deepseek-chat', choices: [], usage: { prompt_tokens: 1000, completion_tokens: 50, prompt_cache_hit_tokens: 640, prompt_cache_miss_tokens: 360 } }));
    expect(withTotal).toMatchObject({ inputTokens: 1000, cachedInputTokens: 640, outputTokens: 50 });
    const splitOnly = call('https://api.deepseek.com/chat/completions',
      JSON.stringify({ id: 'y', model: 'deepseek-chat', choices: [], usage: { completion_tokens: 50, prompt_cache_hit_tokens: 640, prompt_cache_miss_tokens: 360 } }));
    expect(splitOnly).toMatchObject({ inputTokens: 1000, cachedInputTokens: 640, outputTokens: 50 });
  });

  it('DeepInfra estimated cost and Mistral audio seconds are kept exactly in details', () => {
    const deepinfra = call(
      'https://api.deepinfra.com/v1/openai/chat/completions',
      '{"id":"d","model":"meta-llama/Llama-3.3-70B-Instruct","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30,"estimated_cost":0.0000087}}',
    );
    expect(deepinfra.details.estimated_cost_usd).toBe('0.0000087');
    const mistral = call('https://api.mistral.ai/v1/chat/completions', '{"id":"m","model":"voxtral-small-latest","choices":[],"usage":{"prompt_tokens":400,"completion_tokens":20,"total_tokens":420,"prompt_audio_seconds":12.5}}');
    expect(mistral.details.prompt_audio_seconds).toBe('12.5');
  });

  const hosts: [string, string][] = [
    ['https://api.together.xyz/v1/chat/completions', 'together'],
    ['https://api.fireworks.ai/inference/v1/chat/completions', 'fireworks'],
    ['https://api.mistral.ai/v1/chat/completions', 'mistral'],
    ['https://api.cerebras.ai/v1/chat/completions', 'cerebras'],
    ['https://api.studio.nebius.com/v1/chat/completions', 'nebius'],
    ['https://api.hyperbolic.xyz/v1/chat/completions', 'hyperbolic'],
    ['https://api.sambanova.ai/v1/chat/completions', 'sambanova'],
    ['https://api.novita.ai/v3/openai/chat/completions', 'novita'],
    ['https://llama3-1-8b.lepton.run/api/v1/chat/completions', 'lepton'],
    ['https://api.moonshot.ai/v1/chat/completions', 'moonshot'],
    ['https://dashscope-intl.aliyuncs.com/compatible-mode/v1/chat/completions', 'alibaba'],
    ['https://api.z.ai/api/paas/v4/chat/completions', 'zhipu'],
    ['https://api.siliconflow.com/v1/chat/completions', 'siliconflow'],
    ['https://integrate.api.nvidia.com/v1/chat/completions', 'nvidia'],
    ['https://router.huggingface.co/v1/chat/completions', 'huggingface'],
    ['https://generativelanguage.googleapis.com/v1beta/openai/chat/completions', 'google'],
  ];
  it('Alibaba: an explicit-cache write under prompt_tokens_details.cache_creation_input_tokens is a cache write, not plain input', () => {
    // The shape of Model Studio's "Context cache" example (OpenAI-compatible mode).
    const u = call('https://dashscope-intl.aliyuncs.com/compatible-mode/v1/chat/completions', {
      id: 'chatcmpl-1', object: 'chat.completion', model: 'qwen3-coder-plus',
      choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
      usage: {
        prompt_tokens: 18628, completion_tokens: 344, total_tokens: 18972,
        prompt_tokens_details: { text_tokens: 18628, cache_creation_input_tokens: 18613, cache_creation: { ephemeral_5m_input_tokens: 18613 }, cache_type: 'ephemeral', cached_tokens: 0 },
      },
    });
    expect(u).toMatchObject({ provider: 'alibaba', inputTokens: 18628, cachedInputTokens: 0, cacheWriteTokens: 18613, outputTokens: 344 });
  });

  it.each(hosts)('%s: standard usage, cached tokens from either documented place', (url, provider) => {
    const u = call(url, {
      id: 'x',
      object: 'chat.completion',
      model: 'some-model',
      choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
      // Moonshot reports cached_tokens at the top of usage; the rest under prompt_tokens_details.
      usage: provider === 'moonshot' ? { prompt_tokens: 300, completion_tokens: 40, total_tokens: 340, cached_tokens: 256 } : { prompt_tokens: 300, completion_tokens: 40, total_tokens: 340, prompt_tokens_details: { cached_tokens: 256 } },
    });
    expect(u).toMatchObject({ provider, api: 'chat.completions', model: 'some-model', inputTokens: 300, cachedInputTokens: 256, outputTokens: 40, billable: true, requests: 1 });
  });
});

describe('large bodies are read without a full parse, with the same result', () => {
  // Above 64 KiB the images, embeddings and transcription normalizers read the usage block
  // alone; the small bodies below go through JSON.parse. Both must agree.
  const b64 = (kib: number) => 'iVBORw0KGgo'.padEnd(kib * 1024, 'A');

  it('images: count and usage from a multi-megabyte base64 response', () => {
    const make = (data: string) =>
      JSON.stringify({
        created: 1,
        background: 'opaque',
        data: [{ b64_json: data }, { b64_json: data }],
        output_format: 'png',
        quality: 'high',
        size: '1536x1024',
        usage: { input_tokens: 52, input_tokens_details: { image_tokens: 0, text_tokens: 52 }, output_tokens: 12_480, total_tokens: 12_532 },
      });
    const request = { requestBody: { model: 'gpt-image-1.5', n: 2 } };
    const large = call('https://api.openai.com/v1/images/generations', make(b64(1500)), request);
    const small = call('https://api.openai.com/v1/images/generations', make('AAAA'), request);
    expect(large).toEqual(small);
    expect(large).toMatchObject({ images: 2, inputTokens: 52, outputTokens: 12_480, details: { size: '1536x1024', quality: 'high', input_text_tokens: 52 } });
    const urls = JSON.stringify({ created: 1, data: Array.from({ length: 3 }, (_, i) => ({ url: `https://x/${i}.png`, revised_prompt: `a "url": ${'p'.repeat(30_000)}` })) });
    expect(call('https://api.openai.com/v1/images/generations', urls, { requestBody: { model: 'dall-e-3', quality: 'hd' } })).toMatchObject({ images: 3, details: { quality: 'hd', size: '1024x1024' } });
  });

  it('embeddings: usage from a response with thousands of floats', () => {
    const make = (n: number) =>
      JSON.stringify({
        object: 'list',
        data: Array.from({ length: n }, (_, index) => ({ object: 'embedding', index, embedding: Array.from({ length: 1536 }, (__, j) => ((j * 7919) % 1000) / 1000 - 0.5) })),
        model: 'text-embedding-3-large',
        usage: { prompt_tokens: 4096, total_tokens: 4096 },
      });
    const large = call('https://api.openai.com/v1/embeddings', make(20));
    expect(large).toEqual(call('https://api.openai.com/v1/embeddings', make(1)));
    expect(large).toMatchObject({ model: 'text-embedding-3-large', inputTokens: 4096 });
  });

  it('transcription: billed seconds and exact duration from a long verbose_json', () => {
    const make = (n: number) =>
      `{"task":"transcribe","language":"english","duration":3600.0400390625,"text":"…","segments":[${Array.from({ length: n }, (_, i) => `{"id":${i},"start":${i}.0,"end":${i + 1}.0,"text":" word"}`).join(',')}],"usage":{"type":"duration","seconds":3601}}`;
    const large = call('https://api.openai.com/v1/audio/transcriptions', make(3000), { requestBody: { model: 'whisper-1' } });
    expect(large).toEqual(call('https://api.openai.com/v1/audio/transcriptions', make(2), { requestBody: { model: 'whisper-1' } }));
    expect(large).toMatchObject({ audioSeconds: '3601', details: { audio_duration_seconds: '3600.0400390625' } });
    const mistral = (n: number) =>
      `{"model":"voxtral-mini-2507","text":"…","language":"en","segments":[${Array.from({ length: n }, (_, i) => `{"start":${i}.0,"end":${i + 1}.0,"text":" word"}`).join(',')}],"usage":{"prompt_audio_seconds":3600,"prompt_tokens":4,"total_tokens":40000,"completion_tokens":9000}}`;
    const long = call('https://api.mistral.ai/v1/audio/transcriptions', mistral(3000), { requestBody: { model: 'voxtral-mini-latest' } });
    expect(long).toEqual(call('https://api.mistral.ai/v1/audio/transcriptions', mistral(2), { requestBody: { model: 'voxtral-mini-latest' } }));
    expect(long).toMatchObject({ model: 'voxtral-mini-2507', audioSeconds: '3600' });
  });
});
