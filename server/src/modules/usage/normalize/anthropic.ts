/**
 * Anthropic Messages (direct, and the same shape on Vertex rawPredict, Bedrock InvokeModel and
 * the Anthropic-compatible endpoints of other providers).
 *
 * `input_tokens` excludes cache reads and writes, so total input is the sum of the three.
 * Streams: `message_start` has the input side and a placeholder output count; each
 * `message_delta` usage is cumulative, so the last one wins (never add the placeholder).
 * Beta `usage.iterations`: with compaction the top level leaves the compaction pass out, so
 * the iterations are summed; iterations run on another model (a declined fallback hop, an
 * advisor) are reported in details under that model, since they are priced by it.
 */
import type { NormalizedUsage } from '../usage.types.ts';
import { eventType, streamError } from './stream.ts';
import { parseSse, type SseEvent } from './sse.ts';
import {
  arr,
  type Ctx,
  detail,
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
  isUsage,
  openJson,
} from './util.ts';

interface Counts {
  input: number;
  read: number;
  write: number;
  write5m: number;
  write1h: number;
  output: number;
}

function counts(u: Obj): Counts {
  const split = obj(u.cache_creation);
  // The total is the TTL split's sum; a usage that sends only the split (the total null or left
  // out) still wrote both parts, rather than just the 1-hour part settle() would keep.
  const write = hasCount(u.cache_creation_input_tokens) || !split
    ? int(u.cache_creation_input_tokens)
    : int(split.ephemeral_5m_input_tokens) + int(split.ephemeral_1h_input_tokens);
  // Without the TTL split, writes are at the default 5-minute TTL.
  const write1h = split ? int(split.ephemeral_1h_input_tokens) : 0;
  const write5m = split ? int(split.ephemeral_5m_input_tokens) : write;
  return { input: int(u.input_tokens), read: int(u.cache_read_input_tokens), write, write5m, write1h, output: int(u.output_tokens) };
}

function add(into: Counts, c: Counts): void {
  into.input += c.input;
  into.read += c.read;
  into.write += c.write;
  into.write5m += c.write5m;
  into.write1h += c.write1h;
  into.output += c.output;
}

/** Anthropic usage into `out`; `model` is the response's model (iterations on others go aside). */
export function applyAnthropicUsage(out: NormalizedUsage, u: Obj, model: string | null): void {
  let c = counts(u);
  const iterations = arr(u.iterations);
  if (iterations && iterations.length > 0) {
    const own: Counts = { input: 0, read: 0, write: 0, write5m: 0, write1h: 0, output: 0 };
    for (const entry of iterations) {
      const it = obj(entry);
      if (!it) continue;
      const itModel = str(it.model);
      const itCounts = counts(it);
      if (!it.cache_creation && itCounts.write === c.write && c.write > 0) {
        // The served hop mirrors the top level, whose TTL split is then the one to use.
        itCounts.write5m = c.write5m;
        itCounts.write1h = c.write1h;
      }
      if (itModel === null || itModel === model) add(own, itCounts);
      else {
        const prefix = `other_model.${itModel}.`;
        const d = out.details;
        d[`${prefix}input_tokens`] = (Number(d[`${prefix}input_tokens`]) || 0) + itCounts.input + itCounts.read + itCounts.write;
        d[`${prefix}cached_input_tokens`] = (Number(d[`${prefix}cached_input_tokens`]) || 0) + itCounts.read;
        d[`${prefix}cache_write_tokens`] = (Number(d[`${prefix}cache_write_tokens`]) || 0) + itCounts.write;
        d[`${prefix}output_tokens`] = (Number(d[`${prefix}output_tokens`]) || 0) + itCounts.output;
      }
    }
    c = own;
  }
  out.inputTokens = c.input + c.read + c.write;
  out.cachedInputTokens = c.read;
  out.cacheWriteTokens = c.write;
  out.outputTokens = c.output;
  out.reasoningTokens = Math.min(int(obj(u.output_tokens_details)?.thinking_tokens), c.output);
  out.details.cache_write_5m_tokens = c.write5m;
  out.details.cache_write_1h_tokens = c.write1h;
  const tier = str(u.service_tier);
  if (tier) out.details.service_tier = tier;
  // Data residency ("us") is priced differently.
  const geo = str(u.inference_geo);
  if (geo) out.details.inference_geo = geo;
  const tools = obj(u.server_tool_use);
  detail(out, 'web_search_requests', tools?.web_search_requests);
  detail(out, 'web_fetch_requests', tools?.web_fetch_requests);
}

/**
 * The output of a message body (for the no-usage case): its text, and beside it what a cut
 * stream counts (thinking, and tool input, counted as the JSON generated).
 */
