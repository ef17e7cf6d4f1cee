/**
 * A reference for bench/gateway: the plainest Node reverse proxy, with none of Tollgate's work
 * (no auth, balance check, metering or charging). It forwards every request to the provider
 * given as BARE_PROXY_TARGET over keep-alive connections (the same agent options as the
 * gateway) and pipes the answer back, streams included. What it adds to a provider call on
 * this machine is the floor any Node gateway pays here: an extra HTTP server and HTTP client
 * hop in a process competing for the same cores.
 */
import http from 'node:http';

const target = new URL(process.env.BARE_PROXY_TARGET ?? '');
const agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 30_000, maxSockets: Infinity, maxFreeSockets: 1024, scheduling: 'lifo' });

const server = http.createServer((req, res) => {
  const headers = { ...req.headers, host: target.host };
  const upstream = http.request({ agent, hostname: target.hostname, port: target.port, path: req.url, method: req.method, headers }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(res);
  });
  upstream.on('error', () => {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
    res.end('{"error":"upstream failed"}');
  });
  req.pipe(upstream);
});
server.keepAliveTimeout = 30_000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  console.log(`bare proxy: http://127.0.0.1:${port}`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('close', stop);
process.stdin.resume();
