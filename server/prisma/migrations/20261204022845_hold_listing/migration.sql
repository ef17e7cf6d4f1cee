-- CreateIndex
CREATE INDEX "holds_wallet_id_created_at_id_idx" ON "holds"("wallet_id", "created_at", "id");

