import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { applyPricingChanges, describeChanges, loadPricingConfig, planPricingConfig, unlistedByFile, type PricingConfig } from './config-apply.ts';

/** Pricing as code as a user edits a file over time: what a review found. */

const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-review-'));
const write = (name: string, text: string) => {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
};
const refusal = (promise: Promise<unknown>) => promise.then(() => null, (caught: unknown) => caught as Error & { code?: string; details?: Record<string, unknown> });

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const markup = (name: string, percent: string, provider?: string) => ({ name, type: 'MARKUP' as const, ...(provider ? { provider } : {}), config: { percent } });

describe('pricing files: what a file stops listing', () => {
  it('a rule, plan or meter removed from the file keeps pricing, and the diff names it instead of saying the merchant matches the file', async () => {
    const merchant = await server.createMerchant();
    const before: PricingConfig = {
      meters: [
        { key: 'output_tokens', name: 'Output tokens', unit: 'token', source: 'OUTPUT_TOKENS' },
        { key: 'images', name: 'Images', unit: 'image', source: 'IMAGES' },
      ],
      priceRules: [markup('markup', '25'), markup('promo', '5', 'openai')],
      plans: [
        { key: 'pro', name: 'Pro', priceRules: [markup('pro markup', '10'), markup('pro openai', '2', 'openai')] },
        { key: 'legacy', name: 'Legacy', priceRules: [markup('legacy markup', '40')] },
      ],
    };
    await applyPricingChanges(server.services, merchant.id, await planPricingConfig(server.services, merchant.id, before));
    // Archived through the API: no longer in force, so not named.
    await server.services.meters.create(merchant.id, { key: 'old', name: 'Old', unit: 'x', source: 'REQUESTS' });
    await server.services.meters.archive(merchant.id, 'old');

    const after: PricingConfig = {
      meters: [before.meters![0]!],
      priceRules: [markup('markup', '25')],
      plans: [{ key: 'pro', name: 'Pro', priceRules: [markup('pro markup', '10')] }],
    };
    const changes = await planPricingConfig(server.services, merchant.id, after);
    expect(changes).toEqual([]);
    const unlisted = await unlistedByFile(server.services, merchant.id, after);
    expect(unlisted).toEqual(['meter images', 'rule "promo"', 'plan legacy', 'rule "pro/pro openai"']);
    const text = describeChanges(changes, unlisted);
    expect(text).not.toContain('matches the file');
    expect(text).toContain('No changes');
    expect(text).toContain('Not in the file, left as they are');
    expect(text).toContain('  rule "promo"');
    // Applying changes nothing: promo still prices, as the diff says.
    expect((await server.services.priceRules.allVersions(merchant.id)).map((rule) => rule.name)).toContain('promo');

    // Once archived, it is no longer named.
    await server.services.priceRules.archive(merchant.id, 'promo');
    expect(await unlistedByFile(server.services, merchant.id, after)).not.toContain('rule "promo"');
    // A file that lists everything has nothing to name.
    expect(await unlistedByFile(server.services, merchant.id, { ...before, meters: before.meters, priceRules: [markup('markup', '25')] })).toEqual([]);
  });
});

describe('pricing files: a number where text is wanted', () => {
  it('a YAML plan key written as a number is refused as text to quote, not as a key of digits that is not one', async () => {
    const merchant = await server.createMerchant();
    const config = await loadPricingConfig(write('numeric-key.yaml', 'plans:\n  - { key: 2025, name: Plan 2025 }\n'));
    const error = await refusal(planPricingConfig(server.services, merchant.id, config));
    expect(error).toMatchObject({ code: 'VALIDATION', details: { field: 'plans.0.key' } });
    expect(error!.message).toBe('plans.0.key: must be text (in YAML, put a number-like value in quotes)');
    // Quoted, it is the key it reads as.
    const quoted = await loadPricingConfig(write('quoted-key.yaml', 'plans:\n  - { key: "2025", name: Plan 2025 }\n'));
    expect((await planPricingConfig(server.services, merchant.id, quoted)).map((change) => `${change.kind} ${change.key}`)).toEqual(['create-plan 2025']);
  });
});
