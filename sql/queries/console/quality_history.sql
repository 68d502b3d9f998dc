-- Data quality pane: one rule's recent results.
SELECT check_timestamp, metric_value, threshold_value, status, details
FROM data_quality_metrics
WHERE metric_name = %(rule)s
ORDER BY check_timestamp DESC
LIMIT 50
