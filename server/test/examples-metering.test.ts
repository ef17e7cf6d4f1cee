import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDecimalAttos } from '../src/shared/money.ts';
import { outputOf, type ProcessOutput } from './cli-process.ts';
import { startFakeProvider, type FakeProvider } from './fake-provider.ts';
import { graphqlData, startTestServer, type TestServer } from './server.ts';

/**
 * examples/metering, run as a newcomer runs them (`node <script>`, configured by environment
 * variables) against a real server and a local fake OpenAI: so that the examples keep working.
 */
const examples = fileURLToPath(new URL('../../examples/metering/', import.meta.url));
const PROVIDER_KEY = 'sk-examples-provider-key-0042';
/** What the fake provider's chat completion fixture answers. */
const ANSWER = 'Your invoice total for March is $4,218.50.';

let server: TestServer;
let provider: FakeProvider;
let secret: string;

beforeAll(async () => {
  [server, provider] = await Promise.all([startTestServer({ TOLLGATE_GATEWAY_ALLOW_PRIVATE_NETWORKS: 'true' }), startFakeProvider()]);
  ({ secret } = await server.createMerchant('Examples merchant'));
});
afterAll(async () => {
  await server?.close();
  await provider?.close();
});

/** A script of examples/metering run with only PATH and the variables the examples read. */
function runExample(script: string, env: Record<string, string>): Promise<ProcessOutput> {
  const child = spawn(process.execPath, [`${examples}${script}`], {
    cwd: examples,
    env: {
      PATH: process.env.PATH,
      TOLLGATE_URL: server.url,
      TOLLGATE_SECRET_KEY: secret,
      PROVIDER_URL: `${provider.url}/v1/chat/completions`,
      // The fake provider's host is not OpenAI's: the examples name the API it speaks.
      PROVIDER: 'openai',
      ...env,
    },
  });
  return outputOf(child);
}

async function succeeds(script: string, env: Record<string, string>): Promise<string> {
  const run = await runExample(script, env);
  expect(run.code, `${script} failed:\n${run.stdout}\n${run.stderr}`).toBe(0);
  return run.stdout;
}

async function customerState(externalId: string) {
  const { customer } = await graphqlData(server, 'query($e: String!) { customer(externalId: $e) { id } }', { e: externalId }, secret);
  const data = await graphqlData(
    server,
    `query($c: ID!) {
       wallet(customerId: $c) { balance { amount } }
       usageEvents(customerId: $c, first: 10) { edges { node { id idempotencyKey cost charge margin } } }
     }`,
    { c: customer.id },
    secret,
  );
  const events = data.usageEvents.edges.map((edge: { node: { id: string; idempotencyKey: string; cost: string; charge: string; margin: string } }) => edge.node);
  return { customerId: customer.id as string, balance: data.wallet.balance.amount as string, events: events as { id: string; idempotencyKey: string; cost: string; charge: string; margin: string }[] };
}

const attos = (amount: string) => parseDecimalAttos('amount', amount);

