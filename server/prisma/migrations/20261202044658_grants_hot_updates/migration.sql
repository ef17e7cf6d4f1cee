-- DropIndex
DROP INDEX "credit_grants_wallet_id_remaining_idx";

-- CreateIndex
CREATE INDEX "credit_grants_wallet_id_idx" ON "credit_grants"("wallet_id");


-- Debits rewrite wallets.balance and credit_grants.remaining on every batch. Room left on each
-- page lets PostgreSQL keep the new row version on the same page without touching any index
-- (a heap-only update); new pages are filled to 80%.
ALTER TABLE "wallets" SET (fillfactor = 80);
ALTER TABLE "credit_grants" SET (fillfactor = 80);
