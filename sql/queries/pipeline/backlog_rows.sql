-- Backlog pane: failed, dead-lettered and parked staging rows, soonest retry first, dead letters, then
-- parked rows last. %(filter)s narrows them by backlog_row_matches(), the filter every Backlog action
-- (retry, park, what if) applies to the same text.
SELECT staging_id, processing_status, error_code, error_message, retry_count, next_attempt_at,
       batch_id, transaction_id, account_id, amount, transaction_type, ingestion_timestamp
FROM financial_transactions_staging
WHERE processing_status IN ('failed', 'dead_letter', 'parked')
  AND (%(filter)s::text IS NULL
       OR backlog_row_matches(%(filter)s::text, processing_status, error_code, error_message, batch_id,
                              staging_id, transaction_id))
ORDER BY processing_status = 'parked', processing_status = 'dead_letter', next_attempt_at NULLS LAST, staging_id
LIMIT %(limit)s
