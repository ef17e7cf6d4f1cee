/**
 * Cohere, AWS Bedrock, ElevenLabs, Deepgram and the per-image providers. Bodies follow each
 * provider's documented response shapes (Cohere v2 chat, Bedrock TokenUsage/CacheDetail,
 * Deepgram listen metadata, Replicate prediction objects, …).
 */
import { describe, expect, it } from 'vitest';
import type { ProviderResponse } from '../usage.types.ts';
import { costOf } from '../../pricing/cost.ts';
import { normalizeResponse } from './index.ts';

function call(url: string, body: unknown, extra: Partial<ProviderResponse> = {}) {
  return normalizeResponse({ url, status: 200, headers: {}, body: typeof body === 'string' ? body : JSON.stringify(body), ...extra });
}

describe('Cohere', () => {
  const usage = { billed_units: { input_tokens: 21, output_tokens: 105 }, tokens: { input_tokens: 186, output_tokens: 105 } };

  it('v2 chat bills billed_units, not the processed tokens; the model is the request’s', () => {
    const body = { id: 'a8fc', finish_reason: 'COMPLETE', message: { role: 'assistant', content: [{ type: 'text', text: 'Coca-Cola is…' }] }, usage };
    const u = call('https://api.cohere.com/v2/chat', body, { requestBody: { model: 'command-a-03-2025' } });
    expect(u).toMatchObject({ provider: 'cohere', api: 'chat', model: 'command-a-03-2025', inputTokens: 21, outputTokens: 105 });
    expect(u.details).toMatchObject({ processed_input_tokens: 186, processed_output_tokens: 105 });
  });

  const events = [
    { id: 'a8fc', type: 'message-start', delta: { message: { role: 'assistant', content: [], tool_plan: '', tool_calls: [], citations: [] } } },
    { type: 'content-start', index: 0, delta: { message: { content: { type: 'text', text: '' } } } },
    { type: 'content-delta', index: 0, delta: { message: { content: { text: 'Coca' } } } },
    { type: 'content-delta', index: 0, delta: { message: { content: { text: '-Cola' } } } },
    { type: 'content-end', index: 0 },
    { type: 'message-end', delta: { finish_reason: 'COMPLETE', usage } },
  ];

  it('v2 stream, as SSE with event lines or as newline-delimited JSON, bills message-end', () => {
    const asSse = events.map((e) => `event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`).join('');
    const asNdjson = events.map((e) => JSON.stringify(e)).join('\n');
    for (const body of [asSse, asNdjson]) {
      expect(call('https://api.cohere.com/v2/chat', body)).toMatchObject({ billable: true, inputTokens: 21, outputTokens: 105 });
    }
  });

  it('a cut v2 stream is incomplete with its text', () => {
    const body = events.slice(0, 4).map((e) => `event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`).join('');
    expect(call('https://api.cohere.com/v2/chat', body)).toMatchObject({ billable: false, incomplete: true, streamedText: 'Coca-Cola' });
  });

  it('v1 chat reads meta.billed_units; embed and rerank bill their units', () => {
    const v1 = { response_id: 'r', text: 'hi', generation_id: 'g', finish_reason: 'COMPLETE', meta: { api_version: { version: '1' }, billed_units: { input_tokens: 9, output_tokens: 4 }, tokens: { input_tokens: 70, output_tokens: 4 } } };
    expect(call('https://api.cohere.ai/v1/chat', v1)).toMatchObject({ inputTokens: 9, outputTokens: 4 });
    const embed = { id: 'e', embeddings: { float: [[0.1]] }, texts: ['a'], meta: { api_version: { version: '2' }, billed_units: { input_tokens: 12, images: 1 } } };
    expect(call('https://api.cohere.com/v2/embed', embed)).toMatchObject({ api: 'embed', inputTokens: 12, images: 0, details: { input_images: 1 } });
    const rerank = { id: 'x', results: [{ index: 0, relevance_score: 0.9 }], meta: { api_version: { version: '2' }, billed_units: { search_units: 1 } } };
    expect(call('https://api.cohere.com/v2/rerank', rerank)).toMatchObject({ api: 'rerank', billable: true, requests: 1, details: { search_units: 1 } });
  });
});

