import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../shared/errors.ts';
import { formatAttos, parseDecimalAttos } from '../../shared/money.ts';
import type { NormalizedUsage } from '../usage/usage.types.ts';
import { normalizeResponse } from '../usage/normalize/index.ts';
import { canonicalRate, costOf, modelMatchRank, priceInForce, validateProviderPrice, withCanonicalRates, withoutOwnerPrefix, type ProviderPrice } from './cost.ts';

const SINCE_2026 = new Date('2026-01-01T00:00:00Z');

const row = (provider: string, model: string, rest: Partial<ProviderPrice> = {}): ProviderPrice => ({
  provider, model, currency: 'USD', effectiveFrom: SINCE_2026, ...rest,
});

/** EXPECTED.md §2, standard tier. "n/a" cache writes are left unset (see costOf's fallbacks). */
const PRICE_TABLE: ProviderPrice[] = [
  row('openai', 'gpt-5.4', {
    perMillionTokens: { input: '2.50', cachedInput: '0.25', output: '15.00' },
    contextTiers: [{ aboveInputTokens: 272_000, perMillionTokens: { input: '5.00', cachedInput: '0.50', output: '22.50' } }],
  }),
  row('openai', 'gpt-5.4-mini', { perMillionTokens: { input: '0.75', cachedInput: '0.075', output: '4.50' } }),
  row('openai', 'gpt-5.6-sol', {
    perMillionTokens: { input: '5.00', cachedInput: '0.50', cacheWrite: '6.25', output: '30.00' },
    contextTiers: [{ aboveInputTokens: 272_000, perMillionTokens: { input: '10.00', cachedInput: '1.00', cacheWrite: '12.50', output: '45.00' } }],
  }),
  row('anthropic', 'claude-opus-4-8', { perMillionTokens: { input: '5.00', cachedInput: '0.50', cacheWrite: '6.25', cacheWrite1h: '10.00', output: '25.00' } }),
  row('anthropic', 'claude-sonnet-4-6', { perMillionTokens: { input: '3.00', cachedInput: '0.30', cacheWrite: '3.75', cacheWrite1h: '6.00', output: '15.00' } }),
  row('anthropic', 'claude-haiku-4-5', { perMillionTokens: { input: '1.00', cachedInput: '0.10', cacheWrite: '1.25', cacheWrite1h: '2.00', output: '5.00' } }),
  // Promotional through 2026-12-31; the 2027 cache-read rate is EXPECTED.md's inferred one.
  row('google', 'gemini-3.8-flash', { perMillionTokens: { input: '0.75', cachedInput: '0.075', output: '3.75' } }),
  row('google', 'gemini-3.8-flash', {
    effectiveFrom: new Date('2027-01-01T00:00:00Z'),
    perMillionTokens: { input: '1.50', cachedInput: '0.15', output: '7.50' },
  }),
  // The cache-hit price was cut to a tenth at 2026-04-26 12:15 UTC.
  row('deepseek', 'deepseek-v4-flash', { perMillionTokens: { input: '0.14', cachedInput: '0.028', output: '0.28' } }),
  row('deepseek', 'deepseek-v4-flash', {
    effectiveFrom: new Date('2026-04-26T12:15:00Z'),
    perMillionTokens: { input: '0.14', cachedInput: '0.0028', output: '0.28' },
  }),
  row('openai', 'text-embedding-3-small', { perMillionTokens: { input: '0.02' } }),
  row('openai', 'whisper-1', { perAudioMinute: '0.006' }),
];

interface Fixture {
  provider: string;
  api: string;
  model: string | null;
  pricedAs?: string;
  billable: boolean;
  input?: number;
  uncached?: number;
  cached?: number;
  write?: number;
  output?: number;
  reasoning?: number;
  audioSeconds?: string;
  details?: Record<string, number | string>;
  expected: string;
  expected2027?: string;
}

