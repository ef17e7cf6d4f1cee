import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { normalizeResponse, SUPPORTED_PROVIDERS } from './index.ts';
import { scanJsonObjects } from './json-scan.ts';
import { codePoints, exactDecimal, int, plainDecimal, takeMalformedCounts } from './util.ts';

/** Exact value of a plain decimal string as (digits, scale), for comparing without floats. */
function scaled(decimal: string, scale: number): bigint {
  const negative = decimal.startsWith('-');
  const [whole = '0', fraction = ''] = (negative ? decimal.slice(1) : decimal).split('.');
  const value = BigInt(whole + fraction.padEnd(scale, '0').slice(0, scale));
  return negative ? -value : value;
}

describe('exact decimals', () => {
  it('keeps the literal as written rather than the double it parses to', () => {
    expect(exactDecimal('{"duration":25.933313}', 'duration', 25.933313)).toBe('25.933313');
    expect(exactDecimal('{"cost": 0.30000000000000001}', 'cost', 0.3)).toBe('0.30000000000000001');
    expect(exactDecimal('{"cost":1.5e-7}', 'cost', 1.5e-7)).toBe('0.00000015');
    expect(exactDecimal('{"cost":2E+3}', 'cost', 2000)).toBe('2000');
  });

  it('skips same-named keys whose value differs, and quoted text that only looks like a key', () => {
    const text = '{"note":"\\"cost\\": 9","a":{"cost":1},"usage":{"cost":0.25}}';
    expect(exactDecimal(text, 'cost', 0.25)).toBe('0.25');
  });

  it('falls back to the double, in plain notation, when the literal is not in the text', () => {
    expect(exactDecimal('{}', 'cost', 1e-7)).toBe('0.0000001');
    expect(exactDecimal('{}', 'seconds', 43)).toBe('43');
  });

  it('plainDecimal moves digits exactly for any exponent', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(10n ** 20n), max: 10n ** 20n }), fc.integer({ min: 0, max: 12 }), fc.integer({ min: -25, max: 25 }), (digits, point, exponent) => {
        const text = digits.toString().replace('-', '');
        const sign = digits < 0n ? '-' : '';
        const at = Math.min(point, text.length);
        const mantissa = at > 0 && at < text.length ? `${text.slice(0, text.length - at)}.${text.slice(text.length - at)}` : text;
        const plain = plainDecimal(`${sign}${mantissa}e${exponent}`);
        expect(plain).not.toMatch(/e/i);
        // value = digits × 10^(exponent − fraction digits), compared at a common scale
        const fractionDigits = mantissa.includes('.') ? at : 0;
        const shift = exponent - fractionDigits;
        const scale = 60;
        expect(scaled(plain, scale)).toBe(digits * 10n ** BigInt(scale + shift));
      }),
    );
  });
});

describe('codePoints', () => {
  it('counts astral characters once and lone surrogates as one each', () => {
    expect(codePoints('abc')).toBe(3);
    expect(codePoints('👋🏽')).toBe(2);
    expect(codePoints('\uD83D')).toBe(1);
    expect(codePoints('')).toBe(0);
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'binary' }), fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 12 }).map((units) => String.fromCharCode(...units))), (s) => {
        expect(codePoints(s)).toBe([...s].length);
      }),
    );
  });
});

describe('int', () => {
  it('reads whole non-negative numbers and digit-only text, and counts any other value sent as malformed', () => {
    takeMalformedCounts();
    expect([0, 1000, Number.MAX_SAFE_INTEGER, '1000', '007', undefined, null].map(int)).toEqual([0, 1000, Number.MAX_SAFE_INTEGER, 1000, 7, 0, 0]);
    expect(takeMalformedCounts()).toBe(0);
    for (const value of [-5, 12.5, Infinity, -Infinity, NaN, '-5000', '12.5', '1e3', '', ' 1', '0x10', true, false, {}, [1000]]) {
      int(value);
      expect(takeMalformedCounts(), String(value)).toBe(1);
    }
  });

  it('a raw response whose count is text other than digits, non-finite or of another type is malformed, not 0 tokens', () => {
    const chat = (prompt: string) => ({
      url: 'https://api.openai.com/v1/chat/completions', status: 200, headers: {},
      body: `{"id":"x","object":"chat.completion","model":"gpt-5.4-mini","choices":[],"usage":{"prompt_tokens":${prompt},"completion_tokens":100,"total_tokens":1100}}`,
    });
    takeMalformedCounts();
    expect(normalizeResponse(chat('"1000"')).inputTokens).toBe(1000);
    expect(takeMalformedCounts()).toBe(0);
    for (const prompt of ['"-5000"', '"12.5"', '1e400', '"1e3"', 'true', '-1e400', '{}', '[1000]']) {
      normalizeResponse(chat(prompt));
      expect(takeMalformedCounts(), prompt).toBeGreaterThan(0);
    }
  });
});

