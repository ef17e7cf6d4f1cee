import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * Cross-origin access for browsers. Customer session tokens are made for browser apps, which
 * usually live on another origin than Tollgate (app.example.com calling billing.example.com);
 * every credential is a bearer token sent in a header, never a cookie, so answering other
 * origins lends them nothing they do not already hold. `allowed` is `*` (any origin, the
 * default) or a list of origins; an empty list turns cross-origin access off.
 */
export type CorsOrigins = '*' | readonly string[];

/** Read by browsers' fetch from our answers (they see only CORS-safelisted headers otherwise). */
const EXPOSED = 'x-request-id, x-tollgate-request-id';
/** How long a browser may reuse a preflight's answer, in seconds. */
const PREFLIGHT_MAX_AGE = '600';
/** A header name as RFC 9110 spells a token: a preflight's list is echoed only when each is one. */
const HEADER_LIST = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*$/;

/**
 * `*`, `none`, or origins as browsers send them (scheme://host[:port]): each entry is read as a URL
 * and kept as its origin (a default port dropped, a trailing slash allowed); anything a browser's
 * Origin header could never equal (no scheme, a path, a wildcard) stops the server at start.
 */
export function parseCorsOrigins(raw: string | undefined): CorsOrigins {
  if (raw === undefined || raw.trim() === '' || raw.trim() === '*') return '*';
  if (raw.trim().toLowerCase() === 'none') return [];
  return raw.split(',').map((entry) => entry.trim()).filter(Boolean).map((entry) => {
    const refuse = () => new Error(`TOLLGATE_CORS_ORIGINS: "${entry}" is not an origin (scheme://host[:port], e.g. https://app.example.com)`);
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      throw refuse();
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.pathname !== '/' || url.search || url.hash || url.username || entry.includes('*')) throw refuse();
    return url.origin.toLowerCase();
  });
}

/**
 * Sets the CORS headers an answer to `req` needs, and answers a preflight (OPTIONS with
 * Access-Control-Request-Method) itself: true when it did, and the request is done. A preflight
 * must not reach the routes: the GraphQL server would refuse it as a possible CSRF, and the
 * gateway would forward it to the provider.
 */
export function handleCors(req: IncomingMessage, res: ServerResponse, allowed: CorsOrigins): boolean {
  const origin = req.headers.origin;
  const preflight = req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined;
  if (typeof origin === 'string' && origin !== '') {
    const permitted = allowed === '*' || allowed.includes(origin.toLowerCase());
    if (allowed !== '*') res.setHeader('vary', 'Origin');
    if (permitted) {
      res.setHeader('access-control-allow-origin', allowed === '*' ? '*' : origin);
      res.setHeader('access-control-expose-headers', EXPOSED);
    }
    if (preflight) {
      if (permitted) {
        const asked = req.headers['access-control-request-headers'];
        res.setHeader('access-control-allow-methods', 'GET, POST, PUT, PATCH, DELETE');
        // The gateway relays providers' own headers (anthropic-version, openai-beta, the SDKs'
        // x-stainless-*), so the headers asked for are allowed whatever they are.
        if (typeof asked === 'string' && HEADER_LIST.test(asked.trim())) res.setHeader('access-control-allow-headers', asked.trim());
        res.setHeader('access-control-max-age', PREFLIGHT_MAX_AGE);
      }
      res.statusCode = 204;
      res.end();
      return true;
    }
  }
  return false;
}
