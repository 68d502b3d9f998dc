-- Health snapshot (ops/health.py): the financial pipeline from maintained sources alone, never from
-- staging rows. Staging rows by state come from financial_staging_counts (kept exact by the
-- transactions that change staging; a few rows to sum whatever the size of staging or of the
-- rollup's retention); processed rows, SLA breaches and the latency sum there only ever grow. The SLA
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
FROM (SELECT coalesce(sum(n.pending), 0)::bigint AS pending,
             coalesce(sum(n.processed), 0)::bigint AS processed,
             coalesce(sum(n.failed), 0)::bigint AS failed,
             coalesce(sum(n.dead_letter), 0)::bigint AS dead_letter,
             coalesce(sum(n.duplicate), 0)::bigint AS duplicate,
             coalesce(sum(n.sla_breaches), 0)::bigint AS sla_breaches,
             coalesce(sum(n.latency_sum_ms), 0)::bigint AS latency_sum_ms
      FROM financial_staging_counts n) c
CROSS JOIN (SELECT coalesce(sum(r.sla_breaches), 0)::bigint AS breaches,
                   coalesce(sum(r.total_transactions - r.pending_count), 0)::bigint AS done
            FROM financial_processing_rollup r
            WHERE r.minute_bucket >= date_trunc('minute', now()) - (%(window_minutes)s - 1) * interval '1 minute') recent
LEFT JOIN LATERAL (SELECT r.minute_bucket
                   FROM financial_processing_rollup r
                   WHERE r.pending_count > 0 AND c.pending > 0
                   ORDER BY r.minute_bucket
                   LIMIT 1) oldest ON true
