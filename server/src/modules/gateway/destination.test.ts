import { createServer, get } from 'node:http';
import { isIP, type LookupFunction } from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import { AppError } from '../../shared/errors.ts';
import {
  type DestinationOptions,
  type GatewayHostRule,
  isPublicAddress,
  parseHostRule,
  pinnedLookup,
  resolveDestination,
} from './destination.ts';

const OPENAI_CHAT = 'https://api.openai.com/v1/chat/completions';
const PUBLIC_V4 = '104.18.6.192';
const PUBLIC_V6 = '2606:4700::6812:6c0';

/** A lookup that answers these addresses for any name (there is no DNS on test machines). */
const answering = (...addresses: string[]) =>
  vi.fn(async (_hostname: string) => addresses.map((address) => ({ address, family: (isIP(address) === 6 ? 6 : 4) as 4 | 6 })));

const options = (overrides: Partial<DestinationOptions> = {}): DestinationOptions => ({
  merchantHosts: [],
  allowPrivateNetworks: false,
  lookup: answering(PUBLIC_V4),
  ...overrides,
});

const withHosts = (merchantHosts: GatewayHostRule[], overrides: Partial<DestinationOptions> = {}) => options({ merchantHosts, ...overrides });

async function refusal(raw: unknown, opts: DestinationOptions): Promise<AppError> {
  const error = await resolveDestination(raw, opts).then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error, `expected ${String(raw)} to be refused`).toBeInstanceOf(AppError);
  expect((error as AppError).details.field).toBe('u');
  return error as AppError;
}

