import { describe, expect, it } from 'vitest';
import { blankUsage } from '../usage/usage.types.ts';
import { costOf } from './cost.ts';
import { importModelsDev } from './models-dev.ts';
import { resolvePrice, type PriceWithRef } from './prices.service.ts';

const effectiveFrom = new Date('2026-06-01T00:00:00Z');

// models.dev names Vertex AI's undated Claude models "<model>@default"
// (providers/google-vertex-anthropic/models/claude-opus-4-8@default.toml), while Vertex AI calls
// and reports them by the bare id ("claude-opus-4-8"): no "@default" reaches usage.
const VERTEX_OPUS = {
  'google-vertex-anthropic': {
    models: {
      'claude-opus-4-8@default': {
        cost: { input: 5, output: 25, cache_read: 0.5, cache_write: 6.25, tiers: [{ tier: { size: 200_000 }, input: 10, output: 37.5, cache_read: 1, cache_write: 12.5 }] },
      },
    },
  },
};

describe('models.dev "@default" model ids', () => {
  it('are imported under the bare id Vertex AI reports, so the row prices its calls', () => {
    const { rows, skipped } = importModelsDev(VERTEX_OPUS, { effectiveFrom });
    expect(skipped).toEqual([]);
    expect(rows.map((row) => `${row.provider}/${row.model}`)).toEqual(['vertex/claude-opus-4-8']);

    const mine: PriceWithRef[] = rows.map((row) => ({ ...row, ref: 'imported' }));
    const price = resolvePrice(mine, 'vertex', 'claude-opus-4-8', new Date('2026-07-01T00:00:00Z'));
    expect(price?.ref).toBe('imported');
    // Above 200K input tokens Vertex's own tier applies ($10 per million), not Anthropic's flat $5.
    const usage = blankUsage({ provider: 'vertex', model: 'claude-opus-4-8', inputTokens: 300_000, billable: true });
    expect(costOf(usage, price!)).toBe(3n * 10n ** 18n);
  });
});
