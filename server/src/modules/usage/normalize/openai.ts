/**
 * OpenAI and the OpenAI-compatible family (Azure, Groq, Together, Fireworks, Mistral, DeepSeek,
 * xAI, OpenRouter, Perplexity, …): chat/completions, responses, embeddings, images, audio.
 */
import type { NormalizedUsage } from '../usage.types.ts';
import { countStringValues, lastObjectValue, lastStringValue } from './json-scan.ts';
import { parseSse, type SseEvent } from './sse.ts';
import { eventType, firstField, isSseBody, streamError } from './stream.ts';
import {
  arr,
  codePoints,
  type Ctx,
  detail,
  errorCode,
  exactDecimal,
  failed,
  hasCount,
  hasNonNullValue,
  hasObjectValue,
  incomplete,
  int,
  isJsonBody,
  type Normalizer,
  numberLiteralAt,
  obj,
  type Obj,
  parseJson,
  pending,
  pickModel,
  reportedDecimal,
  requestString,
  result,
  str,
  TextSink,
  valueAt,
  isUsage,
  openJson,
} from './util.ts';

/** Above this size, bodies whose usage is a small block beside bulk data are not parsed whole. */
const LARGE_BODY = 64 * 1024;

function serviceTier(out: NormalizedUsage, o: Obj | undefined): void {
  const tier = str(o?.service_tier);
  if (tier) out.details.service_tier = tier;
}

// ---------------------------------------------------------------------------------------------
// Chat Completions (and legacy /completions), OpenAI and compatible providers

/**
 * OpenAI-shape usage into `out`. `source` is the JSON text the usage came from, so decimal
 * costs are kept exactly as written.
 */
export function applyChatUsage(out: NormalizedUsage, u: Obj, source: string): void {
  const ptd = obj(u.prompt_tokens_details);
  const ctd = obj(u.completion_tokens_details);
  const hit = u.prompt_cache_hit_tokens;
  const miss = u.prompt_cache_miss_tokens;
  let input = hasCount(u.prompt_tokens)
    ? int(u.prompt_tokens)
    : hasCount(hit) || hasCount(miss)
      ? int(hit) + int(miss)
      : int(u.input_tokens);
  // DeepSeek reports its cache hit twice (prompt_cache_hit_tokens and cached_tokens): once only.
  const cached = hasCount(hit) ? int(hit) : hasCount(ptd?.cached_tokens) ? int(ptd?.cached_tokens) : int(u.cached_tokens);
  // Alibaba (DashScope) writes its explicit-cache creation as prompt_tokens_details.cache_creation_input_tokens.
  const written = hasCount(ptd?.cache_write_tokens)
    ? int(ptd?.cache_write_tokens)
    : hasCount(ptd?.cache_creation_input_tokens) ? int(ptd?.cache_creation_input_tokens) : int(u.cache_creation_input_tokens);
  // Cache reads and writes are a subset of prompt_tokens; a proxy that reports them outside
  // it (prompt smaller than its own parts) gets them added back rather than going negative.
  if (cached + written > input) input += cached + written;

  let output = hasCount(u.completion_tokens) ? int(u.completion_tokens) : int(u.output_tokens);
  const reasoning = int(ctd?.reasoning_tokens);
  // xAI reports reasoning beside completion_tokens (total = prompt + completion + reasoning),
  // where OpenAI counts it inside. The total tells the two apart.
  if (reasoning > 0 && hasCount(u.total_tokens)) {
    const total = int(u.total_tokens);
    if (total === input + output + reasoning && total !== input + output) output += reasoning;
  }

  out.inputTokens = input;
  out.cachedInputTokens = cached;
  out.cacheWriteTokens = written;
  out.outputTokens = output;
  out.reasoningTokens = Math.min(reasoning, output);

  detail(out, 'input_audio_tokens', ptd?.audio_tokens);
  detail(out, 'input_image_tokens', ptd?.image_tokens);
  detail(out, 'output_audio_tokens', ctd?.audio_tokens);
  detail(out, 'output_image_tokens', ctd?.image_tokens);
  detail(out, 'accepted_prediction_tokens', ctd?.accepted_prediction_tokens);
  detail(out, 'rejected_prediction_tokens', ctd?.rejected_prediction_tokens);
  // Perplexity: billed at their own rates, outside completion_tokens.
  detail(out, 'reasoning_tokens', u.reasoning_tokens);
  detail(out, 'citation_tokens', u.citation_tokens);
  detail(out, 'num_search_queries', u.num_search_queries);
  const searchContext = str(u.search_context_size);
  if (searchContext) out.details.search_context_size = searchContext;
  // xAI live search is priced per source.
  detail(out, 'num_sources_used', u.num_sources_used);
  if (typeof u.prompt_audio_seconds === 'number') {
    out.details.prompt_audio_seconds = exactDecimal(source, 'prompt_audio_seconds', u.prompt_audio_seconds);
  }

  applyReportedCost(out, u, source);
}

