/**
 * The shipped list prices: every row is a price the cost function accepts, under a provider id
 * the normalizers emit, and real provider responses for the listed models cost what the
 * providers' price pages say (expected amounts worked out by hand in each test).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../shared/errors.ts';
import { parseDecimalAttos } from '../../shared/money.ts';
import { canonicalProviderId, normalizeResponse, SUPPORTED_PROVIDERS } from '../usage/normalize/index.ts';
import type { ProviderResponse } from '../usage/usage.types.ts';
import { canonicalRate, costOf, modelMatchRank, priceInForce, validateProviderPrice, type ProviderPrice, type TokenPrices } from './cost.ts';
import { LIST_PRICES } from './list-prices.ts';
import { resolvePrice } from './prices.service.ts';

const usd = (text: string) => parseDecimalAttos('expected', text);

/** Every rate of a row with where it sits, as written. */
function ratesOf(price: ProviderPrice): [string, unknown][] {
  const rates: [string, unknown][] = [];
  const tokens = (field: string, prices: TokenPrices | undefined) => {
    for (const [key, value] of Object.entries(prices ?? {})) rates.push([`${field}.${key}`, value]);
  };
  tokens('perMillionTokens', price.perMillionTokens);
  for (const [index, tier] of (price.contextTiers ?? []).entries()) tokens(`contextTiers.${index}`, tier.perMillionTokens);
  for (const key of ['perImage', 'perAudioSecond', 'perAudioMinute', 'perCharacter', 'perMillionCharacters', 'perRequest'] as const) {
    if (price[key] != null) rates.push([key, price[key]]);
  }
  for (const [key, value] of Object.entries(price.perImageBy ?? {})) rates.push([`perImageBy.${key}`, value]);
  return rates;
}

const name = (price: ProviderPrice) => `${price.provider}/${price.model}@${price.effectiveFrom.toISOString()}`;

describe('LIST_PRICES rows', () => {
  it('are valid prices whose rates are non-negative exact decimal strings', () => {
    for (const price of LIST_PRICES) {
      expect(() => validateProviderPrice(price), name(price)).not.toThrow();
      const rates = ratesOf(price);
      expect(rates.length, `${name(price)} prices nothing`).toBeGreaterThan(0);
      for (const [field, text] of rates) {
        // Strings, never numbers: 0.1 as a float is not 0.1.
        expect(typeof text, `${name(price)} ${field}`).toBe('string');
        expect(text, `${name(price)} ${field}`).toMatch(/^\d+(\.\d+)?$/);
        expect(parseDecimalAttos(field, text as string) >= 0n).toBe(true);
        // In their shortest form, as stored rows are served ("2.5", not "2.50").
        expect(text, `${name(price)} ${field}`).toBe(canonicalRate(field, text as string));
      }
    }
  });

  it('are served in the shortest form of each rate, as rows a merchant stores are', () => {
    const haiku = resolvePrice([], 'anthropic', 'claude-haiku-4-5', new Date('2026-06-01'))!;
    expect(haiku.perMillionTokens).toEqual({ input: '1', cachedInput: '0.1', cacheWrite: '1.25', cacheWrite1h: '2', output: '5' });
  });

  it('never give one model two prices from the same instant, and each row is the one in force from its effectiveFrom', () => {
    const keys = LIST_PRICES.map((price) => `${price.provider.toLowerCase()}/${price.model.toLowerCase()}@${price.effectiveFrom.getTime()}`);
    expect(new Set(keys).size).toBe(keys.length);
    // priceInForce also refuses two rows at one instant; a row another one shadows would never price anything.
    for (const price of LIST_PRICES) expect(priceInForce(LIST_PRICES, price.provider, price.model, price.effectiveFrom), name(price)).toBe(price);
  });

  it('are filed under provider ids the normalizers emit (not aliases), so usage meets them', () => {
    const emitted = new Set(SUPPORTED_PROVIDERS.map((provider) => provider.id));
    for (const price of LIST_PRICES) {
      expect(emitted.has(price.provider), name(price)).toBe(true);
      expect(canonicalProviderId(price.provider)).toBe(price.provider);
    }
  });

  it('list a dated snapshot apart from its undated name only when it is priced differently', () => {
    for (const snapshot of LIST_PRICES) {
      const undated = LIST_PRICES.filter((price) => price.provider === snapshot.provider && modelMatchRank(price.model, snapshot.model) === 1);
      for (const price of undated) expect(price.perMillionTokens, `${name(snapshot)} repeats ${name(price)}`).not.toEqual(snapshot.perMillionTokens);
    }
  });
});

