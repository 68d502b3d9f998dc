-- Data quality pane: every rule with its latest result and recent trend (dq_latest_results),
-- failing or erroring rules first, then by severity.
SELECT rule_name, table_name, rule_type, severity, is_active, threshold_value,
       last_score AS score, last_status AS status, last_checked_at AS check_timestamp,
       last_message AS message, recent_scores AS recent
FROM dq_latest_results
ORDER BY coalesce(last_status IN ('fail', 'error'), false) DESC,
         CASE severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
         rule_name
