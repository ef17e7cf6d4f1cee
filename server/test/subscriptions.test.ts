import { createClient, type Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { startTestServer, waitForSubscribers, type TestServer } from './server.ts';
import { customerTopic } from '../src/modules/customers/customers.service.ts';
import { walletTopic, type BalanceEvent } from '../src/modules/ledger/ledger.service.ts';

/** graphql-ws on the same port and path as HTTP, with the same auth and tenancy. */
let server: TestServer;
let merchant: { id: string; secret: string };
let customerId: string;
let otherCustomerId: string;
const clients: Client[] = [];

/** What the customer subscription on `client` ends with first: an event, or the socket's close code. */
function firstOutcome(client: Client): Promise<string | number | undefined> {
  return client
    .iterate({ query: SUBSCRIPTION, variables: { id: customerId } })
    .next()
    .then(
      () => 'event',
      (error: unknown) => (error as { code?: number }).code,
    );
}

function connect(authorization?: string): Client {
  const client = createClient({
    url: server.url.replace('http', 'ws') + '/graphql',
    webSocketImpl: WebSocket,
    connectionParams: authorization ? { authorization: `Bearer ${authorization}` } : {},
    retryAttempts: 0,
  });
  clients.push(client);
  return client;
}

const SUBSCRIPTION = 'subscription ($id: ID!) { customerUpdated(id: $id) { id name } }';

beforeAll(async () => {
  // Revoked keys' sockets are looked for every 200 ms here (5 s by default).
  server = await startTestServer({ TOLLGATE_WS_KEY_RECHECK_MS: '200' });
  merchant = await server.createMerchant();
  customerId = (await server.services.customers.create(merchant.id, { externalId: 'live-1' })).id;
  otherCustomerId = (await server.services.customers.create(merchant.id, { externalId: 'live-2' })).id;
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.dispose()));
  await server?.close();
});

/** Waits until the server has registered the subscription, then runs `act`. */
async function firstEvent(client: Client, variables: Record<string, unknown>, act: () => Promise<unknown>) {
  const topic = customerTopic(String(variables.id));
  // An earlier test's subscription may still be closing: start from none, then wait for ours.
  await waitForSubscribers(server, topic, 0);
  const iterator = client.iterate({ query: SUBSCRIPTION, variables });
  const next = iterator.next();
  await waitForSubscribers(server, topic, 1);
  await act();
  try {
    return await Promise.race([
      next,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no event within 5 s')), 5000)),
    ]);
  } finally {
    await iterator.return?.();
  }
}

describe('balanceUpdated subscription', () => {
  it('frees its listener as soon as it completes or its socket closes, though no balance changed meanwhile', async () => {
    const quiet = (await server.services.customers.create(merchant.id, { externalId: 'quiet-wallet' })).id;
    const topic = walletTopic(quiet);
    const client = connect(merchant.secret);
    const watch = (currency?: string) => client.iterate({ query: 'subscription ($id: ID!, $c: String) { balanceUpdated(customerId: $id, currency: $c) { customerId } }', variables: { id: quiet, c: currency ?? null } });
    const completed = watch();
    void completed.next().catch(() => undefined);
    await waitForSubscribers(server, topic, 1);
    await completed.return?.();
    await waitForSubscribers(server, topic, 0);
    const watches = [watch(), watch('EUR'), watch('USD')];
    for (const iterator of watches) void iterator.next().catch(() => undefined);
    await waitForSubscribers(server, topic, 3);
    await client.dispose();
    await waitForSubscribers(server, topic, 0);
  });
});

