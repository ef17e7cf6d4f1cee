import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../../test/server.ts';
import { loadPricingConfig, planPricingConfig } from './config-apply.ts';

/**
 * Prices and quantities written with many leading zeros, or as JSON numbers too large for a
 * double to hold exactly, through the API as an integrator sends them: each is read as the number
 * it writes, or refused with a message that names what is wrong and how to send it instead.
 * The bodies are raw JSON text, as they come over the wire: JSON.stringify of a JS number could not
 * write 9007199254740993.
 */
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

const SET_PRICE = 'mutation ($input: SetProviderPriceInput!) { setProviderPrice(input: $input) { rates } }';
const PUT_RULE = 'mutation ($input: PutPriceRuleInput!) { putPriceRule(input: $input) { name config } }';

/** One past the largest whole number a double holds exactly: JSON.parse reads it as 9007199254740992. */
const BEYOND_DOUBLES = '9007199254740993';

interface Answer {
  data?: Record<string, { rates?: Record<string, unknown>; config?: Record<string, unknown> }> | null;
  errors?: { message: string; extensions: { code: string; field?: string } }[];
}

async function merchant() {
  const { id, secret } = await server.createMerchant();
  await server.services.meters.create(id, { key: 'tok', name: 'Tokens', unit: 'token', source: 'TOTAL_TOKENS' });
  /** Sends `input` (JSON text, written as it is) to `mutation`. */
  const send = async (mutation: string, input: string): Promise<Answer> => {
    const response = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
      body: `{"query":${JSON.stringify(mutation)},"variables":{"input":${input}}}`,
    });
    return (await response.json()) as Answer;
  };
  const refusal = (answer: Answer) => {
    expect(answer.errors, JSON.stringify(answer)).toHaveLength(1);
    expect(answer.errors![0]!.extensions.code).toBe('VALIDATION');
    return { field: answer.errors![0]!.extensions.field, message: answer.errors![0]!.message };
  };
  return { id, send, refusal };
}

describe('a decimal written with leading zeros', () => {
  it('is the number it writes however many zeros lead it, in a provider price and in a rule, as "01.5" already was', async () => {
    const { send } = await merchant();
    const price = await send(SET_PRICE, '{"provider":"openai","model":"m","rates":{"perMillionTokens":{"input":"0000000000001.5","output":"00000000000000000000000.15"}}}');
    expect(price.errors).toBeUndefined();
    expect(price.data?.setProviderPrice?.rates).toEqual({ perMillionTokens: { input: '1.5', output: '0.15' } });

    const flat = await send(PUT_RULE, '{"name":"flat","type":"FLAT","meterKey":"tok","config":{"unitPrice":"0000000000000.001"}}');
    expect(flat.errors).toBeUndefined();
    const markup = await send(PUT_RULE, '{"name":"markup","type":"MARKUP","config":{"percent":"0000000000010"}}');
    expect(markup.errors).toBeUndefined();
  });

  it('is still too large when the digits after its zeros are more than 12, and is told so', async () => {
    const { send, refusal } = await merchant();
    const answer = await send(SET_PRICE, '{"provider":"openai","model":"m","rates":{"perMillionTokens":{"input":"00001234567890123","output":"1"}}}');
    expect(refusal(answer)).toEqual({ field: 'price.perMillionTokens.input', message: 'price.perMillionTokens.input: is too large: at most 12 digits before the decimal point' });
  });
});

describe('a whole number beyond 2^53 sent as a JSON number', () => {
  it('as a quantity (a tier bound, a package size) is refused saying to send it as a decimal string, and that string is taken', async () => {
    const { send, refusal } = await merchant();
    const tiers = (upTo: string) => `{"name":"g","type":"GRADUATED","meterKey":"tok","config":{"tiers":[{"upTo":${upTo},"unitPrice":"1"},{"upTo":null,"unitPrice":"0.5"}]}}`;
    const bound = refusal(await send(PUT_RULE, tiers(BEYOND_DOUBLES)));
    expect(bound.field).toBe('rule.tiers.0.upTo');
    expect(bound.message).toBe(
      'rule.tiers.0.upTo: is larger than 9007199254740991, the largest whole number a JSON number holds exactly, so it may already have lost digits: send it as a decimal string, e.g. "9007199254740993"',
    );
    const size = refusal(await send(PUT_RULE, `{"name":"p","type":"PACKAGE","meterKey":"tok","config":{"packageSize":${BEYOND_DOUBLES},"packagePrice":"1"}}`));
    expect(size.field).toBe('rule.packageSize');
    expect(size.message).toMatch(/larger than 9007199254740991.*send it as a decimal string/);

    // What the message asks for works.
    const asText = await send(PUT_RULE, tiers(`"${BEYOND_DOUBLES}"`));
    expect(asText.errors).toBeUndefined();
    expect(asText.data?.putPriceRule?.config).toMatchObject({ tiers: [{ upTo: BEYOND_DOUBLES }, { upTo: null }] });
  });

  it('as a quantity in a YAML pricing file is refused the same way, naming where it is', async () => {
    const { id } = await merchant();
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'tollgate-numbers-')), 'pricing.yaml');
    writeFileSync(file, `priceRules:\n  - { name: g, type: GRADUATED, meterKey: tok, config: { tiers: [ { upTo: ${BEYOND_DOUBLES}, unitPrice: "1" }, { upTo: null, unitPrice: "0.5" } ] } }\n`);
    const error = await loadPricingConfig(file).then((config) => planPricingConfig(server.services, id, config)).then(() => null, (caught: unknown) => caught as Error & { details?: { field?: string } });
    expect(error?.details?.field).toBe('priceRules.0.config.tiers.0.upTo');
    expect(error?.message).toMatch(/larger than 9007199254740991.*send it as a decimal string/);
  });

  it('as a price, a percent or a context threshold is refused for what it is, too large, not told to be sent as a string that would be refused too', async () => {
    const { send, refusal } = await merchant();
    const rate = refusal(await send(SET_PRICE, `{"provider":"openai","model":"m","rates":{"perMillionTokens":{"input":${BEYOND_DOUBLES},"output":"1"}}}`));
    expect(rate).toEqual({ field: 'price.perMillionTokens.input', message: 'price.perMillionTokens.input: is too large: at most 12 digits before the decimal point' });
    const asText = refusal(await send(SET_PRICE, `{"provider":"openai","model":"m","rates":{"perMillionTokens":{"input":"${BEYOND_DOUBLES}","output":"1"}}}`));
    expect(asText.message).toBe(rate.message);

    const percent = refusal(await send(PUT_RULE, `{"name":"markup","type":"MARKUP","config":{"percent":${BEYOND_DOUBLES}}}`));
    expect(percent).toEqual({ field: 'rule.percent', message: 'rule.percent: must be at most 1000000 (percent)' });

    const tier = `{"aboveInputTokens":${BEYOND_DOUBLES},"perMillionTokens":{"input":"2"}}`;
    const threshold = refusal(await send(SET_PRICE, `{"provider":"openai","model":"m","rates":{"perMillionTokens":{"input":"1","output":"1"},"contextTiers":[${tier}]}}`));
    expect(threshold.field).toBe('price.contextTiers.0.aboveInputTokens');
    expect(threshold.message).toBe('price.contextTiers.0.aboveInputTokens: must be a whole number of input tokens above 0 and at most 9007199254740991');
  });
});
