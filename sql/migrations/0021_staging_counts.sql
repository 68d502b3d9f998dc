-- 0021: staging rows by state, maintained, so that nothing that watches the pipeline (a console's
-- refresh, the on-call watcher, the exporter) counts open staging rows: 3M open rows cost a console
-- about 80-100 ms of server CPU per second when each refresh counted them (issue 18, P9).
-- (Tables and data only; financial_rollup_apply() and financial_staging_counts_fold() in
-- sql/definitions keep it.)
SET lock_timeout = '5s';
SET statement_timeout = '30min';

-- One row per backend that changed staging (backend_pid), plus the carry (backend_pid 0) into which
-- the rows of backends that are gone are folded. A transaction only ever updates its own backend's
-- row, so concurrent workers and loaders never wait for each other here (and cannot deadlock on it);
-- a reader sums a few dozen rows. Open states (pending, failed, dead_letter) are staging rows now;
-- processed, duplicate, sla_breaches, latency_* only ever grow (the purge drops done rows, not counts).
CREATE TABLE financial_staging_counts (
    backend_pid       integer PRIMARY KEY,
    total             bigint NOT NULL DEFAULT 0,
    pending           bigint NOT NULL DEFAULT 0,
    processed         bigint NOT NULL DEFAULT 0,
    failed            bigint NOT NULL DEFAULT 0,
    dead_letter       bigint NOT NULL DEFAULT 0,
    duplicate         bigint NOT NULL DEFAULT 0,
    latency_count     bigint NOT NULL DEFAULT 0,
    latency_sum_ms    bigint NOT NULL DEFAULT 0,
    sla_breaches      bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE financial_staging_counts IS
    'Staging rows by state, maintained by financial_rollup_apply (one row per writing backend, 0 = carry); sum the rows.';

-- The carry starts exact: open states counted from staging, the growing totals from the rollups,
-- with writers held off (SHARE) while counting. The function that keeps it comes with the definitions
-- pass right after this file: upgrade with the workers and loaders stopped, as the release notes say
-- for every upgrade, so that no chunk commits in between with the previous function.
LOCK TABLE financial_transactions_staging IN SHARE MODE;
LOCK TABLE financial_processing_rollup IN SHARE MODE;
INSERT INTO financial_staging_counts (backend_pid, total, pending, processed, failed, dead_letter, duplicate,
                                      latency_count, latency_sum_ms, sla_breaches)
SELECT 0, coalesce(r.total, 0), s.pending, coalesce(r.processed, 0), s.failed, s.dead_letter,
       coalesce(r.duplicate, 0), coalesce(r.latency_count, 0), coalesce(r.latency_sum_ms, 0),
       coalesce(r.sla_breaches, 0)
FROM (SELECT count(*) FILTER (WHERE processing_status = 'pending') AS pending,
             count(*) FILTER (WHERE processing_status = 'failed') AS failed,
             count(*) FILTER (WHERE processing_status = 'dead_letter') AS dead_letter
      FROM financial_transactions_staging
      WHERE processing_status IN ('pending', 'failed', 'dead_letter')) s
CROSS JOIN (SELECT sum(total_transactions) AS total, sum(processed_count) AS processed,
                   sum(duplicate_count) AS duplicate, sum(latency_count) AS latency_count,
                   sum(latency_sum_ms) AS latency_sum_ms, sum(sla_breaches) AS sla_breaches
            FROM financial_processing_rollup) r;
