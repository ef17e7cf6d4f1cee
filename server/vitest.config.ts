import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

/**
 * Two projects run the same suite: on embedded PGlite always, and on the real PostgreSQL
 * server when TEST_DATABASE_URL is set (CI sets it). Files named *.pg.test.ts need a real
 * server (several processes on one database) and run only in the postgres project.
 * Browser tests live in test/e2e and run through `npm run test:e2e` (vitest.e2e.config.ts).
 */
const postgresUrl = process.env.TEST_DATABASE_URL;
const everyTest = ['src/**/*.test.ts', 'test/**/*.test.ts'];
const browserTests = 'test/e2e/**';

export default defineConfig({
  resolve: {
    // Vite would pick graphql's ESM build for our files while Apollo and Pothos, loaded by
    // Node, get the CommonJS one: two copies of graphql's classes that refuse each other.
    alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }],
  },
  test: {
    testTimeout: 30_000,
    hookTimeout: 90_000,
    pool: 'forks',
    // Most of a file's time is waiting on a database or a child process, so two run at once.
    maxWorkers: 2,
    projects: [
      {
        extends: true as const,
        test: { name: 'pglite', include: everyTest, exclude: ['**/*.pg.test.ts', browserTests], env: { TEST_DB: 'pglite' } },
      },
      ...(postgresUrl
        ? [
            {
              extends: true as const,
              test: { name: 'postgres', include: everyTest, exclude: [browserTests], env: { TEST_DB: 'postgres' } },
            },
          ]
        : []),
    ],
  },
});
