-- AlterTable
ALTER TABLE "wallets" ADD COLUMN     "overdraft_limit_set_at" TIMESTAMPTZ(3);

