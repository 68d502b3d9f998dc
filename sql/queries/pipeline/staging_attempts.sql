-- Backlog drill-down: every staging row carrying the same transaction_id (earlier attempts, duplicates).
SELECT staging_id, processing_status, error_code, retry_count, batch_id, ingestion_timestamp, next_attempt_at
FROM financial_transactions_staging
WHERE transaction_id = %(transaction_id)s
ORDER BY staging_id
LIMIT 50