export function messageOutput(o: Obj): TextSink {
  const sink = new TextSink();
  for (const entry of arr(o.content) ?? []) {
    const block = obj(entry);
    sink.add(block?.text);
    sink.other(block?.thinking);
    const input = obj(block?.input);
    if (input) sink.other(JSON.stringify(input));
  }
  return sink;
}

export const anthropicMessages: Normalizer = (ctx) => {
  const body = ctx.response.body;
  if (!isJsonBody(body)) return anthropicStream(ctx, parseSse(body));
  const opened = openJson(ctx, body);
  if (isUsage(opened)) return opened;
  const { o, model } = opened;
  const u = obj(o.usage);
  if (!u) {
    const sink = messageOutput(o);
    return sink.finish(incomplete(ctx, model, sink.text, 'no_usage'));
  }
  const out = result(ctx, model);
  applyAnthropicUsage(out, u, model);
  return out;
};

/** The usage counts message_start already knows in full (output_tokens there is a placeholder). */
const INPUT_SIDE = new Set(['input_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens']);

function splitSum(value: unknown): number {
  const split = obj(value);
  return split ? int(split.ephemeral_5m_input_tokens) + int(split.ephemeral_1h_input_tokens) : 0;
}

/**
 * The delta's cache-write TTL split into `merged`, by the rule of the input counts: a split of
 * zeros never erases the one message_start sent (the 1-hour writes would be costed at the
 * 5-minute rate, or a total given only by its split lost). A split with a count is the final one
 * and wins; it is its own total (see counts()), so a total it outgrows is raised to its sum.
 */
function mergeSplit(merged: Obj, value: unknown): void {
  const sum = splitSum(value);
  if (sum === 0 && obj(merged.cache_creation)) return;
  merged.cache_creation = value;
  if (sum > int(merged.cache_creation_input_tokens)) merged.cache_creation_input_tokens = sum;
}

function anthropicStream(ctx: Ctx, events: SseEvent[]): NormalizedUsage {
  return fromAnthropicEvents(ctx, events, streamError(events));
}

function payload(event: SseEvent): Obj | undefined {
  return obj(parseJson(event.data));
}

/**
 * Normalizes Anthropic stream events (SSE, or frames Bedrock decoded into the same form).
 * Only message_start and the last message_delta are parsed; content deltas are skipped
 * unless the stream turns out to be cut and its text is wanted.
 */
export function fromAnthropicEvents(ctx: Ctx, events: SseEvent[], error: string | null): NormalizedUsage {
  let start: Obj | undefined;
  let lastDelta: Obj | undefined;
  let stopped = false;
  for (let i = 0; i < events.length && !start; i++) {
    if (eventType(events[i]!) === 'message_start') start = obj(payload(events[i]!)?.message);
  }
  for (let i = events.length - 1; i >= 0; i--) {
    const type = eventType(events[i]!);
    if (type === 'message_stop') stopped = true;
    else if (type === 'message_delta') {
      lastDelta = payload(events[i]!);
      break;
    }
  }
  const model = pickModel(ctx, start?.model);
  if (error) return failed(ctx, model, error);

  const startUsage = obj(start?.usage);
  const deltaUsage = obj(lastDelta?.usage);
  // Deltas repeat the input and cache fields cumulatively; older streams omit them, and then
  // message_start's values stand. Some Anthropic-compatible servers (SGLang) send them as 0
  // there: a zero never erases an input-side count message_start sent (cumulative counts only grow).
  const merged: Obj = Object.assign({}, startUsage);
  if (deltaUsage) {
    for (const key in deltaUsage) {
      const value = deltaUsage[key];
      if (value === null || value === undefined) continue;
      // A total message_start gave only by its split (see counts()) is not erased by a zero either.
      if (value === 0 && INPUT_SIDE.has(key) && (hasCount(merged[key]) || (key === 'cache_creation_input_tokens' && splitSum(merged.cache_creation) > 0))) continue;
      if (key === 'cache_creation') mergeSplit(merged, value);
      else merged[key] = value;
    }
  }
  const finished = stopped || str(obj(lastDelta?.delta)?.stop_reason) !== null;
  if (deltaUsage && finished && hasCount(deltaUsage.output_tokens)) {
    const out = result(ctx, model);
    applyAnthropicUsage(out, merged, model);
    return out;
  }

  const sink = new TextSink();
  for (const event of events) {
    if (eventType(event) !== 'content_block_delta') continue;
    const delta = obj(payload(event)?.delta);
    if (delta?.type === 'text_delta') sink.add(delta.text);
    else sink.other(delta?.thinking ?? delta?.partial_json);
  }
  const out = incomplete(ctx, model, sink.text, 'stream_truncated');
  // The input side is known from message_start; the output so far is not (its count is a placeholder).
  if (start) applyAnthropicUsage(out, deltaUsage ? merged : { ...startUsage, output_tokens: 0 }, model);
  return sink.finish(out);
}
