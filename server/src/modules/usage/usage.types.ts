/**
 * One provider response reduced to what billing needs. Every provider reports usage in its
 * own shape; normalizers (./normalize) turn each into this. Quantities are integers
 * (tokens, characters, images, requests) or exact decimal strings (seconds), never floats.
 */
export interface NormalizedUsage {
  /** Provider family id, e.g. "openai", "anthropic", "gemini", "groq". */
  provider: string;
  /** Which API of the provider, e.g. "chat.completions", "responses", "messages", "embeddings". */
  api: string;
  /** The model as the provider reported it (or as the request named it when the body has none). */
  model: string | null;
  /** Every prompt token processed, including cache reads and cache writes. */
  inputTokens: number;
  /** Cache reads (hits); a subset of inputTokens. */
  cachedInputTokens: number;
  /** Tokens written to a prompt cache; a subset of inputTokens. */
  cacheWriteTokens: number;
  /** All generated tokens, reasoning included. */
  outputTokens: number;
  /** Informational subset of outputTokens. */
  reasoningTokens: number;
  /** Audio duration billed, as an exact decimal string of seconds ("25.933313"), or null. */
  audioSeconds: string | null;
  /** Characters billed (text-to-speech), or 0. */
  characters: number;
  /** Images generated, or 0. */
  images: number;
  /** Requests billed (1 for a successful call). */
  requests: number;
  /** Extra provider detail that prices may depend on (image size/quality, cache TTL split, …). */
  details: Record<string, string | number>;
  /** The provider's own reported cost in USD (OpenRouter), as a decimal string, or null. */
  providerReportedCostUsd: string | null;
  /**
   * False when nothing may be charged from what the provider reported: error responses, and
   * streams cut before their usage arrived (see `incomplete`).
   */
  billable: boolean;
  /** A stream that ended before the provider reported usage. Metering applies its policy. */
  incomplete: boolean;
  /** For incomplete streams: the text streamed so far, so a policy can estimate output. */
  streamedText: string | null;
  /**
   * A provider-side id naming one billable unit of work across repeated responses (a polled
   * job returns the same finished result again and again); responses with the same billingId
   * are charged once. Set only on billable responses, e.g. "replicate:prediction:<id>".
   */
  billingId?: string | null;
}

/** A record of nothing used yet (no provider, no requests): callers fill in what they know. */
export function blankUsage(fields: Partial<NormalizedUsage> = {}): NormalizedUsage {
  return {
    provider: '', api: '', model: null, inputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0, outputTokens: 0, reasoningTokens: 0,
    audioSeconds: null, characters: 0, images: 0, requests: 0, details: {}, providerReportedCostUsd: null, billable: true, incomplete: false, streamedText: null,
    ...fields,
  };
}

/** A provider response as a gateway or an app saw it. */
export interface ProviderResponse {
  /** The provider URL the request went to (host and path identify the provider and API). */
  url: string;
  /** HTTP status; 4xx/5xx are never billable. */
  status: number;
  /** Response headers, lower-case names (TTS providers carry billing quantities here). */
  headers: Record<string, string>;
  /** Response body as text: JSON, or an SSE stream's text. Empty for binary audio. */
  body: string;
  /** The request body when known (model, image size/quality, TTS text live there for some APIs). */
  requestBody?: unknown;
  /** Forces the provider family instead of detecting it from the URL. */
  provider?: string;
  /**
   * The model the call was made for, where the response cannot name it: fal's queue result URL
   * names only the app (fal-ai/flux for a fal-ai/flux/dev request), and its body no model.
   * Replaces the model read from the response.
   */
  model?: string;
}
