import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server?.close());

describe('health endpoints', () => {
  it('/healthz answers while the process is up', async () => {
    const response = await fetch(`${server.url}/healthz`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: 'ok' });
  });

  it('/readyz is ready when the database answers and every migration is applied, 503 otherwise', async () => {
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready' });

    const rows = await server.services.db.withConnection((c) =>
      c.query<{ id: string; migration_name: string }>('SELECT id, migration_name FROM "_prisma_migrations" ORDER BY migration_name DESC LIMIT 1'),
    );
    const latest = rows[0]!;
    await server.services.db.withConnection((c) => c.query('UPDATE "_prisma_migrations" SET finished_at = NULL WHERE id = $1', [latest.id]));
    try {
      const pending = await fetch(`${server.url}/readyz`);
      expect(pending.status).toBe(503);
      expect(await pending.json()).toEqual({ status: 'migrations pending', pending: [latest.migration_name] });
    } finally {
      await server.services.db.withConnection((c) => c.query('UPDATE "_prisma_migrations" SET finished_at = now() WHERE id = $1', [latest.id]));
    }
  });

  it('serves the playground on /playground and to browsers on /graphql, from local assets only', async () => {
    for (const path of ['/playground', '/graphql']) {
      const response = await fetch(`${server.url}${path}`, { headers: { accept: 'text/html' } });
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toContain('text/html');
      const html = await response.text();
      expect(html).toContain('GraphiQL');
      // No <script src> or <link href> to another host: everything is inline.
      expect(html).not.toMatch(/<(script|link)[^>]+(src|href)=["']https?:/i);
    }
  });
});