describe('examples/metering', { timeout: 60_000 }, () => {
  it('setup.mjs creates the customer and grants its credit, and finds the customer when run again', async () => {
    const first = await succeeds('setup.mjs', { CUSTOMER: 'setup-user', CREDITS: '2.50' });
    expect(first).toContain('Created customer setup-user');
    const again = await succeeds('setup.mjs', { CUSTOMER: 'setup-user', CREDITS: '1.00' });
    expect(again).toContain('Customer setup-user already exists');
    // Each run is its own top-up.
    expect(attos((await customerState('setup-user')).balance)).toBe(attos('3.50'));
  });

  it('gateway.mjs calls the provider through the gateway with the stored key, and is charged once', async () => {
    await succeeds('setup.mjs', { CUSTOMER: 'gateway-user', CREDITS: '5.00', PROVIDER_API_KEY: PROVIDER_KEY });
    provider.reset();

    const out = await succeeds('gateway.mjs', { CUSTOMER: 'gateway-user' });

    expect(out).toContain(`Answer: ${ANSWER}`);
    // The provider got one call, with the key the gateway stores and none of Tollgate's credentials.
    expect(provider.requests).toHaveLength(1);
    expect(provider.requests[0]!.headers.authorization).toBe(`Bearer ${PROVIDER_KEY}`);
    expect(JSON.stringify(provider.requests[0]!.headers)).not.toContain(secret);

    const { balance, events } = await customerState('gateway-user');
    expect(events).toHaveLength(1);
    const [event] = events;
    expect(attos(event!.charge)).toBeGreaterThan(0n);
    expect(attos(balance)).toBe(attos('5.00') - attos(event!.charge));
    // What the script printed is what the server holds.
    expect(out).toContain(`Charged: ${event!.charge} (provider cost ${event!.cost}, margin ${event!.margin})`);
    expect(out).toContain(`event ${event!.id}`);
    expect(out).toContain(`Balance: ${balance} USD`);
  });

  it('post-request.mjs reports the provider response once, and its replay is not charged again', async () => {
    await succeeds('setup.mjs', { CUSTOMER: 'post-user', CREDITS: '5.00' });
    provider.reset();

    const out = await succeeds('post-request.mjs', { CUSTOMER: 'post-user', PROVIDER_API_KEY: PROVIDER_KEY });

    expect(out).toContain(`Answer: ${ANSWER}`);
    // The app called the provider itself, with its own key.
    expect(provider.requests).toHaveLength(1);
    expect(provider.requests[0]!.headers.authorization).toBe(`Bearer ${PROVIDER_KEY}`);

    const { balance, events } = await customerState('post-user');
    expect(events).toHaveLength(1);
    const [event] = events;
    expect(attos(event!.charge)).toBeGreaterThan(0n);
    expect(attos(balance)).toBe(attos('5.00') - attos(event!.charge));
    expect(out).toContain(`Recorded event ${event!.id} (CHARGED): cost ${event!.cost}, charge ${event!.charge}, margin ${event!.margin} USD`);
    expect(out).toContain('Sent again: replayed true, same event true');
    // The balance printed after the replay is the one printed after the first report: charged once.
    const printed = [...out.matchAll(/^Balance: (.+)$/gm)].map((match) => match[1]);
    expect(printed).toEqual([`${balance} USD`, `${balance} USD`]);
  });

  it('gateway.mjs reports INSUFFICIENT_FUNDS for a customer with no credit, and the provider is not called', async () => {
    await succeeds('setup.mjs', { CUSTOMER: 'broke-user', CREDITS: '0', PROVIDER_API_KEY: PROVIDER_KEY });
    provider.reset();

    const run = await runExample('gateway.mjs', { CUSTOMER: 'broke-user' });

    expect(run.code).toBe(1);
    expect(run.stdout).toContain('Refused: INSUFFICIENT_FUNDS');
    expect(provider.requests).toHaveLength(0);
    const { balance, events } = await customerState('broke-user');
    expect(events).toHaveLength(0);
    expect(attos(balance)).toBe(0n);
  });

  it('post-request.mjs asks /v1/access first: a customer with no credit is refused before the provider is called', async () => {
    await succeeds('setup.mjs', { CUSTOMER: 'broke-app-user', CREDITS: '0' });
    provider.reset();

    const run = await runExample('post-request.mjs', { CUSTOMER: 'broke-app-user', PROVIDER_API_KEY: PROVIDER_KEY });

    expect(run.code).toBe(1);
    expect(run.stdout).toContain('Refused: INSUFFICIENT_FUNDS (available 0.00 USD)');
    expect(provider.requests).toHaveLength(0);
    expect((await customerState('broke-app-user')).events).toHaveLength(0);
  });

  it('gateway.mjs reports SPEND_LIMIT_REACHED once the month\'s charges reach the customer\'s limit', async () => {
    await succeeds('setup.mjs', { CUSTOMER: 'limited-user', CREDITS: '5.00', PROVIDER_API_KEY: PROVIDER_KEY });
    // Usage reported after the call is never refused for the limit: it charges past it.
    await succeeds('post-request.mjs', { CUSTOMER: 'limited-user', PROVIDER_API_KEY: PROVIDER_KEY });
    const { customerId, balance } = await customerState('limited-user');
    await graphqlData(server, 'mutation($c: ID!) { setSpendLimit(customerId: $c, amount: "0.001") { customerId } }', { c: customerId }, secret);
    provider.reset();

    const run = await runExample('gateway.mjs', { CUSTOMER: 'limited-user' });

    expect(run.code).toBe(1);
    expect(run.stdout).toContain('Refused: SPEND_LIMIT_REACHED');
    expect(provider.requests).toHaveLength(0);
    expect((await customerState('limited-user')).balance).toBe(balance);
  });
});
