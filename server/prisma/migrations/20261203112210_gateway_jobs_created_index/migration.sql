-- CreateIndex
CREATE INDEX "gateway_jobs_created_at_idx" ON "gateway_jobs"("created_at");

