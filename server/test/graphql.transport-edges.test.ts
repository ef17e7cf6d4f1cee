import { createClient, type Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { MAX_SELECTION_NESTING } from '../src/graphql/limits.ts';
import { customerTopic } from '../src/modules/customers/customers.service.ts';
import { startTestServer, waitForSubscribers, type TestServer } from './server.ts';

/** Bugs found hunting through the GraphQL layer and live subscriptions, each pinned by a test. */
let server: TestServer;
let merchant: { id: string; secret: string };
const clients: Client[] = [];

beforeAll(async () => {
  server = await startTestServer();
  merchant = await server.createMerchant();
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.dispose()));
  await server?.close();
});

function connect(authorization: string): Client {
  const client = createClient({
    url: server.url.replace('http', 'ws') + '/graphql',
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${authorization}` },
    retryAttempts: 0,
  });
  clients.push(client);
  return client;
}

/** The errors the first answer to `query` over graphql-ws carries (an `error` message or a `next` with errors). */
async function wsErrors(client: Client, query: string, variables?: Record<string, unknown>) {
  const iterator = client.iterate({ query, variables });
  try {
    const { value } = await iterator.next();
    return (value as { errors?: { message: string; extensions?: Record<string, unknown> }[] } | undefined)?.errors;
  } catch (errors) {
    return errors as { message: string; extensions?: Record<string, unknown> }[];
  } finally {
    await iterator.return?.();
  }
}

describe('query depth', () => {
  /**
   * Plans and price rules refer to each other, so a selection may nest as deep as the document
   * allows. The parser stops one definition near a thousand levels, but a chain of fragments (up
   * to the 50 allowed) nests each one's levels inside the last: the measure of depth recursed
   * through all of them and overflowed the stack, answering 500 INTERNAL.
   */
  function nestedThroughFragments(levelsPerFragment: number, fragments: number, prefix?: string): string {
    let query = prefix ? '' : '{ plans { ...F0 } }';
    const name = prefix ?? 'F';
    for (let i = 0; i < fragments; i++) {
      const inner = i + 1 < fragments ? `...${name}${i + 1}` : 'key';
      query += ` fragment ${name}${i} on Plan { ${'priceRules { plan { '.repeat(levelsPerFragment)}${inner}${' } }'.repeat(levelsPerFragment)} }`;
    }
    return query;
  }

  it('refuses a selection nested thousands deep through chained fragments as QUERY_TOO_DEEP (400), over HTTP and WebSocket', async () => {
    const query = nestedThroughFragments(200, 25);
    const response = await server.graphql(query, undefined, merchant.secret);
    expect(response.status).toBe(400);
    expect(response.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_DEEP' });

    const errors = await wsErrors(connect(merchant.secret), query);
    expect(errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_DEEP' });
  });

  it('refuses, before validation, two fields of one name whose chains graphql-js compares level by level (400, not 500)', async () => {
    // Fields named alike are checked for overlap recursively, through every fragment they spread.
    const query = (levelsPerFragment: number, fragments: number) =>
      '{ plans { ...A0 } plans { ...B0 } }' + nestedThroughFragments(levelsPerFragment, fragments, 'A') + nestedThroughFragments(levelsPerFragment, fragments, 'B');
    const deep = query(100, 10);
    const response = await server.graphql(deep, undefined, merchant.secret);
    expect(response.status).toBe(400);
    expect(response.errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_DEEP' });
    expect(response.errors?.[0]?.message).toContain(`nested more than ${MAX_SELECTION_NESTING} deep`);
    const errors = await wsErrors(connect(merchant.secret), deep);
    expect(errors?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', reason: 'QUERY_TOO_DEEP' });

    // Just within the nesting the check allows, graphql-js validates it, and the depth limit refuses it as ever.
    const within = await server.graphql(query(Math.floor((MAX_SELECTION_NESTING - 12) / 20), 10), undefined, merchant.secret);
    expect(within.status).toBe(400);
    expect(within.errors?.[0]?.message).toMatch(/^Query depth \d+ exceeds the limit of 10$/);
  });
});

const originalSetTimeout = globalThis.setTimeout;
const originalClearTimeout = globalThis.clearTimeout;

/** The timers set for over half an hour (a session's expiry) and not cleared yet, while tracked; `restore` stops tracking. */
function trackLongTimers(): { longTimers: Set<unknown>; restore: () => void } {
  const longTimers = new Set<unknown>();
  const setTimeoutSpy = vi.spyOn(globalThis, 'setTimeout').mockImplementation(((callback: () => void, delay?: number, ...rest: unknown[]) => {
    const timer = originalSetTimeout(callback, delay, ...rest);
    if ((delay ?? 0) > 30 * 60_000) longTimers.add(timer);
    return timer;
  }) as typeof setTimeout);
  const clearTimeoutSpy = vi.spyOn(globalThis, 'clearTimeout').mockImplementation(((timer?: Parameters<typeof clearTimeout>[0]) => {
    longTimers.delete(timer);
    originalClearTimeout(timer);
  }) as typeof clearTimeout);
  return {
    longTimers,
    restore: () => {
      setTimeoutSpy.mockRestore();
      clearTimeoutSpy.mockRestore();
    },
  };
}

/** A raw graphql-ws socket, acknowledged, with every message it received. */
async function rawSocket(authorization: string) {
  return rawSocketWith({ authorization: `Bearer ${authorization}` });
}

async function rawSocketWith(connectionParams: Record<string, unknown>) {
  const socket = new WebSocket(server.url.replace('http', 'ws') + '/graphql', 'graphql-transport-ws');
  const received: { id?: string; type: string; payload?: unknown }[] = [];
  const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
  const acked = new Promise<void>((resolve, reject) => {
    socket.on('message', (data) => {
      const message = JSON.parse(String(data)) as { id?: string; type: string; payload?: unknown };
      received.push(message);
      if (message.type === 'connection_ack') resolve();
    });
    socket.on('close', () => reject(new Error('closed before connection_ack')));
  });
  socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: connectionParams })));
  await acked;
  const send = (message: unknown) => socket.send(JSON.stringify(message));
  return { socket, received, closed, send };
}

describe('operation ids over graphql-ws', () => {
  /**
   * graphql-ws frees an id as soon as its client completes it, even while the operation is still
   * starting (its credential being checked, its customer read); a new subscribe under that id
   * then shared the id's slot with the first, and whichever started last overwrote the other:
   * that one ran on, never ended by `complete` or by the socket closing, and not counted against
   * the per-connection limit. Five rounds left five listeners behind for good.
   */
  it('leaves no subscription running after its socket closes, however fast an id is subscribed, completed and reused', async () => {
    const customerId = (await server.services.customers.create(merchant.id, { externalId: 'ids-reused' })).id;
    const topic = customerTopic(customerId);
    const { socket, received, closed, send } = await rawSocket(merchant.secret);
    const subscribe = { id: '1', type: 'subscribe', payload: { query: `subscription { customerUpdated(id: "${customerId}") { name } }` } };
    for (let round = 0; round < 5; round++) {
      send(subscribe);
      send({ id: '1', type: 'complete' });
    }
    send(subscribe);
    // Every start has settled once a later operation on the socket answers (messages are handled in order of arrival, starts concurrently).
    send({ id: 'probe', type: 'subscribe', payload: { query: '{ __typename }' } });
    const deadline = Date.now() + 10_000;
    while (!received.some((message) => message.id === 'probe' && message.type === 'complete') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(server.services.pubsub.subscriberCount(topic)).toBeLessThanOrEqual(1);

    await server.services.customers.update(merchant.id, customerId, { name: 'Renamed' });
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Never the same change twice under one id.
    expect(received.filter((message) => message.id === '1' && message.type === 'next').length).toBeLessThanOrEqual(1);

    socket.close();
    await closed;
    await waitForSubscribers(server, topic, 0);
  });

  it('takes an id again once the operation that had it has started and been completed', async () => {
    const customerId = (await server.services.customers.create(merchant.id, { externalId: 'ids-reused-later' })).id;
    const topic = customerTopic(customerId);
    const { socket, received, closed, send } = await rawSocket(merchant.secret);
    const subscribe = { id: 'same', type: 'subscribe', payload: { query: `subscription { customerUpdated(id: "${customerId}") { name } }` } };
    send(subscribe);
    await waitForSubscribers(server, topic, 1);
    send({ id: 'same', type: 'complete' });
    await waitForSubscribers(server, topic, 0);
    send(subscribe);
    await waitForSubscribers(server, topic, 1);
    await server.services.customers.update(merchant.id, customerId, { name: 'Again' });
    const deadline = Date.now() + 5000;
    while (!received.some((message) => message.type === 'next') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(received.filter((message) => message.id === 'same' && message.type !== 'connection_ack')).toEqual([
      { id: 'same', type: 'next', payload: { data: { customerUpdated: { name: 'Again' } } } },
    ]);
    socket.close();
    await closed;
    await waitForSubscribers(server, topic, 0);
  });
});

describe('a customer session on a socket that closes while its token is checked', () => {
  /**
   * A socket of a customer session is closed when the token expires, by a timer cleared when the
   * socket closes. A socket that closed while its token was still being checked had already fired
   * its 'close': the timer was set all the same and never cleared, holding the socket (and what it
   * buffered) for as long as the token had left to live, up to a day, for every such connection.
   */
  it('sets no expiry timer for it, on connect or for an operation carrying its own token', async () => {
    const customerId = (await server.services.customers.create(merchant.id, { externalId: 'closes-early' })).id;
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 3600);
    const resolve = server.services.viewers.resolve.bind(server.services.viewers);
    const { longTimers, restore } = trackLongTimers();
    // Checking a credential takes a while, long enough for the client to leave meanwhile.
    let checked = 0;
    server.services.viewers.resolve = async (authorization) => {
      const viewer = await resolve(authorization);
      await new Promise((done) => originalSetTimeout(done, 200));
      checked++;
      return viewer;
    };
    try {
      // The token on the connection.
      const early = new WebSocket(server.url.replace('http', 'ws') + '/graphql', 'graphql-transport-ws');
      early.on('open', () => {
        early.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }));
        originalSetTimeout(() => early.close(), 50);
      });
      await new Promise((done) => early.on('close', done));
      // The token on an operation of an anonymous connection, as the playground sends it.
      const anonymous = await rawSocketWith({});
      anonymous.send({ id: '1', type: 'subscribe', payload: { query: '{ __typename }', extensions: { headers: { authorization: `Bearer ${token}` } } } });
      originalSetTimeout(() => anonymous.socket.close(), 50);
      await anonymous.closed;
      const deadline = Date.now() + 5000;
      // Three checks: each connection's (the anonymous one's of no credential), and the operation's.
      while (checked < 3 && Date.now() < deadline) await new Promise((done) => originalSetTimeout(done, 20));
      await new Promise((done) => originalSetTimeout(done, 100));
      expect(checked).toBe(3);
      expect(longTimers.size).toBe(0);
    } finally {
      server.services.viewers.resolve = resolve;
      restore();
    }
  });
});

describe('a credential that cannot be checked for an operation (the database unreachable)', () => {
  /**
   * Every operation checks its socket's credential again. A failure other than a refusal (the
   * database not answering) was thrown out of graphql-ws's message handler, which closes the
   * socket with 4500 and the error's own message as the reason (outside production), printed to
   * the console rather than logged; graphql-ws clients take 4500 as fatal and never reconnect.
   */
  it('fails that operation as INTERNAL with a request id, leaks nothing, and keeps the socket', async () => {
    const { socket, received, send } = await rawSocket(merchant.secret);
    const resolve = server.services.viewers.resolve.bind(server.services.viewers);
    server.services.viewers.resolve = async () => {
      throw new Error('connect ECONNREFUSED 10.1.2.3:5432 (password hunter2)');
    };
    try {
      send({ id: 'down', type: 'subscribe', payload: { query: '{ viewer { kind } }' } });
      const deadline = Date.now() + 5000;
      while (!received.some((message) => message.id === 'down') && socket.readyState === socket.OPEN && Date.now() < deadline) {
        await new Promise((done) => originalSetTimeout(done, 20));
      }
    } finally {
      server.services.viewers.resolve = resolve;
    }
    expect(socket.readyState).toBe(socket.OPEN);
    const answer = received.find((message) => message.id === 'down');
    expect(answer?.type).toBe('error');
    const errors = answer?.payload as { message: string; extensions: Record<string, unknown> }[];
    expect(errors[0]?.extensions).toMatchObject({ code: 'INTERNAL', requestId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    expect(JSON.stringify(received)).not.toContain('hunter2');
    expect(JSON.stringify(received)).not.toContain('ECONNREFUSED');

    // The socket carries on once the database is back.
    send({ id: 'back', type: 'subscribe', payload: { query: '{ viewer { kind } }' } });
    const deadline = Date.now() + 5000;
    while (!received.some((message) => message.id === 'back') && Date.now() < deadline) await new Promise((done) => originalSetTimeout(done, 20));
    expect(received.find((message) => message.id === 'back')).toEqual({ id: 'back', type: 'next', payload: { data: { viewer: { kind: 'MERCHANT' } } } });
    socket.close();
  });
});

describe('@skip and @include on the root field of a subscription', () => {
  /**
   * graphql-js 16 validates a subscription's one root field by collecting it with no variables:
   * `@skip(if: true)` left a subscription of no field, whose execution threw a TypeError (graphql-ws
   * closed the socket with 4500 and that message), and `@include(if: $on)` made validation itself
   * throw (a 500 over HTTP). The spec forbids both directives there: refused as VALIDATION.
   */
  const skipped = [
    'subscription { customerUpdated(id: "00000000-0000-4000-8000-000000000000") @skip(if: true) { id } }',
    'subscription ($on: Boolean!) { customerUpdated(id: "00000000-0000-4000-8000-000000000000") @include(if: $on) { id } }',
    'subscription S { ...Root } fragment Root on Subscription { ... @skip(if: false) { customerUpdated(id: "00000000-0000-4000-8000-000000000000") { id } } }',
  ];

  it('refuses them over WebSocket as VALIDATION, and the socket stays open', async () => {
    const { socket, received, send } = await rawSocket(merchant.secret);
    skipped.forEach((query, i) => send({ id: `skip${i}`, type: 'subscribe', payload: { query, variables: { on: true } } }));
    const deadline = Date.now() + 5000;
    while (received.filter((message) => message.id?.startsWith('skip')).length < skipped.length && socket.readyState === socket.OPEN && Date.now() < deadline) {
      await new Promise((done) => originalSetTimeout(done, 20));
    }
    expect(socket.readyState).toBe(socket.OPEN);
    for (let i = 0; i < skipped.length; i++) {
      const answer = received.find((message) => message.id === `skip${i}`);
      expect(answer?.type, skipped[i]).toBe('error');
      expect((answer?.payload as { extensions: unknown }[])[0]?.extensions, skipped[i]).toMatchObject({ code: 'VALIDATION' });
    }
    socket.close();
  });

  it('refuses them over HTTP as VALIDATION (400), not INTERNAL', async () => {
    for (const query of skipped) {
      const response = await server.graphql(query, { on: true }, merchant.secret);
      expect(response.status, query).toBe(400);
      expect(response.errors?.[0]?.extensions.code, query).toBe('VALIDATION');
    }
  });
});

describe('operations that carry their own session token, as the playground sends them', () => {
  /**
   * Each such operation scheduled the socket's close at its token's expiry, with a timer and a
   * 'close' listener of its own, kept until the socket closed: a long-lived socket (the playground
   * sends its headers with every operation) gathered one more of each per operation, without bound.
   */
  it('keep one expiry timer per socket, however many operations carry the token', async () => {
    const customerId = (await server.services.customers.create(merchant.id, { externalId: 'many-operations' })).id;
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 3600);
    const { longTimers, restore } = trackLongTimers();
    try {
      const { socket, received, send } = await rawSocketWith({});
      for (let i = 0; i < 30; i++) {
        send({ id: `op${i}`, type: 'subscribe', payload: { query: '{ viewer { kind } }', extensions: { headers: { authorization: `Bearer ${token}` } } } });
      }
      const deadline = Date.now() + 10_000;
      while (received.filter((message) => message.type === 'complete').length < 30 && Date.now() < deadline) await new Promise((done) => originalSetTimeout(done, 20));
      expect(received.filter((message) => message.type === 'next')).toHaveLength(30);
      expect(longTimers.size).toBe(1);
      socket.close();
      await new Promise((done) => socket.on('close', done));
      await new Promise((done) => originalSetTimeout(done, 100));
      expect(longTimers.size).toBe(0);
    } finally {
      restore();
    }
  });
});
