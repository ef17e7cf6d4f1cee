import type { Database } from '../src/shared/db/database.ts';

/**
 * A comparable description of what a database's public schema contains: tables, columns
 * with types/nullability/defaults, indexes, constraints and enums. Two databases built from
 * equivalent SQL give equal snapshots. Views are left out: schema.prisma cannot declare one, so
 * they are written by hand in migrations (ledger_legs), and the tests that read through them
 * cover them.
 */
export interface CatalogSnapshot {
  columns: string[];
  indexes: string[];
  constraints: string[];
  enums: string[];
}

export async function catalogSnapshot(db: Database): Promise<CatalogSnapshot> {
  return db.withConnection(async (connection) => {
    const lines = async (sql: string) => (await connection.query<{ line: string }>(sql)).map((row) => row.line).sort();
    return {
      columns: await lines(`
        SELECT concat_ws(' ', table_name, column_name, data_type, udt_name, is_nullable, coalesce(column_default, '-'),
                         coalesce(character_maximum_length::text, '-'), coalesce(numeric_precision::text, '-'),
                         coalesce(numeric_scale::text, '-'), coalesce(datetime_precision::text, '-')) AS line
        FROM information_schema.columns c
        WHERE table_schema = 'public' AND table_name <> '_prisma_migrations'
          AND EXISTS (SELECT FROM information_schema.tables t WHERE t.table_schema = 'public' AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE')`),
      indexes: await lines(`
        SELECT indexdef AS line FROM pg_indexes
        WHERE schemaname = 'public' AND tablename <> '_prisma_migrations'`),
      constraints: await lines(`
        SELECT concat_ws(' ', rel.relname, con.conname, pg_get_constraintdef(con.oid)) AS line
        FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid JOIN pg_namespace ns ON ns.oid = rel.relnamespace
        WHERE ns.nspname = 'public' AND rel.relname <> '_prisma_migrations'`),
      enums: await lines(`
        SELECT concat_ws(' ', t.typname, e.enumsortorder::text, e.enumlabel) AS line
        FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace ns ON ns.oid = t.typnamespace
        WHERE ns.nspname = 'public'`),
    };
  });
}
