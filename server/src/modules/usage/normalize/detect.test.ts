import { describe, expect, it } from 'vitest';
import { detectProvider, normalizeResponse, SUPPORTED_PROVIDERS, UnknownProviderError } from './index.ts';
import { definitionForName, findProviderPath, splitUrl } from './registry.ts';

/** One or more request URLs per provider, with the API each must resolve to. */
const CASES: [url: string, provider: string, api: string][] = [
  ['https://api.openai.com/v1/chat/completions', 'openai', 'chat.completions'],
  ['https://api.openai.com/v1/responses', 'openai', 'responses'],
  ['https://api.openai.com/v1/embeddings', 'openai', 'embeddings'],
  ['https://api.openai.com/v1/images/generations', 'openai', 'images.generations'],
  ['https://api.openai.com/v1/images/edits', 'openai', 'images.edits'],
  ['https://api.openai.com/v1/audio/transcriptions', 'openai', 'audio.transcriptions'],
  ['https://api.openai.com/v1/audio/translations', 'openai', 'audio.translations'],
  ['https://api.openai.com/v1/audio/speech', 'openai', 'audio.speech'],
  ['https://api.openai.com/v1/completions', 'openai', 'completions'],
  ['https://api.openai.com/v1/models', 'openai', 'unknown'],
  ['https://my-res.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2025-04-01-preview', 'azure-openai', 'chat.completions'],
  ['https://my-res.openai.azure.com/openai/v1/responses', 'azure-openai', 'responses'],
  ['https://eastus2.cognitiveservices.azure.com/openai/deployments/emb/embeddings?api-version=2024-10-21', 'azure-openai', 'embeddings'],
  ['https://proj.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview', 'azure-openai', 'chat.completions'],
  ['https://api.anthropic.com/v1/messages', 'anthropic', 'messages'],
  ['https://api.anthropic.com/v1/messages?beta=true', 'anthropic', 'messages'],
  ['https://api.anthropic.com/v1/messages/count_tokens', 'anthropic', 'unknown'],
  ['https://api.anthropic.com/v1/chat/completions', 'anthropic', 'chat.completions'],
  ['https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash:generateContent', 'google', 'generateContent'],
  ['https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse&key=SECRET', 'google', 'streamGenerateContent'],
  ['https://generativelanguage.googleapis.com/v1beta/openai/chat/completions', 'google', 'chat.completions'],
  ['https://generativelanguage.googleapis.com/v1beta/models/imagen-4.0-generate-001:predict', 'google', 'predict'],
  ['https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent', 'vertex', 'generateContent'],
  ['https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/models/gemini-3-pro:streamGenerateContent?alt=sse', 'vertex', 'streamGenerateContent'],
  ['https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-6:streamRawPredict', 'vertex', 'messages'],
  ['https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/publishers/mistralai/models/mistral-medium-3:rawPredict', 'vertex', 'chat.completions'],
  ['https://aiplatform.googleapis.com/v1/projects/p/locations/global/endpoints/openapi/chat/completions', 'vertex', 'chat.completions'],
  ['https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-6-v1%3A0/converse', 'bedrock', 'converse'],
  ['https://bedrock-runtime.eu-central-1.amazonaws.com/model/amazon.nova-pro-v1%3A0/converse-stream', 'bedrock', 'converse-stream'],
  ['https://bedrock-runtime.us-west-2.amazonaws.com/model/meta.llama3-70b-instruct-v1%3A0/invoke', 'bedrock', 'invoke'],
  ['https://bedrock-runtime-fips.us-east-1.amazonaws.com/model/x/invoke-with-response-stream', 'bedrock', 'invoke-with-response-stream'],
  ['https://api.cohere.com/v2/chat', 'cohere', 'chat'],
  ['https://api.cohere.ai/v1/chat', 'cohere', 'chat'],
  ['https://api.cohere.com/v2/embed', 'cohere', 'embed'],
  ['https://api.cohere.com/v2/rerank', 'cohere', 'rerank'],
  ['https://api.cohere.com/compatibility/v1/chat/completions', 'cohere', 'chat.completions'],
  ['https://api.groq.com/openai/v1/chat/completions', 'groq', 'chat.completions'],
  ['https://api.groq.com/openai/v1/audio/transcriptions', 'groq', 'audio.transcriptions'],
  ['https://api.together.xyz/v1/chat/completions', 'together', 'chat.completions'],
  ['https://api.together.ai/v1/images/generations', 'together', 'images.generations'],
  ['https://api.fireworks.ai/inference/v1/chat/completions', 'fireworks', 'chat.completions'],
  ['https://api.mistral.ai/v1/chat/completions', 'mistral', 'chat.completions'],
  ['https://codestral.mistral.ai/v1/fim/completions', 'mistral', 'fim.completions'],
  ['https://api.deepseek.com/chat/completions', 'deepseek', 'chat.completions'],
  ['https://api.deepseek.com/anthropic/v1/messages', 'deepseek', 'messages'],
  ['https://api.x.ai/v1/chat/completions', 'xai', 'chat.completions'],
  ['https://api.x.ai/v1/responses', 'xai', 'responses'],
  ['https://openrouter.ai/api/v1/chat/completions', 'openrouter', 'chat.completions'],
  ['https://api.perplexity.ai/chat/completions', 'perplexity', 'chat.completions'],
  ['https://api.cerebras.ai/v1/chat/completions', 'cerebras', 'chat.completions'],
  ['https://api.deepinfra.com/v1/openai/chat/completions', 'deepinfra', 'chat.completions'],
  ['https://api.studio.nebius.com/v1/chat/completions', 'nebius', 'chat.completions'],
  ['https://api.tokenfactory.nebius.com/v1/embeddings', 'nebius', 'embeddings'],
  ['https://api.hyperbolic.xyz/v1/chat/completions', 'hyperbolic', 'chat.completions'],
  ['https://api.sambanova.ai/v1/chat/completions', 'sambanova', 'chat.completions'],
  ['https://api.novita.ai/v3/openai/chat/completions', 'novita', 'chat.completions'],
  ['https://llama3-1-8b.lepton.run/api/v1/chat/completions', 'lepton', 'chat.completions'],
  ['https://api.moonshot.ai/v1/chat/completions', 'moonshot', 'chat.completions'],
  ['https://dashscope-intl.aliyuncs.com/compatible-mode/v1/chat/completions', 'alibaba', 'chat.completions'],
  ['https://open.bigmodel.cn/api/paas/v4/chat/completions', 'zhipu', 'chat.completions'],
  ['https://api.z.ai/api/paas/v4/chat/completions', 'zhipu', 'chat.completions'],
  ['https://api.siliconflow.cn/v1/chat/completions', 'siliconflow', 'chat.completions'],
  ['https://integrate.api.nvidia.com/v1/chat/completions', 'nvidia', 'chat.completions'],
  ['https://router.huggingface.co/v1/chat/completions', 'huggingface', 'chat.completions'],
  ['https://models.github.ai/inference/chat/completions', 'github-models', 'chat.completions'],
  ['https://api.ai21.com/studio/v1/chat/completions', 'ai21', 'chat.completions'],
  ['https://api.featherless.ai/v1/chat/completions', 'featherless', 'chat.completions'],
  ['https://api.friendli.ai/serverless/v1/chat/completions', 'friendli', 'chat.completions'],
  ['https://inference.baseten.co/v1/chat/completions', 'baseten', 'chat.completions'],
  ['https://api.minimax.io/v1/chat/completions', 'minimax', 'chat.completions'],
  ['https://api.elevenlabs.io/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb?output_format=mp3_44100_128', 'elevenlabs', 'text-to-speech'],
  ['https://api.elevenlabs.io/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream', 'elevenlabs', 'text-to-speech'],
  ['https://api.deepgram.com/v1/listen?model=nova-3&smart_format=true', 'deepgram', 'listen'],
  ['https://api.deepgram.com/v1/speak?model=aura-2-thalia-en', 'deepgram', 'speak'],
  ['https://api.stability.ai/v2beta/stable-image/generate/ultra', 'stability', 'stable-image.generate'],
  ['https://api.stability.ai/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image', 'stability', 'generation'],
  ['https://fal.run/fal-ai/flux/dev', 'fal', 'run'],
  ['https://queue.fal.run/fal-ai/flux/dev', 'fal', 'queue.submit'],
  ['https://queue.fal.run/fal-ai/flux/requests/764cabcf-b745-4b3e-ae38-1200304cf45b', 'fal', 'queue.result'],
  ['https://queue.fal.run/fal-ai/flux/requests/764cabcf-b745-4b3e-ae38-1200304cf45b/status', 'fal', 'queue.status'],
  ['https://api.replicate.com/v1/models/black-forest-labs/flux-schnell/predictions', 'replicate', 'predictions'],
  ['https://api.replicate.com/v1/predictions/gm3qorzdhgbfurvjtvhg6dckhu', 'replicate', 'predictions'],
  ['https://api.bfl.ai/v1/flux-pro-1.1', 'bfl', 'generate'],
  ['https://api.eu.bfl.ai/v1/get_result?id=abc', 'bfl', 'get_result'],
  ['https://api.ideogram.ai/v1/ideogram-v3/generate', 'ideogram', 'generate'],
  ['https://api.ideogram.ai/generate', 'ideogram', 'generate'],
  ['https://external.api.recraft.ai/v1/images/generations', 'recraft', 'images.generations'],
];

