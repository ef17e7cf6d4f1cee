import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

/**
 * Browser (end-to-end) tests: a real Chromium driven by playwright-core against a real server
 * on 127.0.0.1 over in-memory PGlite. Run them through scripts/run-e2e.sh, which puts the run in
 * a fresh network namespace so nothing (not even Chromium's own background traffic) can leave
 * the machine. The main suite (vitest.config.ts) excludes test/e2e.
 */
export default defineConfig({
  resolve: {
    // Same as vitest.config.ts: Vite would pick graphql's ESM build for our files while Apollo
    // and Pothos, loaded by Node, get the CommonJS one: two copies of graphql's classes that
    // refuse each other ("Cannot use GraphQLObjectType from another module or realm").
    alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }],
  },
  test: {
    name: 'e2e',
    include: ['test/e2e/**/*.e2e.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // One browser per file is heavy enough; don't start several at once.
    fileParallelism: false,
    env: { TEST_DB: 'pglite' },
  },
});
