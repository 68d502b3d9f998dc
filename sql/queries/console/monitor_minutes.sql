-- Monitor pane: the per-minute rollup of the last hour, newest minute first.
SELECT minute_bucket, total_transactions, processed_count, failed_count, pending_count,
       avg_processing_ms, max_processing_ms, p95_processing_ms, sla_breach_rate
FROM financial_processing_monitor
ORDER BY minute_bucket DESC
LIMIT 60