describe('detectProvider', () => {
  it.each(CASES)('%s → %s %s', (url, provider, api) => {
    expect(detectProvider(url)).toEqual({ provider, api });
  });

  it('has a detection case for every provider that has hosts, and at least 30 of them', () => {
    const withHosts = SUPPORTED_PROVIDERS.filter((p) => p.hosts.length > 0).map((p) => p.id);
    expect(withHosts.length).toBeGreaterThanOrEqual(30);
    const covered = new Set(CASES.map(([, provider]) => provider));
    expect(withHosts.filter((id) => !covered.has(id))).toEqual([]);
  });

  it('lists each provider id once and each host under one provider only', () => {
    const ids = SUPPORTED_PROVIDERS.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const hosts = SUPPORTED_PROVIDERS.flatMap((p) => p.hosts);
    expect(new Set(hosts).size).toBe(hosts.length);
    for (const p of SUPPORTED_PROVIDERS) {
      expect(p.apis.length, p.id).toBeGreaterThan(0);
      for (const host of p.hosts) expect(detectProvider(`https://${host.replace('*', host.endsWith('.amazonaws.com') ? 'us-east-1' : 'x-y')}/`)?.provider, host).toBe(p.id);
    }
  });

  it('reads a host pattern\'s * as one label, and under amazonaws.com as a region only', () => {
    expect(detectProvider('https://acme.openai.azure.com/openai/deployments/d/chat/completions')?.provider).toBe('azure-openai');
    expect(detectProvider('https://x.attacker.openai.azure.com/openai/deployments/d/chat/completions')).toBeNull();
    expect(detectProvider('https://bedrock-runtime.eu-central-1.amazonaws.com/model/m/converse')?.provider).toBe('bedrock');
    expect(detectProvider('https://bedrock-runtime-fips.us-gov-west-1.amazonaws.com/model/m/converse')?.provider).toBe('bedrock');
    // An S3 bucket's host, and a name spanning labels.
    expect(detectProvider('https://bedrock-runtime.s3.amazonaws.com/model/m/converse')).toBeNull();
    expect(detectProvider('https://bedrock-runtime.evil.us-east-1.amazonaws.com/model/m/converse')).toBeNull();
  });

  it('every API a detection case resolves to is listed for its provider', () => {
    for (const [, provider, api] of CASES) {
      if (api === 'unknown') continue;
      expect(SUPPORTED_PROVIDERS.find((p) => p.id === provider)!.apis, `${provider} ${api}`).toContain(api);
    }
  });

  it('ignores case, ports, credentials, trailing dots and trailing slashes', () => {
    expect(detectProvider('HTTPS://API.OpenAI.com:443/v1/chat/completions/')).toEqual({ provider: 'openai', api: 'chat.completions' });
    expect(detectProvider('https://user:pw@api.anthropic.com./v1/messages')).toEqual({ provider: 'anthropic', api: 'messages' });
    expect(detectProvider('api.groq.com/openai/v1/chat/completions')).toEqual({ provider: 'groq', api: 'chat.completions' });
  });

  it('does not match look-alike hosts', () => {
    for (const url of [
      'https://api.openai.com.evil.example/v1/chat/completions',
      'https://evilopenai.azure.com/openai/v1/chat/completions',
      'https://openai.azure.com/openai/v1/chat/completions', // the wildcard needs a subdomain
      'https://bedrock.us-east-1.amazonaws.com/model/x/converse',
      'https://example.com/v1/chat/completions',
      '/v1/chat/completions',
      '',
    ]) {
      expect(detectProvider(url), url).toBeNull();
    }
  });
});

