/**
 * FNV-1a: a stable, cheap spread of keys (wallets, customers) over a fixed number of lanes, so
 * the same key always lands in the same lane and keeps its order there.
 */
export function laneOf(key: string, lanes: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % lanes;
}
