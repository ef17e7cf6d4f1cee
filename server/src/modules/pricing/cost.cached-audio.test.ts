/**
 * Audio read from a prompt cache: Gemini prices it apart from cached text (its pricing page lists
 * a context-caching price for text / image / video and another for audio), so a row may set
 * `cachedInputAudio`; a row that does not costs it at the cached text rate, as before.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { parseDecimalAttos } from '../../shared/money.ts';
import { normalizeResponse } from '../usage/normalize/index.ts';
import { blankUsage, type NormalizedUsage } from '../usage/usage.types.ts';
import { applyPricingChanges, planPricingConfig } from './config-apply.ts';
import { costOf, priceInForce, USAGE_DETAIL_KEYS, validateProviderPrice, withCanonicalRates, type ProviderPrice } from './cost.ts';
import { LIST_PRICES } from './list-prices.ts';
import { importModelsDev } from './models-dev.ts';

const usd = (text: string) => parseDecimalAttos('usd', text);
const row = (perMillionTokens: ProviderPrice['perMillionTokens'], rest: Partial<ProviderPrice> = {}): ProviderPrice => ({
  provider: 'google', model: 'gemini-x', currency: 'USD', effectiveFrom: new Date('2025-01-01T00:00:00Z'), perMillionTokens, ...rest,
});
const usage = (fields: Partial<NormalizedUsage>) => blankUsage({ provider: 'google', api: 'generateContent', model: 'gemini-x', ...fields });

/** 10,000 prompt tokens: 2,000 text and 8,000 audio, of which 1,000 text and 5,000 audio read from the cache; 200 output. */
const GEMINI_BODY = JSON.stringify({
  candidates: [{ content: { parts: [{ text: 'ok' }], role: 'model' }, finishReason: 'STOP' }],
  usageMetadata: {
    promptTokenCount: 10_000,
    cachedContentTokenCount: 6000,
    candidatesTokenCount: 200,
    totalTokenCount: 10_200,
    promptTokensDetails: [{ modality: 'TEXT', tokenCount: 2000 }, { modality: 'AUDIO', tokenCount: 8000 }],
    cacheTokensDetails: [{ modality: 'TEXT', tokenCount: 1000 }, { modality: 'AUDIO', tokenCount: 5000 }],
  },
  modelVersion: 'gemini-2.5-flash',
});
const gemini = (model = 'gemini-2.5-flash') =>
  normalizeResponse({ url: `https://generativelanguage.googleapis.com/v1beta/models/${model}:generateContent`, status: 200, headers: {}, body: GEMINI_BODY.replace('gemini-2.5-flash', model) });

