-- Data quality pane: one rule's recent results, newest first (every column the metrics table has).
SELECT to_jsonb(m) AS row
FROM data_quality_metrics m
WHERE m.metric_name = %(rule)s
ORDER BY m.check_timestamp DESC
LIMIT 50
