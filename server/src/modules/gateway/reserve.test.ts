import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_OUTPUT_TOKENS, maxUsageOf } from './reserve.ts';

const body = (value: unknown) => Buffer.from(JSON.stringify(value));

describe('maxUsageOf: the most a request can use', () => {
  it('reads each API’s output cap and the model', () => {
    const cases: [string, string, unknown, string, number][] = [
      ['openai', 'https://api.openai.com/v1/chat/completions', { model: 'gpt-5.4-mini', max_completion_tokens: 300, max_tokens: 999 }, 'gpt-5.4-mini', 300],
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
