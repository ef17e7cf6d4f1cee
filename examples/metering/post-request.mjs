// An app calling the provider itself, then reporting the raw response to Tollgate (post-request
// metering): Tollgate reads the usage out of it, costs it, prices it with your rules and charges the
// customer. Run examples/metering/setup.mjs first (customer and credit).
//
//   TOLLGATE_SECRET_KEY=sk_test_… PROVIDER_API_KEY=sk-… node examples/metering/post-request.mjs

const TOLLGATE_URL = process.env.TOLLGATE_URL || 'http://127.0.0.1:4000';
const SECRET_KEY = process.env.TOLLGATE_SECRET_KEY;
const CUSTOMER = process.env.CUSTOMER || 'example-user-1';
const PROVIDER_URL = process.env.PROVIDER_URL || 'https://api.openai.com/v1/chat/completions';
const PROVIDER_API_KEY = process.env.PROVIDER_API_KEY;
const PROVIDER = process.env.PROVIDER; // only for a host Tollgate does not know (see README)
const MODEL = process.env.MODEL || 'gpt-4o-mini';

if (!SECRET_KEY) throw new Error('Set TOLLGATE_SECRET_KEY (npm start prints the demo merchant\'s at first start)');
if (!PROVIDER_API_KEY) throw new Error('Set PROVIDER_API_KEY: this app calls the provider itself');

// 1. Ask first: usage reported after a call is never refused, so stop a customer who ran out (or
// reached its monthly spend limit) before calling the provider, as the gateway would.
const access = await fetch(`${TOLLGATE_URL}/v1/access?customer=${encodeURIComponent(CUSTOMER)}`, { headers: { authorization: `Bearer ${SECRET_KEY}` } });
const verdict = await access.json();
if (!access.ok) throw new Error(`Access check failed with ${access.status}: ${verdict.error.code}: ${verdict.error.message}`);
if (!verdict.allowed) {
  console.log(`Refused: ${verdict.reason} (available ${verdict.available} ${verdict.currency})`);
  process.exit(1);
}

// 2. The call to the provider, as the app makes it today.
const request = { model: MODEL, messages: [{ role: 'user', content: 'Say hello in five words.' }] };
const providerResponse = await fetch(PROVIDER_URL, {
  method: 'POST',
  headers: { 'content-type': 'application/json', authorization: `Bearer ${PROVIDER_API_KEY}` },
  body: JSON.stringify(request),
});
const body = await providerResponse.text(); // kept as text: Tollgate reads the bytes the provider sent
if (providerResponse.ok) console.log(`Answer: ${JSON.parse(body).choices[0].message.content}`);

// 3. The report. The idempotency key names this one call: a retry of the report (after a timeout,
// a crash before you knew it arrived) must send the same key, and is then never charged twice.
// An error response is recorded too, and never charged.
const report = {
  customer: CUSTOMER,
  idempotencyKey: `chat-${crypto.randomUUID()}`,
  response: { url: PROVIDER_URL, status: providerResponse.status, body, requestBody: request, ...(PROVIDER && { provider: PROVIDER }) },
};

async function sendUsage() {
  const response = await fetch(`${TOLLGATE_URL}/v1/usage`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${SECRET_KEY}` },
    body: JSON.stringify(report),
  });
  const answer = await response.json();
  // Refused (bad input, unknown customer): nothing was recorded.
  if (!answer.event) throw new Error(`Usage refused with ${response.status}: ${answer.error.code}: ${answer.error.message}`);
  return answer;
}

/** The customer's balance, read with GraphQL's `wallet`. */
async function balance(customerId) {
  const response = await fetch(`${TOLLGATE_URL}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${SECRET_KEY}` },
    body: JSON.stringify({ query: 'query($c: ID!) { wallet(customerId: $c) { balance { amount currency } } }', variables: { c: customerId } }),
  });
  const { data, errors } = await response.json();
  if (errors) throw new Error(`${errors[0].extensions?.code}: ${errors[0].message}`);
  return `${data.wallet.balance.amount} ${data.wallet.balance.currency}`;
}

const first = await sendUsage();
const { event } = first;
console.log(`Recorded event ${event.id} (${event.status}): cost ${event.cost}, charge ${event.charge}, margin ${event.margin} ${event.currency}`);
// Recorded, but the customer could not pay all of it (402): the rest is the event's shortfall. Stop
// serving this customer until it tops up.
if (first.chargeError) console.log(`Not fully paid: ${first.chargeError.code} (shortfall ${event.shortfall} ${event.currency})`);
console.log(`Balance: ${await balance(event.customerId)}`);

// 4. The same report again, as a retry would send it: answered with the first result, charged once.
const again = await sendUsage();
console.log(`Sent again: replayed ${again.replayed}, same event ${again.event.id === event.id}, charge ${again.event.charge}`);
console.log(`Balance: ${await balance(event.customerId)}`);
