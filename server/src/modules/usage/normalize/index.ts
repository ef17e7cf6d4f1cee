/**
 * Provider usage normalizers: one provider response in, one NormalizedUsage out. Pure
 * functions (no I/O, no clock); pricing and the incomplete-stream policy live elsewhere.
 *
 *   detectProvider(url)          which provider and API a request URL goes to
 *   normalizeResponse(response)  the usage a response reports (throws UnknownProviderError)
 *   SUPPORTED_PROVIDERS          every provider id with its hosts, for docs and allow-lists
 */
import { AppError } from '../../../shared/errors.ts';
import type { NormalizedUsage, ProviderResponse } from '../usage.types.ts';
import { definitionForHost, definitionForName, route, splitUrl, type UrlParts } from './registry.ts';
import { type Ctx, errorCode, failed, isJsonBody, obj, type Obj, parseJson, pickModel, pending } from './util.ts';

export { SUPPORTED_PROVIDERS, type SupportedProvider } from './registry.ts';
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
      { host, ...(override !== undefined ? { provider: override } : {}) },
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
  const definition = response.provider !== undefined ? definitionForName(response.provider) : definitionForHost(parts.host);
  if (!definition) throw new UnknownProviderError(parts.host, response.provider);
  const match = route(definition, parts);
  const ctx: Ctx = {
    provider: definition.id,
    api: match?.api ?? 'unknown',
    urlModel: match?.model ?? null,
    path: parts.path,
    response,
    request: requestObject(response.requestBody),
  };
  if (response.status >= 400) return httpError(ctx);
  // A path we do not know (model listing, token counting, batches…) reports nothing billable.
  if (!match) return pending(ctx, pickModel(ctx, undefined), 'unrecognized_api');
  return settle(match.normalize(ctx));
}

/** The subset relations the type promises, whatever a provider sent (negative uncached input is never priced). */
function settle(out: NormalizedUsage): NormalizedUsage {
  if (out.cachedInputTokens + out.cacheWriteTokens > out.inputTokens) out.inputTokens = out.cachedInputTokens + out.cacheWriteTokens;
  if (out.reasoningTokens > out.outputTokens) out.reasoningTokens = out.outputTokens;
  return out;
}

function requestObject(body: unknown): Obj | undefined {
  return typeof body === 'string' ? obj(parseJson(body)) : obj(body);
}

function httpError(ctx: Ctx): NormalizedUsage {
  const body = ctx.response.body;
  const parsed = isJsonBody(body) ? parseJson(body) : undefined;
  return failed(ctx, pickModel(ctx, obj(parsed)?.model), errorCode(parsed) ?? `http_${ctx.response.status}`);
}
