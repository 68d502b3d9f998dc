-- Backlog pane: when the next failed row is due and how many failed attempts the failed and
-- dead-lettered rows carry (pending rows carry none: a re-queue resets retry_count). Reads only those
-- rows (the retry index by error code is partial on them), never the pending ones.
SELECT processing_status AS status,
       min(next_attempt_at) AS next_due,
       coalesce(sum(retry_count), 0) AS retries
FROM financial_transactions_staging
WHERE processing_status IN ('failed', 'dead_letter')
GROUP BY processing_status
