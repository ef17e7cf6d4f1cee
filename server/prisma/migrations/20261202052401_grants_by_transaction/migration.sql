-- CreateIndex
CREATE INDEX "credit_grants_transaction_id_idx" ON "credit_grants"("transaction_id");

