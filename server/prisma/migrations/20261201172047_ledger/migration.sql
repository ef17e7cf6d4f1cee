-- CreateEnum
CREATE TYPE "LedgerAccountKind" AS ENUM ('USAGE_REVENUE', 'PAYMENT_CLEARING', 'PROMOTIONAL', 'PLAN_CREDITS', 'ADJUSTMENTS', 'EXPIRED_CREDITS');

-- CreateEnum
CREATE TYPE "LedgerTransactionKind" AS ENUM ('USAGE', 'GRANT', 'ADJUSTMENT', 'REFUND', 'EXPIRY', 'HOLD_CAPTURE');

-- CreateEnum
CREATE TYPE "CreditGrantKind" AS ENUM ('PAID', 'PROMOTIONAL', 'PLAN_INCLUDED');

-- CreateEnum
CREATE TYPE "HoldStatus" AS ENUM ('PENDING', 'CAPTURED', 'RELEASED', 'EXPIRED');

-- AlterTable
ALTER TABLE "merchants" ADD COLUMN     "credit_consumption_order" TEXT[] DEFAULT ARRAY['EXPIRY', 'KIND', 'PRIORITY', 'CREATED']::TEXT[];

-- CreateTable
CREATE TABLE "wallets" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "customer_id" UUID NOT NULL,
    "currency" CHAR(3) NOT NULL,
    "balance" BIGINT NOT NULL DEFAULT 0,
    "fraction_carry" BIGINT NOT NULL DEFAULT 0,
    "overdraft_limit" BIGINT NOT NULL DEFAULT 0,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "wallets_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "ledger_accounts" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "currency" CHAR(3) NOT NULL,
    "kind" "LedgerAccountKind" NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ledger_accounts_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "ledger_transactions" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "wallet_id" UUID NOT NULL,
    "customer_id" UUID NOT NULL,
    "currency" CHAR(3) NOT NULL,
    "kind" "LedgerTransactionKind" NOT NULL,
    "amount" BIGINT NOT NULL,
    "balance_after" BIGINT NOT NULL,
    "idempotency_key" TEXT NOT NULL,
    "request_hash" TEXT NOT NULL,
    "description" TEXT,
    "reason" TEXT,
    "metadata" JSONB NOT NULL DEFAULT '{}',
    "actor_api_key_id" UUID,
    "actor_kind" TEXT NOT NULL,
    "source_ref" TEXT,
    "occurred_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ledger_transactions_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "ledger_entries" (
    "id" UUID NOT NULL,
    "transaction_id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "wallet_id" UUID,
    "account_id" UUID,
    "grant_id" UUID,
    "currency" CHAR(3) NOT NULL,
    "amount" BIGINT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ledger_entries_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "credit_grants" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "wallet_id" UUID NOT NULL,
    "customer_id" UUID NOT NULL,
    "currency" CHAR(3) NOT NULL,
    "kind" "CreditGrantKind" NOT NULL,
    "amount" BIGINT NOT NULL,
    "remaining" BIGINT NOT NULL,
    "priority" INTEGER NOT NULL DEFAULT 0,
    "expires_at" TIMESTAMPTZ(3),
    "expired_at" TIMESTAMPTZ(3),
    "transaction_id" UUID NOT NULL,
    "description" TEXT,
    "metadata" JSONB NOT NULL DEFAULT '{}',
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "credit_grants_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "holds" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "wallet_id" UUID NOT NULL,
    "customer_id" UUID NOT NULL,
    "currency" CHAR(3) NOT NULL,
    "amount" BIGINT NOT NULL,
    "captured_amount" BIGINT NOT NULL DEFAULT 0,
    "status" "HoldStatus" NOT NULL DEFAULT 'PENDING',
    "expires_at" TIMESTAMPTZ(3) NOT NULL,
    "idempotency_key" TEXT NOT NULL,
    "description" TEXT,
    "metadata" JSONB NOT NULL DEFAULT '{}',
    "capture_transaction_id" UUID,
    "finalized_at" TIMESTAMPTZ(3),
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "holds_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "wallets_merchant_id_idx" ON "wallets"("merchant_id");

-- CreateIndex
CREATE UNIQUE INDEX "wallets_customer_id_currency_key" ON "wallets"("customer_id", "currency");

-- CreateIndex
CREATE UNIQUE INDEX "ledger_accounts_merchant_id_currency_kind_key" ON "ledger_accounts"("merchant_id", "currency", "kind");

-- CreateIndex
CREATE INDEX "ledger_transactions_wallet_id_created_at_id_idx" ON "ledger_transactions"("wallet_id", "created_at", "id");

-- CreateIndex
CREATE INDEX "ledger_transactions_merchant_id_created_at_id_idx" ON "ledger_transactions"("merchant_id", "created_at", "id");

-- CreateIndex
CREATE UNIQUE INDEX "ledger_transactions_merchant_id_idempotency_key_key" ON "ledger_transactions"("merchant_id", "idempotency_key");

-- CreateIndex
CREATE INDEX "ledger_entries_transaction_id_idx" ON "ledger_entries"("transaction_id");

-- CreateIndex
CREATE INDEX "ledger_entries_wallet_id_idx" ON "ledger_entries"("wallet_id");

-- CreateIndex
CREATE INDEX "ledger_entries_account_id_idx" ON "ledger_entries"("account_id");

-- CreateIndex
CREATE INDEX "ledger_entries_grant_id_idx" ON "ledger_entries"("grant_id");

-- CreateIndex
CREATE INDEX "credit_grants_wallet_id_remaining_idx" ON "credit_grants"("wallet_id", "remaining");

-- CreateIndex
CREATE INDEX "credit_grants_expires_at_idx" ON "credit_grants"("expires_at");

-- CreateIndex
CREATE INDEX "holds_wallet_id_status_expires_at_idx" ON "holds"("wallet_id", "status", "expires_at");

-- CreateIndex
CREATE UNIQUE INDEX "holds_merchant_id_idempotency_key_key" ON "holds"("merchant_id", "idempotency_key");

-- AddForeignKey
ALTER TABLE "wallets" ADD CONSTRAINT "wallets_customer_id_fkey" FOREIGN KEY ("customer_id") REFERENCES "customers"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_transaction_id_fkey" FOREIGN KEY ("transaction_id") REFERENCES "ledger_transactions"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_wallet_id_fkey" FOREIGN KEY ("wallet_id") REFERENCES "wallets"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "ledger_entries" ADD CONSTRAINT "ledger_entries_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "ledger_accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "credit_grants" ADD CONSTRAINT "credit_grants_wallet_id_fkey" FOREIGN KEY ("wallet_id") REFERENCES "wallets"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "holds" ADD CONSTRAINT "holds_wallet_id_fkey" FOREIGN KEY ("wallet_id") REFERENCES "wallets"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