/** expected_usage.json's numbers for every fixture with a non-null expected_cost_usd. */
const FIXTURES: Record<string, Fixture> = {
  'openai_chat_completion.json': {
    provider: 'openai', api: 'chat.completions', model: 'gpt-5.4-mini-2026-03-17', pricedAs: 'gpt-5.4-mini', billable: true,
    input: 2471, uncached: 551, cached: 1920, write: 0, output: 612, reasoning: 384, expected: '0.00331125',
  },
  'openai_chat_completion_stream_include_usage.sse': {
    provider: 'openai', api: 'chat.completions', model: 'gpt-5.4-mini-2026-03-17', pricedAs: 'gpt-5.4-mini', billable: true,
    input: 1184, uncached: 160, cached: 1024, write: 0, output: 246, reasoning: 128, expected: '0.0013038',
  },
  'openai_chat_completion_stream_truncated.sse': {
    provider: 'openai', api: 'chat.completions', model: 'gpt-5.4-mini-2026-03-17', billable: false, input: 0, output: 0, expected: '0',
  },
  'openai_responses.json': {
    provider: 'openai', api: 'responses', model: 'gpt-5.4', pricedAs: 'gpt-5.4', billable: true,
    input: 5380, uncached: 516, cached: 4864, write: 0, output: 1129, reasoning: 768, expected: '0.019441',
  },
  'openai_responses_stream.sse': {
    provider: 'openai', api: 'responses', model: 'gpt-5.4-mini', pricedAs: 'gpt-5.4-mini', billable: true,
    input: 86, uncached: 86, cached: 0, write: 0, output: 214, reasoning: 192, expected: '0.0010275',
  },
  'openai_embeddings.json': {
    provider: 'openai', api: 'embeddings', model: 'text-embedding-3-small', pricedAs: 'text-embedding-3-small', billable: true,
    input: 17, uncached: 17, cached: 0, write: 0, output: 0, reasoning: 0, expected: '0.00000034',
  },
  'openai_transcription_whisper_1_verbose.json': {
    provider: 'openai', api: 'audio.transcriptions', model: 'whisper-1', pricedAs: 'whisper-1', billable: true,
    input: 0, output: 0, audioSeconds: '43', expected: '0.0043',
  },
  'openai_error_429_rate_limit.json': {
    provider: 'openai', api: 'chat.completions', model: null, billable: false, input: 0, output: 0, expected: '0',
  },
  'anthropic_messages.json': {
    provider: 'anthropic', api: 'messages', model: 'claude-opus-4-8', pricedAs: 'claude-opus-4-8', billable: true,
    input: 24762, uncached: 186, cached: 21504, write: 3072, output: 503, reasoning: 0,
    details: { cache_write_5m_tokens: 3072, cache_write_1h_tokens: 0 }, expected: '0.043457',
  },
  'anthropic_messages_stream.sse': {
    provider: 'anthropic', api: 'messages', model: 'claude-sonnet-4-6', pricedAs: 'claude-sonnet-4-6', billable: true,
    input: 16540, uncached: 2204, cached: 14336, write: 0, output: 689, reasoning: 412,
    details: { cache_write_5m_tokens: 0, cache_write_1h_tokens: 0 }, expected: '0.0212478',
  },
  'anthropic_error_529_overloaded.json': {
    provider: 'anthropic', api: 'messages', model: null, billable: false, input: 0, output: 0, expected: '0',
  },
  'gemini_generate_content.json': {
    provider: 'google', api: 'generateContent', model: 'gemini-3.8-flash', pricedAs: 'gemini-3.8-flash', billable: true,
    input: 14212, uncached: 1924, cached: 12288, write: 0, output: 1305, reasoning: 893, expected: '0.00725835', expected2027: '0.0145167',
  },
  'deepseek_chat_completion.json': {
    provider: 'deepseek', api: 'chat.completions', model: 'deepseek-v4-flash', pricedAs: 'deepseek-v4-flash', billable: true,
    input: 1315, uncached: 35, cached: 1280, write: 0, output: 487, reasoning: 331, expected: '0.000144844',
  },
};

function usageOf(fixture: Fixture): NormalizedUsage {
  return {
    provider: fixture.provider,
    api: fixture.api,
    model: fixture.model,
    inputTokens: fixture.input ?? 0,
    cachedInputTokens: fixture.cached ?? 0,
    cacheWriteTokens: fixture.write ?? 0,
    outputTokens: fixture.output ?? 0,
    reasoningTokens: fixture.reasoning ?? 0,
    audioSeconds: fixture.audioSeconds ?? null,
    characters: 0,
    images: 0,
    requests: fixture.billable ? 1 : 0,
    details: fixture.details ?? {},
    providerReportedCostUsd: null,
    billable: fixture.billable,
    incomplete: false,
    streamedText: null,
  };
}

const usage = (overrides: Partial<NormalizedUsage> = {}): NormalizedUsage => ({
  ...usageOf({ provider: 'openai', api: 'chat.completions', model: 'gpt-5.4', billable: true, expected: '0' }),
  ...overrides,
});

/** Runs fn and returns the AppError it throws. */
function validationError(fn: () => unknown): AppError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe('VALIDATION');
    return error as AppError;
  }
  throw new Error('expected a VALIDATION error');
}

const DURING_FIXTURES = new Date('2026-09-01T00:00:00Z');

