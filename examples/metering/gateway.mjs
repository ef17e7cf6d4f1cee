// An app calling an OpenAI-compatible chat completion THROUGH Tollgate's gateway: Tollgate checks
// the customer can pay, forwards the call with the provider key it stores, and charges the usage.
// Run examples/metering/setup.mjs first (customer, credit, provider key).
//
//   TOLLGATE_SECRET_KEY=sk_test_… node examples/metering/gateway.mjs

const TOLLGATE_URL = process.env.TOLLGATE_URL || 'http://127.0.0.1:4000';
const SECRET_KEY = process.env.TOLLGATE_SECRET_KEY;
const CUSTOMER = process.env.CUSTOMER || 'example-user-1';
const PROVIDER_URL = process.env.PROVIDER_URL || 'https://api.openai.com/v1/chat/completions';
const MODEL = process.env.MODEL || 'gpt-4o-mini';

if (!SECRET_KEY) throw new Error('Set TOLLGATE_SECRET_KEY (npm start prints the demo merchant\'s at first start)');

/** One GraphQL operation as the merchant; errors are thrown. */
async function gql(query, variables = {}) {
  const response = await fetch(`${TOLLGATE_URL}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${SECRET_KEY}` },
    body: JSON.stringify({ query, variables }),
  });
  const { data, errors } = await response.json();
  if (errors) throw new Error(`${errors[0].extensions?.code}: ${errors[0].message}`);
  return data;
}

// The call, as the app would make it to the provider, but sent to Tollgate with the provider URL in
// `u`. Your secret key plus x-tollgate-customer says whom to charge (a browser would send a customer
// session token alone instead). No provider key: the gateway adds the one you stored.
const response = await fetch(`${TOLLGATE_URL}/v1/forward?u=${encodeURIComponent(PROVIDER_URL)}`, {
  method: 'POST',
  headers: { 'content-type': 'application/json', authorization: `Bearer ${SECRET_KEY}`, 'x-tollgate-customer': CUSTOMER },
  body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Say hello in five words.' }] }),
});

if (!response.ok) {
  const text = await response.text();
  let error;
  try {
    error = JSON.parse(text).error;
  } catch {
    error = text; // a provider's error page, say
  }
  // Tollgate's refusals come before the provider is called (nothing was charged); show them to the user.
  if (response.status === 402 && error?.code === 'INSUFFICIENT_FUNDS') {
    console.log(`Refused: INSUFFICIENT_FUNDS (${error.message}; available ${error.available} ${error.currency})`);
  } else if (response.status === 429 && error?.code === 'SPEND_LIMIT_REACHED') {
    console.log(`Refused: SPEND_LIMIT_REACHED (${error.message}; resets at ${error.resetsAt})`);
  } else {
    // Anything else: another refusal of Tollgate's (unknown customer, host not allowed, …) or the
    // provider's own error, relayed unchanged and not charged.
    console.log(`Call failed with ${response.status}: ${JSON.stringify(error)}`);
  }
  process.exit(1);
}

const completion = await response.json();
console.log(`Answer: ${completion.choices[0].message.content}`);

// The charge is written just after the response has been relayed (the app never waits for it);
// the call's record appears, with the usage event that charged it, once it has been.
const requestId = response.headers.get('x-tollgate-request-id');
let call = null;
for (let tries = 0; !call && tries < 100; tries++) {
  call = (await gql('query($id: ID!) { gatewayRequest(id: $id) { customerId usageEventId } }', { id: requestId })).gatewayRequest;
  if (!call) await new Promise((resolve) => setTimeout(resolve, 100));
}
if (!call) throw new Error(`call ${requestId} was not recorded within 10 s`);

const { usageEvents, wallet } = await gql(
  `query($c: ID!) {
     usageEvents(customerId: $c, first: 20) { edges { node { id model cost charge margin } } }
     wallet(customerId: $c) { balance { amount currency } }
   }`,
  { c: call.customerId },
);
const event = usageEvents.edges.map((edge) => edge.node).find((node) => node.id === call.usageEventId);
if (event) console.log(`Charged: ${event.charge} (provider cost ${event.cost}, margin ${event.margin}) for ${event.model}, event ${event.id}`);
else console.log('Not charged: the call was not billable');
console.log(`Balance: ${wallet.balance.amount} ${wallet.balance.currency}`);
