-- Period totals are kept per price rule (its book and name) as well: a tiered price counts only
-- the units that rule priced, not those other rules priced on the same meter.
ALTER TABLE "usage_period_totals" ADD COLUMN "price_book" TEXT NOT NULL DEFAULT '',
ADD COLUMN "rule_name" TEXT NOT NULL DEFAULT '',
DROP CONSTRAINT "usage_period_totals_pkey",
ADD CONSTRAINT "usage_period_totals_pkey" PRIMARY KEY ("customer_id", "currency", "meter_key", "period_start", "price_book", "rule_name");

-- Existing totals counted the meter for every rule: each is carried over to every quantity rule
-- (FLAT, GRADUATED, VOLUME, PACKAGE) of its merchant that has ever priced that meter, in any book
-- (a plan's id, or '' for the default book), archived ones included. So for the periods in progress
-- these rules go on exactly as before; only rules added from now on, and the months after, count
-- their own units alone. A meter total no rule ever priced is dropped: nothing reads it.
INSERT INTO "usage_period_totals" ("merchant_id", "customer_id", "currency", "meter_key", "period_start", "price_book", "rule_name", "quantity")
SELECT t."merchant_id", t."customer_id", t."currency", t."meter_key", t."period_start", r."price_book", r."rule_name", t."quantity"
FROM "usage_period_totals" t
JOIN (SELECT DISTINCT "merchant_id", coalesce("plan_id"::text, '') AS "price_book", "name" AS "rule_name", "meter_key"
      FROM "price_rules" WHERE "meter_key" IS NOT NULL AND "type" <> 'MARKUP') r
  ON r."merchant_id" = t."merchant_id" AND r."meter_key" = t."meter_key"
WHERE t."rule_name" = '';

DELETE FROM "usage_period_totals" WHERE "rule_name" = '';

ALTER TABLE "usage_period_totals" ALTER COLUMN "price_book" DROP DEFAULT,
ALTER COLUMN "rule_name" DROP DEFAULT;
