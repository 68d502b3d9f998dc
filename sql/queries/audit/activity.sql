-- Activity pane: the newest actions people took first. A pipeline worker's per-chunk batch rows
-- (application_name opsconsole:worker-N) are left out; the partial index ops_audit_log_people_idx
-- (migration 0017_indexes_concurrently) serves this read with the same predicate.
SELECT audit_id, occurred_at, actor, application_name, action, arguments, result, status,
       duration_ms, reason
FROM ops_audit_log
WHERE coalesce(application_name, '') NOT LIKE 'opsconsole:worker-%%'  -- %% for psycopg's placeholders
ORDER BY occurred_at DESC, audit_id DESC
LIMIT %(limit)s
