/**
 * A reference for bench/ingest: the plainest Node server that accepts the same batches and
 * keeps them durably, with none of Tollgate's work (no auth, normalization, provider cost,
 * pricing, period totals or ledger). Per batch it parses the JSON, resolves customers from a map
 * loaded at start, inserts the events into a table shaped like usage_events (same columns and
 * indexes) in one committed statement, idempotent by key, and answers one id per event. Its
 * rate is the ceiling of any Node ingest server on this machine: an HTTP hop and a JSON batch
 * each way in a process competing for the same cores as PostgreSQL and the load generator.
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import pg from 'pg';

const url = process.env.BARE_DATABASE_URL ?? '';
const merchantId = process.env.BARE_MERCHANT_ID ?? '';
const table = process.env.BARE_TABLE ?? '';
const pool = new pg.Pool({ connectionString: url, max: 10 });
pool.on('error', () => undefined);

const customers = new Map<string, string>();
for (const row of (await pool.query<{ id: string; external_id: string }>(`SELECT id, external_id FROM customers WHERE merchant_id = $1`, [merchantId])).rows) {
  customers.set(row.external_id, row.id);
}

interface Event {
  customer: string;
  idempotencyKey: string;
  usage: { provider: string; model: string; inputTokens?: number; cachedInputTokens?: number; outputTokens?: number };
}

const INSERT = `INSERT INTO ${table} (id, merchant_id, customer_id, idempotency_key, occurred_at, period_start, provider, model,
    input_tokens, cached_input_tokens, output_tokens, requests, status, currency, cost_attos, charge_attos, margin_attos)
  SELECT u.id, $1, u.customer_id, u.key, $2, date_trunc('month', $2::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', u.provider, u.model,
    u.input_tokens, u.cached_input_tokens, u.output_tokens, 1, 'CHARGED', 'USD', 0, 0, 0
  FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::int[], $9::int[], $10::int[])
    AS u(id, customer_id, key, provider, model, input_tokens, cached_input_tokens, output_tokens)
  ON CONFLICT (merchant_id, idempotency_key) DO NOTHING
  RETURNING idempotency_key`;

/** One answer per event: its new id, `replayed` when its key was already stored, or an error. */
async function store(events: Event[]): Promise<{ index: number; ok: boolean; id?: string; replayed?: boolean; error?: string }[]> {
  const answers = events.map((event, index) => {
    const customerId = customers.get(event.customer);
    return customerId ? { index, ok: true, id: randomUUID(), customerId } : { index, ok: false, error: 'unknown customer' };
  });
  const kept = answers.filter((answer) => answer.ok);
  const column = <T>(pick: (event: Event) => T) => kept.map((answer) => pick(events[answer.index]!));
  const inserted = await pool.query<{ idempotency_key: string }>(INSERT, [
    merchantId, new Date(), kept.map((answer) => answer.id), kept.map((answer) => answer.customerId), column((e) => e.idempotencyKey),
    column((e) => e.usage.provider), column((e) => e.usage.model), column((e) => e.usage.inputTokens ?? 0),
    column((e) => e.usage.cachedInputTokens ?? 0), column((e) => e.usage.outputTokens ?? 0),
  ]);
  const fresh = new Set(inserted.rows.map((row) => row.idempotency_key));
  return answers.map(({ index, ok, id, error }) => (!ok ? { index, ok, error } : fresh.has(events[index]!.idempotencyKey) ? { index, ok, id } : { index, ok, replayed: true }));
}

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const answer = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    let events: Event[];
    try {
      events = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { events: Event[] }).events;
    } catch {
      return answer(400, { error: 'malformed JSON' });
    }
    store(events).then(
      (results) => answer(200, { results, summary: { received: events.length, ok: results.filter((r) => r.ok).length } }),
      (error: Error) => answer(500, { error: error.message }),
    );
  });
});
server.keepAliveTimeout = 30_000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  console.log(`bare ingest server: http://127.0.0.1:${port}`);
});

const stop = () => server.close(() => void pool.end().then(() => process.exit(0)));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('close', stop);
process.stdin.resume();
