import { QueryClient, QueryClientProvider, useQueryClient } from '@tanstack/react-query';
import { render, screen } from '@testing-library/react';
import { useEffect } from 'react';
import { describe, expect, it } from 'vitest';
import { jsonResponse, stubFetch } from '../../test/fetchStub.js';
import { useTollgateClient } from '../hooks/useTollgateClient.js';
import { useViewer } from '../hooks/useViewer.js';
import { TollgateProvider } from './TollgateProvider.js';

const newQueryClient = () => new QueryClient({ defaultOptions: { queries: { retry: false } } });

/** Records the QueryClient and Tollgate client that components below the provider see. */
function Probe({ seen }: { seen: { queryClient?: QueryClient; endpoint?: string }[] }) {
  seen.push({ queryClient: useQueryClient(), endpoint: useTollgateClient().endpoint });
  return <p>probe</p>;
}

describe('TollgateProvider', () => {
  it('reuses the QueryClient the host app already provides', () => {
    const host = newQueryClient();
    const seen: { queryClient?: QueryClient }[] = [];

    render(
      <QueryClientProvider client={host}>
        <TollgateProvider endpoint="https://billing.test/graphql" token="t">
          <Probe seen={seen} />
        </TollgateProvider>
      </QueryClientProvider>,
    );

    expect(screen.getByText('probe')).toBeDefined();
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((s) => s.queryClient === host)).toBe(true);
  });

  it('uses the queryClient prop over the one in context', () => {
    const host = newQueryClient();
    const passed = newQueryClient();
    const seen: { queryClient?: QueryClient }[] = [];

    render(
      <QueryClientProvider client={host}>
        <TollgateProvider endpoint="https://billing.test/graphql" token="t" queryClient={passed}>
          <Probe seen={seen} />
        </TollgateProvider>
      </QueryClientProvider>,
    );

    expect(seen.every((s) => s.queryClient === passed)).toBe(true);
  });

  it('creates its own QueryClient when the app has none, and keeps it across renders', () => {
    const seen: { queryClient?: QueryClient; endpoint?: string }[] = [];
    const tree = (token: string) => (
      <TollgateProvider endpoint="https://billing.test/graphql" token={token}>
        <Probe seen={seen} />
      </TollgateProvider>
    );

    const { rerender } = render(tree('a'));
    rerender(tree('b'));

    const first = seen[0]?.queryClient;
    expect(first).toBeInstanceOf(QueryClient);
    expect(seen.length).toBeGreaterThan(1);
    expect(seen.every((s) => s.queryClient === first)).toBe(true);
  });

  it('falls back to its own QueryClient when the queryClient prop is removed', () => {
    const passed = newQueryClient();
    const seen: { queryClient?: QueryClient }[] = [];
    const tree = (queryClient?: QueryClient) => (
      <TollgateProvider endpoint="https://billing.test/graphql" token="t" {...(queryClient ? { queryClient } : {})}>
        <Probe seen={seen} />
      </TollgateProvider>
    );

    const { rerender } = render(tree(passed));
    rerender(tree());

    const last = seen.at(-1)?.queryClient;
    expect(last).toBeInstanceOf(QueryClient);
    expect(last).not.toBe(passed);
  });

  it('gives components a client bound to its endpoint and current token', async () => {
    const requests = stubFetch(() => jsonResponse({ data: { ok: true } }));
    const clients: ReturnType<typeof useTollgateClient>[] = [];
    function Grab() {
      clients.push(useTollgateClient());
      return null;
    }
    const tree = (token: string) => (
      <TollgateProvider endpoint="https://billing.test/graphql" token={token} queryClient={newQueryClient()}>
        <Grab />
      </TollgateProvider>
    );

    const { rerender } = render(tree('old'));
    rerender(tree('new'));
    await clients.at(-1)?.request('{ ok }');

    expect(clients.at(-1)?.endpoint).toBe('https://billing.test/graphql');
    expect(requests[0]?.headers.get('authorization')).toBe('Bearer new');
  });

  it('makes useTollgateClient fail loudly outside the provider', () => {
    function Orphan() {
      useTollgateClient();
      return null;
    }
    // React reports the thrown error to console.error as well; the assertion is on the throw.
    const originalError = console.error;
    console.error = () => {};
    try {
      expect(() => render(<Orphan />)).toThrow('useTollgateClient must be used inside <TollgateProvider>');
    } finally {
      console.error = originalError;
    }
  });

  describe('with a token getter', () => {
    /** Answers every request with the viewer whose customer is named after the request's token. */
    const viewerNamedByToken = () =>
      stubFetch((request) => {
        const name = request.headers.get('authorization')?.replace('Bearer ', '') ?? 'nobody';
        return jsonResponse({ data: { viewer: { kind: 'CUSTOMER', merchant: { id: 'mer_1', name: 'Acme AI' }, customer: { id: `cus_${name}`, externalId: name, name, email: null } } } });
      });

    function ViewerName() {
      const viewer = useViewer();
      return <p>{viewer.data?.customer?.name ?? 'loading'}</p>;
    }

    it('sends the token an async getter resolves', async () => {
      const requests = viewerNamedByToken();
      const getToken = async () => {
        await new Promise((resolve) => setTimeout(resolve, 5));
        return 'cs_alice';
      };

      render(
        <TollgateProvider endpoint="https://billing.test/graphql" getToken={getToken} cacheScope="cus_alice" queryClient={newQueryClient()}>
          <ViewerName />
        </TollgateProvider>,
      );

      expect(await screen.findByText('cs_alice')).toBeDefined();
      expect(requests.map((request) => request.headers.get('authorization'))).toEqual(['Bearer cs_alice']);
    });

    it('sends a refreshed token with the next request, without remounting or a new client', async () => {
      const requests = stubFetch(() => jsonResponse({ data: { ok: true } }));
      let session = 'cs_first';
      const clients: ReturnType<typeof useTollgateClient>[] = [];
      let mounts = 0;
      function Grab() {
        clients.push(useTollgateClient());
        useEffect(() => {
          mounts += 1;
        }, []);
        return null;
      }
      // A new getter function on every render, as an inline arrow in an app would be.
      const tree = () => (
        <TollgateProvider endpoint="https://billing.test/graphql" getToken={async () => session} cacheScope="cus_alice" queryClient={newQueryClient()}>
          <Grab />
        </TollgateProvider>
      );

      const { rerender } = render(tree());
      await clients.at(-1)?.request('{ ok }');
      session = 'cs_refreshed'; // the getter's next answer: the app's backend minted a new token
      await clients.at(-1)?.request('{ ok }');
      rerender(tree());
      session = 'cs_refreshed_again';
      await clients.at(-1)?.request('{ ok }');

      expect(requests.map((request) => request.headers.get('authorization'))).toEqual(['Bearer cs_first', 'Bearer cs_refreshed', 'Bearer cs_refreshed_again']);
      expect(mounts).toBe(1);
      expect(new Set(clients).size).toBe(1);
    });

    it('uses the getter the app passes now, not the one it passed first', async () => {
      const requests = stubFetch(() => jsonResponse({ data: { ok: true } }));
      const clients: ReturnType<typeof useTollgateClient>[] = [];
      function Grab() {
        clients.push(useTollgateClient());
        return null;
      }
      const tree = (getToken: () => string) => (
        <TollgateProvider endpoint="https://billing.test/graphql" getToken={getToken} cacheScope="cus_alice" queryClient={newQueryClient()}>
          <Grab />
        </TollgateProvider>
      );

      const { rerender } = render(tree(() => 'cs_from_first_getter'));
      rerender(tree(() => 'cs_from_second_getter'));
      await clients.at(-1)?.request('{ ok }');

      expect(requests[0]?.headers.get('authorization')).toBe('Bearer cs_from_second_getter');
    });

    it("files cached data under cacheScope: another customer never sees the last one's, and each keeps its own", async () => {
      viewerNamedByToken();
      const queryClient = newQueryClient();
      const shown: string[] = [];
      function RecordedName() {
        const viewer = useViewer();
        if (viewer.data?.customer?.name) shown.push(viewer.data.customer.name);
        return <p>{viewer.data?.customer?.name ?? 'loading'}</p>;
      }
      const tree = (customer: string) => (
        <TollgateProvider endpoint="https://billing.test/graphql" getToken={async () => `cs_${customer}`} cacheScope={`cus_${customer}`} queryClient={queryClient}>
          <RecordedName />
        </TollgateProvider>
      );

      const { rerender } = render(tree('alice'));
      expect(await screen.findByText('cs_alice')).toBeDefined();
      shown.length = 0;

      rerender(tree('bob'));
      expect(await screen.findByText('cs_bob')).toBeDefined();
      expect(shown.every((name) => name === 'cs_bob')).toBe(true);

      expect(queryClient.getQueryData(['tollgate', 'cus_alice', 'viewer'])).toMatchObject({ customer: { name: 'cs_alice' } });
      expect(queryClient.getQueryData(['tollgate', 'cus_bob', 'viewer'])).toMatchObject({ customer: { name: 'cs_bob' } });
    });

    it('takes a token or a getter with its cacheScope, never both and never a getter alone', () => {
      const originalError = console.error;
      console.error = () => {}; // React reports the thrown errors too
      try {
        const both = () => (
          // @ts-expect-error token and getToken exclude each other
          <TollgateProvider endpoint="https://billing.test/graphql" token="cs_a" getToken={() => 'cs_b'} cacheScope="cus_a" />
        );
        const getterWithoutScope = () => (
          // @ts-expect-error a getter's tokens cannot name the customer before a request: cacheScope must
          <TollgateProvider endpoint="https://billing.test/graphql" getToken={() => 'cs_a'} />
        );
        const neither = () => (
          // @ts-expect-error a credential is required
          <TollgateProvider endpoint="https://billing.test/graphql" cacheScope="cus_a" />
        );

        expect(() => render(both())).toThrow('TollgateProvider takes token or getToken, not both');
        expect(() => render(getterWithoutScope())).toThrow('TollgateProvider: getToken needs a cacheScope');
        expect(() => render(neither())).toThrow('TollgateProvider needs a token or getToken');
      } finally {
        console.error = originalError;
      }
    });
  });
});