describe('unknown providers', () => {
  const response = { status: 200, headers: {}, body: '{}' };

  it('throw a typed error that names the host but never the query string', () => {
    let error: unknown;
    try {
      normalizeResponse({ ...response, url: 'https://llm.internal.example/v1/chat/completions?key=SECRET' });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(UnknownProviderError);
    const e = error as UnknownProviderError;
    expect(e.name).toBe('UnknownProviderError');
    expect(e.code).toBe('VALIDATION');
    expect(e.host).toBe('llm.internal.example');
    expect(e.message).toContain('"llm.internal.example"');
    expect(e.message).toContain('ProviderResponse.provider');
    expect(e.message).not.toContain('SECRET');
  });

  it('can be forced by id or alias, and an unknown override is refused', () => {
    const body = JSON.stringify({ model: 'llama-3.3-70b', usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } });
    const forced = normalizeResponse({ ...response, body, url: 'http://10.0.0.7:8000/v1/chat/completions', provider: 'vllm' });
    expect(forced).toMatchObject({ provider: 'openai-compatible', api: 'chat.completions', inputTokens: 10, outputTokens: 5, billable: true });
    const gemini = normalizeResponse({ ...response, url: 'https://proxy.example/v1beta/models/gemini-3.8-flash:generateContent', provider: 'Gemini' });
    expect(gemini.provider).toBe('google');
    expect(() => normalizeResponse({ ...response, url: 'https://api.openai.com/v1/chat/completions', provider: 'nope' })).toThrow(
      /Unknown provider "nope"/,
    );
  });

  it('a provider sent as null is no override: the URL names it, as when it is left out', () => {
    const body = JSON.stringify({ model: 'gpt-5.4-mini', usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } });
    const unset = normalizeResponse({ ...response, body, url: 'https://api.openai.com/v1/chat/completions', provider: null as unknown as string });
    expect(unset).toMatchObject({ provider: 'openai', api: 'chat.completions', inputTokens: 10, outputTokens: 5, billable: true });
    expect(() => normalizeResponse({ ...response, url: 'https://llm.internal.example/v1/chat/completions', provider: null as unknown as string })).toThrow(UnknownProviderError);
  });

  describe('named explicitly behind a proxy that prefixes the path (Cloudflare AI Gateway)', () => {
    const gateway = 'https://gateway.ai.cloudflare.com/v1/acct/gw';

    it('Cohere, Bedrock and ElevenLabs are routed from their API root', () => {
      const cohere = normalizeResponse({
        ...response,
        url: `${gateway}/cohere/v2/chat`,
        provider: 'cohere',
        body: JSON.stringify({
          id: 'c14c80c3',
          finish_reason: 'COMPLETE',
          message: { role: 'assistant', content: [{ type: 'text', text: 'Isaac Newton was born in 1643.' }] },
          usage: { billed_units: { input_tokens: 17, output_tokens: 9 }, tokens: { input_tokens: 83, output_tokens: 9 } },
        }),
        requestBody: { model: 'command-a-03-2025' },
      });
      expect(cohere).toMatchObject({ provider: 'cohere', api: 'chat', model: 'command-a-03-2025', billable: true, inputTokens: 17, outputTokens: 9 });

      const bedrock = normalizeResponse({
        ...response,
        url: `${gateway}/aws-bedrock/bedrock-runtime/us-east-1/model/amazon.nova-lite-v1%3A0/converse`,
        provider: 'bedrock',
        body: JSON.stringify({ output: { message: { role: 'assistant', content: [{ text: 'Hello!' }] } }, stopReason: 'end_turn', usage: { inputTokens: 12, outputTokens: 5, totalTokens: 17 }, metrics: { latencyMs: 321 } }),
      });
      expect(bedrock).toMatchObject({ provider: 'bedrock', api: 'converse', model: 'amazon.nova-lite-v1:0', billable: true, inputTokens: 12, outputTokens: 5 });

      const elevenlabs = normalizeResponse({
        ...response,
        url: `${gateway}/elevenlabs/v1/text-to-speech/VOICE`,
        provider: 'elevenlabs',
        headers: { 'character-cost': '42' },
        body: '',
        requestBody: { text: 'x'.repeat(42), model_id: 'eleven_multilingual_v2' },
      });
      expect(elevenlabs).toMatchObject({ provider: 'elevenlabs', api: 'text-to-speech', model: 'eleven_multilingual_v2', billable: true, characters: 42 });
    });

    it.each([
      ['deepgram', `${gateway}/deepgram/v1/speak?model=aura-2-thalia-en`, 'speak'],
      ['stability', `${gateway}/stability/v2beta/stable-image/generate/ultra`, 'stable-image.generate'],
      ['bfl', `${gateway}/bfl/v1/flux-pro-1.1`, 'generate'],
      ['bfl', `${gateway}/bfl/v1/get_result?id=f2c3`, 'get_result'],
      ['replicate', `${gateway}/replicate/v1/models/black-forest-labs/flux-schnell/predictions`, 'predictions'],
      ['ideogram', `${gateway}/ideogram/v1/ideogram-v3/generate`, 'generate'],
      ['cohere', `${gateway}/cohere/compatibility/v1/chat/completions`, 'chat.completions'],
      ['cohere', 'https://llm-proxy.internal.example/providers/cohere/v2/embed', 'embed'],
    ])('%s: %s → %s', (provider, url, api) => {
      expect(normalizeResponse({ ...response, url, provider }).api).toBe(api);
    });

    it('a path the provider does not serve stays unknown, and without a name nothing changes', () => {
      expect(normalizeResponse({ ...response, url: `${gateway}/bfl/v1/credits`, provider: 'bfl' })).toMatchObject({ api: 'unknown', billable: false });
      expect(normalizeResponse({ ...response, url: `${gateway}/anthropic/v1/messages/count_tokens`, provider: 'anthropic' })).toMatchObject({ api: 'unknown', billable: false });
      // Detected by host, the call went to the provider itself: its paths are matched whole, as before.
      expect(detectProvider('https://api.cohere.com/proxy/v2/chat')).toEqual({ provider: 'cohere', api: 'unknown' });
      expect(() => normalizeResponse({ ...response, url: `${gateway}/cohere/v2/chat` })).toThrow(UnknownProviderError);
    });
  });

  it('a known host on an unknown path reports nothing billable', () => {
    const u = normalizeResponse({ ...response, url: 'https://api.openai.com/v1/models', body: '{"data":[]}' });
    expect(u).toMatchObject({ provider: 'openai', api: 'unknown', billable: false, requests: 0 });
  });
});

