-- 10_platform.sql: Platform base: partition maintenance, updated_at touch, the ERP order-key index, audit.
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.

   -- exclusion constraints on (id, time range)

------------------------------------------------------------------------------------------------------
-- Partition manager
------------------------------------------------------------------------------------------------------

-- Creates the monthly range partitions of a partitioned table for [now - p_back, now + p_ahead), plus
-- its DEFAULT partition, so that a row of any date inserts. Rows that already sit in the DEFAULT
-- partition for a month being created are moved into the new partition first (ATTACH would otherwise
-- fail on them). Works for date and timestamptz partition keys; timestamptz bounds are UTC midnights.
-- Returns the number of partitions created. Safe to call repeatedly (e.g. from a daily cron or the
-- worker's housekeeping).
CREATE OR REPLACE FUNCTION ensure_partitions(
    p_parent regclass,
    p_back interval DEFAULT interval '24 months',
    p_ahead interval DEFAULT interval '3 months'
)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_schema   text;
    v_table    text;
    v_key      text;
    v_key_type regtype;
    v_default  text;
    v_month    date;
    v_last     date;
    v_part     text;
    v_lo       text;
    v_hi       text;
    v_created  integer := 0;
    v_cols     name[];
BEGIN
    SELECT n.nspname, c.relname INTO v_schema, v_table
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = p_parent AND c.relkind = 'p';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ensure_partitions: % is not a partitioned table', p_parent
            USING ERRCODE = 'wrong_object_type';
    END IF;

    SELECT a.attname, a.atttypid::regtype INTO v_key, v_key_type
    FROM pg_partitioned_table pt
    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
    WHERE pt.partrelid = p_parent AND pt.partstrat = 'r' AND pt.partnatts = 1;
    IF NOT FOUND OR v_key_type NOT IN ('date'::regtype, 'timestamptz'::regtype) THEN
        RAISE EXCEPTION 'ensure_partitions: % must be range-partitioned on one date or timestamptz column',
            p_parent USING ERRCODE = 'feature_not_supported';
    END IF;

    -- Serialise concurrent callers on the same parent.
    PERFORM pg_advisory_xact_lock(p_parent::oid::bigint);

    v_default := v_table || '_default';
    IF NOT EXISTS (
        SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = p_parent AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'
    ) THEN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I DEFAULT', v_schema, v_default, v_schema, v_table);
        v_created := v_created + 1;
    ELSE
        SELECT c.relname INTO v_default
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = p_parent AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';
    END IF;

    v_month := date_trunc('month', (now() AT TIME ZONE 'UTC') - p_back)::date;
    v_last  := date_trunc('month', (now() AT TIME ZONE 'UTC') + p_ahead)::date;
    WHILE v_month <= v_last LOOP
        v_part := format('%s_%s', v_table, to_char(v_month, 'YYYY_MM'));
        IF to_regclass(format('%I.%I', v_schema, v_part)) IS NULL THEN
            IF v_key_type = 'date'::regtype THEN
                v_lo := v_month::text;
                v_hi := (v_month + interval '1 month')::date::text;
            ELSE
                v_lo := v_month::text || ' 00:00:00+00';
                v_hi := (v_month + interval '1 month')::date::text || ' 00:00:00+00';
            END IF;
            -- A plain CREATE ... PARTITION OF fails if the default partition holds rows of this
            -- range, so build the partition detached, move those rows, then attach it.
            EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS)',
                           v_schema, v_part, v_schema, v_table);
            -- Triggers stay quiet during the move: the rows are not new, only relocated.
            EXECUTE format('ALTER TABLE %I.%I DISABLE TRIGGER USER', v_schema, v_default);
            -- Generated columns cannot be inserted into; move the stored columns only.
            -- (Every name in the statement goes through %I or %L: the column list is built from the
            -- catalog's names with %I inside the format() call itself.)
            v_cols := ARRAY(SELECT a.attname FROM pg_attribute a
                            WHERE a.attrelid = p_parent AND a.attnum > 0 AND NOT a.attisdropped
                              AND a.attgenerated = '' ORDER BY a.attnum);
            EXECUTE format(
                'WITH moved AS (DELETE FROM %I.%I WHERE %I >= %L AND %I < %L RETURNING *) '
                'INSERT INTO %I.%I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM moved',
                v_schema, v_default, v_key, v_lo, v_key, v_hi, v_schema, v_part,
                (SELECT string_agg(format('%I', c), ', ' ORDER BY i) FROM unnest(v_cols) WITH ORDINALITY u(c, i)),
                (SELECT string_agg(format('%I', c), ', ' ORDER BY i) FROM unnest(v_cols) WITH ORDINALITY u(c, i)));
            EXECUTE format('ALTER TABLE %I.%I ENABLE TRIGGER USER', v_schema, v_default);
            EXECUTE format('ALTER TABLE %I.%I ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                           v_schema, v_table, v_schema, v_part, v_lo, v_hi);
            v_created := v_created + 1;
        END IF;
        v_month := (v_month + interval '1 month')::date;
    END LOOP;
    RETURN v_created;
END;
$$;
COMMENT ON FUNCTION ensure_partitions(regclass, interval, interval) IS
    'Create monthly partitions on a rolling horizon plus a DEFAULT partition; idempotent.';

-- The ERP order a JSON reference names: reference_data.order_id as a JSON number or string of 1-18
-- digits, leading zeros allowed ({"order_id": "0042"} is order 42), else NULL (absent, negative,
-- fractional, padded, too long). The one reading of an order reference: the pipeline's validation
-- and reconcile, customer 360 (and its change capture), the console's and `customer show`'s
-- transaction lists all call it, so a transaction is attributed to the same order everywhere.
-- Never raises (change capture must not break a writer). IMMUTABLE: an expression index uses it
-- (financial_transactions_order_id_idx), so its meaning must never change in place.
CREATE OR REPLACE FUNCTION reference_order_id(p_reference jsonb)
RETURNS bigint
LANGUAGE sql
IMMUTABLE
STRICT
PARALLEL SAFE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(p_reference) = 'object'
                     AND jsonb_typeof(p_reference -> 'order_id') IN ('number', 'string')
                     AND (p_reference ->> 'order_id') ~ '^[0-9]{1,18}$'
                THEN (p_reference ->> 'order_id')::bigint END;
$$;

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
SECURITY DEFINER  -- partitions are created in public, where no group role may create
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
            -- 3. nothing to do; still audited: every call of an action function leaves a row
            PERFORM record_audit('maintain.partitions',
                                 jsonb_build_object('table', p_parent::text, 'limit', p_limit, 'now', p_now),
                                 jsonb_build_object('action', 'none'), 'ok', NULL, NULL);
            RETURN;
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
            PERFORM record_audit('maintain.partitions',
                                 jsonb_build_object('table', p_parent::text, 'limit', p_limit, 'now', p_now),
                                 jsonb_build_object('action', action, 'partition', v_name, 'rows_moved', v_moved),
                                 'ok', NULL, NULL);
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    EXECUTE format('ALTER TABLE %s ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                   p_parent, v_name, v_blo, v_bhi);
    action := CASE WHEN v_moved > 0 OR v_resume IS NOT NULL THEN 'attached' ELSE 'created' END;
    partition_name := v_name;
    rows_moved := v_moved;
    PERFORM record_audit('maintain.partitions',
                         jsonb_build_object('table', p_parent::text, 'limit', p_limit, 'now', p_now),
                         jsonb_build_object('action', action, 'partition', v_name, 'rows_moved', v_moved),
                         'ok', NULL, NULL);
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION ensure_partitions_step(regclass, integer, timestamptz) IS
    'One bounded step of partition maintenance: move up to p_limit DEFAULT rows toward their partition, attach it, or create the next one ahead.';

-- Statistics for what maintenance changed: the partitions it touched, their DEFAULT and the parent
-- (autovacuum never analyzes a partitioned parent). ANALYZE takes SHARE UPDATE EXCLUSIVE, which
-- does not block reads, inserts or claims.
-- SECURITY DEFINER: ANALYZE needs the owner; audited as maintain.analyze.
CREATE OR REPLACE FUNCTION maintenance_analyze(p_tables regclass[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
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
    PERFORM record_audit('maintain.analyze', jsonb_build_object('tables', to_jsonb(p_tables::text[])),
                         jsonb_build_object('analyzed', v_n), 'ok', NULL, NULL);
    RETURN v_n;
END;
$$;

-- The one 'maintain' row of a run of `opsconsole maintain`: its result is computed here from the
-- maintain.partitions rows this session's steps wrote since p_started, never taken from the caller,
-- so a group role cannot write a free-form 'ok' row with it.
CREATE OR REPLACE FUNCTION maintenance_run_report(
    p_started timestamptz,
    p_batch_rows integer,
    p_older_than text DEFAULT NULL
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_result jsonb;
BEGIN
    IF p_started IS NULL OR p_started > clock_timestamp() OR p_started < clock_timestamp() - interval '1 day' THEN
        RAISE EXCEPTION 'maintenance_run_report: % is not the start of a run', p_started
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT jsonb_build_object(
               'rows_moved_from_default', coalesce(sum((a.result ->> 'rows_moved')::bigint), 0),
               'partitions_created', coalesce(jsonb_agg(a.result -> 'partition')
                                                  FILTER (WHERE a.result ->> 'action' = 'created'), '[]'),
               'partitions_attached', coalesce(jsonb_agg(a.result -> 'partition')
                                                   FILTER (WHERE a.result ->> 'action' = 'attached'), '[]'),
               'steps', count(*) FILTER (WHERE a.result ->> 'action' <> 'none'))
    INTO v_result
    FROM ops_audit_log a
    WHERE a.action = 'maintain.partitions' AND a.actor = session_user AND a.occurred_at >= p_started;
    PERFORM record_audit('maintain',
                         jsonb_build_object('batch_rows', p_batch_rows, 'older_than', p_older_than),
                         v_result, 'ok',
                         round((extract(epoch FROM clock_timestamp() - p_started) * 1000)::numeric, 3), NULL);
    RETURN v_result;
END;
$$;


-- The relation a statement about key p_key of p_table must name where it runs: p_table itself on
-- one server and on a Citus coordinator. On a Citus worker, where Citus runs a distributed table's
-- triggers (per shard), it is the shard of p_table holding p_key, which a co-located trigger finds on
-- its own node. A trigger must not run a distributed statement there: on Citus 13.2 the workers
-- crashed (SIGSEGV) at the commit of a multi-shard statement whose shard triggers wrote distributed
-- tables (docs/scaling.md, "Triggers"). The Citus catalog is read through EXECUTE, so this compiles
-- and runs on plain PostgreSQL, where it returns at the first test.
CREATE OR REPLACE FUNCTION shard_local(p_table regclass, p_key bigint)
RETURNS regclass
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_shard regclass;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_local_group') IS NULL THEN
        RETURN p_table;   -- no Citus
    END IF;
    EXECUTE 'SELECT CASE WHEN (SELECT groupid FROM pg_catalog.pg_dist_local_group) = 0
                           OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)
                         THEN $1
                         ELSE pg_catalog.shard_name($1, pg_catalog.get_shard_id_for_distribution_column($1, $2))::regclass
                    END'
        INTO v_shard USING p_table, p_key;
    RETURN v_shard;
END;
$$;
COMMENT ON FUNCTION shard_local(regclass, bigint) IS
    'The table on one server or a coordinator; on a Citus worker the shard holding the key (for shard triggers).';


-- The same for a trigger that has no key at hand (TRUNCATE): p_table itself, or, when the trigger
-- fired on a Citus shard (p_fired_on, the trigger's TG_RELID) on a worker, the shard of p_table
-- co-located with it (same hash range).
CREATE OR REPLACE FUNCTION shard_local_to(p_table regclass, p_fired_on oid)
RETURNS regclass
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_shard regclass;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_local_group') IS NULL THEN
        RETURN p_table;   -- no Citus
    END IF;
    EXECUTE 'SELECT pg_catalog.shard_name($1, t.shardid)::regclass
             FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_dist_shard s
               ON s.shardid = substring(c.relname FROM ''_([0-9]+)$'')::bigint
              AND pg_catalog.shard_name(s.logicalrelid, s.shardid) = c.oid::regclass::text
             JOIN pg_catalog.pg_dist_shard t ON t.logicalrelid = $1 AND t.shardminvalue = s.shardminvalue
             WHERE c.oid = $2 AND (SELECT groupid FROM pg_catalog.pg_dist_local_group) <> 0'
        INTO v_shard USING p_table, p_fired_on;
    RETURN coalesce(v_shard, p_table);
END;
$$;
COMMENT ON FUNCTION shard_local_to(regclass, oid) IS
    'The table on one server or a coordinator; on a Citus worker the shard co-located with the fired-on shard.';


-- The one reading of an integer setting (opsconsole.*): unset or empty is the default, an integer is
-- itself, anything else an error that names the setting, not an odd cast error from deep in a chunk.
CREATE OR REPLACE FUNCTION setting_integer(p_name text, p_default integer)
RETURNS integer
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_text text := nullif(btrim(current_setting(p_name, true)), '');
BEGIN
    IF v_text IS NULL THEN
        RETURN p_default;
    ELSIF v_text !~ '^[+-]?[0-9]{1,9}$' THEN
        RAISE EXCEPTION 'setting % must be an integer (got "%")', p_name, v_text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN v_text::integer;
END;
$$;
COMMENT ON FUNCTION setting_integer(text, integer) IS
    'An integer setting, or p_default when unset or empty; an error naming the setting when not an integer.';


-- Keeps updated_at honest when a writer forgets to set it.
CREATE OR REPLACE FUNCTION touch_updated_at()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER crm_customers_touch BEFORE UPDATE ON crm_customers
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- erp_order_keys gives order_id the uniqueness erp_orders' partitioned (and, on Citus, distributed)
-- key cannot: every writer of orders claims their ids here first, in its own transaction (a trigger
-- cannot: on Citus it runs on the order's shard, which cannot write another table's shards; 0028).
-- One definition of the claim for every writer (ingest, the tests' helper; the seed's ids are unique
-- by construction and it claims them in one INSERT ... SELECT). An id already claimed, or repeated in
-- p_order_ids, fails the call with the order id named; nothing is written then. Returns the ids claimed.
-- Removing an order releases its key the same way: the writer deletes it from erp_order_keys.
CREATE OR REPLACE FUNCTION erp_order_keys_add(p_order_ids bigint[], p_partition_dates date[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_dup bigint;
    v_n   integer;
BEGIN
    IF cardinality(p_order_ids) IS DISTINCT FROM cardinality(p_partition_dates) THEN
        RAISE EXCEPTION 'erp_order_keys_add: % order ids but % partition dates',
            cardinality(p_order_ids), cardinality(p_partition_dates)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT x.id INTO v_dup FROM unnest(p_order_ids) AS x(id) GROUP BY x.id HAVING count(*) > 1 LIMIT 1;
    IF v_dup IS NULL THEN
        SELECT k.order_id INTO v_dup FROM erp_order_keys k WHERE k.order_id = ANY (p_order_ids) LIMIT 1;
    END IF;
    IF v_dup IS NOT NULL THEN
        RAISE EXCEPTION 'duplicate order_id %: it already exists in erp_orders', v_dup
            USING ERRCODE = 'unique_violation',
                  CONSTRAINT = 'erp_order_keys_pkey';
    END IF;
    INSERT INTO erp_order_keys (order_id, partition_date)
    SELECT x.order_id, x.partition_date FROM unnest(p_order_ids, p_partition_dates) AS x(order_id, partition_date);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;


-- SQL text as the schema-evolution log keeps it: every string and dollar-quoted literal becomes '...'.
-- The statement text is the client's (current_query()), so a DEFAULT, a COMMENT or a statement sent
-- in the same query string can carry customer data; the names and the shape of the DDL are kept.
CREATE OR REPLACE FUNCTION redact_sql_literals(p_sql text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT regexp_replace(regexp_replace(p_sql, '\$([A-Za-z_][A-Za-z_0-9]*)?\$.*\$\1\$', '''...''', 'g'),
                          '''(?:[^'']|'''')*''', '''...''', 'g');
$$;


-- One way to write an audit row, used by every action function in the transaction of its effect.
-- No group role may execute it (opsconsole_apply_grants): an 'ok' row only ever comes from the action
-- function that did the work. Returns the audit_id.
CREATE OR REPLACE FUNCTION record_audit(
    p_action text,
    p_arguments jsonb DEFAULT '{}'::jsonb,
    p_result jsonb DEFAULT NULL,
    p_status text DEFAULT 'ok',
    p_duration_ms numeric DEFAULT NULL,
    p_reason text DEFAULT NULL
)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, public, pg_temp
AS $$
    INSERT INTO ops_audit_log (action, arguments, result, status, duration_ms, reason)
    VALUES (p_action, coalesce(p_arguments, '{}'::jsonb), p_result, p_status, p_duration_ms, p_reason)
    RETURNING audit_id;
$$;


-- The one audit row a group role may write itself: that its own attempt at an action failed, was
-- cancelled or was refused (the action's own row rolled back with it). The actor is session_user as
-- always, the status can only be error, cancelled or denied, and the result is {"error": text}: a
-- failure report of one's own, never a claim that something was done.
CREATE OR REPLACE FUNCTION record_action_failure(
    p_action text,
    p_arguments jsonb DEFAULT '{}'::jsonb,
    p_status text DEFAULT 'error',
    p_duration_ms numeric DEFAULT NULL,
    p_error text DEFAULT NULL,
    p_reason text DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('error', 'cancelled', 'denied') THEN
        RAISE EXCEPTION 'record_action_failure records failures only (error, cancelled or denied), not %', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_action IS NULL OR p_action !~ '^[a-z][a-z0-9_.]{0,62}$' THEN
        RAISE EXCEPTION 'record_action_failure: % is not an action name', p_action
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN record_audit(p_action, coalesce(p_arguments, '{}'::jsonb),
                        jsonb_build_object('error', left(coalesce(p_error, p_status), 2000)),
                        p_status, p_duration_ms, left(p_reason, 2000));
END;
$$;
