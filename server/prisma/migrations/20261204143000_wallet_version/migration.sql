-- AlterTable
ALTER TABLE "wallets" ADD COLUMN     "version" BIGINT NOT NULL DEFAULT 0;