describe('a provider path behind a proxy prefix', () => {
  it('is looked for past a few prefix segments only, and past empty ones for free: routing a long path stays cheap', () => {
    const replicate = definitionForName('replicate')!;
    let routed = 0;
    const counting = { ...replicate, route: (url: Parameters<typeof replicate.route>[0]) => (routed++, replicate.route(url)) };
    expect(findProviderPath(counting, splitUrl(`https://api.replicate.com${'/'.repeat(7_900)}x`))).toBeNull();
    expect(routed).toBeLessThanOrEqual(2);
    routed = 0;
    expect(findProviderPath(counting, splitUrl(`https://api.replicate.com${'/seg'.repeat(2_000)}`))).toBeNull();
    expect(routed).toBe(9);
    // Cloudflare's four segments, and a doubled slash in a prefix, still reach the provider's path.
    expect(findProviderPath(replicate, splitUrl('https://gateway.ai.cloudflare.com/v1/acct/gw/replicate/v1/predictions'))?.parts.path).toBe('/v1/predictions');
    expect(findProviderPath(replicate, splitUrl('https://llm.internal//replicate//v1/predictions'))?.parts.path).toBe('/v1/predictions');
  });
});

describe('Replicate behind Cloudflare AI Gateway, which stands for https://api.replicate.com/v1', () => {
  it('routes its creates and polls without the /v1, as with it', () => {
    const replicate = definitionForName('replicate')!;
    const at = (url: string) => findProviderPath(replicate, splitUrl(url));
    expect(at('https://gateway.ai.cloudflare.com/v1/acct/gw/replicate/predictions')).toMatchObject({ match: { api: 'predictions', method: 'POST' }, parts: { path: '/predictions' } });
    expect(at('https://gateway.ai.cloudflare.com/v1/acct/gw/replicate/predictions/abc123')?.match).toMatchObject({ method: 'GET' });
    expect(at('https://gateway.ai.cloudflare.com/v1/acct/gw/replicate/models/black-forest-labs/flux-schnell/predictions')?.match).toMatchObject({ model: 'black-forest-labs/flux-schnell', method: 'POST' });
    // A proxy that keeps the /v1 is read from it, as before.
    expect(at('https://llm.internal/replicate/v1/predictions/abc123')).toMatchObject({ match: { method: 'GET' }, parts: { path: '/v1/predictions/abc123' } });
  });
});

