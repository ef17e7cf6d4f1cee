import type { ProviderPrice } from './cost.ts';

/**
 * List prices that ship with Tollgate (USD, standard tier), used when a merchant has no row of
 * its own for a model. Source: the providers' published price pages as of 2026-11 (the same
 * table the provider fixtures in shared/fixtures are costed with). Merchants add and override
 * rows through GraphQL or a models.dev file; rows here are never edited in place — a price
 * change is a new row with a later effectiveFrom, so history stays.
 */
const SINCE_2026 = new Date('2026-01-01T00:00:00Z');

const row = (provider: string, model: string, rest: Partial<ProviderPrice>): ProviderPrice => ({
  provider,
  model,
  currency: 'USD',
  effectiveFrom: SINCE_2026,
  ...rest,
});

export const LIST_PRICES: readonly ProviderPrice[] = [
  row('openai', 'gpt-5.4', {
    perMillionTokens: { input: '2.50', cachedInput: '0.25', output: '15.00' },
    contextTiers: [{ aboveInputTokens: 272_000, perMillionTokens: { input: '5.00', cachedInput: '0.50', output: '22.50' } }],
  }),
  row('openai', 'gpt-5.4-mini', { perMillionTokens: { input: '0.75', cachedInput: '0.075', output: '4.50' } }),
  row('openai', 'gpt-5.6-sol', {
    perMillionTokens: { input: '5.00', cachedInput: '0.50', cacheWrite: '6.25', output: '30.00' },
    contextTiers: [{ aboveInputTokens: 272_000, perMillionTokens: { input: '10.00', cachedInput: '1.00', cacheWrite: '12.50', output: '45.00' } }],
  }),
  row('openai', 'text-embedding-3-small', { perMillionTokens: { input: '0.02' } }),
  row('openai', 'text-embedding-3-large', { perMillionTokens: { input: '0.13' } }),
  row('openai', 'whisper-1', { perAudioMinute: '0.006' }),
  row('anthropic', 'claude-opus-4-8', { perMillionTokens: { input: '5.00', cachedInput: '0.50', cacheWrite: '6.25', cacheWrite1h: '10.00', output: '25.00' } }),
  row('anthropic', 'claude-sonnet-4-6', { perMillionTokens: { input: '3.00', cachedInput: '0.30', cacheWrite: '3.75', cacheWrite1h: '6.00', output: '15.00' } }),
  row('anthropic', 'claude-haiku-4-5', { perMillionTokens: { input: '1.00', cachedInput: '0.10', cacheWrite: '1.25', cacheWrite1h: '2.00', output: '5.00' } }),
  row('google', 'gemini-3.8-flash', { perMillionTokens: { input: '0.75', cachedInput: '0.075', output: '3.75' } }),
  row('google', 'gemini-3.8-flash', {
    effectiveFrom: new Date('2027-01-01T00:00:00Z'),
    perMillionTokens: { input: '1.50', cachedInput: '0.15', output: '7.50' },
  }),
  row('deepseek', 'deepseek-v4-flash', { perMillionTokens: { input: '0.14', cachedInput: '0.028', output: '0.28' } }),
  row('deepseek', 'deepseek-v4-flash', {
    effectiveFrom: new Date('2026-04-26T12:15:00Z'),
    perMillionTokens: { input: '0.14', cachedInput: '0.0028', output: '0.28' },
  }),
];