describe('scanJsonObjects', () => {
  it('finds objects in NDJSON, in binary framing, and stops cleanly at a truncated tail', () => {
    expect(scanJsonObjects('{"a":1}\n{"b":"}{"}\n')).toEqual([{ a: 1 }, { b: '}{' }]);
    expect(scanJsonObjects('\u0000{\u0001{"a":1}\u00ff{"b":2}')).toEqual([{ a: 1 }, { b: 2 }]);
    expect(scanJsonObjects('{"a":1}{"b":{"c":')).toEqual([{ a: 1 }]);
  });
});

describe('robustness', () => {
  const urls = [
    'https://api.openai.com/v1/chat/completions',
    'https://api.openai.com/v1/responses',
    'https://api.openai.com/v1/embeddings',
    'https://api.openai.com/v1/images/generations',
    'https://api.openai.com/v1/audio/transcriptions',
    'https://api.openai.com/v1/audio/speech',
    'https://api.anthropic.com/v1/messages',
    'https://generativelanguage.googleapis.com/v1beta/models/g:streamGenerateContent',
    'https://generativelanguage.googleapis.com/v1beta/models/imagen-4:predict',
    'https://api.cohere.com/v2/chat',
    'https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse',
    'https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse-stream',
    'https://bedrock-runtime.us-east-1.amazonaws.com/model/m/invoke',
    'https://bedrock-runtime.us-east-1.amazonaws.com/model/m/invoke-with-response-stream',
    'https://api.elevenlabs.io/v1/text-to-speech/v',
    'https://api.deepgram.com/v1/listen',
    'https://api.deepgram.com/v1/speak',
    'https://api.stability.ai/v2beta/stable-image/generate/core',
    'https://fal.run/fal-ai/flux/dev',
    'https://api.replicate.com/v1/predictions',
    'https://api.bfl.ai/v1/flux-dev',
    'https://api.ideogram.ai/generate',
  ];
  const jsonish = fc.oneof(
    fc.json(),
    fc.string(),
    fc.jsonValue().map((v) => `data: ${JSON.stringify(v)}\n\n`),
    fc.constantFrom(
      '{"usage":{"prompt_tokens":-5,"completion_tokens":"x"}}',
      '{"usageMetadata":{"promptTokenCount":5,"cachedContentTokenCount":9,"candidatesTokenCount":1},"candidates":[{"finishReason":"STOP"}]}',
      '{"status":"completed","usage":{"input_tokens":1,"input_tokens_details":{"cached_tokens":4},"output_tokens":1,"output_tokens_details":{"reasoning_tokens":3}}}', '{"usage":null}', 'data: {"usage":{}}\n\n', '[{"usageMetadata":{"promptTokenCount":1e400}}]', '{"metadata":{"duration":"NaN"}}'),
  );

  it('never throws on arbitrary bodies, and every quantity stays a non-negative integer', () => {
    fc.assert(
      fc.property(fc.constantFrom(...urls), jsonish, fc.constantFrom(200, 201, 400, 500), fc.option(fc.jsonValue()), (url, body, status, requestBody) => {
        const u = normalizeResponse({ url, status, headers: {}, body, requestBody });
        for (const n of [u.inputTokens, u.cachedInputTokens, u.cacheWriteTokens, u.outputTokens, u.reasoningTokens, u.characters, u.images, u.requests]) {
          expect(Number.isSafeInteger(n) && n >= 0).toBe(true);
        }
        expect(u.cachedInputTokens + u.cacheWriteTokens).toBeLessThanOrEqual(u.inputTokens);
        expect(u.reasoningTokens).toBeLessThanOrEqual(u.outputTokens);
        if (!u.billable) expect(u.requests).toBe(0);
        if (status >= 400) expect(u.billable).toBe(false);
        if (u.audioSeconds !== null) expect(u.audioSeconds).toMatch(/^\d+(\.\d+)?$/);
      }),
      { numRuns: 400 },
    );
  });

  it('SUPPORTED_PROVIDERS is frozen data', () => {
    expect(Object.isFrozen(SUPPORTED_PROVIDERS)).toBe(true);
    expect(Object.isFrozen(SUPPORTED_PROVIDERS[0])).toBe(true);
  });
});
