-- CreateTable
CREATE TABLE "plans" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "key" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "description" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL,
    "archived_at" TIMESTAMPTZ(3),

    CONSTRAINT "plans_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "customer_plans" (
    "id" UUID NOT NULL,
    "merchant_id" UUID NOT NULL,
    "customer_id" UUID NOT NULL,
    "plan_id" UUID,
    "effective_from" TIMESTAMPTZ(3) NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "customer_plans_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "plans_merchant_id_key_key" ON "plans"("merchant_id", "key");

-- CreateIndex
CREATE UNIQUE INDEX "plans_id_merchant_id_key" ON "plans"("id", "merchant_id");

-- CreateIndex
CREATE UNIQUE INDEX "customer_plans_customer_id_effective_from_key" ON "customer_plans"("customer_id", "effective_from");

-- AddForeignKey
ALTER TABLE "price_rules" ADD CONSTRAINT "price_rules_plan_id_merchant_id_fkey" FOREIGN KEY ("plan_id", "merchant_id") REFERENCES "plans"("id", "merchant_id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "plans" ADD CONSTRAINT "plans_merchant_id_fkey" FOREIGN KEY ("merchant_id") REFERENCES "merchants"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "customer_plans" ADD CONSTRAINT "customer_plans_customer_id_fkey" FOREIGN KEY ("customer_id") REFERENCES "customers"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "customer_plans" ADD CONSTRAINT "customer_plans_plan_id_merchant_id_fkey" FOREIGN KEY ("plan_id", "merchant_id") REFERENCES "plans"("id", "merchant_id") ON DELETE RESTRICT ON UPDATE CASCADE;