describe('costOf: cached audio', () => {
  const cachedAudio = usage({ inputTokens: 10_000, cachedInputTokens: 6000, outputTokens: 200, details: { input_audio_tokens: 3000, cached_audio_tokens: 5000 } });

  it('reads the cached-audio count under its documented detail key', () => {
    expect(USAGE_DETAIL_KEYS).toMatchObject({ cachedAudioTokens: 'cached_audio_tokens' });
  });

  it('is costed at cachedInputAudio when the row sets it', () => {
    const price = row({ input: '0.30', cachedInput: '0.03', inputAudio: '1.00', cachedInputAudio: '0.10', output: '2.50' });
    // 1,000 × 0.30 + 3,000 × 1.00 + 1,000 × 0.03 + 5,000 × 0.10 + 200 × 2.50, per million
    expect(costOf(cachedAudio, price)).toBe(usd('0.00433'));
  });

  it('at the cached text rate when the row does not set it: no existing row changes its costs', () => {
    const price = row({ input: '0.30', cachedInput: '0.03', inputAudio: '1.00', output: '2.50' });
    const withoutSplit = usage({ ...cachedAudio, details: { input_audio_tokens: 3000 } });
    expect(costOf(cachedAudio, price)).toBe(costOf(withoutSplit, price));
    expect(costOf(cachedAudio, price)).toBe(usd('0.00398')); // 6,000 × 0.03 for the whole cache read
    // And with no cache rate at all, at the input rate.
    expect(costOf(cachedAudio, row({ input: '0.30', inputAudio: '1.00', output: '2.50' }))).toBe(costOf(withoutSplit, row({ input: '0.30', inputAudio: '1.00', output: '2.50' })));
  });

  it('never costs more cached audio than the cache read holds', () => {
    const price = row({ input: '1', cachedInput: '0.1', cachedInputAudio: '0.5', output: '2' });
    const over = usage({ inputTokens: 1000, cachedInputTokens: 400, details: { cached_audio_tokens: 900 } });
    expect(costOf(over, price)).toBe(usd('0.0008')); // 600 × 1 + 400 × 0.5
  });

  it('a context tier may set its own cached audio rate; one that does not keeps the base rate', () => {
    const price = row(
      { input: '1', cachedInput: '0.1', cachedInputAudio: '0.5', output: '2' },
      { contextTiers: [{ aboveInputTokens: 1000, perMillionTokens: { input: '2', cachedInput: '0.2', cachedInputAudio: '0.8' } }] },
    );
    const big = usage({ inputTokens: 2000, cachedInputTokens: 1000, details: { cached_audio_tokens: 1000 } });
    expect(costOf(big, price)).toBe(usd('0.0028')); // 1,000 × 2 + 1,000 × 0.8
    const tierWithout = row({ input: '1', cachedInput: '0.1', cachedInputAudio: '0.5', output: '2' }, { contextTiers: [{ aboveInputTokens: 1000, perMillionTokens: { input: '2', cachedInput: '0.2' } }] });
    expect(costOf(big, tierWithout)).toBe(usd('0.0025')); // 1,000 × 2 + 1,000 × 0.5
  });

  it('is a known rate: validated, refused when malformed, and stored in its shortest form', () => {
    const price = row({ input: '0.30', cachedInput: '0.030', cachedInputAudio: '0.100', output: '2.50' });
    expect(validateProviderPrice(price)).toBe(price);
    expect(withCanonicalRates(price).perMillionTokens?.cachedInputAudio).toBe('0.1');
    expect(() => validateProviderPrice(row({ input: '1', cachedInputAudio: 'cheap' }))).toThrow(/cachedInputAudio/);
    expect(() => validateProviderPrice(row({ input: '1', cachedInputAudio: '-1' }))).toThrow(/cachedInputAudio/);
  });
});

describe('Gemini responses with audio read from the cache, by the seeded list prices', () => {
  const price = (model: string, at: string) => priceInForce(LIST_PRICES, 'google', model, new Date(at))!;

  it('normalizes the cached audio beside the uncached audio', () => {
    expect(gemini()).toMatchObject({ inputTokens: 10_000, cachedInputTokens: 6000, outputTokens: 200, details: { input_audio_tokens: 3000, cached_audio_tokens: 5000, cached_text_tokens: 1000 } });
  });

  it('Gemini 2.5 Flash: cached audio at $0.25 from GA, $0.10 after the cache-read cut', () => {
    expect(price('gemini-2.5-flash', '2025-07-01T00:00:00Z').perMillionTokens).toMatchObject({ cachedInput: '0.075', cachedInputAudio: '0.25' });
    expect(price('gemini-2.5-flash', '2026-06-01T00:00:00Z').perMillionTokens).toMatchObject({ cachedInput: '0.03', cachedInputAudio: '0.1' });
    // 1,000 × 0.30 + 3,000 × 1.00 + 1,000 × 0.075 + 5,000 × 0.25 + 200 × 2.50
    expect(costOf(gemini(), price('gemini-2.5-flash', '2025-07-01T00:00:00Z'))).toBe(usd('0.005125'));
    // 1,000 × 0.30 + 3,000 × 1.00 + 1,000 × 0.03 + 5,000 × 0.10 + 200 × 2.50
    expect(costOf(gemini(), price('gemini-2.5-flash', '2026-06-01T00:00:00Z'))).toBe(usd('0.00433'));
  });

  it('Gemini 2.0 Flash: cached audio at $0.175', () => {
    expect(price('gemini-2.0-flash', '2025-07-01T00:00:00Z').perMillionTokens).toMatchObject({ cachedInput: '0.025', cachedInputAudio: '0.175' });
    // 1,000 × 0.10 + 3,000 × 0.70 + 1,000 × 0.025 + 5,000 × 0.175 + 200 × 0.40
    expect(costOf(gemini('gemini-2.0-flash'), price('gemini-2.0-flash', '2025-07-01T00:00:00Z'))).toBe(usd('0.00318'));
  });

  it('every seeded cachedInputAudio row is valid and sets the audio rates beside it', () => {
    const rows = LIST_PRICES.filter((p) => p.perMillionTokens?.cachedInputAudio != null);
    expect(rows.map((p) => `${p.model}@${p.effectiveFrom.toISOString().slice(0, 10)}`).sort()).toEqual([
      'gemini-2.0-flash-001@2025-02-05', 'gemini-2.0-flash@2025-02-05', 'gemini-2.5-flash@2025-06-17', 'gemini-2.5-flash@2026-04-20',
    ]);
    for (const p of rows) {
      expect(validateProviderPrice(p)).toBe(p);
      expect(p.perMillionTokens?.inputAudio).toBeDefined();
      expect(p.perMillionTokens?.cachedInput).toBeDefined();
    }
  });
});

