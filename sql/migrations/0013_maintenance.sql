-- 0013: maintenance in small steps (opsconsole maintain), and a purge that waits at most a second for
-- its locks and runs one at a time. INTERIM FILE: written before the sql-layout squash landed; its
-- functions belong in sql/definitions (the lead or `life` moves them there at merge).

-- Periodic maintenance in small steps: partitions ahead, rows out of DEFAULT in bounded batches,
-- statistics. Python (opsconsole.ops.maintenance) calls one step per transaction; every step runs
-- with a short lock_timeout so that loaders and claims never queue behind it for more than about a
-- second, and the caller retries a step that timed out with backoff. Steps are idempotent.

-- The bounds of every partition of a range-partitioned table (NULL bounds for DEFAULT). Bounds are
-- read back from the catalog's own text (pinned TimeZone and DateStyle make it one fixed format).
CREATE OR REPLACE FUNCTION partition_bounds(p_parent regclass)
RETURNS TABLE(partition_name regclass, range_from timestamptz, range_to timestamptz)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
SET "TimeZone" = 'UTC'
SET "DateStyle" = 'ISO, YMD'
AS $$
    SELECT c.oid::regclass,
           (regexp_match(b.bound, '^FOR VALUES FROM \(''([^'']+)''\)'))[1]::timestamptz,
           (regexp_match(b.bound, ' TO \(''([^'']+)''\)$'))[1]::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
    WHERE i.inhparent = p_parent;
$$;

-- Every time-partitioned table of the platform (found in pg_partitioned_table: range-partitioned on
-- one date or timestamptz column) with its maintenance policy: daily partitions a week ahead when its
-- partitions are days (staging), else monthly partitions three months ahead. Rows in DEFAULT from
-- `back` before now onwards are moved into partitions; older ones stay (staging keeps the rows it
-- still owes work there on purpose, see purge_financial_staging).
CREATE OR REPLACE FUNCTION maintenance_partitioned_tables()
RETURNS TABLE(parent regclass, partition_key name, key_type regtype, grain text, ahead interval,
              back interval, default_partition regclass, partitions integer)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT pt.partrelid::regclass, a.attname, a.atttypid::regtype, g.grain,
           CASE g.grain WHEN 'day' THEN interval '7 days' ELSE interval '3 months' END,
           CASE WHEN g.grain = 'day'
                THEN coalesce((SELECT s.staging_retention FROM financial_pipeline_settings s), interval '7 days')
                ELSE interval '24 months' END,
           nullif(pt.partdefid, 0)::regclass,
           (SELECT count(*)::integer FROM pg_inherits i WHERE i.inhparent = pt.partrelid)
    FROM pg_partitioned_table pt
    JOIN pg_class c ON c.oid = pt.partrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
    CROSS JOIN LATERAL (
        SELECT CASE WHEN max(b.range_to - b.range_from) <= interval '1 day' THEN 'day' ELSE 'month' END AS grain
        FROM partition_bounds(pt.partrelid) b
    ) g
    WHERE pt.partstrat = 'r' AND pt.partnatts = 1 AND NOT c.relispartition
      AND n.nspname = 'public'
      AND a.atttypid IN ('date'::regtype, 'timestamptz'::regtype)
    ORDER BY 1::text;
$$;

