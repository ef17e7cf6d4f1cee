/**
 * AWS Bedrock runtime: Converse, ConverseStream, InvokeModel and InvokeModelWithResponseStream.
 *
 * Converse `usage.inputTokens` excludes cache reads and writes (as Anthropic's does), so total
 * input is inputTokens + cacheReadInputTokens + cacheWriteInputTokens. The streaming APIs use
 * AWS event-stream framing, which is binary; given as text, the JSON payloads inside the
 * frames are found by scanning (the SDK's `{ metadata: … }` JSON form works the same way).
 * The model is in the URL (`/model/{modelId}/…`).
 */
import type { NormalizedUsage } from '../usage.types.ts';
import { applyAnthropicUsage, fromAnthropicEvents, messageOutput } from './anthropic.ts';
import { applyChatUsage } from './openai.ts';
import type { SseEvent } from './sse.ts';
import { streamError } from './stream.ts';
import { scanJsonObjects } from './json-scan.ts';
import {
  arr,
  type Ctx,
  errorCode,
  failed,
  hasCount,
  incomplete,
  int,
  isJsonBody,
  type Normalizer,
  obj,
  type Obj,
  parseJson,
  pickModel,
  result,
  str,
  TextSink,
} from './util.ts';

function applyConverseUsage(out: NormalizedUsage, u: Obj): void {
  const read = int(u.cacheReadInputTokens ?? u.cacheReadInputTokenCount);
  const write = int(u.cacheWriteInputTokens ?? u.cacheWriteInputTokenCount);
  out.inputTokens = int(u.inputTokens) + read + write;
  out.cachedInputTokens = read;
  out.cacheWriteTokens = write;
  out.outputTokens = int(u.outputTokens);
  const ttl = arr(u.cacheDetails);
  if (ttl || write > 0) {
    let w5 = 0;
    let w1h = 0;
    for (const entry of ttl ?? []) {
      const e = obj(entry);
      if (e?.ttl === '1h') w1h += int(e.inputTokens);
      else w5 += int(e?.inputTokens);
    }
    if (!ttl) w5 = write;
    out.details.cache_write_5m_tokens = w5;
    out.details.cache_write_1h_tokens = w1h;
  }
}

/** A top-level `…Exception` member (SDK JSON form of a stream error), else null. */
function exceptionOf(o: Obj): string | null {
  for (const key of Object.keys(o)) if (key.endsWith('Exception')) return key;
  return errorCode(o);
}

/**
 * A Converse reply's output (for the no-usage estimate): its text, and what is generated but not
 * shown (reasoning, and tool input, counted as the JSON generated), as a cut ConverseStream counts them.
 */
function converseOutput(o: Obj): TextSink {
  const sink = new TextSink();
  for (const item of arr(obj(obj(o.output)?.message)?.content) ?? []) {
    const block = obj(item);
    sink.add(block?.text);
    sink.other(obj(obj(block?.reasoningContent)?.reasoningText)?.text);
    const input = obj(block?.toolUse)?.input;
    if (input !== undefined) sink.other(typeof input === 'string' ? input : JSON.stringify(input));
  }
  return sink;
}

/** An InvokeModel body without counts anywhere: the output of whichever model family wrote it. */
function invokeOutput(o: Obj): TextSink {
  if (Array.isArray(o.content)) return messageOutput(o); // Anthropic Claude
  if (obj(o.output)) return converseOutput(o); // Amazon Nova
  const sink = new TextSink();
  sink.add(o.generation); // Meta Llama
  for (const r of arr(o.results) ?? []) sink.add(obj(r)?.outputText); // Amazon Titan
  for (const output of arr(o.outputs) ?? []) sink.add(obj(output)?.text); // Mistral
  for (const choice of arr(o.choices) ?? []) sink.add(obj(obj(choice)?.message)?.content); // Mistral Large, OpenAI-style
  return sink;
}

