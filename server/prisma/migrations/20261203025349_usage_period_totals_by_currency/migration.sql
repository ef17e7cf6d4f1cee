-- Period totals are kept per currency: tiers count a currency's units apart, so each currency is
-- priced (and a VOLUME credit given back) where it was paid.
ALTER TABLE "usage_period_totals" ADD COLUMN "currency" CHAR(3);

-- Existing totals counted every currency together: each goes to the one currency its customer's
-- events of that month were charged in, or to USD when they used several (or none).
UPDATE "usage_period_totals" t SET "currency" = coalesce((
  SELECT min(e."currency") FROM "usage_events" e
  WHERE e."merchant_id" = t."merchant_id" AND e."customer_id" = t."customer_id" AND e."period_start" = t."period_start"
  HAVING count(DISTINCT e."currency") = 1), 'USD');

ALTER TABLE "usage_period_totals" ALTER COLUMN "currency" SET NOT NULL,
DROP CONSTRAINT "usage_period_totals_pkey",
ADD CONSTRAINT "usage_period_totals_pkey" PRIMARY KEY ("customer_id", "currency", "meter_key", "period_start");
