/**
 * Gemini API and Vertex AI beyond the recorded fixture: cumulative streams (SSE with CRLF,
 * JSON arrays, cut streams), Vertex's trafficType-only chunks, tool-use prompt tokens,
 * modalities, errors, Imagen, and Claude on Vertex. Shapes per js-genai's types.
 */
import { describe, expect, it } from 'vitest';
import type { ProviderResponse } from '../usage.types.ts';
import { normalizeResponse } from './index.ts';

const GEMINI = 'https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash';
const VERTEX = 'https://us-central1-aiplatform.googleapis.com/v1/projects/acme/locations/us-central1/publishers/google/models/gemini-2.5-pro';

function call(url: string, body: string, extra: Partial<ProviderResponse> = {}) {
  return normalizeResponse({ url, status: 200, headers: {}, body, ...extra });
}

const chunk = (text: string, usage: object, finish?: string, model = 'gemini-3.8-flash') => ({
  candidates: [{ content: { parts: [{ text }], role: 'model' }, ...(finish ? { finishReason: finish } : {}), index: 0 }],
  usageMetadata: usage,
  modelVersion: model,
  responseId: 'r1',
});

const sse = (chunks: object[], eol = '\r\n') => chunks.map((c) => `data: ${JSON.stringify(c)}${eol}${eol}`).join('');

describe('Gemini streaming', () => {
  const chunks = [
    chunk('The', { promptTokenCount: 100, candidatesTokenCount: 1, totalTokenCount: 131, thoughtsTokenCount: 30 }),
    chunk(' three', { promptTokenCount: 100, candidatesTokenCount: 20, totalTokenCount: 150, thoughtsTokenCount: 30 }),
    chunk(' risks.', { promptTokenCount: 100, candidatesTokenCount: 42, totalTokenCount: 172, thoughtsTokenCount: 30 }, 'STOP'),
  ];

  it('the last cumulative chunk is authoritative (CRLF framing, as Gemini sends it)', () => {
    const u = call(`${GEMINI}:streamGenerateContent?alt=sse`, sse(chunks));
    expect(u).toMatchObject({ api: 'streamGenerateContent', billable: true, inputTokens: 100, outputTokens: 72, reasoningTokens: 30, model: 'gemini-3.8-flash' });
    expect(u.inputTokens).not.toBe(300); // summing chunks over-bills
  });

  it('the same stream as a JSON array (no alt=sse)', () => {
    expect(call(`${GEMINI}:streamGenerateContent`, JSON.stringify(chunks, null, 2))).toMatchObject({ inputTokens: 100, outputTokens: 72 });
  });

  it('a cut stream is incomplete, keeps its text and its last counts for the policy', () => {
    const cut = sse(chunks.slice(0, 2)) + 'data: {"candidates": [{"content": {"parts": [{"text": " ri';
    const u = call(`${GEMINI}:streamGenerateContent?alt=sse`, cut);
    expect(u).toMatchObject({ billable: false, incomplete: true, streamedText: 'The three', inputTokens: 100, outputTokens: 50 });
    const cutArray = JSON.stringify(chunks).slice(0, -40);
    expect(call(`${GEMINI}:streamGenerateContent`, cutArray)).toMatchObject({ billable: false, incomplete: true, streamedText: 'The three' });
  });

  it('an error chunk inside the stream is not billable', () => {
    const body = sse([chunks[0]!, { error: { code: 500, message: 'Internal error encountered.', status: 'INTERNAL' } }]);
    expect(call(`${GEMINI}:streamGenerateContent?alt=sse`, body)).toMatchObject({ billable: false, details: { error: 'INTERNAL' } });
  });

  it('thought parts are counted, not returned as text', () => {
    const thinking = { candidates: [{ content: { parts: [{ text: 'Let me think', thought: true }, { text: 'Answer' }] } }], usageMetadata: { promptTokenCount: 5 } };
    const u = call(`${GEMINI}:streamGenerateContent?alt=sse`, sse([thinking], '\n'));
    expect(u).toMatchObject({ incomplete: true, streamedText: 'Answer', details: { streamed_other_chars: 12 } });
  });
});

