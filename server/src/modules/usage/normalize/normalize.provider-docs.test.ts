/**
 * Shapes and hosts the providers' own documentation describes, which the normalizers missed.
 * Each case names the page it follows.
 */
import { describe, expect, it } from 'vitest';
import { detectProvider, normalizeResponse, SUPPORTED_PROVIDERS } from './index.ts';

const sse = (chunks: unknown[]): string => chunks.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('');
const named = (events: [string, unknown][]): string => events.map(([e, d]) => `event: ${e}\ndata: ${JSON.stringify(d)}\n\n`).join('');

describe('regional and data-residency hosts', () => {
  // OpenAI's data residency guide: a project with data residency must call its region's
  // domain prefix ({us,eu,gb,ae}.api.openai.com required; au, ca, jp, in, sg, kr optional).
  it.each(['us', 'eu', 'gb', 'ae', 'jp'])('OpenAI %s.api.openai.com', (region) => {
    expect(detectProvider(`https://${region}.api.openai.com/v1/chat/completions`)).toEqual({ provider: 'openai', api: 'chat.completions' });
    const u = normalizeResponse({
      url: `https://${region}.api.openai.com/v1/responses`,
      status: 200,
      headers: {},
      body: JSON.stringify({ object: 'response', status: 'completed', model: 'gpt-5.4-mini', output: [], usage: { input_tokens: 12, output_tokens: 3, total_tokens: 15 } }),
    });
    expect(u).toMatchObject({ provider: 'openai', api: 'responses', inputTokens: 12, outputTokens: 3, billable: true });
  });

  // docs.x.ai, Regional Endpoints: https://<region-name>.api.x.ai, and the US endpoint us.api.x.ai.
  it.each(['us-east-1', 'eu-west-1', 'us'])('xAI %s.api.x.ai', (region) => {
    expect(detectProvider(`https://${region}.api.x.ai/v1/chat/completions`)).toEqual({ provider: 'xai', api: 'chat.completions' });
  });

  // docs.mistral.ai, Regional inference: api.eu.mistral.ai (and api.us.mistral.ai).
  it.each(['api.eu.mistral.ai', 'api.us.mistral.ai'])('Mistral %s', (host) => {
    expect(detectProvider(`https://${host}/v1/chat/completions`)).toEqual({ provider: 'mistral', api: 'chat.completions' });
  });

  // Fireworks' audio API reference: transcriptions go to audio-prod / audio-turbo.api.fireworks.ai.
  it.each(['audio-prod', 'audio-turbo'])('Fireworks %s.api.fireworks.ai', (endpoint) => {
    const u = normalizeResponse({
      url: `https://${endpoint}.api.fireworks.ai/v1/audio/transcriptions`,
      status: 200,
      headers: {},
      body: JSON.stringify({ task: 'transcribe', language: 'english', duration: 12.5, text: 'hello' }),
      requestBody: { model: 'whisper-v3' },
    });
    expect(u).toMatchObject({ provider: 'fireworks', api: 'audio.transcriptions', audioSeconds: '13', billable: true });
  });

  // docs.bfl.ai, Integration guidelines (and the quick start's API endpoints): the global
  // api.bfl.ai, the multi-cluster api.eu.bfl.ai and api.us.bfl.ai, and the legacy single-cluster
  // api.eu1.bfl.ai and api.us1.bfl.ai (BFL's API reference sends creates there, and a create's
  // polling_url may name them).
  it.each(['api.bfl.ai', 'api.eu.bfl.ai', 'api.us.bfl.ai', 'api.eu1.bfl.ai', 'api.us1.bfl.ai'])('Black Forest Labs %s', (host) => {
    expect(detectProvider(`https://${host}/v1/flux-pro-1.1`)).toEqual({ provider: 'bfl', api: 'generate' });
    const u = normalizeResponse({
      url: `https://${host}/v1/get_result?id=7c0f6a3e-2b1d-4e5f-9a8b-0c1d2e3f4a5b`,
      status: 200,
      headers: {},
      body: JSON.stringify({ id: '7c0f6a3e-2b1d-4e5f-9a8b-0c1d2e3f4a5b', status: 'Ready', result: { sample: 'https://delivery-eu1.bfl.ai/results/a.jpeg' } }),
    });
    expect(u).toMatchObject({ provider: 'bfl', api: 'get_result' });
  });

  it('a look-alike host is still not a provider', () => {
    expect(detectProvider('https://eu.api.openai.com.evil.example/v1/chat/completions')).toBeNull();
    expect(detectProvider('https://a.b.api.x.ai/v1/chat/completions')).toBeNull();
    expect(detectProvider('https://api.eu2.bfl.ai.evil.example/v1/get_result?id=x')).toBeNull();
  });
});

