-- Activity pane: the newest operator actions first (ops_audit_log_occurred_idx serves the ORDER BY).
SELECT audit_id, occurred_at, actor, application_name, action, arguments, result, status,
       duration_ms, reason
FROM ops_audit_log
ORDER BY occurred_at DESC, audit_id DESC
LIMIT %(limit)s
