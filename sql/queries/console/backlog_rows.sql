-- Backlog pane: failed and dead-lettered staging rows, soonest retry first, dead letters last.
-- %(filter)s narrows to rows whose status, error code, message or batch contain it, or whose
-- staging/transaction id equals it.
SELECT staging_id, processing_status, error_code, error_message, retry_count, next_attempt_at,
       batch_id, transaction_id, account_id, amount, transaction_type, ingestion_timestamp
FROM financial_transactions_staging
WHERE processing_status IN ('failed', 'dead_letter')
  AND (%(filter)s::text IS NULL
       OR processing_status = %(filter)s
       OR error_code ILIKE %(like)s
       OR error_message ILIKE %(like)s
       OR batch_id ILIKE %(like)s
       OR staging_id::text = %(filter)s
       OR transaction_id::text = %(filter)s)
ORDER BY processing_status = 'dead_letter', next_attempt_at NULLS LAST, staging_id
LIMIT %(limit)s
