-- Backlog pane: failed, dead-lettered and parked rows by error code.
SELECT coalesce(error_code, '(none)') AS error_code,
       count(*) FILTER (WHERE processing_status = 'failed') AS failed,
       count(*) FILTER (WHERE processing_status = 'dead_letter') AS dead_letter,
       count(*) FILTER (WHERE processing_status = 'parked') AS parked,
       min(next_attempt_at) FILTER (WHERE processing_status = 'failed') AS next_due,
       max(retry_count) AS max_retries
FROM financial_transactions_staging
WHERE processing_status IN ('failed', 'dead_letter', 'parked')
GROUP BY 1
ORDER BY count(*) DESC, 1
LIMIT 12
