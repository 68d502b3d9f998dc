-- DQ rules with their latest result and recent trend (opsconsole dq rules, the console's DQ pane).
SELECT rule_id, rule_name, table_name, rule_type, severity, threshold_value, is_active, definition,
       last_run_id, last_checked_at, last_status, last_passed, last_score, last_message,
       previous_score, score_change, recent_scores, recent_statuses, recent_pass_rate
FROM dq_latest_results
WHERE (%(table)s::text IS NULL OR table_name = %(table)s::text)
  AND (%(include_inactive)s OR is_active)
ORDER BY table_name, rule_name
