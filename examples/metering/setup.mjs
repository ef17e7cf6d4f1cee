// Prepares a Tollgate merchant for the two metering examples, with its secret key (a server-side
// call: a secret key must never reach a browser). Run it again to grant more credit.
//
//   TOLLGATE_SECRET_KEY=sk_test_… PROVIDER_API_KEY=sk-… node examples/metering/setup.mjs

const TOLLGATE_URL = process.env.TOLLGATE_URL || 'http://127.0.0.1:4000';
const SECRET_KEY = process.env.TOLLGATE_SECRET_KEY;
const CUSTOMER = process.env.CUSTOMER || 'example-user-1'; // your own user id (the customer's externalId)
const CREDITS = process.env.CREDITS || '5.00'; // USD to grant; 0 grants none
const PROVIDER_URL = process.env.PROVIDER_URL || 'https://api.openai.com/v1/chat/completions';
const PROVIDER = process.env.PROVIDER; // only for a host Tollgate does not know (see README)
const PROVIDER_API_KEY = process.env.PROVIDER_API_KEY;

if (!SECRET_KEY) throw new Error('Set TOLLGATE_SECRET_KEY (npm start prints the demo merchant\'s at first start)');

/** One GraphQL operation as the merchant; an error is thrown with its code (NOT_FOUND, CONFLICT, …). */
async function gql(query, variables = {}) {
  const response = await fetch(`${TOLLGATE_URL}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${SECRET_KEY}` },
    body: JSON.stringify({ query, variables }),
  });
  const { data, errors } = await response.json();
  if (errors) throw Object.assign(new Error(errors[0].message), { code: errors[0].extensions?.code });
  return data;
}

// 1. The customer, named by your own id. Created once; later runs find it.
let customerId;
try {
  const created = await gql('mutation($e: String!) { createCustomer(input: { externalId: $e }) { id } }', { e: CUSTOMER });
  customerId = created.createCustomer.id;
  console.log(`Created customer ${CUSTOMER} (${customerId})`);
} catch (error) {
  if (error.code !== 'CONFLICT') throw error;
  customerId = (await gql('query($e: String!) { customer(externalId: $e) { id } }', { e: CUSTOMER })).customer.id;
  console.log(`Customer ${CUSTOMER} already exists (${customerId})`);
}

// 2. Credit to spend. The idempotency key names this top-up: retrying it with the same key (after
// a timeout, say) would grant it once. Each run of this script is a new top-up, so a new key.
if (Number(CREDITS) > 0) {
  const granted = await gql(
    `mutation($c: ID!, $a: Decimal!, $k: String!) {
       grantCredits(input: { customerId: $c, amount: $a, kind: PAID, idempotencyKey: $k }) { wallet { balance { amount currency } } }
     }`,
    { c: customerId, a: CREDITS, k: `examples-setup-${crypto.randomUUID()}` },
  );
  const { amount, currency } = granted.grantCredits.wallet.balance;
  console.log(`Granted ${CREDITS}: balance ${amount} ${currency}`);
}

// 3. For the gateway: a provider host Tollgate does not know (a self-hosted server, a local fake)
// must be allowed, saying which provider's API it speaks. The provider's own hosts need nothing.
if (PROVIDER) {
  const host = new URL(PROVIDER_URL).host; // with its port, which also allows plain http on it
  await gql('mutation($h: String!, $p: String!) { putGatewayHost(host: $h, provider: $p) { id } }', { h: host, p: PROVIDER });
  console.log(`Gateway may call ${host} as ${PROVIDER}`);
}

// 4. The provider key the gateway adds to forwarded calls: stored encrypted, never returned, so
// the app calling through the gateway never holds it.
if (PROVIDER_API_KEY) {
  const stored = await gql('mutation($p: String!, $k: String!) { setProviderCredential(provider: $p, apiKey: $k) { provider last4 } }', {
    p: PROVIDER || 'openai',
    k: PROVIDER_API_KEY,
  });
  console.log(`Stored the ${stored.setProviderCredential.provider} key ending in ${stored.setProviderCredential.last4}`);
}
