import { describe, expect, it } from 'vitest';
import { blankUsage } from '../usage/usage.types.ts';
import { canonicalProviderId } from '../usage/normalize/index.ts';
import { costOf, priceInForce, type ProviderPrice } from './cost.ts';
import { importModelsDevJson } from './models-dev.ts';
import { resolvePrice, type PriceWithRef } from './prices.service.ts';
import { ruleTargetsEvent, selectRule } from './rules.ts';

const effectiveFrom = new Date('2026-06-01T00:00:00Z');
const at = new Date('2026-07-01T00:00:00Z');

describe('a models.dev import prices the calls of the provider it names', () => {
  it('Novita AI (models.dev "novita-ai") is imported under the id usage reports for api.novita.ai, "novita"', () => {
    // models.dev's provider id for Novita AI is "novita-ai" (providers/novita-ai, api https://api.novita.ai/openai);
    // Tollgate's registry calls the provider of api.novita.ai "novita".
    const file = JSON.stringify({ 'novita-ai': { id: 'novita-ai', models: { 'meta-llama/llama-3.3-70b-instruct': { cost: { input: 0.135, output: 0.4 } } } } });
    const { rows, skipped } = importModelsDevJson(file, { effectiveFrom });
    expect(skipped).toEqual([]);
    const reported = canonicalProviderId('novita');
    expect(rows.map((row) => `${canonicalProviderId(row.provider)}/${row.model}`)).toEqual([`${reported}/meta-llama/llama-3.3-70b-instruct`]);
    // So the imported row costs a call Novita served: 1M input tokens at $0.135.
    const priced = resolvePrice(rows.map((row, index) => ({ ...row, ref: `row-${index}` }) as PriceWithRef), reported, 'meta-llama/llama-3.3-70b-instruct', at);
    expect(priced).not.toBeNull();
    expect(costOf(blankUsage({ provider: reported, model: 'meta-llama/llama-3.3-70b-instruct', inputTokens: 1_000_000 }), priced!)).toBe(135_000_000_000_000_000n);
  });

  it('Zhipu AI (models.dev "zhipuai", api https://open.bigmodel.cn/api/paas/v4) is imported under "zhipu", the provider of open.bigmodel.cn; Z.ai ("zai") too', () => {
    const file = JSON.stringify({
      zhipuai: { id: 'zhipuai', models: { 'glm-4.6': { cost: { input: 0.6, output: 2.2 } } } },
      zai: { id: 'zai', models: { 'glm-4.5-air': { cost: { input: 0.2, output: 1.1 } } } },
    });
    const { rows, skipped } = importModelsDevJson(file, { effectiveFrom });
    expect(skipped).toEqual([]);
    expect(rows.map((row) => `${canonicalProviderId(row.provider)}/${row.model}`).sort()).toEqual(['zhipu/glm-4.5-air', 'zhipu/glm-4.6']);
    expect(canonicalProviderId('zhipuai')).toBe('zhipu');
    const priced = resolvePrice(rows.map((row, index) => ({ ...row, ref: `row-${index}` }) as PriceWithRef), 'zhipu', 'glm-4.6', at);
    expect(costOf(blankUsage({ provider: 'zhipu', model: 'glm-4.6', outputTokens: 1_000_000 }), priced!)).toBe(2_200_000_000_000_000_000n);
  });

  it('"novita-ai" names Novita wherever a provider is named (rows imported before the mapping, setProviderPrice, config files)', () => {
    expect(canonicalProviderId('novita-ai')).toBe('novita');
    expect(canonicalProviderId('Novita-AI')).toBe('novita');
  });
});

