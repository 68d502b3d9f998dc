-- Health snapshot (ops/health.py): the financial pipeline from maintained sources alone, never from
-- staging rows. Staging rows by state come from financial_staging_totals (the sum of the counts that
-- the transactions changing staging keep exact; a few rows to sum whatever the size of staging or of
-- the rollup's retention); processed rows, SLA breaches and the latency sum there only ever grow. The SLA
-- breach ratio is the monitor's definition (financial_processing_monitor: breaches per row no longer
-- pending) over the last few (a parameter) ingestion minutes of the per-minute rollup, read by its key.
-- The oldest pending age has minute resolution: it counts from the start of the oldest rollup minute
-- that still holds a pending row.
SELECT c.pending, c.processed, c.failed, c.dead_letter, c.duplicate, c.sla_breaches, c.latency_sum_ms,
       recent.breaches AS recent_breaches,
       recent.done AS recent_done,
       greatest(extract(epoch FROM now() - oldest.minute_bucket), 0)::float8 AS oldest_pending_age_s,
       (SELECT s.sla_ms FROM financial_pipeline_settings s) AS sla_ms,
       now() AS at
FROM financial_staging_totals c
CROSS JOIN (SELECT coalesce(sum(r.sla_breaches), 0)::bigint AS breaches,
                   coalesce(sum(r.total_transactions - r.pending_count), 0)::bigint AS done
            FROM financial_processing_rollup r
            WHERE r.minute_bucket >= date_trunc('minute', now()) - (%(window_minutes)s - 1) * interval '1 minute') recent
LEFT JOIN LATERAL (SELECT r.minute_bucket
                   FROM financial_processing_rollup r
                   WHERE r.pending_count > 0 AND c.pending > 0
                   ORDER BY r.minute_bucket
                   LIMIT 1) oldest ON true
