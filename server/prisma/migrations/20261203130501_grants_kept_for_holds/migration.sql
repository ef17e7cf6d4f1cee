-- AlterTable
ALTER TABLE "credit_grants" ADD COLUMN     "hold_id" UUID;