describe('costOf reproduces expected_usage.json', () => {
  for (const [name, fixture] of Object.entries(FIXTURES)) {
    it(`${name} costs ${fixture.expected}`, () => {
      const record = usageOf(fixture);
      if (fixture.uncached !== undefined) {
        expect(record.inputTokens - record.cachedInputTokens - record.cacheWriteTokens).toBe(fixture.uncached);
      }
      if (!fixture.billable) {
        // No usage and no price needed: nothing may be charged.
        expect(costOf(record, row('openai', 'any'))).toBe(0n);
        return;
      }
      const price = priceInForce(PRICE_TABLE, fixture.provider, fixture.model!, DURING_FIXTURES);
      expect(price?.model).toBe(fixture.pricedAs);
      const cost = costOf(record, price!);
      expect(typeof cost).toBe('bigint');
      expect(cost).toBe(parseDecimalAttos('expected', fixture.expected));
      expect(formatAttos(cost)).toBe(fixture.expected.includes('.') ? fixture.expected : `${fixture.expected}.00`);
      if (fixture.expected2027) {
        const later = priceInForce(PRICE_TABLE, fixture.provider, fixture.model!, new Date('2027-01-01T00:00:00Z'))!;
        expect(costOf(record, later)).toBe(parseDecimalAttos('expected', fixture.expected2027));
        const lastPromoSecond = priceInForce(PRICE_TABLE, fixture.provider, fixture.model!, new Date('2026-12-31T23:59:59.999Z'))!;
        expect(costOf(record, lastPromoSecond)).toBe(cost);
      }
    });
  }

  const shared = new URL('../../../../../shared/fixtures/providers/expected_usage.json', import.meta.url);
  it('the table above matches the shared expected_usage.json', () => {
    const expected = JSON.parse(readFileSync(shared, 'utf8')) as Record<string, Record<string, unknown>>;
    const priced = Object.entries(expected).filter(([key, value]) => !key.startsWith('_') && value.expected_cost_usd != null);
    expect(priced.map(([key]) => key).sort()).toEqual(Object.keys(FIXTURES).sort());
    for (const [name, entry] of priced) {
      const fixture = FIXTURES[name]!;
      expect(fixture.expected, name).toBe(entry.expected_cost_usd);
      expect(fixture.expected2027, name).toBe(entry.expected_cost_usd_from_2027_01_01);
      expect(fixture.input ?? 0, name).toBe(entry.input_tokens_total);
      expect(fixture.output ?? 0, name).toBe(entry.output_tokens);
      if (entry.cached_input_tokens !== undefined) {
        expect([fixture.cached, fixture.write, fixture.uncached, fixture.reasoning], name).toEqual([
          entry.cached_input_tokens, entry.cache_write_tokens, entry.input_tokens_uncached, entry.reasoning_tokens,
        ]);
      }
      const units = (entry.units ?? {}) as Record<string, unknown>;
      if (units.audio_seconds_billed !== undefined) expect(fixture.audioSeconds).toBe(String(units.audio_seconds_billed));
      if (entry.model_reported != null) expect(fixture.model, name).toBe(entry.model_reported);
    }
  });

  it('rejects the known wrong answer: cached tokens at the full input rate', () => {
    const record = usageOf(FIXTURES['openai_chat_completion.json']!);
    const right = costOf(record, priceInForce(PRICE_TABLE, 'openai', 'gpt-5.4-mini', DURING_FIXTURES)!);
    // A row without a cache-read rate bills reads at the input rate: exactly the known wrong total.
    const noCacheRate = row('openai', 'gpt-5.4-mini', { perMillionTokens: { input: '0.75', output: '4.50' } });
    expect(costOf(record, noCacheRate)).toBe(parseDecimalAttos('wrong', '0.00460725'));
    expect(right).not.toBe(parseDecimalAttos('wrong', '0.00460725'));
  });

  it('DeepSeek: cached input counted once (1280 + 1280 would be wrong)', () => {
    const record = usageOf(FIXTURES['deepseek_chat_completion.json']!);
    const price = priceInForce(PRICE_TABLE, 'deepseek', 'deepseek-v4-flash', DURING_FIXTURES)!;
    const doubled = { ...record, inputTokens: record.inputTokens + 1280, cachedInputTokens: 2560 };
    expect(costOf(doubled, price)).not.toBe(costOf(record, price));
    expect(costOf(record, price)).toBe(parseDecimalAttos('x', '0.000144844'));
  });

  it('DeepSeek before the 2026-04-26 12:15 UTC cut pays ten times the cache-hit rate', () => {
    const record = usageOf(FIXTURES['deepseek_chat_completion.json']!);
    const before = priceInForce(PRICE_TABLE, 'deepseek', 'deepseek-v4-flash', new Date('2026-04-26T12:14:59.999Z'))!;
    const after = priceInForce(PRICE_TABLE, 'deepseek', 'deepseek-v4-flash', new Date('2026-04-26T12:15:00Z'))!;
    // 1280 cache hits: 0.03584 vs 0.003584 per million → a difference of 0.032256 µ$.
    expect(costOf(record, before) - costOf(record, after)).toBe(parseDecimalAttos('x', '0.000032256'));
  });
});