// --- Real responses, costed through the normalizer, the lookup and costOf ---------------------

const JSON_HEADERS = { 'content-type': 'application/json' };

const response = (url: string, body: unknown, requestBody?: unknown): ProviderResponse => ({
  url, status: 200, headers: JSON_HEADERS, body: typeof body === 'string' ? body : JSON.stringify(body), requestBody,
});

/** What the call would cost at list price at `at`: the row that priced it and the cost, or null when no row does. */
function listCost(call: ProviderResponse, at: string): { pricedAs: string; cost: bigint } | null {
  const usage = normalizeResponse(call);
  const price = resolvePrice([], usage.provider, usage.model!, new Date(at));
  return price && { pricedAs: `${price.provider}/${price.model}`, cost: costOf(usage, price) };
}

const openaiChat = (model: string, usage: Record<string, unknown>, host = 'api.openai.com/v1') =>
  response(`https://${host}/chat/completions`, {
    id: 'chatcmpl-1', object: 'chat.completion', created: 1_757_000_000, model,
    choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }], usage,
  });

const anthropicMessage = (model: string, usage: Record<string, unknown>, url = 'https://api.anthropic.com/v1/messages') =>
  response(url, { id: 'msg_1', type: 'message', role: 'assistant', model, content: [{ type: 'text', text: 'ok' }], stop_reason: 'end_turn', usage });

const gemini = (model: string, usageMetadata: Record<string, unknown>) =>
  response(`https://generativelanguage.googleapis.com/v1beta/models/${model}:generateContent`, {
    candidates: [{ content: { role: 'model', parts: [{ text: 'ok' }] }, finishReason: 'STOP' }], modelVersion: model, usageMetadata,
  });