describe('isPublicAddress', () => {
  it.each([PUBLIC_V4, '8.8.8.8', '1.1.1.1', '223.255.255.255', PUBLIC_V6, '2a00:1450:4001:82b::200e'])('%s is public', (ip) => {
    expect(isPublicAddress(ip)).toBe(true);
  });

  // Just outside each blocked IPv4 range, so an off-by-one in a mask shows.
  it.each([
    '9.255.255.255',
    '11.0.0.0',
    '100.63.255.255',
    '100.128.0.0',
    '126.255.255.255',
    '128.0.0.0',
    '169.253.255.255',
    '169.255.0.0',
    '172.15.255.255',
    '172.32.0.0',
    '192.0.1.0',
    '192.0.3.0',
    '192.88.98.255',
    '192.88.100.0',
    '192.167.255.255',
    '192.169.0.0',
    '198.17.255.255',
    '198.20.0.0',
    '198.51.99.255',
    '198.51.101.0',
    '203.0.112.255',
    '203.0.114.0',
  ])('%s (next to a blocked range) is public', (ip) => {
    expect(isPublicAddress(ip)).toBe(true);
  });

  it.each([
    ['0.0.0.0', 'this network'],
    ['0.255.255.255', 'this network'],
    ['10.0.0.1', 'private'],
    ['10.255.255.255', 'private'],
    ['100.64.0.1', 'carrier-grade NAT'],
    ['100.127.255.255', 'carrier-grade NAT'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['169.254.169.254', 'cloud metadata'],
    ['169.254.0.1', 'link-local'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.0.0.1', 'IETF protocol assignments'],
    ['192.0.2.1', 'documentation'],
    ['192.88.99.1', '6to4 relay'],
    ['192.168.1.1', 'private'],
    ['198.18.0.1', 'benchmarking'],
    ['198.19.255.255', 'benchmarking'],
    ['198.51.100.7', 'documentation'],
    ['203.0.113.9', 'documentation'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['240.0.0.1', 'reserved'],
    ['255.255.255.255', 'broadcast'],
  ])('IPv4 %s (%s) is not public', (ip) => {
    expect(isPublicAddress(ip)).toBe(false);
  });

  it.each([
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['0:0:0:0:0:0:0:1', 'loopback, uncompressed'],
    ['0000:0000:0000:0000:0000:0000:0000:0001', 'loopback, zero-padded'],
    ['fc00::1', 'unique local'],
    ['fd12:3456:789a::1', 'unique local'],
    ['fe80::1', 'link-local'],
    ['febf:ffff::1', 'link-local'],
    ['fe80::1%eth0', 'link-local with a zone'],
    ['ff02::1', 'multicast'],
    ['ff0e::fb', 'multicast'],
    ['2001:db8::1', 'documentation'],
    ['3fff::1', 'documentation'],
    ['100::1', 'discard-only'],
    ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'Teredo'],
    ['2001::1', 'Teredo'],
    ['2001:2::1', 'benchmarking'],
    ['::ffff:127.0.0.1', 'IPv4-mapped loopback'],
    ['::ffff:7f00:1', 'IPv4-mapped loopback, hex'],
    ['0:0:0:0:0:ffff:7f00:1', 'IPv4-mapped loopback, uncompressed'],
    ['::ffff:10.0.0.1', 'IPv4-mapped private'],
    ['::ffff:a9fe:a9fe', 'IPv4-mapped metadata, hex'],
    ['::ffff:0:7f00:1', 'IPv4-translated'],
    ['::127.0.0.1', 'IPv4-compatible loopback'],
    ['::7f00:1', 'IPv4-compatible loopback, hex'],
    ['::a9fe:a9fe', 'IPv4-compatible metadata, hex'],
    ['64:ff9b::127.0.0.1', 'NAT64 loopback'],
    ['64:ff9b::a00:1', 'NAT64 private, hex'],
    ['64:ff9b:1::8.8.8.8', 'local-use NAT64'],
    ['2002:7f00:1::1', '6to4 of loopback'],
    ['2002:a9fe:a9fe::', '6to4 of metadata'],
    ['2002:c0a8:101::1', '6to4 of private'],
  ])('IPv6 %s (%s) is not public', (ip) => {
    expect(isPublicAddress(ip)).toBe(false);
  });

  it.each([
    ['::ffff:8.8.8.8', 'IPv4-mapped public'],
    ['::ffff:808:808', 'IPv4-mapped public, hex'],
    ['64:ff9b::8.8.8.8', 'NAT64 of public'],
    ['2002:808:808::1', '6to4 of public'],
  ])('IPv6 %s (%s) is public because the IPv4 it carries is', (ip) => {
    expect(isPublicAddress(ip)).toBe(true);
  });

  it.each(['', 'localhost', 'api.openai.com', '1.2.3', '256.1.1.1', '0177.0.0.1', '2130706433', '0x7f.1', '[::1]', ' 8.8.8.8', '8.8.8.8/32', '1::2::3'])(
    'the non-address %j is not public',
    (ip) => {
      expect(isPublicAddress(ip)).toBe(false);
    },
  );

  it('is false for values that are not strings at all', () => {
    expect(isPublicAddress(123 as any)).toBe(false);
    expect(isPublicAddress(undefined as any)).toBe(false);
  });
});

describe('resolveDestination: the u parameter', () => {
  it.each([
    [undefined, 'is required'],
    ['', 'is required'],
    [['https://api.openai.com/v1/models', OPENAI_CHAT], 'more than once'],
    [42, 'string'],
    [{ href: OPENAI_CHAT }, 'string'],
  ])('refuses %j', async (raw, message) => {
    const error = await refusal(raw, options());
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toContain(message);
  });

  it.each(['/v1/chat/completions', 'api.openai.com/v1/chat/completions', '//api.openai.com/v1'])('refuses the relative URL %j', async (raw) => {
    const error = await refusal(raw, options());
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toContain('absolute URL');
  });

  it.each(['https://exa mple.com/', 'http://[::1', 'https://', 'https://a:99999/'])('refuses the unparseable %j', async (raw) => {
    expect((await refusal(raw, options())).code).toBe('VALIDATION');
  });

  it('refuses a URL over 8 KiB and accepts one of exactly 8 KiB', async () => {
    const prefix = `${OPENAI_CHAT}?q=`;
    expect((await refusal(prefix + 'a'.repeat(8192 - prefix.length + 1), options())).message).toContain('8192 bytes');
    await expect(resolveDestination(prefix + 'a'.repeat(8192 - prefix.length), options())).resolves.toMatchObject({ provider: 'openai' });
  });

  it.each([
    'ftp://api.openai.com/v1',
    'file:///etc/passwd',
    'data:text/plain,hello',
    'javascript:alert(1)',
    'ws://api.openai.com/v1/realtime',
    'gopher://127.0.0.1:6379/_INFO',
    'localhost:8080/v1',
  ])('refuses the scheme of %j', async (raw) => {
    const lookup = answering(PUBLIC_V4);
    const error = await refusal(raw, options({ lookup }));
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toContain('https');
    expect(lookup).not.toHaveBeenCalled();
  });

  it.each(['https://user:hunter2@api.openai.com/v1/chat/completions', 'https://sk-secret123@api.openai.com/v1', 'https://:hunter2@api.openai.com/v1'])(
    'refuses credentials in %j, without echoing them',
    async (raw) => {
      const lookup = answering(PUBLIC_V4);
      const error = await refusal(raw, withHosts([{ host: 'api.openai.com', provider: 'openai' }], { lookup }));
      expect(error.code).toBe('VALIDATION');
      expect(error.message).toContain('credentials');
      expect(error.message).not.toMatch(/hunter2|sk-secret123/);
      expect(lookup).not.toHaveBeenCalled();
    },
  );
});

describe('resolveDestination: supported providers', () => {
  it('accepts a supported provider over https and pins the address it resolved to', async () => {
    const lookup = answering(PUBLIC_V4, '104.18.7.192');
    const destination = await resolveDestination(OPENAI_CHAT, options({ lookup }));
    expect(destination).toMatchObject({
      hostname: 'api.openai.com',
      port: 443,
      provider: 'openai',
      viaMerchantHost: false,
      address: { address: PUBLIC_V4, family: 4 },
    });
    expect(destination.url.href).toBe(OPENAI_CHAT);
    expect(lookup).toHaveBeenCalledExactlyOnceWith('api.openai.com');
  });

  it('answers an IPv6 first address with family 6', async () => {
    const destination = await resolveDestination(OPENAI_CHAT, options({ lookup: answering(PUBLIC_V6, PUBLIC_V4) }));
    expect(destination.address).toEqual({ address: PUBLIC_V6, family: 6 });
  });

  it.each([
    ['https://my-resource.openai.azure.com/openai/deployments/gpt-4o/chat/completions', 'azure-openai'],
    ['https://bedrock-runtime.us-east-1.amazonaws.com/model/x/converse', 'bedrock'],
    ['https://api.anthropic.com/v1/messages', 'anthropic'],
    ['https://API.OpenAI.com/v1/chat/completions', 'openai'],
    ['https://api.openai.com:443/v1/chat/completions', 'openai'],
    // Black Forest Labs' regional endpoints, where a create's polling_url may point.
    ['https://api.eu.bfl.ai/v1/flux-pro-1.1', 'bfl'],
    ['https://api.us1.bfl.ai/v1/get_result?id=7c0f6a3e-2b1d-4e5f-9a8b-0c1d2e3f4a5b', 'bfl'],
    ['https://api.eu1.bfl.ai/v1/get_result?id=7c0f6a3e-2b1d-4e5f-9a8b-0c1d2e3f4a5b', 'bfl'],
  ])('accepts %s as %s', async (raw, provider) => {
    await expect(resolveDestination(raw, options())).resolves.toMatchObject({ provider, port: 443, viaMerchantHost: false });
  });

  it('treats a trailing dot as the same host, and drops it from the URL it hands back', async () => {
    const destination = await resolveDestination('https://api.openai.com./v1/chat/completions', options());
    expect(destination.hostname).toBe('api.openai.com');
    expect(destination.url.hostname).toBe('api.openai.com');
    expect(destination.provider).toBe('openai');
  });

  it.each(['https://api.openai.com../v1/models', 'https://api..openai.com/v1/models', 'https://.api.openai.com/v1/models'])(
    'refuses a host with an empty label, which the Host header and TLS name would keep: %s',
    async (raw) => {
      const lookup = answering(PUBLIC_V4);
      const error = await refusal(raw, options({ lookup }));
      expect(error.code).toBe('VALIDATION');
      expect(error.message).toContain('empty label');
      expect(lookup).not.toHaveBeenCalled();
    },
  );

  it('refuses a supported provider over http: its key would travel in clear text', async () => {
    const lookup = answering(PUBLIC_V4);
    const error = await refusal('http://api.openai.com/v1/chat/completions', options({ lookup }));
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toContain('https');
    expect(error.details.host).toBe('api.openai.com');
    expect(lookup).not.toHaveBeenCalled();
  });

  it.each(['https://api.openai.com:8443/v1/chat/completions', 'https://api.openai.com:80/v1/chat/completions'])(
    'refuses a supported provider on another port: %s',
    async (raw) => {
      const error = await refusal(raw, options());
      expect(error.code).toBe('FORBIDDEN');
      expect(error.message).toMatch(/allow-list.*port 443/);
      expect(error.details.host).toBe('api.openai.com');
    },
  );

  it.each(['https://example.com/v1/chat/completions', 'https://api.openai.com.evil.example/v1', 'https://evilapi.openai.com/v1', 'https://openai.azure.com/'])(
    'refuses %s, which is on no allow-list, without resolving it',
    async (raw) => {
      const lookup = answering(PUBLIC_V4);
      const error = await refusal(raw, options({ lookup }));
      expect(error.code).toBe('FORBIDDEN');
      expect(error.message).toMatch(/not on the gateway allow-list/);
      expect(error.message).toContain('gateway hosts');
      expect(error.details.host).toBe(new URL(raw).hostname);
      expect(lookup).not.toHaveBeenCalled();
    },
  );

  it('refuses a supported provider whose name resolves to a private address (DNS rebinding or poisoning)', async () => {
    const error = await refusal(OPENAI_CHAT, options({ lookup: answering('169.254.169.254') }));
    expect(error.code).toBe('FORBIDDEN');
    expect(error.message).toContain('private or reserved');
  });
});

describe('resolveDestination: merchant hosts', () => {
  const vllm = { host: 'llm.example.net', provider: 'openai-compatible' };

  it('accepts an exact host over https, with the rule’s provider; plain http only when the rule names the port', async () => {
    await expect(resolveDestination('https://llm.example.net/v1/chat/completions', withHosts([vllm]))).resolves.toMatchObject({
      hostname: 'llm.example.net',
      port: 443,
      provider: 'openai-compatible',
      viaMerchantHost: true,
      address: { address: PUBLIC_V4, family: 4 },
    });
    // A caller choosing http for a rule written without a port would have the stored provider key sent in clear.
    const clear = await refusal('http://llm.example.net/v1/chat/completions', withHosts([vllm]));
    expect(clear).toMatchObject({ code: 'VALIDATION', details: { field: 'u' } });
    expect(clear.message).toContain('"llm.example.net:80"');
    await expect(resolveDestination('http://llm.example.net/v1/chat/completions', withHosts([{ ...vllm, host: 'llm.example.net:80' }]))).resolves.toMatchObject({
      port: 80,
      provider: 'openai-compatible',
      viaMerchantHost: true,
    });
  });

  it('matches a rule without a port only on the scheme’s default port', async () => {
    for (const raw of ['http://llm.example.net:8000/v1', 'https://llm.example.net:8443/v1', 'https://llm.example.net:80/v1', 'http://llm.example.net:443/v1']) {
      const error = await refusal(raw, withHosts([vllm]));
      expect(error.code).toBe('FORBIDDEN');
      expect(error.message).toContain(`"llm.example.net:${new URL(raw).port}"`);
    }
  });

  it('matches a rule with a port on exactly that port', async () => {
    const rules = [{ host: 'llm.example.net:8000', provider: 'openai-compatible' }];
    await expect(resolveDestination('http://llm.example.net:8000/v1/chat/completions', withHosts(rules))).resolves.toMatchObject({
      port: 8000,
      viaMerchantHost: true,
    });
    for (const raw of ['http://llm.example.net/v1', 'http://llm.example.net:8001/v1', 'https://llm.example.net/v1']) {
      expect((await refusal(raw, withHosts(rules))).code).toBe('FORBIDDEN');
    }
  });

  it('lets a rule naming the default port match a URL that leaves it out', async () => {
    const rules = [{ host: 'llm.example.net:443', provider: 'openai-compatible' }];
    await expect(resolveDestination('https://llm.example.net/v1', withHosts(rules))).resolves.toMatchObject({ port: 443, viaMerchantHost: true });
  });

  it('never sends plain http to port 443, whatever rule names it: the provider key would go in clear at the caller\'s choice', async () => {
    const refusedCall = await refusal('http://llm.example.net:443/v1/chat/completions', withHosts([{ host: 'llm.example.net:443', provider: 'openai' }]));
    expect(refusedCall.code).toBe('VALIDATION');
    expect(refusedCall.message).toContain('use https');
    // Rules not naming 443 never matched it (see above).
    for (const host of ['llm.example.net', 'llm.example.net:80']) {
      expect((await refusal('http://llm.example.net:443/v1/chat/completions', withHosts([{ host, provider: 'openai' }]))).code, host).toBe('FORBIDDEN');
    }
    // A port the merchant named for http is still http's.
    const onEighty = [{ host: 'llm.example.net:80', provider: 'openai' }];
    await expect(resolveDestination('http://llm.example.net/v1/chat/completions', withHosts(onEighty))).resolves.toMatchObject({ port: 80, viaMerchantHost: true });
  });

  it('refuses host rules with an empty label when they are added (no target naming one is ever forwarded)', () => {
    for (const rule of ['llm..example.com', '.example.com', 'llm.example..com:8000', '*..example.com']) expect(parseHostRule(rule), rule).toBeNull();
    expect(parseHostRule('llm.example.com:8000')).toMatchObject({ host: 'llm.example.com', port: 8000 });
  });

  it('matches a wildcard rule on subdomains only', async () => {
    const rules = [{ host: '*.inference.example.com', provider: 'together' }];
    for (const raw of ['https://eu.inference.example.com/v1', 'https://a.b.inference.example.com/v1']) {
      await expect(resolveDestination(raw, withHosts(rules))).resolves.toMatchObject({ provider: 'together', viaMerchantHost: true });
    }
    for (const raw of ['https://inference.example.com/v1', 'https://evilinference.example.com/v1', 'https://inference.example.com.evil.example/v1']) {
      expect((await refusal(raw, withHosts(rules))).code).toBe('FORBIDDEN');
    }
  });

  it('prefers the most specific rule', async () => {
    const rules = [
      { host: '*.example.com', provider: 'openai-compatible' },
      { host: '*.eu.example.com', provider: 'mistral' },
      { host: 'claude.eu.example.com', provider: 'anthropic' },
    ];
    const providerOf = async (raw: string) => (await resolveDestination(raw, withHosts(rules))).provider;
    expect(await providerOf('https://claude.eu.example.com/v1/messages')).toBe('anthropic');
    expect(await providerOf('https://mistral.eu.example.com/v1')).toBe('mistral');
    expect(await providerOf('https://other.example.com/v1')).toBe('openai-compatible');
  });

  it('lets a merchant rule take over a supported provider’s host (e.g. through a proxy on another port)', async () => {
    const rules = [{ host: 'api.openai.com:8443', provider: 'openai' }];
    await expect(resolveDestination('https://api.openai.com:8443/v1/chat/completions', withHosts(rules))).resolves.toMatchObject({
      provider: 'openai',
      viaMerchantHost: true,
    });
    // The provider's own host still works through the built-in list.
    await expect(resolveDestination(OPENAI_CHAT, withHosts(rules))).resolves.toMatchObject({ provider: 'openai', viaMerchantHost: false });
  });

  it('ignores rules it cannot read (fails closed)', async () => {
    const rules = [
      { host: 'llm.example.net/v1', provider: 'x' },
      { host: 'user@llm.example.net', provider: 'x' },
      { host: '*', provider: 'x' },
      { host: '', provider: 'x' },
    ];
    expect((await refusal('https://llm.example.net/v1', withHosts(rules))).code).toBe('FORBIDDEN');
  });

  it('refuses a merchant host that resolves to a private address, without naming the address', async () => {
    const error = await refusal('https://llm.example.net/v1', withHosts([vllm], { lookup: answering('10.20.30.40') }));
    expect(error.code).toBe('FORBIDDEN');
    expect(error.details).toEqual({ field: 'u', host: 'llm.example.net' });
    expect(error.message).toContain('resolves to a private or reserved address');
    expect(error.message).not.toContain('10.20.30.40');
  });

  it.each([
    ['10.0.0.5'],
    ['127.0.0.1'],
    ['169.254.169.254'],
    ['100.100.100.200'],
    ['0.0.0.0'],
    ['::1'],
    ['fd00::5'],
    ['fe80::1'],
    ['::ffff:127.0.0.1'],
    ['::ffff:a9fe:a9fe'],
    ['64:ff9b::a00:5'],
    ['2002:a00:5::1'],
  ])('refuses a host resolving to %s', async (address) => {
    const error = await refusal('https://llm.example.net/v1', withHosts([vllm], { lookup: answering(address) }));
    expect(error.code).toBe('FORBIDDEN');
    expect(error.message).not.toContain(address);
  });

  it('refuses a host when any one of its addresses is private, whatever the order', async () => {
    for (const lookup of [answering(PUBLIC_V4, '127.0.0.1'), answering('192.168.0.10', PUBLIC_V4), answering(PUBLIC_V6, 'fc00::1', PUBLIC_V4)]) {
      expect((await refusal(OPENAI_CHAT, options({ lookup }))).code).toBe('FORBIDDEN');
    }
  });

  it('refuses an answer that is not an address at all, even with private networks allowed', async () => {
    const error = await refusal('https://llm.example.net/v1', withHosts([vllm], { lookup: answering('not-an-address'), allowPrivateNetworks: true }));
    expect(error.code).toBe('FORBIDDEN');
  });

  it('lets private targets through when allowPrivateNetworks is set (tests and local development)', async () => {
    const rules = [
      { host: 'localhost:11434', provider: 'openai-compatible' },
      { host: '127.0.0.1:8000', provider: 'openai-compatible' },
    ];
    const allowed = withHosts(rules, { allowPrivateNetworks: true, lookup: answering('127.0.0.1', '::1') });
    await expect(resolveDestination('http://localhost:11434/v1/chat/completions', allowed)).resolves.toMatchObject({
      hostname: 'localhost',
      port: 11434,
      address: { address: '127.0.0.1', family: 4 },
    });
    await expect(resolveDestination('http://127.0.0.1:8000/v1', allowed)).resolves.toMatchObject({ address: { address: '127.0.0.1', family: 4 } });
    // allowPrivateNetworks widens the address check only, never the allow-list.
    expect((await refusal('http://127.0.0.1:9000/v1', allowed)).code).toBe('FORBIDDEN');
  });

  it('uses the system resolver when no lookup is given', async () => {
    const rules = [{ host: 'localhost:11434', provider: 'openai-compatible' }];
    const error = await refusal('http://localhost:11434/v1', { merchantHosts: rules, allowPrivateNetworks: false });
    expect(error.code).toBe('FORBIDDEN');
    const destination = await resolveDestination('http://localhost:11434/v1', { merchantHosts: rules, allowPrivateNetworks: true });
    expect(['127.0.0.1', '::1']).toContain(destination.address.address);
  });
});

describe('resolveDestination: IP literal hosts', () => {
  // Each odd spelling is normalized by the URL parser, then matched and checked like any address.
  const loopbackRules = [
    { host: '127.0.0.1:8000', provider: 'openai-compatible' },
    { host: '[::1]:8000', provider: 'openai-compatible' },
    { host: '[::ffff:127.0.0.1]:8000', provider: 'openai-compatible' },
    { host: '[::127.0.0.1]:8000', provider: 'openai-compatible' },
  ];

  it.each([
    ['http://127.0.0.1:8000/v1', '127.0.0.1'],
    ['http://2130706433:8000/v1', '127.0.0.1'],
    ['http://0177.0.0.1:8000/v1', '127.0.0.1'],
    ['http://0x7f.1:8000/v1', '127.0.0.1'],
    ['http://0x7f000001:8000/v1', '127.0.0.1'],
    ['http://127.1:8000/v1', '127.0.0.1'],
    ['http://%31%32%37.0.0.1:8000/v1', '127.0.0.1'],
    ['http://[::1]:8000/v1', '::1'],
    ['http://[0:0:0:0:0:0:0:1]:8000/v1', '::1'],
    ['http://[::ffff:127.0.0.1]:8000/v1', '::ffff:7f00:1'],
    ['http://[::ffff:7f00:1]:8000/v1', '::ffff:7f00:1'],
    ['http://[::127.0.0.1]:8000/v1', '::7f00:1'],
  ])('%s is checked as the private address %s', async (raw, hostname) => {
    const lookup = answering(PUBLIC_V4);
    const error = await refusal(raw, withHosts(loopbackRules, { lookup }));
    expect(error.code).toBe('FORBIDDEN');
    expect(error.message).toContain('is a private or reserved address');
    expect(error.details.host).toBe(hostname);
    expect(lookup).not.toHaveBeenCalled();

    const allowed = await resolveDestination(raw, withHosts(loopbackRules, { lookup, allowPrivateNetworks: true }));
    expect(allowed).toMatchObject({ hostname, address: { address: hostname, family: isIP(hostname) } });
  });

  it.each(['https://169.254.169.254/latest/meta-data/', 'http://2852039166/latest/meta-data/', 'http://[fd00:ec2::254]/latest/meta-data/', 'https://0.0.0.0/'])(
    'refuses %s when no rule names it',
    async (raw) => {
      expect((await refusal(raw, options({ allowPrivateNetworks: true }))).code).toBe('FORBIDDEN');
    },
  );

  it('accepts a public IP literal a merchant added, without a DNS lookup', async () => {
    const lookup = answering('10.0.0.1');
    const destination = await resolveDestination(
      'https://[2606:4700::6812:6c0]:8443/v1',
      withHosts([{ host: '[2606:4700::6812:6c0]:8443', provider: 'openai-compatible' }], { lookup }),
    );
    expect(destination).toMatchObject({ hostname: PUBLIC_V6, port: 8443, address: { address: PUBLIC_V6, family: 6 } });
    expect(lookup).not.toHaveBeenCalled();
  });
});

describe('resolveDestination: DNS failures', () => {
  it('reports a name that does not resolve as a bad u, with the resolver’s code', async () => {
    const lookup = vi.fn(async () => {
      throw Object.assign(new Error('getaddrinfo ENOTFOUND api.openai.com'), { code: 'ENOTFOUND' });
    });
    const error = await refusal(OPENAI_CHAT, options({ lookup }));
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toBe('Cannot resolve host "api.openai.com" (ENOTFOUND): check the URL\'s host name');
    expect(error.details).toEqual({ field: 'u', host: 'api.openai.com' });
  });

  it('reports an empty answer the same way', async () => {
    const error = await refusal(OPENAI_CHAT, options({ lookup: answering() }));
    expect(error.code).toBe('VALIDATION');
    expect(error.message).toContain('Cannot resolve host "api.openai.com"');
  });

  it('does not trip over a lookup that throws a non-error', async () => {
    const lookup = vi.fn(async () => {
      throw null;
    });
    expect((await refusal(OPENAI_CHAT, options({ lookup }))).code).toBe('VALIDATION');
  });
});

describe('parseHostRule', () => {
  it.each([
    ['llm.example.net', { host: 'llm.example.net', wildcard: false, port: null }],
    ['LLM.Example.NET.', { host: 'llm.example.net', wildcard: false, port: null }],
    ['llm.example.net:8000', { host: 'llm.example.net', wildcard: false, port: 8000 }],
    ['*.example.com', { host: 'example.com', wildcard: true, port: null }],
    ['*.example.com:8443', { host: 'example.com', wildcard: true, port: 8443 }],
    ['[::1]:8000', { host: '::1', wildcard: false, port: 8000 }],
    ['[::ffff:127.0.0.1]', { host: '::ffff:7f00:1', wildcard: false, port: null }],
    ['2130706433:80', { host: '127.0.0.1', wildcard: false, port: 80 }],
  ])('reads %j', (rule, parsed) => {
    expect(parseHostRule(rule)).toEqual(parsed);
  });

  it.each(['', '*', '*.', 'a.*.example.com', '*.0.0.1', 'host:0', 'host:65536', 'host:', 'https://host', 'host/path', 'user@host', '::1', 'a b', 'host:80:80'])(
    'rejects %j',
    (rule) => {
      expect(parseHostRule(rule)).toBeNull();
    },
  );
});

describe('pinnedLookup', () => {
  const vetted = { address: PUBLIC_V4, family: 4 as const };

  it('answers a list when asked for all addresses', async () => {
    const answer = await new Promise<unknown[]>((resolve) => pinnedLookup(vetted)('api.openai.com', { all: true }, (...args) => resolve(args)));
    expect(answer).toEqual([null, [{ address: PUBLIC_V4, family: 4 }]]);
  });

  it('answers (err, address, family) otherwise, whatever name is asked', async () => {
    const lookup = pinnedLookup({ address: PUBLIC_V6, family: 6 });
    for (const options of [{}, { all: false }, { family: 4 }, undefined, 0]) {
      const answer = await new Promise<unknown[]>((resolve) => lookup('rebound.example', options, (...args) => resolve(args)));
      expect(answer).toEqual([null, PUBLIC_V6, 6]);
    }
  });

  it('calls back asynchronously, as dns.lookup does', () => {
    const callback = vi.fn();
    pinnedLookup(vetted)('api.openai.com', {}, callback);
    expect(callback).not.toHaveBeenCalled();
  });

  it('makes http.request connect to the vetted address, not to what the name resolves to', async () => {
    const lookup: LookupFunction = pinnedLookup({ address: '127.0.0.1', family: 4 });
    const server = createServer((_req, res) => res.end('pinned'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as { port: number };
      // .invalid never resolves, so only the pinned lookup can have found the server.
      const body = await new Promise<string>((resolve, reject) => {
        get({ host: 'tollgate-pinned.invalid', port, path: '/', lookup }, (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk.toString()));
          res.on('end', () => resolve(text));
        }).on('error', reject);
      });
      expect(body).toBe('pinned');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