export const bedrockConverse: Normalizer = (ctx) => {
  const body = ctx.response.body;
  const model = pickModel(ctx, undefined);
  const o = obj(parseJson(body));
  if (!o) return incomplete(ctx, model, null, 'unparseable_body');
  const error = exceptionOf(o);
  if (error) return failed(ctx, model, error);
  const u = obj(o.usage);
  if (!u) {
    const sink = converseOutput(o);
    return sink.finish(incomplete(ctx, model, sink.text, 'no_usage'));
  }
  const out = result(ctx, model);
  applyConverseUsage(out, u);
  const latency = str(obj(o.performanceConfig)?.latency);
  if (latency) out.details.latency = latency;
  const tier = str(obj(o.serviceTier)?.type);
  if (tier) out.details.service_tier = tier;
  return out;
};

/** An event-stream frame's exception header: the name, then the header's value type (7, a string). */
const EXCEPTION_HEADER = ':exception-type\u0007';

export const bedrockConverseStream: Normalizer = (ctx) => {
  const body = ctx.response.body;
  const model = pickModel(ctx, undefined);
  // Raw frames name an exception in a header: its name, then the string type byte 7. Generated
  // text cannot fake that (JSON escapes control characters), so a reply that merely mentions
  // ":exception-type" is still charged.
  if (body.indexOf(EXCEPTION_HEADER) !== -1) return failed(ctx, model, 'exception');
  const payloads = scanJsonObjects(body);
  let usage: Obj | undefined;
  for (let i = payloads.length - 1; i >= 0 && !usage; i--) {
    const p = payloads[i]!;
    const error = exceptionOf(p);
    if (error) return failed(ctx, model, error);
    // SDK form { metadata: { usage } }; raw frame payload { usage, metrics, p }.
    const u = obj(obj(p.metadata)?.usage) ?? obj(p.usage);
    if (u && hasCount(u.inputTokens)) usage = u;
  }
  for (const p of payloads) {
    const error = exceptionOf(p);
    if (error) return failed(ctx, model, error);
  }
  if (usage) {
    const out = result(ctx, model);
    applyConverseUsage(out, usage);
    return out;
  }
  const sink = new TextSink();
  for (const p of payloads) {
    const delta = obj(obj(p.contentBlockDelta)?.delta) ?? (hasCount(p.contentBlockIndex) ? obj(p.delta) : undefined);
    sink.add(delta?.text);
    sink.other(obj(delta?.reasoningContent)?.text);
    sink.other(obj(delta?.toolUse)?.input);
  }
  return sink.finish(incomplete(ctx, model, sink.text, 'stream_truncated'));
};

const DIGITS = /^\d+$/;

function headerCount(ctx: Ctx, name: string): number | null {
  const value = ctx.response.headers[name]?.trim();
  if (!value) return null;
  // Read as int() reads a count in a body: digits only. Anything else (negative, fractional, and
  // text Number() reads as another number: "0x10" as 16, "1e3" as 1000) is counted as malformed,
  // so post-request metering refuses the response; the gateway meters its value rounded.
  if (DIGITS.test(value)) return Number(value);
  int(value);
  const n = Number(value);
  return Number.isFinite(n) ? int(n) : null;
}

