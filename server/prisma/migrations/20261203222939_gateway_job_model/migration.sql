-- AlterTable
ALTER TABLE "gateway_jobs" ADD COLUMN     "model" TEXT;

