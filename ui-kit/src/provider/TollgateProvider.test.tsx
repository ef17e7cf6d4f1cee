import { QueryClient, QueryClientProvider, useQueryClient } from '@tanstack/react-query';
import { render, screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { jsonResponse, stubFetch } from '../../test/fetchStub.js';
import { useTollgateClient } from '../hooks/useTollgateClient.js';
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
});
