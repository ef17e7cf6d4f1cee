/**
 * Cohere chat (v2 `usage`, v1 `meta`), embed and rerank. Billing follows `billed_units`, which
 * leave out the prompt template Cohere adds; `tokens` (what the model processed) goes to
 * details. Responses name no model, so it comes from the request.
 */
import type { NormalizedUsage } from '../usage.types.ts';
import { scanJsonObjects } from './json-scan.ts';
import { eventType, isSseBody, streamError } from './stream.ts';
import { parseSse } from './sse.ts';
import {
  arr,
  type Ctx,
  detail,
  errorCode,
  failed,
  incomplete,
  int,
  isJsonBody,
  type Normalizer,
  obj,
  type Obj,
  parseJson,
  pickModel,
  result,
  TextSink,
} from './util.ts';

function applyCohereUsage(out: NormalizedUsage, usage: Obj): void {
  const billed = obj(usage.billed_units);
  const tokens = obj(usage.tokens);
  out.inputTokens = int(billed?.input_tokens);
  out.outputTokens = int(billed?.output_tokens);
  out.cachedInputTokens = Math.min(int(usage.cached_tokens), out.inputTokens);
  detail(out, 'processed_input_tokens', tokens?.input_tokens);
  detail(out, 'processed_output_tokens', tokens?.output_tokens);
  detail(out, 'search_units', billed?.search_units);
  detail(out, 'classifications', billed?.classifications);
  detail(out, 'input_images', billed?.images);
}

function usageOf(o: Obj | undefined): Obj | undefined {
  return obj(o?.usage) ?? obj(o?.meta);
}

export const cohere: Normalizer = (ctx) => {
  const body = ctx.response.body;
  const model = pickModel(ctx, undefined);
  if (isJsonBody(body)) {
    const o = obj(parseJson(body));
    // v1 streams (and some v2 clients) are newline-delimited JSON rather than SSE.
    if (!o) return cohereStream(ctx, model, scanJsonObjects(body), null);
    const error = errorCode(o);
    if (error) return failed(ctx, model, error);
    const usage = usageOf(o);
    if (!usage) {
      const sink = messageOutput(o);
      return sink.finish(incomplete(ctx, model, sink.text, 'no_usage'));
    }
    const out = result(ctx, model);
    applyCohereUsage(out, usage);
    return out;
  }
  if (!isSseBody(body)) return incomplete(ctx, model, null, 'unparseable_body');
  const events = parseSse(body);
  const error = streamError(events);
  // Parse only the end event unless the stream was cut.
  for (let i = events.length - 1; i >= 0; i--) {
    const type = eventType(events[i]!);
    if (type === 'message-end' || type === 'stream-end') {
      const end = obj(parseJson(events[i]!.data));
      if (end) return cohereStream(ctx, model, [end], error);
    }
  }
  const chunks: Obj[] = [];
  for (const e of events) {
    const parsed = obj(parseJson(e.data));
    if (parsed) chunks.push(parsed);
  }
  return cohereStream(ctx, model, chunks, error);
};

/**
 * The output of a chat body (for the no-usage case): v2's message text, and beside it what a cut
 * stream counts (the tool plan and tool-call arguments); v1's text.
 */
function messageOutput(o: Obj): TextSink {
  const sink = new TextSink();
  const message = obj(o.message);
  for (const part of arr(message?.content) ?? []) {
    sink.add(obj(part)?.text);
    // Command A Reasoning answers with a `thinking` block before its text: output, counted beside it.
    sink.other(obj(part)?.thinking);
  }
  sink.other(message?.tool_plan);
  for (const call of arr(message?.tool_calls) ?? []) sink.other(obj(obj(call)?.function)?.arguments);
  sink.add(o.text);
  return sink;
}

function cohereStream(ctx: Ctx, model: string | null, chunks: Obj[], error: string | null): NormalizedUsage {
  if (error) return failed(ctx, model, error);
  for (let i = chunks.length - 1; i >= 0; i--) {
    const chunk = chunks[i]!;
    // v2: message-end → delta.usage; v1: stream-end → response.meta.
    let usage: Obj | undefined;
    if (chunk.type === 'message-end') usage = obj(obj(chunk.delta)?.usage);
    else if (chunk.event_type === 'stream-end') usage = usageOf(obj(chunk.response));
    if (usage) {
      const out = result(ctx, model);
      applyCohereUsage(out, usage);
      return out;
    }
    const code = errorCode(chunk);
    if (code) return failed(ctx, model, code);
  }
  const sink = new TextSink();
  for (const chunk of chunks) {
    if (chunk.type === 'content-delta') {
      // A reasoning model streams its thinking as content deltas too, under `thinking` rather than `text`.
      const content = obj(obj(obj(chunk.delta)?.message)?.content);
      sink.add(content?.text);
      sink.other(content?.thinking);
    } else if (chunk.type === 'tool-plan-delta') sink.other(obj(obj(chunk.delta)?.message)?.tool_plan);
    else if (chunk.type === 'tool-call-delta') sink.other(obj(obj(obj(obj(chunk.delta)?.message)?.tool_calls)?.function)?.arguments);
    else if (chunk.event_type === 'text-generation') sink.add(chunk.text);
  }
  return sink.finish(incomplete(ctx, model, sink.text, 'stream_truncated'));
}
