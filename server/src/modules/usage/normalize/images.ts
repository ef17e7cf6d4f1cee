/**
 * Image providers billed per generation: Stability, fal, Replicate, Black Forest Labs,
 * Ideogram, Recraft. `images` counts the images returned (or, for providers that charge when
 * a job is submitted, the one image the submission asked for). Queue submissions and polls
 * that carry no result are not billable; the result is billed once, where it appears.
 */
import {
  arr,
  type Ctx,
  errorCode,
  exactDecimal,
  failed,
  hasCount,
  incomplete,
  int,
  isJsonBody,
  type Normalizer,
  obj,
  type Obj,
  parseJson,
  pending,
  pickModel,
  requestString,
  result,
  str,
} from './util.ts';

function parsed(ctx: Ctx): Obj | undefined {
  return isJsonBody(ctx.response.body) ? obj(parseJson(ctx.response.body)) : undefined;
}

/** A poll or status check: never a charge by itself. */
export const imagePoll: Normalizer = (ctx) => {
  const o = parsed(ctx);
  return pending(ctx, pickModel(ctx, o?.model), str(o?.status) ?? 'poll');
};

// fal: sync `fal.run/{app}` returns the result; `queue.fal.run/{app}` returns a ticket and
// `…/requests/{id}` the result.
export const fal: Normalizer = (ctx) => {
  const o = parsed(ctx);
  const model = pickModel(ctx, undefined);
  if (!o) return incomplete(ctx, model, null, 'unparseable_body');
  const error = errorCode(o);
  if (error) return failed(ctx, model, error);
  const images = arr(o.images)?.length ?? (obj(o.image) ? 1 : 0);
  const status = str(o.status);
  if (images === 0 && (status === 'IN_QUEUE' || status === 'IN_PROGRESS' || (str(o.request_id) && str(o.response_url)))) {
    return pending(ctx, model, status ?? 'IN_QUEUE');
  }
  const out = result(ctx, model);
  out.images = images;
  if (obj(o.video)) out.details.videos = 1;
  const inference = obj(o.timings)?.inference;
  if (typeof inference === 'number') out.details.inference_seconds = exactDecimal(ctx.response.body, 'inference', inference);
  if (ctx.api === 'queue.result') {
    // Every fetch of a finished queue request returns the same result: charge the request once,
    // however its id is spelt in the URL (fal's ids are UUIDs: percent-encoded or upper-case, the same request).
    const id = falRequestId(ctx.path.slice(ctx.path.lastIndexOf('/requests/') + '/requests/'.length));
    if (id) out.billingId = `fal:request:${id}`;
  }
  return out;
};

function falRequestId(raw: string): string | null {
  let id: string;
  try {
    id = decodeURIComponent(raw).toLowerCase();
  } catch {
    return null;
  }
  return /^[\w-]{1,100}$/.test(id) ? id : null;
}

const MEDIA = /\.(mp4|webm|mov|gif|wav|mp3|ogg|flac|m4a)(\?|$)/i;

// Replicate: a prediction is billed when it has succeeded; starting/processing are polls.
export const replicate: Normalizer = (ctx) => {
  const o = parsed(ctx);
  const model = pickModel(ctx, o?.model);
  if (!o) return incomplete(ctx, model, null, 'unparseable_body');
  const status = str(o.status);
  if (status === 'starting' || status === 'processing') return pending(ctx, model, status);
  const predictTime = obj(o.metrics)?.predict_time;
  const error = status === 'failed' || status === 'canceled' || status === 'aborted' ? status : errorCode(o);
  // A list of predictions, or anything without a status, is not a finished prediction.
  if (!error && status !== 'succeeded') return pending(ctx, model, status ?? 'unknown');
  if (error) {
    const out = failed(ctx, model, error);
    if (typeof predictTime === 'number') out.details.predict_time_seconds = exactDecimal(ctx.response.body, 'predict_time', predictTime);
    return out;
  }
  const out = result(ctx, model);
  const metrics = obj(o.metrics);
  if (hasCount(metrics?.input_token_count) || hasCount(metrics?.output_token_count)) {
    // Language models on Replicate stream tokens as a string array: billed by tokens.
    out.inputTokens = int(metrics?.input_token_count);
    out.outputTokens = int(metrics?.output_token_count);
  } else {
    const outputs = typeof o.output === 'string' ? [o.output] : (arr(o.output) ?? []);
    let files = 0;
    for (const item of outputs) {
      if (typeof item !== 'string') continue;
      if (MEDIA.test(item)) files++;
      else out.images++;
    }
    if (hasCount(metrics?.image_count)) out.images = int(metrics?.image_count);
    if (files > 0) out.details.media_outputs = files;
  }
  if (typeof predictTime === 'number') out.details.predict_time_seconds = exactDecimal(ctx.response.body, 'predict_time', predictTime);
  const id = str(o.id);
  if (id) {
    out.details.prediction_id = id;
    // Every poll of a finished prediction returns it again: charge the prediction once.
    if (/^[\w-]{1,100}$/.test(id)) out.billingId = `replicate:prediction:${id}`;
  }
  return out;
};

// Black Forest Labs charges at submission (`{id, polling_url, cost}`); get_result is a poll.
export const bfl: Normalizer = (ctx) => {
  const o = parsed(ctx);
  const model = pickModel(ctx, undefined);
  if (!o) return incomplete(ctx, model, null, 'unparseable_body');
  const error = errorCode(o) ?? (Array.isArray(o.detail) || typeof o.detail === 'string' ? 'invalid_request' : null);
  if (error) return failed(ctx, model, error);
  const out = result(ctx, model);
  out.images = 1;
  if (typeof o.cost === 'number') out.details.cost_credits = exactDecimal(ctx.response.body, 'cost', o.cost);
  if (typeof o.output_mp === 'number') out.details.output_megapixels = exactDecimal(ctx.response.body, 'output_mp', o.output_mp);
  return out;
};

// Ideogram and Recraft: `data[]` holds the generated images.
export const imageList: Normalizer = (ctx) => {
  const o = parsed(ctx);
  const request = obj(ctx.request?.image_request) ?? ctx.request;
  const model = str(request?.model) ?? pickModel(ctx, undefined);
  if (!o) return incomplete(ctx, model, null, 'unparseable_body');
  const error = errorCode(o);
  if (error) return failed(ctx, model, error);
  const out = result(ctx, model);
  out.images = arr(o.data)?.length ?? 0;
  const speed = str(request?.rendering_speed);
  if (speed) out.details.rendering_speed = speed;
  return out;
};

// Stability: binary image (the usual), JSON `{image}` / v1 `{artifacts}`, or an async `{id}`.
export const stability: Normalizer = (ctx) => {
  // The request's model (sd3.5-large vs sd3.5-medium) is finer than the URL's variant (sd3).
  const model = requestString(ctx, 'model') ?? pickModel(ctx, undefined);
  const finish = str(ctx.response.headers['finish-reason']);
  const out = result(ctx, model);
  if (finish) out.details.finish_reason = finish;
  if (!isJsonBody(ctx.response.body)) {
    out.images = 1;
    return out;
  }
  const o = parsed(ctx);
  if (!o) return incomplete(ctx, model, null, 'unparseable_body');
  const error = errorCode(o) ?? (arr(o.errors) ? 'invalid_request' : null);
  if (error) return failed(ctx, model, error);
  const artifacts = arr(o.artifacts);
  out.images = artifacts ? artifacts.length : str(o.image) || str(o.id) ? 1 : 0;
  const reason = str(o.finish_reason);
  if (reason) out.details.finish_reason = reason;
  return out;
};