describe('models.dev import', () => {
  it('models.dev lists no cached-audio rate: an imported row costs cached audio at its cache_read rate', () => {
    const { rows, skipped } = importModelsDev(
      { google: { id: 'google', models: { 'gemini-2.5-flash': { id: 'gemini-2.5-flash', cost: { input: 0.3, output: 2.5, cache_read: 0.03, input_audio: 1 } } } } },
      { effectiveFrom: new Date('2026-06-01T00:00:00Z') },
    );
    expect(skipped).toEqual([]);
    expect(rows[0]!.perMillionTokens).toEqual({ input: '0.3', output: '2.5', cachedInput: '0.03', inputAudio: '1' });
    expect(costOf(gemini(), rows[0]!)).toBe(usd('0.00398'));
  });
});

describe('price rows through GraphQL and pricing as code', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server?.close());

  const SET_PRICE = `mutation ($input: SetProviderPriceInput!) { setProviderPrice(input: $input) { ref rates } }`;
  const rates = { perMillionTokens: { input: '0.30', cachedInput: '0.030', inputAudio: '1.00', cachedInputAudio: '0.100', output: '2.50' } };
  const canonical = { perMillionTokens: { input: '0.3', cachedInput: '0.03', inputAudio: '1', cachedInputAudio: '0.1', output: '2.5' } };

  it('setProviderPrice stores cachedInputAudio like the other audio rates and costs by it', async () => {
    const merchant = await server.createMerchant();
    const answer = await server.graphql<any>(SET_PRICE, { input: { provider: 'google', model: 'gemini-x', rates, effectiveFrom: '2026-01-01T00:00:00.000Z' } }, merchant.secret);
    expect(answer.errors).toBeUndefined();
    expect(answer.data.setProviderPrice.rates).toEqual(canonical);
    const stored = await server.services.providerPrices.priceFor(merchant.id, 'google', 'gemini-x', new Date('2026-06-01T00:00:00Z'));
    expect(stored?.perMillionTokens).toEqual(canonical.perMillionTokens);
    expect(costOf(usage({ inputTokens: 10_000, cachedInputTokens: 6000, outputTokens: 200, details: { input_audio_tokens: 3000, cached_audio_tokens: 5000 } }), stored!)).toBe(usd('0.00433'));

    const typo = await server.graphql<any>(SET_PRICE, { input: { provider: 'google', model: 'gemini-y', rates: { perMillionTokens: { input: '1', cachedInputAudio: 'x' } } } }, merchant.secret);
    expect(typo.errors?.[0]).toMatchObject({ extensions: { code: 'VALIDATION', field: 'price.perMillionTokens.cachedInputAudio' } });
  });

  it('a pricing file may set cachedInputAudio', async () => {
    const merchant = await server.createMerchant();
    const file = { providerPrices: [{ provider: 'google', model: 'gemini-x', ...rates }] };
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, file));
    // A version without a date takes effect from the moment it is applied.
    const stored = await server.services.providerPrices.priceFor(merchant.id, 'google', 'gemini-x', new Date(Date.now() + 60_000));
    expect(stored?.perMillionTokens).toEqual(canonical.perMillionTokens);
    // The same file again changes nothing: the rate compares by value, however it is written.
    expect(await planPricingConfig(server.services, merchant.id, file)).toEqual([]);
    const rewritten = { providerPrices: [{ provider: 'google', model: 'gemini-x', perMillionTokens: { ...rates.perMillionTokens, cachedInputAudio: '0.1' } }] };
    expect(await planPricingConfig(server.services, merchant.id, rewritten)).toEqual([]);
    const changed = { providerPrices: [{ provider: 'google', model: 'gemini-x', perMillionTokens: { ...rates.perMillionTokens, cachedInputAudio: '0.2' } }] };
    const plan = await planPricingConfig(server.services, merchant.id, changed);
    expect(plan).toMatchObject([{ kind: 'add-price' }]);
    expect(plan[0]).toHaveProperty('to', expect.stringContaining('"cachedInputAudio":"0.2"'));
  });
});
