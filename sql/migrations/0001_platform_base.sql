-- 0001 platform base: extensions, the partition manager, and the six source systems' tables.
--
-- Every timestamp is timestamptz. Event time (when something happened at the source) and ingestion
-- time (when it reached us) are separate columns and never mixed.

CREATE EXTENSION IF NOT EXISTS pg_trgm;      -- customer search by fragment
CREATE EXTENSION IF NOT EXISTS btree_gist;   -- exclusion constraints on (id, time range)

------------------------------------------------------------------------------------------------------
-- Partition manager
------------------------------------------------------------------------------------------------------

-- Creates the monthly range partitions of a partitioned table for [now - p_back, now + p_ahead), plus
-- its DEFAULT partition, so that a row of any date inserts. Rows that already sit in the DEFAULT
-- partition for a month being created are moved into the new partition first (ATTACH would otherwise
-- fail on them). Works for date and timestamptz partition keys; timestamptz bounds are UTC midnights.
-- Returns the number of partitions created. Safe to call repeatedly (e.g. from a daily cron or the
-- worker's housekeeping).
CREATE FUNCTION ensure_partitions(
    p_parent regclass,
    p_back interval DEFAULT interval '24 months',
    p_ahead interval DEFAULT interval '3 months'
)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
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
CREATE FUNCTION touch_updated_at()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END;
$$;

------------------------------------------------------------------------------------------------------
-- CRM system
------------------------------------------------------------------------------------------------------
CREATE TABLE crm_customers (
    customer_id   bigint PRIMARY KEY,
    customer_uuid uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    first_name    varchar(100),
    last_name     varchar(100),
    email         varchar(255),
    phone         varchar(20),
    address       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    source_system varchar(50) NOT NULL DEFAULT 'crm'
);
COMMENT ON TABLE crm_customers IS 'CRM customers, updated in business-hours batches.';
CREATE TRIGGER crm_customers_touch BEFORE UPDATE ON crm_customers
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE INDEX crm_customers_updated_at_idx ON crm_customers (updated_at);
CREATE INDEX crm_customers_email_norm_idx ON crm_customers (lower(btrim(email)));

------------------------------------------------------------------------------------------------------
-- ERP system: orders, range-partitioned by partition_date (normally the order date)
------------------------------------------------------------------------------------------------------
CREATE TABLE erp_orders (
    order_id       bigint NOT NULL,
    customer_id    bigint,
    order_number   varchar(50),
    order_date     date NOT NULL,
    total_amount   numeric(15,2),
    currency_code  varchar(3),
    status         varchar(20),
    sales_rep_id   integer,
    created_at     timestamptz NOT NULL DEFAULT now(),
    partition_date date NOT NULL,
    PRIMARY KEY (order_id, partition_date)
) PARTITION BY RANGE (partition_date);
COMMENT ON TABLE erp_orders IS 'ERP orders; partition_date is the partition key (set it to order_date).';

-- The partitioned primary key must include partition_date, so it no longer guarantees that an
-- order_id is unique. This key table does: every erp_orders row claims its order_id here.
CREATE TABLE erp_order_keys (
    order_id       bigint PRIMARY KEY,
    partition_date date NOT NULL
);
COMMENT ON TABLE erp_order_keys IS 'One row per erp_orders.order_id: the uniqueness the partitioned PK cannot give.';

CREATE FUNCTION erp_order_keys_sync()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public
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
CREATE TRIGGER erp_orders_keys AFTER INSERT OR DELETE OR UPDATE OF order_id, partition_date ON erp_orders
    FOR EACH ROW EXECUTE FUNCTION erp_order_keys_sync();

CREATE INDEX erp_orders_customer_idx ON erp_orders (customer_id, order_date);
CREATE INDEX erp_orders_order_number_idx ON erp_orders (order_number);
CREATE INDEX erp_orders_created_at_idx ON erp_orders (created_at);
SELECT ensure_partitions('erp_orders');

------------------------------------------------------------------------------------------------------
-- E-commerce platform: JSONB event stream
------------------------------------------------------------------------------------------------------
CREATE TABLE ecommerce_events (
    event_id        bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    session_id      uuid,
    customer_id     bigint,
    event_timestamp timestamptz NOT NULL,                 -- event time, at the source
    event_type      varchar(50) NOT NULL,
    event_data      jsonb,
    page_url        text,
    user_agent      text,
    ip_address      inet,
    processed_at    timestamptz NOT NULL DEFAULT now()    -- ingestion time, here
);
COMMENT ON COLUMN ecommerce_events.processed_at IS 'Ingestion time; late events have processed_at >> event_timestamp.';
CREATE INDEX ecommerce_events_customer_idx ON ecommerce_events (customer_id, event_timestamp);
CREATE INDEX ecommerce_events_processed_at_idx ON ecommerce_events (processed_at);

------------------------------------------------------------------------------------------------------
-- Financial system: high-frequency transactions
------------------------------------------------------------------------------------------------------
CREATE TABLE financial_transactions (
    transaction_id        bigint PRIMARY KEY,
    account_id            bigint,
    transaction_timestamp timestamptz(6),
    amount                numeric(20,4),
    transaction_type      varchar(50),
    reference_data        jsonb,
    batch_id              varchar(100),
    is_processed          boolean NOT NULL DEFAULT false
);
CREATE INDEX financial_transactions_account_idx ON financial_transactions (account_id, transaction_timestamp);
CREATE INDEX financial_transactions_order_ref_idx ON financial_transactions ((reference_data->>'order_id'))
    WHERE reference_data ? 'order_id';
CREATE INDEX financial_transactions_unprocessed_idx ON financial_transactions (transaction_id)
    WHERE NOT is_processed;

------------------------------------------------------------------------------------------------------
-- External data sources (APIs, files)
------------------------------------------------------------------------------------------------------
CREATE TABLE external_market_data (
    tick_id             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    symbol              varchar(10) NOT NULL,
    "timestamp"         timestamptz NOT NULL,
    price               numeric(15,4),
    volume              bigint,
    metadata            jsonb,
    ingestion_timestamp timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN external_market_data.tick_id IS 'Surrogate key added to the spec''s columns.';
CREATE INDEX external_market_data_symbol_ts_idx ON external_market_data (symbol, "timestamp" DESC);

------------------------------------------------------------------------------------------------------
-- Operator audit log: every action (console key, CLI command, SQL action function) leaves a row.
------------------------------------------------------------------------------------------------------
CREATE TABLE ops_audit_log (
    audit_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor            text NOT NULL DEFAULT session_user,
    application_name text DEFAULT current_setting('application_name', true),
    action           text NOT NULL,
    arguments        jsonb NOT NULL DEFAULT '{}'::jsonb,
    result           jsonb,
    status           text NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'error', 'cancelled', 'denied')),
    duration_ms      numeric(12,3),
    reason           text
);
CREATE INDEX ops_audit_log_occurred_idx ON ops_audit_log (occurred_at DESC);
COMMENT ON TABLE ops_audit_log IS 'Who did what, with which arguments, and what came of it; newest first by occurred_at.';

-- One way to write an audit row, used by every action function (and by the Python action layer for
-- actions that fail before reaching SQL). Returns the audit_id.
CREATE FUNCTION record_audit(
    p_action text,
    p_arguments jsonb DEFAULT '{}'::jsonb,
    p_result jsonb DEFAULT NULL,
    p_status text DEFAULT 'ok',
    p_duration_ms numeric DEFAULT NULL,
    p_reason text DEFAULT NULL
)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, public
AS $$
    INSERT INTO ops_audit_log (action, arguments, result, status, duration_ms, reason)
    VALUES (p_action, coalesce(p_arguments, '{}'::jsonb), p_result, p_status, p_duration_ms, p_reason)
    RETURNING audit_id;
$$;
