/**
 * Google Gemini API and Vertex AI generateContent / streamGenerateContent, and Imagen :predict.
 *
 * promptTokenCount includes cachedContentTokenCount; candidatesTokenCount excludes
 * thoughtsTokenCount, so billed output is their sum; toolUsePromptTokenCount is input beside
 * the prompt (totalTokenCount = prompt + candidates + thoughts + toolUsePrompt).
 * Streams: usageMetadata is cumulative in every chunk, so the last chunk with counts is
 * authoritative (Vertex's intermediate chunks carry only `trafficType`). Summing over-bills.
 */
import type { NormalizedUsage } from '../usage.types.ts';
import { scanJsonObjects } from './json-scan.ts';
import { streamError } from './stream.ts';
import { parseSse } from './sse.ts';
import {
  arr,
  type Ctx,
  errorCode,
  failed,
  firstChar,
  hasCount,
  incomplete,
  int,
  type Normalizer,
  obj,
  type Obj,
  parseJson,
  pickModel,
  result,
  str,
  TextSink,
} from './util.ts';

function hasCounts(um: Obj | undefined): um is Obj {
  return !!um && (hasCount(um.promptTokenCount) || hasCount(um.totalTokenCount) || hasCount(um.candidatesTokenCount));
}

function modalities(out: NormalizedUsage, list: unknown, prefix: string): void {
  for (const entry of arr(list) ?? []) {
    const e = obj(entry);
    const modality = str(e?.modality);
    if (modality) out.details[`${prefix}_${modality.toLowerCase()}_tokens`] = int(e?.tokenCount);
  }
}

function applyGeminiUsage(out: NormalizedUsage, um: Obj): void {
  const toolUse = int(um.toolUsePromptTokenCount);
  const thoughts = int(um.thoughtsTokenCount);
  out.inputTokens = int(um.promptTokenCount) + toolUse;
  out.cachedInputTokens = int(um.cachedContentTokenCount);
  out.outputTokens = int(um.candidatesTokenCount) + thoughts;
  out.reasoningTokens = thoughts;
  if (toolUse > 0) out.details.tool_use_prompt_tokens = toolUse;
  // Audio input and image output are priced apart from text.
  modalities(out, um.promptTokensDetails, 'input');
  modalities(out, um.cacheTokensDetails, 'cached');
  // promptTokensDetails counts the cached part too; pricing reads input_audio_tokens as the audio
  // of the uncached input (its own rate), so audio read from the cache is taken out of it here,
  // where the split is known, rather than priced at the audio rate and the cache rate both. The
  // cached part stays as cached_audio_tokens: Gemini prices it at its own cache rate (cachedInputAudio).
  const cachedAudio = out.details.cached_audio_tokens;
  if (typeof cachedAudio === 'number' && cachedAudio > 0 && typeof out.details.input_audio_tokens === 'number') {
    out.details.prompt_audio_tokens = out.details.input_audio_tokens;
    out.details.input_audio_tokens = Math.max(0, out.details.input_audio_tokens - cachedAudio);
  }
  modalities(out, um.candidatesTokensDetails, 'output');
  const traffic = str(um.trafficType);
  if (traffic) out.details.traffic_type = traffic;
}

function finished(chunk: Obj): boolean {
  for (const c of arr(chunk.candidates) ?? []) if (str(obj(c)?.finishReason)) return true;
  return !!obj(chunk.promptFeedback)?.blockReason;
}

/** Visible text of the chunks; thought parts and function-call arguments only counted. */
function chunksText(chunks: Obj[]): TextSink {
  const sink = new TextSink();
  for (const chunk of chunks) {
    for (const c of arr(chunk.candidates) ?? []) {
      for (const part of arr(obj(obj(c)?.content)?.parts) ?? []) {
        const p = obj(part);
        if (p?.thought === true) sink.other(p.text);
        else sink.add(p?.text);
        // A function call arrives whole, its arguments as an object: counted as the JSON generated.
        const call = obj(p?.functionCall);
        if (call) sink.other(JSON.stringify(call.args ?? {}));
      }
    }
  }
  return sink;
}

