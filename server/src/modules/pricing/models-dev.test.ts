import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../shared/errors.ts';
import { parseDecimalAttos } from '../../shared/money.ts';
import type { NormalizedUsage } from '../usage/usage.types.ts';
import { costOf, priceInForce, validateProviderPrice } from './cost.ts';
import { definitionForName } from '../usage/normalize/registry.ts';
import { decimalFromJsonNumber, importModelsDev, importModelsDevJson, MODELS_DEV_PROVIDER_IDS } from './models-dev.ts';
import { resolvePrice, type PriceWithRef } from './prices.service.ts';
import { blankUsage } from '../usage/usage.types.ts';

const SAMPLE = readFileSync(new URL('./models-dev.sample.json', import.meta.url), 'utf8');
const effectiveFrom = new Date('2026-06-01T00:00:00Z');

describe('decimalFromJsonNumber', () => {
  it('prints JSON numbers as plain decimals with no float artefacts', () => {
    const cases: [number, string][] = [
      [0.15, '0.15'], [0.075, '0.075'], [0.0028, '0.0028'], [2.5, '2.5'], [15, '15'], [0, '0'],
      [1.25e-7, '0.000000125'], [1e-7, '0.0000001'], [3e-18, '0.000000000000000003'], [1e21, '1000000000000000000000'],
      [123456.789, '123456.789'], [0.1 + 0.2, '0.30000000000000004'],
    ];
    for (const [value, text] of cases) expect(decimalFromJsonNumber(value), String(value)).toBe(text);
    expect(decimalFromJsonNumber(-1)).toBeNull();
    expect(decimalFromJsonNumber(Number.NaN)).toBeNull();
    expect(decimalFromJsonNumber(Number.POSITIVE_INFINITY)).toBeNull();
  });

  it('property: any decimal with up to 15 significant digits survives JSON text → number → string', () => {
    fc.assert(
      fc.property(fc.nat({ max: 999_999 }), fc.nat({ max: 999_999_999 }), fc.integer({ min: 0, max: 9 }), (whole, fraction, shift) => {
        // whole.fraction scaled down by 10^shift, written as the file would (plain or exponent form)
        const digits = `${whole}${String(fraction).padStart(9, '0')}`;
        const scale = 9 + shift;
        const padded = digits.padStart(scale + 1, '0');
        const plain = `${padded.slice(0, -scale)}.${padded.slice(-scale)}`.replace(/0+$/, '').replace(/\.$/, '').replace(/^0+(?=\d)/, '');
        const exponentForm = `${BigInt(digits)}e-${scale}`;
        expect(decimalFromJsonNumber(JSON.parse(plain) as number)).toBe(plain);
        expect(decimalFromJsonNumber(JSON.parse(exponentForm) as number)).toBe(plain);
        expect(parseDecimalAttos('x', decimalFromJsonNumber(Number(plain))!)).toBe(parseDecimalAttos('x', plain));
      }),
    );
  });
});