describe('costOf rates and units', () => {
  const gpt54 = PRICE_TABLE[0]!;
  const sol = PRICE_TABLE[2]!;

  it('long context: strictly above 272K input tokens the whole request uses the higher rates', () => {
    const at = (inputTokens: number) => costOf(usage({ inputTokens, cachedInputTokens: 100_000, outputTokens: 1000 }), gpt54);
    // 172,000 × 2.50 + 100,000 × 0.25 + 1,000 × 15 per million
    expect(at(272_000)).toBe(parseDecimalAttos('x', '0.47'));
    // 172,001 × 5.00 + 100,000 × 0.50 + 1,000 × 22.50 per million
    expect(at(272_001)).toBe(parseDecimalAttos('x', '0.932505'));
  });

  it('GPT-5.6 cache writes at 1.25× input, long-context too', () => {
    const record = usage({ inputTokens: 10_000, cacheWriteTokens: 8_000, outputTokens: 0 });
    expect(costOf(record, sol)).toBe(parseDecimalAttos('x', '0.06')); // 2,000 × 5 + 8,000 × 6.25
    const long = usage({ inputTokens: 300_000, cacheWriteTokens: 200_000, outputTokens: 0 });
    expect(costOf(long, sol)).toBe(parseDecimalAttos('x', '3.5')); // 100,000 × 10 + 200,000 × 12.50
  });

  it('Anthropic cache writes split 5m/1h when the details carry the split', () => {
    const opus = PRICE_TABLE[3]!;
    const record = usage({ inputTokens: 1000, cacheWriteTokens: 1000, details: { cache_write_5m_tokens: 600, cache_write_1h_tokens: 400 } });
    expect(costOf(record, opus)).toBe(parseDecimalAttos('x', '0.00775')); // 600 × 6.25 + 400 × 10
    const unsplit = usage({ inputTokens: 1000, cacheWriteTokens: 1000 });
    expect(costOf(unsplit, opus)).toBe(parseDecimalAttos('x', '0.00625'));
    const over = validationError(() => costOf({ ...record, details: { cache_write_1h_tokens: '1001' } }, opus));
    expect(over.details.field).toBe('usage.details.cache_write_1h_tokens');
  });

  it('reasoning stays inside output unless priced apart', () => {
    const record = usage({ inputTokens: 0, outputTokens: 1000, reasoningTokens: 400 });
    expect(costOf(record, gpt54)).toBe(parseDecimalAttos('x', '0.015'));
    const apart = row('x', 'y', { perMillionTokens: { output: '10', reasoning: '20' } });
    expect(costOf(record, apart)).toBe(parseDecimalAttos('x', '0.014')); // 600 × 10 + 400 × 20
  });

  it('audio tokens, images by size/quality, characters, per-request fees', () => {
    const audio = row('openai', 'gpt-4o-audio-preview', { perMillionTokens: { input: '2.5', output: '10', inputAudio: '40', outputAudio: '80' } });
    const spoken = usage({ inputTokens: 1000, outputTokens: 500, details: { input_audio_tokens: 800, output_audio_tokens: 300 } });
    // 200 × 2.5 + 800 × 40 + 200 × 10 + 300 × 80 per million
    expect(costOf(spoken, audio)).toBe(parseDecimalAttos('x', '0.0585'));
    // Prompt audio counted with its cached part: only the uncached part takes the audio rate.
    const cachedAudio = usage({ inputTokens: 1000, cachedInputTokens: 500, outputTokens: 0, details: { input_audio_tokens: 800 } });
    expect(costOf(cachedAudio, audio)).toBe(parseDecimalAttos('x', '0.02125')); // 500 × 40 + 500 × 2.5

    const images = row('openai', 'dall-e-3', { perImage: '0.04', perImageBy: { '1024x1792/hd': '0.12', '1024x1792': '0.08', hd: '0.08' } });
    const image = (size: string, quality: string, n = 1) => usage({ inputTokens: 0, outputTokens: 0, images: n, details: { size, quality } });
    expect(costOf(image('1024x1792', 'HD', 2), images)).toBe(parseDecimalAttos('x', '0.24'));
    expect(costOf(image('1024x1792', 'standard'), images)).toBe(parseDecimalAttos('x', '0.08'));
    expect(costOf(image('1024x1024', 'standard'), images)).toBe(parseDecimalAttos('x', '0.04'));
    const unpriced = validationError(() => costOf(image('1024x1024', 'standard'), row('x', 'y', { perImageBy: { hd: '1' } })));
    expect(unpriced.details.field).toBe('price.perImage');

    const tts = row('elevenlabs', 'eleven_multilingual_v2', { perMillionCharacters: '180', perRequest: '0.0001' });
    const spoken141 = usage({ inputTokens: 0, outputTokens: 0, characters: 141, requests: 1 });
    expect(costOf(spoken141, tts)).toBe(parseDecimalAttos('x', '0.02548')); // 141 × 180 / 1e6 + 0.0001
    expect(costOf(spoken141, row('x', 'y', { perCharacter: '0.0003' }))).toBe(parseDecimalAttos('x', '0.0423'));
    const both = validationError(() => costOf(spoken141, row('x', 'y', { perCharacter: '1', perMillionCharacters: '1' })));
    expect(both.details.field).toBe('price.perMillionCharacters');
  });

  it('GPT image models bill their images as tokens: a token-priced row costs the images by their tokens alone', () => {
    // openai_image_generation_gpt_image.json, through the normalizer with its request (the body names no model).
    const shared = new URL('../../../../../shared/fixtures/providers/', import.meta.url);
    const file = 'openai_image_generation_gpt_image.json';
    const meta = (JSON.parse(readFileSync(new URL('_http_meta.json', shared), 'utf8')) as Record<string, { request: { url: string; body: unknown }; response: { status: number; headers: Record<string, string> } }>)[file]!;
    const record = normalizeResponse({ url: meta.request.url, status: meta.response.status, headers: meta.response.headers, body: readFileSync(new URL(file, shared), 'utf8'), requestBody: meta.request.body });
    expect(record).toMatchObject({ model: 'gpt-image-1.5', images: 1, inputTokens: 52, outputTokens: 1056, details: { output_image_tokens: 1056, size: '1024x1024', quality: 'medium' } });
    const tokens = row('openai', 'gpt-image-1.5', { perMillionTokens: { input: '5', output: '40' } });
    // 52 × $5 + 1,056 × $40 per million = 0.00026 + 0.04224
    expect(costOf(record, tokens)).toBe(parseDecimalAttos('x', '0.0425'));
    // A per-image rate beside the token rates would count the same image twice: the tokens are the bill.
    expect(costOf(record, { ...tokens, perImage: '0.042' })).toBe(parseDecimalAttos('x', '0.0425'));
    // Images reported without their tokens still need a per-image price, token rates or not.
    const untokened = { ...record, inputTokens: 0, outputTokens: 0, details: { size: '1024x1024', quality: 'medium' } };
    expect(validationError(() => costOf(untokened, tokens)).details.field).toBe('price.perImage');
    expect(costOf(untokened, { ...tokens, perImage: '0.042' })).toBe(parseDecimalAttos('x', '0.042'));
    // A row with no token rates cannot price image tokens.
    expect(validationError(() => costOf(record, row('openai', 'gpt-image-1.5', { perImage: '0.042' }))).details.field).toBe('price.perMillionTokens.input');
  });

  it('image tokens are priced at inputImage and outputImage where a row sets them, and at the text rates where it does not', () => {
    // gpt-image-1: text in $5, image in $10, image out $40 per million; an edit sends text and an image.
    const edit = usage({ inputTokens: 1_000, cachedInputTokens: 100, outputTokens: 4_160, details: { input_image_tokens: 600, output_image_tokens: 4_160 } });
    const rated = row('openai', 'gpt-image-1', { perMillionTokens: { input: '5', cachedInput: '1.25', inputImage: '10', output: '40', outputImage: '40' } });
    // Uncached 900: 600 image × $10 + 300 text × $5; cached 100 × $1.25; 4,160 image out × $40.
    expect(costOf(edit, rated)).toBe(parseDecimalAttos('x', '0.174025'));
    // No image rates: every token at its text rate, as before they existed.
    expect(costOf(edit, row('openai', 'gpt-image-1', { perMillionTokens: { input: '5', cachedInput: '1.25', output: '40' } }))).toBe(parseDecimalAttos('x', '0.171025'));
    // Gemini's image output is dearer than its text: images out at their rate, the rest of the output (text, thoughts) at its own.
    const flashImage = usage({ inputTokens: 20, outputTokens: 1_390, reasoningTokens: 40, details: { output_image_tokens: 1_290 } });
    const gemini = row('google', 'gemini-2.5-flash-image', { perMillionTokens: { input: '0.30', output: '2.50', outputImage: '30' } });
    // 20 × $0.30 + (1,390 − 40 − 1,290 = 60 text + 40 reasoning) × $2.50 + 1,290 × $30.
    expect(costOf(flashImage, gemini)).toBe(parseDecimalAttos('x', '0.038956'));
    // Image tokens reported beyond what is left of the input or output are priced as what is left (never a negative text term).
    const overstated = usage({ inputTokens: 100, outputTokens: 50, details: { input_image_tokens: 500, output_image_tokens: 80 } });
    expect(costOf(overstated, rated)).toBe(parseDecimalAttos('x', '0.003'));
  });

  it('fractional audio seconds are exact per second, and per minute to the nearest atto', () => {
    const record = usage({ inputTokens: 0, outputTokens: 0, audioSeconds: '25.933313' });
    expect(costOf(record, row('x', 'y', { perAudioSecond: '0.0001' }))).toBe(parseDecimalAttos('x', '0.0025933313'));
    // 25.933313 s × 0.006 / 60 = 0.0025933313 exactly; 0.007 / 60 needs rounding: 0.00302555318333… → …183
    expect(costOf(record, row('x', 'y', { perAudioMinute: '0.006' }))).toBe(parseDecimalAttos('x', '0.0025933313'));
    expect(costOf(record, row('x', 'y', { perAudioMinute: '0.007' }))).toBe(parseDecimalAttos('x', '0.003025553183333333'));
    expect(costOf(record, row('x', 'y', { perAudioMinute: '0.009' }))).toBe(parseDecimalAttos('x', '0.00388999695'));
  });

  it('rounds once, to the nearest atto, only below the atto', () => {
    const tiny = row('x', 'y', { perMillionTokens: { input: '0.000000000001', output: '0' } }); // 1e-18 USD per token
    expect(costOf(usage({ inputTokens: 7, outputTokens: 0 }), tiny)).toBe(7n);
    const tinier = row('x', 'y', { perMillionTokens: { input: '0.000000000000000001', output: '0' } });
    expect(costOf(usage({ inputTokens: 499_999, outputTokens: 0 }), tinier)).toBe(0n); // 0.499999 atto
    expect(costOf(usage({ inputTokens: 500_000, outputTokens: 0 }), tinier)).toBe(1n); // 0.5 atto: halves up
    expect(costOf(usage({ inputTokens: 1_500_000, outputTokens: 0 }), tinier)).toBe(2n);
  });

  it('unpriced units and impossible usage are VALIDATION errors naming the field', () => {
    const embeddings = PRICE_TABLE.find((p) => p.model === 'text-embedding-3-small')!;
    expect(validationError(() => costOf(usage({ inputTokens: 1, outputTokens: 1 }), embeddings)).details.field)
      .toBe('price.perMillionTokens.output');
    expect(validationError(() => costOf(usage({ inputTokens: 0, outputTokens: 0, audioSeconds: '1.5' }), embeddings)).details.field)
      .toBe('price.perAudioSecond');
    expect(validationError(() => costOf(usage({ inputTokens: 10, cachedInputTokens: 8, cacheWriteTokens: 3 }), gpt54)).details.field)
      .toBe('usage.cachedInputTokens');
    expect(validationError(() => costOf(usage({ outputTokens: 1, reasoningTokens: 2 }), gpt54)).details.field).toBe('usage.reasoningTokens');
    expect(validationError(() => costOf(usage({ inputTokens: 1.5 }), gpt54)).details.field).toBe('usage.inputTokens');
    expect(validationError(() => costOf(usage({ audioSeconds: '4.2e1' }), row('x', 'y', { perAudioSecond: '1' }))).details.field)
      .toBe('usage.audioSeconds');
    expect(validationError(() => costOf(usage({ inputTokens: 1 }), row('x', 'y', { perMillionTokens: { input: '0.1.5' } }))).details.field)
      .toBe('price.perMillionTokens.input');
    expect(validationError(() => costOf(usage(), { ...gpt54, currency: 'EUR' as 'USD' })).details.field).toBe('price.currency');
  });

  it('validateProviderPrice checks every rate, used or not', () => {
    for (const p of PRICE_TABLE) expect(validateProviderPrice(p)).toBe(p);
    expect(validationError(() => validateProviderPrice(row('x', 'y', { perRequest: '-1' }))).details.field).toBe('price.perRequest');
    expect(validationError(() => validateProviderPrice(row('x', 'y', { perMillionTokens: { cacheWrite1h: '1e-7' } }))).details.field)
      .toBe('price.perMillionTokens.cacheWrite1h');
    expect(validationError(() => validateProviderPrice(row('x', 'y', { perImageBy: { hd: 'free' } }))).details.field).toBe('price.perImageBy.hd');
    expect(validationError(() => validateProviderPrice(row('x', 'y', {
      perMillionTokens: { input: '1' },
      contextTiers: [{ aboveInputTokens: 5, perMillionTokens: { input: '2' } }, { aboveInputTokens: 5, perMillionTokens: { input: '3' } }],
    }))).details.field).toBe('price.contextTiers.1.aboveInputTokens');
    expect(validationError(() => validateProviderPrice(row('x', 'y', { effectiveFrom: new Date('nope') }))).details.field)
      .toBe('price.effectiveFrom');
  });

  it('validateProviderPrice checks the type of every field, refuses unknown keys and a row that prices nothing', () => {
    const refused = (rest: Record<string, unknown>, base: Partial<ProviderPrice> = {}) =>
      validationError(() => validateProviderPrice({ ...row('x', 'y', base), ...rest } as unknown as ProviderPrice)).details.field;
    const tokens = { perMillionTokens: { input: '1', output: '2' } };
    expect(refused({ perMillionTokens: 'abc' })).toBe('price.perMillionTokens');
    expect(refused({ perMillionTokens: ['1'] })).toBe('price.perMillionTokens');
    expect(refused({ perMillionTokens: { input: 1.5 } })).toBe('price.perMillionTokens.input');
    expect(refused({ perMillionTokens: { input: -1 } })).toBe('price.perMillionTokens.input');
    expect(refused({ perMillionTokens: { inptu: '1' } })).toBe('price.perMillionTokens.inptu');
    expect(refused({ perMilionTokens: { input: '1' } })).toBe('price.perMilionTokens');
    expect(refused({})).toBe('price');
    expect(refused({ perMillionTokens: null })).toBe('price');
    expect(refused({ perMillionTokens: {} })).toBe('price');
    expect(refused({ ...tokens, contextTiers: 'x' })).toBe('price.contextTiers');
    expect(refused({ ...tokens, contextTiers: {} })).toBe('price.contextTiers');
    expect(refused({ ...tokens, contextTiers: [null] })).toBe('price.contextTiers.0');
    expect(refused({ ...tokens, contextTiers: [{ aboveInputTokens: 1000 }] })).toBe('price.contextTiers.0.perMillionTokens');
    expect(refused({ ...tokens, contextTiers: [{ aboveInputTokens: 1000, perMillionTokens: {} }] })).toBe('price.contextTiers.0.perMillionTokens');
    expect(refused({ ...tokens, contextTiers: [{ aboveInputTokens: 1000, perMillionTokens: 'x' }] })).toBe('price.contextTiers.0.perMillionTokens');
    for (const above of [0, -1, 1.5, '1000', null]) {
      expect(refused({ ...tokens, contextTiers: [{ aboveInputTokens: above, perMillionTokens: { input: '2' } }] }), String(above)).toBe('price.contextTiers.0.aboveInputTokens');
    }
    expect(refused({ ...tokens, contextTiers: [{ aboveInputTokens: 1000, perMillionTokens: { input: '2' }, extra: 1 }] })).toBe('price.contextTiers.0.extra');
    expect(refused({ contextTiers: [{ aboveInputTokens: 1000, perMillionTokens: { input: '2' } }] })).toBe('price.perMillionTokens');
    expect(refused({ perImageBy: 'x' })).toBe('price.perImageBy');
    expect(refused({ perImageBy: { 'a\u0000b': '1' } })).toBe('price.perImageBy');
    expect(refused({ perImageBy: { HD: '1', ' hd': '2' } })).toBe('price.perImageBy. hd');
    expect(refused({ perRequest: 0.001 })).toBe('price.perRequest');
    // A whole number is exact: a config may write it bare.
    expect(validateProviderPrice(row('x', 'y', { perMillionTokens: { input: 2, output: '8' }, perRequest: 1 } as never))).toBeTruthy();
    expect(refused({ ...tokens, provider: 'a\u0000' })).toBe('price.provider');
    expect(refused({ ...tokens, model: 'a\ud800' })).toBe('price.model');
    expect(refused({ ...tokens, model: 'm'.repeat(256) })).toBe('price.model');
    expect(refused({ ...tokens, provider: 7 })).toBe('price.provider');
    expect(refused({ ...tokens, effectiveFrom: new Date('+010000-01-01T00:00:00Z') })).toBe('price.effectiveFrom');
    // Each kind of rate alone prices something; null is an unset rate.
    for (const rates of [tokens, { perRequest: '0' }, { perImageBy: { hd: '0.1' } }, { ...tokens, perImage: null, contextTiers: null }, { ...tokens, model: 'm'.repeat(255) }]) {
      expect(() => validateProviderPrice({ ...row('x', 'y'), ...rates } as ProviderPrice)).not.toThrow();
    }
  });

  it('withCanonicalRates writes every rate as the shortest decimal string of its value, leaving what is no rate as it is', () => {
    expect(canonicalRate('x', '2.50')).toBe('2.5');
    expect(canonicalRate('x', ' 007.000 ')).toBe('7');
    expect(canonicalRate('x', 2)).toBe('2');
    expect(canonicalRate('x', '0.000000000000000001')).toBe('0.000000000000000001');
    const price = row('acme', 'm', {
      perMillionTokens: { input: '2.50', output: 10 as unknown as string, cachedInput: null },
      contextTiers: [{ aboveInputTokens: 200_000, perMillionTokens: { input: ' 5.0' } }],
      perImageBy: { '1024x1024': '0.040' }, perRequest: '0.0010', perImage: null,
    });
    expect(withCanonicalRates(price)).toEqual({
      ...price,
      perMillionTokens: { input: '2.5', output: '10', cachedInput: null },
      contextTiers: [{ aboveInputTokens: 200_000, perMillionTokens: { input: '5' } }],
      perImageBy: { '1024x1024': '0.04' }, perRequest: '0.001', perImage: null,
    });
    expect(price.perMillionTokens?.input).toBe('2.50');
    const malformed = { perMillionTokens: { input: 'abc', output: 0.5 }, contextTiers: [null, { aboveInputTokens: 1 }], perImageBy: 'x' };
    expect(withCanonicalRates(malformed)).toEqual(malformed);
  });

  it('costOf answers a malformed stored row (written before it was validated) with a VALIDATION error, not a TypeError', () => {
    const big = usage({ inputTokens: 2000, outputTokens: 1 });
    const tierless = { ...row('x', 'y', { perMillionTokens: { input: '1', output: '2' } }), contextTiers: [{ aboveInputTokens: 1000 }] } as unknown as ProviderPrice;
    expect(validationError(() => costOf(big, tierless)).details.field).toBe('price.contextTiers.0.perMillionTokens');
    expect(costOf(usage({ inputTokens: 10, outputTokens: 0 }), tierless)).toBe(parseDecimalAttos('x', '0.00001'));
    const notAList = { ...row('x', 'y', { perMillionTokens: { input: '1', output: '2' } }), contextTiers: 'x' } as unknown as ProviderPrice;
    expect(validationError(() => costOf(big, notAList)).details.field).toBe('price.contextTiers');
  });

  it('property: token cost is exactly Σ tokens × rate / 1e6, a bigint', () => {
    const rate = fc.tuple(fc.nat({ max: 999 }), fc.nat({ max: 999_999 })).map(([whole, micro]) => `${whole}.${String(micro).padStart(6, '0')}`);
    const microUnits = (text: string) => BigInt(text.replace('.', ''));
    fc.assert(
      fc.property(
        fc.record({ input: rate, cached: rate, write: rate, output: rate }),
        fc.nat({ max: 2_000_000 }), fc.nat({ max: 2_000_000 }), fc.nat({ max: 2_000_000 }), fc.nat({ max: 2_000_000 }),
        (rates, uncached, cached, written, output) => {
          const price = row('x', 'y', { perMillionTokens: { input: rates.input, cachedInput: rates.cached, cacheWrite: rates.write, output: rates.output } });
          const record = usage({ inputTokens: uncached + cached + written, cachedInputTokens: cached, cacheWriteTokens: written, outputTokens: output });
          const cost = costOf(record, price);
          expect(typeof cost).toBe('bigint');
          // rates in micro-dollars per million tokens → pico-dollars per token → attos: × 1e6
          const expected = (BigInt(uncached) * microUnits(rates.input) + BigInt(cached) * microUnits(rates.cached)
            + BigInt(written) * microUnits(rates.write) + BigInt(output) * microUnits(rates.output)) * 1_000_000n;
          expect(cost).toBe(expected);
        },
      ),
    );
  });
});

