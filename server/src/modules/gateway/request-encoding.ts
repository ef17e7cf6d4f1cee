import { promisify } from 'node:util';
import { brotliDecompress, gunzip, inflate, type ZlibOptions } from 'node:zlib';

/**
 * A caller's compressed request body (Content-Encoding on the request, RFC 9110 §8.4), decoded
 * before the gateway reads it. Everything the gateway decides from the body — the hold for the
 * call's maximum cost, a Responses `background` request refused, the model and the text a
 * speech call is billed by — would otherwise be read from compressed bytes, find nothing, and
 * let the call through unreserved or uncharged. The decoded body is what the provider is sent
 * (without the Content-Encoding), so the provider acts on exactly what was metered.
 */

type Decoder = (body: Buffer, options: ZlibOptions) => Promise<Buffer>;

const DECODERS: Readonly<Record<string, Decoder>> = {
  gzip: promisify(gunzip),
  'x-gzip': promisify(gunzip),
  deflate: promisify(inflate),
  br: promisify(brotliDecompress) as Decoder,
};

export const DECODABLE_CODINGS = Object.keys(DECODERS);

export type DecodedRequest =
  | { ok: true; body: Buffer; decoded: boolean }
  | { ok: false; status: 400 | 413 | 415; code: string; message: string; details: Record<string, unknown> };

/**
 * `body` with the codings `contentEncoding` lists undone (last applied, first undone), each
 * result at most `limit` bytes: a few kilobytes of gzip can inflate to gigabytes. An empty body
 * or an identity coding is left as it is (`decoded` false).
 */
export async function decodeRequestBody(contentEncoding: string | string[] | undefined, body: Buffer, limit: number): Promise<DecodedRequest> {
  const codings = [contentEncoding ?? []].flat().join(',').split(',').map((coding) => coding.trim().toLowerCase()).filter((coding) => coding !== '' && coding !== 'identity');
  if (codings.length === 0 || body.length === 0) return { ok: true, body, decoded: false };
  const unknown = codings.find((coding) => !DECODERS[coding]);
  if (unknown) {
    return {
      // Code and reason as the HTTP routes answer an encoding they cannot read (http/errors.ts).
      ok: false, status: 415, code: 'VALIDATION',
      message: `The gateway cannot read a request body in "${unknown}", so it could not meter the call: send it uncompressed or in ${DECODABLE_CODINGS.join(', ')}`,
      details: { reason: 'UNSUPPORTED_ENCODING', contentEncoding: unknown, supported: DECODABLE_CODINGS },
    };
  }
  let decoded = body;
  for (const coding of [...codings].reverse()) {
    try {
      decoded = await DECODERS[coding]!(decoded, { maxOutputLength: limit });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        return { ok: false, status: 413, code: 'VALIDATION', message: `The request body decodes to more than the gateway's limit of ${limit} bytes`, details: { contentEncoding: coding } };
      }
      return {
        ok: false, status: 400, code: 'VALIDATION',
        message: `The request body is not valid ${coding} as its Content-Encoding says: ${(error as Error).message}`,
        details: { contentEncoding: coding },
      };
    }
  }
  return { ok: true, body: decoded, decoded: true };
}
