-- Monitor pane: the pipeline's pace since the start of the previous minute, for the drain estimate:
-- rows claimed by batches (their audit rows, whoever ran them; ops_audit_log_occurred_idx) and rows
-- that arrived (the per-minute rollups, whose buckets start at the same minute), and the seconds
-- that span covers.
WITH span AS (
    SELECT date_trunc('minute', now()) - interval '1 minute' AS since, now() AS until
)
SELECT (SELECT coalesce(sum((a.result ->> 'claimed_count')::bigint), 0)
        FROM ops_audit_log a
        WHERE a.occurred_at >= span.since
          AND a.action = 'process_financial_batch') AS claimed,
       (SELECT coalesce(sum(r.total_transactions), 0)
        FROM financial_processing_rollup r
        WHERE r.minute_bucket >= span.since) AS arrived,
       extract(epoch FROM span.until - span.since)::double precision AS seconds
FROM span
