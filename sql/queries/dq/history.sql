-- One DQ rule's results, newest first (opsconsole dq history RULE).
SELECT m.run_id, m.check_timestamp AS checked_at, m.status, round(m.metric_value, 4) AS score,
       m.threshold_value, m.total_rows, m.failed_rows, m.duration_ms, m.message
FROM data_quality_metrics m
WHERE m.metric_name = %(rule)s AND m.run_id IS NOT NULL
ORDER BY m.metric_id DESC
LIMIT %(limit)s