describe('AWS Bedrock', () => {
  const converse = 'https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-6-v1%3A0/converse';

  it('Converse: inputTokens excludes cache reads and writes; the model comes from the URL', () => {
    const body = {
      output: { message: { role: 'assistant', content: [{ text: 'Hello' }] } },
      stopReason: 'end_turn',
      usage: { inputTokens: 120, outputTokens: 45, totalTokens: 3165, cacheReadInputTokens: 2000, cacheWriteInputTokens: 1000, cacheDetails: [{ ttl: '1h', inputTokens: 600 }, { ttl: '5m', inputTokens: 400 }] },
      metrics: { latencyMs: 812 },
    };
    const u = call(converse, body);
    expect(u).toMatchObject({ provider: 'bedrock', api: 'converse', model: 'us.anthropic.claude-sonnet-4-6-v1:0', inputTokens: 3120, cachedInputTokens: 2000, cacheWriteTokens: 1000, outputTokens: 45 });
    expect(u.inputTokens + u.outputTokens).toBe(3165); // totalTokens
    expect(u.details).toMatchObject({ cache_write_1h_tokens: 600, cache_write_5m_tokens: 400 });
  });

  const streamUrl = 'https://bedrock-runtime.eu-central-1.amazonaws.com/model/amazon.nova-pro-v1%3A0/converse-stream';

  it('ConverseStream in the SDK JSON form: the metadata event', () => {
    const body = [
      { messageStart: { role: 'assistant' } },
      { contentBlockDelta: { delta: { text: 'Hel' }, contentBlockIndex: 0 } },
      { contentBlockDelta: { delta: { text: 'lo' }, contentBlockIndex: 0 } },
      { contentBlockStop: { contentBlockIndex: 0 } },
      { messageStop: { stopReason: 'end_turn' } },
      { metadata: { usage: { inputTokens: 30, outputTokens: 2, totalTokens: 32 }, metrics: { latencyMs: 300 } } },
    ]
      .map((e) => JSON.stringify(e))
      .join('\n');
    expect(call(streamUrl, body)).toMatchObject({ api: 'converse-stream', model: 'amazon.nova-pro-v1:0', inputTokens: 30, outputTokens: 2, billable: true });
  });

  it('ConverseStream as raw event-stream frames read as text (binary preludes around JSON payloads)', () => {
    const frame = (type: string, payload: object) => `\u0000\u0000\u0000\u007b\u0000\u0000\u0000R{\u0011\u000b:event-type\u0007\u0000${String.fromCharCode(type.length)}${type}\r:content-type\u0007\u0000\u0010application/json${JSON.stringify(payload)}\u00ee\u007d\u00a3`;
    const body =
      frame('messageStart', { p: 'abcd', role: 'assistant' }) +
      frame('contentBlockDelta', { contentBlockIndex: 0, delta: { text: 'Hi' }, p: 'abcdef' }) +
      frame('messageStop', { p: 'ab', stopReason: 'end_turn' }) +
      frame('metadata', { metrics: { latencyMs: 455 }, p: 'abcdefgh', usage: { inputTokens: 14, outputTokens: 3, totalTokens: 17 } });
    expect(call(streamUrl, body)).toMatchObject({ billable: true, inputTokens: 14, outputTokens: 3 });
    const cut = body.slice(0, body.indexOf('messageStop'));
    expect(call(streamUrl, cut)).toMatchObject({ billable: false, incomplete: true, streamedText: 'Hi' });
  });

  it('stream exceptions are not billable', () => {
    expect(call(streamUrl, '{"messageStart":{"role":"assistant"}}\n{"throttlingException":{"message":"Too many tokens"}}')).toMatchObject({
      billable: false,
      details: { error: 'throttlingException' },
    });
    expect(call(streamUrl, '\u0000\u0000:exception-type\u0007\u0000\u0014modelStreamErrorException{"message":"boom"}')).toMatchObject({ billable: false });
  });

  it('a reply that mentions ":exception-type" is still charged: only a frame header names an exception', () => {
    const reply = (text: string) =>
      [{ messageStart: { role: 'assistant' } }, { contentBlockDelta: { contentBlockIndex: 0, delta: { text } } }, { messageStop: { stopReason: 'end_turn' } },
        { metadata: { usage: { inputTokens: 10, outputTokens: 20, totalTokens: 30 }, metrics: { latencyMs: 5 } } }]
        .map((e) => JSON.stringify(e))
        .join('\n');
    expect(call(streamUrl, reply('AWS names errors in the :exception-type header.'))).toMatchObject({ billable: true, inputTokens: 10, outputTokens: 20 });
  });

  it('InvokeModel: Claude bodies in the Anthropic shape, other families from the token-count headers', () => {
    const claude = { id: 'msg_bdrk', type: 'message', role: 'assistant', model: 'claude-sonnet-4-6', content: [], usage: { input_tokens: 10, cache_read_input_tokens: 90, cache_creation_input_tokens: 0, output_tokens: 4 } };
    expect(call('https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-sonnet-4-6/invoke', claude)).toMatchObject({ inputTokens: 100, cachedInputTokens: 90, outputTokens: 4 });
    const llama = call(
      'https://bedrock-runtime.us-west-2.amazonaws.com/model/meta.llama3-70b-instruct-v1%3A0/invoke',
      { generation: 'Hi', prompt_token_count: 15, generation_token_count: 2, stop_reason: 'stop' },
      { headers: { 'x-amzn-bedrock-input-token-count': '15', 'x-amzn-bedrock-output-token-count': '2' } },
    );
    expect(llama).toMatchObject({ model: 'meta.llama3-70b-instruct-v1:0', inputTokens: 15, outputTokens: 2 });
    const noHeaders = call('https://bedrock-runtime.us-west-2.amazonaws.com/model/meta.llama3-70b-instruct-v1%3A0/invoke', { generation: 'Hi', prompt_token_count: 15, generation_token_count: 2 });
    expect(noHeaders).toMatchObject({ inputTokens: 15, outputTokens: 2 });
  });

  it('InvokeModelWithResponseStream: base64 chunks holding Claude stream events', () => {
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64');
    const body = [
      { type: 'message_start', message: { model: 'claude-sonnet-4-6', usage: { input_tokens: 25, output_tokens: 1 } } },
      { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hi' } },
      { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 6 } },
      { type: 'message_stop', 'amazon-bedrock-invocationMetrics': { inputTokenCount: 25, outputTokenCount: 6, invocationLatency: 400, firstByteLatency: 200 } },
    ]
      .map((e) => `{"bytes":"${b64(e)}","p":"abc"}`)
      .join('\u0000\u0001');
    const u = call('https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-sonnet-4-6/invoke-with-response-stream', body);
    expect(u).toMatchObject({ api: 'invoke-with-response-stream', inputTokens: 25, outputTokens: 6, billable: true });
  });
});