/**
 * The cost a provider reports in a usage block, kept exactly as written (`source` is the JSON
 * text the usage came from). OpenRouter puts usage.cost, in credits (= USD), on every API it
 * serves (chat, embeddings, Responses, transcriptions), with is_byok and the upstream cost
 * beside it; Perplexity reports usage.cost.total_cost in USD; DeepInfra an estimate (a detail).
 */
function applyReportedCost(out: NormalizedUsage, u: Obj, source: string): void {
  // Each amount a number, or the same as text (see reportedDecimal).
  const costs = obj(u.cost);
  const cost = costs ? reportedDecimal(source, 'total_cost', costs.total_cost) : reportedDecimal(source, 'cost', u.cost);
  if (cost !== null) out.providerReportedCostUsd = cost;
  if (typeof u.is_byok === 'boolean') out.details.is_byok = String(u.is_byok);
  const upstream = reportedDecimal(source, 'upstream_inference_cost', obj(u.cost_details)?.upstream_inference_cost);
  if (upstream !== null) out.details.upstream_inference_cost_usd = upstream;
  const estimated = reportedDecimal(source, 'estimated_cost', u.estimated_cost);
  if (estimated !== null) out.details.estimated_cost_usd = estimated;
}

/**
 * A message's (or a delta's) content into the sink: text, or a list of chunks, as Mistral's
 * reasoning models send it (docs.mistral.ai, Reasoning: a thinking chunk before the answer):
 * `text` chunks are visible text, and a `thinking` chunk's own text chunks are reasoning, counted
 * beside it. Read as text only, a stream cut while the model was thinking estimated no output.
 */
function addContent(sink: TextSink, content: unknown): void {
  if (typeof content === 'string') {
    sink.add(content);
    return;
  }
  for (const entry of arr(content) ?? []) {
    const chunk = obj(entry);
    if (chunk?.type !== 'thinking') {
      sink.add(chunk?.text);
      continue;
    }
    if (typeof chunk.thinking === 'string') sink.other(chunk.thinking);
    else for (const part of arr(chunk.thinking) ?? []) sink.other(obj(part)?.text);
  }
}

/**
 * The output of a non-stream chat/completions body (for the no-usage case): its visible text, and
 * beside it what chatStream counts of a cut stream (reasoning, refusals, tool-call arguments).
 */
function choicesOutput(o: Obj): TextSink {
  const sink = new TextSink();
  for (const choice of arr(o.choices) ?? []) {
    const c = obj(choice);
    const message = obj(c?.message);
    addContent(sink, message?.content ?? c?.text);
    sink.other(message?.reasoning_content ?? message?.reasoning);
    sink.other(message?.refusal);
    for (const call of arr(message?.tool_calls) ?? []) sink.other(obj(obj(call)?.function)?.arguments);
    sink.other(obj(message?.function_call)?.arguments);
  }
  return sink;
}

export const openaiChat: Normalizer = (ctx) => {
  const body = ctx.response.body;
  if (!isJsonBody(body)) return chatStream(ctx, parseSse(body));
  const opened = openJson(ctx, body);
  if (isUsage(opened)) return opened;
  const { o, model } = opened;
  const u = obj(o.usage) ?? obj(obj(o.x_groq)?.usage);
  if (!u) {
    const sink = choicesOutput(o);
    return sink.finish(incomplete(ctx, model, sink.text, 'no_usage'));
  }
  const out = result(ctx, model);
  applyChatUsage(out, u, body);
  serviceTier(out, o);
  return out;
};

