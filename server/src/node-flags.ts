/**
 * Node flags the server runs with (`npm start` passes them; the benchmarks start the server the
 * same way, and a test keeps the two in step).
 *
 * --max-semi-space-size=64: V8's young generation is 16 MB a semi-space by default, which
 * ingestion at full speed fills about every 50 ms while each batch lives for 100-300 ms. So nearly
 * everything a batch allocates survived two scavenges and was copied into the old generation,
 * and every scavenge was slow (14 ms on average in bench/ingest, a quarter of the main thread).
 * With 64 MB, most of a batch dies young: a third as many scavenges, 0.6 s of them in 8 s instead
 * of 1.6 s, and the server's CPU per event fell by 5-10% with full answers and 25-35% with
 * minimal ones (paired runs). The cost: up to 3 × 48 MB more memory, and each scavenge, when it
 * comes, pauses longer (up to ~30 ms seen instead of ~14). bench/gateway, over four pairs of
 * runs: no change beyond noise at 500 connections or for streams; JSON at 100 connections
 * averaged 13% lower, one pair of the four taken in a slow spell of the machine.
 */
export const SERVER_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=64'];