describe('OpenAI list prices', () => {
  it('gpt-4o-mini, reported as its dated snapshot: 1M input + 500K output = $0.15 + $0.30', () => {
    const call = openaiChat('gpt-4o-mini-2024-07-18', { prompt_tokens: 1_000_000, completion_tokens: 500_000, total_tokens: 1_500_000 });
    expect(listCost(call, '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4o-mini', cost: usd('0.45') });
  });

  it('gpt-4o-mini cache hits are half price: 200K × $0.15 + 1M cached × $0.075 + 500K × $0.60 = $0.405', () => {
    const call = openaiChat('gpt-4o-mini-2024-07-18', {
      prompt_tokens: 1_200_000, completion_tokens: 500_000, total_tokens: 1_700_000, prompt_tokens_details: { cached_tokens: 1_000_000 },
    });
    expect(listCost(call, '2025-09-01T00:00:00Z')?.cost).toBe(usd('0.405'));
  });

  it('gpt-4o snapshots: 2024-11-20 at $2.50/$10, while 2024-05-13 keeps its own $5/$15', () => {
    const usage = { prompt_tokens: 10_000, completion_tokens: 1_000, total_tokens: 11_000 };
    // 10K × 2.50 + 1K × 10 = 0.025 + 0.01; 10K × 5 + 1K × 15 = 0.05 + 0.015.
    expect(listCost(openaiChat('gpt-4o-2024-11-20', usage), '2025-03-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4o', cost: usd('0.035') });
    expect(listCost(openaiChat('gpt-4o-2024-05-13', usage), '2025-03-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4o-2024-05-13', cost: usd('0.065') });
  });

  it('gpt-5 reasoning tokens are output tokens: 2K × $1.25 + 3K × $10 = $0.0325', () => {
    const call = openaiChat('gpt-5-2025-08-07', { prompt_tokens: 2_000, completion_tokens: 3_000, total_tokens: 5_000, completion_tokens_details: { reasoning_tokens: 2_500 } });
    expect(listCost(call, '2025-10-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-5', cost: usd('0.0325') });
  });

  it('a call before a price was published is not costed by it (o3 before its June 2025 price, gpt-5 before launch)', () => {
    const usage = { prompt_tokens: 1_000_000, completion_tokens: 1_000_000, total_tokens: 2_000_000 };
    expect(listCost(openaiChat('o3-2025-04-16', usage), '2025-06-01T00:00:00Z')).toBeNull();
    expect(listCost(openaiChat('o3-2025-04-16', usage), '2025-07-01T00:00:00Z')?.cost).toBe(usd('10'));
    expect(listCost(openaiChat('gpt-5-2025-08-07', usage), '2025-08-06T23:59:59Z')).toBeNull();
  });

  it('a dated name does not borrow a shorter model\'s price: gpt-4.1-nano is not gpt-4.1', () => {
    const call = openaiChat('gpt-4.1-nano-2025-04-14', { prompt_tokens: 1_000_000, completion_tokens: 0, total_tokens: 1_000_000 });
    expect(listCost(call, '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4.1-nano', cost: usd('0.10') });
  });

  it('Azure OpenAI falls back to OpenAI\'s list price for the same model', () => {
    const call = openaiChat('gpt-4.1-2025-04-14', { prompt_tokens: 100_000, completion_tokens: 10_000, total_tokens: 110_000 }, 'contoso.openai.azure.com/openai/deployments/prod');
    // 100K × 2.00 + 10K × 8.00
    expect(listCost(call, '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4.1', cost: usd('0.28') });
  });

  it('text-embedding-ada-002: 50K tokens × $0.10 per 1M', () => {
    const call = response('https://api.openai.com/v1/embeddings', {
      object: 'list', data: [{ object: 'embedding', index: 0, embedding: [0.1] }], model: 'text-embedding-ada-002', usage: { prompt_tokens: 50_000, total_tokens: 50_000 },
    });
    expect(listCost(call, '2025-09-01T00:00:00Z')?.cost).toBe(usd('0.005'));
  });

  it('tts-1 and tts-1-hd per character of the input: 10 characters × $15 / $30 per 1M', () => {
    const speech = (model: string) => ({ ...response('https://api.openai.com/v1/audio/speech', '', { model, input: 'Hi 👋 ça va', voice: 'alloy' }), headers: { 'content-type': 'audio/mpeg' } });
    expect(listCost(speech('tts-1'), '2025-09-01T00:00:00Z')?.cost).toBe(usd('0.00015'));
    expect(listCost(speech('tts-1-hd'), '2025-09-01T00:00:00Z')?.cost).toBe(usd('0.0003'));
  });

  it('DALL·E per image by size and quality; a size with no list price is refused, not guessed', () => {
    const images = (request: Record<string, unknown>, count: number) =>
      response('https://api.openai.com/v1/images/generations', { created: 1, data: Array.from({ length: count }, () => ({ url: 'https://img' })) }, { prompt: 'p', ...request });
    expect(listCost(images({ model: 'dall-e-3', size: '1792x1024', quality: 'hd' }, 1), '2025-01-01T00:00:00Z')?.cost).toBe(usd('0.12'));
    // No size or quality asked: 1024x1024 standard.
    expect(listCost(images({ model: 'dall-e-3' }, 2), '2025-01-01T00:00:00Z')?.cost).toBe(usd('0.08'));
    expect(listCost(images({ model: 'dall-e-2', n: 3, size: '512x512' }, 3), '2025-01-01T00:00:00Z')?.cost).toBe(usd('0.054'));
    let refused: unknown;
    try {
      listCost(images({ model: 'dall-e-3', size: '512x512' }, 1), '2025-01-01T00:00:00Z');
    } catch (error) {
      refused = error;
    }
    expect(refused).toBeInstanceOf(AppError);
    expect(refused).toMatchObject({ code: 'VALIDATION', details: { field: 'price.perImage' } });
  });
});

