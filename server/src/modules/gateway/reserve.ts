import { definitionForName, route, splitUrl } from '../usage/normalize/registry.ts';
import { blankUsage, type NormalizedUsage } from '../usage/usage.types.ts';

/**
 * The most a call can use, read from its request, so the gateway can reserve (hold) its price
 * before calling the provider: the output cap the request names (`max_tokens` and its
 * equivalents) and its prompt, counted generously at one token per three bytes of request.
 */

/** When a request names no output cap, this many output tokens are reserved. */
export const DEFAULT_MAX_OUTPUT_TOKENS = 4096;

/** Token-priced APIs whose request names the model and an output cap. */
const TEXT_APIS = new Set(['chat.completions', 'responses', 'completions', 'messages', 'generateContent', 'streamGenerateContent', 'chat', 'converse', 'converse-stream']);

const OUTPUT_CAPS = ['max_completion_tokens', 'max_output_tokens', 'max_tokens', 'maxTokens'] as const;

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

function outputCap(body: Json): number | null {
  for (const field of OUTPUT_CAPS) {
    const value = body[field];
    if (Number.isSafeInteger(value) && (value as number) > 0) return value as number;
  }
  const generation = body.generationConfig ?? body.generation_config;
  if (isObject(generation)) {
    const value = generation.maxOutputTokens ?? generation.max_output_tokens;
    if (Number.isSafeInteger(value) && (value as number) > 0) return value as number;
  }
  const inference = body.inferenceConfig;
  if (isObject(inference) && Number.isSafeInteger(inference.maxTokens) && (inference.maxTokens as number) > 0) return inference.maxTokens as number;
  return null;
}

/** The worst-case usage of a request, or null when it is not a token-priced call we can bound. */
export function maxUsageOf(provider: string, url: URL, requestBody: Buffer): NormalizedUsage | null {
  // The host may be the merchant's own (a proxy, a fake in tests): route by the provider it speaks.
  const definition = definitionForName(provider);
  const api = definition ? route(definition, splitUrl(url.href))?.api : undefined;
  if (!api || !TEXT_APIS.has(api)) return null;
  let body: unknown;
  try {
    body = JSON.parse(requestBody.toString('utf8'));
  } catch {
    return null;
  }
  if (!isObject(body)) return null;
  // Gemini and Bedrock name the model in the path; the others in the body (as written: no URL decoding).
  const model = typeof body.model === 'string' ? body.model : modelInPath(url.pathname);
  if (!model) return null;
  return blankUsage({
    provider,
    api,
    model,
    inputTokens: Math.ceil(requestBody.length / 3),
    outputTokens: outputCap(body) ?? DEFAULT_MAX_OUTPUT_TOKENS,
    requests: 1,
  });
}

/** The model a path names (".../models/gemini-2.5-flash:generateContent"), URL-decoded. */
function modelInPath(pathname: string): string | null {
  const encoded = /\/models\/([^/:]+)/.exec(pathname)?.[1];
  if (!encoded) return null;
  try {
    return decodeURIComponent(encoded);
  } catch {
    return encoded; // a broken escape ("%ZZ"): the text as sent, which simply names no priced model
  }
}
