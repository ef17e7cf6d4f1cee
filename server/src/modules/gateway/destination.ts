/**
 * The gateway's destination guard (SSRF protection). A forward target must be on the allow-list
 * (a supported provider's host over https on 443, or a host the merchant added), and every
 * address its name resolves to must be public. The vetted address is handed back so the socket
 * connects to exactly what was checked, never to a second DNS answer (rebinding).
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { AppError, type ErrorCode, invalidField } from '../../shared/errors.ts';
import { detectProvider } from '../usage/normalize/index.ts';

export interface GatewayHostRule {
  /** hostname or hostname:port, lower-case, may start with "*." for subdomains */
  host: string;
  /** provider family id used for normalization and key injection */
  provider: string;
}

export interface DestinationOptions {
  /** Hosts the merchant added (self-hosted or OpenAI-compatible endpoints). */
  merchantHosts: readonly GatewayHostRule[];
  /** Tests and local development only: allow loopback/private/link-local targets. */
  allowPrivateNetworks: boolean;
  /** DNS lookup, injectable for tests; default uses node:dns/promises lookup(host, { all: true, verbatim: true }). */
  lookup?: (hostname: string) => Promise<{ address: string; family: 4 | 6 }[]>;
}

/** A target that passed every check made without DNS: the URL, the allow-list, and, when the host is an IP address, that address. */
export interface Route {
  /** the parsed target */
  url: URL;
  /** lower-case, without brackets for IPv6 */
  hostname: string;
  /** explicit or scheme default */
  port: number;
  /** provider family id (from the merchant rule, else from SUPPORTED_PROVIDERS) */
  provider: string;
  viaMerchantHost: boolean;
}

/** A route whose host was resolved and vetted: the address to connect to. */
export interface Destination extends Route {
  /** The vetted address to connect to (first allowed address), so a DNS answer cannot change between check and connect (rebinding). */
  address: { address: string; family: 4 | 6 };
}

/** A merchant rule in canonical form: `host` as the URL parser writes it, without brackets or trailing dot. */
export interface ParsedHostRule {
  host: string;
  /** "*.suffix": any subdomain of `host` (one or more labels), not `host` itself. */
  wildcard: boolean;
  /** null: only the scheme's default port (80 for http, 443 for https). */
  port: number | null;
}

const FIELD = 'u';
const MAX_URL_BYTES = 8 * 1024;
const HTTPS_PORT = 443;

export async function resolveDestination(raw: unknown, options: DestinationOptions): Promise<Destination> {
  return vetDestination(routeOf(raw, options), options);
}

/**
 * The checks that need no DNS: the URL, the allow-list, and a host given as an IP address
 * (refused here when it is not public). Cheap, so the gateway makes them before its own checks
 * (customer, credit, …) and resolves the name only for a call it would otherwise forward.
 */
export function routeOf(raw: unknown, options: Pick<DestinationOptions, 'merchantHosts' | 'allowPrivateNetworks'>): Route {
  const url = parseTarget(raw);
  const hostname = bare(url.hostname);
  const port = url.port === '' ? defaultPort(url.protocol) : Number(url.port);
  const { provider, viaMerchantHost } = allowedRoute(url, hostname, port, options.merchantHosts);
  if (isIP(hostname) !== 0) vetAnswers(hostname, [{ address: hostname }], options);
  return { url, hostname, port, provider, viaMerchantHost };
}

/**
 * Resolves a route's host and vets every address it names; the first is the one to connect to
 * (see pinnedLookup). Only for a route from routeOf, so the gateway never resolves names an
 * attacker picks (the allow-list comes first).
 */
export async function vetDestination(route: Route, options: DestinationOptions): Promise<Destination> {
  const address = await vetAddresses(route.hostname, options);
  return { ...route, address };
}

/**
 * Reads a merchant rule ("host", "host:port", "*.suffix", "[v6]:port"); null when it is not one.
 * The host goes through the same WHATWG parser as targets, so "LLM.Example.com." or
 * "[::ffff:127.0.0.1]" compare equal to what a URL naming them parses to.
 */