describe('free reads', () => {
  // Vertex AI, "Count tokens for Claude models": POST …/publishers/anthropic/models/count-tokens:rawPredict
  // answers {"input_tokens": N}, and "there is no charge for using the count-tokens endpoint".
  it("Vertex AI's Claude count-tokens is nothing billable and nothing to estimate, as Anthropic's own count_tokens", () => {
    const body = '{"input_tokens":14}';
    const requestBody = { model: 'claude-sonnet-4-6@20260101', messages: [{ role: 'user', content: 'how many tokens?' }] };
    for (const url of [
      'https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict',
      'https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/anthropic/models/count-tokens:rawPredict',
    ]) {
      expect(normalizeResponse({ url, status: 200, headers: {}, body, requestBody }), url).toMatchObject({ provider: 'vertex', api: 'unknown', billable: false, incomplete: false });
      // Named (as the gateway names it), no shorter tail of the path is taken for another API either.
      expect(normalizeResponse({ url, provider: 'vertex', status: 200, headers: {}, body, requestBody }), url).toMatchObject({ api: 'unknown', billable: false, incomplete: false });
    }
    const proxied = 'https://gateway.ai.cloudflare.com/v1/acct/gw/google-vertex-ai/v1/projects/p/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict';
    expect(normalizeResponse({ url: proxied, provider: 'vertex', status: 200, headers: {}, body, requestBody })).toMatchObject({ api: 'unknown', billable: false, incomplete: false });
    expect(normalizeResponse({ url: 'https://api.anthropic.com/v1/messages/count_tokens', status: 200, headers: {}, body, requestBody })).toMatchObject({ api: 'unknown', billable: false, incomplete: false });
    // Claude's own calls on Vertex are still its Messages.
    expect(detectProvider('https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-6:rawPredict')).toEqual({ provider: 'vertex', api: 'messages' });
  });
});

