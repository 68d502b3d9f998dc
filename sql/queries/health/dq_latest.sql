-- Health snapshot (ops/health.py): the latest result of every active rule that has run; passed is
-- dq_latest_results' definition (pass or warn).
SELECT d.rule_name, d.table_name, d.severity, d.last_passed AS passed, d.last_status AS status,
       d.last_checked_at AS checked_at
FROM dq_latest_results d
WHERE d.is_active AND d.last_status IS NOT NULL
ORDER BY d.rule_name