export function parseHostRule(rule: string): ParsedHostRule | null {
  const match = /^(\*\.)?([^\s:/?#@*[\]\\]+|\[[\da-f:.]+\])(?::(\d{1,5}))?$/i.exec(rule.trim());
  if (!match) return null;
  const wildcard = match[1] !== undefined;
  const port = match[3] === undefined ? null : Number(match[3]);
  if (port !== null && (port < 1 || port > 65_535)) return null;
  let host: string;
  try {
    host = bare(new URL(`http://${match[2]}`).hostname);
  } catch {
    return null;
  }
  // A wildcard over an address ("*.0.0.1") would be parsed as a different address; a name with an
  // empty label ("llm..example.com") is one no target may name (see parseTarget), so never matched.
  if (!host || (wildcard && isIP(host) !== 0)) return null;
  if (!host.startsWith('[') && host.split('.').includes('')) return null;
  return { host, wildcard, port };
}

// --- The target URL -----------------------------------------------------------------------------

function parseTarget(raw: unknown): URL {
  if (Array.isArray(raw)) throw invalidField(FIELD, 'was given more than once; pass exactly one URL to forward to');
  if (raw === undefined || raw === null || raw === '') {
    throw invalidField(FIELD, 'is required: the URL-encoded provider URL to forward to, e.g. ?u=https%3A%2F%2Fapi.openai.com%2Fv1%2Fchat%2Fcompletions');
  }
  if (typeof raw !== 'string') throw invalidField(FIELD, 'must be a single URL string');
  if (Buffer.byteLength(raw) > MAX_URL_BYTES) throw invalidField(FIELD, `must be at most ${MAX_URL_BYTES} bytes long`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    const hasScheme = /^[a-z][a-z\d+.-]*:/i.test(raw.trim());
    throw invalidField(FIELD, hasScheme ? 'is not a valid URL' : 'must be an absolute URL, such as https://api.openai.com/v1/chat/completions');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw invalidField(FIELD, 'must be an https URL (http only for hosts you added to the gateway)');
  }
  if (url.username !== '' || url.password !== '') {
    throw invalidField(FIELD, 'must not carry credentials (user:password@): the gateway injects the provider key itself');
  }
  // "api.openai.com." names the same host; drop the dot so the allow-list, Host header and TLS name agree.
  if (url.hostname.endsWith('.')) {
    const hostname = url.hostname.slice(0, -1);
    if (!hostname) throw invalidField(FIELD, 'has no host');
    url.hostname = hostname;
  }
  // "api.openai.com.." or "api..openai.com" would pass the allow-list under one name and reach DNS and TLS under another.
  if (!url.hostname.startsWith('[') && url.hostname.split('.').includes('')) throw invalidField(FIELD, 'has an empty label in its host name');
  return url;
}

function allowedRoute(url: URL, hostname: string, port: number, merchantHosts: readonly GatewayHostRule[]): { provider: string; viaMerchantHost: boolean } {
  const rule = merchantRuleFor(hostname, port, url.port === '' && url.protocol === 'https:', merchantHosts);
  // Port 443 is https's: a rule naming it ("host:443") is the portless rule, and plain http there
  // would send the merchant's provider key in clear at the caller's choice.
  if (rule && url.protocol === 'http:' && port === HTTPS_PORT) {
    throw refused('VALIDATION', `${FIELD}: plain http on port ${HTTPS_PORT} is refused: use https`, hostname);
  }
  if (rule) return { provider: rule.provider, viaMerchantHost: true };
  if (url.protocol === 'http:' && url.port === '' && merchantRuleFor(hostname, HTTPS_PORT, true, merchantHosts)) {
    throw refused('VALIDATION', `${FIELD}: "${hostname}" is on your gateway hosts for https; to allow plain http, add it with its port ("${hostname}:80")`, hostname);
  }

  const display = url.port === '' ? hostname : `${hostname}:${port}`;
  const known = detectProvider(url.href);
  if (!known) {
    throw refused(
      'FORBIDDEN',
      `Host "${display}" is not on the gateway allow-list: forward to a supported provider's API host over https ` +
        `(see SUPPORTED_PROVIDERS), or add "${display}" to your gateway hosts with the provider it speaks like`,
      hostname,
    );
  }
  // Provider keys are injected into the request, so they must never travel in clear text.
  if (url.protocol !== 'https:') throw refused('VALIDATION', `${FIELD}: "${hostname}" is a supported provider and must be called over https`, hostname);
  if (port !== HTTPS_PORT) {
    throw refused(
      'FORBIDDEN',
      `Host "${display}" is not on the gateway allow-list: supported providers are reached on port ${HTTPS_PORT} only; ` +
        `add "${display}" to your gateway hosts to allow another port`,
      hostname,
    );
  }
  return { provider: known.provider, viaMerchantHost: false };
}

/**
 * The most specific merchant rule for a host (exact before wildcard, longer suffix first).
 * A rule without a port matches only https on its default port, so adding a host never opens
 * its other services (an admin console on :8080, a database, …), and a caller cannot choose
 * plain http to have the merchant's provider key sent in clear. Plain http needs the port named.
 */
function merchantRuleFor(hostname: string, port: number, isDefaultHttps: boolean, rules: readonly GatewayHostRule[]): GatewayHostRule | undefined {
  let best: { rule: GatewayHostRule; rank: number } | undefined;
  for (const rule of rules) {
    const parsed = parseHostRule(rule.host);
    if (!parsed || (parsed.port === null ? !isDefaultHttps : parsed.port !== port)) continue;
    const matches = parsed.wildcard
      ? isIP(hostname) === 0 && hostname.endsWith(`.${parsed.host}`)
      : hostname === parsed.host;
    if (!matches) continue;
    const rank = (parsed.wildcard ? 0 : 1_000) + parsed.host.length;
    if (!best || rank > best.rank) best = { rule, rank };
  }
  return best?.rule;
}

// --- Addresses ----------------------------------------------------------------------------------

async function vetAddresses(hostname: string, options: DestinationOptions): Promise<Destination['address']> {
  const literal = isIP(hostname);
  const answers = literal !== 0 ? [{ address: hostname }] : await resolve(hostname, options.lookup ?? cachedSystemLookup);
  vetAnswers(hostname, answers, options);
  const [first] = answers;
  if (!first) throw cannotResolve(hostname);
  return { address: first.address, family: isIP(first.address) === 6 ? 6 : 4 };
}

/** Refuses a host when any address it is (an IP literal) or resolves to is not one the gateway may connect to. */
function vetAnswers(hostname: string, answers: readonly { address: string }[], options: Pick<DestinationOptions, 'allowPrivateNetworks'>): void {
  const literal = isIP(hostname) !== 0;
  for (const { address } of answers) {
    const allowed = isIP(address) !== 0 && (options.allowPrivateNetworks || isPublicAddress(address));
    // Never name a resolved address: it would map the merchant's internal network for the caller.
    if (!allowed) {
      throw refused(
        'FORBIDDEN',
        `Host "${hostname}" ${literal ? 'is' : 'resolves to'} a private or reserved address; the gateway only connects to public addresses`,
        hostname,
      );
    }
  }
}

/**
 * getaddrinfo runs on libuv's small thread pool and Node caches nothing, so every call would
 * wait for it. Answers are kept briefly; each is still vetted on every use.
 */
const DNS_TTL_MS = 30_000;
const dnsCache = new Map<string, { answers: Promise<{ address: string; family: 4 | 6 }[]>; at: number }>();

function cachedSystemLookup(hostname: string): Promise<{ address: string; family: 4 | 6 }[]> {
  const cached = dnsCache.get(hostname);
  if (cached && Date.now() - cached.at < DNS_TTL_MS) return cached.answers;
  if (dnsCache.size > 10_000) dnsCache.clear();
  const answers = systemLookup(hostname);
  dnsCache.set(hostname, { answers, at: Date.now() });
  // A failed lookup is not remembered: the next call asks again.
  answers.catch(() => dnsCache.delete(hostname));
  return answers;
}

async function resolve(hostname: string, lookup: NonNullable<DestinationOptions['lookup']>): Promise<{ address: string }[]> {
  let answers: { address: string }[];
  try {
    answers = await lookup(hostname);
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code;
    throw cannotResolve(hostname, typeof code === 'string' ? code : undefined);
  }
  if (answers.length === 0) throw cannotResolve(hostname);
  return answers;
}

async function systemLookup(hostname: string): Promise<{ address: string; family: 4 | 6 }[]> {
  const answers = await dnsLookup(hostname, { all: true, verbatim: true });
  return answers.map(({ address, family }) => ({ address, family: family === 6 ? 6 : 4 }));
}

/** A net.LookupFunction-compatible function that always answers the vetted address (for http.request({ lookup })), so the socket connects where we checked. */
export function pinnedLookup(address: { address: string; family: 4 | 6 }): (
  hostname: string,
  options: unknown,
  // Node calls back in two shapes (one address, or a list when options.all), so no single type fits.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  callback: (...args: any[]) => void,
) => void {
  return (_hostname, options, callback) => {
    const wantsAll = typeof options === 'object' && options !== null && (options as { all?: unknown }).all === true;
    // Asynchronous like dns.lookup, which is what net.connect expects.
    if (wantsAll) process.nextTick(callback, null, [{ address: address.address, family: address.family }]);
    else process.nextTick(callback, null, address.address, address.family);
  };
}

// --- Public addresses ---------------------------------------------------------------------------

// Special-purpose IPv4 blocks (RFC 6890 and successors) that must never be a forward target.
const IPV4_NOT_PUBLIC = [
  '0.0.0.0/8', // "this network"
  '10.0.0.0/8',
  '100.64.0.0/10', // carrier-grade NAT
  '127.0.0.0/8',
  '169.254.0.0/16', // link-local, including the 169.254.169.254 cloud metadata service
  '172.16.0.0/12',
  '192.0.0.0/24', // IETF protocol assignments
  '192.0.2.0/24', // documentation
  '192.88.99.0/24', // 6to4 relay anycast
  '192.168.0.0/16',
  '198.18.0.0/15', // benchmarking
  '198.51.100.0/24', // documentation
  '203.0.113.0/24', // documentation
  '224.0.0.0/4', // multicast
  '240.0.0.0/4', // reserved, including broadcast 255.255.255.255
].map((cidr) => {
  const [ip = '', bits = '32'] = cidr.split('/');
  const mask = Number(bits) === 0 ? 0 : (~0 << (32 - Number(bits))) >>> 0;
  return { base: (ipv4Value(ip) & mask) >>> 0, mask };
});

const ipv6Range = (cidr: string) => {
  const [ip = '', bits = '128'] = cidr.split('/');
  const shift = BigInt(128 - Number(bits));
  return { shift, base: ipv6Value(ip) >> shift };
};
const IPV4_MAPPED = ipv6Range('::ffff:0:0/96');
const IPV4_COMPATIBLE = ipv6Range('::/96'); // also covers :: and ::1
const NAT64 = ipv6Range('64:ff9b::/96');
const SIX_TO_FOUR = ipv6Range('2002::/16');
// Outside global unicast everything is special: unique local, link-local, multicast, discard, …
const GLOBAL_UNICAST = ipv6Range('2000::/3');
const IPV6_NOT_PUBLIC = [
  '2001::/23', // IETF protocol assignments: Teredo 2001::/32, benchmarking, ORCHID, …
  '2001:db8::/32', // documentation
  '3fff::/20', // documentation (RFC 9637)
].map(ipv6Range);

const inRange = (value: bigint, range: { shift: bigint; base: bigint }) => value >> range.shift === range.base;
const LOW_32_BITS = 0xffff_ffffn;

/** Whether an IP address (v4 or v6, canonical or not) is one the gateway may connect to; false for anything not an address. */
export function isPublicAddress(ip: string): boolean {
  switch (isIP(ip)) {
    case 4:
      return isPublicIpv4(ipv4Value(ip));
    case 6:
      // A zone index only belongs on link-local addresses.
      return !ip.includes('%') && isPublicIpv6(ipv6Value(ip));
    default:
      return false;
  }
}

function isPublicIpv4(value: number): boolean {
  return !IPV4_NOT_PUBLIC.some(({ base, mask }) => (value & mask) >>> 0 === base);
}

function isPublicIpv6(value: bigint): boolean {
  // Forms that carry an IPv4 address reach that address, so it decides.
  if (inRange(value, IPV4_MAPPED) || inRange(value, IPV4_COMPATIBLE) || inRange(value, NAT64)) {
    return isPublicIpv4(Number(value & LOW_32_BITS));
  }
  if (inRange(value, SIX_TO_FOUR)) return isPublicIpv4(Number((value >> 80n) & LOW_32_BITS));
  return inRange(value, GLOBAL_UNICAST) && !IPV6_NOT_PUBLIC.some((range) => inRange(value, range));
}

/** A dotted quad already checked by isIP. */
function ipv4Value(ip: string): number {
  return ip.split('.').reduce((value, octet) => value * 256 + Number(octet), 0);
}

/** An IPv6 address already checked by isIP (no zone), as a 128-bit number. */
function ipv6Value(ip: string): bigint {
  let text = ip;
  // A trailing dotted quad stands for the last two groups.
  if (text.includes('.')) {
    const colon = text.lastIndexOf(':');
    const v4 = ipv4Value(text.slice(colon + 1));
    text = `${text.slice(0, colon + 1)}${Math.floor(v4 / 0x1_0000).toString(16)}:${(v4 % 0x1_0000).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headGroups = head ? head.split(':') : [];
  let groups = headGroups;
  if (tail !== undefined) {
    const tailGroups = tail ? tail.split(':') : [];
    groups = [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  }
  return groups.reduce((value, group) => (value << 16n) | BigInt(Number.parseInt(group, 16)), 0n);
}

// --- Helpers ------------------------------------------------------------------------------------

function bare(hostname: string): string {
  const unbracketed = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
  return unbracketed.endsWith('.') ? unbracketed.slice(0, -1) : unbracketed;
}

function defaultPort(protocol: string): number {
  return protocol === 'https:' ? HTTPS_PORT : 80;
}

function refused(code: ErrorCode, message: string, host: string): AppError {
  return new AppError(code, message, { field: FIELD, host });
}

function cannotResolve(hostname: string, code?: string): AppError {
  return refused('VALIDATION', `Cannot resolve host "${hostname}"${code ? ` (${code})` : ''}: check the URL's host name`, hostname);
}
