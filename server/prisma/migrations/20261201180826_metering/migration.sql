-- CreateEnum
CREATE TYPE "MeterSource" AS ENUM ('INPUT_TOKENS', 'CACHED_INPUT_TOKENS', 'OUTPUT_TOKENS', 'TOTAL_TOKENS', 'REQUESTS', 'IMAGES', 'AUDIO_SECONDS', 'CHARACTERS', 'QUANTITY');

-- CreateEnum
CREATE TYPE "MeterAggregation" AS ENUM ('SUM', 'COUNT', 'MAX');

-- CreateEnum
CREATE TYPE "PriceRuleType" AS ENUM ('FLAT', 'MARKUP', 'GRADUATED', 'VOLUME', 'PACKAGE');

-- CreateEnum
CREATE TYPE "UsageEventStatus" AS ENUM ('CHARGED', 'NOT_BILLABLE', 'UNCHARGED');

-- AlterTable
ALTER TABLE "merchants" ADD COLUMN     "incomplete_stream_policy" TEXT NOT NULL DEFAULT 'ESTIMATE';

-- CreateTable
CREATE TABLE "meters" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "key" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "unit" TEXT NOT NULL,
    "source" "MeterSource" NOT NULL,
    "aggregation" "MeterAggregation" NOT NULL DEFAULT 'SUM',
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "archived_at" TIMESTAMPTZ(3),

    CONSTRAINT "meters_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "provider_prices" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "provider" TEXT NOT NULL,
    "model" TEXT NOT NULL,
    "currency" CHAR(3) NOT NULL DEFAULT 'USD',
    "prices" JSONB NOT NULL,
    "effective_from" TIMESTAMPTZ(3) NOT NULL,
    "source" TEXT NOT NULL DEFAULT 'manual',
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "provider_prices_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "price_rules" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "plan_id" UUID,
    "name" TEXT NOT NULL,
    "type" "PriceRuleType" NOT NULL,
    "meter_key" TEXT,
    "provider" TEXT,
    "model" TEXT,
    "currency" CHAR(3) NOT NULL DEFAULT 'USD',
    "config" JSONB NOT NULL,
    "effective_from" TIMESTAMPTZ(3) NOT NULL,
    "archived_at" TIMESTAMPTZ(3),
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "price_rules_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "usage_events" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "customer_id" UUID NOT NULL,
    "idempotency_key" TEXT NOT NULL,
    "occurred_at" TIMESTAMPTZ(3) NOT NULL,
    "period_start" TIMESTAMPTZ(3) NOT NULL,
    "provider" TEXT,
    "model" TEXT,
    "api" TEXT,
    "stated_quantities" JSONB NOT NULL DEFAULT '{}',
    "input_tokens" INTEGER NOT NULL DEFAULT 0,
    "cached_input_tokens" INTEGER NOT NULL DEFAULT 0,
    "cache_write_tokens" INTEGER NOT NULL DEFAULT 0,
    "output_tokens" INTEGER NOT NULL DEFAULT 0,
    "reasoning_tokens" INTEGER NOT NULL DEFAULT 0,
    "audio_seconds" TEXT,
    "characters" INTEGER NOT NULL DEFAULT 0,
    "images" INTEGER NOT NULL DEFAULT 0,
    "requests" INTEGER NOT NULL DEFAULT 0,
    "currency" CHAR(3) NOT NULL DEFAULT 'USD',
    "cost_attos" DECIMAL(38,0) NOT NULL DEFAULT 0,
    "charge_attos" DECIMAL(38,0) NOT NULL DEFAULT 0,
    "margin_attos" DECIMAL(38,0) NOT NULL DEFAULT 0,
    "provider_price_ref" TEXT,
    "price_rule_id" UUID,
    "ledger_transaction_id" UUID,
    "status" "UsageEventStatus" NOT NULL,
    "estimated" BOOLEAN NOT NULL DEFAULT false,
    "metadata" JSONB NOT NULL DEFAULT '{}',
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "usage_events_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "usage_period_totals" (
    "merchant_id" UUID NOT NULL,
    "customer_id" UUID NOT NULL,
    "meter_key" TEXT NOT NULL,
    "period_start" TIMESTAMPTZ(3) NOT NULL,
    "quantity" DECIMAL(38,18) NOT NULL DEFAULT 0,

    CONSTRAINT "usage_period_totals_pkey" PRIMARY KEY ("customer_id","meter_key","period_start")
);

-- CreateIndex
CREATE UNIQUE INDEX "meters_merchant_id_key_key" ON "meters"("merchant_id", "key");

-- CreateIndex
CREATE UNIQUE INDEX "provider_prices_merchant_id_provider_model_effective_from_key" ON "provider_prices"("merchant_id", "provider", "model", "effective_from");

-- CreateIndex
CREATE INDEX "price_rules_merchant_id_plan_id_idx" ON "price_rules"("merchant_id", "plan_id");

-- CreateIndex
CREATE INDEX "usage_events_merchant_id_customer_id_occurred_at_idx" ON "usage_events"("merchant_id", "customer_id", "occurred_at");

-- CreateIndex
CREATE INDEX "usage_events_merchant_id_occurred_at_idx" ON "usage_events"("merchant_id", "occurred_at");

-- CreateIndex
CREATE UNIQUE INDEX "usage_events_merchant_id_idempotency_key_key" ON "usage_events"("merchant_id", "idempotency_key");