describe('a rule aimed at a model matches a cloud\'s resale of it as the price row that costs it does', () => {
  // Bedrock names Claude "[region.]anthropic.<model>-v1:0" and is costed at Anthropic's row for
  // <model> (README: "Vertex AI, Bedrock and Azure OpenAI fall back to the model maker's list
  // price"); "a model is matched as price rows match it", as Vertex AI's "claude-haiku-4-5@20251001" is.
  const haiku = 'claude-haiku-4-5';
  const rules = [
    { id: 'meter', meter: 'tokens' },
    { id: 'anthropic', meter: 'tokens', provider: 'anthropic' },
    { id: 'haiku', meter: 'tokens', model: haiku },
  ];
  const pick = (provider: string, model: string, more: { id: string; meter: string; model: string }[] = []) =>
    selectRule([...rules, ...more], { meter: 'tokens', provider, model })?.id ?? null;

  it('the rule for the model prices Bedrock\'s Claude, whose cost is the row of that name', () => {
    for (const model of ['us.anthropic.claude-haiku-4-5-20251001-v1:0', 'anthropic.claude-haiku-4-5-20251001-v1:0', 'eu.anthropic.claude-haiku-4-5-v1']) {
      expect(resolvePrice([], 'bedrock', model, at)?.model, model).toBe(haiku);
      expect(pick('bedrock', model), model).toBe('haiku');
      expect(ruleTargetsEvent({ provider: null, model: haiku }, { provider: 'bedrock', model }), model).toBe(true);
    }
    // As on Vertex AI, where the same rule already prices the model.
    expect(resolvePrice([], 'vertex', 'claude-haiku-4-5@20251001', at)?.model).toBe(haiku);
    expect(pick('vertex', 'claude-haiku-4-5@20251001')).toBe('haiku');
  });

  it('below a rule naming Bedrock\'s id whole, and a dated name above the undated one; other models stay unmatched', () => {
    const model = 'us.anthropic.claude-haiku-4-5-20251001-v1:0';
    expect(pick('bedrock', model, [{ id: 'whole', meter: 'tokens', model }])).toBe('whole');
    expect(pick('bedrock', model, [{ id: 'dated', meter: 'tokens', model: 'claude-haiku-4-5-20251001' }])).toBe('dated');
    expect(pick('bedrock', 'us.anthropic.claude-sonnet-4-6-v1:0')).toBe('meter');
    expect(pick('bedrock', 'amazon.nova-pro-v1:0')).toBe('meter');
  });
});

describe('a cloud\'s own row for a model it resells matches as a rule for that name does', () => {
  it('a Bedrock row named as the maker names the model prices Bedrock\'s id for it, below a row naming the id whole', () => {
    const model = 'us.anthropic.claude-haiku-4-5-20251001-v1:0';
    const row = (name: string, input: string): ProviderPrice => ({ provider: 'bedrock', model: name, currency: 'USD', effectiveFrom, perMillionTokens: { input, output: '5' } });
    // A deployment dearer than Anthropic's list price, as a Vertex AI row for "claude-haiku-4-5" prices "claude-haiku-4-5@20251001".
    expect(priceInForce([row('claude-haiku-4-5', '1.1')], 'bedrock', model, at, ['anthropic'])?.model).toBe('claude-haiku-4-5');
    expect(priceInForce([row('claude-haiku-4-5', '1.1')], 'vertex', 'claude-haiku-4-5@20251001', at, ['anthropic'])).toBeNull(); // another provider's row
    expect(priceInForce([{ ...row('claude-haiku-4-5', '1.1'), provider: 'vertex' }], 'vertex', 'claude-haiku-4-5@20251001', at, ['anthropic'])?.model).toBe('claude-haiku-4-5');
    const rows = [row('claude-haiku-4-5', '1.1'), row('claude-haiku-4-5-20251001', '1.2'), row(model, '1.3')];
    expect(priceInForce(rows, 'bedrock', model, at, ['anthropic'])?.model).toBe(model);
    expect(priceInForce(rows.slice(0, 2), 'bedrock', model, at, ['anthropic'])?.model).toBe('claude-haiku-4-5-20251001');
    // resolvePrice takes the merchant's Bedrock row over Anthropic's list price, and a rule of each name is chosen as the row is.
    const own = rows.map((price, index) => ({ ...price, ref: `r${index}` }) as PriceWithRef);
    for (const count of [1, 2, 3]) {
      const found = resolvePrice(own.slice(0, count), 'bedrock', model, at);
      const rule = selectRule(own.slice(0, count).map((price) => ({ id: price.model, meter: 'tokens', model: price.model })), { meter: 'tokens', provider: 'bedrock', model });
      expect(rule?.id).toBe(found?.model);
    }
  });
});
