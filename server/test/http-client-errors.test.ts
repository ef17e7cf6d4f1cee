/**
 * Requests Node's HTTP parser refuses before any route sees them get the JSON body every other
 * 4xx has, not a bare status line (an integrator's client then has an error to show).
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

/** Sends `raw` on a fresh connection and reads everything until the server closes it. */
function exchange(raw: string): Promise<{ status: number; headers: string; body: string }> {
  const { hostname, port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(raw));
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const [head = '', body = ''] = received.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), headers: head.toLowerCase(), body });
    });
  });
}

describe('a request the HTTP parser refuses', () => {
  it('headers over the 16 KB limit: 431 with a JSON body', async () => {
    const answer = await exchange(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(answer.status).toBe(431);
    expect(answer.headers).toContain('content-type: application/json');
    expect(JSON.parse(answer.body)).toEqual({ error: { code: 'VALIDATION', reason: 'HEADERS_TOO_LARGE', message: expect.stringContaining('16 KB') } });
  });

  it('a control character in a header, or a request line that is not HTTP: 400 with a JSON body', async () => {
    for (const raw of ['GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\u0001b\r\n\r\n', 'NOT HTTP AT ALL\r\n\r\n']) {
      const answer = await exchange(raw);
      expect(answer.status, JSON.stringify(raw)).toBe(400);
      expect(JSON.parse(answer.body)).toMatchObject({ error: { code: 'VALIDATION', reason: 'MALFORMED_REQUEST' } });
    }
  });

  it('a well-formed request on the same server is still answered', async () => {
    const answer = await exchange('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(answer.status).toBe(200);
  });
});