describe('fal behind a proxy that prefixes the path', () => {
  const image = JSON.stringify({ images: [{ url: 'https://fal.media/files/a.png', width: 1024, height: 768 }], timings: { inference: 1.25 }, seed: 7 });

  it('names the app without the prefix, so per-model prices match as without the proxy', () => {
    const direct = normalizeResponse({ url: 'https://fal.run/fal-ai/flux/dev', status: 200, headers: {}, body: image });
    expect(direct).toMatchObject({ provider: 'fal', model: 'fal-ai/flux/dev', images: 1, billable: true });
    for (const url of [
      'https://gateway.ai.cloudflare.com/v1/acct/gw/fal/fal-ai/flux/dev',
      'https://llm-proxy.internal.example/providers/fal/fal-ai/flux/dev',
      'https://llm-proxy.internal.example/images/fal-ai/flux/dev',
    ]) {
      expect(normalizeResponse({ url, provider: 'fal', status: 200, headers: {}, body: image })).toMatchObject({ provider: 'fal', api: 'run', model: 'fal-ai/flux/dev', images: 1, billable: true });
    }
    // An app of another owner, named after the proxy's `fal` segment.
    expect(normalizeResponse({ url: 'https://gateway.ai.cloudflare.com/v1/acct/gw/fal/acme/upscaler', provider: 'fal', status: 200, headers: {}, body: image }).model).toBe('acme/upscaler');
  });

  it('reads a queued result past the prefix, and charges it once whatever the spelling of its id', () => {
    const result = normalizeResponse({ url: 'https://gateway.ai.cloudflare.com/v1/acct/gw/fal/fal-ai/flux/requests/8F2C6A0E-1D3B-4C5A-9E7F-0A1B2C3D4E5F', provider: 'fal', status: 200, headers: {}, body: image });
    expect(result).toMatchObject({ api: 'queue.result', model: 'fal-ai/flux', images: 1, billingId: 'fal:request:8f2c6a0e-1d3b-4c5a-9e7f-0a1b2c3d4e5f' });
    const status = findProviderPath(definitionForName('fal')!, splitUrl('https://gateway.ai.cloudflare.com/v1/acct/gw/fal/fal-ai/flux/requests/8f2c/status'));
    expect(status?.match).toMatchObject({ api: 'queue.status', model: 'fal-ai/flux' });
    // A bare `fal` segment with no app after it is no call.
    expect(findProviderPath(definitionForName('fal')!, splitUrl('https://gateway.ai.cloudflare.com/v1/acct/gw/fal/'))).toBeNull();
  });
});

describe('answers outside 2xx', () => {
  it('are never billable, even for APIs billed by the request alone (speech by its text, Stability by the call)', () => {
    const speech = { url: 'https://api.openai.com/v1/audio/speech', headers: { location: 'https://elsewhere.example/' }, body: '', requestBody: { model: 'tts-1', input: 'hello world', voice: 'alloy' } };
    expect(normalizeResponse({ ...speech, status: 200 })).toMatchObject({ billable: true, characters: 11 });
    for (const status of [101, 301, 304, 307, 308]) expect(normalizeResponse({ ...speech, status }).billable, String(status)).toBe(false);
    const stability = { url: 'https://api.stability.ai/v2beta/stable-image/generate/core', headers: {}, body: '' };
    expect(normalizeResponse({ ...stability, status: 200 }).billable).toBe(true);
    expect(normalizeResponse({ ...stability, status: 303 })).toMatchObject({ billable: false, images: 0 });
  });
});
