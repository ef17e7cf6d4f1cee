import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_OUTPUT_TOKENS, MAX_CHOICES, maxUsageOf } from './reserve.ts';

const body = (value: unknown) => Buffer.from(JSON.stringify(value));

describe('maxUsageOf: the most a request can use', () => {
  it('reads each API’s output cap and the model', () => {
    const cases: [string, string, unknown, string, number][] = [
      // Two caps named: held at the larger, which a lax OpenAI-compatible server may be the one to read.
      ['openai', 'https://api.openai.com/v1/chat/completions', { model: 'gpt-5.4-mini', max_completion_tokens: 300, max_tokens: 999 }, 'gpt-5.4-mini', 999],
      ['openai', 'https://api.openai.com/v1/chat/completions', { model: 'gpt-5.4-mini', max_output_tokens: 1, max_tokens: 100_000 }, 'gpt-5.4-mini', 100_000],
      // A cap written as text (which lax servers accept) counts as the number.
      ['openai', 'https://api.openai.com/v1/chat/completions', { model: 'gpt-5.4-mini', max_tokens: '20000' }, 'gpt-5.4-mini', 20_000],
      ['openai', 'https://api.openai.com/v1/chat/completions', { model: 'gpt-5.4-mini', max_tokens: 50 }, 'gpt-5.4-mini', 50],
      ['openai', 'https://api.openai.com/v1/responses', { model: 'gpt-5.4', max_output_tokens: 1200 }, 'gpt-5.4', 1200],
      ['anthropic', 'https://api.anthropic.com/v1/messages', { model: 'claude-opus-4-8', max_tokens: 1024 }, 'claude-opus-4-8', 1024],
      ['google', 'https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash:generateContent', { generationConfig: { maxOutputTokens: 64 } }, 'gemini-3.8-flash', 64],
      ['openai', 'https://api.openai.com/v1/chat/completions', { model: 'gpt-5.4-mini' }, 'gpt-5.4-mini', DEFAULT_MAX_OUTPUT_TOKENS],
    ];
    for (const [provider, url, request, model, output] of cases) {
      const usage = maxUsageOf(provider, new URL(url), body(request));
      expect(usage, url).toMatchObject({ provider, model, outputTokens: output, billable: true, requests: 1 });
      // The prompt is counted generously: one token per three bytes of the whole request.
      expect(usage!.inputTokens).toBe(Math.ceil(body(request).length / 3));
    }
  });

  it('reads a model the path names as the provider\'s router reads it: Bedrock\'s /model/{id}/, Vertex partner models, an Azure deployment', () => {
    const converse = { messages: [], inferenceConfig: { maxTokens: 200 } };
    expect(maxUsageOf('bedrock', new URL('https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-sonnet-4-5-v1%3A0/converse'), body(converse)))
      .toMatchObject({ api: 'converse', model: 'anthropic.claude-sonnet-4-5-v1:0', outputTokens: 200 });
    expect(maxUsageOf('bedrock', new URL('https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-pro-v1:0/converse-stream'), body(converse)))
      .toMatchObject({ api: 'converse-stream', model: 'amazon.nova-pro-v1:0', outputTokens: 200 });
    const vertex = 'https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-opus-4-8:rawPredict';
    expect(maxUsageOf('vertex', new URL(vertex), body({ anthropic_version: 'vertex-2023-10-16', max_tokens: 77, messages: [] })))
      .toMatchObject({ api: 'messages', model: 'claude-opus-4-8', outputTokens: 77 });
    const azure = 'https://acme.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21';
    expect(maxUsageOf('azure', new URL(azure), body({ messages: [], max_tokens: 33 }))).toMatchObject({ api: 'chat.completions', model: 'gpt-4o', outputTokens: 33 });
    // A model the body names wins over a deployment's name; an empty one names none.
    expect(maxUsageOf('azure', new URL(azure), body({ model: 'gpt-4o-mini', messages: [], max_tokens: 33 }))).toMatchObject({ model: 'gpt-4o-mini' });
    expect(maxUsageOf('azure', new URL(azure), body({ model: ' ', messages: [], max_tokens: 33 }))).toMatchObject({ model: 'gpt-4o' });
  });

  it('holds for the model a path runs, not a cheaper one the body adds (Bedrock, Gemini)', () => {
    const bedrock = new URL('https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-opus-4-1-20250805-v1%3A0/converse');
    expect(maxUsageOf('bedrock', bedrock, body({ model: 'amazon.nova-micro-v1:0', messages: [], inferenceConfig: { maxTokens: 4000 } })))
      .toMatchObject({ model: 'anthropic.claude-opus-4-1-20250805-v1:0' });
    expect(maxUsageOf('bedrock', bedrock, body({ model: '', messages: [], inferenceConfig: { maxTokens: 4000 } }))).toMatchObject({ model: 'anthropic.claude-opus-4-1-20250805-v1:0' });
    const gemini = new URL('https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent');
    expect(maxUsageOf('google', gemini, body({ model: 'gemini-2.0-flash-lite', contents: [] }))).toMatchObject({ model: 'gemini-2.5-pro' });
  });

  it('routes by the provider a merchant host speaks, not by its host name', () => {
    expect(maxUsageOf('openai', new URL('http://127.0.0.1:8080/v1/chat/completions'), body({ model: 'm', max_tokens: 5 }))).toMatchObject({ api: 'chat.completions', outputTokens: 5 });
  });

  it('a % escape never throws: the body’s model is taken as written, the path’s is decoded when it can be', () => {
    const chat = new URL('https://api.openai.com/v1/chat/completions');
    expect(maxUsageOf('openai', chat, body({ model: '%ZZ' }))).toMatchObject({ model: '%ZZ' });
    expect(maxUsageOf('openai', chat, body({ model: 'my%20model' }))).toMatchObject({ model: 'my%20model' });
    const gemini = (model: string) => new URL(`https://generativelanguage.googleapis.com/v1beta/models/${model}:generateContent`);
    expect(maxUsageOf('google', gemini('gemini-2.5-flash%ZZ'), body({ contents: [] }))).toMatchObject({ model: 'gemini-2.5-flash%ZZ' });
    expect(maxUsageOf('google', gemini('gemini%2D2.5-flash'), body({ contents: [] }))).toMatchObject({ model: 'gemini-2.5-flash' });
  });

  it('cannot bound what is not a token-priced text call: no reservation', () => {
    expect(maxUsageOf('openai', new URL('https://api.openai.com/v1/images/generations'), body({ model: 'gpt-image-1.5', prompt: 'x' }))).toBeNull();
    expect(maxUsageOf('openai', new URL('https://api.openai.com/v1/chat/completions'), Buffer.from('not json'))).toBeNull();
    expect(maxUsageOf('openai', new URL('https://api.openai.com/v1/chat/completions'), body({ messages: [] }))).toBeNull();
    expect(maxUsageOf('openai', new URL('https://api.openai.com/v1/chat/completions'), body([1, 2]))).toBeNull();
  });
});

