-- Data quality pane, from the contract tables alone: every defined rule with its latest result and the
-- scores of its recent runs. Failing or erroring rules first, then by severity; never-run rules show
-- with no result.
SELECT r.rule_name, r.table_name, r.rule_type, r.severity, r.is_active,
       coalesce(l.threshold_value, r.threshold_value) AS threshold_value,
       l.metric_value AS score, l.status, l.check_timestamp, NULL::text AS message,
       t.recent
FROM dq_rule_definitions r
LEFT JOIN LATERAL (
    SELECT m.metric_value, m.threshold_value, m.status, m.check_timestamp
    FROM data_quality_metrics m
    WHERE m.metric_name = r.rule_name
    ORDER BY m.check_timestamp DESC
    LIMIT 1
) l ON true
LEFT JOIN LATERAL (
    SELECT array_agg(x.metric_value ORDER BY x.check_timestamp) AS recent
    FROM (SELECT m.metric_value, m.check_timestamp
          FROM data_quality_metrics m
          WHERE m.metric_name = r.rule_name
          ORDER BY m.check_timestamp DESC
          LIMIT 10) x
) t ON true
ORDER BY coalesce(l.status IN ('fail', 'error'), false) DESC,
         CASE r.severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END,
         r.rule_name
