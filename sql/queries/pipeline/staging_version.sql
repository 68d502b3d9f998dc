-- Backlog pane: a fingerprint of staging's state from the maintained counts. Every transition of a
-- staging row (arrival, chunk, retry, purge fold) applies its deltas there and moves updated_at, so
-- while this is unchanged the failed and dead-lettered rows are too (ops/pipeline.py re-reads them
-- then only after FAILED_REREAD_S, in case a writer ever skipped the counts).
SELECT t.backends, t.failed, t.dead_letter, t.updated_at
FROM financial_staging_totals t
