/**
 * Provider usage normalizers: one provider response in, one NormalizedUsage out. Pure
 * functions (no I/O, no clock); pricing and the incomplete-stream policy live elsewhere.
 *
 *   detectProvider(url)          which provider and API a request URL goes to
 *   normalizeResponse(response)  the usage a response reports (throws UnknownProviderError)
 *   responseHeaders(headers)     headers as the normalizers read them (lower-case names, text values)
 *   canonicalProviderId(name)    a provider's id for its id or an alias ("claude" → "anthropic")
 *   SUPPORTED_PROVIDERS          every provider id with its hosts, for docs and allow-lists
 */
import { AppError, invalidField } from '../../../shared/errors.ts';
import type { NormalizedUsage, ProviderResponse } from '../usage.types.ts';
import { definitionForHost, definitionForName, route, routeNamed, splitUrl, type UrlParts } from './registry.ts';
import { type Ctx, errorCode, failed, isJsonBody, obj, type Obj, parseJson, parseRequestJson, pickModel, pending } from './util.ts';

export { canonicalProviderId, SUPPORTED_PROVIDERS, type SupportedProvider } from './registry.ts';
export { parseSse, type SseEvent } from './sse.ts';

/** The URL's host is not a supported provider, and no known `provider` override was given. */
export class UnknownProviderError extends AppError {
  readonly host: string;

  constructor(host: string, override?: string) {
    super(
      'VALIDATION',
      override !== undefined
        ? `Unknown provider "${override}": it is not a supported provider id or alias (see SUPPORTED_PROVIDERS)`
        : `Cannot identify the AI provider from the request URL: host "${host || '(none)'}" is not a supported provider. ` +
            'Set ProviderResponse.provider to a supported provider id to force one (see SUPPORTED_PROVIDERS).',
      // The field at fault, as every other refused input names it: the override, or the URL it was read from.
      { field: override !== undefined ? 'response.provider' : 'response.url', host, ...(override !== undefined ? { provider: override } : {}) },
    );
    this.name = 'UnknownProviderError';
    this.host = host;
  }
}

/** Provider and API for a request URL, or null when the host is not a supported provider. */
export function detectProvider(url: string): { provider: string; api: string } | null {
  const parts = splitUrl(url);
  const definition = definitionForHost(parts.host);
  if (!definition) return null;
  return { provider: definition.id, api: route(definition, parts)?.api ?? 'unknown' };
}

/** The usage a provider response reports, in provider-neutral form. */
export function normalizeResponse(response: ProviderResponse): NormalizedUsage {
  const parts: UrlParts = splitUrl(response.url);
  // A provider sent as null or blank (serializers and forms write unset fields so) is no
  // override, as GraphQL reads null: the provider is detected from the URL.
  const named = response.provider != null && response.provider.trim() !== '' ? response.provider : undefined;
  const definition = named !== undefined ? definitionForName(named) : definitionForHost(parts.host);
  if (!definition) throw new UnknownProviderError(parts.host, named);
  // Named, the call may have gone through a proxy with a path prefix of its own; by host it went to the provider.
  const match = named !== undefined ? routeNamed(definition, parts) : route(definition, parts);
  const headers = responseHeaders(response.headers);
  const ctx: Ctx = {
    provider: definition.id,
    api: match?.api ?? 'unknown',
    urlModel: match?.model ?? null,
    fallbackModel: match?.fallbackModel ?? null,
    path: parts.path,
    response: headers === response.headers ? response : { ...response, headers },
    request: requestObject(response.requestBody),
  };
  // Only a success did the work: an error, a redirect (3xx) or an informational answer is not billable.
  if (response.status < 200 || response.status >= 300) return httpError(ctx);
  // A path we do not know (model listing, token counting, batches…) reports nothing billable.
  if (!match) return pending(ctx, pickModel(ctx, undefined), 'unrecognized_api');
  return settle(match.normalize(ctx));
}

const NO_HEADERS: Record<string, string> = Object.freeze({}) as Record<string, string>;

/**
 * Response headers with lower-case names and text values, as every normalizer reads them. Apps
 * post headers as their HTTP client gave them (`Character-Cost`, a number, a list); the gateway's
 * come from Node already in shape and are returned as they are, without a copy.
 */
export function responseHeaders(headers: unknown, field = 'response.headers'): Record<string, string> {
  if (headers === undefined || headers === null) return NO_HEADERS;
  if (typeof headers !== 'object' || Array.isArray(headers)) throw invalidField(field, 'must be an object of header names to values');
  const given = headers as Record<string, unknown>;
  let inShape = true;
  for (const name in given) {
    if (typeof given[name] !== 'string' || name !== name.toLowerCase()) {
      inShape = false;
      break;
    }
  }
  if (inShape) return given as Record<string, string>;
  const shaped: Record<string, string> = {};
  for (const [name, value] of Object.entries(given)) {
    if (value === undefined || value === null) continue;
    if (typeof value === 'object' && !Array.isArray(value)) throw invalidField(`${field}.${name}`, 'must be text, a number or a list of them');
    const text = Array.isArray(value) ? value.map(String).join(', ') : String(value);
    const lower = name.toLowerCase();
    // Names differing only in case are one header; HTTP joins repeated fields with ", ".
    shaped[lower] = Object.hasOwn(shaped, lower) ? `${shaped[lower]}, ${text}` : text;
  }
  return shaped;
}

/** The subset relations the type promises, whatever a provider sent (negative uncached input is never priced). */
function settle(out: NormalizedUsage): NormalizedUsage {
  // A part reported above its total raises the total (charged as reported), rather than leaving a
  // record the cost function refuses, which would make the call free.
  const written1h = Number(out.details.cache_write_1h_tokens ?? 0);
  if (written1h > out.cacheWriteTokens) out.cacheWriteTokens = written1h;
  if (out.cachedInputTokens + out.cacheWriteTokens > out.inputTokens) out.inputTokens = out.cachedInputTokens + out.cacheWriteTokens;
  if (out.reasoningTokens > out.outputTokens) out.reasoningTokens = out.outputTokens;
  const audioOut = Number(out.details.output_audio_tokens ?? 0);
  if (audioOut + out.reasoningTokens > out.outputTokens) out.outputTokens = audioOut + out.reasoningTokens;
  return out;
}

/**
 * The request as the provider read it: read as the gateway reads it (parseRequestJson), past a
 * byte order mark and with bare NaN and Infinity as null, which lenient servers run; a strict
 * parse would lose its model or its text (a speech call with `"speed": NaN` recorded free).
 */
function requestObject(body: unknown): Obj | undefined {
  if (typeof body !== 'string') return obj(body);
  return obj(parseRequestJson(body.charCodeAt(0) === 0xfeff ? body.slice(1) : body));
}

function httpError(ctx: Ctx): NormalizedUsage {
  const body = ctx.response.body;
  const parsed = isJsonBody(body) ? parseJson(body) : undefined;
  return failed(ctx, pickModel(ctx, obj(parsed)?.model), errorCode(parsed) ?? `http_${ctx.response.status}`);
}