describe('ElevenLabs text-to-speech', () => {
  const url = 'https://api.elevenlabs.io/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb';
  const request = { text: 'Hello 👋 world', model_id: 'eleven_flash_v2_5' };

  it('prefers character-cost, then x-character-count, then the request text (code points)', () => {
    expect(call(url, '', { headers: { 'character-cost': '7', 'x-character-count': '13' }, requestBody: request })).toMatchObject({ characters: 7, details: { credits: 7 } });
    expect(call(url, '', { headers: { 'x-character-count': '13' }, requestBody: request })).toMatchObject({ characters: 13 });
    const fallback = call(url, '', { requestBody: request });
    expect(fallback).toMatchObject({ characters: 13, model: 'eleven_flash_v2_5', billable: true });
    expect(fallback.details.credits).toBeUndefined();
  });

  it('reads the header whatever the case of its name or the type of its value', () => {
    const headers = (value: unknown) => value as Record<string, string>;
    expect(call(url, '', { headers: headers({ 'Character-Cost': '141' }), requestBody: request })).toMatchObject({ characters: 141, details: { credits: 141 } });
    expect(call(url, '', { headers: headers({ 'character-cost': 141 }), requestBody: request })).toMatchObject({ characters: 141 });
    expect(call(url, '', { headers: headers({ 'X-Character-Count': ['13'] }), requestBody: request })).toMatchObject({ characters: 13 });
    expect(() => call(url, '', { headers: headers('character-cost: 141'), requestBody: request })).toThrow(expect.objectContaining({ code: 'VALIDATION', details: { field: 'response.headers' } }));
  });

  it('with neither headers nor request text nothing can be counted', () => {
    expect(call(url, '')).toMatchObject({ billable: false, incomplete: true, characters: 0 });
  });

  it('an error status is not billable even with a cost header', () => {
    const body = { detail: { status: 'quota_exceeded', message: 'This request exceeds your quota.' } };
    expect(call(url, body, { status: 401, headers: { 'character-cost': '141' }, requestBody: request })).toMatchObject({ billable: false, characters: 0 });
  });
});

