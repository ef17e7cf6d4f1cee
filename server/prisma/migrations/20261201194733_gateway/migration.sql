-- CreateEnum
CREATE TYPE "GatewayOutcome" AS ENUM ('COMPLETED', 'UPSTREAM_ERROR', 'REFUSED', 'TIMEOUT', 'UNREACHABLE', 'CLIENT_ABORTED');

-- AlterEnum
ALTER TYPE "UsageEventStatus" ADD VALUE 'PARTIALLY_CHARGED';

-- AlterTable
ALTER TABLE "merchants" ADD COLUMN     "gateway_caller_provider_keys" BOOLEAN NOT NULL DEFAULT false,
ADD COLUMN     "gateway_reserve_max_cost" BOOLEAN NOT NULL DEFAULT false;

-- AlterTable
ALTER TABLE "customers" ADD COLUMN     "blocked_at" TIMESTAMPTZ(3),
ADD COLUMN     "blocked_reason" TEXT;

-- CreateTable
CREATE TABLE "gateway_hosts" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "host" TEXT NOT NULL,
    "provider" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "gateway_hosts_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "gateway_requests" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "customer_id" UUID,
    "provider" TEXT,
    "method" TEXT NOT NULL,
    "host" TEXT NOT NULL,
    "path" TEXT NOT NULL,
    "status" INTEGER NOT NULL,
    "outcome" "GatewayOutcome" NOT NULL,
    "error_code" TEXT,
    "streamed" BOOLEAN NOT NULL DEFAULT false,
    "latency_ms" INTEGER NOT NULL,
    "ttfb_ms" INTEGER,
    "usage_event_id" UUID,
    "created_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "gateway_requests_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "spend_limits" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "customer_id" UUID NOT NULL,
    "currency" TEXT NOT NULL,
    "amount_nanos" BIGINT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "spend_limits_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "gateway_hosts_merchant_id_host_key" ON "gateway_hosts"("merchant_id", "host");

-- CreateIndex
CREATE INDEX "gateway_requests_merchant_id_created_at_id_idx" ON "gateway_requests"("merchant_id", "created_at", "id");

-- CreateIndex
CREATE INDEX "gateway_requests_customer_id_created_at_idx" ON "gateway_requests"("customer_id", "created_at");

-- CreateIndex
CREATE INDEX "spend_limits_merchant_id_idx" ON "spend_limits"("merchant_id");

-- CreateIndex
CREATE UNIQUE INDEX "spend_limits_customer_id_currency_key" ON "spend_limits"("customer_id", "currency");

