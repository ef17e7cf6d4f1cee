/**
 * Speech providers that bill per character or per audio second.
 * ElevenLabs TTS: the body is audio; the count is the `character-cost` header (current docs),
 * else `x-character-count` (older docs), else the length of the request's `text` (Text to Dialogue's
 * `inputs[].text`).
 * Deepgram STT: body `metadata.duration` (seconds, kept as written), times the channels
 * transcribed (`multichannel=true` bills each channel; `metadata.channels` counts the file's).
 * Deepgram TTS: header `dg-char-count`.
 */
import { formatScaledQuantity, scaledQuantity } from '../../pricing/decimal.ts';
import {
  arr,
  codePoints,
  type Ctx,
  errorCode,
  exactDecimal,
  failed,
  incomplete,
  int,
  type Normalizer,
  obj,
  parseJson,
  pending,
  pickModel,
  requestString,
  result,
  str,
} from './util.ts';

const DIGITS = /^\d+$/;
/** A decimal scaledQuantity reads: not negative, at most 18 decimal places. */
const SCALABLE = /^\d+(\.\d{1,18})?$/;

/**
 * A count header: null when absent (another source is read instead). One sent malformed is
 * counted as such (see int), so post-request metering refuses the response rather than fall
 * back to another count; the gateway, which relayed it, falls back.
 */
function headerInt(ctx: Ctx, name: string): number | null {
  const value = ctx.response.headers[name]?.trim();
  if (!value) return null;
  if (DIGITS.test(value)) return Number(value);
  int(value);
  return null;
}

export const elevenLabsTts: Normalizer = (ctx) => {
  const out = result(ctx, pickModel(ctx, undefined));
  const cost = headerInt(ctx, 'character-cost');
  const count = headerInt(ctx, 'x-character-count');
  const text = requestString(ctx, 'text') ?? dialogueText(ctx);
  const characters = cost ?? count ?? (text !== null ? codePoints(text) : null);
  if (characters === null) return incomplete(ctx, out.model, null, 'no_usage');
  out.characters = characters;
  // The header is the credit charge; whether it already applies a model's multiplier
  // (Flash/Turbo at 0.5) is not documented, so the model is kept beside it.
  if (cost !== null || count !== null) out.details.credits = (cost ?? count)!;
  return out;
};

/** Text to Dialogue's text: its `inputs[].text`, one line per speaker's turn (ElevenLabs' Text to Dialogue guide). */
function dialogueText(ctx: Ctx): string | null {
  const inputs = arr(ctx.request?.inputs);
  if (!inputs) return null;
  let text: string | null = null;
  for (const input of inputs) {
    const line = str(obj(input)?.text);
    if (line !== null) text = (text ?? '') + line;
  }
  return text;
}

export const deepgramListen: Normalizer = (ctx) => {
  const body = ctx.response.body;
  const o = obj(parseJson(body));
  const metadata = obj(o?.metadata);
  const modelInfo = obj(metadata?.model_info);
  const firstModel = modelInfo ? obj(Object.values(modelInfo)[0])?.name : undefined;
  const model = pickModel(ctx, firstModel);
  if (!o) return incomplete(ctx, model, null, 'unparseable_body');
  const error = errorCode(o) ?? str(o.err_code);
  if (error) return failed(ctx, model, error);
  // With a callback URL the transcript (and its duration) goes there, not into this body.
  if (!metadata && str(o.request_id)) return pending(ctx, model, 'callback');
  if (!metadata || typeof metadata.duration !== 'number') return incomplete(ctx, model, null, 'no_usage');
  const out = result(ctx, model);
  const duration = exactDecimal(body, 'duration', metadata.duration);
  out.details.channels = int(metadata.channels) || 1;
  // Transcribed one by one (multichannel), each channel is billed for the whole duration;
  // otherwise the channels are mixed into one transcript, billed once.
  const transcribed = arr(obj(o.results)?.channels)?.length ?? 1;
  // A duration metering cannot read (negative, or past 18 decimals) is left as sent, for metering
  // to refuse, rather than scaled here, which would throw and leave the call unmetered.
  if (transcribed > 1 && SCALABLE.test(duration)) {
    out.details.audio_duration_seconds = duration;
    out.details.transcribed_channels = transcribed;
    out.audioSeconds = formatScaledQuantity(scaledQuantity('duration', duration) * BigInt(transcribed));
  } else out.audioSeconds = duration;
  const summary = obj(metadata.summary_info);
  if (summary) {
    out.details.summary_input_tokens = int(summary.input_tokens);
    out.details.summary_output_tokens = int(summary.output_tokens);
  }
  if (ctx.urlModel && ctx.urlModel !== model) out.details.requested_model = ctx.urlModel;
  return out;
};

export const deepgramSpeak: Normalizer = (ctx) => {
  const out = result(ctx, str(ctx.response.headers['dg-model-name']) ?? pickModel(ctx, undefined));
  const count = headerInt(ctx, 'dg-char-count');
  const text = requestString(ctx, 'text');
  const characters = count ?? (text !== null ? codePoints(text) : null);
  if (characters === null) return incomplete(ctx, out.model, null, 'no_usage');
  out.characters = characters;
  return out;
};