function fromChunks(ctx: Ctx, chunks: Obj[], error: string | null): NormalizedUsage {
  let last: Obj | undefined;
  let lastUsage: Obj | undefined;
  let done = false;
  for (let i = chunks.length - 1; i >= 0; i--) {
    const chunk = chunks[i]!;
    if (!done && finished(chunk)) done = true;
    const um = obj(chunk.usageMetadata);
    if (!lastUsage && hasCounts(um)) {
      lastUsage = um;
      last = chunk;
    }
    if (lastUsage && done) break;
  }
  const model = pickModel(ctx, last?.modelVersion ?? chunks[0]?.modelVersion);
  const chunkError = error ?? firstError(chunks);
  if (chunkError) return failed(ctx, model, chunkError);
  if (lastUsage && done) {
    const out = result(ctx, model);
    applyGeminiUsage(out, lastUsage);
    const block = str(obj(last?.promptFeedback)?.blockReason);
    if (block) out.details.block_reason = block;
    const queries = searchQueries(chunks);
    if (queries > 0) out.details.web_search_queries = queries;
    return out;
  }
  const sink = chunksText(chunks);
  const out = incomplete(ctx, model, sink.text, 'stream_truncated');
  // A cut stream still said how far it got: keep its last cumulative counts for the policy.
  if (lastUsage) applyGeminiUsage(out, lastUsage);
  return sink.finish(out);
}

/**
 * The Google Search queries grounding ran (candidates[].groundingMetadata.webSearchQueries), billed
 * apart from tokens: Gemini 3 per unique query, empty ones ignored, older models per grounded
 * prompt (Gemini API pricing, Grounding with Google Search). A stream may repeat them: counted once.
 */
function searchQueries(chunks: Obj[]): number {
  const seen = new Set<string>();
  for (const chunk of chunks) {
    for (const c of arr(chunk.candidates) ?? []) {
      for (const query of arr(obj(obj(c)?.groundingMetadata)?.webSearchQueries) ?? []) {
        if (typeof query === 'string' && query.trim() !== '') seen.add(query);
      }
    }
  }
  return seen.size;
}

function firstError(chunks: Obj[]): string | null {
  for (const chunk of chunks) {
    const code = errorCode(chunk);
    if (code) return code;
  }
  return null;
}

export const geminiGenerate: Normalizer = (ctx) => {
  const body = ctx.response.body;
  const c = firstChar(body);
  if (c === 123 /* { */) {
    const o = obj(parseJson(body));
    if (o) return fromChunks(ctx, [o], null);
    return incomplete(ctx, pickModel(ctx, undefined), null, 'unparseable_body');
  }
  if (c === 91 /* [ */) {
    // streamGenerateContent without alt=sse: a JSON array of chunks, possibly cut off.
    const whole = parseJson(body);
    const chunks = Array.isArray(whole) ? whole.filter((x): x is Obj => obj(x) !== undefined) : scanJsonObjects(body, body.indexOf('[') + 1);
    return fromChunks(ctx, chunks, null);
  }
  const events = parseSse(body);
  // Only the last chunk with counts matters: parse from the end until it is found, then the
  // rest only if the stream turns out to be cut (to collect the streamed text).
  const chunks: Obj[] = [];
  let counted = false;
  let done = false;
  for (let i = events.length - 1; i >= 0; i--) {
    const parsed = obj(parseJson(events[i]!.data));
    if (!parsed) continue;
    chunks.push(parsed);
    counted ||= hasCounts(obj(parsed.usageMetadata));
    done ||= finished(parsed);
    if (counted && done) break;
  }
  return fromChunks(ctx, chunks.reverse(), streamError(events));
};

/** Imagen `:predict`: one prediction per generated image (filtered ones carry no image). */
export const imagenPredict: Normalizer = (ctx) => {
  const o = obj(parseJson(ctx.response.body));
  const model = pickModel(ctx, undefined);
  if (!o) return incomplete(ctx, model, null, 'unparseable_body');
  const error = errorCode(o);
  if (error) return failed(ctx, model, error);
  const out = result(ctx, model);
  for (const p of arr(o.predictions) ?? []) {
    const prediction = obj(p);
    if (prediction && (str(prediction.bytesBase64Encoded) || str(prediction.gcsUri))) out.images++;
  }
  return out;
};
