import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ProviderResponse } from '../src/modules/usage/usage.types.ts';

/** The shared provider fixtures (../shared/fixtures/providers beside this checkout), read as the gateway saw them. */
const FIXTURES = new URL('../../../shared/fixtures/providers/', import.meta.url);

export const readFixture = (name: string): string => readFileSync(new URL(name, FIXTURES), 'utf8');

/** Every file in the fixtures folder. */
export const fixtureFiles = (): string[] => readdirSync(fileURLToPath(FIXTURES));

export interface FixtureMeta {
  request: { url: string; body?: Record<string, unknown>; form?: Record<string, unknown> };
  response: { status: number; headers?: Record<string, string> };
}

/** _http_meta.json: each fixture's request and response envelope (its string entries are notes). */
export const fixtureMeta = JSON.parse(readFixture('_http_meta.json')) as Record<string, FixtureMeta | string>;

/** A fixture as the gateway sees it: the response body (or, for binary audio, its head) with its HTTP envelope. */
export function fixtureResponse(name: string, lineEnd: '\n' | '\r\n' = '\n'): ProviderResponse {
  const meta = fixtureMeta[name] as FixtureMeta;
  let body = readFixture(name);
  let status = meta.response.status;
  let headers = meta.response.headers ?? {};
  if (name.endsWith('_response_head.txt')) {
    // Status line and headers; the audio body itself is not recorded.
    const lines = body.split('\r\n');
    status = Number(lines[0]!.split(' ')[1]);
    headers = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    body = '';
  } else if (lineEnd === '\r\n') body = body.replace(/\n/g, '\r\n');
  return { url: meta.request.url, status, headers, body, requestBody: meta.request.body ?? meta.request.form };
}
