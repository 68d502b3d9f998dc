-- Monitor pane: each connected pipeline worker loop (sessions named opsconsole:worker or
-- opsconsole:worker-*; `loop` says claim or maintenance, worker_loop()): who, since when, what it
-- is doing now, and what its batch audit rows say about the last minute (rows claimed, chunks) and
-- its latest chunk. Audit rows are matched by application_name (and actor), read through
-- ops_audit_log_occurred_idx for the last minute only.
WITH recent AS (
    SELECT a.application_name, a.actor, a.occurred_at,
           coalesce((a.result ->> 'claimed_count')::bigint, 0) AS claimed,
           coalesce((a.result ->> 'chunk_count')::bigint, 0) AS chunks,
           a.duration_ms
    FROM ops_audit_log a
    WHERE a.occurred_at >= now() - interval '1 minute'
      AND a.action = 'process_financial_batch'
      AND starts_with(a.application_name, 'opsconsole:worker')
)
SELECT s.pid,
       s.application_name,
       worker_loop(s.application_name) AS loop,
       s.usename::text AS actor,
       coalesce(host(s.client_addr), 'local') AS client,
       s.backend_start,
       s.state,
       CASE WHEN s.state = 'active' THEN s.query_start END AS chunk_started,
       coalesce(w.claimed, 0) AS claimed_last_minute,
       coalesce(w.chunks, 0) AS chunks_last_minute,
       l.claimed AS last_chunk_rows,
       l.duration_ms AS last_chunk_ms,
       l.occurred_at AS last_chunk_at
FROM pg_stat_activity s
LEFT JOIN LATERAL (
    SELECT sum(r.claimed) AS claimed, sum(r.chunks) AS chunks
    FROM recent r
    WHERE r.application_name = s.application_name AND r.actor = s.usename
) w ON true
LEFT JOIN LATERAL (
    SELECT r.claimed, r.duration_ms, r.occurred_at
    FROM recent r
    WHERE r.application_name = s.application_name AND r.actor = s.usename
    ORDER BY r.occurred_at DESC
    LIMIT 1
) l ON true
WHERE worker_loop(s.application_name) IS NOT NULL
ORDER BY loop, s.application_name, s.pid
