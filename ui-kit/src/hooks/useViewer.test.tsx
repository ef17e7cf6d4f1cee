import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { render, screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { jsonResponse, stubFetch } from '../../test/fetchStub.js';
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
    expect(queryClient.getQueryData(viewerQueryKey)).toEqual(customerViewer);
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
});
