-- 32_staging_counts.sql: staging rows by state, maintained (financial_staging_counts, 0021), so that
-- watching the pipeline never counts staging rows (issue 18, P9).
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.

-- Called by financial_rollup_apply() with the same deltas, so every change of a staging row's state
-- that the rollups see is counted here too, and also those the rollups drop: a minute older than
-- rollup_retention (a dead letter from long ago retried) still moves the counts. The row is this
-- backend's own, so concurrent writers never wait for each other here.
CREATE OR REPLACE FUNCTION financial_staging_counts_apply(p_deltas jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    INSERT INTO financial_staging_counts AS c (
        backend_pid, total, pending, processed, failed, dead_letter, duplicate,
        latency_count, latency_sum_ms, sla_breaches, updated_at)
    SELECT pg_backend_pid(),
           coalesce(sum(d.total_delta), 0), coalesce(sum(d.pending_delta), 0),
           coalesce(sum(d.processed_delta), 0), coalesce(sum(d.failed_delta), 0),
           coalesce(sum(d.dead_letter_delta), 0), coalesce(sum(d.duplicate_delta), 0),
           coalesce(sum(d.latency_count), 0), coalesce(sum(d.latency_sum_ms), 0),
           coalesce(sum(d.sla_breaches), 0), clock_timestamp()
    FROM jsonb_to_recordset(p_deltas) AS d(
        total_delta bigint, pending_delta bigint, processed_delta bigint, failed_delta bigint,
        dead_letter_delta bigint, duplicate_delta bigint, latency_count bigint, latency_sum_ms bigint,
        sla_breaches bigint)
    ON CONFLICT (backend_pid) DO UPDATE SET
        total          = c.total + EXCLUDED.total,
        pending        = c.pending + EXCLUDED.pending,
        processed      = c.processed + EXCLUDED.processed,
        failed         = c.failed + EXCLUDED.failed,
        dead_letter    = c.dead_letter + EXCLUDED.dead_letter,
        duplicate      = c.duplicate + EXCLUDED.duplicate,
        latency_count  = c.latency_count + EXCLUDED.latency_count,
        latency_sum_ms = c.latency_sum_ms + EXCLUDED.latency_sum_ms,
        sla_breaches   = c.sla_breaches + EXCLUDED.sla_breaches,
        updated_at     = EXCLUDED.updated_at;
END;
$$;


-- Folds the rows of backends that are gone into the carry (backend_pid 0), so the table stays as
-- small as the set of live writers. Exact under concurrency: a new backend that reuses a folded pid
-- waits for the delete's row lock and then inserts a fresh row (ON CONFLICT sees the row gone).
-- purge_financial_staging() calls it; returns how many rows were folded.
CREATE OR REPLACE FUNCTION financial_staging_counts_fold()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_n integer;
BEGIN
    WITH gone AS (
        DELETE FROM financial_staging_counts c
        WHERE c.backend_pid <> 0
          AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.backend_pid)
        RETURNING c.*
    ),
    folded AS (
        INSERT INTO financial_staging_counts AS z (
            backend_pid, total, pending, processed, failed, dead_letter, duplicate,
            latency_count, latency_sum_ms, sla_breaches, updated_at)
        SELECT 0, coalesce(sum(g.total), 0), coalesce(sum(g.pending), 0), coalesce(sum(g.processed), 0),
               coalesce(sum(g.failed), 0), coalesce(sum(g.dead_letter), 0), coalesce(sum(g.duplicate), 0),
               coalesce(sum(g.latency_count), 0), coalesce(sum(g.latency_sum_ms), 0),
               coalesce(sum(g.sla_breaches), 0), clock_timestamp()
        FROM gone g
        HAVING count(*) > 0
        ON CONFLICT (backend_pid) DO UPDATE SET
            total          = z.total + EXCLUDED.total,
            pending        = z.pending + EXCLUDED.pending,
            processed      = z.processed + EXCLUDED.processed,
            failed         = z.failed + EXCLUDED.failed,
            dead_letter    = z.dead_letter + EXCLUDED.dead_letter,
            duplicate      = z.duplicate + EXCLUDED.duplicate,
            latency_count  = z.latency_count + EXCLUDED.latency_count,
            latency_sum_ms = z.latency_sum_ms + EXCLUDED.latency_sum_ms,
            sla_breaches   = z.sla_breaches + EXCLUDED.sla_breaches,
            updated_at     = EXCLUDED.updated_at
        RETURNING 1
    )
    SELECT count(*) INTO v_n FROM gone;   -- (folded runs too: a data-modifying WITH always does)
    RETURN v_n;
