import express, { type RequestHandler } from 'express';

/**
 * express.json for the JSON routes, reading `Content-Encoding: x-gzip` as gzip: RFC 9110 says a
 * recipient SHOULD treat the two alike, and the gateway does, but body-parser knows only gzip.
 */
export function jsonBody(options: Parameters<typeof express.json>[0]): RequestHandler[] {
  const gzipAlias: RequestHandler = (req, _res, next) => {
    const coding = req.headers['content-encoding'];
    if (typeof coding === 'string' && coding.trim().toLowerCase() === 'x-gzip') req.headers['content-encoding'] = 'gzip';
    next();
  };
  return [gzipAlias, express.json(options)];
}
