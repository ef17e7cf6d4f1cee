import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { refusal } from '../../../test/refusal.ts';

/** Bad price input is a VALIDATION error naming its field: never INTERNAL, never stored altered, never a partial write. */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const SET_PRICE = `mutation ($input: SetProviderPriceInput!) { setProviderPrice(input: $input) { ref provider model rates } }`;
const IMPORT = 'mutation ($json: String!, $from: DateTime) { importModelsDevPrices(json: $json, effectiveFrom: $from) { imported skipped } }';
const from = '2026-01-01T00:00:00.000Z';
const tokens = { perMillionTokens: { input: '1', output: '2' } };

const storedRows = (merchantId: string) => server.services.prisma.providerPrice.findMany({ where: { merchantId }, orderBy: [{ provider: 'asc' }, { model: 'asc' }] });

describe('setProviderPrice refuses, naming the field, and stores nothing', () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['a NUL in a perImageBy key', { provider: 'openai', model: 'dall-e-x', rates: { perImageBy: { 'hd\u0000': '0.1' } } }, 'price.perImageBy'],
    ['a lone surrogate in the model', { provider: 'acme', model: 'a\ud800', rates: tokens }, 'price.model'],
    ['a NUL in the provider', { provider: 'ac\u0000me', model: 'm', rates: tokens }, 'price.provider'],
    ['a model longer than the unique index holds', { provider: 'acme', model: '模'.repeat(3000), rates: tokens }, 'price.model'],
    ['a provider of 256 characters', { provider: 'p'.repeat(256), model: 'm', rates: tokens }, 'price.provider'],
    ['perMillionTokens: null and nothing else', { provider: 'acme', model: 'm', rates: { perMillionTokens: null } }, 'price'],
    ['perMillionTokens: "abc"', { provider: 'acme', model: 'm', rates: { perMillionTokens: 'abc' } }, 'price.perMillionTokens'],
    ['perMillionTokens: ["1"]', { provider: 'acme', model: 'm', rates: { perMillionTokens: ['1'] } }, 'price.perMillionTokens'],
    ['contextTiers: "x"', { provider: 'acme', model: 'm', rates: { ...tokens, contextTiers: 'x' } }, 'price.contextTiers'],
    ['contextTiers: {}', { provider: 'acme', model: 'm', rates: { ...tokens, contextTiers: {} } }, 'price.contextTiers'],
    ['contextTiers: [null]', { provider: 'acme', model: 'm', rates: { ...tokens, contextTiers: [null] } }, 'price.contextTiers.0'],
    ['a tier without perMillionTokens', { provider: 'acme', model: 'm', rates: { ...tokens, contextTiers: [{ aboveInputTokens: 1000 }] } }, 'price.contextTiers.0.perMillionTokens'],
    ['a tier from 0 tokens', { provider: 'acme', model: 'm', rates: { ...tokens, contextTiers: [{ aboveInputTokens: 0, perMillionTokens: { input: '2' } }] } }, 'price.contextTiers.0.aboveInputTokens'],
    ['a typo key', { provider: 'openai', model: 'gpt-4o', rates: { perMilionTokens: { input: '1', output: '2' } } }, 'price.perMilionTokens'],
    ['a typo rate', { provider: 'acme', model: 'm', rates: { perMillionTokens: { inptu: '1' } } }, 'price.perMillionTokens.inptu'],
    ['no rate at all', { provider: 'acme', model: 'm', rates: {} }, 'price'],
    ['a currency other than USD', { provider: 'acme', model: 'm', rates: { ...tokens, currency: 'EUR' } }, 'price.currency'],
    ['a model named inside rates', { provider: 'acme', model: 'm', rates: { ...tokens, model: 'other' } }, 'rates.model'],
    ['an effectiveFrom inside rates', { provider: 'acme', model: 'm', rates: { ...tokens, effectiveFrom: '2030-01-01T00:00:00Z' } }, 'rates.effectiveFrom'],
  ];
  for (const [name, input, field] of cases) {
    it(name, async () => {
      const merchant = await server.createMerchant();
      // Twice: a retry must not store anything either.
      for (let attempt = 0; attempt < 2; attempt += 1) {
        const answer = await server.graphql(SET_PRICE, { input: { ...input, effectiveFrom: from } }, merchant.secret);
        expect(answer.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field });
      }
      expect(await storedRows(merchant.id)).toEqual([]);
    });
  }

  it('a refused typo row leaves the shipped list price in force', async () => {
    const merchant = await server.createMerchant();
    await server.graphql(SET_PRICE, { input: { provider: 'openai', model: 'gpt-4o', rates: { perMilionTokens: { input: '1', output: '2' } }, effectiveFrom: from } }, merchant.secret);
    expect((await server.services.providerPrices.priceFor(merchant.id, 'openai', 'gpt-4o', new Date('2026-06-01')))?.ref).toMatch(/^list:openai\/gpt-4o@/);
  });

  it('a model of 255 characters, and one with a valid surrogate pair, are stored as given', async () => {
    const merchant = await server.createMerchant();
    for (const model of ['m'.repeat(255), 'emoji-😀']) {
      const answer = await server.graphql<any>(SET_PRICE, { input: { provider: 'acme', model, rates: tokens, effectiveFrom: from } }, merchant.secret);
      expect(answer.errors).toBeUndefined();
      expect(answer.data.setProviderPrice.model).toBe(model);
    }
    expect(await storedRows(merchant.id)).toHaveLength(2);
  });

  it('an effectiveFrom past the year 9999 is refused on every path that writes prices', async () => {
    const merchant = await server.createMerchant();
    const prices = server.services.providerPrices;
    const far = new Date('+010000-01-01T00:00:00Z');
    expect(await refusal(prices.add(merchant.id, { provider: 'acme', model: 'm', ...tokens, effectiveFrom: far }))).toMatchObject({ code: 'VALIDATION', details: { field: 'effectiveFrom' } });
    const file = JSON.stringify({ acme: { models: { m: { cost: { input: 1, output: 2 } } } } });
    expect(await refusal(prices.importModelsDev(merchant.id, file, far))).toMatchObject({ code: 'VALIDATION', details: { field: 'effectiveFrom' } });
    expect(await storedRows(merchant.id)).toEqual([]);
    expect(await prices.priceFor(merchant.id, 'acme', 'm', new Date())).toBeNull();
  });
});

