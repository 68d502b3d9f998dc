-- 30_pipeline.sql: Financial pipeline: settings check, arrivals rollups, fraud score, chunk apply, batch processing, retry,
-- retention and the staging partitions.
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.

-- An unknown zone name would only fail later, inside a chunk; refuse it at the door instead.
CREATE OR REPLACE FUNCTION financial_pipeline_settings_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM now() AT TIME ZONE NEW.business_time_zone;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER financial_pipeline_settings_check BEFORE INSERT OR UPDATE ON financial_pipeline_settings
    FOR EACH ROW EXECUTE FUNCTION financial_pipeline_settings_check();


-- Which loop of a pipeline worker a session is, by its application_name: 'claim' for the loops
-- that process (opsconsole:worker, opsconsole:worker-0, ..., the console's worker-console),
-- 'maintenance' for a worker's daily maintenance loop (opsconsole:worker-maintenance), NULL for any
-- other session. The one rule the Monitor's workers and the no-worker alert read: an idle
-- maintenance loop alone is not a worker that processes.
CREATE OR REPLACE FUNCTION worker_loop(p_application_name text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE WHEN p_application_name IS DISTINCT FROM 'opsconsole:worker'
                     AND NOT starts_with(p_application_name, 'opsconsole:worker-') THEN NULL
                WHEN right(p_application_name, 12) = '-maintenance' THEN 'maintenance'
                ELSE 'claim' END;
$$;


-- Lower bounds (ms) of the latency histogram buckets; finer around the 1 s SLA.
CREATE OR REPLACE FUNCTION financial_latency_bounds()
RETURNS integer[]
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT ARRAY[0, 1, 2, 5, 10, 20, 50, 100, 150, 200, 300, 400, 500, 600, 700, 800, 900, 1000,
                 1200, 1500, 2000, 3000, 5000, 10000, 30000, 60000, 300000, 3600000];
$$;


-- The one way a staging row's change of state is counted. p_deltas is a JSON array of per-minute
-- deltas (any subset of the keys): they move the maintained counts of staging rows by state
-- (32_staging_counts.sql) and the per-minute rollups (financial_rollup_minutes_apply).
CREATE OR REPLACE FUNCTION financial_rollup_apply(p_deltas jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET jit = off   -- JIT compiled the chunk's statements for 12x their cost (Debian's PostgreSQL 15)
AS $$
BEGIN
    IF p_deltas IS NULL OR jsonb_array_length(p_deltas) = 0 THEN
        RETURN;
    END IF;
    PERFORM financial_staging_counts_apply(p_deltas);
    PERFORM financial_rollup_minutes_apply(p_deltas);
END;
$$;


-- The per-minute rollups alone: what financial_rollup_apply writes besides the counts, and all that
-- history without staging rows behind it may write (the demo's backfilled hour: through
-- financial_rollup_apply it would count rows that are not in staging). Rows are applied in minute
-- order so that concurrent writers lock rollup rows in the same order. Minutes older than
-- rollup_retention are left alone: the purge deletes them, so a delta there (a retried or late row
-- from long ago) would create the minute anew holding only the delta: negative counts. The monitor
-- reads the last hour; nothing reads a minute past the retention.
CREATE OR REPLACE FUNCTION financial_rollup_minutes_apply(p_deltas jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET jit = off   -- JIT compiled the chunk's statements for 12x their cost (Debian's PostgreSQL 15)
AS $$
BEGIN
    INSERT INTO financial_processing_rollup AS r (
        minute_bucket, total_transactions, pending_count, processed_count, failed_count, dead_letter_count,
        duplicate_count, latency_count, latency_sum_ms, latency_max_ms, sla_breaches, updated_at)
    SELECT d.minute_bucket,
           sum(coalesce(d.total_delta, 0)), sum(coalesce(d.pending_delta, 0)),
           sum(coalesce(d.processed_delta, 0)), sum(coalesce(d.failed_delta, 0)),
           sum(coalesce(d.dead_letter_delta, 0)), sum(coalesce(d.duplicate_delta, 0)),
           sum(coalesce(d.latency_count, 0)), sum(coalesce(d.latency_sum_ms, 0)), max(d.latency_max_ms),
           sum(coalesce(d.sla_breaches, 0)), clock_timestamp()
    FROM jsonb_to_recordset(p_deltas) AS d(
        minute_bucket timestamptz, total_delta bigint, pending_delta bigint, processed_delta bigint,
        failed_delta bigint, dead_letter_delta bigint, duplicate_delta bigint, latency_count bigint,
        latency_sum_ms bigint, latency_max_ms integer, sla_breaches bigint)
    WHERE d.minute_bucket >= now() - (SELECT s.rollup_retention FROM financial_pipeline_settings s)
    GROUP BY d.minute_bucket
    ORDER BY d.minute_bucket
    ON CONFLICT (minute_bucket) DO UPDATE SET
        total_transactions = r.total_transactions + EXCLUDED.total_transactions,
        pending_count      = r.pending_count + EXCLUDED.pending_count,
        processed_count    = r.processed_count + EXCLUDED.processed_count,
        failed_count       = r.failed_count + EXCLUDED.failed_count,
        dead_letter_count  = r.dead_letter_count + EXCLUDED.dead_letter_count,
        duplicate_count    = r.duplicate_count + EXCLUDED.duplicate_count,
        latency_count      = r.latency_count + EXCLUDED.latency_count,
        latency_sum_ms     = r.latency_sum_ms + EXCLUDED.latency_sum_ms,
        latency_max_ms     = greatest(r.latency_max_ms, EXCLUDED.latency_max_ms),
        sla_breaches       = r.sla_breaches + EXCLUDED.sla_breaches,
        updated_at         = EXCLUDED.updated_at;
END;
$$;


-- p_hist: JSON array of {minute_bucket, bucket_lower_ms, bucket_upper_ms, row_count}. Minutes older
-- than rollup_retention are left alone, as in financial_rollup_apply.
CREATE OR REPLACE FUNCTION financial_latency_apply(p_hist jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET jit = off   -- JIT compiled the chunk's statements for 12x their cost (Debian's PostgreSQL 15)
AS $$
BEGIN
    IF p_hist IS NULL OR jsonb_array_length(p_hist) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO financial_latency_rollup AS r (minute_bucket, bucket_lower_ms, bucket_upper_ms, row_count)
    SELECT h.minute_bucket, h.bucket_lower_ms, max(h.bucket_upper_ms), sum(h.row_count)
    FROM jsonb_to_recordset(p_hist) AS h(minute_bucket timestamptz, bucket_lower_ms integer,
                                          bucket_upper_ms integer, row_count bigint)
    WHERE h.minute_bucket >= now() - (SELECT s.rollup_retention FROM financial_pipeline_settings s)
    GROUP BY h.minute_bucket, h.bucket_lower_ms
    ORDER BY h.minute_bucket, h.bucket_lower_ms
    ON CONFLICT (minute_bucket, bucket_lower_ms) DO UPDATE SET row_count = r.row_count + EXCLUDED.row_count;
END;
$$;


------------------------------------------------------------------------------------------------------
-- Arrivals: the loaders count what they stage and wake the workers, in the staging transaction
------------------------------------------------------------------------------------------------------
-- Called by every loader of staging in the transaction that stages the rows (opsconsole.pipeline.
-- arrival: the product's loaders, the tools, the tests), not by a trigger: a statement trigger with a
-- transition table cost about 2 us a staged row (a quarter of COPY's time, issue 18, P1), and Citus
-- runs no trigger on a distributed table's coordinator (docs/scaling.md, "Triggers"). p_counts is a
-- JSON array of {minute_bucket, total_delta, pending_delta, processed_delta, failed_delta,
-- dead_letter_delta, duplicate_delta}: the staged rows by ingestion minute and state. A missing
-- minute_bucket is this transaction's minute (rows staged with the default ingestion time). Only
-- those keys are read, so an arrival cannot move latency figures. A loader that stages rows without
-- this call leaves the counts short: reconcile reports it as staging_counts_drift.
-- Returns the number of rows counted.
CREATE OR REPLACE FUNCTION financial_staging_arrived(p_counts jsonb, p_note jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET jit = off   -- JIT compiled the chunk's statements for 12x their cost (Debian's PostgreSQL 15)
AS $$
DECLARE
    v_deltas jsonb;
    v_rows   bigint;
BEGIN
    IF p_counts IS NULL OR jsonb_typeof(p_counts) <> 'array' THEN
        RAISE EXCEPTION 'financial_staging_arrived: p_counts must be a JSON array of per-minute counts'
            USING ERRCODE = '22023';
    END IF;
    SELECT jsonb_agg(to_jsonb(d)), sum(d.total_delta)
    INTO v_deltas, v_rows
    FROM (
        SELECT coalesce(c.minute_bucket,
                        date_trunc('minute', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') AS minute_bucket,
               c.total_delta, c.pending_delta, c.processed_delta, c.failed_delta, c.dead_letter_delta,
               c.duplicate_delta
        FROM jsonb_to_recordset(p_counts) AS c(
            minute_bucket timestamptz, total_delta bigint, pending_delta bigint, processed_delta bigint,
            failed_delta bigint, dead_letter_delta bigint, duplicate_delta bigint)
        WHERE c.total_delta > 0
    ) d;
    IF v_rows IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM financial_rollup_apply(v_deltas);
    PERFORM pg_notify('opsconsole_staging',
                      (coalesce(p_note, '{}'::jsonb) || jsonb_build_object('rows', v_rows))::text);
    RETURN v_rows;
END;
$$;


------------------------------------------------------------------------------------------------------
-- The fraud score: one definition
------------------------------------------------------------------------------------------------------
-- The score from its inputs, for a whole set of transactions in one call (a chunk: one call, not
-- one per row; each call of a function costs its SET search_path, a GUC save and restore).
-- detect_fraud_indicators (one row) and the chunk both compute the window statistics and call
-- this, so the formula exists once:
--   velocity  = min(10 per transaction of the account in [ts - window, ts), 50)
--   deviation = min(|amount - avg| / avg * 20, 30), rounded to 2 places; 0 when there is no history
--   +20 when |amount| > 50,000; +10 outside business hours; +5 on Saturday/Sunday
-- Hours and weekdays are read in the configured time zone, never the server's or the session's.
-- The arrays are parallel, one element per transaction; p_keys comes back beside each score.
CREATE OR REPLACE FUNCTION financial_fraud_scores(
    p_keys bigint[],
    p_amount numeric[],
    p_transaction_timestamp timestamptz[],
    p_recent_count bigint[],
    p_recent_avg_abs numeric[],
    p_time_zone text,
    p_business_hour_start integer,
    p_business_hour_end integer
)
RETURNS TABLE(key bigint, risk_score numeric(5,2))
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT u.key,
           least(
               least(coalesce(u.recent_count, 0) * 10, 50)
               + CASE WHEN coalesce(u.recent_avg_abs, 0) > 0
                      THEN round(least(abs(u.amount - u.recent_avg_abs) / u.recent_avg_abs * 20, 30), 2)
                      ELSE 0 END
               + CASE WHEN abs(u.amount) > 50000 THEN 20 ELSE 0 END
               + CASE WHEN extract(hour FROM u.ts AT TIME ZONE p_time_zone)
                           NOT BETWEEN p_business_hour_start AND p_business_hour_end THEN 10 ELSE 0 END
               + CASE WHEN extract(isodow FROM u.ts AT TIME ZONE p_time_zone) IN (6, 7) THEN 5 ELSE 0 END,
               100)::numeric(5,2)
    FROM unnest(p_keys, p_amount, p_transaction_timestamp, p_recent_count, p_recent_avg_abs)
         AS u(key, amount, ts, recent_count, recent_avg_abs);
$$;


-- The spec's entry point: the account's processed history in [ts - window, ts), event time, then
-- the one score. A first transaction (no history) gets velocity 0 and deviation 0.
CREATE OR REPLACE FUNCTION detect_fraud_indicators(
    p_account_id bigint,
    p_amount numeric,
    p_transaction_timestamp timestamptz,
    p_transaction_type varchar
)
RETURNS numeric(5,2)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_cfg   financial_pipeline_settings;
    v_count bigint;
    v_avg   numeric;
BEGIN
    SELECT * INTO v_cfg FROM financial_pipeline_settings;
    SELECT count(*), avg(p.amount_abs)
    INTO v_count, v_avg
    FROM financial_transactions_processed p
    WHERE p.account_id = p_account_id
      AND p.transaction_timestamp >= p_transaction_timestamp - v_cfg.fraud_window
      AND p.transaction_timestamp < p_transaction_timestamp;
    RETURN (SELECT f.risk_score
            FROM financial_fraud_scores(ARRAY[0]::bigint[], ARRAY[p_amount], ARRAY[p_transaction_timestamp],
                                        ARRAY[v_count], ARRAY[v_avg], v_cfg.business_time_zone,
                                        v_cfg.business_hour_start, v_cfg.business_hour_end) f);
END;
$$;


------------------------------------------------------------------------------------------------------
-- Failure handling: one definition of "what happens to a row that failed"
------------------------------------------------------------------------------------------------------
-- p_failures = failed attempts including this one.
CREATE OR REPLACE FUNCTION financial_failure_status(p_failures integer, p_retryable boolean, p_max_attempts integer)
RETURNS varchar
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE WHEN NOT p_retryable OR p_failures >= p_max_attempts THEN 'dead_letter' ELSE 'failed' END::varchar;
$$;


-- Exponential backoff: base * 2^(failures - 1), capped.
CREATE OR REPLACE FUNCTION financial_retry_delay(p_failures integer, p_base interval, p_max interval)
RETURNS interval
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT least(p_base * power(2, least(greatest(p_failures - 1, 0), 30))::double precision, p_max);
$$;

-- The effective retry schedule of every retryable code: attempts, first and longest delay, and how
-- long after its first failure a row is dead-lettered if the condition never clears.
CREATE OR REPLACE FUNCTION financial_retry_schedule()
RETURNS TABLE(error_code varchar, max_attempts integer, first_delay interval, longest_delay interval,
              dead_letter_after interval)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT e.error_code, a.n, financial_retry_delay(1, a.base, a.cap),
           financial_retry_delay(greatest(a.n - 1, 1), a.base, a.cap),
           (SELECT coalesce(sum(financial_retry_delay(k, a.base, a.cap)), interval '0')
            FROM generate_series(1, a.n - 1) k)
    FROM financial_error_codes e
    CROSS JOIN financial_pipeline_settings s
    CROSS JOIN LATERAL (SELECT coalesce(e.max_attempts, s.max_attempts) AS n,
                               coalesce(e.backoff_base, s.backoff_base) AS base,
                               coalesce(e.backoff_max, s.backoff_max) AS cap) a
    WHERE e.retryable
    ORDER BY e.error_code;
$$;


------------------------------------------------------------------------------------------------------
-- The validators: one definition, used by the chunk and by the Backlog's "what if"
------------------------------------------------------------------------------------------------------
-- Each row's first failing rule (error_code NULL: it passes), checked at p_now against the settings,
-- the known types and the ERP order keys. Reads only: backlog_what_if() runs it in a read-only
-- transaction on rows an operator selected, with the chunk's own rules.
CREATE OR REPLACE FUNCTION financial_validate(
    p_rows financial_transactions_staging[],
    p_cfg financial_pipeline_settings,
    p_now timestamptz
)
RETURNS TABLE(staging_id bigint, error_code text, error_detail text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT c.staging_id,
           CASE
               WHEN c.transaction_id IS NULL OR c.account_id IS NULL OR c.transaction_timestamp IS NULL
                    OR c.amount IS NULL OR c.transaction_type IS NULL THEN 'missing_field'
               WHEN t.transaction_type IS NULL THEN 'unknown_type'
               WHEN c.amount NOT BETWEEN p_cfg.amount_min AND p_cfg.amount_max THEN 'amount_out_of_bounds'
               WHEN c.transaction_timestamp > p_now + p_cfg.future_tolerance THEN 'future_timestamp'
               WHEN o.has_ref AND o.order_id IS NULL THEN 'bad_order_reference'
               WHEN o.has_ref AND k.order_id IS NULL THEN 'order_not_found'
           END AS error_code,
           CASE
               WHEN c.transaction_id IS NULL OR c.account_id IS NULL OR c.transaction_timestamp IS NULL
                    OR c.amount IS NULL OR c.transaction_type IS NULL THEN
                   'required field(s) missing: ' || concat_ws(', ',
                       CASE WHEN c.transaction_id IS NULL THEN 'transaction_id' END,
                       CASE WHEN c.account_id IS NULL THEN 'account_id' END,
                       CASE WHEN c.transaction_timestamp IS NULL THEN 'transaction_timestamp' END,
                       CASE WHEN c.amount IS NULL THEN 'amount' END,
                       CASE WHEN c.transaction_type IS NULL THEN 'transaction_type' END)
               WHEN t.transaction_type IS NULL THEN
                   format('transaction_type %s is not a known type', quote_literal(c.transaction_type))
               WHEN c.amount NOT BETWEEN p_cfg.amount_min AND p_cfg.amount_max THEN
                   format('amount %s is outside [%s, %s]', c.amount, p_cfg.amount_min, p_cfg.amount_max)
               WHEN c.transaction_timestamp > p_now + p_cfg.future_tolerance THEN
                   format('transaction_timestamp is more than %s ahead of the server clock',
                          p_cfg.future_tolerance)
               WHEN o.has_ref AND o.order_id IS NULL THEN
                   'reference_data.order_id is not a positive integer'
               WHEN o.has_ref AND k.order_id IS NULL THEN
                   format('order_id %s is not in erp_orders', o.order_id)
           END AS error_detail
    FROM unnest(p_rows) c
    -- reference_data.order_id names erp_orders.order_id (not order_number); erp_order_keys holds
    -- one row per order_id, so the check is one primary-key probe.
    CROSS JOIN LATERAL (
        SELECT jsonb_typeof(c.reference_data) = 'object' AND c.reference_data ? 'order_id' AS has_ref,
               reference_order_id(c.reference_data) AS order_id
    ) o
    LEFT JOIN financial_transaction_types t ON t.transaction_type = c.transaction_type
    -- OFFSET 0 keeps this a per-row primary-key probe; flattened, the planner may hash the whole table
    LEFT JOIN LATERAL (
        SELECT k.order_id FROM erp_order_keys k WHERE k.order_id = o.order_id OFFSET 0
    ) k ON true;
$$;


-- One definition of "same payload": the ledger stores it, duplicates and conflicts compare it. It is
-- computed when a row is processed, once per chunk, not stored in staging: a stored generated column
-- made every COPY into staging compute it (about a sixth of a staged row's cost, P1) for a value only
-- processing reads. The epoch is taken in UTC so the hash does not depend on the session TimeZone;
-- batch_id is not part of the payload (the same transaction re-sent in another batch is a replay).
-- The expression is the one 0013's generated column had, so ledger rows written before 0033 compare
-- equal (tests/test_schema_upgrade.py checks it on a database of the previous release).
CREATE OR REPLACE FUNCTION financial_payload_hashes(p_rows financial_transactions_staging[])
RETURNS TABLE(staging_id bigint, payload_hash uuid)
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT c.staging_id,
           md5(coalesce(c.account_id::text, '') || '|' ||
               coalesce(extract(epoch FROM (c.transaction_timestamp AT TIME ZONE 'UTC'))::text, '') || '|' ||
               coalesce(c.amount::text, '') || '|' ||
               coalesce(c.transaction_type::text, '') || '|' ||
               coalesce(c.reference_data::text, ''))::uuid
    FROM unnest(p_rows) c;
$$;


------------------------------------------------------------------------------------------------------
-- The chunk functions. Each staging UPDATE names the ingestion time of its rows (a range for the
-- chunk, the value for one row), so only the partitions holding them are probed by staging_id; a row
-- ingested "in the future" (another clock) gets latency 0 instead of failing the whole batch in the
-- histogram.
------------------------------------------------------------------------------------------------------
-- p_rows are staging rows already claimed (locked) by the caller's transaction. Returns the outcome
-- counts and the rollup deltas; the caller applies the deltas last (so the hot rollup row is locked
-- only briefly, and always after the ledger, which keeps lock order acyclic between workers).
-- Two costs found by profiling P2 shape this function (EXPLAIN ANALYZE, perf on the backend):
--  * the staging UPDATE assigns ingestion_timestamp to itself: an UPDATE that touches no input of a
--    stored generated column re-reads the generation expressions for every row (~25% of backend
--    time on 18.6), while one that touches an input prepares them once per statement; the values
--    and HOT eligibility are unchanged;
--  * the fraud score is computed in a LATERAL subquery with OFFSET 0, so it runs once per row
--    instead of once per reference after the planner pulls the subquery up.
CREATE OR REPLACE FUNCTION financial_apply_chunk(
    p_rows financial_transactions_staging[],
    p_cfg financial_pipeline_settings,
    p_chunk_id bigint,
    p_worker text,
    p_now timestamptz,
    OUT processed integer,
    OUT failed integer,
    OUT dead_letter integer,
    OUT duplicate integer,
    OUT latency_sum_ms bigint,
    OUT rollup_deltas jsonb,
    OUT latency_deltas jsonb
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET jit = off   -- JIT compiled the chunk's statements for 12x their cost (Debian's PostgreSQL 15)
-- A generic plan estimates unnest(p_rows) at 10 rows, whatever the chunk holds: PL/pgSQL switched to
-- one after five chunks, and its nested loops paired every late row of a 10,000-row chunk with
-- every other (89M rows filtered, 5.5 s against 0.34 s). A custom plan sees the chunk's size. Small
-- chunks take the generic plan all the same (see v_generic_max): their worst case stays small.
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_ids     bigint[];
    v_codes   text[];
    v_details text[];
    v_won     boolean[];
    v_hashes  uuid[];
    v_bounds  integer[] := financial_latency_bounds();
    v_from    timestamptz;
    v_to      timestamptz;
    v_span    numeric;
    v_hist_lo timestamptz;
    v_hist_hi timestamptz;
    -- winners of one account in one slot (a window wide) from which a moving frame counts their
    -- windows (see acct): the slot join's cost grows with them, the frame's does not, and below
    -- this the slot join is cheaper (docs/pipeline.md). A setting so that the tests can force
    -- either way.
    v_frame_min integer := setting_integer('opsconsole.fraud_frame_min_rows', 8);
    -- whole minutes of a window summed from financial_fraud_minutes (see acct); 'off' reads every
    -- row, as before 0034: for the tests to compare both ways, and a way back if the table is doubted
    v_minutes boolean := coalesce(current_setting('opsconsole.fraud_minutes', true), '') <> 'off';
    -- chunks of up to this many rows take the generic plan: planning every statement per chunk
    -- cost a 200-row chunk a quarter of its server CPU, and a nested loop over so few rows stays
    -- small (docs/pipeline.md, thirteenth session). A setting so that the tests can force either
    -- plan (0: always custom). Citus sets 0 (distribute.sql).
    v_generic_max integer := setting_integer('opsconsole.chunk_generic_max_rows', 1000);
BEGIN
    -- (local to this call: the function's own SET of plan_cache_mode is restored when it returns)
    IF cardinality(p_rows) <= v_generic_max THEN
        PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
    END IF;
    -- the chunk's ingestion-time span: prunes the staging UPDATE to the partitions holding its rows;
    -- and the longest fraud window of its rows in seconds (an interval with days or months is not
    -- always the same length), the width of the time slots the window join below pairs rows by
    SELECT min(c.ingestion_timestamp), max(c.ingestion_timestamp),
           max(extract(epoch FROM c.transaction_timestamp)
               - extract(epoch FROM c.transaction_timestamp - p_cfg.fraud_window))
               FILTER (WHERE isfinite(c.transaction_timestamp))
    INTO v_from, v_to, v_span
    FROM unnest(p_rows) c;

    -- Step 1: validate, and claim each valid transaction_id in the ledger. One row per id per chunk
    -- competes (the lowest staging_id); ids are inserted in order so that two workers racing on the
    -- same ids wait for each other in the same order (no deadlock). ON CONFLICT waits for a concurrent
    -- inserter to finish, so step 2 (a new snapshot) sees who won.
    WITH c AS (
        SELECT * FROM unnest(p_rows)
    ),
    v AS (
        SELECT c.staging_id, c.transaction_id, h.payload_hash, c.account_id, c.transaction_timestamp,
               f.error_code, f.error_detail
        FROM c
        JOIN financial_validate(p_rows, p_cfg, p_now) f ON f.staging_id = c.staging_id
        JOIN financial_payload_hashes(p_rows) h ON h.staging_id = c.staging_id
    ),
    r AS (
        SELECT v.*, row_number() OVER (PARTITION BY v.account_id, v.transaction_id ORDER BY v.staging_id) AS rn
        FROM v
        WHERE v.error_code IS NULL
    ),
    l AS (
        INSERT INTO financial_transaction_ledger
            (transaction_id, payload_hash, staging_id, account_id, transaction_timestamp, recorded_at)
        SELECT r.transaction_id, r.payload_hash, r.staging_id, r.account_id, r.transaction_timestamp, p_now
        FROM r
        WHERE r.rn = 1
        ORDER BY r.account_id, r.transaction_id
        ON CONFLICT (account_id, transaction_id) DO NOTHING
        RETURNING staging_id
    )
    SELECT array_agg(v.staging_id), array_agg(v.error_code), array_agg(v.error_detail),
           array_agg(l.staging_id IS NOT NULL), array_agg(v.payload_hash),
           -- the event times every winner's window lies in (none infinite: such a window is empty),
           -- constants of step 2's custom plan: its history reads prune processed's partitions to
           -- them when planned, not per range scan at run time
           min(v.transaction_timestamp) FILTER (WHERE l.staging_id IS NOT NULL AND isfinite(v.transaction_timestamp))
               - p_cfg.fraud_window,
           max(v.transaction_timestamp) FILTER (WHERE l.staging_id IS NOT NULL AND isfinite(v.transaction_timestamp))
    INTO v_ids, v_codes, v_details, v_won, v_hashes, v_hist_lo, v_hist_hi
    FROM v
    LEFT JOIN l ON l.staging_id = v.staging_id;

    -- Step 2: score the winners against their account's history in [ts - window, ts), where the
    -- history is what arrived before them, processed or in this chunk (see windowed); write processed; flag
    -- financial_transactions; classify the losers (duplicate or conflict); mark every row once.
    WITH c AS (
        SELECT * FROM unnest(p_rows)
    ),
    x AS MATERIALIZED (
        SELECT c.*, o.error_code AS new_error_code, o.error_detail, o.won, o.payload_hash,
               c.processing_status AS prev_status,
               -- latency: ingestion -> this outcome (capped to fit integer; 0 for an ingestion
               -- time ahead of this clock, which has no histogram bucket and would fail the chunk)
               greatest(least(extract(epoch FROM clock_timestamp() - c.ingestion_timestamp) * 1000,
                              2147483647), 0)::integer AS ms
        FROM c
        JOIN unnest(v_ids, v_codes, v_details, v_won, v_hashes)
             AS o(staging_id, error_code, error_detail, won, payload_hash)
          ON o.staging_id = c.staging_id
    ),
    winners AS (
        -- slot: the time slot the slot join (slotted) and the density test (acct) key on; none for
        -- -infinity (no window holds it, and its own window is empty)
        SELECT x.*, CASE WHEN isfinite(x.transaction_timestamp)
                         THEN floor(extract(epoch FROM x.transaction_timestamp) / v_span)::bigint END AS slot
        FROM x WHERE x.won
    ),
    acct AS (
        -- an account with v_frame_min or more winners in one slot (below) is dense: a moving frame
        -- counts its windows (framed); the slot join counts the rest (windowed_sparse).
        -- [core_lo, core_hi): the whole minutes inside every finite winner's window (none: NULL).
        -- Their processed rows are summed from financial_fraud_minutes (core) instead of read, when
        -- all of a minute arrived before every winner of the account (first_sid)
        SELECT b.account_id, b.lo, b.hi, b.dense, b.first_sid,
               CASE WHEN v_minutes AND b.core_lo < b.core_hi THEN b.core_lo END AS core_lo,
               CASE WHEN v_minutes AND b.core_lo < b.core_hi THEN b.core_hi END AS core_hi
        FROM (SELECT a.account_id, min(a.first_ts) - p_cfg.fraud_window AS lo, max(a.last_ts) AS hi,
                     max(a.n) >= v_frame_min AS dense, min(a.first_sid) AS first_sid,
                     date_bin('1 minute', max(a.last_lo) + interval '1 minute' - interval '1 microsecond',
                              timestamptz 'epoch') AS core_lo,
                     date_bin('1 minute', min(a.first_finite), timestamptz 'epoch') AS core_hi
              FROM (SELECT w.account_id, count(*) AS n, min(w.transaction_timestamp) AS first_ts,
                           max(w.transaction_timestamp) AS last_ts, min(w.staging_id) AS first_sid,
                           max(w.transaction_timestamp - p_cfg.fraud_window)
                               FILTER (WHERE isfinite(w.transaction_timestamp)) AS last_lo,
                           min(w.transaction_timestamp) FILTER (WHERE isfinite(w.transaction_timestamp)) AS first_finite
                    FROM winners w
                    GROUP BY w.account_id, w.slot) a
              GROUP BY a.account_id) b
    ),
    -- The core's minutes, by a LATERAL range scan per account (a hash join would read the whole
    -- table for a few accounts): summed when all of a minute arrived before every winner of the
    -- account (core), else read row by row (stale, into history)
    core_minutes AS (
        SELECT a.account_id, f.minute, f.row_count, f.amount_abs_sum, f.max_staging_id < a.first_sid AS usable
        FROM acct a
        CROSS JOIN LATERAL (
            SELECT f.minute, f.row_count, f.amount_abs_sum, f.max_staging_id
            FROM financial_fraud_minutes f
            WHERE f.account_id = a.account_id
              AND f.minute >= a.core_lo
              AND f.minute < a.core_hi
        ) f
        WHERE a.core_lo IS NOT NULL
    ),
    core AS (
        SELECT c.account_id, sum(c.row_count)::bigint AS n, sum(c.amount_abs_sum) AS s
        FROM core_minutes c
        WHERE c.usable
        GROUP BY c.account_id
    ),
    -- The processed rows the winners' windows hold, less the core's: [lo, hi) with [core_lo, core_hi)
    -- cut out, and the core's minutes that hold a later arrival
    ranges AS (
        SELECT a.account_id, a.dense, a.lo AS r_lo, coalesce(a.core_lo, a.hi) AS r_hi
        FROM acct a
        UNION ALL
        SELECT a.account_id, a.dense, a.core_hi, a.hi
        FROM acct a
        WHERE a.core_lo IS NOT NULL
        UNION ALL
        SELECT a.account_id, a.dense, c.minute, c.minute + interval '1 minute'
        FROM core_minutes c
        JOIN acct a ON a.account_id = c.account_id
        WHERE NOT c.usable
    ),
    -- One index range scan per range, the partitions outside [v_hist_lo, v_hist_hi) pruned when
    -- planned. The aggregate keeps each scan inside its range: a plain LATERAL subquery is pulled up
    -- into a join, which the planner hashed over the whole of processed (85 ms of a 240 ms chunk of
    -- a real-time feed, against a few index scans), and OFFSET 0, which would prevent that, is
    -- refused by Citus when the subquery references a CTE (docs/scaling.md)
    history AS (
        SELECT r.account_id, r.dense, unnest(h.staging_ids) AS staging_id,
               unnest(h.tss) AS transaction_timestamp, unnest(h.amounts) AS amount_abs
        FROM ranges r
        CROSS JOIN LATERAL (
            SELECT array_agg(p.staging_id) AS staging_ids, array_agg(p.transaction_timestamp) AS tss,
                   array_agg(p.amount_abs) AS amounts
            FROM financial_transactions_processed p
            WHERE p.account_id = r.account_id
              AND p.transaction_timestamp >= r.r_lo
              AND p.transaction_timestamp < r.r_hi
              AND p.transaction_timestamp >= v_hist_lo
              AND p.transaction_timestamp < v_hist_hi
            GROUP BY p.account_id
        ) h
    ),
    pool AS (
        SELECT w.staging_id, w.account_id, w.transaction_timestamp, abs(w.amount) AS amount_abs,
               a.dense, true AS is_winner, w.slot
        FROM winners w
        JOIN acct a ON a.account_id = w.account_id
        UNION ALL
        -- (a processed row loaded without staging arrived before anything staged: staging_id 0;
        -- its slot as winners have theirs)
        SELECT coalesce(h.staging_id, 0), h.account_id, h.transaction_timestamp, h.amount_abs,
               h.dense, false, CASE WHEN isfinite(h.transaction_timestamp)
                                    THEN floor(extract(epoch FROM h.transaction_timestamp) / v_span)::bigint END
        FROM history h
    ),
    -- A row's history: the account's transactions in [ts - window, ts) that ARRIVED before it (lower
    -- staging_id), processed or in this chunk. Arrival order, not chunk membership, decides, so the
    -- score is a function of the data: the same for any chunk size (one worker claims in arrival
    -- order, so every earlier arrival is processed before or with it). detect_fraud_indicators applied
    -- in arrival order gives the same scores (tests/sql/test_financial_pipeline_properties.py).
    -- Two ways count it, with equal results (the property tests force each):
    -- * the slot join: time is cut into slots v_span seconds wide (no shorter than any row's
    --   window), so a row's history lies in its own slot or the one before: each pool row is
    --   offered under both slot numbers it can serve, and the join pairs rows by (account, slot).
    --   Its cost is the chunk's rows times their account's rows in two windows: cheap for most
    --   accounts, quadratic for a dense one (20,000 rows of one account in an hour took 47 s);
    -- * for a dense account, a moving frame (framed), whose cost is its rows, sorted.
    slotted AS (
        SELECT q.staging_id, q.account_id, q.transaction_timestamp, q.amount_abs, q.slot + d.d AS slot
        FROM pool q
        CROSS JOIN (VALUES (0::bigint), (1::bigint)) AS d(d)
        WHERE NOT q.dense
    ),
    windowed_sparse AS (
        SELECT w.staging_id, w.account_id, w.slot IS NOT NULL AS finite, count(q.account_id) AS n,
               sum(q.amount_abs) AS s
        FROM pool w
        LEFT JOIN slotted q
          ON q.account_id = w.account_id
         AND q.slot = w.slot
         AND q.transaction_timestamp >= w.transaction_timestamp - p_cfg.fraud_window
         AND q.transaction_timestamp < w.transaction_timestamp
         AND q.staging_id < w.staging_id
        WHERE w.is_winner AND NOT w.dense
        GROUP BY w.staging_id, w.account_id, w.slot
    ),
    -- The frame counts every row of the account in [ts - window, ts) whatever its arrival: in time
    -- order over [ts - window, ts], less the rows at ts itself. (Not EXCLUDE GROUP, and no min/max
    -- over a frame whose head moves: either makes the frame quadratic.) It then subtracts the rows
    -- that arrived after the winner yet lie in its window (late). Such a pair needs a winner with
    -- an earlier event time arriving after it (ts_after < ts) and a row with a later one arriving
    -- before it (ts_before > ts), so an in-order stream pairs nothing here.
    framed AS (
        SELECT q.staging_id, q.account_id, q.transaction_timestamp, q.amount_abs, q.is_winner,
               count(*) OVER f - count(*) OVER g AS n,
               sum(q.amount_abs) OVER f - sum(q.amount_abs) OVER g AS s,
               max(q.transaction_timestamp) OVER (PARTITION BY q.account_id ORDER BY q.staging_id
                                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS ts_before,
               min(q.transaction_timestamp) OVER (PARTITION BY q.account_id ORDER BY q.staging_id DESC
                                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS ts_after
        FROM pool q
        WHERE q.dense AND isfinite(q.transaction_timestamp)
        WINDOW f AS (PARTITION BY q.account_id ORDER BY q.transaction_timestamp
                     RANGE BETWEEN p_cfg.fraud_window PRECEDING AND CURRENT ROW),
               g AS (PARTITION BY q.account_id, q.transaction_timestamp)
    ),
    -- A late row lies at most (its ts_before - its ts) before a winner it pairs with, so late pairs
    -- are found by a slot join like the one above, with slots as wide as the account's lateness
    -- (a second more, against rounding): narrow for a jittered feed, the window at worst.
    late_rows AS (
        -- the rows some earlier arrival lies after in time: only they can be late for a winner
        SELECT q.staging_id, q.account_id, q.transaction_timestamp, q.amount_abs,
               extract(epoch FROM q.ts_before - q.transaction_timestamp) AS lateness
        FROM framed q
        WHERE q.ts_before > q.transaction_timestamp
    ),
    late_width AS (
        SELECT q.account_id, least(max(q.lateness), v_span) + 1 AS width
        FROM late_rows q
        GROUP BY q.account_id
    ),
    late_q AS MATERIALIZED (
        SELECT q.staging_id, q.account_id, q.transaction_timestamp, q.amount_abs,
               floor(extract(epoch FROM q.transaction_timestamp) / k.width)::bigint + d.d AS slot
        FROM late_rows q
        JOIN late_width k ON k.account_id = q.account_id
        CROSS JOIN (VALUES (0::bigint), (1::bigint)) AS d(d)
    ),
    late_w AS MATERIALIZED (
        SELECT w.staging_id, w.account_id, w.transaction_timestamp,
               floor(extract(epoch FROM w.transaction_timestamp) / k.width)::bigint AS slot
        FROM framed w
        JOIN late_width k ON k.account_id = w.account_id
        WHERE w.is_winner AND w.ts_after < w.transaction_timestamp
    ),
    late AS (
        SELECT w.staging_id, count(*) AS n, sum(q.amount_abs) AS s
        FROM late_w w
        JOIN late_q q
          ON q.account_id = w.account_id
         AND q.slot = w.slot
         AND q.transaction_timestamp >= w.transaction_timestamp - p_cfg.fraud_window
         AND q.transaction_timestamp < w.transaction_timestamp
         AND q.staging_id > w.staging_id
        GROUP BY w.staging_id
    ),
    windowed_dense AS (
        SELECT w.staging_id, w.account_id, true AS finite, w.n - coalesce(l.n, 0) AS n, w.s - coalesce(l.s, 0) AS s
        FROM framed w
        LEFT JOIN late l ON l.staging_id = w.staging_id
        WHERE w.is_winner
        UNION ALL
        -- (a winner at -infinity: no window holds it, and its own window is empty)
        SELECT q.staging_id, q.account_id, false, 0, NULL
        FROM pool q
        WHERE q.is_winner AND q.dense AND NOT isfinite(q.transaction_timestamp)
    ),
    windowed AS (
        -- the core's minutes lie in every finite winner's window, and arrived before it
        SELECT u.staging_id, u.n + coalesce(k.n, 0) AS recent_count,
               (coalesce(u.s, 0) + coalesce(k.s, 0)) / nullif(u.n + coalesce(k.n, 0), 0) AS recent_avg
        FROM (SELECT * FROM windowed_sparse
              UNION ALL
              SELECT * FROM windowed_dense) u
        LEFT JOIN core k ON k.account_id = u.account_id AND u.finite
    ),
    scored AS (
        -- the whole chunk in one call of the formula (financial_fraud_scores), not a call per row
        SELECT w.*, f.risk_score
        FROM (SELECT array_agg(v.staging_id) AS k, array_agg(v.amount) AS a,
                     array_agg(v.transaction_timestamp) AS t, array_agg(s.recent_count) AS n,
                     array_agg(s.recent_avg) AS m
              FROM winners v
              JOIN windowed s ON s.staging_id = v.staging_id) g
        CROSS JOIN LATERAL financial_fraud_scores(g.k, g.a, g.t, g.n, g.m, p_cfg.business_time_zone,
                                                  p_cfg.business_hour_start, p_cfg.business_hour_end) f
        JOIN winners w ON w.staging_id = f.key
    ),
    ins AS (
        INSERT INTO financial_transactions_processed (
            transaction_id, account_id, transaction_timestamp, amount, transaction_type, reference_data,
            batch_id, processed_at, processing_duration_ms, validation_status, risk_score, staging_id,
            ingestion_timestamp, payload_hash)
        SELECT s.transaction_id, s.account_id, s.transaction_timestamp, s.amount, s.transaction_type,
               s.reference_data, s.batch_id, clock_timestamp(), s.ms,
               CASE WHEN s.risk_score > 70 THEN 'high_risk'
                    WHEN s.risk_score > 40 THEN 'medium_risk'
                    ELSE 'valid' END,
               s.risk_score, s.staging_id, s.ingestion_timestamp, s.payload_hash
        FROM scored s
        RETURNING staging_id, account_id, transaction_id, transaction_timestamp, amount_abs
    ),
    minutes AS (
        -- the fraud window's minutes (financial_fraud_minutes), in key order like the ledger
        INSERT INTO financial_fraud_minutes AS m (account_id, minute, row_count, amount_abs_sum, max_staging_id)
        SELECT i.account_id, date_bin('1 minute', i.transaction_timestamp, timestamptz 'epoch'), count(*),
               sum(i.amount_abs), max(i.staging_id)
        FROM ins i
        WHERE isfinite(i.transaction_timestamp)
        GROUP BY 1, 2
        ORDER BY 1, 2
        ON CONFLICT (account_id, minute) DO UPDATE
        SET row_count = m.row_count + excluded.row_count,
            amount_abs_sum = m.amount_abs_sum + excluded.amount_abs_sum,
            max_staging_id = greatest(m.max_staging_id, excluded.max_staging_id)
    ),
    flagged AS (
        UPDATE financial_transactions f
        SET is_processed = true
        FROM ins
        WHERE f.transaction_id = ins.transaction_id
          AND f.account_id = ins.account_id   -- the source row of this account's transaction
          AND f.transaction_id = ANY (ARRAY(SELECT i.transaction_id FROM ins i))   -- unprocessed_idx probes
          AND NOT f.is_processed
        RETURNING f.transaction_id
    ),
    outcome AS (
        -- processed
        SELECT x.staging_id, x.ingestion_timestamp, x.prev_status, 'processed'::varchar AS new_status, NULL::varchar AS error_code,
               NULL::text AS error_message, x.retry_count AS new_retry_count, x.next_attempt_at AS due, x.ms
        FROM x
        JOIN ins ON ins.staging_id = x.staging_id
        UNION ALL
        -- failed validation: retried with backoff, or dead-lettered
        SELECT x.staging_id, x.ingestion_timestamp, x.prev_status,
               -- the error code's own schedule (late data: financial_error_codes), else the settings'
               financial_failure_status(x.retry_count + 1, e.retryable, coalesce(e.max_attempts, p_cfg.max_attempts)),
               x.new_error_code, x.error_detail, x.retry_count + 1,
               p_now + financial_retry_delay(x.retry_count + 1, coalesce(e.backoff_base, p_cfg.backoff_base),
                                             coalesce(e.backoff_max, p_cfg.backoff_max)), x.ms
        FROM x
        JOIN financial_error_codes e ON e.error_code = x.new_error_code
        UNION ALL
        -- valid but the ledger already had the id: a replay, or a conflicting payload
        SELECT x.staging_id, x.ingestion_timestamp, x.prev_status,
               CASE WHEN g.payload_hash = x.payload_hash THEN 'duplicate' ELSE 'dead_letter' END,
               CASE WHEN g.payload_hash = x.payload_hash THEN 'duplicate' ELSE 'payload_conflict' END,
               CASE WHEN g.payload_hash = x.payload_hash
                    THEN format('transaction_id %s was already processed with the same payload (staging_id %s)',
                                x.transaction_id, g.staging_id)
                    ELSE format('transaction_id %s was already processed with a different payload (staging_id %s)',
                                x.transaction_id, g.staging_id) END,
               x.retry_count + CASE WHEN g.payload_hash = x.payload_hash THEN 0 ELSE 1 END,
               x.next_attempt_at, x.ms
        FROM x
        CROSS JOIN LATERAL (
            SELECT l.payload_hash, l.staging_id FROM financial_transaction_ledger l
            WHERE l.account_id = x.account_id AND l.transaction_id = x.transaction_id
        ) g
        WHERE x.new_error_code IS NULL AND NOT x.won
    ),
    upd AS (
        UPDATE financial_transactions_staging s
        SET processing_status = o.new_status,
            error_code = o.error_code,
            error_message = o.error_message,
            retry_count = o.new_retry_count,
            next_attempt_at = o.due,
            processing_duration_ms = o.ms,
            processed_at = p_now,
            claimed_by = p_worker,
            chunk_id = p_chunk_id,
            -- the same value: makes PostgreSQL prepare the generated columns once, not per row (see
            -- the note above this function)
            ingestion_timestamp = s.ingestion_timestamp
        FROM outcome o
        -- the whole primary key: one probe per row, never a scan of the day's partition (with 200k
        -- rows in it, the join on staging_id alone hashed a sequential scan of all of them on 15)
        WHERE s.staging_id = o.staging_id
          AND s.ingestion_timestamp = o.ingestion_timestamp
          AND s.staging_id = ANY (v_ids)   -- primary-key probes, whatever the estimates of outcome
          AND s.ingestion_timestamp BETWEEN v_from AND v_to   -- ... in the partitions of the chunk only
        RETURNING s.staging_id, s.ingestion_minute, o.prev_status, o.new_status, o.ms
    ),
    per_minute AS (
        SELECT u.ingestion_minute AS minute_bucket,
               count(*) FILTER (WHERE u.new_status = 'pending')
                 - count(*) FILTER (WHERE u.prev_status = 'pending') AS pending_delta,
               count(*) FILTER (WHERE u.new_status = 'processed')
                 - count(*) FILTER (WHERE u.prev_status = 'processed') AS processed_delta,
               count(*) FILTER (WHERE u.new_status = 'failed')
                 - count(*) FILTER (WHERE u.prev_status = 'failed') AS failed_delta,
               count(*) FILTER (WHERE u.new_status = 'dead_letter')
                 - count(*) FILTER (WHERE u.prev_status = 'dead_letter') AS dead_letter_delta,
               count(*) FILTER (WHERE u.new_status = 'duplicate')
                 - count(*) FILTER (WHERE u.prev_status = 'duplicate') AS duplicate_delta,
               count(*) FILTER (WHERE u.new_status = 'processed') AS latency_count,
               coalesce(sum(u.ms) FILTER (WHERE u.new_status = 'processed'), 0) AS latency_sum_ms,
               max(u.ms) FILTER (WHERE u.new_status = 'processed') AS latency_max_ms,
               count(*) FILTER (WHERE u.new_status = 'processed' AND u.ms > p_cfg.sla_ms) AS sla_breaches
        FROM upd u
        GROUP BY 1
    ),
    hist AS (
        SELECT u.ingestion_minute AS minute_bucket,
               v_bounds[width_bucket(u.ms, v_bounds)] AS bucket_lower_ms,
               v_bounds[width_bucket(u.ms, v_bounds) + 1] AS bucket_upper_ms,
               count(*) AS row_count
        FROM upd u
        WHERE u.new_status = 'processed'
        GROUP BY 1, 2, 3
    )
    SELECT (SELECT count(*) FROM upd WHERE upd.new_status = 'processed'),
           (SELECT count(*) FROM upd WHERE upd.new_status = 'failed'),
           (SELECT count(*) FROM upd WHERE upd.new_status = 'dead_letter'),
           (SELECT count(*) FROM upd WHERE upd.new_status = 'duplicate'),
           (SELECT coalesce(sum(upd.ms), 0) FROM upd WHERE upd.new_status = 'processed'),
           (SELECT jsonb_agg(to_jsonb(m)) FROM per_minute m),
           (SELECT jsonb_agg(to_jsonb(h)) FROM hist h)
    INTO processed, failed, dead_letter, duplicate, latency_sum_ms, rollup_deltas, latency_deltas;
END;
$$;


-- A chunk that raised (a bug, or data no validation rule foresaw) is split in halves until the rows
-- that raise are alone; each such row is marked internal_error (retried with backoff, then
-- dead-lettered) and the rest are processed normally. One subtransaction per split, not per row.
CREATE OR REPLACE FUNCTION financial_apply_isolating(
    p_rows financial_transactions_staging[],
    p_cfg financial_pipeline_settings,
    p_chunk_id bigint,
    p_worker text,
    p_now timestamptz,
    OUT processed integer,
    OUT failed integer,
    OUT dead_letter integer,
    OUT duplicate integer,
    OUT latency_sum_ms bigint,
    OUT rollup_deltas jsonb,
    OUT latency_deltas jsonb
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET jit = off   -- JIT compiled the chunk's statements for 12x their cost (Debian's PostgreSQL 15)
AS $$
DECLARE
    v_n    integer := coalesce(array_length(p_rows, 1), 0);
    v_half integer;
    v_a    record;
    v_b    record;
    v_row  financial_transactions_staging;
    v_err  text;
    v_st   varchar;
BEGIN
    processed := 0; failed := 0; dead_letter := 0; duplicate := 0; latency_sum_ms := 0;
    rollup_deltas := '[]'::jsonb; latency_deltas := '[]'::jsonb;
    IF v_n = 0 THEN
        RETURN;
    END IF;
    BEGIN
        SELECT * INTO v_a FROM financial_apply_chunk(p_rows, p_cfg, p_chunk_id, p_worker, p_now);
        processed := v_a.processed; failed := v_a.failed; dead_letter := v_a.dead_letter;
        duplicate := v_a.duplicate; latency_sum_ms := v_a.latency_sum_ms;
        rollup_deltas := coalesce(v_a.rollup_deltas, '[]'::jsonb);
        latency_deltas := coalesce(v_a.latency_deltas, '[]'::jsonb);
        RETURN;
    EXCEPTION
        -- A lost connection is not the rows' fault: on Citus a worker node that restarts fails
        -- every half of the chunk, and splitting it would mark each row internal_error. The
        -- caller's transaction fails instead and the rows stay due.
        WHEN connection_exception OR admin_shutdown OR crash_shutdown OR cannot_connect_now THEN
            RAISE;
        WHEN OTHERS THEN
            v_err := SQLERRM;
    END;
    IF v_n = 1 THEN
        v_row := p_rows[1];
        v_st := financial_failure_status(v_row.retry_count + 1, true, p_cfg.max_attempts);
        UPDATE financial_transactions_staging s
        SET processing_status = v_st,
            error_code = 'internal_error',
            error_message = left(v_err, 1000),
            -- from the claimed row (no one else writes it while the chunk holds its bucket): Citus
            -- refuses a STABLE function of a column in an UPDATE of distributed staging
            retry_count = v_row.retry_count + 1,
            next_attempt_at = p_now + financial_retry_delay(v_row.retry_count + 1, p_cfg.backoff_base, p_cfg.backoff_max),
            processed_at = p_now,   -- the chunk's time, as its other rows (not volatile: see the chunk)
            claimed_by = p_worker,
            chunk_id = p_chunk_id
        -- the whole primary key: on Citus the account routes it to the row's one shard (a
        -- multi-shard write would take every staging shard's lock for the rest of the chunk)
        WHERE s.staging_id = v_row.staging_id
          AND s.ingestion_timestamp = v_row.ingestion_timestamp
          AND s.account_id = v_row.account_id;
        IF v_st = 'failed' THEN failed := 1; ELSE dead_letter := 1; END IF;
        rollup_deltas := jsonb_build_array(jsonb_build_object(
            'minute_bucket', v_row.ingestion_minute,
            'pending_delta', CASE WHEN v_row.processing_status = 'pending' THEN -1 ELSE 0 END,
            'failed_delta', CASE WHEN v_st = 'failed' THEN 1 ELSE 0 END
                            - CASE WHEN v_row.processing_status = 'failed' THEN 1 ELSE 0 END,
            'dead_letter_delta', CASE WHEN v_st = 'dead_letter' THEN 1 ELSE 0 END));
        RETURN;
    END IF;
    v_half := v_n / 2;
    SELECT * INTO v_a FROM financial_apply_isolating(p_rows[1:v_half], p_cfg, p_chunk_id, p_worker, p_now);
    SELECT * INTO v_b FROM financial_apply_isolating(p_rows[v_half + 1:v_n], p_cfg, p_chunk_id, p_worker, p_now);
    processed := v_a.processed + v_b.processed;
    failed := v_a.failed + v_b.failed;
    dead_letter := v_a.dead_letter + v_b.dead_letter;
    duplicate := v_a.duplicate + v_b.duplicate;
    latency_sum_ms := v_a.latency_sum_ms + v_b.latency_sum_ms;
    rollup_deltas := v_a.rollup_deltas || v_b.rollup_deltas;
    latency_deltas := v_a.latency_deltas || v_b.latency_deltas;
END;
$$;


------------------------------------------------------------------------------------------------------
-- The claim's locks: 64 account buckets, each a transaction-scoped advisory lock
------------------------------------------------------------------------------------------------------
-- The lock space of the claim buckets (two-key form, 'FCLM': apart from every one-key lock).
CREATE OR REPLACE FUNCTION financial_claim_key()
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT 1178815565 $$;

-- Every bucket, waited for in bucket order, until the caller's transaction ends: what a writer of due
-- rows other than the chunk (retry_failed) holds, so that no chunk has read a row it is about to change.
-- Workers only try a bucket and never wait, so the fixed order cannot deadlock with them; a waiting
-- request also stops new tries from jumping ahead of it.
CREATE OR REPLACE FUNCTION financial_claim_hold_all()
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT pg_advisory_xact_lock(financial_claim_key(), b) FROM generate_series(0, 63) AS b ORDER BY b;
    SELECT;
$$;


------------------------------------------------------------------------------------------------------
-- process_financial_batch: claim and process due rows, chunk by chunk, within a time budget
------------------------------------------------------------------------------------------------------
-- The detailed form, used by the worker (one log line per chunk needs every outcome count).
-- Processes up to p_batch_size rows in chunks of at most financial_pipeline_settings.chunk_size, all
-- in the caller's transaction; stops early when nothing is due or when p_max_processing_time has
-- elapsed (checked with clock_timestamp() between chunks). Sends one NOTIFY 'opsconsole_pipeline' per
-- chunk (delivered when the caller commits).
CREATE OR REPLACE FUNCTION process_financial_batch_detail(
    p_batch_size integer DEFAULT 10000,
    p_max_processing_time interval DEFAULT '5 minutes',
    p_worker text DEFAULT NULL
)
RETURNS TABLE(
    processed_count integer,
    failed_count integer,
    dead_letter_count integer,
    duplicate_count integer,
    claimed_count integer,
    chunk_count integer,
    avg_processing_ms numeric,
    batch_duration interval
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET jit = off   -- JIT compiled the chunk's statements for 12x their cost (Debian's PostgreSQL 15)
AS $$
DECLARE
    v_start    timestamptz := clock_timestamp();
    v_cfg      financial_pipeline_settings;
    v_worker   text := coalesce(p_worker,
                                coalesce(nullif(current_setting('application_name', true), ''), 'session')
                                || '#' || pg_backend_pid());
    v_rows     financial_transactions_staging[];
    v_limit    integer;
    v_now      timestamptz;
    v_chunk_id bigint;
    v_chunk_start timestamptz;
    v_res      record;
    v_sum_ms   bigint := 0;
    v_part     financial_transactions_staging[];
    v_bucket0  integer;
    v_bucket   integer;
    v_i        integer;
    v_take     integer[];
    v_span     integer := greatest(1, least(64, setting_integer('opsconsole.claim_span', 1)));
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'process_financial_batch: p_batch_size must be at least 1 (got %)', p_batch_size
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v_cfg FROM financial_pipeline_settings;
    processed_count := 0; failed_count := 0; dead_letter_count := 0; duplicate_count := 0;
    claimed_count := 0; chunk_count := 0;

    LOOP
        EXIT WHEN claimed_count >= p_batch_size;
        EXIT WHEN chunk_count > 0 AND clock_timestamp() - v_start >= p_max_processing_time;
        v_limit := least(p_batch_size - claimed_count, v_cfg.chunk_size);
        v_chunk_start := clock_timestamp();
        v_now := v_chunk_start;

        -- The claim, by account bucket: walk the 64 buckets from a random one; take each bucket no
        -- other transaction holds (a transaction-scoped advisory lock, never waited for) and its due
        -- rows in arrival order (staging_id), until the chunk is full. Every row of an account is in
        -- one bucket, so while a row is scored every earlier due arrival of its account is either
        -- committed (the bucket's previous holder committed before this lock was granted) or in
        -- this chunk: the score depends neither on which worker claimed the row nor on the chunk
        -- size. With a backlog larger than a chunk, workers hold disjoint buckets and run in
        -- parallel; with a smaller one, one chunk takes it all (one worker is then enough). The
        -- bucket is the high 6 bits of hashint8(account_id), the hash Citus shards bigint columns
        -- by, so a bucket lies within one shard (docs/scaling.md, "The claim"); the expression is
        -- the one of financial_staging_bucket_claim_idx (0022), repeated exactly. The bucket's lock
        -- is the whole claim: no row lock (FOR UPDATE on distributed staging is refused by Citus, and
        -- on one server it wrote a lock into every claimed row before the chunk's update wrote it
        -- again). The one other writer of due rows, retry_failed, holds every bucket while it works
        -- (financial_claim_hold_all); park and unpark touch only rows no chunk claims.
        -- The buckets are read v_span at a time (opsconsole.claim_span, 1 unless set): on one server
        -- one bucket per statement, an ordered index range that stops at the chunk's limit; on Citus,
        -- where every read of staging by bucket asks all its shards (about 0.2 s on the test cluster
        -- whatever it returns), distribute.sql sets 8, so a chunk costs one such read, not one per
        -- bucket. The rows of several buckets are then the first due rows by staging_id among them,
        -- so for each account still an unbroken run from its oldest due row.
        v_rows := NULL;
        v_bucket0 := floor(random() * 64)::integer;
        v_i := 0;
        WHILE v_i < 64 AND coalesce(cardinality(v_rows), 0) < v_limit LOOP
            v_take := ARRAY[]::integer[];
            WHILE v_i < 64 AND cardinality(v_take) < v_span LOOP
                v_bucket := (v_bucket0 + v_i) % 64;
                v_i := v_i + 1;
                IF pg_try_advisory_xact_lock(financial_claim_key(), v_bucket) THEN
                    v_take := v_take || v_bucket;
                END IF;
            END LOOP;
            IF cardinality(v_take) = 1 THEN
                SELECT array_agg(q.s ORDER BY (q.s).staging_id)
                INTO v_part
                FROM (
                    SELECT s
                    FROM financial_transactions_staging s
                    WHERE ((hashint8(coalesce(s.account_id, 0))::bigint + 2147483648) >> 26)::integer = v_take[1]
                      AND s.processing_status IN ('pending', 'failed')
                      AND s.next_attempt_at <= v_now
                    ORDER BY s.staging_id
                    LIMIT v_limit - coalesce(cardinality(v_rows), 0)
                ) q;
            ELSIF cardinality(v_take) > 1 THEN
                SELECT array_agg(q.s ORDER BY (q.s).staging_id)
                INTO v_part
                FROM (
                    SELECT s
                    FROM financial_transactions_staging s
                    WHERE ((hashint8(coalesce(s.account_id, 0))::bigint + 2147483648) >> 26)::integer = ANY (v_take)
                      AND s.processing_status IN ('pending', 'failed')
                      AND s.next_attempt_at <= v_now
                    ORDER BY s.staging_id
                    LIMIT v_limit - coalesce(cardinality(v_rows), 0)
                ) q;
            ELSE
                v_part := NULL;
            END IF;
            v_rows := v_rows || v_part;   -- appended in place, not a copy of the chunk per read
        END LOOP;
        EXIT WHEN coalesce(cardinality(v_rows), 0) = 0;

        v_chunk_id := nextval('financial_chunk_seq');
        SELECT * INTO v_res FROM financial_apply_isolating(v_rows, v_cfg, v_chunk_id, v_worker, v_now);
        PERFORM financial_rollup_apply(v_res.rollup_deltas);
        PERFORM financial_latency_apply(v_res.latency_deltas);

        claimed_count := claimed_count + array_length(v_rows, 1);
        chunk_count := chunk_count + 1;
        processed_count := processed_count + v_res.processed;
        failed_count := failed_count + v_res.failed;
        dead_letter_count := dead_letter_count + v_res.dead_letter;
        duplicate_count := duplicate_count + v_res.duplicate;
        v_sum_ms := v_sum_ms + v_res.latency_sum_ms;

        PERFORM pg_notify('opsconsole_pipeline', json_build_object(
            'chunk_id', v_chunk_id, 'rows', array_length(v_rows, 1), 'processed', v_res.processed,
            'failed', v_res.failed, 'dead_letter', v_res.dead_letter, 'duplicate', v_res.duplicate,
            'ms', round(extract(epoch FROM clock_timestamp() - v_chunk_start) * 1000, 1))::text);

        EXIT WHEN array_length(v_rows, 1) < v_limit;   -- nothing more is due
    END LOOP;

    avg_processing_ms := CASE WHEN processed_count > 0
                              THEN round(v_sum_ms::numeric / processed_count, 3) ELSE 0 END;
    batch_duration := clock_timestamp() - v_start;
    -- One audit row per call that claimed rows, whoever calls (the worker, the CLI, the console,
    -- process_financial_batch()); a call that found nothing due changed nothing and leaves none.
    IF claimed_count > 0 THEN
        PERFORM record_audit(
            'process_financial_batch',
            jsonb_build_object('batch_size', p_batch_size, 'max_processing_time', p_max_processing_time::text,
                               'worker', v_worker),
            -- failed_count as process_financial_batch() reports it (failed + dead-lettered rows)
            jsonb_build_object('processed_count', processed_count, 'failed_count', failed_count + dead_letter_count,
                               'dead_letter_count', dead_letter_count, 'duplicate_count', duplicate_count,
                               'claimed_count', claimed_count, 'chunk_count', chunk_count,
                               'avg_processing_ms', avg_processing_ms, 'batch_duration', batch_duration::text),
            'ok', round((extract(epoch FROM batch_duration) * 1000)::numeric, 3), NULL);
    END IF;
    RETURN NEXT;
END;
$$;


------------------------------------------------------------------------------------------------------
-- The spec's entry point: same signature and result columns; audited by the detail function it calls
------------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION process_financial_batch(
    p_batch_size integer DEFAULT 10000,
    p_max_processing_time interval DEFAULT '5 minutes'
)
RETURNS TABLE(
    processed_count integer,
    failed_count integer,
    avg_processing_ms numeric,
    batch_duration interval
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET jit = off   -- JIT compiled the chunk's statements for 12x their cost (Debian's PostgreSQL 15)
AS $$
BEGIN
    -- process_financial_batch_detail() writes the audit row (action process_financial_batch).
    SELECT d.processed_count, d.failed_count + d.dead_letter_count, d.avg_processing_ms, d.batch_duration
    INTO processed_count, failed_count, avg_processing_ms, batch_duration
    FROM process_financial_batch_detail(p_batch_size, p_max_processing_time) d;
    RETURN NEXT;
END;
$$;


------------------------------------------------------------------------------------------------------
-- retry_failed: two things about its UPDATE
------------------------------------------------------------------------------------------------------
--  * it joins its targets on the whole key (staging_id, ingestion_timestamp), one partition each;
--  * it assigns ingestion_timestamp to itself, as the chunk does: an UPDATE that touches no input of
--    the stored generated columns re-reads their expressions for every row; one that touches an
--    input prepares them once per statement (values unchanged, and the row stays in its partition).
-- The Backlog's `/` filter, one definition: the Backlog lists the rows it matches and every action on
-- "what the filter shows" (retry, park, what if) takes the same text as a parameter. A row matches when
-- the text is empty, equals its status, its staging id or its transaction id, or is contained
-- (case-insensitively) in its error code, error message or batch id.
CREATE OR REPLACE FUNCTION backlog_row_matches(
    p_filter text,
    p_status text,
    p_error_code text,
    p_error_message text,
    p_batch_id text,
    p_staging_id bigint,
    p_transaction_id bigint
)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT coalesce(btrim(p_filter), '') = ''
        OR p_status = btrim(p_filter)
        OR p_staging_id::text = btrim(p_filter)
        OR p_transaction_id::text = btrim(p_filter)
        OR strpos(lower(coalesce(p_error_code, '')), lower(btrim(p_filter))) > 0
        OR strpos(lower(coalesce(p_error_message, '')), lower(btrim(p_filter))) > 0
        OR strpos(lower(coalesce(p_batch_id, '')), lower(btrim(p_filter))) > 0;
$$;

-- Which failed (and with p_include_dead_letter, dead-lettered) staging rows these selectors name: the one
-- definition of a retry's scope. retry_failed() re-queues exactly these rows; retry_scope_count() is the
-- blast radius the console states before it asks. Selectors combine with AND; with none, only p_all
-- selects anything. p_filter is the Backlog's filter text (backlog_row_matches), a value, never SQL.
CREATE OR REPLACE FUNCTION retry_scope(
    p_staging_ids bigint[] DEFAULT NULL,
    p_batch_id text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_all boolean DEFAULT false,
    p_include_dead_letter boolean DEFAULT false,
    p_filter text DEFAULT NULL
)
RETURNS TABLE(staging_id bigint, ingestion_timestamp timestamptz)
LANGUAGE plpgsql   -- not sql: Citus cannot plan a SQL function's parameters over distributed staging
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT s.staging_id, s.ingestion_timestamp
    FROM financial_transactions_staging s
    WHERE s.processing_status = ANY (CASE WHEN p_include_dead_letter
                                          THEN ARRAY['failed', 'dead_letter']::varchar[]
                                          ELSE ARRAY['failed']::varchar[] END)
      AND (p_staging_ids IS NULL OR s.staging_id = ANY (p_staging_ids))
      AND (p_batch_id IS NULL OR s.batch_id = p_batch_id)
      AND (p_error_code IS NULL OR s.error_code = p_error_code)
      AND (p_filter IS NULL OR backlog_row_matches(p_filter, s.processing_status, s.error_code, s.error_message,
                                                   s.batch_id, s.staging_id, s.transaction_id))
      AND (p_staging_ids IS NOT NULL OR p_batch_id IS NOT NULL OR p_error_code IS NOT NULL
           OR p_filter IS NOT NULL OR coalesce(p_all, false));
END;
$$;
COMMENT ON FUNCTION retry_scope(bigint[], text, text, boolean, boolean, text) IS
    'The staging rows retry_failed() would re-queue for these selectors (the one definition of its scope).';

CREATE OR REPLACE FUNCTION retry_scope_count(
    p_staging_ids bigint[] DEFAULT NULL,
    p_batch_id text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_all boolean DEFAULT false,
    p_include_dead_letter boolean DEFAULT false,
    p_filter text DEFAULT NULL
)
RETURNS bigint
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT count(*) FROM retry_scope(p_staging_ids, p_batch_id, p_error_code, p_all, p_include_dead_letter,
                                     p_filter);
$$;
COMMENT ON FUNCTION retry_scope_count(bigint[], text, text, boolean, boolean, text) IS
    'How many rows retry_failed() would re-queue for these selectors: the blast radius shown before a retry.';

CREATE OR REPLACE FUNCTION retry_failed(
    p_staging_ids bigint[] DEFAULT NULL,
    p_batch_id text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_all boolean DEFAULT false,
    p_include_dead_letter boolean DEFAULT false,
    p_reason text DEFAULT NULL,
    p_filter text DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET jit = off   -- JIT compiled the chunk's statements for 12x their cost (Debian's PostgreSQL 15)
AS $$
DECLARE
    v_start    timestamptz := clock_timestamp();
    v_statuses varchar[] := CASE WHEN p_include_dead_letter THEN ARRAY['failed', 'dead_letter']::varchar[]
                                 ELSE ARRAY['failed']::varchar[] END;
    v_count    integer;
    v_deltas   jsonb;
BEGIN
    IF p_staging_ids IS NULL AND p_batch_id IS NULL AND p_error_code IS NULL AND p_filter IS NULL
       AND NOT coalesce(p_all, false) THEN
        RAISE EXCEPTION 'retry_failed: say which rows: staging ids, a batch id, an error code, a filter, or p_all => true'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- No chunk is running while this holds every claim bucket, and none starts until it commits:
    -- the rows it reads below are the rows it changes (the workers take no row locks).
    PERFORM financial_claim_hold_all();
    WITH target AS (
        SELECT s.staging_id, s.ingestion_timestamp, s.processing_status
        FROM financial_transactions_staging s
        WHERE (s.staging_id, s.ingestion_timestamp) IN (
                  SELECT r.staging_id, r.ingestion_timestamp
                  FROM retry_scope(p_staging_ids, p_batch_id, p_error_code, p_all, p_include_dead_letter,
                                   p_filter) r)
          AND s.processing_status = ANY (v_statuses)
    ),
    upd AS (
        UPDATE financial_transactions_staging s
        SET processing_status = 'pending',
            next_attempt_at = now(),
            retry_count = 0,
            requeue_count = s.requeue_count + 1,
            ingestion_timestamp = s.ingestion_timestamp   -- the same value (see above)
        FROM target t
        WHERE s.staging_id = t.staging_id
          AND s.ingestion_timestamp = t.ingestion_timestamp
          -- checked again on the row as updated: a park may have moved a dead letter since it was read
          AND s.processing_status = t.processing_status
        RETURNING s.ingestion_minute, t.processing_status AS prev_status
    ),
    per_minute AS (
        SELECT u.ingestion_minute AS minute_bucket,
               count(*) AS pending_delta,
               -count(*) FILTER (WHERE u.prev_status = 'failed') AS failed_delta,
               -count(*) FILTER (WHERE u.prev_status = 'dead_letter') AS dead_letter_delta
        FROM upd u
        GROUP BY 1
    )
    SELECT (SELECT count(*) FROM upd), (SELECT jsonb_agg(to_jsonb(m)) FROM per_minute m)
    INTO v_count, v_deltas;

    PERFORM financial_rollup_apply(v_deltas);
    IF v_count > 0 THEN
        PERFORM pg_notify('opsconsole_staging', json_build_object('requeued', v_count)::text);
    END IF;
    PERFORM record_audit(
        'retry_failed',
        jsonb_build_object('staging_ids', to_jsonb(p_staging_ids), 'batch_id', p_batch_id,
                           'error_code', p_error_code, 'all', coalesce(p_all, false),
                           'include_dead_letter', coalesce(p_include_dead_letter, false))
            || CASE WHEN p_filter IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('filter', p_filter) END,
        jsonb_build_object('requeued', v_count),
        'ok',
        round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3),
        p_reason);
    RETURN v_count;
END;
$$;


------------------------------------------------------------------------------------------------------
-- financial_transactions.is_processed follows the ledger
------------------------------------------------------------------------------------------------------
-- The chunk flags rows that exist when it runs; this covers source rows that arrive afterwards.
-- Shard-local on Citus, where financial_transactions is distributed by account_id and co-located
-- with the ledger: the trigger runs on the shard that received the rows, reads the ledger's shard of
-- the same accounts (shard_local_to, as the TRUNCATE captures do) and flags the rows of its own shard
-- (TG_RELID), both by name with plain statements on that node; no distributed statement runs from a
-- shard trigger (docs/scaling.md, "Triggers"). On one server both are the tables themselves. Two
-- statements, with the new keys as arrays: a statement Citus plans cannot read a transition table.
-- The flags' UPDATE fires the customer-360 capture of the same shard, which queues the orders.
CREATE OR REPLACE FUNCTION financial_transactions_mark_processed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_acc bigint[];
    v_tx  bigint[];
BEGIN
    SELECT array_agg(n.account_id), array_agg(n.transaction_id) INTO v_acc, v_tx
    FROM new_rows n
    WHERE NOT n.is_processed;
    IF v_acc IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT array_agg(l.account_id), array_agg(l.transaction_id) FROM %s l '
                   'WHERE (l.account_id, l.transaction_id) IN '
                   '(SELECT k.a, k.t FROM unnest($1, $2) AS k(a, t))',
                   shard_local_to('financial_transaction_ledger', TG_RELID))
        INTO v_acc, v_tx
        USING v_acc, v_tx;
    IF v_acc IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('UPDATE %s f SET is_processed = true FROM unnest($1, $2) AS k(a, t) '
                   'WHERE f.account_id = k.a AND f.transaction_id = k.t AND NOT f.is_processed',
                   TG_RELID::regclass)
        USING v_acc, v_tx;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER financial_transactions_mark_processed AFTER INSERT ON financial_transactions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION financial_transactions_mark_processed();


-- What financial_fraud_minutes must hold, summed from the processed rows (for the given accounts, or
-- all): the one definition the rebuild writes and reconcile compares with. Invoker's rights: it
-- reads only what the caller may read. PL/pgSQL, not SQL: Citus cannot plan a SQL function's
-- parameters against a distributed table ("could not create distributed plan").
CREATE OR REPLACE FUNCTION financial_fraud_minutes_expected(p_accounts bigint[] DEFAULT NULL)
RETURNS TABLE (account_id bigint, minute timestamptz, row_count bigint, amount_abs_sum numeric,
               max_staging_id bigint)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT p.account_id, date_bin('1 minute', p.transaction_timestamp, timestamptz 'epoch'), count(*),
           sum(p.amount_abs), max(coalesce(p.staging_id, 0))
    FROM financial_transactions_processed p
    WHERE isfinite(p.transaction_timestamp)
      AND (p_accounts IS NULL OR p.account_id = ANY (p_accounts))
    GROUP BY 1, 2;
END;
$$;


-- Rebuilds financial_fraud_minutes from the processed rows, for the given accounts or all: the
-- correction an admin runs after reconcile reports fraud_minutes_differ (the chunk keeps the table as
-- it inserts processed rows; this is for rows that came another way: a bulk load, a test's history,
-- a chunk that ran a definition from before 0034). Workers need not stop: the lock waits for the
-- chunks writing minutes to commit, and holds the next ones at their step 2 until the rebuild
-- commits, so it sums every processed row a chunk wrote and no chunk adds to a minute it rewrites.
-- Audited as financial_fraud_minutes_rebuild; returns the minutes written.
CREATE OR REPLACE FUNCTION financial_fraud_minutes_rebuild(p_accounts bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
    v_n bigint;
BEGIN
    LOCK TABLE financial_fraud_minutes IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM financial_fraud_minutes f WHERE p_accounts IS NULL OR f.account_id = ANY (p_accounts);
    INSERT INTO financial_fraud_minutes (account_id, minute, row_count, amount_abs_sum, max_staging_id)
    SELECT e.account_id, e.minute, e.row_count, e.amount_abs_sum, e.max_staging_id
    FROM financial_fraud_minutes_expected(p_accounts) e;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    PERFORM record_audit(
        'financial_fraud_minutes_rebuild', jsonb_build_object('accounts', to_jsonb(p_accounts)),
        jsonb_build_object('minutes', v_n), 'ok',
        round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3), NULL);
    RETURN v_n;
END;
$$;


-- Repairs is_processed from the ledger (both directions); for the rare race where a source row and
-- its processing commit at the same moment. Returns the number of rows changed.
CREATE OR REPLACE FUNCTION sync_financial_processed_flags()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_n integer;
BEGIN
    UPDATE financial_transactions f
    SET is_processed = EXISTS (SELECT 1 FROM financial_transaction_ledger l
                               WHERE l.account_id = f.account_id AND l.transaction_id = f.transaction_id)
    WHERE f.is_processed IS DISTINCT FROM
          EXISTS (SELECT 1 FROM financial_transaction_ledger l
                  WHERE l.account_id = f.account_id AND l.transaction_id = f.transaction_id);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;


------------------------------------------------------------------------------------------------------
-- Reconciliation: mismatches between staging, processed, the ledger, financial_transactions, erp_orders
------------------------------------------------------------------------------------------------------
-- One row per check, always (mismatch_count 0 when clean), with up to 10 sample ids (transaction_id,
-- or staging_id where the check is about staging rows; id_kind says which). Full scans: an operator
-- check, not a hot path.
CREATE OR REPLACE FUNCTION reconcile_financial_pipeline()
RETURNS TABLE(check_name text, mismatch_count bigint, id_kind text, sample_ids bigint[], description text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
    WITH
    -- The ledger, the processed rows and financial_transactions are read once each. On Citus they
    -- are distributed and staging is not (erp_order_keys is a reference table): Citus refuses a join of the two kinds
    -- ("direct joins between distributed and local tables are not supported"), so the three reads
    -- become intermediate results and the checks below run on the coordinator.
    led AS MATERIALIZED (
        SELECT l.account_id, l.transaction_id, l.transaction_timestamp, l.payload_hash, l.staging_id
        FROM financial_transaction_ledger l
    ),
    proc AS MATERIALIZED (
        SELECT p.account_id, p.transaction_id, p.transaction_timestamp, p.payload_hash, p.staging_id,
               p.amount, p.transaction_type, p.reference_data
        FROM financial_transactions_processed p
    ),
    src AS MATERIALIZED (
        SELECT f.account_id, f.transaction_id, f.transaction_timestamp, f.amount, f.transaction_type,
               f.is_processed
        FROM financial_transactions f
    ),
    -- the staged rows that a replay or a payload conflict decided, whole (their hash is computed)
    replays AS MATERIALIZED (
        SELECT s.staging_id, s.account_id, s.transaction_id, s.processing_status, s.error_code, s
        FROM financial_transactions_staging s
        WHERE s.processing_status = 'duplicate' OR s.error_code = 'payload_conflict'
    ),
    ledger_without_processed AS (
        SELECT l.transaction_id AS id FROM led l
        WHERE NOT EXISTS (SELECT 1 FROM proc p
                          WHERE p.account_id = l.account_id
                            AND p.transaction_timestamp = l.transaction_timestamp
                            AND p.transaction_id = l.transaction_id)
    ),
    processed_without_ledger AS (
        SELECT p.transaction_id AS id FROM proc p
        LEFT JOIN led l
          ON l.account_id = p.account_id AND l.transaction_id = p.transaction_id
        WHERE l.transaction_id IS NULL
           OR l.transaction_timestamp <> p.transaction_timestamp
           OR l.payload_hash IS DISTINCT FROM p.payload_hash
    ),
    processed_differs_from_staging AS (
        -- while staging still holds the winning row, the processed row must carry its payload
        SELECT p.transaction_id AS id FROM proc p
        JOIN financial_transactions_staging s ON s.staging_id = p.staging_id
        WHERE (s.transaction_id, s.account_id, s.transaction_timestamp, s.amount, s.transaction_type, s.reference_data)
              IS DISTINCT FROM
              (p.transaction_id, p.account_id, p.transaction_timestamp, p.amount, p.transaction_type, p.reference_data)
    ),
    processed_twice AS (
        SELECT p.transaction_id AS id FROM proc p
        GROUP BY p.account_id, p.transaction_id HAVING count(*) > 1
    ),
    staging_processed_not_winner AS (
        SELECT s.staging_id AS id FROM financial_transactions_staging s
        LEFT JOIN led l
          ON l.account_id = s.account_id AND l.transaction_id = s.transaction_id
        WHERE s.processing_status = 'processed' AND (l.staging_id IS DISTINCT FROM s.staging_id)
    ),
    staging_winner_not_processed AS (
        SELECT s.staging_id AS id FROM financial_transactions_staging s
        JOIN led l ON l.staging_id = s.staging_id
        WHERE s.processing_status <> 'processed'
    ),
    staging_duplicate_mismatch AS (
        -- the staged replays and conflicts, with their payload hash (one call for all of them)
        SELECT d.staging_id AS id
        FROM replays d
        JOIN financial_payload_hashes(ARRAY(SELECT r.s FROM replays r)) h ON h.staging_id = d.staging_id
        LEFT JOIN led l
          ON l.account_id = d.account_id AND l.transaction_id = d.transaction_id
        WHERE (d.processing_status = 'duplicate' AND l.payload_hash IS DISTINCT FROM h.payload_hash)
           OR (d.error_code = 'payload_conflict' AND (l.payload_hash IS NULL OR l.payload_hash = h.payload_hash))
    ),
    source_flag_missing AS (
        SELECT f.transaction_id AS id FROM src f
        JOIN led l
          ON l.account_id = f.account_id AND l.transaction_id = f.transaction_id
        WHERE NOT f.is_processed
    ),
    source_flag_without_ledger AS (
        SELECT f.transaction_id AS id FROM src f
        WHERE f.is_processed
          AND NOT EXISTS (SELECT 1 FROM led l
                          WHERE l.account_id = f.account_id AND l.transaction_id = f.transaction_id)
    ),
    source_payload_differs AS (
        -- the id was processed (under any account), but no processed row carries the source's payload
        SELECT f.transaction_id AS id FROM src f
        WHERE EXISTS (SELECT 1 FROM led l
                      JOIN proc p
                        ON p.account_id = l.account_id AND p.transaction_timestamp = l.transaction_timestamp
                       AND p.transaction_id = l.transaction_id
                      WHERE l.transaction_id = f.transaction_id)
          AND NOT EXISTS (SELECT 1 FROM proc p
                          WHERE p.account_id IS NOT DISTINCT FROM f.account_id
                            AND p.transaction_id = f.transaction_id
                            AND p.transaction_timestamp IS NOT DISTINCT FROM f.transaction_timestamp
                            AND p.amount IS NOT DISTINCT FROM f.amount
                            AND p.transaction_type IS NOT DISTINCT FROM f.transaction_type)
    ),
    processed_order_missing AS (
        SELECT p.transaction_id AS id FROM proc p
        WHERE reference_order_id(p.reference_data) IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM erp_order_keys k
                          WHERE k.order_id = reference_order_id(p.reference_data))
    ),
    fraud_minutes_differ AS (
        -- financial_fraud_minutes against the processed rows it sums: the chunk keeps it, so a
        -- difference is a processed row written or changed another way
        -- (reconcile --rebuild-minutes: financial_fraud_minutes_rebuild corrects it)
        SELECT DISTINCT coalesce(m.account_id, e.account_id) AS id
        FROM (SELECT f.account_id, f.minute, f.row_count, f.amount_abs_sum, f.max_staging_id
              FROM financial_fraud_minutes f) m
        FULL JOIN financial_fraud_minutes_expected() e
          ON e.account_id = m.account_id AND e.minute = m.minute
        WHERE (m.row_count, m.amount_abs_sum, m.max_staging_id)
              IS DISTINCT FROM (e.row_count, e.amount_abs_sum, e.max_staging_id)
    ),
    staging_counts_drift AS (
        -- the maintained counts (32_staging_counts.sql) against a count, in the same snapshot: every
        -- change of state moves them in its own transaction, so any difference is a writer that
        -- skipped its count (recount_financial_staging() corrects it)
        SELECT (abs(d.pending_delta) + abs(d.failed_delta) + abs(d.dead_letter_delta))::bigint AS n
        FROM financial_staging_counts_drift() d
    )
    SELECT c.check_name, c.n, c.id_kind, c.sample, c.description
    FROM (
        SELECT 'ledger_without_processed' AS check_name, (SELECT count(*) FROM ledger_without_processed) AS n,
               'transaction_id' AS id_kind,
               ARRAY(SELECT id FROM ledger_without_processed ORDER BY id LIMIT 10) AS sample,
               'ledger rows whose processed row is missing' AS description, 1 AS ord
        UNION ALL
        SELECT 'processed_without_ledger', (SELECT count(*) FROM processed_without_ledger), 'transaction_id',
               ARRAY(SELECT id FROM processed_without_ledger ORDER BY id LIMIT 10),
               'processed rows with no ledger row, or whose timestamp/payload differ from it', 2
        UNION ALL
        SELECT 'processed_differs_from_staging', (SELECT count(*) FROM processed_differs_from_staging),
               'transaction_id', ARRAY(SELECT id FROM processed_differs_from_staging ORDER BY id LIMIT 10),
               'processed rows whose payload differs from the staged row they came from', 2
        UNION ALL
        SELECT 'processed_twice', (SELECT count(*) FROM processed_twice), 'transaction_id',
               ARRAY(SELECT id FROM processed_twice ORDER BY id LIMIT 10),
               'transaction_ids present more than once in processed (across partitions)', 3
        UNION ALL
        SELECT 'staging_processed_not_winner', (SELECT count(*) FROM staging_processed_not_winner), 'staging_id',
               ARRAY(SELECT id FROM staging_processed_not_winner ORDER BY id LIMIT 10),
               'staging rows marked processed that are not the ledger''s row for their transaction_id', 4
        UNION ALL
        SELECT 'staging_winner_not_processed', (SELECT count(*) FROM staging_winner_not_processed), 'staging_id',
               ARRAY(SELECT id FROM staging_winner_not_processed ORDER BY id LIMIT 10),
               'staging rows the ledger names as processed but marked otherwise', 5
        UNION ALL
        SELECT 'staging_duplicate_mismatch', (SELECT count(*) FROM staging_duplicate_mismatch), 'staging_id',
               ARRAY(SELECT id FROM staging_duplicate_mismatch ORDER BY id LIMIT 10),
               'duplicates whose payload differs from the ledger, or conflicts whose payload matches it', 6
        UNION ALL
        SELECT 'source_flag_missing', (SELECT count(*) FROM source_flag_missing), 'transaction_id',
               ARRAY(SELECT id FROM source_flag_missing ORDER BY id LIMIT 10),
               'financial_transactions processed (in the ledger) but is_processed = false', 7
        UNION ALL
        SELECT 'source_flag_without_ledger', (SELECT count(*) FROM source_flag_without_ledger), 'transaction_id',
               ARRAY(SELECT id FROM source_flag_without_ledger ORDER BY id LIMIT 10),
               'financial_transactions with is_processed = true that were never processed', 8
        UNION ALL
        SELECT 'source_payload_differs', (SELECT count(*) FROM source_payload_differs), 'transaction_id',
               ARRAY(SELECT id FROM source_payload_differs ORDER BY id LIMIT 10),
               'financial_transactions whose account/timestamp/amount/type differ from the processed row', 9
        UNION ALL
        SELECT 'processed_order_missing', (SELECT count(*) FROM processed_order_missing), 'transaction_id',
               ARRAY(SELECT id FROM processed_order_missing ORDER BY id LIMIT 10),
               'processed rows whose reference_data.order_id is no longer in erp_orders', 10
        UNION ALL
        SELECT 'staging_counts_drift', (SELECT d.n FROM staging_counts_drift d), 'none', ARRAY[]::bigint[],
               'staging rows by state (pending, failed, dead_letter) that the maintained counts miscount', 11
        UNION ALL
        SELECT 'fraud_minutes_differ', (SELECT count(*) FROM fraud_minutes_differ), 'account_id',
               ARRAY(SELECT id FROM fraud_minutes_differ ORDER BY id LIMIT 10),
               'accounts whose fraud-window minutes differ from their processed rows', 12
    ) c
    ORDER BY c.ord;
END;
$$;


------------------------------------------------------------------------------------------------------
-- The monitor: the spec's columns, from the rollups (cheap at any staging size, TimeZone-independent)
------------------------------------------------------------------------------------------------------
-- Buckets are ingestion minutes (UTC-truncated instants). avg/max/p95 are over processed rows;
-- p95 is interpolated inside its histogram bucket (capped at the minute's max), so it is exact to the
-- bucket's width (finest around the 1 s SLA). sla_breach_rate = processed rows slower than sla_ms per
-- 100 rows no longer pending, as in the spec.
-- financial_processing_minutes is the one definition of those columns for any window of the rollups
-- (p_until NULL: no upper bound); the monitor view is its last hour, and the console's time cursor
-- reads older windows through it for an incident review.
CREATE OR REPLACE FUNCTION financial_processing_minutes(p_since timestamptz, p_until timestamptz DEFAULT NULL)
RETURNS TABLE(
    minute_bucket timestamptz,
    total_transactions bigint,
    processed_count bigint,
    failed_count bigint,
    pending_count bigint,
    avg_processing_ms numeric,
    max_processing_ms integer,
    p95_processing_ms double precision,
    sla_breach_rate double precision,
    dead_letter_count bigint,
    duplicate_count bigint
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
WITH recent AS (
    SELECT r.*
    FROM financial_processing_rollup r
    WHERE r.minute_bucket >= p_since
      AND (p_until IS NULL OR r.minute_bucket <= p_until)
),
hist AS (
    SELECT h.minute_bucket, h.bucket_lower_ms, h.bucket_upper_ms, h.row_count,
           sum(h.row_count) OVER (PARTITION BY h.minute_bucket ORDER BY h.bucket_lower_ms) AS cum,
           sum(h.row_count) OVER (PARTITION BY h.minute_bucket) AS total
    FROM financial_latency_rollup h
    WHERE h.minute_bucket >= p_since
      AND (p_until IS NULL OR h.minute_bucket <= p_until)
      AND h.row_count > 0
),
p95 AS (
    SELECT DISTINCT ON (h.minute_bucket)
           h.minute_bucket, h.bucket_lower_ms, h.bucket_upper_ms, h.row_count, h.cum, h.total
    FROM hist h
    WHERE h.cum >= 0.95 * h.total
    ORDER BY h.minute_bucket, h.bucket_lower_ms
)
SELECT r.minute_bucket,
       r.total_transactions,
       r.processed_count,
       r.failed_count,
       r.pending_count,
       round(r.latency_sum_ms::numeric / nullif(r.latency_count, 0), 3) AS avg_processing_ms,
       r.latency_max_ms AS max_processing_ms,
       least(p.bucket_lower_ms
             + (coalesce(p.bucket_upper_ms, r.latency_max_ms) - p.bucket_lower_ms)
               * (0.95 * p.total - (p.cum - p.row_count)) / p.row_count,
             r.latency_max_ms)::double precision AS p95_processing_ms,
       r.sla_breaches::double precision
           / nullif(r.total_transactions - r.pending_count, 0) * 100 AS sla_breach_rate,
       r.dead_letter_count,
       r.duplicate_count
FROM recent r
LEFT JOIN p95 p ON p.minute_bucket = r.minute_bucket
ORDER BY r.minute_bucket DESC;
$$;
COMMENT ON FUNCTION financial_processing_minutes(timestamptz, timestamptz) IS
    'The monitor''s columns per ingestion minute for any window of the rollups, newest first.';

CREATE OR REPLACE VIEW financial_processing_monitor AS
SELECT m.*
FROM financial_processing_minutes(now() - interval '1 hour') m
ORDER BY m.minute_bucket DESC;
COMMENT ON VIEW financial_processing_monitor IS
    'Last hour by ingestion minute, from the rollups: counts by state, latency avg/max/p95, SLA breach rate.';


-- What is owed work, by state and error code.
CREATE OR REPLACE VIEW financial_pipeline_backlog AS
SELECT s.processing_status,
       s.error_code,
       count(*) AS row_count,
       count(*) FILTER (WHERE s.processing_status IN ('pending', 'failed') AND s.next_attempt_at <= now()) AS due_now,
       min(s.next_attempt_at) FILTER (WHERE s.processing_status IN ('pending', 'failed')) AS oldest_due_at,
       min(s.ingestion_timestamp) AS oldest_ingested_at,
       max(s.processed_at) AS last_attempt_at,
       max(s.retry_count) AS max_retry_count
FROM financial_transactions_staging s
WHERE s.processing_status IN ('pending', 'failed', 'dead_letter', 'parked')
GROUP BY s.processing_status, s.error_code;
COMMENT ON VIEW financial_pipeline_backlog IS
    'Rows waiting (pending), retrying (failed) or stuck (dead_letter), by error code, with the oldest due time.';


------------------------------------------------------------------------------------------------------
-- Retention: drop whole days; keep what is still owed work
------------------------------------------------------------------------------------------------------
-- The spec's name, arguments and result. Each daily partition that ends before now - retention
-- (p_older_than, else staging_retention) is detached, its rows that must stay (pending, failed,
-- dead_letter: owed a retry or an operator's decision) are copied into the DEFAULT partition with
-- every column as it was, and the partition is dropped. processed and duplicate rows go with it: the
-- ledger keeps exactly-once, the rollups keep the monitor, ops_audit_log keeps the audit. The DEFAULT
-- partition (rows older than the partitions, the survivors) is purged the old way: processed and
-- duplicate rows older than the cutoff, at most p_limit per call. staging_rows_deleted counts both.
-- Rollups older than rollup_retention go too. Last, it creates the days ahead (ensure_staging_partitions).
-- Dropping a partition takes an ACCESS EXCLUSIVE lock on staging until commit: workers wait for the
-- few milliseconds of a detach, a survivors' copy and a drop, once a day. Every lock is waited for at
-- most lock_timeout (1 s): behind a long reader the purge fails fast instead of making inserts and
-- claims queue behind it; the caller (opsconsole purge / maintain) retries with backoff.
CREATE OR REPLACE FUNCTION purge_financial_staging(
    p_older_than interval DEFAULT NULL,
    p_limit integer DEFAULT 100000
)
RETURNS TABLE(staging_rows_deleted bigint, rollup_rows_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '1s'
AS $$
DECLARE
    v_start    timestamptz := clock_timestamp();
    v_cfg      financial_pipeline_settings;
    v_cutoff   timestamptz;
    v_default  regclass;
    v_dschema  name;
    v_dname    name;
    v_pschema  name;
    v_pname    name;
    v_cols     name[];
    v_part     record;
    v_rows     bigint;
    v_kept     bigint;
    v_n        bigint;
    v_dropped  text[] := ARRAY[]::text[];
    v_kept_all bigint := 0;
    v_rejects  bigint;
BEGIN
    -- One purge at a time, and not while maintenance works on staging (the key ensure_partitions_step
    -- and ensure_staging_partitions take): a second purge waits here (up to lock_timeout; the caller
    -- retries) and then sees the partitions the first one dropped as gone, instead of colliding.
    PERFORM pg_advisory_xact_lock('financial_transactions_staging'::regclass::oid::bigint);
    SELECT * INTO v_cfg FROM financial_pipeline_settings;
    v_cutoff := now() - coalesce(p_older_than, v_cfg.staging_retention);
    staging_rows_deleted := 0;

    -- Dynamic SQL below names relations only through %I (schema and name from the catalog) and
    -- values only through %L; the column list is formatted with %I inside the format() call.
    SELECT p.partition_name INTO v_default FROM financial_staging_partitions() p WHERE p.range_from IS NULL;
    SELECT n.nspname, c.relname INTO v_dschema, v_dname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_default;
    v_cols := ARRAY(SELECT a.attname FROM pg_attribute a
                    WHERE a.attrelid = 'financial_transactions_staging'::regclass
                      AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum);

    FOR v_part IN
        SELECT p.partition_name, p.range_from FROM financial_staging_partitions() p
        WHERE p.range_to <= v_cutoff
        ORDER BY p.range_from
    LOOP
        IF cardinality(v_dropped) = 0 THEN
            -- DETACH needs it anyway; taken once, before the first, so that no chunk runs halfway
            LOCK TABLE financial_transactions_staging IN ACCESS EXCLUSIVE MODE;
        END IF;
        SELECT n.nspname, c.relname INTO v_pschema, v_pname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_part.partition_name;
        EXECUTE format('ALTER TABLE public.financial_transactions_staging DETACH PARTITION %I.%I',
                       v_pschema, v_pname);
        -- The day's range is no longer covered, so its survivors now belong to DEFAULT. Written into
        -- the partition directly: the arrival trigger (on the parent) does not count them again.
        EXECUTE format('INSERT INTO %I.%I (%s) SELECT %s FROM %I.%I '
                       'WHERE processing_status IN (''pending'', ''failed'', ''dead_letter'', ''parked'')',
                       v_dschema, v_dname,
                       (SELECT string_agg(format('%I', c), ', ' ORDER BY i) FROM unnest(v_cols) WITH ORDINALITY u(c, i)),
                       (SELECT string_agg(format('%I', c), ', ' ORDER BY i) FROM unnest(v_cols) WITH ORDINALITY u(c, i)),
                       v_pschema, v_pname);
        GET DIAGNOSTICS v_kept = ROW_COUNT;
        EXECUTE format('SELECT count(*) FROM %I.%I', v_pschema, v_pname) INTO v_rows;
        v_dropped := v_dropped || v_part.partition_name::text;   -- (its name: after the drop, an OID)
        EXECUTE format('DROP TABLE %I.%I', v_pschema, v_pname);
        staging_rows_deleted := staging_rows_deleted + v_rows - v_kept;
        v_kept_all := v_kept_all + v_kept;
    END LOOP;

    -- DEFAULT: the done rows older than the cutoff, bounded
    EXECUTE format('DELETE FROM %1$I.%2$I d WHERE d.staging_id IN ('
                   'SELECT t.staging_id FROM %1$I.%2$I t WHERE t.processing_status IN (''processed'', ''duplicate'') '
                   'AND t.ingestion_timestamp < %3$L LIMIT %4$L) AND d.ingestion_timestamp < %3$L',
                   v_dschema, v_dname, v_cutoff, p_limit);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    staging_rows_deleted := staging_rows_deleted + v_n;

    -- the transactions rejected before staging (no account, 0031) keep as long as staging rows do
    DELETE FROM financial_staging_rejects r WHERE r.rejected_at < v_cutoff;
    GET DIAGNOSTICS v_rejects = ROW_COUNT;

    DELETE FROM financial_latency_rollup WHERE minute_bucket < now() - v_cfg.rollup_retention;
    DELETE FROM financial_processing_rollup WHERE minute_bucket < now() - v_cfg.rollup_retention;
    GET DIAGNOSTICS rollup_rows_deleted = ROW_COUNT;
    PERFORM financial_staging_counts_fold();  -- the counts of backends gone, into the carry

    -- The days ahead, last: after a drop this session already holds staging exclusively; before one,
    -- an ATTACH (which locks DEFAULT) followed by the LOCK above could deadlock with a claiming worker.
    PERFORM ensure_staging_partitions();

    PERFORM record_audit(
        'purge_financial_staging',
        jsonb_build_object('older_than', coalesce(p_older_than, v_cfg.staging_retention)::text, 'limit', p_limit),
        jsonb_build_object('staging_rows_deleted', staging_rows_deleted, 'rollup_rows_deleted', rollup_rows_deleted,
                           'partitions_dropped', to_jsonb(v_dropped), 'rows_kept_in_default', v_kept_all,
                           'default_rows_deleted', v_n, 'rejects_deleted', v_rejects),
        'ok',
        round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3),
        NULL);
    RETURN NEXT;
END;
$$;
-- financial_transactions_staging is partitioned by ingestion day (the first release's 0011), so
-- retention drops whole days.
--
-- Before that, retention was a bounded DELETE of processed rows: every purged row cost a WAL record, a
-- dead tuple and index cleanup by VACUUM. Now staging is range-partitioned on ingestion_timestamp,
-- one partition per UTC day (financial_transactions_staging_YYYY_MM_DD) plus a DEFAULT partition, so
-- an insert never fails whatever its ingestion time. purge_financial_staging() detaches and drops
-- the days older than the retention after moving the rows that must stay (pending, failed,
-- dead_letter) into the DEFAULT partition: their ingestion_timestamp, staging_id and minute are
-- unchanged, so retries, the rollups and the audit trail still line up. The monitor reads the
-- per-minute rollups and exactly-once reads the ledger, so neither needs the dropped rows.
--
-- The primary key is (staging_id, ingestion_timestamp, account_id) (0032): a unique key must include
-- the partition key, and on Citus the distribution column. staging_id stays unique (one sequence), and a lookup by staging_id alone is one
-- index probe per partition (about retention + 8 of them); the chunk's own updates also give the
-- ingestion-time range of their rows so that only the partitions holding them are probed.

------------------------------------------------------------------------------------------------------
-- Partitions of staging, with their bounds
------------------------------------------------------------------------------------------------------
-- One row per partition; range_from/range_to are NULL for the DEFAULT partition. Bounds are read
-- back from the catalog's own text (pinned TimeZone and DateStyle make it one fixed format).
CREATE OR REPLACE FUNCTION financial_staging_partitions()
RETURNS TABLE(partition_name regclass, range_from timestamptz, range_to timestamptz)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT b.partition_name, b.range_from, b.range_to FROM partition_bounds('financial_transactions_staging') b;
$$;


-- Creates the DEFAULT partition if missing and one partition per UTC day for
-- [now - p_back, now + p_ahead]. A day whose rows already sit in DEFAULT is built detached, the rows
-- moved into it, then attached (ATTACH takes only SHARE UPDATE EXCLUSIVE on the parent, so workers
-- keep going). Returns the number of partitions created. purge_financial_staging() calls it, so a
-- daily purge keeps a week of days ahead; rows beyond that still insert (into DEFAULT).
CREATE OR REPLACE FUNCTION ensure_staging_partitions(
    p_back interval DEFAULT interval '0',
    p_ahead interval DEFAULT interval '7 days'
)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET "TimeZone" = 'UTC'
SET "DateStyle" = 'ISO, YMD'
AS $$
DECLARE
    v_parent  regclass := 'financial_transactions_staging'::regclass;
    v_default regclass;
    v_day     date;
    v_last    date;
    v_lo      timestamptz;
    v_hi      timestamptz;
    v_part    text;
    v_dschema name;
    v_dname   name;
    v_cols    name[];
    v_created integer := 0;
BEGIN
    -- the same lock ensure_partitions() takes: one creator at a time per parent
    PERFORM pg_advisory_xact_lock(v_parent::oid::bigint);

    SELECT p.partition_name INTO v_default FROM financial_staging_partitions() p WHERE p.range_from IS NULL;
    IF v_default IS NULL THEN
        CREATE TABLE public.financial_transactions_staging_default
            PARTITION OF financial_transactions_staging DEFAULT;
        v_default := 'public.financial_transactions_staging_default'::regclass;
        v_created := v_created + 1;
    END IF;

    -- Dynamic SQL below: relations through %I (schema and name from the catalog), values through %L,
    -- the column list formatted with %I inside the format() call.
    SELECT n.nspname, c.relname INTO v_dschema, v_dname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_default;
    v_cols := ARRAY(SELECT a.attname FROM pg_attribute a
                    WHERE a.attrelid = v_parent AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                    ORDER BY a.attnum);

    v_day := (now() - p_back)::date;     -- UTC days (TimeZone is pinned)
    v_last := (now() + p_ahead)::date;
    WHILE v_day <= v_last LOOP
        v_lo := v_day::timestamptz;
        v_hi := (v_day + 1)::timestamptz;
        IF NOT EXISTS (SELECT 1 FROM financial_staging_partitions() p
                       WHERE p.range_from < v_hi AND p.range_to > v_lo) THEN
            v_part := 'financial_transactions_staging_' || to_char(v_day, 'YYYY_MM_DD');
            EXECUTE format('CREATE TABLE public.%I (LIKE public.financial_transactions_staging '
                           'INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS)', v_part);
            -- generated columns cannot be inserted into: move the stored columns only
            EXECUTE format('WITH moved AS (DELETE FROM %I.%I WHERE ingestion_timestamp >= %L AND ingestion_timestamp < %L '
                           'RETURNING *) INSERT INTO public.%I (%s) SELECT %s FROM moved',
                           v_dschema, v_dname, v_lo, v_hi, v_part,
                           (SELECT string_agg(format('%I', c), ', ' ORDER BY i) FROM unnest(v_cols) WITH ORDINALITY u(c, i)),
                           (SELECT string_agg(format('%I', c), ', ' ORDER BY i) FROM unnest(v_cols) WITH ORDINALITY u(c, i)));
            EXECUTE format('ALTER TABLE public.financial_transactions_staging ATTACH PARTITION public.%I '
                           'FOR VALUES FROM (%L) TO (%L)', v_part, v_lo, v_hi);
            v_created := v_created + 1;
        END IF;
        v_day := v_day + 1;
    END LOOP;
    RETURN v_created;
END;
$$;
COMMENT ON FUNCTION ensure_staging_partitions(interval, interval) IS
    'Create the daily partitions of financial_transactions_staging for [now - p_back, now + p_ahead] and its DEFAULT; idempotent.';
