import { keepPreviousData, QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { render, screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { jsonResponse, stubFetch, type RecordedRequest } from '../../test/fetchStub.js';
import { cacheScopeOf } from '../client/cacheScope.js';
import { TollgateError } from '../client/TollgateError.js';
import { TollgateProvider } from '../provider/TollgateProvider.js';
import { VIEWER_QUERY, viewerQueryKey, type Viewer } from '../queries/viewer.js';
import { useViewer } from './useViewer.js';

const newQueryClient = () => new QueryClient({ defaultOptions: { queries: { retry: false } } });

function ViewerCard() {
  const viewer = useViewer();
  if (viewer.isPending) return <p>loading</p>;
  if (viewer.isError) {
    const code = viewer.error instanceof TollgateError ? viewer.error.code : 'not a TollgateError';
    return <p role="alert">{`${code}: ${viewer.error.message}`}</p>;
  }
  const { kind, merchant, customer } = viewer.data;
  return (
    <dl>
      <dt>kind</dt>
      <dd>{kind}</dd>
      <dt>merchant</dt>
      <dd>{merchant.name}</dd>
      <dt>customer</dt>
      <dd>{customer ? `${customer.name ?? customer.externalId} <${customer.email ?? 'no email'}>` : 'none'}</dd>
    </dl>
  );
}

const customerViewer: Viewer = {
  kind: 'CUSTOMER',
  merchant: { id: 'mer_1', name: 'Acme AI' },
  customer: { id: 'cus_1', externalId: 'user-42', name: 'Ada Lovelace', email: 'ada@example.com' },
};

/** Alice's or Bob's viewer, by the session token the request carries. */
const viewerByToken = (request: RecordedRequest) => {
  const name = request.headers.get('authorization') === 'Bearer cs_bob' ? 'Bob' : 'Alice';
  return jsonResponse({ data: { viewer: { ...customerViewer, customer: { ...customerViewer.customer!, name } } } });
};

/** Shows the viewer's name, and records in `shown` every name it ever rendered. */
function namesShownIn(shown: string[]) {
  return function Name() {
    const viewer = useViewer();
    if (viewer.data?.customer?.name) shown.push(viewer.data.customer.name);
    return <p>{viewer.data?.customer?.name ?? 'loading'}</p>;
  };
}

describe('useViewer', () => {
  it('fetches the viewer with the session token and renders it', async () => {
    const requests = stubFetch(() => jsonResponse({ data: { viewer: customerViewer } }));
    const queryClient = newQueryClient();

    render(
      <QueryClientProvider client={queryClient}>
        <TollgateProvider endpoint="https://billing.test/graphql" token="cs_live_abc">
          <ViewerCard />
        </TollgateProvider>
      </QueryClientProvider>,
    );

    expect(screen.getByText('loading')).toBeDefined();
    expect(await screen.findByText('Acme AI')).toBeDefined();
    expect(screen.getByText('CUSTOMER')).toBeDefined();
    expect(screen.getByText('Ada Lovelace <ada@example.com>')).toBeDefined();

    expect(requests).toHaveLength(1);
    expect(requests[0]?.headers.get('authorization')).toBe('Bearer cs_live_abc');
    expect(requests[0]?.body).toEqual({ query: VIEWER_QUERY });
    // The result lands in the host's cache under the documented key.
    expect(queryClient.getQueryData(viewerQueryKey(cacheScopeOf('https://billing.test/graphql', 'cs_live_abc')))).toEqual(customerViewer);
  });

  it('renders a merchant viewer without a customer', async () => {
    stubFetch(() => jsonResponse({ data: { viewer: { kind: 'MERCHANT', merchant: { id: 'mer_1', name: 'Acme AI' }, customer: null } } }));

    render(
      <TollgateProvider endpoint="https://billing.test/graphql" token="sk_test" queryClient={newQueryClient()}>
        <ViewerCard />
      </TollgateProvider>,
    );

    expect(await screen.findByText('MERCHANT')).toBeDefined();
    expect(screen.getByText('none')).toBeDefined();
  });

  it('surfaces a server error as a TollgateError with its code', async () => {
    stubFetch(() => jsonResponse({ errors: [{ message: 'Authentication required', extensions: { code: 'UNAUTHENTICATED' } }] }, 401));

    render(
      <TollgateProvider endpoint="https://billing.test/graphql" token="expired" queryClient={newQueryClient()}>
        <ViewerCard />
      </TollgateProvider>,
    );

    expect((await screen.findByRole('alert')).textContent).toBe('UNAUTHENTICATED: Authentication required');
  });

  it('never sends a secret key from the browser, and says why', async () => {
    const requests = stubFetch(() => jsonResponse({ data: { viewer: { kind: 'MERCHANT', merchant: customerViewer.merchant, customer: null } } }));

    render(
      <TollgateProvider endpoint="https://billing.test/graphql" token="sk_live_abcdef0123456789" queryClient={newQueryClient()}>
        <ViewerCard />
      </TollgateProvider>,
    );

    expect((await screen.findByRole('alert')).textContent).toMatch(/^FORBIDDEN: A secret key must never be sent from a browser.*createCustomerSession/);
    expect(requests.filter((request) => request.headers.get('authorization')?.includes('sk_live_'))).toEqual([]);
  });

  it('serves each token its own data: a new token fetches anew and never shows the previous customer', async () => {
    const requests = stubFetch(viewerByToken);
    const queryClient = newQueryClient();
    const shown: string[] = [];
    const Name = namesShownIn(shown);
    const tree = (token: string) => (
      <TollgateProvider endpoint="https://billing.test/graphql" token={token} queryClient={queryClient}>
        <Name />
      </TollgateProvider>
    );
    const { rerender, unmount } = render(tree('cs_alice'));
    expect(await screen.findByText('Alice')).toBeDefined();
    shown.length = 0;
    rerender(tree('cs_bob'));
    expect(await screen.findByText('Bob')).toBeDefined();
    expect(shown).not.toContain('Alice');
    expect(requests.map((request) => request.headers.get('authorization'))).toEqual(['Bearer cs_alice', 'Bearer cs_bob']);

    // Logged out and in again as Bob on the same QueryClient: Alice's cached viewer is never shown.
    unmount();
    shown.length = 0;
    render(tree('cs_bob'));
    expect(await screen.findByText('Bob')).toBeDefined();
    expect(shown).not.toContain('Alice');
  });

  it("never shows the previous customer's viewer while the next one's loads, even when the host keeps previous data by default", async () => {
    stubFetch(viewerByToken);
    // A common app-wide setting: keep showing a query's last data while its next key loads.
    const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false, placeholderData: keepPreviousData } } });
    const shown: string[] = [];
    const Name = namesShownIn(shown);
    const tree = (token: string) => (
      <QueryClientProvider client={queryClient}>
        <TollgateProvider endpoint="https://billing.test/graphql" token={token}>
          <Name />
        </TollgateProvider>
      </QueryClientProvider>
    );

    const { rerender } = render(tree('cs_alice'));
    expect(await screen.findByText('Alice')).toBeDefined();
    shown.length = 0;
    rerender(tree('cs_bob'));

    expect(await screen.findByText('Bob')).toBeDefined();
    expect(shown).not.toContain('Alice');
  });

  it('does not retry an answer that will not change, and recovers when a fresh token comes', async () => {
    const requests = stubFetch((request) =>
      request.headers.get('authorization') === 'Bearer cs_fresh'
        ? jsonResponse({ data: { viewer: customerViewer } })
        : jsonResponse({ errors: [{ message: 'The customer session token has expired', extensions: { code: 'UNAUTHENTICATED' } }] }, 401),
    );
    // The kit's own QueryClient, with TanStack's default retries: the kit's queries decide.
    const tree = (token: string) => (
      <TollgateProvider endpoint="https://billing.test/graphql" token={token}>
        <ViewerCard />
      </TollgateProvider>
    );
    const { rerender } = render(tree('cs_expired'));
    expect((await screen.findByRole('alert')).textContent).toBe('UNAUTHENTICATED: The customer session token has expired');
    expect(requests).toHaveLength(1);
    rerender(tree('cs_fresh'));
    expect(await screen.findByText('Ada Lovelace <ada@example.com>')).toBeDefined();
    expect(requests).toHaveLength(2);
  });
});
