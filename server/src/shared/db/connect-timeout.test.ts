import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openDatabase } from './database.ts';

/** A server that takes connections and never answers: a database whose packets are dropped. */
let silent: Server;
const sockets: Socket[] = [];
beforeAll(async () => {
  silent = createServer((socket) => void sockets.push(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
});
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await new Promise((resolve) => silent.close(resolve));
});

it('a query fails once the connect timeout passes instead of waiting forever on a database that does not answer', async () => {
  const { port } = silent.address() as { port: number };
  const db = await openDatabase({ kind: 'postgres', url: `postgresql://nobody@127.0.0.1:${port}/none`, connectTimeoutMs: 300 });
  const started = Date.now();
  await expect(db.withConnection((connection) => connection.query('SELECT 1'))).rejects.toThrow(/timeout/i);
  expect(Date.now() - started).toBeLessThan(5000);
  await db.close().catch(() => undefined);
});
