import { looksLikeSecretKey } from '../api-keys/api-keys.service.ts';
import { looksLikeCustomerSessionToken } from '../auth/customer-sessions.service.ts';

/**
 * How each provider expects its API key, and which request headers may carry credentials.
 * The gateway removes every credential header the caller sent (they hold the caller's
 * Tollgate key, which must never reach a provider) and sets the provider key its own way.
 */
type KeyStyle = (key: string) => [header: string, value: string];

const bearer: KeyStyle = (key) => ['authorization', `Bearer ${key}`];

/**
 * A Google API key rather than an OAuth access token (`ya29.…`): a Google Cloud API key
 * (`AIza…`, https://cloud.google.com/docs/authentication/api-keys) or a Vertex AI express-mode
 * key (`AQ.…`). Vertex AI takes such a key in `x-goog-api-key` and answers 401 to it as a Bearer
 * token. Anything else stays a Bearer token, as before.
 */
const GOOGLE_API_KEY = /^(?:AIza|AQ\.)[\w.-]+$/;

const STYLES: Record<string, KeyStyle> = {
  'azure-openai': (key) => ['api-key', key],
  anthropic: (key) => ['x-api-key', key],
  google: (key) => ['x-goog-api-key', key],
  vertex: (key) => (GOOGLE_API_KEY.test(key) ? ['x-goog-api-key', key] : bearer(key)),
  elevenlabs: (key) => ['xi-api-key', key],
  deepgram: (key) => ['authorization', `Token ${key}`],
  fal: (key) => ['authorization', `Key ${key}`],
  bfl: (key) => ['x-key', key],
  ideogram: (key) => ['api-key', key],
};

/** Every header a provider reads a key from; all are stripped from what the caller sent. */
export const CREDENTIAL_HEADERS = new Set(['authorization', 'x-api-key', 'api-key', 'x-goog-api-key', 'xi-api-key', 'x-key', 'proxy-authorization']);

/** The header (name, value) that carries `key` for `provider`; OpenAI's Bearer style otherwise. */
export function providerKeyHeader(provider: string, key: string): [string, string] {
  return (STYLES[provider] ?? bearer)(key);
}

function bare(value: string): string {
  const match = /^\s*(?:Bearer|Token|Key)\s+(\S+)\s*$/i.exec(value);
  return match ? match[1]! : value.trim();
}

/** Where a caller's Tollgate credential is looked for, in this order: x-tollgate-key, then every header an SDK sends its provider's key in. */
const CREDENTIAL_SOURCES = ['x-tollgate-key', 'authorization', 'x-api-key', 'api-key', 'x-goog-api-key', 'xi-api-key', 'x-key'];

/**
 * The caller's Tollgate credential (secret key or customer session token). SDKs put their
 * "API key" in different headers (OpenAI: Authorization; Anthropic: x-api-key; ElevenLabs:
 * xi-api-key; Black Forest Labs: x-key), so every header a provider reads a key from is looked
 * at, and x-tollgate-key wins when present.
 */
export function tollgateCredential(headers: Record<string, string | string[] | undefined>): string | undefined {
  for (const name of CREDENTIAL_SOURCES) {
    const raw = headers[name];
    if (typeof raw !== 'string') continue;
    const value = bare(raw);
    if (name === 'x-tollgate-key' || looksLikeSecretKey(value) || looksLikeCustomerSessionToken(value)) return value;
  }
  return undefined;
}
