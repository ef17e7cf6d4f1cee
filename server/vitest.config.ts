import { defineConfig } from 'vitest/config';

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
  test: {
    testTimeout: 30_000,
    hookTimeout: 90_000,
    pool: 'forks',
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
