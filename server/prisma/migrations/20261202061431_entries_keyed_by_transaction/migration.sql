-- Entries are keyed by (transaction, leg) instead of their own id: the id's index and the
-- transaction_id index were two index writes per leg on the debit path, and every read of
-- entries goes through their transaction anyway. Existing legs are numbered in the order they
-- were written (uuidv7 ids sort by creation).

-- AlterTable
ALTER TABLE "ledger_entries" ADD COLUMN "leg" SMALLINT;

UPDATE "ledger_entries" e SET "leg" = n.leg
FROM (SELECT "id", (row_number() OVER (PARTITION BY "transaction_id" ORDER BY "id") - 1)::smallint AS leg FROM "ledger_entries") n
WHERE e."id" = n."id";

-- DropIndex
DROP INDEX "ledger_entries_transaction_id_idx";

ALTER TABLE "ledger_entries" ALTER COLUMN "leg" SET NOT NULL,
DROP CONSTRAINT "ledger_entries_pkey",
DROP COLUMN "id",
ADD CONSTRAINT "ledger_entries_pkey" PRIMARY KEY ("transaction_id", "leg");