describe('Deepgram', () => {
  const listen = 'https://api.deepgram.com/v1/listen?model=nova-3&smart_format=true';
  const body =
    '{"metadata":{"transaction_key":"deprecated","request_id":"6ba2879c-1d5e-4d4f-9f16-3a1f0c8e2b71","sha256":"6a7d98","created":"2026-08-12T14:21:07.620Z",' +
    '"duration":25.933313,"channels":2,"models":["e04910"],"model_info":{"e04910":{"name":"general-nova-3","version":"2025-01-01.0","arch":"nova-3"}}},' +
    '"results":{"channels":[{"alternatives":[{"transcript":"hello","confidence":0.98,"words":[{"word":"hello","start":0.06,"end":0.56,"confidence":0.99}]}]}]}}';

  it('listen: duration kept exactly as written, channels in details', () => {
    const u = call(listen, body);
    expect(u).toMatchObject({ provider: 'deepgram', api: 'listen', audioSeconds: '25.933313', model: 'general-nova-3', billable: true });
    expect(u.details).toMatchObject({ channels: 2, requested_model: 'nova-3' });
  });

  it('listen with multichannel=true bills each transcribed channel for the whole duration', () => {
    const channel = '{"alternatives":[{"transcript":"hello","confidence":0.98,"words":[]}]}';
    const both = body.replace(/"results":\{"channels":\[.*\]\}\}$/, `"results":{"channels":[${channel},${channel}]}}`);
    expect(both).not.toBe(body);
    const u = call(`${listen}&multichannel=true`, both);
    expect(u).toMatchObject({ audioSeconds: '51.866626', billable: true, details: { channels: 2, transcribed_channels: 2, audio_duration_seconds: '25.933313' } });
    const perMinute = { provider: 'deepgram', model: 'general-nova-3', currency: 'USD' as const, effectiveFrom: new Date(0), perAudioMinute: '0.0043' };
    // Costed as one channel of twice the duration.
    expect(costOf(u, perMinute)).toBe(costOf(call(listen, body.replace('25.933313', '51.866626')), perMinute));
    expect(costOf(u, perMinute)).toBeGreaterThan(costOf(call(listen, body), perMinute));
  });

  it('listen with a callback returns only a request id: nothing billable here', () => {
    expect(call(`${listen}&callback=https://hooks.example/dg`, { request_id: 'abc' })).toMatchObject({ billable: false, details: { status: 'callback' } });
  });

  it('speak: dg-char-count header', () => {
    const u = call('https://api.deepgram.com/v1/speak?model=aura-2-thalia-en', '', { headers: { 'dg-char-count': '58', 'dg-model-name': 'aura-2-thalia-en' } });
    expect(u).toMatchObject({ api: 'speak', characters: 58, model: 'aura-2-thalia-en' });
  });
});