describe('importModelsDevPrices with ids no row can store, or that store as the same row', () => {
  it('skips them with their path and imports the rest', async () => {
    const merchant = await server.createMerchant();
    const cost = (input: number) => ({ cost: { input, output: 2 } });
    const file = JSON.stringify({
      acme: { models: { 'nul\u0000': cost(1), 'half\ud800': cost(1), ['模'.repeat(3000)]: cost(1), x: cost(1), 'x ': cost(2) } },
      google: { models: { 'gemini-x': cost(1) } },
      gemini: { models: { 'gemini-x': cost(3) } },
    });
    const answer = await server.graphql<any>(IMPORT, { json: file, from }, merchant.secret);
    expect(answer.errors).toBeUndefined();
    expect(answer.data.importModelsDevPrices.imported).toBe(2);
    expect(answer.data.importModelsDevPrices.skipped.entries.map((entry: { path: string }) => entry.path)).toEqual([
      '/acme/models/nul\u0000',
      '/acme/models/half\ud800',
      `/acme/models/${'模'.repeat(3000)}`,
      '/acme/models/x ',
      '/gemini/models/gemini-x',
    ]);
    expect((await storedRows(merchant.id)).map((row) => `${row.provider}/${row.model}`)).toEqual(['acme/x', 'google/gemini-x']);
  });
});

describe('writes of the same prices at the same moment', () => {
  const file = (input: number) => JSON.stringify({ openai: { models: { 'gpt-x': { cost: { input, output: 2 } }, 'gpt-y': { cost: { input: 1, output: 2 } } } } });
  const outcome = (promise: Promise<unknown>) => promise.then(
    () => 'ok',
    (error: { code?: string; message?: string }) => error.code ?? String(error.message),
  );

  it('the same file imported side by side: every import succeeds, each row is stored once', async () => {
    const merchant = await server.createMerchant();
    const at = new Date(from);
    const outcomes = await Promise.all(Array.from({ length: 8 }, () => outcome(server.services.providerPrices.importModelsDev(merchant.id, file(1), at))));
    expect(outcomes).toEqual(Array(8).fill('ok'));
    expect(await storedRows(merchant.id)).toHaveLength(2);
  });

  it('different files side by side: one is stored, the others are CONFLICT, never INTERNAL', async () => {
    const merchant = await server.createMerchant();
    const at = new Date(from);
    const outcomes = await Promise.all(Array.from({ length: 8 }, (_, index) => outcome(server.services.providerPrices.importModelsDev(merchant.id, file(index + 1), at))));
    expect(outcomes.filter((o) => o === 'ok')).toHaveLength(1);
    expect(outcomes.filter((o) => o === 'CONFLICT')).toHaveLength(7);
    expect(await storedRows(merchant.id)).toHaveLength(2);
  });

  it('add (setProviderPrice) side by side with an import of the same row: both succeed', async () => {
    const merchant = await server.createMerchant();
    const at = new Date(from);
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, (_, index) =>
        outcome(
          index % 2
            ? server.services.providerPrices.importModelsDev(merchant.id, file(1), at)
            : server.services.providerPrices.add(merchant.id, { provider: 'openai', model: 'gpt-x', perMillionTokens: { input: '1', output: '2' }, effectiveFrom: at }),
        ),
      ),
    );
    expect(outcomes).toEqual(Array(8).fill('ok'));
    expect(await storedRows(merchant.id)).toHaveLength(2);
  });
});