-- One bounded step of partition maintenance on one table, in the caller's transaction:
--   'moved'    up to p_limit rows of the earliest range that has rows in DEFAULT went into that
--              range's partition-to-be (a plain table with the partition's name, not yet attached);
--   'attached' the last of them went, and the table was attached as the range's partition;
--   'created'  the next missing partition ahead (no rows waiting for it) was created;
--   no row     nothing to do.
-- PostgreSQL refuses a partition whose range still has rows in DEFAULT, so the rows leave DEFAULT
-- first, in batches, and the partition is attached with the last batch: DEFAULT is locked against
-- writes (SHARE ROW EXCLUSIVE, by DISABLE TRIGGER) only for the batch, and no single transaction
-- moves more than p_limit rows. While a range is being moved its rows already moved are not visible
-- through the parent; an interrupted move is resumed by the next step (the unattached table with the
-- partition's name is the marker). Moving does not fire row triggers (the rows are relocated, not
-- new or gone: erp_order_keys stays as it is). Locks wait at most lock_timeout (1 s); the caller retries.
-- p_now is the clock the horizons are measured from (tests drive time through it).
CREATE OR REPLACE FUNCTION ensure_partitions_step(
    p_parent regclass,
    p_limit integer DEFAULT 10000,
    p_now timestamptz DEFAULT now()
)
RETURNS TABLE(action text, partition_name text, rows_moved bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '1s'
SET "TimeZone" = 'UTC'
SET "DateStyle" = 'ISO, YMD'
AS $$
DECLARE
    t        record;
    v_table  text;
    v_step   interval;
    v_lo     timestamptz;
    v_hi     timestamptz;
    v_first  timestamptz;
    v_name   text;
    v_blo    text;
    v_bhi    text;
    v_cols   text;
    v_left   bigint;
    v_moved  bigint;
    v_resume text;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'ensure_partitions_step: p_limit must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO t FROM maintenance_partitioned_tables() m WHERE m.parent = p_parent;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ensure_partitions_step: % is not a time-partitioned table', p_parent
            USING ERRCODE = 'wrong_object_type';
    END IF;
    -- one creator at a time per parent (the key ensure_partitions and ensure_staging_partitions take)
    PERFORM pg_advisory_xact_lock(p_parent::oid::bigint);

    SELECT c.relname INTO v_table FROM pg_class c WHERE c.oid = p_parent;
    v_step := CASE t.grain WHEN 'day' THEN interval '1 day' ELSE interval '1 month' END;

    -- 1. a range with rows waiting: an interrupted move first, else the earliest range in DEFAULT
    SELECT c.relname INTO v_resume
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind = 'r' AND NOT c.relispartition
      AND c.relname ~ ('^' || regexp_replace(v_table, '([^a-zA-Z0-9_])', '\\\1', 'g')
                       || CASE t.grain WHEN 'day' THEN '_\d{4}_\d{2}_\d{2}$' ELSE '_\d{4}_\d{2}$' END)
    ORDER BY c.relname
    LIMIT 1;
    IF v_resume IS NOT NULL THEN
        v_lo := to_date(right(v_resume, CASE t.grain WHEN 'day' THEN 10 ELSE 7 END),
                        CASE t.grain WHEN 'day' THEN 'YYYY_MM_DD' ELSE 'YYYY_MM' END)::timestamptz;
    ELSIF t.default_partition IS NOT NULL THEN
        EXECUTE format('SELECT min(%1$I)::timestamptz FROM %2$s WHERE %1$I >= %3$L AND %1$I < %4$L',
                       t.partition_key, t.default_partition,
                       date_trunc(t.grain, p_now - t.back), date_trunc(t.grain, p_now + t.ahead) + v_step)
            INTO v_first;
        v_lo := date_trunc(t.grain, v_first);
    END IF;

    IF v_lo IS NULL THEN
        -- 2. no rows waiting: the next missing partition from this period to `ahead`
        v_lo := date_trunc(t.grain, p_now);
        WHILE v_lo <= date_trunc(t.grain, p_now + t.ahead)
              AND EXISTS (SELECT 1 FROM partition_bounds(p_parent) b
                          WHERE b.range_from < v_lo + v_step AND b.range_to > v_lo) LOOP
            v_lo := v_lo + v_step;
        END LOOP;
        IF v_lo > date_trunc(t.grain, p_now + t.ahead) THEN
            RETURN;  -- 3. nothing to do
        END IF;
    END IF;

    v_hi := v_lo + v_step;
    v_name := v_table || '_' || to_char(v_lo, CASE t.grain WHEN 'day' THEN 'YYYY_MM_DD' ELSE 'YYYY_MM' END);
    IF t.key_type = 'date'::regtype THEN
        v_blo := v_lo::date::text;
        v_bhi := v_hi::date::text;
    ELSE
        v_blo := v_lo::text;
        v_bhi := v_hi::text;
    END IF;
    IF to_regclass(format('public.%I', v_name)) IS NULL THEN
        EXECUTE format('CREATE TABLE public.%I (LIKE %s INCLUDING DEFAULTS INCLUDING GENERATED '
                       'INCLUDING CONSTRAINTS)', v_name, p_parent);
        -- the bound as a constraint: ATTACH then needs no scan of the new partition's rows
        EXECUTE format('ALTER TABLE public.%I ADD CONSTRAINT %I CHECK (%I IS NOT NULL AND %I >= %L AND %I < %L)',
                       v_name, v_name || '_bound', t.partition_key, t.partition_key, v_blo,
                       t.partition_key, v_bhi);
    END IF;

    v_moved := 0;
    IF t.default_partition IS NOT NULL THEN
        -- takes SHARE ROW EXCLUSIVE on DEFAULT until commit: no new rows of the range meanwhile
        EXECUTE format('ALTER TABLE %s DISABLE TRIGGER USER', t.default_partition);
        EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %1$s WHERE %2$I >= %3$L AND %2$I < %4$L LIMIT %5$s) x',
                       t.default_partition, t.partition_key, v_blo, v_bhi, p_limit + 1) INTO v_left;
        IF v_left > 0 THEN
            SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols
            FROM pg_attribute a
            WHERE a.attrelid = p_parent AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
            EXECUTE format(
                'WITH moved AS (DELETE FROM %1$s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %1$s '
                'WHERE %2$I >= %3$L AND %2$I < %4$L LIMIT %5$s)) RETURNING *) '
                'INSERT INTO public.%6$I (%7$s) OVERRIDING SYSTEM VALUE SELECT %7$s FROM moved',
                t.default_partition, t.partition_key, v_blo, v_bhi, p_limit, v_name, v_cols);
            GET DIAGNOSTICS v_moved = ROW_COUNT;
        END IF;
        EXECUTE format('ALTER TABLE %s ENABLE TRIGGER USER', t.default_partition);
        IF v_left > p_limit THEN
            action := 'moved';
            partition_name := v_name;
            rows_moved := v_moved;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    EXECUTE format('ALTER TABLE %s ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                   p_parent, v_name, v_blo, v_bhi);
    action := CASE WHEN v_moved > 0 OR v_resume IS NOT NULL THEN 'attached' ELSE 'created' END;
    partition_name := v_name;
    rows_moved := v_moved;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION ensure_partitions_step(regclass, integer, timestamptz) IS
    'One bounded step of partition maintenance: move up to p_limit DEFAULT rows toward their partition, attach it, or create the next one ahead.';

-- Statistics for what maintenance changed: the partitions it touched, their DEFAULT and the parent
-- (autovacuum never analyzes a partitioned parent). ANALYZE takes SHARE UPDATE EXCLUSIVE, which
-- does not block reads, inserts or claims.
CREATE OR REPLACE FUNCTION maintenance_analyze(p_tables regclass[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
SET lock_timeout = '1s'
AS $$
DECLARE
    v_rel regclass;
    v_n   integer := 0;
BEGIN
    FOREACH v_rel IN ARRAY coalesce(p_tables, ARRAY[]::regclass[]) LOOP
        EXECUTE format('ANALYZE %s', v_rel);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END;
$$;

-- Same name, arguments and result as 0011; now one at a time and with a short lock_timeout.
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
    v_cols     text;
    v_part     record;
    v_rows     bigint;
    v_kept     bigint;
    v_n        bigint;
    v_dropped  text[] := ARRAY[]::text[];
    v_kept_all bigint := 0;
BEGIN
    -- One purge at a time, and not while maintenance works on staging (the key ensure_partitions_step
    -- and ensure_staging_partitions take): a second purge waits here (up to lock_timeout; the caller
    -- retries) and then sees the partitions the first one dropped as gone, instead of colliding.
    PERFORM pg_advisory_xact_lock('financial_transactions_staging'::regclass::oid::bigint);
    SELECT * INTO v_cfg FROM financial_pipeline_settings;
    v_cutoff := now() - coalesce(p_older_than, v_cfg.staging_retention);
    staging_rows_deleted := 0;

    SELECT p.partition_name INTO v_default FROM financial_staging_partitions() p WHERE p.range_from IS NULL;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols
    FROM pg_attribute a
    WHERE a.attrelid = 'financial_transactions_staging'::regclass
      AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';

    FOR v_part IN
        SELECT p.partition_name, p.range_from FROM financial_staging_partitions() p
        WHERE p.range_to <= v_cutoff
        ORDER BY p.range_from
    LOOP
        IF cardinality(v_dropped) = 0 THEN
            -- DETACH needs it anyway; taken once, before the first, so that no chunk runs halfway
            LOCK TABLE financial_transactions_staging IN ACCESS EXCLUSIVE MODE;
        END IF;
        EXECUTE format('ALTER TABLE financial_transactions_staging DETACH PARTITION %s', v_part.partition_name);
        -- The day's range is no longer covered, so its survivors now belong to DEFAULT. Written into
        -- the partition directly: the arrival trigger (on the parent) does not count them again.
        EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM %s '
                       'WHERE processing_status IN (''pending'', ''failed'', ''dead_letter'')',
                       v_default, v_cols, v_cols, v_part.partition_name);
        GET DIAGNOSTICS v_kept = ROW_COUNT;
        EXECUTE format('SELECT count(*) FROM %s', v_part.partition_name) INTO v_rows;
        v_dropped := v_dropped || v_part.partition_name::text;   -- (its name: after the drop, an OID)
        EXECUTE format('DROP TABLE %s', v_part.partition_name);
        staging_rows_deleted := staging_rows_deleted + v_rows - v_kept;
        v_kept_all := v_kept_all + v_kept;
    END LOOP;

    -- DEFAULT: the done rows older than the cutoff, bounded
    EXECUTE format('DELETE FROM %1$s d WHERE d.staging_id IN ('
                   'SELECT t.staging_id FROM %1$s t WHERE t.processing_status IN (''processed'', ''duplicate'') '
                   'AND t.ingestion_timestamp < %2$L LIMIT %3$s) AND d.ingestion_timestamp < %2$L',
                   v_default, v_cutoff, p_limit);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    staging_rows_deleted := staging_rows_deleted + v_n;

    DELETE FROM financial_latency_rollup WHERE minute_bucket < now() - v_cfg.rollup_retention;
    DELETE FROM financial_processing_rollup WHERE minute_bucket < now() - v_cfg.rollup_retention;
    GET DIAGNOSTICS rollup_rows_deleted = ROW_COUNT;

    -- The days ahead, last: after a drop this session already holds staging exclusively; before one,
    -- an ATTACH (which locks DEFAULT) followed by the LOCK above could deadlock with a claiming worker.
    PERFORM ensure_staging_partitions();

    PERFORM record_audit(
        'purge_financial_staging',
        jsonb_build_object('older_than', coalesce(p_older_than, v_cfg.staging_retention)::text, 'limit', p_limit),
        jsonb_build_object('staging_rows_deleted', staging_rows_deleted, 'rollup_rows_deleted', rollup_rows_deleted,
                           'partitions_dropped', to_jsonb(v_dropped), 'rows_kept_in_default', v_kept_all,
                           'default_rows_deleted', v_n),
        'ok',
        round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3),
        NULL);
    RETURN NEXT;
END;
$$;


-- Rollups never go negative (same names and arguments as 0003).
-- The one way rollups change. p_deltas is a JSON array of per-minute deltas (any subset of the keys);
-- rows are applied in minute order so that concurrent writers lock rollup rows in the same order.
-- Minutes older than rollup_retention are left alone: the purge deletes them, so a delta there (a
-- retried or late row from long ago) would create the minute anew holding only the delta: negative
-- counts. The monitor reads the last hour; nothing reads a minute past the retention.
CREATE OR REPLACE FUNCTION financial_rollup_apply(p_deltas jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF p_deltas IS NULL OR jsonb_array_length(p_deltas) = 0 THEN
        RETURN;
    END IF;
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
-- Late data: a retry schedule per error code
------------------------------------------------------------------------------------------------------
-- A reference that is not there yet (an ERP batch an hour late) must not be dead-lettered after the
-- settings' 150 s of retries (10+20+40+80 s). Each error code may carry its own schedule; NULL means
-- the settings' max_attempts / backoff_base / backoff_max. order_not_found: 12 attempts, from 1 minute
-- doubling to 1 hour, about 6 hours in all (financial_retry_schedule() shows every code's).
ALTER TABLE financial_error_codes
    ADD COLUMN max_attempts integer CHECK (max_attempts >= 1),
    ADD COLUMN backoff_base interval CHECK (backoff_base >= interval '0'),
    ADD COLUMN backoff_max  interval CHECK (backoff_max >= interval '0');
COMMENT ON COLUMN financial_error_codes.max_attempts IS 'Failures before dead_letter for this code (NULL: financial_pipeline_settings.max_attempts).';
COMMENT ON COLUMN financial_error_codes.backoff_base IS 'First retry delay for this code, doubling per failure (NULL: the settings'' backoff_base).';
COMMENT ON COLUMN financial_error_codes.backoff_max IS 'Longest retry delay for this code (NULL: the settings'' backoff_max).';
UPDATE financial_error_codes
SET max_attempts = 12, backoff_base = interval '1 minute', backoff_max = interval '1 hour'
WHERE error_code = 'order_not_found';

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

-- Same name and arguments as 0011; failed rows now follow their error code's schedule.
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
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_ids     bigint[];
    v_codes   text[];
    v_details text[];
    v_won     boolean[];
    v_bounds  integer[] := financial_latency_bounds();
    v_from    timestamptz;
    v_to      timestamptz;
BEGIN
    -- the chunk's ingestion-time span: prunes the staging UPDATE to the partitions holding its rows
    SELECT min(c.ingestion_timestamp), max(c.ingestion_timestamp) INTO v_from, v_to FROM unnest(p_rows) c;

    -- Step 1: validate, and claim each valid transaction_id in the ledger. One row per id per chunk
    -- competes (the lowest staging_id); ids are inserted in order so that two workers racing on the
    -- same ids wait for each other in the same order (no deadlock). ON CONFLICT waits for a concurrent
    -- inserter to finish, so step 2 (a new snapshot) sees who won.
    WITH c AS (
        SELECT * FROM unnest(p_rows)
    ),
    v AS (
        SELECT c.staging_id, c.transaction_id, c.payload_hash, c.account_id, c.transaction_timestamp,
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
        FROM c
        -- reference_data.order_id names erp_orders.order_id (not order_number); erp_order_keys holds
        -- one row per order_id, so the check is one primary-key probe.
        CROSS JOIN LATERAL (
            SELECT jsonb_typeof(c.reference_data) = 'object' AND c.reference_data ? 'order_id' AS has_ref,
                   CASE WHEN jsonb_typeof(c.reference_data) = 'object'
                             AND jsonb_typeof(c.reference_data -> 'order_id') IN ('number', 'string')
                             AND (c.reference_data ->> 'order_id') ~ '^[0-9]{1,18}$'
                        THEN (c.reference_data ->> 'order_id')::bigint END AS order_id
        ) o
        LEFT JOIN financial_transaction_types t ON t.transaction_type = c.transaction_type
        -- OFFSET 0 keeps this a per-row primary-key probe; flattened, the planner may hash the whole table
        LEFT JOIN LATERAL (
            SELECT k.order_id FROM erp_order_keys k WHERE k.order_id = o.order_id OFFSET 0
        ) k ON true
    ),
    r AS (
        SELECT v.*, row_number() OVER (PARTITION BY v.transaction_id ORDER BY v.staging_id) AS rn
        FROM v
        WHERE v.error_code IS NULL
    ),
    l AS (
        INSERT INTO financial_transaction_ledger
            (transaction_id, payload_hash, staging_id, account_id, transaction_timestamp, recorded_at)
        SELECT r.transaction_id, r.payload_hash, r.staging_id, r.account_id, r.transaction_timestamp, p_now
        FROM r
        WHERE r.rn = 1
        ORDER BY r.transaction_id
        ON CONFLICT (transaction_id) DO NOTHING
        RETURNING staging_id
    )
    SELECT array_agg(v.staging_id), array_agg(v.error_code), array_agg(v.error_detail),
           array_agg(l.staging_id IS NOT NULL)
    INTO v_ids, v_codes, v_details, v_won
    FROM v
    LEFT JOIN l ON l.staging_id = v.staging_id;

    -- Step 2: score the winners against their account's history in [ts - window, ts), where the
    -- history is the processed table plus the earlier winners of this chunk; write processed; flag
    -- financial_transactions; classify the losers (duplicate or conflict); mark every row once.
    WITH c AS (
        SELECT * FROM unnest(p_rows)
    ),
    x AS MATERIALIZED (
        SELECT c.*, o.error_code AS new_error_code, o.error_detail, o.won,
               c.processing_status AS prev_status,
               -- latency: ingestion -> this outcome (capped to fit integer; 0 for an ingestion
               -- time ahead of this clock, which has no histogram bucket and would fail the chunk)
               greatest(least(extract(epoch FROM clock_timestamp() - c.ingestion_timestamp) * 1000,
                              2147483647), 0)::integer AS ms
        FROM c
        JOIN unnest(v_ids, v_codes, v_details, v_won) AS o(staging_id, error_code, error_detail, won)
          ON o.staging_id = c.staging_id
    ),
    winners AS (
        SELECT * FROM x WHERE x.won
    ),
    acct AS (
        SELECT w.account_id, min(w.transaction_timestamp) - p_cfg.fraud_window AS lo,
               max(w.transaction_timestamp) AS hi
        FROM winners w
        GROUP BY w.account_id
    ),
    pool AS (
        SELECT w.staging_id, w.account_id, w.transaction_timestamp, abs(w.amount) AS amount_abs
        FROM winners w
        UNION ALL
        SELECT NULL::bigint, a.account_id, h.transaction_timestamp, h.amount_abs
        FROM acct a
        CROSS JOIN LATERAL (
            -- one index range scan per account (OFFSET 0: never flattened into a scan of processed);
            -- the partitions outside [lo, hi) are pruned at run time
            SELECT p.transaction_timestamp, p.amount_abs
            FROM financial_transactions_processed p
            WHERE p.account_id = a.account_id
              AND p.transaction_timestamp >= a.lo
              AND p.transaction_timestamp < a.hi
            OFFSET 0
        ) h
    ),
    windowed AS (
        SELECT q.staging_id,
               count(*) OVER w AS recent_count,
               avg(q.amount_abs) OVER w AS recent_avg
        FROM pool q
        -- [ts - window, ts): RANGE includes peers at ts; EXCLUDE GROUP drops them (and the row).
        WINDOW w AS (PARTITION BY q.account_id ORDER BY q.transaction_timestamp
                     RANGE BETWEEN p_cfg.fraud_window PRECEDING AND CURRENT ROW EXCLUDE GROUP)
    ),
    scored AS (
        SELECT w.*, sc.risk_score
        FROM winners w
        JOIN windowed s ON s.staging_id = w.staging_id
        -- OFFSET 0: the score is computed once per row; pulled up, it would be recomputed for each
        -- reference below (the value and both CASE tests), and each call costs microseconds
        CROSS JOIN LATERAL (
            SELECT financial_fraud_score(w.amount, w.transaction_timestamp, s.recent_count, s.recent_avg,
                                         p_cfg.business_time_zone, p_cfg.business_hour_start,
                                         p_cfg.business_hour_end) AS risk_score
            OFFSET 0
        ) sc
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
        RETURNING staging_id, transaction_id
    ),
    flagged AS (
        UPDATE financial_transactions f
        SET is_processed = true
        FROM ins
        WHERE f.transaction_id = ins.transaction_id
          AND f.transaction_id = ANY (ARRAY(SELECT i.transaction_id FROM ins i))   -- primary-key probes
          AND NOT f.is_processed
        RETURNING f.transaction_id
    ),
    outcome AS (
        -- processed
        SELECT x.staging_id, x.prev_status, 'processed'::varchar AS new_status, NULL::varchar AS error_code,
               NULL::text AS error_message, x.retry_count AS new_retry_count, x.next_attempt_at AS due, x.ms
        FROM x
        JOIN ins ON ins.staging_id = x.staging_id
        UNION ALL
        -- failed validation: retried with backoff, or dead-lettered
        SELECT x.staging_id, x.prev_status,
               financial_failure_status(x.retry_count + 1, e.retryable, coalesce(e.max_attempts, p_cfg.max_attempts)),
               x.new_error_code, x.error_detail, x.retry_count + 1,
               p_now + financial_retry_delay(x.retry_count + 1, coalesce(e.backoff_base, p_cfg.backoff_base),
                                             coalesce(e.backoff_max, p_cfg.backoff_max)), x.ms
        FROM x
        JOIN financial_error_codes e ON e.error_code = x.new_error_code
        UNION ALL
        -- valid but the ledger already had the id: a replay, or a conflicting payload
        SELECT x.staging_id, x.prev_status,
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
            WHERE l.transaction_id = x.transaction_id OFFSET 0
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
            processed_at = clock_timestamp(),
            claimed_by = p_worker,
            chunk_id = p_chunk_id,
            -- the same value: makes PostgreSQL prepare the generated columns once, not per row (see
            -- the note above this function)
            ingestion_timestamp = s.ingestion_timestamp
        FROM outcome o
        WHERE s.staging_id = o.staging_id
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


INSERT INTO opsconsole_grant_policy (object_kind, object_name, role_name, audited_by) VALUES
    ('function', 'maintenance_partitioned_tables', 'opsconsole_admin', 'read'),
    ('function', 'partition_bounds',               'opsconsole_admin', 'read'),
    ('function', 'ensure_partitions_step',         'opsconsole_admin', 'caller'),
    ('function', 'maintenance_analyze',            'opsconsole_admin', 'caller'),
    ('function', 'financial_retry_schedule',       'opsconsole_viewer', 'read')
ON CONFLICT DO NOTHING;

SELECT opsconsole_apply_grants();
