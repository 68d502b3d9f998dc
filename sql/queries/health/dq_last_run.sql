-- Health snapshot (ops/health.py): seconds since the newest finished DQ run ended (no row: never ran).
SELECT greatest(extract(epoch FROM now() - r.finished_at), 0)::float8 AS age_s
FROM dq_runs r
WHERE r.finished_at IS NOT NULL
ORDER BY r.started_at DESC
LIMIT 1