describe('maxUsageOf: several choices, each of which may use the whole output cap', () => {
  const chat = new URL('https://api.openai.com/v1/chat/completions');
  const gemini = new URL('https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash:generateContent');
  const outputOf = (provider: string, url: URL, request: unknown) => maxUsageOf(provider, url, body(request))!.outputTokens;

  it('OpenAI chat and legacy completions: n choices (best_of candidates) reserve n times the cap, the prompt once', () => {
    const one = maxUsageOf('openai', chat, body({ model: 'gpt-5.4-mini', max_tokens: 1000, n: 1 }))!;
    const four = maxUsageOf('openai', chat, body({ model: 'gpt-5.4-mini', max_tokens: 1000, n: 4 }))!;
    expect(one.outputTokens).toBe(1000);
    expect(four.outputTokens).toBe(4 * one.outputTokens);
    expect(four.inputTokens).toBe(Math.ceil(body({ model: 'gpt-5.4-mini', max_tokens: 1000, n: 4 }).length / 3));
    expect(outputOf('openai', chat, { model: 'gpt-5.4-mini', n: 3 })).toBe(3 * DEFAULT_MAX_OUTPUT_TOKENS);
    const completions = new URL('https://api.openai.com/v1/completions');
    expect(outputOf('openai', completions, { model: 'gpt-3.5-turbo-instruct', max_tokens: 100, n: 2 })).toBe(200);
    // best_of candidates are all generated (and billed), n of them returned.
    expect(outputOf('openai', completions, { model: 'gpt-3.5-turbo-instruct', max_tokens: 100, n: 2, best_of: 5 })).toBe(500);
    expect(outputOf('groq', new URL('https://api.groq.com/openai/v1/chat/completions'), { model: 'llama', max_tokens: 10, n: 2 })).toBe(20);
  });

  it('Gemini: generationConfig.candidateCount, in either spelling, and as the decimal string its JSON accepts', () => {
    expect(outputOf('google', gemini, { generationConfig: { maxOutputTokens: 64, candidateCount: 3 } })).toBe(192);
    expect(outputOf('google', gemini, { generation_config: { max_output_tokens: 64, candidate_count: 2 } })).toBe(128);
    expect(outputOf('google', gemini, { generationConfig: { maxOutputTokens: '64', candidateCount: '4' } })).toBe(256);
    expect(outputOf('vertex', new URL('https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/l/publishers/google/models/gemini-3.8-flash:streamGenerateContent'), { generationConfig: { candidateCount: 2 } })).toBe(2 * DEFAULT_MAX_OUTPUT_TOKENS);
  });

  it('a count every server would refuse reserves one choice, never less; one written as a decimal string counts; a huge one is capped and stays a safe integer', () => {
    for (const n of [0, -2, 2.5, '-4', '2.5', null, true, [4], { n: 4 }]) {
      expect(outputOf('openai', chat, { model: 'm', max_tokens: 1000, n }), JSON.stringify(n)).toBe(1000);
      expect(outputOf('google', gemini, { generationConfig: { maxOutputTokens: 1000, candidateCount: n } }), JSON.stringify(n)).toBe(1000);
    }
    // OpenAI refuses an n written as a string, but a lax server (vLLM, pydantic) generates that many: held for them, as a cap so written is.
    expect(outputOf('openai', chat, { model: 'm', max_tokens: 1000, n: '4' })).toBe(4000);
    expect(outputOf('openai-compatible', new URL('http://vllm.internal:8000/v1/completions'), { model: 'm', max_tokens: 100, n: '2', best_of: '5' })).toBe(500);
    expect(outputOf('openai', chat, { model: 'm', max_tokens: 1000, n: 1e9 })).toBe(1000 * MAX_CHOICES);
    expect(outputOf('openai', chat, { model: 'm', max_tokens: Number.MAX_SAFE_INTEGER, n: 4 })).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('APIs with no choices count are not multiplied: an n sent to Anthropic Messages or OpenAI Responses changes nothing', () => {
    expect(outputOf('anthropic', new URL('https://api.anthropic.com/v1/messages'), { model: 'claude-opus-4-8', max_tokens: 1024, n: 4 })).toBe(1024);
    expect(outputOf('openai', new URL('https://api.openai.com/v1/responses'), { model: 'gpt-5.4', max_output_tokens: 1200, n: 4 })).toBe(1200);
  });
});

describe('maxUsageOf through a proxy that puts its own prefix before the provider’s path', () => {
  const request = { model: 'command-r-08-2024', max_tokens: 300, messages: [{ role: 'user', content: 'hi' }] };

  it('reserves exactly what the call without the prefix reserves (Cloudflare AI Gateway, a company gateway)', () => {
    const cases: [string, string, string[]][] = [
      ['cohere', 'https://api.cohere.com/v2/chat', ['https://gateway.ai.cloudflare.com/v1/acct/gw/cohere/v2/chat', 'https://llm.internal.example/cohere/v2/chat']],
      ['cohere', 'https://api.cohere.com/v1/chat', ['https://gateway.ai.cloudflare.com/v1/acct/gw/cohere/v1/chat']],
      ['openai', 'https://api.openai.com/v1/chat/completions', ['https://gateway.ai.cloudflare.com/v1/acct/gw/openai/chat/completions', 'https://llm.internal.example/openai/v1/chat/completions']],
      ['anthropic', 'https://api.anthropic.com/v1/messages', ['https://gateway.ai.cloudflare.com/v1/acct/gw/anthropic/v1/messages']],
    ];
    for (const [provider, unprefixed, prefixed] of cases) {
      const expected = maxUsageOf(provider, new URL(unprefixed), body(request));
      expect(expected, unprefixed).toMatchObject({ provider, model: 'command-r-08-2024', outputTokens: 300 });
      for (const url of prefixed) expect(maxUsageOf(provider, new URL(url), body(request)), url).toEqual(expected);
    }
  });

  it('a model named in the path is read past the prefix', () => {
    const gemini = maxUsageOf('google', new URL('https://gateway.ai.cloudflare.com/v1/acct/gw/google-ai-studio/v1beta/models/gemini-3.8-flash:generateContent'), body({ contents: [] }));
    expect(gemini).toMatchObject({ api: 'generateContent', model: 'gemini-3.8-flash', outputTokens: DEFAULT_MAX_OUTPUT_TOKENS });
  });

  it('a prefixed path the provider does not know is not held, as without the prefix', () => {
    expect(maxUsageOf('cohere', new URL('https://api.cohere.com/v2/datasets'), body(request))).toBeNull();
    expect(maxUsageOf('cohere', new URL('https://gateway.ai.cloudflare.com/v1/acct/gw/cohere/v2/datasets'), body(request))).toBeNull();
    // A provider's path must be a whole tail of the URL's, not a piece inside it.
    expect(maxUsageOf('cohere', new URL('https://gateway.ai.cloudflare.com/v1/acct/gw/cohere/v2/chat/history'), body(request))).toBeNull();
  });
});