END;
$$;

-- The sum of the maintained counts: staging rows by state now, whatever backends wrote them. The one
-- place that adds up financial_staging_counts; every reader (Monitor, Backlog, health, reconcile) reads
-- this single row. `backends` is how many rows were summed, `updated_at` the last change of any of them
-- (a fingerprint: while it stands still, no staging row changed state).
CREATE OR REPLACE VIEW financial_staging_totals AS
SELECT count(*)::bigint                           AS backends,
       coalesce(sum(n.total), 0)::bigint          AS total,
       coalesce(sum(n.pending), 0)::bigint        AS pending,
       coalesce(sum(n.processed), 0)::bigint      AS processed,
       coalesce(sum(n.failed), 0)::bigint         AS failed,
       coalesce(sum(n.dead_letter), 0)::bigint    AS dead_letter,
       coalesce(sum(n.duplicate), 0)::bigint      AS duplicate,
       coalesce(sum(n.latency_count), 0)::bigint  AS latency_count,
       coalesce(sum(n.latency_sum_ms), 0)::bigint AS latency_sum_ms,
       coalesce(sum(n.sla_breaches), 0)::bigint   AS sla_breaches,
       max(n.updated_at)                          AS updated_at
FROM financial_staging_counts n;
COMMENT ON VIEW financial_staging_totals IS
    'Staging rows by state now: the one sum over financial_staging_counts (maintained; never counts staging).';


-- How far the maintained counts of the open states are from a count of staging: real minus
-- maintained, both read in one statement (one snapshot). Every writer that counts its changes moves
-- both sides in its own transaction, so a difference is a writer that did not: a loader that staged
-- rows without its arrival call (opsconsole.pipeline.arrival), a state changed by hand. reconcile
-- reports it (staging_counts_drift) and recount_financial_staging() corrects it.
CREATE OR REPLACE FUNCTION financial_staging_counts_drift(
    OUT pending_delta bigint, OUT failed_delta bigint, OUT dead_letter_delta bigint)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT r.pending - n.pending, r.failed - n.failed, r.dead_letter - n.dead_letter
    FROM financial_staging_totals n
    CROSS JOIN (SELECT count(*) FILTER (WHERE s.processing_status = 'pending') AS pending,
                       count(*) FILTER (WHERE s.processing_status = 'failed') AS failed,
                       count(*) FILTER (WHERE s.processing_status = 'dead_letter') AS dead_letter
                FROM financial_transactions_staging s
                WHERE s.processing_status IN ('pending', 'failed', 'dead_letter')) r;
$$;


-- The operator's correction after reconcile reported staging_counts_drift: the difference, taken in
-- one snapshot, is added to the maintained counts. Writers need not stop: a writer that counts its
-- changes moves both sides alike, so the difference is the same whenever it is applied. The
-- per-minute rollups keep what they had (they are the Monitor's history, not a count of staging
-- now). Audited as recount_financial_staging; returns the corrections applied (0 when none).
CREATE OR REPLACE FUNCTION recount_financial_staging(
    OUT pending_delta bigint, OUT failed_delta bigint, OUT dead_letter_delta bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
BEGIN
    SELECT d.pending_delta, d.failed_delta, d.dead_letter_delta
    INTO pending_delta, failed_delta, dead_letter_delta
    FROM financial_staging_counts_drift() d;
    IF pending_delta <> 0 OR failed_delta <> 0 OR dead_letter_delta <> 0 THEN
        PERFORM financial_staging_counts_apply(jsonb_build_array(jsonb_build_object(
            'total_delta', pending_delta + failed_delta + dead_letter_delta,
            'pending_delta', pending_delta, 'failed_delta', failed_delta,
            'dead_letter_delta', dead_letter_delta)));
    END IF;
    PERFORM record_audit(
        'recount_financial_staging', '{}'::jsonb,
        jsonb_build_object('pending_delta', pending_delta, 'failed_delta', failed_delta,
                           'dead_letter_delta', dead_letter_delta),
        'ok', round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3), NULL);
END;
$$;
