import type { AddressInfo, Server, Socket } from 'node:net';

/** A server the tests started on a random local port. */
export interface LocalServer {
  /** `127.0.0.1:<port>`. */
  host: string;
  /** Stops listening and ends the connections still open (keep-alive ones would hold `close` up). */
  close(): Promise<void>;
}

/** Starts `server` (TCP or HTTP) on a random port of 127.0.0.1. */
export async function listenLocally(server: Server): Promise<LocalServer> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
