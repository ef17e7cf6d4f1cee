/**
 * What a credential's cached data is filed under: a fingerprint of the endpoint and token, so
 * one customer's data is never served to another (a new token is a new scope) while the token
 * itself stays out of query keys, which devtools show and cache persisters write to storage.
 * Two 53-bit hashes (cyrb53) with different seeds: enough that two tokens in one app never meet.
 */
export function cacheScopeOf(endpoint: string, token: string | null | undefined): string {
  const text = `${endpoint}\n${token ?? ''}`;
  return `${cyrb53(text, 0x9e3779b9).toString(36)}${cyrb53(text, 0x85ebca6b).toString(36)}`;
}

function cyrb53(text: string, seed: number): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}
