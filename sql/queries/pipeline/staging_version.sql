-- Backlog pane: a fingerprint of staging's state from the maintained counts. Every transition of a
-- staging row (arrival, chunk, retry, purge fold) applies its deltas there and moves updated_at, so
-- while this is unchanged the failed and dead-lettered rows are too (ops/pipeline.py re-reads them
-- then only after FAILED_REREAD_S, in case a writer ever skipped the counts).
SELECT count(*) AS backends, coalesce(sum(n.failed), 0)::bigint AS failed,
       coalesce(sum(n.dead_letter), 0)::bigint AS dead_letter, max(n.updated_at) AS updated_at
FROM financial_staging_counts n
