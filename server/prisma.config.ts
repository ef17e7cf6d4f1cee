import { defineConfig } from 'prisma/config';

// The Prisma CLI is only used for `prisma generate` here: migrations are applied by
// Tollgate's own migrator (src/shared/db/migrator.ts), which also runs on PGlite.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL ?? 'postgresql://localhost:5432/unused' },
});