export const bedrockInvoke: Normalizer = (ctx) => {
  const body = ctx.response.body;
  const model = pickModel(ctx, undefined);
  const o = isJsonBody(body) ? obj(parseJson(body)) : undefined;
  const error = o ? exceptionOf(o) : null;
  if (error) return failed(ctx, model, error);
  const out = result(ctx, model);
  const u = obj(o?.usage);
  if (u && hasCount(u.input_tokens)) {
    applyAnthropicUsage(out, u, str(o?.model) ?? model);
    return out;
  }
  if (u && hasCount(u.inputTokens)) {
    applyConverseUsage(out, u); // Amazon Nova
    return out;
  }
  if (u && (hasCount(u.prompt_tokens) || hasCount(u.completion_tokens))) {
    // OpenAI gpt-oss: "the response body follows the chat completion object" (Bedrock user guide,
    // OpenAI models), usage included. Without the count headers it was read as no usage at all.
    applyChatUsage(out, u, body);
    return out;
  }
  // Every model family: InvokeModel reports counts in response headers.
  const input = headerCount(ctx, 'x-amzn-bedrock-input-token-count');
  if (input !== null) {
    const read = headerCount(ctx, 'x-amzn-bedrock-cache-read-input-token-count') ?? 0;
    const write = headerCount(ctx, 'x-amzn-bedrock-cache-write-input-token-count') ?? 0;
    out.inputTokens = input + read + write;
    out.cachedInputTokens = read;
    out.cacheWriteTokens = write;
    out.outputTokens = headerCount(ctx, 'x-amzn-bedrock-output-token-count') ?? 0;
    return out;
  }
  if (o && (hasCount(o.prompt_token_count) || hasCount(o.inputTextTokenCount))) {
    // Meta Llama; Amazon Titan text and embeddings.
    out.inputTokens = int(o.prompt_token_count ?? o.inputTextTokenCount);
    out.outputTokens = int(o.generation_token_count);
    for (const r of arr(o.results) ?? []) out.outputTokens += int(obj(r)?.tokenCount);
    return out;
  }
  if (!o) return incomplete(ctx, model, null, 'no_usage');
  const sink = invokeOutput(o);
  return sink.finish(incomplete(ctx, model, sink.text, 'no_usage'));
};

export const bedrockInvokeStream: Normalizer = (ctx) => {
  const body = ctx.response.body;
  const model = pickModel(ctx, undefined);
  if (body.indexOf(EXCEPTION_HEADER) !== -1) return failed(ctx, model, 'exception');
  // Each chunk is { bytes: base64(JSON of the model's own stream event) }.
  const decoded: Obj[] = [];
  const asEvents: SseEvent[] = [];
  for (const frame of scanJsonObjects(body)) {
    const error = exceptionOf(frame);
    if (error) return failed(ctx, model, error);
    const bytes = str(frame.bytes) ?? str(obj(frame.chunk)?.bytes);
    if (!bytes) continue;
    const text = Buffer.from(bytes, 'base64').toString('utf8');
    const event = obj(parseJson(text));
    if (!event) continue;
    decoded.push(event);
    asEvents.push({ event: str(event.type) ?? '', data: text, complete: true });
  }
  if (decoded.some((e) => e.type === 'message_start')) {
    // Claude models: the Anthropic stream events, inside Bedrock's frames.
    return fromAnthropicEvents(ctx, asEvents, streamError(asEvents));
  }
  for (let i = decoded.length - 1; i >= 0; i--) {
    const metrics = obj(decoded[i]!['amazon-bedrock-invocationMetrics']);
    if (!metrics) continue;
    const out = result(ctx, model);
    const read = int(metrics.cacheReadInputTokenCount);
    const write = int(metrics.cacheWriteInputTokenCount);
    out.inputTokens = int(metrics.inputTokenCount) + read + write;
    out.cachedInputTokens = read;
    out.cacheWriteTokens = write;
    out.outputTokens = int(metrics.outputTokenCount);
    return out;
  }
  const sink = new TextSink();
  for (const e of decoded) {
    // Llama, Titan, Amazon Nova (ConverseStream's events as JSON), and Mistral (outputs[]).
    sink.add(e.generation ?? e.outputText ?? obj(e.delta)?.text ?? obj(obj(e.contentBlockDelta)?.delta)?.text);
    for (const output of arr(e.outputs) ?? []) sink.add(obj(output)?.text);
    // Cohere: Command R streams its v1 chat events (text-generation), Command its generations[].
    if (e.event_type === 'text-generation') sink.add(e.text);
    for (const generation of arr(e.generations) ?? []) sink.add(obj(generation)?.text);
    // OpenAI gpt-oss streams chat completion chunks.
    for (const choice of arr(e.choices) ?? []) sink.add(obj(obj(choice)?.delta)?.content);
  }
  return sink.finish(incomplete(ctx, model, sink.text, 'stream_truncated'));
};