describe('importModelsDev', () => {
  const imported = importModelsDevJson(SAMPLE, { effectiveFrom });
  const find = (provider: string, model: string) => imported.rows.find((r) => r.provider === provider && r.model === model);

  it('imports every well-formed model as a ProviderPrice row with exact decimal rates', () => {
    expect(imported.rows.map((r) => `${r.provider}/${r.model}`).sort()).toEqual([
      'acme/acme/tiny-1',
      'anthropic/claude-opus-4-8',
      'anthropic/claude-sonnet-4-6',
      'deepseek/deepseek-v4-flash',
      'google/gemini-2.5-flash',
      'google/gemini-3.8-flash',
      'openai/gpt-4o-audio-preview',
      'openai/gpt-5.4',
      'openai/gpt-5.4-mini',
      'openai/text-embedding-3-small',
      'openai/whisper-1',
    ]);
    for (const row of imported.rows) {
      expect(validateProviderPrice(row)).toBe(row);
      expect(row.currency).toBe('USD');
      expect(row.effectiveFrom).toBe(effectiveFrom);
    }
    expect(find('openai', 'gpt-5.4-mini')?.perMillionTokens).toEqual({ input: '0.75', output: '4.5', cachedInput: '0.075' });
    expect(find('deepseek', 'deepseek-v4-flash')?.perMillionTokens).toEqual({ input: '0.14', output: '0.28', cachedInput: '0.0028' });
    // Claude's 1-hour cache writes, which models.dev does not list, at twice the input rate.
    expect(find('anthropic', 'claude-opus-4-8')?.perMillionTokens).toEqual({ input: '5', output: '25', cachedInput: '0.5', cacheWrite: '6.25', cacheWrite1h: '10' });
    expect(find('openai', 'gpt-4o-audio-preview')?.perMillionTokens).toEqual({ input: '2.5', output: '10', inputAudio: '40', outputAudio: '80' });
    expect(find('acme', 'acme/tiny-1')?.perMillionTokens).toEqual({ input: '0.000000125', output: '0.0000002' });
    expect(find('openai', 'whisper-1')?.perAudioMinute).toBe('0.006');
  });

  it('long-context prices: tiers win over the legacy context_over_200k; alone, that one is a tier at 200K', () => {
    expect(find('openai', 'gpt-5.4')?.contextTiers).toEqual([
      { aboveInputTokens: 272_000, perMillionTokens: { input: '5', output: '22.5', cachedInput: '0.5' } },
    ]);
    expect(find('anthropic', 'claude-sonnet-4-6')?.contextTiers).toEqual([
      { aboveInputTokens: 200_000, perMillionTokens: { input: '6', output: '22.5', cachedInput: '0.6', cacheWrite: '7.5', cacheWrite1h: '12' } },
    ]);
    expect(find('openai', 'gpt-5.4-mini')?.contextTiers).toBeUndefined();
  });

  it('skips malformed or unsupported entries with a path and a reason, keeping the rest', () => {
    const reasons = Object.fromEntries(imported.skipped.map((s) => [s.path, s.reason]));
    expect(reasons).toEqual({
      '/openai/models/gpt-image-1.5/cost': 'has no cost',
      '/deepseek/models/deepseek-v4-pro/cost/tiers/0/tier/type': '"conditional" tiers (by output, time of day…) are not supported',
      '/moonshotai-cn/models/kimi-k2.6/cost': 'has only CNY prices (cost_cn); only USD is imported',
      '/acme/models/negative/cost/input': 'must not be negative, got -1',
      '/acme/models/stringy/cost/input': 'must be a number (USD per million), got "0.15"',
      '/acme/models/no-output/cost/output': 'is required',
      '/acme/models/too-precise/cost/input': '0.00000000000000000015 has more than 18 decimal places',
      '/acme/models/per-image/cost/per_image': 'unknown price key "per_image"',
      '/acme/models/bad-tier/cost/tiers/0/tier/size': 'must be a whole number of tokens',
      '/acme/models/not-an-object': 'must be an object',
      '/broken': 'is not a provider with a "models" object',
    });
  });

  it('imported rows price the shared fixtures exactly', () => {
    const usage = (model: string, input: number, cached: number, output: number, extra: Partial<NormalizedUsage> = {}): NormalizedUsage => ({
      provider: 'x', api: 'x', model, inputTokens: input, cachedInputTokens: cached, cacheWriteTokens: 0, outputTokens: output,
      reasoningTokens: 0, audioSeconds: null, characters: 0, images: 0, requests: 1, details: {}, providerReportedCostUsd: null,
      billable: true, incomplete: false, streamedText: null, ...extra,
    });
    const at = new Date('2026-09-01T00:00:00Z');
    const cost = (provider: string, record: NormalizedUsage) => costOf(record, priceInForce(imported.rows, provider, record.model!, at)!);
    expect(cost('openai', usage('gpt-5.4-mini-2026-03-17', 2471, 1920, 612))).toBe(parseDecimalAttos('x', '0.00331125'));
    expect(cost('openai', usage('gpt-5.4', 5380, 4864, 1129))).toBe(parseDecimalAttos('x', '0.019441'));
    expect(cost('openai', usage('text-embedding-3-small', 17, 0, 0))).toBe(parseDecimalAttos('x', '0.00000034'));
    expect(cost('openai', usage('whisper-1', 0, 0, 0, { audioSeconds: '43' }))).toBe(parseDecimalAttos('x', '0.0043'));
    expect(cost('anthropic', usage('claude-opus-4-8', 24762, 21504, 503, { cacheWriteTokens: 3072 }))).toBe(parseDecimalAttos('x', '0.043457'));
    expect(cost('anthropic', usage('claude-sonnet-4-6', 16540, 14336, 689))).toBe(parseDecimalAttos('x', '0.0212478'));
    expect(cost('google', usage('gemini-3.8-flash', 14212, 12288, 1305))).toBe(parseDecimalAttos('x', '0.00725835'));
    expect(cost('deepseek', usage('deepseek-v4-flash', 1315, 1280, 487))).toBe(parseDecimalAttos('x', '0.000144844'));
  });

  it('Claude served by Anthropic, Vertex AI or Bedrock writes 1-hour caches at 2× input, long context too; other models get no such rate', () => {
    const file = JSON.stringify({ anthropic: { models: { 'claude-opus-4-8': { cost: { input: 5, output: 25, cache_read: 0.5, cache_write: 6.25 } } } } });
    const { rows } = importModelsDevJson(file, { effectiveFrom: new Date('2026-05-01T00:00:00Z') });
    // Imported over the list row that had the 1-hour rate: it replaces that row for this merchant.
    const imported = resolvePrice(rows.map((row) => ({ ...row, ref: 'imported' })) as PriceWithRef[], 'anthropic', 'claude-opus-4-8', new Date('2026-06-01T00:00:00Z'))!;
    expect(imported.ref).toBe('imported');
    const usage: NormalizedUsage = { ...blankUsage(), provider: 'anthropic', model: 'claude-opus-4-8', inputTokens: 1_000_000, cacheWriteTokens: 1_000_000, details: { cache_write_1h_tokens: 1_000_000 }, billable: true };
    // 1M 1-hour writes × $10, not the 5-minute $6.25.
    expect(costOf(usage, imported)).toBe(parseDecimalAttos('x', '10'));

    const cost = (input: number) => ({ cost: { input, output: input * 5, cache_write: input * 1.25, tiers: [{ input: input * 2, output: input * 7.5, tier: { type: 'context', size: 200_000 } }] } });
    const resold = importModelsDev({
      'google-vertex-anthropic': { models: { 'claude-sonnet-4-6@20260101': cost(3) } },
      'google-vertex': { models: { 'gemini-2.5-flash': cost(0.3) } },
      'amazon-bedrock': { models: { 'us.anthropic.claude-haiku-4-5-20251001-v1:0': cost(1), 'meta.llama3-70b-instruct-v1:0': cost(0.99) } },
      openai: { models: { 'gpt-x': cost(1.1) } },
    }, { effectiveFrom });
    expect(resold.skipped).toEqual([]);
    expect(resold.rows.map((row) => [row.model, row.perMillionTokens?.cacheWrite1h, row.contextTiers?.[0]?.perMillionTokens.cacheWrite1h])).toEqual([
      ['claude-sonnet-4-6@20260101', '6', '12'],
      ['gemini-2.5-flash', undefined, undefined],
      ['us.anthropic.claude-haiku-4-5-20251001-v1:0', '2', '4'],
      ['meta.llama3-70b-instruct-v1:0', undefined, undefined],
      ['gpt-x', undefined, undefined],
    ]);
  });

  it('skips a Claude too dear for its derived 1-hour cache write with that reason, not one that names a field the file lacks', () => {
    const dear = 600_000_000_000;
    const { rows, skipped } = importModelsDev({
      anthropic: { models: { 'claude-dear': { cost: { input: dear, output: 1 } }, 'claude-long': { cost: { input: 1, output: 1, context_over_200k: { input: dear, output: 1 } } } } },
      // Any other model keeps the whole 12 digits a price may have.
      openai: { models: { 'gpt-dear': { cost: { input: dear, output: 1 } } } },
    }, { effectiveFrom });
    expect(rows.map((row) => row.model)).toEqual(['gpt-dear']);
    expect(skipped.map((skip) => skip.path)).toEqual(['/anthropic/models/claude-dear/cost', '/anthropic/models/claude-long/cost']);
    for (const { reason } of skipped) expect(reason).toBe(`input ${dear} USD per million is too large: Claude's 1-hour cache write, which Tollgate adds at twice the input rate, would be ${2 * dear}, and a price has at most 12 digits before the decimal point`);
  });

  it('reads a rate by the digits the file wrote when a double would change it, and skips one no price can hold', () => {
    const file = `{ "acme": { "models": {
      "tiny": { "cost": { "input": 1e-400, "output": 1 } },
      "below-zero": { "cost": { "input": -1e-400, "output": 1 } },
      "huge": { "cost": { "input": 1, "output": 1e999 } },
      "precise": { "cost": { "input": 1.234567890123456789, "output": 123456789012.12345678 } },
      "tiered": { "cost": { "input": 1, "output": 1, "tiers": [{ "input": 2, "output": 2, "tier": { "type": "context", "size": 200000.0000000000000000001 } }] } },
      "repeated": { "cost": { "input": 1e-400, "output": 1, "input": 0.25 } }
    } } }`;
    const { rows, skipped } = importModelsDevJson(file, { effectiveFrom });
    // JSON.parse alone reads 1e-400 as 0 and -1e-400 as -0, and rounds the precise ones to 17 digits.
    expect(skipped).toEqual([
      { path: '/acme/models/tiny/cost/input', reason: '1e-400 has more than 18 decimal places' },
      { path: '/acme/models/below-zero/cost/input', reason: 'must not be negative, got -1e-400' },
      { path: '/acme/models/huge/cost/output', reason: '1e999 is too large' },
      { path: '/acme/models/tiered/cost/tiers/0/tier/size', reason: 'must be a whole number of tokens' },
    ]);
    expect(rows.map((row) => [row.model, row.perMillionTokens])).toEqual([
      ['precise', { input: '1.234567890123456789', output: '123456789012.12345678' }],
      // The last of a repeated key holds, as JSON.parse reads it.
      ['repeated', { input: '0.25', output: '1' }],
    ]);
  });

  it('filters and renames providers; unwraps { providers: … }', () => {
    const document = JSON.parse(SAMPLE) as Record<string, unknown>;
    const only = importModelsDev({ providers: document }, { effectiveFrom, providers: ['google'], providerIds: { google: 'gemini' } });
    expect(only.rows.map((r) => `${r.provider}/${r.model}`).sort()).toEqual(['gemini/gemini-2.5-flash', 'gemini/gemini-3.8-flash']);
    expect(only.skipped).toEqual([]);
    const merged = importModelsDev(
      { a: { models: { m: { cost: { input: 1, output: 1 } } } }, b: { models: { M: { cost: { input: 2, output: 2 } } } } },
      { effectiveFrom, providerIds: { a: 'same', b: 'same' } },
    );
    expect(merged.rows).toHaveLength(1);
    expect(merged.skipped).toEqual([{ path: '/b/models/M', reason: 'repeats same/M, already imported from /a/models/m' }]);
  });

  it('reads a provider id written in capitals; an empty tiers list keeps the context_over_200k premium; providers beside a wrapped table are reported', () => {
    const capitals = importModelsDev({ TogetherAI: { models: { m: { cost: { input: 1, output: 2 } } } } }, { effectiveFrom });
    expect(capitals.rows.map((row) => row.provider)).toEqual(['together']);
    const premium = importModelsDev({ openai: { models: { m: { cost: { input: 3, output: 15, tiers: [], context_over_200k: { input: 6, output: 22.5 } } } } } }, { effectiveFrom });
    expect(premium.rows[0]!.contextTiers).toEqual([{ aboveInputTokens: 200_000, perMillionTokens: { input: '6', output: '22.5' } }]);
    const beside = importModelsDev({ providers: { openai: { models: { m: { cost: { input: 1, output: 1 } } } } }, anthropic: { models: {} } }, { effectiveFrom });
    expect(beside.rows.map((row) => row.provider)).toEqual(['openai']);
    expect(beside.skipped).toEqual([{ path: '/anthropic', reason: expect.stringContaining('outside the "providers" object') }]);
  });

  it('imports models.dev provider ids under the ids usage reports, so the rows price calls', () => {
    const rates = { cost: { input: 1, output: 2 } };
    const document = Object.fromEntries(
      ['togetherai', 'fireworks-ai', 'google-vertex', 'google-vertex-anthropic', 'amazon-bedrock', 'azure', 'moonshotai', 'groq', 'constructor'].map((id) => [id, { models: { [`${id}-model`]: rates } }]),
    );
    const rows = importModelsDev(document, { effectiveFrom }).rows.map((row) => `${row.provider}/${row.model}`);
    expect(rows).toEqual([
      'together/togetherai-model', 'fireworks/fireworks-ai-model', 'vertex/google-vertex-model', 'vertex/google-vertex-anthropic-model', 'bedrock/amazon-bedrock-model',
      'azure-openai/azure-model', 'moonshot/moonshotai-model', 'groq/groq-model', 'constructor/constructor-model',
    ]);
    // An explicit rename still wins.
    expect(importModelsDev({ azure: document.azure }, { effectiveFrom, providerIds: { azure: 'my-azure' } }).rows[0]?.provider).toBe('my-azure');
    // Every target is a provider id of the registry itself, not one of its aliases.
    for (const [from, to] of MODELS_DEV_PROVIDER_IDS) expect(definitionForName(to)?.id, from).toBe(to);
  });

  it('skips, with path and reason, ids no price row can store, keeping the rest of the file', () => {
    const cost = { cost: { input: 1, output: 2 } };
    const long = '模'.repeat(3000);
    const result = importModelsDev(
      { acme: { models: { 'a\u0000b': cost, 'a\ud800': cost, [long]: cost, '  ': cost, ok: cost } }, ['p\u0000']: { models: { m: cost } } },
      { effectiveFrom },
    );
    expect(result.rows.map((r) => `${r.provider}/${r.model}`)).toEqual(['acme/ok']);
    expect(result.skipped).toEqual([
      { path: '/acme/models/a\u0000b', reason: 'model id must not contain the NUL character (\\u0000) or an unpaired UTF-16 surrogate' },
      { path: '/acme/models/a\ud800', reason: 'model id must not contain the NUL character (\\u0000) or an unpaired UTF-16 surrogate' },
      { path: `/acme/models/${long}`, reason: 'model id must be at most 255 characters' },
      { path: '/acme/models/  ', reason: 'model id must not be empty' },
      { path: '/p\u0000', reason: 'provider id must not contain the NUL character (\\u0000) or an unpaired UTF-16 surrogate' },
    ]);
  });

  it('skips a model stored under the same row as an earlier one: names are trimmed and providers named by id', () => {
    const cost = (input: number) => ({ cost: { input, output: 2 } });
    const result = importModelsDev({ google: { models: { x: cost(1), 'x ': cost(2) } }, gemini: { models: { X: cost(3) } } }, { effectiveFrom });
    expect(result.rows.map((r) => `${r.provider}/${r.model}/${r.perMillionTokens?.input}`)).toEqual(['google/x/1']);
    expect(result.skipped).toEqual([
      { path: '/google/models/x ', reason: 'repeats google/x , already imported from /google/models/x' },
      { path: '/gemini/models/X', reason: 'repeats gemini/X, already imported from /google/models/x' },
    ]);
  });

  it('skips a context tier from 0 tokens, and refuses an effectiveFrom past the year 9999', () => {
    const tiers = [{ input: 2, output: 4, tier: { type: 'context', size: 0 } }];
    expect(importModelsDev({ acme: { models: { m: { cost: { input: 1, output: 2, tiers } } } } }, { effectiveFrom }).skipped).toEqual([
      { path: '/acme/models/m/cost/tiers/0/tier/size', reason: 'must be above 0 tokens: a tier from the first token would replace the base price' },
    ]);
    expect(() => importModelsDev({}, { effectiveFrom: new Date('+010000-01-01T00:00:00Z') })).toThrow(/effectiveFrom/);
  });

  it('rejects only a file that is not a price table at all, as a VALIDATION error', () => {
    for (const [input, field] of [['[1, 2]', 'file'], ['{"openai": ', 'file']] as const) {
      try {
        importModelsDevJson(input, { effectiveFrom });
        throw new Error('expected a VALIDATION error');
      } catch (error) {
        expect(error).toBeInstanceOf(AppError);
        expect((error as AppError).details.field).toBe(field);
      }
    }
    expect(() => importModelsDev({}, { effectiveFrom: new Date('nope') })).toThrow(/effectiveFrom/);
    expect(importModelsDev({}, { effectiveFrom })).toEqual({ rows: [], skipped: [] });
  });
});
