import { definitionForName, findProviderPath, splitUrl } from '../usage/normalize/registry.ts';
import { blankUsage, type NormalizedUsage } from '../usage/usage.types.ts';
import { parseRequestJson } from './request-body.ts';

/**
 * The most a call can use, read from its request, so the gateway can reserve (hold) its price
 * before calling the provider: the output cap the request names (`max_tokens` and its
 * equivalents) times the choices it asks for (`n`, `candidateCount`), and its prompt, counted
 * generously at one token per three bytes of request.
 */

/** When a request names no output cap, this many output tokens are reserved. */
export const DEFAULT_MAX_OUTPUT_TOKENS = 4096;

/** The most choices reserved for (OpenAI's own limit for `n`): a larger count is refused by the provider anyway. */
export const MAX_CHOICES = 128;

/** Token-priced APIs whose request names the model and an output cap. */
const TEXT_APIS = new Set(['chat.completions', 'responses', 'completions', 'messages', 'generateContent', 'streamGenerateContent', 'chat', 'converse', 'converse-stream']);

const OUTPUT_CAPS = ['max_completion_tokens', 'max_output_tokens', 'max_tokens', 'maxTokens'] as const;

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

/** A whole number above zero, or null; Google's JSON (protobuf) also accepts one written as a string. */
function positiveInteger(value: unknown, stringAllowed = false): number | null {
  const number = stringAllowed && typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  return Number.isSafeInteger(number) && (number as number) > 0 ? (number as number) : null;
}

function generationConfig(body: Json): Json | null {
  const generation = body.generationConfig ?? body.generation_config;
  return isObject(generation) ? generation : null;
}

/**
 * The largest output cap the request names. Providers read one field each, and lax
 * OpenAI-compatible servers another than the one sent for OpenAI (or a number written as text):
 * a request naming a small cap in one field and a large one in another is held at the large one.
 */
function outputCap(body: Json): number | null {
  const generation = generationConfig(body);
  const inference = isObject(body.inferenceConfig) ? body.inferenceConfig : null;
  const named = [
    ...OUTPUT_CAPS.map((field) => body[field]), generation?.maxOutputTokens, generation?.max_output_tokens, inference?.maxTokens,
  ].map((value) => positiveInteger(value, true)).filter((value): value is number => value !== null);
  return named.length > 0 ? Math.max(...named) : null;
}

/**
 * How many outputs the request asks for, each up to the output cap: OpenAI's `n` (legacy
 * completions generate `best_of` and return n of them) and Gemini's `candidateCount`, also
 * written as a decimal string (which lax servers read as the number). A count the provider would
 * refuse (0, negative, fractional, not a number) is reserved as one.
 */
function choices(api: string, body: Json): number {
  let count = 1;
  if (api === 'chat.completions' || api === 'completions') {
    // A count written as text too: OpenAI refuses it, but a lax server (vLLM) generates that many, as it reads a cap so written.
    count = Math.max(positiveInteger(body.n, true) ?? 1, api === 'completions' ? (positiveInteger(body.best_of, true) ?? 1) : 1);
  } else if (api === 'generateContent' || api === 'streamGenerateContent') {
    const generation = generationConfig(body);
    count = positiveInteger(generation?.candidateCount ?? generation?.candidate_count, true) ?? 1;
  }
  return Math.min(count, MAX_CHOICES);
}

/** The worst-case usage of a request, or null when it is not a token-priced call we can bound. */
export function maxUsageOf(provider: string, url: URL, requestBody: Buffer): NormalizedUsage | null {
  // The host may be the merchant's own (a proxy, a fake in tests): route by the provider it speaks,
  // past any prefix of a proxy's own, as metering does.
  const definition = definitionForName(provider);
  const routed = definition ? findProviderPath(definition, splitUrl(url.href)) : null;
  const api = routed?.match.api;
  if (!api || !TEXT_APIS.has(api)) return null;
  // Read as a lenient server reads it (NaN and Infinity too): a request it runs is held for.
  const body = parseRequestJson(requestBody);
  if (!isObject(body)) return null;
  // Gemini, Vertex and Bedrock run the model their path names (read by the provider's router,
  // decoded where it can be), whatever the body says; the others the one in the body (as written:
  // no URL decoding). An Azure deployment stands in for a body that names none, as metering
  // takes it when the response names none.
  const named = typeof body.model === 'string' && body.model.trim() !== '' ? body.model : null;
  const model = routed.match.model ?? named ?? routed.match.fallbackModel ?? null;
  if (!model) return null;
  return blankUsage({
    provider,
    api,
    model,
    inputTokens: Math.ceil(requestBody.length / 3),
    // Kept a safe integer: pricing refuses any other, and a call it cannot price is not held at all.
    outputTokens: Math.min((outputCap(body) ?? DEFAULT_MAX_OUTPUT_TOKENS) * choices(api, body), Number.MAX_SAFE_INTEGER),
    requests: 1,
  });
}
