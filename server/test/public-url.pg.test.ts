import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createPostgresDatabase } from './databases.ts';
import { startServerProcess } from './processes.ts';

let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
beforeAll(async () => {
  database = await createPostgresDatabase();
});
afterAll(() => database?.drop());

it('prints TOLLGATE_PUBLIC_URL as given, not with the port the server listens on', async () => {
  const server = await startServerProcess({ DATABASE_URL: database.url, TOLLGATE_MASTER_KEY: randomBytes(32).toString('hex'), TOLLGATE_PUBLIC_URL: 'http://billing.example.test:8443' });
  try {
    expect(server.url).toBe('http://billing.example.test:8443');
  } finally {
    await server.stop();
  }
}, 90_000);