describe('balanceUpdated across instances', () => {
  it('an event arriving after a newer state (instances publish on their own) shows the newer figures, so the last pushed is the wallet as it is', async () => {
    const customer = (await server.services.customers.create(merchant.id, { externalId: 'ordered-wallet' })).id;
    const topic = walletTopic(customer);
    const client = connect(merchant.secret);
    const iterator = client.iterate<{ balanceUpdated: { balance: { amount: string }; transactionIds: string[]; version: string | null } }>({
      query: 'subscription ($id: ID!) { balanceUpdated(customerId: $id) { balance { amount } transactionIds version } }', variables: { id: customer },
    });
    const pushed: { balance: string; transactionIds: string[]; version: string | null }[] = [];
    const reading = (async () => {
      for await (const result of iterator) {
        const event = result.data!.balanceUpdated;
        pushed.push({ balance: event.balance.amount, transactionIds: event.transactionIds, version: event.version });
        if (pushed.length === 4) break;
      }
    })();
    await waitForSubscribers(server, topic, 1);
    // What an instance publishes after each commit, captured on their way out.
    const published: BalanceEvent[] = [];
    const publish = server.services.pubsub.publish.bind(server.services.pubsub);
    server.services.pubsub.publish = (to, payload) => {
      if (to === topic) published.push(payload as BalanceEvent);
      publish(to, payload);
    };
    try {
      const grant = (amount: string, key: string) =>
        server.graphql('mutation ($i: GrantCreditsInput!) { grantCredits(input: $i) { replayed } }', { i: { customerId: customer, amount, kind: 'PAID', idempotencyKey: key } }, merchant.secret);
      await grant('1', 'g1');
      await grant('2', 'g2');
      // As if another instance's events arrived late: the first grant's, and a change that posted nothing.
      publish(topic, published[0]!);
      publish(topic, { ...published[0]!, transactionIds: [] });
      await grant('4', 'g3');
      await reading;
    } finally {
      server.services.pubsub.publish = publish;
    }
    expect(published.map((event) => BigInt(event.version))).toEqual([1n, 2n, 3n]);
    expect(pushed).toEqual([
      { balance: '1.00', transactionIds: published[0]!.transactionIds, version: '1' },
      { balance: '3.00', transactionIds: published[1]!.transactionIds, version: '2' },
      // The late one keeps its transaction, with the wallet as it is (and its version); the late one without any is dropped.
      { balance: '3.00', transactionIds: published[0]!.transactionIds, version: '2' },
      { balance: '7.00', transactionIds: published[2]!.transactionIds, version: '3' },
    ]);
    // A query shows the version of the state it read, comparable with the pushes'.
    const read = await server.graphql<{ wallet: { version: string; balance: { amount: string } } }>(
      'query ($id: ID!) { wallet(customerId: $id) { version balance { amount } } }', { id: customer }, merchant.secret);
    expect(read.data!.wallet).toEqual({ version: '3', balance: { amount: '7.00' } });
  });

  it('raises the wallet version with every change an event shows: credit, a hold, a release, a limit', async () => {
    const customer = (await server.services.customers.create(merchant.id, { externalId: 'versioned-wallet' })).id;
    // Through the API, as a client merging a query with pushes reads it.
    const version = async () => {
      const read = await server.graphql<{ wallet: { version: string } }>('query ($id: ID!) { wallet(customerId: $id) { version } }', { id: customer }, merchant.secret);
      return BigInt(read.data!.wallet.version);
    };
    const system = { kind: 'system' as const, apiKeyId: null };
    const seen = [await version()];
    await server.services.ledger.grantCredits(merchant.id, system, { customerId: customer, currency: 'USD', amountNanos: 5_000_000_000n, kind: 'PAID', idempotencyKey: 'v-grant' });
    seen.push(await version());
    const { hold } = await server.services.ledger.createHold(merchant.id, system, { customerId: customer, currency: 'USD', amountNanos: 1_000_000_000n, ttlSeconds: 60, idempotencyKey: 'v-hold' });
    seen.push(await version());
    await server.services.ledger.releaseHold(merchant.id, system, hold.id);
    seen.push(await version());
    await server.services.ledger.setOverdraftLimit(merchant.id, customer, 'USD', 2_000_000_000n);
    seen.push(await version());
    // A replay changes nothing.
    await server.services.ledger.grantCredits(merchant.id, system, { customerId: customer, currency: 'USD', amountNanos: 5_000_000_000n, kind: 'PAID', idempotencyKey: 'v-grant' });
    seen.push(await version());
    expect(seen).toEqual([0n, 1n, 2n, 3n, 4n, 4n]);
  });
});

