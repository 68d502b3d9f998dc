-- Health snapshot (ops/health.py): the financial pipeline from its per-minute rollup alone, never from
-- staging rows. The rollup holds, per ingestion minute, how many of that minute's rows are in each state
-- now (kept exact by the transactions that change staging), so summing it gives staging rows by state;
-- processed rows and SLA breaches only ever grow. The SLA breach ratio is the monitor's definition
-- (financial_processing_monitor: breaches per row no longer pending) over the last few (a parameter)
-- ingestion minutes. The oldest pending age has minute resolution: it counts from the start of the
-- oldest minute that still holds a pending row.
SELECT coalesce(sum(r.pending_count), 0)::bigint AS pending,
       coalesce(sum(r.processed_count), 0)::bigint AS processed,
       coalesce(sum(r.failed_count), 0)::bigint AS failed,
       coalesce(sum(r.dead_letter_count), 0)::bigint AS dead_letter,
       coalesce(sum(r.duplicate_count), 0)::bigint AS duplicate,
       coalesce(sum(r.sla_breaches), 0)::bigint AS sla_breaches,
       coalesce(sum(r.latency_sum_ms), 0)::bigint AS latency_sum_ms,
       coalesce(sum(r.sla_breaches) FILTER (WHERE r.minute_bucket >= w.since), 0)::bigint AS recent_breaches,
       coalesce(sum(r.total_transactions - r.pending_count) FILTER (WHERE r.minute_bucket >= w.since), 0)::bigint
           AS recent_done,
       greatest(extract(epoch FROM now() - min(r.minute_bucket) FILTER (WHERE r.pending_count > 0)), 0)::float8
           AS oldest_pending_age_s,
       (SELECT s.sla_ms FROM financial_pipeline_settings s) AS sla_ms,
       now() AS at
FROM (SELECT date_trunc('minute', now()) - (%(window_minutes)s - 1) * interval '1 minute' AS since) w
LEFT JOIN financial_processing_rollup r ON true
GROUP BY w.since