describe('image providers billed per generation', () => {
  it('Stability: a binary image is one image; v1 JSON counts artifacts', () => {
    const binary = call('https://api.stability.ai/v2beta/stable-image/generate/ultra', '', { headers: { 'content-type': 'image/png', 'finish-reason': 'SUCCESS', seed: '42' } });
    expect(binary).toMatchObject({ api: 'stable-image.generate', model: 'ultra', images: 1, details: { finish_reason: 'SUCCESS' } });
    const v1 = call('https://api.stability.ai/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image', { artifacts: [{ base64: 'A', seed: 1, finishReason: 'SUCCESS' }, { base64: 'B', seed: 2, finishReason: 'SUCCESS' }] });
    expect(v1).toMatchObject({ model: 'stable-diffusion-xl-1024-v1-0', images: 2 });
    const sd35 = call('https://api.stability.ai/v2beta/stable-image/generate/sd3', { image: 'AAAA', finish_reason: 'SUCCESS', seed: 3 }, { requestBody: { model: 'sd3.5-large' } });
    expect(sd35).toMatchObject({ model: 'sd3.5-large', images: 1 });
  });

  it('fal: sync results count images; queue submissions and status polls are not billable', () => {
    const result = { images: [{ url: 'https://v3.fal.media/a.jpg', width: 1024, height: 768, content_type: 'image/jpeg' }, { url: 'https://v3.fal.media/b.jpg', width: 1024, height: 768 }], timings: { inference: 1.2345 }, seed: 1, has_nsfw_concepts: [false, false] };
    expect(call('https://fal.run/fal-ai/flux/dev', result)).toMatchObject({ api: 'run', model: 'fal-ai/flux/dev', images: 2, details: { inference_seconds: '1.2345' } });
    const ticket = { status: 'IN_QUEUE', request_id: '764cabcf', response_url: 'https://queue.fal.run/fal-ai/flux/requests/764cabcf', status_url: 'x', cancel_url: 'y', queue_position: 0 };
    expect(call('https://queue.fal.run/fal-ai/flux/dev', ticket)).toMatchObject({ api: 'queue.submit', billable: false });
    expect(call('https://queue.fal.run/fal-ai/flux/requests/764cabcf/status', { status: 'COMPLETED' })).toMatchObject({ billable: false });
    expect(call('https://queue.fal.run/fal-ai/flux/requests/764cabcf', result)).toMatchObject({ api: 'queue.result', images: 2, billable: true, billingId: 'fal:request:764cabcf' });
    // The same request spelt otherwise in the URL is the same unit of work, charged once.
    for (const spelt of ['764CABCF', '%37%36%34cabcf']) {
      expect(call(`https://queue.fal.run/fal-ai/flux/requests/${spelt}`, result).billingId, spelt).toBe('fal:request:764cabcf');
    }
    // A sync run is its own unit of work: nothing to dedupe it by.
    expect(call('https://fal.run/fal-ai/flux/dev', result).billingId ?? null).toBeNull();
  });

  const prediction = (status: string, output: unknown, metrics: object = { predict_time: 1.820164, total_time: 1.9 }) => ({
    id: 'gm3qorzdhgbfurvjtvhg6dckhu',
    model: 'black-forest-labs/flux-schnell',
    version: 'dp-1',
    input: { prompt: 'x', num_outputs: 4 },
    output,
    error: null,
    status,
    metrics,
  });

  it('Replicate: billed when succeeded, by images or by tokens; starting/processing are polls', () => {
    const urls = ['https://replicate.delivery/a.webp', 'https://replicate.delivery/b.webp', 'https://replicate.delivery/c.webp', 'https://replicate.delivery/d.webp'];
    const done = call('https://api.replicate.com/v1/models/black-forest-labs/flux-schnell/predictions', prediction('succeeded', urls));
    expect(done).toMatchObject({ model: 'black-forest-labs/flux-schnell', images: 4, details: { predict_time_seconds: '1.820164', prediction_id: 'gm3qorzdhgbfurvjtvhg6dckhu' } });
    expect(call('https://api.replicate.com/v1/predictions/gm3q', prediction('processing', null))).toMatchObject({ billable: false, details: { status: 'processing' } });
    expect(call('https://api.replicate.com/v1/predictions/gm3q', { ...prediction('failed', null), error: 'CUDA out of memory' })).toMatchObject({ billable: false, details: { error: 'failed' } });
    const llm = call('https://api.replicate.com/v1/predictions/x', { ...prediction('succeeded', ['Hello', ' world']), model: 'meta/meta-llama-3-70b-instruct', metrics: { input_token_count: 12, output_token_count: 2, predict_time: 0.5 } });
    expect(llm).toMatchObject({ images: 0, inputTokens: 12, outputTokens: 2 });
  });

  it('Replicate: a succeeded prediction carries a billingId, so its repeated polls are charged once', () => {
    const poll = () => call('https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu', prediction('succeeded', ['https://replicate.delivery/a.webp']));
    expect(poll()).toMatchObject({ billable: true, images: 1, billingId: 'replicate:prediction:gm3qorzdhgbfurvjtvhg6dckhu' });
    expect(poll().billingId).toBe(poll().billingId);
    // Only a billable result names the unit of work: polls and failures are never charged anyway.
    expect(call('https://api.replicate.com/v1/predictions/gm3q', prediction('processing', null)).billingId).toBeUndefined();
    expect(call('https://api.replicate.com/v1/predictions/gm3q', { ...prediction('failed', null), error: 'CUDA out of memory' }).billingId).toBeUndefined();
    const { id: _id, ...anonymous } = prediction('succeeded', ['https://replicate.delivery/a.webp']);
    expect(call('https://api.replicate.com/v1/predictions', anonymous)).toMatchObject({ billable: true, images: 1 });
    expect(call('https://api.replicate.com/v1/predictions', anonymous).billingId).toBeUndefined();
  });

  it('Black Forest Labs: the submission is the billed generation; get_result is a poll', () => {
    const submit = call('https://api.bfl.ai/v1/flux-pro-1.1', { id: 'f2c3', polling_url: 'https://api.eu.bfl.ai/v1/get_result?id=f2c3', cost: 4, input_mp: 0, output_mp: 1.05 });
    expect(submit).toMatchObject({ model: 'flux-pro-1.1', images: 1, billable: true, details: { cost_credits: '4', output_megapixels: '1.05' } });
    expect(call('https://api.eu.bfl.ai/v1/get_result?id=f2c3', { id: 'f2c3', status: 'Ready', result: { sample: 'https://x' } })).toMatchObject({ billable: false, details: { status: 'Ready' } });
  });

  it('Ideogram and Recraft count data[]; the model comes from the request', () => {
    const ideogram = call(
      'https://api.ideogram.ai/v1/ideogram-v3/generate',
      { created: '2026-08-12T14:21:07Z', data: [{ url: 'a', prompt: 'p', resolution: '1024x1024', is_image_safe: true, seed: 1 }, { url: 'b', prompt: 'p', resolution: '1024x1024', is_image_safe: true, seed: 2 }] },
      { requestBody: { prompt: 'p', rendering_speed: 'TURBO', num_images: 2 } },
    );
    expect(ideogram).toMatchObject({ model: 'ideogram-v3', images: 2, details: { rendering_speed: 'TURBO' } });
    const legacy = call('https://api.ideogram.ai/generate', { created: 'x', data: [{ url: 'a' }] }, { requestBody: { image_request: { prompt: 'p', model: 'V_2_TURBO' } } });
    expect(legacy).toMatchObject({ model: 'V_2_TURBO', images: 1 });
    const recraft = call('https://external.api.recraft.ai/v1/images/generations', { created: 1, data: [{ image_id: 'i', url: 'u' }] }, { requestBody: { model: 'recraftv3', prompt: 'p' } });
    expect(recraft).toMatchObject({ provider: 'recraft', model: 'recraftv3', images: 1 });
  });

  it('OpenAI-compatible image endpoints without usage are priced per image', () => {
    const u = call('https://api.x.ai/v1/images/generations', { data: [{ url: 'a', revised_prompt: 'p' }, { url: 'b', revised_prompt: 'p' }] }, { requestBody: { model: 'grok-2-image', n: 2 } });
    expect(u).toMatchObject({ provider: 'xai', model: 'grok-2-image', images: 2, inputTokens: 0 });
  });
});
