/** Prisma's "unique constraint failed" error, recognised without importing its runtime classes. */
export function isUniqueViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 'P2002';
}
