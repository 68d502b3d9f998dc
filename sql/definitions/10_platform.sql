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
    v_cols     text;
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
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s DEFAULT', v_schema, v_default, p_parent);
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
            EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS)',
                           v_schema, v_part, p_parent);
            -- Triggers stay quiet during the move: the rows are not new, only relocated.
            EXECUTE format('ALTER TABLE %I.%I DISABLE TRIGGER USER', v_schema, v_default);
            -- Generated columns cannot be inserted into; move the stored columns only.
            SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols
            FROM pg_attribute a
            WHERE a.attrelid = p_parent AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
            EXECUTE format(
                'WITH moved AS (DELETE FROM %I.%I WHERE %I >= %L AND %I < %L RETURNING *) '
                'INSERT INTO %I.%I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM moved',
                v_schema, v_default, v_key, v_lo, v_key, v_hi, v_schema, v_part, v_cols, v_cols);
            EXECUTE format('ALTER TABLE %I.%I ENABLE TRIGGER USER', v_schema, v_default);
            EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                           p_parent, v_schema, v_part, v_lo, v_hi);
            v_created := v_created + 1;
        END IF;
        v_month := (v_month + interval '1 month')::date;
    END LOOP;
    RETURN v_created;
END;
$$;
COMMENT ON FUNCTION ensure_partitions(regclass, interval, interval) IS
    'Create monthly partitions on a rolling horizon plus a DEFAULT partition; idempotent.';


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

CREATE OR REPLACE FUNCTION erp_order_keys_sync()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM erp_order_keys WHERE order_id = OLD.order_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        BEGIN
            INSERT INTO erp_order_keys (order_id, partition_date) VALUES (NEW.order_id, NEW.partition_date);
        EXCEPTION WHEN unique_violation THEN
            RAISE EXCEPTION 'duplicate order_id %: it already exists in erp_orders', NEW.order_id
                USING ERRCODE = 'unique_violation',
                      CONSTRAINT = 'erp_order_keys_pkey';
        END;
        RETURN NEW;
    END IF;
    RETURN OLD;
END;
$$;

CREATE OR REPLACE TRIGGER erp_orders_keys AFTER INSERT OR DELETE OR UPDATE OF order_id, partition_date ON erp_orders
    FOR EACH ROW EXECUTE FUNCTION erp_order_keys_sync();


-- One way to write an audit row, used by every action function (and by the Python action layer for
-- actions that fail before reaching SQL). Returns the audit_id.
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