describe('Anthropic list prices', () => {
  it('Claude Sonnet 4 with 5-minute and 1-hour cache writes and cache reads', () => {
    const call = anthropicMessage('claude-sonnet-4-20250514', {
      input_tokens: 1_000, cache_creation_input_tokens: 20_000, cache_read_input_tokens: 50_000, output_tokens: 2_000,
      cache_creation: { ephemeral_5m_input_tokens: 15_000, ephemeral_1h_input_tokens: 5_000 },
    });
    // 1K × 3 + 15K × 3.75 + 5K × 6 + 50K × 0.30 + 2K × 15 = 0.003 + 0.05625 + 0.03 + 0.015 + 0.03
    expect(listCost(call, '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'anthropic/claude-sonnet-4', cost: usd('0.13425') });
  });

  it('Claude Sonnet 4.5 above 200K input tokens (cache reads count) is all at the long-context rates', () => {
    const at = '2025-10-15T00:00:00Z';
    const long = anthropicMessage('claude-sonnet-4-5-20250929', { input_tokens: 150_000, cache_read_input_tokens: 60_000, output_tokens: 1_000 });
    // 150K × 6 + 60K × 0.60 + 1K × 22.50 = 0.9 + 0.036 + 0.0225
    expect(listCost(long, at)).toEqual({ pricedAs: 'anthropic/claude-sonnet-4-5', cost: usd('0.9585') });
    const atThreshold = anthropicMessage('claude-sonnet-4-5-20250929', { input_tokens: 140_000, cache_read_input_tokens: 60_000, output_tokens: 1_000 });
    // Exactly 200K is not above it: 140K × 3 + 60K × 0.30 + 1K × 15 = 0.42 + 0.018 + 0.015
    expect(listCost(atThreshold, at)?.cost).toBe(usd('0.453'));
  });

  it('Opus 4.1 is not Opus 4, and a "-latest" alias prices its model', () => {
    const usage = { input_tokens: 1_000, output_tokens: 100 };
    // 1K × 15 + 100 × 75
    expect(listCost(anthropicMessage('claude-opus-4-1-20250805', usage), '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'anthropic/claude-opus-4-1', cost: usd('0.0225') });
    expect(listCost(anthropicMessage('claude-opus-4-20250514', usage), '2025-09-01T00:00:00Z')?.pricedAs).toBe('anthropic/claude-opus-4');
    // 1K × 0.80 + 100 × 4
    expect(listCost(anthropicMessage('claude-3-5-haiku-latest', usage), '2025-09-01T00:00:00Z')?.cost).toBe(usd('0.0012'));
  });

  it('Bedrock and Vertex AI fall back to Anthropic\'s list price under their own model names', () => {
    const bedrock = response('https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-3-7-sonnet-20250219-v1:0/converse', {
      output: { message: { role: 'assistant', content: [{ text: 'ok' }] } }, stopReason: 'end_turn',
      usage: { inputTokens: 1_000, outputTokens: 500, totalTokens: 1_500 }, metrics: { latencyMs: 100 },
    });
    // 1K × 3 + 500 × 15
    expect(listCost(bedrock, '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'anthropic/claude-3-7-sonnet', cost: usd('0.0105') });
    const vertex = anthropicMessage(
      'claude-opus-4-1', { input_tokens: 1_000, output_tokens: 100 },
      'https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-opus-4-1@20250805:rawPredict',
    );
    expect(listCost(vertex, '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'anthropic/claude-opus-4-1', cost: usd('0.0225') });
  });
});

describe('Google list prices', () => {
  it('Gemini 2.5 Pro above 200K prompt tokens uses the higher tier for the whole request', () => {
    const long = gemini('gemini-2.5-pro', { promptTokenCount: 250_000, cachedContentTokenCount: 100_000, candidatesTokenCount: 1_000, thoughtsTokenCount: 3_000, totalTokenCount: 254_000 });
    // 150K × 2.50 + 100K cached × 0.625 + (1K + 3K thoughts) × 15 = 0.375 + 0.0625 + 0.06
    expect(listCost(long, '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'google/gemini-2.5-pro', cost: usd('0.4975') });
    // Once the page lists the cut cache-read rate: 100K × 0.25.
    expect(listCost(long, '2026-05-01T00:00:00Z')?.cost).toBe(usd('0.46'));
    const short = gemini('gemini-2.5-pro', { promptTokenCount: 150_000, candidatesTokenCount: 1_000, thoughtsTokenCount: 3_000, totalTokenCount: 154_000 });
    // 150K × 1.25 + 4K × 10
    expect(listCost(short, '2025-09-01T00:00:00Z')?.cost).toBe(usd('0.2275'));
  });

  it('Gemini 2.5 Flash prices audio input apart: 1K text × $0.30 + 9K audio × $1.00 + 500 × $2.50', () => {
    const call = gemini('gemini-2.5-flash', {
      promptTokenCount: 10_000, candidatesTokenCount: 500, totalTokenCount: 10_500,
      promptTokensDetails: [{ modality: 'TEXT', tokenCount: 1_000 }, { modality: 'AUDIO', tokenCount: 9_000 }],
    });
    expect(listCost(call, '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'google/gemini-2.5-flash', cost: usd('0.01055') });
  });

  /**
   * A generateContent answer of an image model, shaped as Google documents it: the image comes
   * back inline, its tokens counted under candidatesTokensDetails with modality IMAGE.
   */
  const geminiImage = (model: string, usageMetadata: Record<string, unknown>) =>
    response(`https://generativelanguage.googleapis.com/v1beta/models/${model}:generateContent`, {
      candidates: [{ content: { role: 'model', parts: [{ text: 'Here it is.' }, { inlineData: { mimeType: 'image/png', data: 'iVBORw0KGgo=' } }] }, finishReason: 'STOP', index: 0 }],
      modelVersion: model,
      usageMetadata,
    });

  it('Gemini 2.5 Flash Image prices its image tokens at the image rate: one 1024×1024 image (1290 tokens × $30 per million) is the documented $0.0387', () => {
    const call = geminiImage('gemini-2.5-flash-image', {
      promptTokenCount: 7, candidatesTokenCount: 1_290, totalTokenCount: 1_297,
      promptTokensDetails: [{ modality: 'TEXT', tokenCount: 7 }], candidatesTokensDetails: [{ modality: 'IMAGE', tokenCount: 1_290 }],
    });
    expect(normalizeResponse(call)).toMatchObject({ outputTokens: 1_290, details: { output_image_tokens: 1_290 } });
    // 7 × $0.30 + 1,290 × $30 per million = 0.0000021 + 0.0387 (not 1,290 × $2.50, the text rate).
    expect(listCost(call, '2025-11-01T00:00:00Z')).toEqual({ pricedAs: 'google/gemini-2.5-flash-image', cost: usd('0.0387021') });
    // Before its general availability (2025-10-02) no list price is known for it.
    expect(listCost(call, '2025-09-01T00:00:00Z')).toBeNull();
  });

  it('Gemini 3 Pro Image: text and thoughts at $12, images at $120 per million (1120 tokens a 1K image, the documented $0.1344)', () => {
    const usage = {
      promptTokenCount: 20, candidatesTokenCount: 1_150, thoughtsTokenCount: 200, totalTokenCount: 1_370,
      promptTokensDetails: [{ modality: 'TEXT', tokenCount: 20 }],
      candidatesTokensDetails: [{ modality: 'TEXT', tokenCount: 30 }, { modality: 'IMAGE', tokenCount: 1_120 }],
    };
    // 20 × $2 + (30 text + 200 thoughts) × $12 + 1,120 × $120 per million = 0.00004 + 0.00276 + 0.1344
    expect(listCost(geminiImage('gemini-3-pro-image-preview', usage), '2026-03-01T00:00:00Z')).toEqual({ pricedAs: 'google/gemini-3-pro-image-preview', cost: usd('0.1372') });
    expect(listCost(geminiImage('gemini-3-pro-image', usage), '2026-09-01T00:00:00Z')).toEqual({ pricedAs: 'google/gemini-3-pro-image', cost: usd('0.1372') });
  });

  it('Gemini 3.1 Flash Image at $60 and 3.1 Flash-Lite Image at $30 per million image tokens: a 1K image is $0.0672 and $0.0336', () => {
    const usage = {
      promptTokenCount: 10, candidatesTokenCount: 1_120, totalTokenCount: 1_130,
      promptTokensDetails: [{ modality: 'TEXT', tokenCount: 10 }], candidatesTokensDetails: [{ modality: 'IMAGE', tokenCount: 1_120 }],
    };
    // 10 × $0.50 + 1,120 × $60 per million
    expect(listCost(geminiImage('gemini-3.1-flash-image-preview', usage), '2026-03-01T00:00:00Z')?.cost).toBe(usd('0.067205'));
    expect(listCost(geminiImage('gemini-3.1-flash-image', usage), '2026-09-01T00:00:00Z')?.cost).toBe(usd('0.067205'));
    // 10 × $0.25 + 1,120 × $30 per million
    expect(listCost(geminiImage('gemini-3.1-flash-lite-image', usage), '2026-09-01T00:00:00Z')?.cost).toBe(usd('0.0336025'));
  });

  it('Gemini 2.0 Flash under its stable version name too', () => {
    const call = gemini('gemini-2.0-flash-001', { promptTokenCount: 1_000_000, cachedContentTokenCount: 400_000, candidatesTokenCount: 100_000, totalTokenCount: 1_100_000 });
    // 600K × 0.10 + 400K × 0.025 + 100K × 0.40 = 0.06 + 0.01 + 0.04
    expect(listCost(call, '2025-09-01T00:00:00Z')?.cost).toBe(usd('0.11'));
  });
});

describe('models named with their maker\'s prefix', () => {
  const million = { prompt_tokens: 1_000_000, completion_tokens: 0, total_tokens: 1_000_000 };

  it('Vertex AI\'s OpenAI-compatible endpoint names Gemini "google/…": priced at the Gemini API\'s list price, or the merchant\'s own Vertex row', () => {
    const call = openaiChat('google/gemini-2.0-flash-001', million, 'us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/endpoints/openapi');
    expect(normalizeResponse(call)).toMatchObject({ provider: 'vertex', model: 'google/gemini-2.0-flash-001' });
    // 1M × $0.10
    expect(listCost(call, '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'google/gemini-2.0-flash-001', cost: usd('0.10') });
    const own = { provider: 'vertex', model: 'gemini-2.0-flash-001', currency: 'USD' as const, effectiveFrom: new Date('2025-01-01T00:00:00Z'), perMillionTokens: { input: '0.15', output: '0.60' }, ref: 'own' };
    expect(resolvePrice([own], 'vertex', 'google/gemini-2.0-flash-001', new Date('2025-09-01T00:00:00Z'))?.ref).toBe('own');
    expect(resolvePrice([], 'vertex', 'publishers/google/models/gemini-2.0-flash-001', new Date('2025-09-01T00:00:00Z'))?.model).toBe('gemini-2.0-flash-001');
    expect(resolvePrice([], 'vertex', 'anthropic/claude-opus-4-1@20250805', new Date('2025-09-01T00:00:00Z'))).toMatchObject({ provider: 'anthropic', model: 'claude-opus-4-1' });
  });

  it('"openai/gpt-4o" from OpenAI is gpt-4o; another maker\'s prefix on a compatible server is part of the name', () => {
    // 1M × $2.50
    expect(listCost(openaiChat('openai/gpt-4o', million), '2025-03-01T00:00:00Z')).toEqual({ pricedAs: 'openai/gpt-4o', cost: usd('2.50') });
    expect(resolvePrice([], 'groq', 'meta-llama/llama-3.3-70b-versatile', new Date('2025-09-01T00:00:00Z'))).toBeNull();
    expect(resolvePrice([], 'openrouter', 'openai/gpt-4o', new Date('2025-09-01T00:00:00Z'))).toBeNull();
  });
});

describe('Groq, Mistral and Cohere list prices', () => {
  it('Groq llama-3.3-70b-versatile: 100K × $0.59 + 20K × $0.79', () => {
    const call = openaiChat('llama-3.3-70b-versatile', { prompt_tokens: 100_000, completion_tokens: 20_000, total_tokens: 120_000 }, 'api.groq.com/openai/v1');
    expect(listCost(call, '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'groq/llama-3.3-70b-versatile', cost: usd('0.0748') });
  });

  it('Mistral prices versioned names; a moving "-latest" alias is left uncosted rather than guessed', () => {
    const usage = { prompt_tokens: 1_000_000, completion_tokens: 1_000_000, total_tokens: 2_000_000 };
    expect(listCost(openaiChat('mistral-small-2506', usage, 'api.mistral.ai/v1'), '2025-09-01T00:00:00Z')?.cost).toBe(usd('0.40'));
    expect(listCost(openaiChat('mistral-large-latest', usage, 'api.mistral.ai/v1'), '2025-09-01T00:00:00Z')).toBeNull();
  });

  it('Cohere bills the request\'s model by billed units; the bare "command-r-plus" alias is not guessed', () => {
    const chat = (model: string) =>
      response('https://api.cohere.com/v2/chat', {
        id: 'c1', finish_reason: 'COMPLETE', message: { role: 'assistant', content: [{ type: 'text', text: 'ok' }] },
        usage: { billed_units: { input_tokens: 10_000, output_tokens: 2_000 }, tokens: { input_tokens: 10_200, output_tokens: 2_000 } },
      }, { model, messages: [{ role: 'user', content: 'hi' }] });
    // 10K × 2.50 + 2K × 10
    expect(listCost(chat('command-r-plus-08-2024'), '2025-09-01T00:00:00Z')).toEqual({ pricedAs: 'cohere/command-r-plus-08-2024', cost: usd('0.045') });
    expect(listCost(chat('command-r-plus'), '2025-09-01T00:00:00Z')).toBeNull();
  });
});

describe('the fixture models still cost what expected_usage.json says, through LIST_PRICES itself', () => {
  const FIXTURES = new URL('../../../../../shared/fixtures/providers/', import.meta.url);
  const read = (file: string) => readFileSync(new URL(file, FIXTURES), 'utf8');
  const expected = JSON.parse(read('expected_usage.json')) as Record<string, { expected_cost_usd?: string | null; expected_cost_usd_from_2027_01_01?: string }>;
  const meta = JSON.parse(read('_http_meta.json')) as Record<string, { request: { url: string; body?: unknown; form?: unknown }; response: { status: number; headers?: Record<string, string> } }>;
  const priced = Object.entries(expected).filter(([file, entry]) => !file.startsWith('_') && entry.expected_cost_usd != null && !file.endsWith('.txt'));

  it('covers the priced fixtures', () => expect(priced.length).toBeGreaterThanOrEqual(10));

  for (const [file, entry] of priced) {
    it(`${file} costs ${entry.expected_cost_usd}`, () => {
      const { request, response: answer } = meta[file]!;
      const call: ProviderResponse = { url: request.url, status: answer.status, headers: answer.headers ?? {}, body: read(file), requestBody: request.body ?? request.form };
      const usage = normalizeResponse(call);
      if (!usage.billable) {
        expect(entry.expected_cost_usd).toBe('0');
        return;
      }
      expect(listCost(call, '2026-09-01T00:00:00Z')?.cost).toBe(usd(entry.expected_cost_usd!));
      if (entry.expected_cost_usd_from_2027_01_01) expect(listCost(call, '2027-01-01T00:00:00Z')?.cost).toBe(usd(entry.expected_cost_usd_from_2027_01_01));
    });
  }
});
