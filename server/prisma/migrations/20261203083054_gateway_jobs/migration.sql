-- CreateTable
CREATE TABLE "gateway_jobs" (
    "merchant_id" UUID NOT NULL,
    "provider" TEXT NOT NULL,
    "job_id" TEXT NOT NULL,
    "customer_id" UUID NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "gateway_jobs_pkey" PRIMARY KEY ("merchant_id","provider","job_id")
);

