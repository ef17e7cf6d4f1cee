-- AlterTable
ALTER TABLE "ledger_transactions" ADD COLUMN     "counter_account_id" UUID,
ADD COLUMN     "grant_id" UUID;


-- Every leg of every transaction, whichever form it is stored in: the rows of ledger_entries,
-- and the two legs a two-leg transaction carries on its own row (see counter_account_id).
CREATE VIEW "ledger_legs" AS
  SELECT "transaction_id", "leg", "merchant_id", "wallet_id", "account_id", "grant_id", "currency", "amount", "created_at"
  FROM "ledger_entries"
  UNION ALL
  SELECT "id", 0::smallint, "merchant_id", "wallet_id", NULL::uuid, "grant_id", "currency", "amount", "created_at"
  FROM "ledger_transactions" WHERE "counter_account_id" IS NOT NULL
  UNION ALL
  SELECT "id", 1::smallint, "merchant_id", NULL::uuid, "counter_account_id", NULL::uuid, "currency", -"amount", "created_at"
  FROM "ledger_transactions" WHERE "counter_account_id" IS NOT NULL;