describe('reasoning text of a cut stream is counted for the estimate', () => {
  // docs.mistral.ai, Reasoning: the output has a thinking chunk before the answer; streamed, the
  // delta's content is a list of chunks ({type: "thinking", thinking: [{type: "text", …}]}, {type: "text", …}).
  it('Mistral: thinking chunks are other output, text chunks visible text', () => {
    const body = sse([
      { id: 'a', object: 'chat.completion.chunk', model: 'mistral-medium-3-5', choices: [{ index: 0, delta: { role: 'assistant', content: [{ type: 'thinking', thinking: [{ type: 'text', text: 'Let me work this out.' }] }] }, finish_reason: null }] },
      { id: 'a', object: 'chat.completion.chunk', model: 'mistral-medium-3-5', choices: [{ index: 0, delta: { content: [{ type: 'text', text: 'The answer' }] }, finish_reason: null }] },
      { id: 'a', object: 'chat.completion.chunk', model: 'mistral-medium-3-5', choices: [{ index: 0, delta: { content: ' is 4' }, finish_reason: null }] },
    ]);
    const u = normalizeResponse({ url: 'https://api.mistral.ai/v1/chat/completions', status: 200, headers: {}, body });
    expect(u).toMatchObject({ incomplete: true, billable: false, streamedText: 'The answer is 4' });
    expect(u.details.streamed_other_chars).toBe('Let me work this out.'.length);
  });

  it('Mistral: a non-stream body without usage reads its content chunks the same way', () => {
    const body = JSON.stringify({
      id: 'a', object: 'chat.completion', model: 'mistral-medium-3-5',
      choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: [{ type: 'thinking', thinking: [{ type: 'text', text: 'Hmm.' }] }, { type: 'text', text: 'Four.' }] } }],
    });
    const u = normalizeResponse({ url: 'https://api.mistral.ai/v1/chat/completions', status: 200, headers: {}, body });
    expect(u).toMatchObject({ incomplete: true, streamedText: 'Four.' });
    expect(u.details.streamed_other_chars).toBe(4);
  });

  // Cohere's Command A Reasoning streams its thinking as content-delta events whose
  // delta.message.content carries `thinking` rather than `text` (Cohere's Reasoning guide; the
  // cohere-python SDK reads both), and answers with a `thinking` content block before its text.
  it('Cohere v2: thinking deltas are other output', () => {
    const body = named([
      ['message-start', { type: 'message-start', id: 'x', delta: { message: { role: 'assistant' } } }],
      ['content-start', { type: 'content-start', index: 0, delta: { message: { content: { type: 'thinking', thinking: '' } } } }],
      ['content-delta', { type: 'content-delta', index: 0, delta: { message: { content: { thinking: 'The user wants a haiku' } } } }],
    ]);
    const u = normalizeResponse({ url: 'https://api.cohere.com/v2/chat', status: 200, headers: {}, body, requestBody: { model: 'command-a-reasoning-08-2025', stream: true } });
    expect(u).toMatchObject({ incomplete: true, billable: false, streamedText: '' });
    expect(u.details.streamed_other_chars).toBe('The user wants a haiku'.length);
  });

  it('Cohere v2: a thinking block of a body without usage is counted', () => {
    const body = JSON.stringify({ id: 'x', finish_reason: 'COMPLETE', message: { role: 'assistant', content: [{ type: 'thinking', thinking: 'Plan first.' }, { type: 'text', text: 'Done.' }] } });
    const u = normalizeResponse({ url: 'https://api.cohere.com/v2/chat', status: 200, headers: {}, body, requestBody: { model: 'command-a-reasoning-08-2025' } });
    expect(u).toMatchObject({ incomplete: true, streamedText: 'Done.' });
    expect(u.details.streamed_other_chars).toBe('Plan first.'.length);
  });
});

describe('Bedrock InvokeModel of OpenAI gpt-oss', () => {
  // Bedrock user guide, OpenAI models: "The response body of OpenAI models follows the chat
  // completion object", so InvokeModel's body carries usage.prompt_tokens / completion_tokens.
  const url = 'https://bedrock-runtime.us-west-2.amazonaws.com/model/openai.gpt-oss-120b-1:0';

  it('reads the chat completion usage of the body (no count headers sent)', () => {
    const body = JSON.stringify({
      id: 'chatcmpl-1', object: 'chat.completion', created: 1, model: 'openai.gpt-oss-120b-1:0',
      choices: [{ index: 0, message: { role: 'assistant', content: '<reasoning>Greet back.</reasoning>Hello!' }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 25, completion_tokens: 40, total_tokens: 65 },
    });
    const u = normalizeResponse({ url: `${url}/invoke`, status: 200, headers: {}, body });
    expect(u).toMatchObject({ provider: 'bedrock', api: 'invoke', model: 'openai.gpt-oss-120b-1:0', billable: true, incomplete: false, inputTokens: 25, outputTokens: 40 });
  });

  it('a cut stream of chat completion chunks keeps its text for the estimate', () => {
    const frames = (events: object[]) => events.map((e) => `{"bytes":"${Buffer.from(JSON.stringify(e)).toString('base64')}","p":"abc"}`).join('\u0000\u0001');
    const body = frames([
      { id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { role: 'assistant', content: 'Hello' }, finish_reason: null }] },
      { id: 'c', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: ' there' }, finish_reason: null }] },
    ]);
    const u = normalizeResponse({ url: `${url}/invoke-with-response-stream`, status: 200, headers: {}, body });
    expect(u).toMatchObject({ incomplete: true, billable: false, streamedText: 'Hello there' });
  });
});

