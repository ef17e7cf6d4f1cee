-- Grants that merchant adjustments created carried the adjustment's reason as their description,
-- which a customer's own token can list. The reason stays on the ledger transaction (secret key only).
UPDATE "credit_grants" g SET "description" = 'Balance adjustment'
FROM "ledger_transactions" t
WHERE t."id" = g."transaction_id" AND t."kind" = 'ADJUSTMENT' AND g."description" IS DISTINCT FROM 'Balance adjustment';
