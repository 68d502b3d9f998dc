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


INSERT INTO opsconsole_grant_policy (object_kind, object_name, role_name, audited_by) VALUES
    ('function', 'maintenance_partitioned_tables', 'opsconsole_admin', 'read'),
    ('function', 'partition_bounds',               'opsconsole_admin', 'read'),
    ('function', 'ensure_partitions_step',         'opsconsole_admin', 'caller'),
    ('function', 'maintenance_analyze',            'opsconsole_admin', 'caller')
ON CONFLICT DO NOTHING;

SELECT opsconsole_apply_grants();