describe('ElevenLabs Text to Dialogue', () => {
  // ElevenLabs' Text to Dialogue guide: the request's text is inputs[].text (no top-level `text`).
  it('without the count headers, bills the characters of every input', () => {
    const inputs = [
      { text: 'Hello! How can I help?', voice_id: '21m00Tcm4TlvDq8ikWAM' },
      { text: 'Tell me more 🙂', voice_id: 'AZnzlk1XvdvUeBnXmlld' },
    ];
    const u = normalizeResponse({ url: 'https://api.elevenlabs.io/v1/text-to-dialogue', status: 200, headers: {}, body: '', requestBody: { model_id: 'eleven_v3', inputs } });
    expect(u).toMatchObject({ provider: 'elevenlabs', api: 'text-to-dialogue', billable: true, incomplete: false, characters: 22 + 14 });
  });

  it('the character-cost header still wins', () => {
    const u = normalizeResponse({ url: 'https://api.elevenlabs.io/v1/text-to-dialogue', status: 200, headers: { 'character-cost': '40' }, body: '', requestBody: { inputs: [{ text: 'Hi', voice_id: 'v' }] } });
    expect(u.characters).toBe(40);
  });
});

describe('Gemini grounding with Google Search', () => {
  // Gemini API pricing: grounding is billed apart from tokens, on Gemini 3 per search query run
  // ("we ignore the empty web search queries when counting unique queries"); the queries are
  // candidates[].groundingMetadata.webSearchQueries. Kept beside the tokens, as Anthropic's web_search_requests are.
  const grounded = (queries: string[]) => ({
    candidates: [{ content: { role: 'model', parts: [{ text: 'Spain won Euro 2024.' }] }, finishReason: 'STOP', groundingMetadata: { webSearchQueries: queries, groundingChunks: [] } }],
    usageMetadata: { promptTokenCount: 10, candidatesTokenCount: 6, totalTokenCount: 16 },
    modelVersion: 'gemini-3-flash',
  });

  it('counts the unique, non-empty queries of a body', () => {
    const body = JSON.stringify(grounded(['', 'who won euro 2024', '', 'euro 2024 final score', 'who won euro 2024']));
    const u = normalizeResponse({ url: 'https://generativelanguage.googleapis.com/v1beta/models/gemini-3-flash:generateContent', status: 200, headers: {}, body });
    expect(u).toMatchObject({ inputTokens: 10, outputTokens: 6, billable: true });
    expect(u.details.web_search_queries).toBe(2);
  });

  it('a stream that repeats them counts them once', () => {
    const chunk = grounded(['who won euro 2024']);
    const body = sse([{ ...chunk, candidates: [{ ...chunk.candidates[0], finishReason: undefined }] }, chunk]);
    const u = normalizeResponse({ url: 'https://generativelanguage.googleapis.com/v1beta/models/gemini-3-flash:streamGenerateContent?alt=sse', status: 200, headers: {}, body });
    expect(u.details.web_search_queries).toBe(1);
  });

  it('an ungrounded answer has none', () => {
    const body = JSON.stringify({ ...grounded([]), candidates: [{ content: { parts: [{ text: 'Hi' }] }, finishReason: 'STOP' }] });
    const u = normalizeResponse({ url: 'https://generativelanguage.googleapis.com/v1beta/models/gemini-3-flash:generateContent', status: 200, headers: {}, body });
    expect(u.details.web_search_queries).toBeUndefined();
  });
});

describe('SUPPORTED_PROVIDERS lists every API a provider is reported under', () => {
  // The list is for docs and allow-lists: an API a response is recorded under but missing from it
  // would be refused by such an allow-list. Claude in Microsoft Foundry (Anthropic Messages on
  // {resource}.services.ai.azure.com/anthropic), Gemini's and Cohere's OpenAI compatibility (embeddings).
  it.each([
    'https://acme.services.ai.azure.com/anthropic/v1/messages',
    'https://generativelanguage.googleapis.com/v1beta/openai/embeddings',
    'https://generativelanguage.googleapis.com/v1beta/openai/images/generations',
    'https://api.cohere.ai/compatibility/v1/embeddings',
  ])('%s', (url) => {
    const detected = detectProvider(url)!;
    expect(detected.api).not.toBe('unknown');
    expect(SUPPORTED_PROVIDERS.find((p) => p.id === detected.provider)!.apis).toContain(detected.api);
  });
});
