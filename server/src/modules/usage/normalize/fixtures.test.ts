/**
 * Every recorded provider fixture must normalize exactly to its entry in expected_usage.json.
 * Data-driven: a new fixture with an expected entry is picked up without touching this file.
 */
import { describe, expect, it } from 'vitest';
import type { NormalizedUsage } from '../usage.types.ts';
import { normalizeResponse } from './index.ts';
import { fixtureFiles, fixtureMeta, fixtureResponse, readFixture, type FixtureMeta as Meta } from '../../../../test/provider-fixtures.ts';

interface Expected {
  provider: string;
  api: string;
  mode: 'stream' | 'non_stream' | 'binary';
  model_reported: string | null;
  billable: boolean;
  http_status?: number;
  input_tokens_total: number;
  input_tokens_uncached?: number;
  cached_input_tokens?: number;
  cache_write_tokens?: number;
  output_tokens: number;
  reasoning_tokens?: number;
  units?: Record<string, number>;
  provider_reported_cost_usd?: string | null;
  cache_write_5m_tokens?: number;
  cache_write_1h_tokens?: number;
}

const expected = JSON.parse(readFixture('expected_usage.json')) as Record<string, Expected | string>;
const meta = fixtureMeta;
const entries = Object.entries(expected).filter((entry): entry is [string, Expected] => typeof entry[1] === 'object');

const responseFor = fixtureResponse;

const UNIT_FIELDS: Record<string, (u: NormalizedUsage) => unknown> = {
  images: (u) => u.images,
  characters: (u) => u.characters,
  audio_seconds_billed: (u) => u.audioSeconds,
};

function check(name: string, e: Expected, u: NormalizedUsage): void {
  const m = meta[name] as Meta;
  const requestModel = m.request.body?.model ?? m.request.body?.model_id ?? m.request.form?.model ?? null;
  expect(u.provider).toBe(e.provider);
  expect(u.api).toBe(e.api);
  expect(u.model).toBe(e.model_reported ?? requestModel);
  expect(u.billable).toBe(e.billable);
  expect(u.requests).toBe(e.billable ? 1 : 0);
  expect(u.inputTokens).toBe(e.input_tokens_total);
  expect(u.cachedInputTokens).toBe(e.cached_input_tokens ?? 0);
  expect(u.cacheWriteTokens).toBe(e.cache_write_tokens ?? 0);
  expect(u.outputTokens).toBe(e.output_tokens);
  expect(u.reasoningTokens).toBe(e.reasoning_tokens ?? 0);
  if (e.input_tokens_uncached !== undefined) {
    expect(u.inputTokens - u.cachedInputTokens - u.cacheWriteTokens).toBe(e.input_tokens_uncached);
  }
  for (const [unit, value] of Object.entries(e.units ?? {})) {
    const field = UNIT_FIELDS[unit];
    // Seconds are decimal strings; other units are integers or extra detail.
    if (field) expect(String(field(u))).toBe(String(value));
    else expect(String(u.details[unit]), `details.${unit}`).toBe(String(value));
  }
  if (!('images' in (e.units ?? {}))) expect(u.images).toBe(0);
  if (!('characters' in (e.units ?? {}))) expect(u.characters).toBe(0);
  if (!('audio_seconds_billed' in (e.units ?? {}))) expect(u.audioSeconds).toBeNull();
  for (const key of ['cache_write_5m_tokens', 'cache_write_1h_tokens'] as const) {
    if (e[key] !== undefined) expect(u.details[key], key).toBe(e[key]);
  }
  expect(u.providerReportedCostUsd).toBe(e.provider_reported_cost_usd ?? null);
  // A stream cut before its usage is incomplete and carries what was streamed; errors are not.
  const cutStream = e.mode === 'stream' && !e.billable && (e.http_status ?? 200) < 400;
  expect(u.incomplete).toBe(cutStream);
  if (cutStream) expect(typeof u.streamedText).toBe('string');
  else expect(u.streamedText).toBeNull();
}

describe('provider fixtures normalize to expected_usage.json', () => {
  it('every fixture file has an expected entry and an HTTP envelope', () => {
    const files = fixtureFiles().filter(
      (f) => !f.startsWith('_') && f !== 'expected_usage.json' && !f.endsWith('.md'),
    );
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) {
      expect(expected[file], file).toBeTypeOf('object');
      expect(meta[file], file).toBeTypeOf('object');
    }
  });

  it.each(entries)('%s', (name, e) => {
    check(name, e, normalizeResponse(responseFor(name)));
  });

  it.each(entries.filter(([name]) => name.endsWith('.sse')))('%s with CRLF framing', (name, e) => {
    const lf = normalizeResponse(responseFor(name));
    const crlf = normalizeResponse(responseFor(name, '\r\n'));
    check(name, e, crlf);
    expect({ ...crlf, streamedText: crlf.streamedText?.replace(/\r\n/g, '\n') ?? null }).toEqual(lf);
  });

  it('is deterministic and does not mutate the response', () => {
    for (const [name] of entries) {
      const response = responseFor(name);
      const snapshot = structuredClone(response);
      expect(normalizeResponse(response)).toEqual(normalizeResponse(response));
      expect(response).toEqual(snapshot);
    }
  });
});

describe('known wrong answers are rejected', () => {
  it('OpenAI chat: cached tokens are a subset of the prompt, not extra', () => {
    const u = normalizeResponse(responseFor('openai_chat_completion.json'));
    expect(u.inputTokens - u.cachedInputTokens).toBe(551);
    expect(u.inputTokens).not.toBe(2471 + 1920);
  });

  it('Anthropic stream: output is the last cumulative message_delta, not placeholder + delta', () => {
    const u = normalizeResponse(responseFor('anthropic_messages_stream.sse'));
    expect(u.outputTokens).toBe(689);
    expect(u.outputTokens).not.toBe(2 + 689);
  });

  it('DeepSeek: the cache hit is counted once', () => {
    const u = normalizeResponse(responseFor('deepseek_chat_completion.json'));
    expect(u.cachedInputTokens).toBe(1280);
    expect(u.inputTokens - u.cachedInputTokens).toBe(35);
  });

  it('Gemini: thoughts are added to candidates for output', () => {
    const u = normalizeResponse(responseFor('gemini_generate_content.json'));
    expect(u.outputTokens).toBe(412 + 893);
    expect(u.inputTokens + u.outputTokens).toBe(15517); // totalTokenCount
  });

  it('the truncated stream invents no usage and keeps the streamed text', () => {
    const u = normalizeResponse(responseFor('openai_chat_completion_stream_truncated.sse'));
    expect(u).toMatchObject({ billable: false, incomplete: true, inputTokens: 0, outputTokens: 0 });
    expect(u.streamedText).toBe('The quarterly report shows revenue growth');
  });

  it('whisper bills usage.seconds, with the raw duration kept exactly', () => {
    const u = normalizeResponse(responseFor('openai_transcription_whisper_1_verbose.json'));
    expect(u.audioSeconds).toBe('43');
    expect(u.details.audio_duration_seconds).toBe('42.52000045776367');
  });
});
