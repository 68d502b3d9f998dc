-- Backlog drill-down: operator actions whose arguments name this row, its batch or its error code.
SELECT occurred_at, actor, action, status, arguments, result
FROM ops_audit_log
WHERE arguments -> 'staging_ids' @> to_jsonb(%(id)s::bigint)
   OR arguments ->> 'batch_id' = %(batch_id)s
   OR arguments ->> 'error_code' = %(error_code)s
ORDER BY occurred_at DESC
LIMIT 20
