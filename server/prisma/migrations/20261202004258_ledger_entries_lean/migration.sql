-- DropForeignKey
ALTER TABLE "ledger_entries" DROP CONSTRAINT "ledger_entries_transaction_id_fkey";

-- DropForeignKey
ALTER TABLE "ledger_entries" DROP CONSTRAINT "ledger_entries_wallet_id_fkey";

-- DropForeignKey
ALTER TABLE "ledger_entries" DROP CONSTRAINT "ledger_entries_account_id_fkey";

-- DropIndex
DROP INDEX "ledger_entries_wallet_id_idx";

-- DropIndex
DROP INDEX "ledger_entries_account_id_idx";

-- DropIndex
DROP INDEX "ledger_entries_grant_id_idx";