describe('customerUpdated subscription', () => {
  it('pushes the customer when its spend limits are set, changed or removed', async () => {
    const limited = (await server.services.customers.create(merchant.id, { externalId: 'limited' })).id;
    const iterator = connect(merchant.secret).iterate({ query: 'subscription ($id: ID!) { customerUpdated(id: $id) { spendLimits { limit { amount currency } } } }', variables: { id: limited } });
    // Each push reads the customer as it is then: the next change waits for it.
    const nextPush = async () => {
      const next = await Promise.race([iterator.next(), new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no push within 5 s')), 5000))]);
      return (next.value!.data as { customerUpdated: { spendLimits: unknown } }).customerUpdated.spendLimits;
    };
    let pushed = nextPush();
    await waitForSubscribers(server, customerTopic(limited), 1);
    await server.services.spendLimits.set(merchant.id, { customerId: limited, amount: '50', currency: 'USD' });
    expect(await pushed).toEqual([{ limit: { amount: '50.00', currency: 'USD' } }]);
    pushed = nextPush();
    await server.services.spendLimits.set(merchant.id, { customerId: limited, amount: '75', currency: 'USD' });
    expect(await pushed).toEqual([{ limit: { amount: '75.00', currency: 'USD' } }]);
    pushed = nextPush();
    expect(await server.services.spendLimits.remove(merchant.id, limited, 'USD')).toBe(true);
    expect(await pushed).toEqual([]);
    await iterator.return?.();
  });

  it('pushes the customer as each plan change scheduled ahead takes effect, with the plan then in force', async () => {
    const scheduled = (await server.services.customers.create(merchant.id, { externalId: 'scheduled-plans' })).id;
    await server.services.plans.put(merchant.id, { key: 'later', name: 'Later' });
    const setPlan = (planKey: string | null, from: Date) =>
      server.graphql(`mutation ($id: ID!, $key: String, $from: DateTime) { setCustomerPlan(customerId: $id, planKey: $key, effectiveFrom: $from) { id } }`,
        { id: scheduled, key: planKey, from: from.toISOString() }, merchant.secret);
    const iterator = connect(merchant.secret).iterate({ query: 'subscription ($id: ID!) { customerUpdated(id: $id) { plan { key } } }', variables: { id: scheduled } });
    const pushes: { at: number; plan: unknown }[] = [];
    const collected = (async () => {
      for await (const event of iterator) {
        pushes.push({ at: Date.now(), plan: (event.data as { customerUpdated: { plan: unknown } }).customerUpdated.plan });
        if (pushes.length === 4) break;
      }
    })();
    await waitForSubscribers(server, customerTopic(scheduled), 1);
    const onLater = new Date(Date.now() + 1200);
    const backToDefault = new Date(onLater.getTime() + 1200);
    expect((await setPlan('later', onLater)).errors).toBeUndefined();
    expect((await setPlan(null, backToDefault)).errors).toBeUndefined();
    await Promise.race([collected, new Promise((resolve) => setTimeout(resolve, 6000))]);

    // Each scheduling is pushed at once (nothing in force changed yet), then each change as it takes effect.
    expect(pushes.map((push) => push.plan)).toEqual([null, null, { key: 'later' }, null]);
    expect(pushes[2]!.at).toBeGreaterThanOrEqual(onLater.getTime());
    expect(pushes[2]!.at).toBeLessThan(backToDefault.getTime());
    expect(pushes[3]!.at).toBeGreaterThanOrEqual(backToDefault.getTime());
  });

  it('pushes the change to a merchant subscriber', async () => {
    const result = await firstEvent(connect(merchant.secret), { id: customerId }, () =>
      server.graphql('mutation ($id: ID!) { updateCustomer(id: $id, input: { name: "Renamed" }) { id } }', { id: customerId }, merchant.secret),
    );
    expect(result.value).toEqual({ data: { customerUpdated: { id: customerId, name: 'Renamed' } } });
  });

  it('pushes to a customer token watching its own customer', async () => {
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    const result = await firstEvent(connect(token), { id: customerId }, () => server.services.customers.update(merchant.id, customerId, { name: 'Self' }));
    expect(result.value).toEqual({ data: { customerUpdated: { id: customerId, name: 'Self' } } });
  });

  it("refuses a customer token subscribing to another customer: FORBIDDEN", async () => {
    const { token } = await server.services.customerSessions.create(merchant.id, customerId, 600);
    const iterator = connect(token).iterate({ query: SUBSCRIPTION, variables: { id: otherCustomerId } });
    const outcome = await iterator.next().then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
    const errors = 'error' in outcome ? (outcome.error as { extensions?: { code?: string } }[]) : (outcome.value.value as { errors: { extensions: { code: string } }[] }).errors;
    expect(errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it("refuses another merchant's key: NOT_FOUND", async () => {
    const other = await server.createMerchant('Other');
    const iterator = connect(other.secret).iterate({ query: SUBSCRIPTION, variables: { id: customerId } });
    const outcome = await iterator.next().then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    );
    const errors = 'error' in outcome ? (outcome.error as { extensions?: { code?: string } }[]) : (outcome.value.value as { errors: { extensions: { code: string } }[] }).errors;
    expect(errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
  });

  it('closes the connection for a bad credential (4403) and asks anonymous callers to authenticate', async () => {
    const closed = await connect(`sk_test_${'B'.repeat(43)}`)
      .iterate({ query: SUBSCRIPTION, variables: { id: customerId } })
      .next()
      .then(
        () => undefined,
        (error: unknown) => error as { code?: number },
      );
    expect(closed?.code).toBe(4403);

    const anonymous = await connect()
      .iterate({ query: SUBSCRIPTION, variables: { id: customerId } })
      .next()
      .then(
        (value) => (value.value as { errors: { extensions: { code: string } }[] }).errors,
        (error: unknown) => error as { extensions?: { code?: string } }[],
      );
    expect(anonymous?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });

  it("accepts a credential in the subscribe message's extensions.headers, as the playground sends it", async () => {
    const topic = customerTopic(customerId);
    await waitForSubscribers(server, topic, 0);
    const iterator = connect().iterate({
      query: SUBSCRIPTION,
      variables: { id: customerId },
      extensions: { headers: { Authorization: `Bearer ${merchant.secret}` } },
    });
    const next = iterator.next();
    await waitForSubscribers(server, topic, 1);
    await server.services.customers.update(merchant.id, customerId, { name: 'Via extensions' });
    expect((await next).value).toEqual({ data: { customerUpdated: { id: customerId, name: 'Via extensions' } } });
    await iterator.return?.();

    const refused = await connect()
      .iterate({ query: SUBSCRIPTION, variables: { id: customerId }, extensions: { headers: { authorization: `Bearer sk_test_${'C'.repeat(43)}` } } })
      .next()
      .then(
        (value) => (value.value as { errors: { extensions: { code: string } }[] }).errors,
        (error: unknown) => error as { extensions?: { code?: string } }[],
      );
    expect(refused?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });

  it('closes a subscription when the customer session token that opened it expires (4401)', async () => {
    // A token minted to expire in a second (the API's minimum TTL is a minute).
    const sessions = server.services.customerSessions as unknown as { sign(claims: object): string };
    const token = sessions.sign({ merchantId: merchant.id, customerId, sessionId: 'short', expiresAt: new Date(Math.floor(Date.now() / 1000 + 2) * 1000) });
    const outcome = await firstOutcome(connect(token));
    expect(outcome).toBe(4401);
  });

  it('closes a socket opened with an already expired session token with 4401 (fetch a fresh one), as when it expires while open', async () => {
    const sessions = server.services.customerSessions as unknown as { sign(claims: object): string };
    const expired = sessions.sign({ merchantId: merchant.id, customerId, sessionId: 'past', expiresAt: new Date(Math.floor(Date.now() / 1000 - 60) * 1000) });
    expect(await firstOutcome(connect(expired))).toBe(4401);
    // Over HTTP the same token is UNAUTHENTICATED, with the reason an app can act on.
    const answer = await server.graphql('{ viewer { kind } }', undefined, expired);
    expect(answer.errors?.[0]?.extensions).toMatchObject({ code: 'UNAUTHENTICATED', reason: 'SESSION_EXPIRED' });
    // A forged token stays a plain refusal.
    const [payload] = expired.slice('tgcs_'.length).split('.');
    expect(await firstOutcome(connect(`tgcs_${payload}.${'A'.repeat(43)}`))).toBe(4403);
  });

  it('closes a socket whose credential could not be checked (the database not answering) with 1013, which graphql-ws retries, not as a bad credential', async () => {
    const check = vi.spyOn(server.services.viewers, 'resolve').mockRejectedValueOnce(new Error('Connection terminated unexpectedly'));
    try {
      expect(await firstOutcome(connect(merchant.secret))).toBe(1013);
    } finally {
      check.mockRestore();
    }
    // The next attempt, the database answering, is let in.
    await server.services.customers.update(merchant.id, customerId, { name: 'After the outage' });
    const topic = customerTopic(customerId);
    await waitForSubscribers(server, topic, 0);
    const iterator = connect(merchant.secret).iterate({ query: SUBSCRIPTION, variables: { id: customerId } });
    const next = iterator.next();
    await waitForSubscribers(server, topic, 1);
    await server.services.customers.update(merchant.id, customerId, { name: 'Checked' });
    expect((await next).value).toEqual({ data: { customerUpdated: { id: customerId, name: 'Checked' } } });
    await iterator.return?.();
  });

  it('closes a socket whose secret key is revoked (4403), ending its subscriptions', async () => {
    const { apiKey, secret } = await server.services.apiKeys.create(merchant.id, { name: 'socket', mode: 'test' });
    const client = connect(secret);
    await waitForSubscribers(server, customerTopic(customerId), 0);
    const outcome = firstOutcome(client);
    await waitForSubscribers(server, customerTopic(customerId), 1);
    await server.services.apiKeys.revoke(merchant.id, apiKey.id);
    expect(await outcome).toBe(4403);
  });

  it('closes the socket of a customer session token whose minting key is revoked (4403)', async () => {
    const { apiKey, secret } = await server.services.apiKeys.create(merchant.id, { name: 'minting', mode: 'test' });
    const minted = await server.graphql<{ createCustomerSession: { token: string } }>(
      'mutation ($id: ID!) { createCustomerSession(customerId: $id, ttlSeconds: 600) { token } }', { id: customerId }, secret,
    );
    const client = connect(minted.data!.createCustomerSession.token);
    const subscribers = server.services.pubsub.subscriberCount(customerTopic(customerId));
    const outcome = firstOutcome(client);
    await waitForSubscribers(server, customerTopic(customerId), subscribers + 1);
    await server.services.apiKeys.revoke(merchant.id, apiKey.id);
    expect(await outcome).toBe(4403);
  });

  it("ends a customer's sessions when it is archived: its socket closes (4403), and HTTP calls with the token are UNAUTHENTICATED until it is unarchived", async () => {
    const archivedId = (await server.services.customers.create(merchant.id, { externalId: `to-archive-${Date.now()}` })).id;
    const { token } = await server.services.customerSessions.create(merchant.id, archivedId, 600);
    const own = () => server.graphql<{ customer: { id: string } }>('query ($id: ID!) { customer(id: $id) { id } }', { id: archivedId }, token);
    expect((await own()).data?.customer.id).toBe(archivedId);
    // A socket opened with the token before the archive, then one opened after it.
    const open = () => {
      const socket = new WebSocket(server.url.replace('http', 'ws') + '/graphql', 'graphql-transport-ws');
      socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })));
      const acked = new Promise<boolean>((resolve) => {
        socket.on('message', (data) => resolve(JSON.parse(String(data)).type === 'connection_ack'));
        socket.on('close', () => resolve(false));
      });
      const closed = new Promise<number | string>((resolve) => {
        socket.on('close', (code) => resolve(code));
        setTimeout(() => resolve('still open after 3 s'), 3000);
      });
      return { acked, closed, socket };
    };
    const before = open();
    expect(await before.acked).toBe(true);
    await server.services.customers.archive(merchant.id, archivedId);
    expect(await before.closed).toBe(4403); // within the recheck interval (200 ms here)
    const after = open();
    expect(await after.acked).toBe(false);
    expect(await after.closed).toBe(4403);
    const refused = await own();
    expect(refused.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED');
    expect(refused.errors?.[0]?.message).toContain('archived');
    await server.services.customers.unarchive(merchant.id, archivedId);
    expect((await own()).data?.customer.id).toBe(archivedId);
  });

  it('closes a socket once any customer it acts for is archived, when its operations carry their own session tokens (4403)', async () => {
    const [first, second] = await Promise.all(['shared-a', 'shared-b'].map((externalId) => server.services.customers.create(merchant.id, { externalId: `${externalId}-${Date.now()}` })));
    const subscribeAs = async (client: Client, customer: string) => {
      const { token } = await server.services.customerSessions.create(merchant.id, customer, 600);
      const iterator = client.iterate({ query: SUBSCRIPTION, variables: { id: customer }, extensions: { headers: { authorization: `Bearer ${token}` } } });
      const next = iterator.next();
      await waitForSubscribers(server, customerTopic(customer), 1);
      return { iterator, next };
    };
    let closedWith: (code: number) => void;
    const closed = new Promise<number>((resolve) => (closedWith = resolve));
    // No credential on the connection: each operation brings its own, as the playground sends them.
    const client = createClient({
      url: server.url.replace('http', 'ws') + '/graphql',
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      on: { closed: (event) => closedWith((event as { code: number }).code) },
    });
    clients.push(client);
    const a = await subscribeAs(client, first!.id);
    a.next.catch(() => undefined);
    const b = await subscribeAs(client, second!.id);
    await server.services.customers.archive(merchant.id, second!.id);
    await b.next; // the archive itself is a change
    const afterArchive = b.iterator.next().then(
      () => 'event',
      (error: unknown) => (error as { code?: number }).code,
    );
    // Within the recheck interval (200 ms here).
    expect(await Promise.race([closed, new Promise((resolve) => setTimeout(() => resolve('still open after 3 s'), 3000))])).toBe(4403);
    await server.services.customers.update(merchant.id, second!.id, { name: 'After archive' });
    expect(await afterArchive).toBe(4403);
  });

  it('runs no operation with a secret key revoked since its socket opened, not even one that mints a new key', async () => {
    // A server that looks for revoked keys' sockets only every 10 minutes: each operation is checked itself.
    const slow = await startTestServer({ TOLLGATE_WS_KEY_RECHECK_MS: '600000' });
    const owner = await slow.createMerchant();
    const { apiKey, secret } = await slow.services.apiKeys.create(owner.id, { name: 'socket', mode: 'test' });
    const client = createClient({ url: slow.url.replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${secret}` }, retryAttempts: 0, lazy: false });
    // An operation graphql-ws refuses before running it rejects with its errors.
    const run = (query: string) =>
      client.iterate({ query }).next().then(
        (result) => result.value as { data?: unknown; errors?: { extensions: { code: string } }[] },
        (errors: { extensions: { code: string } }[]) => ({ data: undefined, errors }),
      );
    try {
      expect((await run('{ viewer { kind } }')).data).toEqual({ viewer: { kind: 'MERCHANT' } });
      await slow.services.apiKeys.revoke(owner.id, apiKey.id);
      const after = await run('{ viewer { kind } }');
      expect(after.errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED');
      expect((await run('mutation { createApiKey(name: "minted") { secret } }')).errors?.[0]?.extensions.code).toBe('UNAUTHENTICATED');
      expect(await slow.services.apiKeys.list(owner.id, { includeRevoked: true })).toHaveLength(2);
    } finally {
      await client.dispose();
      await slow.close();
    }
  });

  it('masks an internal error in a subscription as INTERNAL with a request id', async () => {
    const original = server.services.customers.get.bind(server.services.customers);
    let calls = 0;
    // Let the subscribe step pass, then fail while resolving the pushed event.
    server.services.customers.get = async (...args) => {
      if (++calls > 1) throw new Error('database password hunter2 leaked?');
      return original(...args);
    };
    try {
      const topic = customerTopic(customerId);
      await waitForSubscribers(server, topic, 0);
      const iterator = connect(merchant.secret).iterate({ query: SUBSCRIPTION, variables: { id: customerId } });
      const next = iterator.next();
      await waitForSubscribers(server, topic, 1);
      server.services.pubsub.publish(topic, { customerId });
      const result = (await next).value as { errors: { message: string; extensions: { code: string; requestId?: string } }[] };
      expect(result.errors[0]!.extensions.code).toBe('INTERNAL');
      expect(result.errors[0]!.extensions.requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(JSON.stringify(result)).not.toContain('hunter2');
      await iterator.return?.();
    } finally {
      server.services.customers.get = original;
    }
  });

  it('rejects invalid operations with VALIDATION', async () => {
    const outcome = await connect(merchant.secret)
      .iterate({ query: 'subscription { customerUpdated(id: "x") { nope } }' })
      .next()
      .then(
        (value) => (value.value as { errors: { extensions: { code: string } }[] }).errors,
        (error: unknown) => error as { extensions?: { code?: string } }[],
      );
    expect(outcome?.[0]?.extensions?.code).toBe('VALIDATION');
  });

  it('names the argument an invalid literal was given for (field), as HTTP does', async () => {
    const query = `subscription { balanceUpdated(customerId: "${customerId}", currency: 5) { currency } }`;
    const outcome = await connect(merchant.secret)
      .iterate({ query })
      .next()
      .then(
        (value) => (value.value as { errors: { extensions: Record<string, unknown> }[] }).errors,
        (error: unknown) => error as { extensions?: Record<string, unknown> }[],
      );
    expect(outcome?.[0]?.extensions).toMatchObject({ code: 'VALIDATION', field: 'currency' });
  });
});

/** A raw graphql-ws socket to `server`, initialised with `payload`: whether it was acknowledged, and its close code. */
function rawSocket(server: TestServer, payload: Record<string, unknown>) {
  const socket = new WebSocket(server.url.replace('http', 'ws') + '/graphql', 'graphql-transport-ws');
  socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload })));
  const acked = new Promise<boolean>((resolve) => {
    socket.once('message', (data) => resolve(JSON.parse(String(data)).type === 'connection_ack'));
    socket.on('close', () => resolve(false));
  });
  const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
  return { acked, closed, socket };
}

describe('WebSocket limits', () => {
  let limited: TestServer;
  let owner: { id: string; secret: string };
  beforeAll(async () => {
    limited = await startTestServer({ TOLLGATE_WS_MAX_OPERATIONS: '2', TOLLGATE_WS_MAX_CUSTOMER_SOCKETS: '2' });
    owner = await limited.createMerchant();
  });
  afterAll(() => limited?.close());

  const open = (token: string) => rawSocket(limited, { authorization: `Bearer ${token}` });

  it('refuses an operation beyond the per-connection limit with RATE_LIMITED, and takes one again once another completes', async () => {
    const watched = (await limited.services.customers.create(owner.id, { externalId: 'ops' })).id;
    const topic = customerTopic(watched);
    const client = createClient({ url: limited.url.replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${owner.secret}` }, retryAttempts: 0 });
    try {
      const subscribe = () => client.iterate({ query: SUBSCRIPTION, variables: { id: watched } });
      const first = subscribe();
      const second = subscribe();
      const pending = [first.next(), second.next()];
      await waitForSubscribers(limited, topic, 2);
      const refused = await Promise.race([
        subscribe()
          .next()
          .then(
            () => null,
            (errors: unknown) => errors as { message: string; extensions?: { code?: string } }[],
          ),
        new Promise<null>((resolve) => setTimeout(() => resolve(null), 5000)),
      ]);
      expect(refused?.[0]?.extensions?.code).toBe('RATE_LIMITED');
      expect(refused?.[0]?.message).toContain('2 operations');
      expect(limited.services.pubsub.subscriberCount(topic)).toBe(2);

      await first.return?.();
      await waitForSubscribers(limited, topic, 1);
      const third = subscribe();
      const delivered = third.next();
      await waitForSubscribers(limited, topic, 2);
      await limited.services.customers.update(owner.id, watched, { name: 'Renamed' });
      expect(((await delivered).value as { data: { customerUpdated: { name: string } } }).data.customerUpdated.name).toBe('Renamed');
      await Promise.all([second.return?.(), third.return?.()]);
      await Promise.allSettled(pending);
    } finally {
      await client.dispose();
    }
  });

  it("counts a connection against every customer whose session token one of its operations carried", async () => {
    const [carol, dave] = await Promise.all(['carol', 'dave'].map((externalId) => limited.services.customers.create(owner.id, { externalId })));
    const tokenOf = async (customerId: string) => (await limited.services.customerSessions.create(owner.id, customerId, 600)).token;
    const [carolToken, daveToken] = await Promise.all([tokenOf(carol!.id), tokenOf(dave!.id)]);
    const anonymous: Client[] = [];
    /** Subscribes over an anonymous connection with the token in the operation; the first result, or the refusal. */
    const subscribeAs = (client: Client, token: string, customerId: string) =>
      client
        .iterate({ query: SUBSCRIPTION, variables: { id: customerId }, extensions: { headers: { authorization: `Bearer ${token}` } } })
        .next()
        .then(
          (result) => result.value as { errors?: { extensions: { code: string } }[] },
          (errors: unknown) => ({ errors: errors as { extensions: { code: string } }[] }),
        );
    const open = () => {
      const client = createClient({ url: limited.url.replace('http', 'ws') + '/graphql', webSocketImpl: WebSocket, retryAttempts: 0 });
      anonymous.push(client);
      return client;
    };
    try {
      // Two connections each acting for Carol first, then for Dave: two for Dave, his limit.
      for (let held = 1; held <= 2; held++) {
        const client = open();
        void subscribeAs(client, carolToken, carol!.id);
        await waitForSubscribers(limited, customerTopic(carol!.id), held);
        void subscribeAs(client, daveToken, dave!.id);
        await waitForSubscribers(limited, customerTopic(dave!.id), held);
      }
      const refused = await Promise.race([subscribeAs(open(), daveToken, dave!.id), new Promise<null>((resolve) => setTimeout(() => resolve(null), 5000))]);
      expect(refused?.errors?.[0]?.extensions.code).toBe('RATE_LIMITED');
      expect(limited.services.pubsub.subscriberCount(customerTopic(dave!.id))).toBe(2);
    } finally {
      await Promise.all(anonymous.map((client) => client.dispose()));
    }
  });

  it("closes a customer's connection beyond its limit with 4029, counts each customer apart, and admits one again once another closes", async () => {
    const [alice, bob] = await Promise.all(['alice', 'bob'].map((externalId) => limited.services.customers.create(owner.id, { externalId })));
    const token = async (customerId: string) => (await limited.services.customerSessions.create(owner.id, customerId, 600)).token;
    const aliceToken = await token(alice!.id);
    const first = open(aliceToken);
    const second = open(aliceToken);
    expect(await Promise.all([first.acked, second.acked])).toEqual([true, true]);
    const third = open(aliceToken);
    expect(await third.acked).toBe(false);
    expect(await third.closed).toBe(4029);
    // Another customer of the same merchant is not held to Alice's count.
    const bobs = open(await token(bob!.id));
    expect(await bobs.acked).toBe(true);

    first.socket.close();
    await first.closed;
    const again = open(aliceToken);
    expect(await again.acked).toBe(true);
    for (const { socket } of [second, bobs, again]) socket.close();
  });
});

describe('WebSockets without a credential', () => {
  let capped: TestServer;
  beforeAll(async () => {
    capped = await startTestServer({ TOLLGATE_WS_MAX_ANONYMOUS_SOCKETS: '2' });
  });
  afterAll(() => capped?.close());

  const open = (payload: Record<string, unknown>) => rawSocket(capped, payload);

  // Anyone could open them: a loop doing so held unbounded sockets on the instance.
  it('are held to TOLLGATE_WS_MAX_ANONYMOUS_SOCKETS (4029 beyond it), a slot freed as one closes; a credential is not held to it', async () => {
    const owner = await capped.createMerchant();
    const first = open({});
    const second = open({});
    expect(await Promise.all([first.acked, second.acked])).toEqual([true, true]);
    const third = open({});
    expect(await third.acked).toBe(false);
    expect(await third.closed).toBe(4029);
    const withKey = open({ authorization: `Bearer ${owner.secret}` });
    expect(await withKey.acked).toBe(true);

    first.socket.close();
    await first.closed;
    const again = open({});
    expect(await again.acked).toBe(true);
    for (const { socket } of [second, withKey, again]) socket.close();
  });
});