function chunkUsage(chunk: Obj | undefined): Obj | undefined {
  if (!chunk) return undefined;
  // Groq streams put usage under x_groq on the final chunk; with include_usage there is a
  // top-level copy as well. Either way one request's usage is counted once. Moonshot (Kimi)
  // puts it in the finishing choice instead (choices[0].usage beside finish_reason).
  return obj(chunk.usage) ?? obj(obj(chunk.x_groq)?.usage) ?? choiceUsage(chunk);
}

function choiceUsage(chunk: Obj): Obj | undefined {
  for (const choice of arr(chunk.choices) ?? []) {
    const u = obj(obj(choice)?.usage);
    if (u) return u;
  }
  return undefined;
}

function chatStream(ctx: Ctx, events: SseEvent[]): NormalizedUsage {
  // Usage sits at the end: walk back and parse only chunks that carry a usage object.
  let usage: Obj | undefined;
  let chunk: Obj | undefined;
  let source = '';
  for (let i = events.length - 1; i >= 0; i--) {
    const data = events[i]!.data;
    if (hasObjectValue(data, 'usage')) {
      const parsed = obj(parseJson(data));
      const u = chunkUsage(parsed);
      if (u) {
        usage = u;
        chunk = parsed;
        source = data;
        break;
      }
    }
  }
  const model = pickModel(ctx, chunk?.model ?? firstField(events, 'model'));
  const error = streamError(events);
  if (error) return failed(ctx, model, error);

  if (usage && chatStreamFinished(events, chunk)) {
    const out = result(ctx, model);
    applyChatUsage(out, usage, source);
    serviceTier(out, chunk);
    return out;
  }

  const sink = new TextSink();
  let sawDone = false;
  for (const event of events) {
    if (event.data === '[DONE]') {
      sawDone = true;
      continue;
    }
    const parsed = obj(parseJson(event.data));
    for (const choice of arr(parsed?.choices) ?? []) {
      const c = obj(choice);
      const delta = obj(c?.delta);
      addContent(sink, delta?.content ?? c?.text);
      sink.other(delta?.reasoning_content ?? delta?.reasoning);
      sink.other(delta?.refusal);
      for (const call of arr(delta?.tool_calls) ?? []) sink.other(obj(obj(call)?.function)?.arguments);
      // The deprecated `functions` API streams one call's arguments under delta.function_call.
      sink.other(obj(delta?.function_call)?.arguments);
    }
  }
  const out = incomplete(ctx, model, sink.text, sawDone ? 'stream_without_usage' : 'stream_truncated');
  // A cut stream that carried running usage (vLLM's continuous usage stats): keep what it said.
  if (usage) applyChatUsage(out, usage, source);
  return sink.finish(out);
}

