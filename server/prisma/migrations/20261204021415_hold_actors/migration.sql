-- AlterTable
ALTER TABLE "holds" ADD COLUMN     "created_by_api_key_id" UUID,
ADD COLUMN     "created_by_kind" TEXT,
ADD COLUMN     "finalized_by_api_key_id" UUID,
ADD COLUMN     "finalized_by_kind" TEXT;


-- Expiry is the system's doing, whenever it happened; who made or settled older holds is unknown.
UPDATE "holds" SET "finalized_by_kind" = 'system' WHERE "status" = 'EXPIRED';