describe('priceInForce', () => {
  const at = DURING_FIXTURES;

  it('tolerates dated snapshot suffixes, and only dates', () => {
    expect(priceInForce(PRICE_TABLE, 'openai', 'gpt-5.4-mini-2026-03-17', at)?.model).toBe('gpt-5.4-mini');
    expect(priceInForce(PRICE_TABLE, 'anthropic', 'claude-haiku-4-5-20251001', at)?.model).toBe('claude-haiku-4-5');
    expect(priceInForce(PRICE_TABLE, 'anthropic', 'claude-opus-4-8@20260528', at)?.model).toBe('claude-opus-4-8');
    expect(priceInForce(PRICE_TABLE, 'OpenAI', 'GPT-5.4', at)?.model).toBe('gpt-5.4');
    // gpt-5.4 must not price gpt-5.4-nano, nor gpt-5.4-mini-preview a dated-looking non-date.
    expect(priceInForce(PRICE_TABLE, 'openai', 'gpt-5.4-nano', at)).toBeNull();
    expect(priceInForce(PRICE_TABLE, 'openai', 'gpt-5.4-mini-preview', at)).toBeNull();
    expect(priceInForce(PRICE_TABLE, 'anthropic', 'gpt-5.4', at)).toBeNull();
    expect(modelMatchRank('gpt-5.4', 'gpt-5.4-2026')).toBe(0);
  });

  it('the most specific match wins: an exact snapshot row over the undated one', () => {
    const snapshot = row('openai', 'gpt-5.4-mini-2026-03-17', { perMillionTokens: { input: '0.70', output: '4' } });
    const rows = [...PRICE_TABLE, snapshot];
    expect(priceInForce(rows, 'openai', 'gpt-5.4-mini-2026-03-17', at)).toBe(snapshot);
    expect(priceInForce(rows, 'openai', 'gpt-5.4-mini-2026-05-01', at)?.model).toBe('gpt-5.4-mini');
    // …unless the exact row is not in force yet.
    const future = { ...snapshot, effectiveFrom: new Date('2030-01-01T00:00:00Z') };
    expect(priceInForce([...PRICE_TABLE, future], 'openai', 'gpt-5.4-mini-2026-03-17', at)?.model).toBe('gpt-5.4-mini');
  });

  it('matches a model named with its provider\'s prefix (or an owner\'s) without it, below the whole name; other prefixes are part of the name', () => {
    expect(priceInForce(PRICE_TABLE, 'openai', 'openai/gpt-5.4-mini-2026-03-17', at)?.model).toBe('gpt-5.4-mini');
    expect(priceInForce(PRICE_TABLE, 'OpenAI', 'OpenAI/GPT-5.4', at)?.model).toBe('gpt-5.4');
    expect(priceInForce(PRICE_TABLE, 'google', 'publishers/google/models/gemini-3.8-flash', at)?.model).toBe('gemini-3.8-flash');
    // Vertex AI names Gemini "google/…": stripped only when google is named an owner.
    const vertex = [row('vertex', 'gemini-3.8-flash', { perMillionTokens: { input: '1', output: '1' } })];
    expect(priceInForce(vertex, 'vertex', 'google/gemini-3.8-flash', at)).toBeNull();
    expect(priceInForce(vertex, 'vertex', 'google/gemini-3.8-flash', at, ['google'])).toBe(vertex[0]);
    // Another maker's prefix is part of the name, and nothing is left once it is stripped.
    expect(priceInForce(PRICE_TABLE, 'openai', 'meta-llama/gpt-5.4', at)).toBeNull();
    expect(priceInForce(PRICE_TABLE, 'openai', 'openai/', at)).toBeNull();
    // A row for the whole name wins over the unprefixed one, dated or not.
    const prefixed = row('openai', 'openai/gpt-5.4-mini', { perMillionTokens: { input: '9', output: '9' } });
    expect(priceInForce([...PRICE_TABLE, prefixed], 'openai', 'openai/gpt-5.4-mini', at)).toBe(prefixed);
    expect(priceInForce([...PRICE_TABLE, prefixed], 'openai', 'openai/gpt-5.4-mini-2026-03-17', at)).toBe(prefixed);
    expect(withoutOwnerPrefix('google/gemini-2.0-flash-001', ['vertex', 'google'])).toBe('gemini-2.0-flash-001');
    expect(withoutOwnerPrefix('meta-llama/Llama-3.3-70B', ['together'])).toBeNull();
  });

  it('keeps history: the latest effectiveFrom at or before the time, in any order', () => {
    const rows = [...PRICE_TABLE].reverse();
    const gemini = (iso: string) => priceInForce(rows, 'google', 'gemini-3.8-flash', new Date(iso))?.perMillionTokens?.input;
    expect(gemini('2026-12-31T23:59:59.999Z')).toBe('0.75');
    expect(gemini('2027-01-01T00:00:00Z')).toBe('1.50');
    expect(gemini('2028-06-01T00:00:00Z')).toBe('1.50');
    expect(priceInForce(rows, 'google', 'gemini-3.8-flash', new Date('2025-12-31T23:59:59Z'))).toBeNull();
  });

  it('two rows for the same model and instant are a VALIDATION error', () => {
    const rows = [...PRICE_TABLE, row('openai', 'GPT-5.4', { perMillionTokens: { input: '1', output: '1' } })];
    expect(validationError(() => priceInForce(rows, 'openai', 'gpt-5.4', at)).details.field).toBe('rows');
    expect(validationError(() => priceInForce(rows, 'openai', 'gpt-5.4', new Date('x'))).details.field).toBe('at');
  });
});