describe('Gemini and Vertex usage fields', () => {
  it('tool-use prompt tokens are input; modalities and Vertex traffic type go to details', () => {
    const body = JSON.stringify({
      candidates: [{ content: { parts: [{ text: 'ok' }] }, finishReason: 'STOP' }],
      usageMetadata: {
        promptTokenCount: 1000,
        candidatesTokenCount: 200,
        toolUsePromptTokenCount: 300,
        thoughtsTokenCount: 50,
        totalTokenCount: 1550,
        promptTokensDetails: [
          { modality: 'TEXT', tokenCount: 400 },
          { modality: 'AUDIO', tokenCount: 600 },
        ],
        candidatesTokensDetails: [{ modality: 'IMAGE', tokenCount: 200 }],
        trafficType: 'ON_DEMAND',
      },
      modelVersion: 'gemini-2.5-pro',
    });
    const u = call(`${VERTEX}:generateContent`, body);
    expect(u).toMatchObject({ provider: 'vertex', inputTokens: 1300, outputTokens: 250, reasoningTokens: 50 });
    expect(u.inputTokens + u.outputTokens).toBe(1550);
    expect(u.details).toMatchObject({ tool_use_prompt_tokens: 300, input_text_tokens: 400, input_audio_tokens: 600, output_image_tokens: 200, traffic_type: 'ON_DEMAND' });
  });

  it('Vertex streams: chunks whose usageMetadata is only trafficType are skipped', () => {
    const body = sse([
      { candidates: [{ content: { parts: [{ text: 'Hi' }] } }], usageMetadata: { trafficType: 'ON_DEMAND' }, modelVersion: 'gemini-2.5-pro' },
      { candidates: [{ content: { parts: [{ text: ' there' }] }, finishReason: 'STOP' }], usageMetadata: { trafficType: 'ON_DEMAND' }, modelVersion: 'gemini-2.5-pro' },
      { candidates: [], usageMetadata: { promptTokenCount: 12, candidatesTokenCount: 3, totalTokenCount: 15, trafficType: 'ON_DEMAND' }, modelVersion: 'gemini-2.5-pro' },
    ]);
    expect(call(`${VERTEX}:streamGenerateContent?alt=sse`, body)).toMatchObject({ billable: true, inputTokens: 12, outputTokens: 3, model: 'gemini-2.5-pro' });
  });

  it('the model comes from the URL when the body does not name one', () => {
    const body = JSON.stringify({ candidates: [{ finishReason: 'STOP' }], usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 1, totalTokenCount: 4 } });
    expect(call(`${GEMINI}:generateContent`, body).model).toBe('gemini-3.8-flash');
  });

  it('a 429 quota error is not billable', () => {
    const body = JSON.stringify({ error: { code: 429, message: 'Resource has been exhausted', status: 'RESOURCE_EXHAUSTED' } });
    expect(call(`${GEMINI}:generateContent?key=k`, body, { status: 429 })).toMatchObject({ billable: false, details: { error: 'RESOURCE_EXHAUSTED', http_status: 429 } });
  });

  it('Imagen counts the predictions that carry an image', () => {
    const body = JSON.stringify({ predictions: [{ bytesBase64Encoded: 'AAA', mimeType: 'image/png' }, { bytesBase64Encoded: 'BBB', mimeType: 'image/png' }, { raiFilteredReason: 'filtered' }] });
    expect(call('https://generativelanguage.googleapis.com/v1beta/models/imagen-4.0-generate-001:predict', body)).toMatchObject({ api: 'predict', model: 'imagen-4.0-generate-001', images: 2 });
  });

  it('Claude on Vertex (rawPredict) answers in the Anthropic shape', () => {
    const body = JSON.stringify({ id: 'msg_vrtx', type: 'message', role: 'assistant', model: 'claude-sonnet-4-6', content: [], stop_reason: 'end_turn', usage: { input_tokens: 20, cache_read_input_tokens: 80, cache_creation_input_tokens: 0, output_tokens: 7 } });
    const url = 'https://us-east5-aiplatform.googleapis.com/v1/projects/acme/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-6:rawPredict';
    expect(call(url, body)).toMatchObject({ provider: 'vertex', api: 'messages', inputTokens: 100, cachedInputTokens: 80, outputTokens: 7 });
  });
});