/** A finish_reason, [DONE], or the dedicated usage chunk (`choices: []`) says the stream ended. */
function chatStreamFinished(events: SseEvent[], usageChunk: Obj | undefined): boolean {
  const choices = arr(usageChunk?.choices);
  if (choices && choices.length === 0) return true;
  for (let i = events.length - 1; i >= 0; i--) {
    const data = events[i]!.data;
    if (data === '[DONE]' || hasNonNullValue(data, 'finish_reason')) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Responses API

function applyResponsesUsage(out: NormalizedUsage, u: Obj, source: string): void {
  // Servers that put a Chat Completions usage block in a response object (prompt_tokens, …)
  // are read by that shape, rather than as a response that used nothing.
  if (!hasCount(u.input_tokens) && !hasCount(u.output_tokens) && (hasCount(u.prompt_tokens) || hasCount(u.completion_tokens))) {
    applyChatUsage(out, u, source);
    return;
  }
  const itd = obj(u.input_tokens_details);
  const otd = obj(u.output_tokens_details);
  out.inputTokens = int(u.input_tokens);
  out.cachedInputTokens = int(itd?.cached_tokens);
  out.cacheWriteTokens = int(itd?.cache_write_tokens);
  let output = int(u.output_tokens);
  const reasoning = int(otd?.reasoning_tokens);
  // As on chat completions (applyChatUsage): xAI counts reasoning beside output_tokens, where
  // OpenAI counts it inside, and the total tells the two apart.
  if (reasoning > 0 && hasCount(u.total_tokens)) {
    const total = int(u.total_tokens);
    if (total === out.inputTokens + output + reasoning && total !== out.inputTokens + output) output += reasoning;
  }
  out.outputTokens = output;
  out.reasoningTokens = Math.min(reasoning, output);
  applyReportedCost(out, u, source);
}

const PRICED_TOOL_CALLS: Record<string, string> = {
  web_search_call: 'web_search_calls',
  file_search_call: 'file_search_calls',
  code_interpreter_call: 'code_interpreter_calls',
  image_generation_call: 'image_generation_calls',
};

/** A response object; `source` is the JSON text it was parsed from (for exact decimals). */
function fromResponseObject(ctx: Ctx, r: Obj, source: string): NormalizedUsage {
  const model = pickModel(ctx, r.model);
  const status = str(r.status);
  const error = errorCode(r) ?? (status === 'failed' ? 'failed' : null);
  if (error) return failed(ctx, model, error);
  const u = obj(r.usage);
  if (!u) {
    if (status === 'queued' || status === 'in_progress') return pending(ctx, model, status);
    const sink = responseOutput(r);
    return sink.finish(incomplete(ctx, model, sink.text, 'no_usage'));
  }
  const out = result(ctx, model);
  applyResponsesUsage(out, u, source);
  if (status === 'incomplete') out.details.incomplete_reason = str(obj(r.incomplete_details)?.reason) ?? 'unknown';
  serviceTier(out, r);
  for (const item of arr(r.output) ?? []) {
    const key = PRICED_TOOL_CALLS[str(obj(item)?.type) ?? ''];
    if (key) out.details[key] = (Number(out.details[key]) || 0) + 1;
  }
  return out;
}

/** The field of an output item that a stream sends as OTHER_OUTPUT_DELTAS (tool calls the model wrote). */
const OTHER_OUTPUT_FIELDS: Record<string, string> = {
  function_call: 'arguments',
  custom_tool_call: 'input',
  mcp_call: 'arguments',
  code_interpreter_call: 'code',
};

/**
 * The output of a response object (for the no-usage case): its visible text, and beside it what
 * responsesStream counts of a cut stream (reasoning, refusals, tool-call arguments and code).
 */
function responseOutput(r: Obj): TextSink {
  const sink = new TextSink();
  for (const entry of arr(r.output) ?? []) {
    const item = obj(entry);
    const type = str(item?.type) ?? '';
    if (type === 'reasoning') {
      for (const part of arr(item?.summary) ?? []) sink.other(obj(part)?.text);
      for (const part of arr(item?.content) ?? []) sink.other(obj(part)?.text);
      continue;
    }
    for (const part of arr(item?.content) ?? []) {
      const p = obj(part);
      sink.add(p?.text);
      sink.other(p?.refusal);
    }
    const field = OTHER_OUTPUT_FIELDS[type];
    if (field) sink.other(item?.[field]);
  }
  return sink;
}

export const openaiResponses: Normalizer = (ctx) => {
  const body = ctx.response.body;
  if (!isJsonBody(body)) return responsesStream(ctx, parseSse(body));
  const o = obj(parseJson(body));
  if (!o) return incomplete(ctx, pickModel(ctx, undefined), null, 'unparseable_body');
  return fromResponseObject(ctx, o, body);
};

const TERMINAL = new Set(['response.completed', 'response.incomplete', 'response.failed', 'response.cancelled']);
/** Generated output that is not visible text: counted for the incomplete-stream estimate. */
const OTHER_OUTPUT_DELTAS = new Set([
  'response.reasoning_summary_text.delta',
  'response.reasoning_text.delta',
  'response.refusal.delta',
  'response.function_call_arguments.delta',
  'response.custom_tool_call_input.delta',
  'response.mcp_call_arguments.delta',
  'response.code_interpreter_call_code.delta',
]);

function responsesStream(ctx: Ctx, events: SseEvent[]): NormalizedUsage {
  const error = streamError(events);
  if (!error) {
    // The terminal event carries the whole response, usage included; it is the last one.
    // There is no [DONE] on the wire (the SDK's test mocks add one; it is skipped either way).
    for (let i = events.length - 1; i >= 0; i--) {
      const event = events[i]!;
      if (!TERMINAL.has(eventType(event))) continue;
      const r = obj(obj(parseJson(event.data))?.response);
      if (r) return fromResponseObject(ctx, r, event.data);
    }
  }
  let model: string | null = null;
  const sink = new TextSink();
  for (const event of events) {
    const type = eventType(event);
    if (type === 'response.output_text.delta') sink.add(obj(parseJson(event.data))?.delta);
    else if (OTHER_OUTPUT_DELTAS.has(type)) sink.other(obj(parseJson(event.data))?.delta);
    else if (model === null && (type === 'response.created' || type === 'response.in_progress')) {
      model = str(obj(obj(parseJson(event.data))?.response)?.model);
    }
  }
  if (error) return failed(ctx, pickModel(ctx, model), error);
  return sink.finish(incomplete(ctx, pickModel(ctx, model), sink.text, 'stream_truncated'));
}

// ---------------------------------------------------------------------------------------------
// Embeddings

export const openaiEmbeddings: Normalizer = (ctx) => {
  const body = ctx.response.body;
  if (body.length > LARGE_BODY) {
    // Thousands of floats around a tiny usage block: read just the block.
    const u = lastObjectValue(body, 'usage');
    if (u) return embeddingsResult(ctx, pickModel(ctx, lastStringValue(body, 'model')), u, body);
  }
  const opened = openJson(ctx, body);
  if (isUsage(opened)) return opened;
  const { o, model } = opened;
  const u = obj(o.usage);
  if (!u) return incomplete(ctx, model, null, 'no_usage');
  return embeddingsResult(ctx, model, u, body);
};

function embeddingsResult(ctx: Ctx, model: string | null, u: Obj, source: string): NormalizedUsage {
  const out = result(ctx, model);
  out.inputTokens = hasCount(u.prompt_tokens) ? int(u.prompt_tokens) : hasCount(u.input_tokens) ? int(u.input_tokens) : int(u.total_tokens);
  applyReportedCost(out, u, source);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Images: GPT image models report token usage; dall-e-2/3 are priced per image by size/quality.

function applyImageUsage(out: NormalizedUsage, u: Obj): void {
  const itd = obj(u.input_tokens_details);
  const otd = obj(u.output_tokens_details);
  out.inputTokens += int(u.input_tokens);
  out.cachedInputTokens += int(itd?.cached_tokens);
  out.outputTokens += int(u.output_tokens);
  const d = out.details;
  if (itd) {
    d.input_text_tokens = (Number(d.input_text_tokens) || 0) + int(itd.text_tokens);
    d.input_image_tokens = (Number(d.input_image_tokens) || 0) + int(itd.image_tokens);
  }
  // Text reported above the whole output leaves no image tokens, rather than a negative count pricing refuses.
  const imageOut = hasCount(otd?.image_tokens) ? int(otd?.image_tokens) : Math.max(0, int(u.output_tokens) - int(otd?.text_tokens));
  d.output_image_tokens = (Number(d.output_image_tokens) || 0) + imageOut;
  if (hasCount(otd?.text_tokens)) d.output_text_tokens = (Number(d.output_text_tokens) || 0) + int(otd?.text_tokens);
}

function imageOptions(ctx: Ctx, out: NormalizedUsage, o: Obj | undefined): void {
  const dalle = out.model?.startsWith('dall-e') ?? false;
  const size = str(o?.size) ?? requestString(ctx, 'size') ?? (dalle ? '1024x1024' : null);
  const quality = str(o?.quality) ?? requestString(ctx, 'quality') ?? (out.model === 'dall-e-3' ? 'standard' : null);
  if (size) out.details.size = size;
  if (quality) out.details.quality = quality;
}

export const openaiImages: Normalizer = (ctx) => {
  const body = ctx.response.body;
  if (!isJsonBody(body)) return imageStream(ctx, parseSse(body));
  if (body.length > LARGE_BODY) {
    // Megabytes of base64: count the images by their keys and parse only the usage block. A
    // serializer that writes every field sends the absent one of the two as null: not an image.
    const out = result(ctx, pickModel(ctx, lastStringValue(body, 'model')));
    out.images = countStringValues(body, 'b64_json') + countStringValues(body, 'url');
    const u = lastObjectValue(body, 'usage');
    if (u) applyImageUsage(out, u);
    const size = lastStringValue(body, 'size');
    const quality = lastStringValue(body, 'quality');
    imageOptions(ctx, out, { ...(size ? { size } : {}), ...(quality ? { quality } : {}) });
    if (out.images > 0) return out;
  }
  // The images response names no model: it comes from the request (pickModel falls back to it).
  const opened = openJson(ctx, body);
  if (isUsage(opened)) return opened;
  const { o, model } = opened;
  const out = result(ctx, model);
  out.images = arr(o.data)?.length ?? 0;
  const u = obj(o.usage);
  if (u) applyImageUsage(out, u);
  imageOptions(ctx, out, o);
  return out;
};

function imageStream(ctx: Ctx, events: SseEvent[]): NormalizedUsage {
  const model = pickModel(ctx, undefined);
  const error = streamError(events);
  if (error) return failed(ctx, model, error);
  const out = result(ctx, model);
  for (const event of events) {
    const type = eventType(event);
    if (type !== 'image_generation.completed' && type !== 'image_edit.completed') continue;
    const parsed = obj(parseJson(event.data));
    if (!parsed) continue;
    out.images++;
    const u = obj(parsed.usage);
    if (u) applyImageUsage(out, u);
    if (!out.details.size && str(parsed.size)) out.details.size = str(parsed.size)!;
    if (!out.details.quality && str(parsed.quality)) out.details.quality = str(parsed.quality)!;
  }
  if (out.images === 0) return incomplete(ctx, model, null, 'stream_truncated');
  imageOptions(ctx, out, undefined);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Audio: transcription/translation (duration or tokens) and speech (characters of the input)

function applyTranscriptionUsage(out: NormalizedUsage, u: Obj, source: string): void {
  applyReportedCost(out, u, source);
  if (u.type === 'duration' || typeof u.seconds === 'number') {
    if (typeof u.seconds === 'number') out.audioSeconds = exactDecimal(source, 'seconds', u.seconds);
    // Seconds sent as text or another type are read as int() reads a count (digits, or counted as
    // malformed so that metering refuses the response) rather than billed as no audio at all.
    else if (hasCount(u.seconds)) out.audioSeconds = String(int(u.seconds));
    return;
  }
  // Mistral (Voxtral) bills a transcription per minute of the audio, which it reports as
  // prompt_audio_seconds. Its token counts stay details: as tokens, a per-minute price row would
  // refuse them (and a row with token rates as well would charge the call twice).
  if (typeof u.prompt_audio_seconds === 'number') {
    out.audioSeconds = exactDecimal(source, 'prompt_audio_seconds', u.prompt_audio_seconds);
    detail(out, 'prompt_tokens', u.prompt_tokens);
    detail(out, 'completion_tokens', u.completion_tokens);
    return;
  }
  // The detail key is input_token_details (singular "token") here, unlike Chat/Responses.
  const itd = obj(u.input_token_details) ?? obj(u.input_tokens_details);
  out.inputTokens = hasCount(u.input_tokens) ? int(u.input_tokens) : int(u.prompt_tokens);
  out.outputTokens = hasCount(u.output_tokens) ? int(u.output_tokens) : int(u.completion_tokens);
  if (itd) {
    out.details.input_audio_tokens = int(itd.audio_tokens);
    out.details.input_text_tokens = int(itd.text_tokens);
  }
}

export const openaiTranscription: Normalizer = (ctx) => {
  const body = ctx.response.body;
  if (isSseBody(body)) return transcriptionStream(ctx, parseSse(body), pickModel(ctx, undefined));
  // text, srt and vtt formats carry no usage at all.
  if (!isJsonBody(body)) return incomplete(ctx, pickModel(ctx, undefined), null, 'no_usage');
  if (body.length > LARGE_BODY) {
    // verbose_json of long audio: segments and words by the thousand, usage at the end.
    const u = lastObjectValue(body, 'usage');
    if (u) {
      const out = result(ctx, pickModel(ctx, lastStringValue(body, 'model')));
      const literal = numberLiteralAt(body, valueAt(body, 'duration'));
      const duration = Number(literal);
      if (literal !== '' && Number.isFinite(duration)) out.details.audio_duration_seconds = exactDecimal(body, 'duration', duration);
      applyTranscriptionUsage(out, u, body);
      return out;
    }
  }
  const o = obj(parseJson(body));
  if (!o) return incomplete(ctx, pickModel(ctx, undefined), null, 'unparseable_body');
  // OpenAI's response names no model; Mistral's names the snapshot that answered.
  const model = pickModel(ctx, o.model);
  const error = errorCode(o);
  if (error) return failed(ctx, model, error);
  const out = result(ctx, model);
  if (typeof o.duration === 'number') out.details.audio_duration_seconds = exactDecimal(body, 'duration', o.duration);
  const u = obj(o.usage);
  if (u) applyTranscriptionUsage(out, u, body);
  // usage.seconds is billed (rounded up by the provider); ceil(duration) only when it is absent.
  else if (typeof o.duration === 'number') {
    // Past 2^53 a double has no fraction left to round up, and String() would write "1e+21" or
    // "Infinity": the duration is kept as written (metering refuses it as out of range).
    const seconds = Math.ceil(o.duration);
    out.audioSeconds = Number.isSafeInteger(seconds) ? String(seconds) : exactDecimal(body, 'duration', o.duration);
  } else return incomplete(ctx, model, null, 'no_usage');
  return out;
};

function transcriptionStream(ctx: Ctx, events: SseEvent[], model: string | null): NormalizedUsage {
  const error = streamError(events);
  if (error) return failed(ctx, model, error);
  for (let i = events.length - 1; i >= 0; i--) {
    const event = events[i]!;
    // OpenAI ends with transcript.text.done; Mistral (Voxtral) with transcription.done, which names its model.
    const type = eventType(event);
    if (type !== 'transcript.text.done' && type !== 'transcription.done') continue;
    const parsed = obj(parseJson(event.data));
    const u = obj(parsed?.usage);
    if (!u) continue;
    const out = result(ctx, type === 'transcription.done' ? pickModel(ctx, parsed!.model) : model);
    applyTranscriptionUsage(out, u, event.data);
    return out;
  }
  return incomplete(ctx, model, null, 'stream_truncated');
}

export const openaiSpeech: Normalizer = (ctx) => {
  const body = ctx.response.body;
  const model = pickModel(ctx, undefined);
  const input = requestString(ctx, 'input');
  let out = result(ctx, model);
  if (isSseBody(body)) {
    const events = parseSse(body);
    const error = streamError(events);
    if (error) return failed(ctx, model, error);
    let done: Obj | undefined;
    for (let i = events.length - 1; i >= 0 && !done; i--) {
      if (eventType(events[i]!) === 'speech.audio.done') done = obj(obj(parseJson(events[i]!.data))?.usage);
    }
    if (done) {
      out.inputTokens = int(done.input_tokens);
      out.outputTokens = int(done.output_tokens);
      // Tokens are what such a call is billed by: the text's length stays a detail, or a token
      // price row would refuse the characters (and a row with both rates would charge twice).
      if (input !== null) out.details.input_characters = codePoints(input);
      return out;
    }
    out = incomplete(ctx, model, null, 'stream_truncated');
  }
  // Billed per character of the request's input text; the body is audio.
  if (input !== null) out.characters = codePoints(input);
  return out;
};
