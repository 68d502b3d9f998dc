-- Monitor and Backlog panes: the rows still owed work, by status. Only the open statuses are read
-- (the staging status index leads with processing_status), never the processed history.
SELECT processing_status AS status,
       count(*) AS rows,
       min(ingestion_timestamp) AS oldest_ingested,
       min(next_attempt_at) AS next_due,
       coalesce(sum(retry_count), 0) AS retries
FROM financial_transactions_staging
WHERE processing_status IN ('pending', 'failed', 'dead_letter', 'parked')
GROUP BY processing_status
