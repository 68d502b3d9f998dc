-- 0010 roles and privileges: four group roles, tables readable only as each role may read them and
-- writable by nobody but the owner, every action a SECURITY DEFINER function granted to the roles that
-- may run it, and masked customer views driven by data_catalog.data_classification.
--
-- Later migrations end with `SELECT opsconsole_apply_grants();` so the objects they create follow
-- the same policy (see docs/security.md).

------------------------------------------------------------------------------------------------------
-- Group roles (cluster-wide: created only when missing, never dropped by a migration)
------------------------------------------------------------------------------------------------------
DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['opsconsole_viewer', 'opsconsole_support', 'opsconsole_operator',
                                  'opsconsole_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
    END LOOP;
END;
$$;

-- The hierarchy: support and operator are viewer plus something; admin is operator plus rule changes
-- and migrations. Support's PII access is deliberately not inherited by operator or admin.
DO $$
BEGIN
    IF NOT pg_has_role('opsconsole_support', 'opsconsole_viewer', 'MEMBER') THEN
        GRANT opsconsole_viewer TO opsconsole_support;
    END IF;
    IF NOT pg_has_role('opsconsole_operator', 'opsconsole_viewer', 'MEMBER') THEN
        GRANT opsconsole_viewer TO opsconsole_operator;
    END IF;
    IF NOT pg_has_role('opsconsole_admin', 'opsconsole_operator', 'MEMBER') THEN
        GRANT opsconsole_operator TO opsconsole_admin;
    END IF;
END;
$$;

------------------------------------------------------------------------------------------------------
-- The policy: which action function (every overload of the name) each role may execute, and which
-- relations are granted explicitly (the masked views); everything else follows the classification.
------------------------------------------------------------------------------------------------------
CREATE TABLE opsconsole_grant_policy (
    object_kind text NOT NULL CHECK (object_kind IN ('function', 'relation')),
    object_name text NOT NULL,
    role_name   text NOT NULL CHECK (role_name IN ('opsconsole_viewer', 'opsconsole_support',
                                                   'opsconsole_operator', 'opsconsole_admin')),
    audited_by  text NOT NULL DEFAULT 'sql' CHECK (audited_by IN ('sql', 'caller', 'read')),
    PRIMARY KEY (object_kind, object_name, role_name)
);
COMMENT ON TABLE opsconsole_grant_policy IS
    'Explicit grants re-applied by opsconsole_apply_grants(): action functions (SECURITY DEFINER, EXECUTE for the '
    'named role and the roles that inherit it) and relations granted despite PII columns (the masked views). '
    'audited_by: sql = the function writes its audit row, caller = the action layer does in the same transaction, '
    'read = a read, not audited.';

INSERT INTO opsconsole_grant_policy (object_kind, object_name, role_name, audited_by) VALUES
    -- reads every role may do
    ('function', 'lineage_upstream',                'opsconsole_viewer',   'read'),
    ('function', 'lineage_downstream',              'opsconsole_viewer',   'read'),
    ('function', 'reconcile_financial_pipeline',    'opsconsole_viewer',   'read'),
    ('relation', 'customers_masked',                'opsconsole_viewer',   'read'),
    ('function', 'customers_masked_rows',           'opsconsole_viewer',   'read'),
    -- support: customer lookup with PII, audited
    ('function', 'lookup_customer',                 'opsconsole_support',  'sql'),
    ('function', 'lookup_customers',                'opsconsole_support',  'sql'),
    ('function', 'search_customers',                'opsconsole_support',  'sql'),
    ('relation', 'customer_360_masked',             'opsconsole_viewer',   'read'),
    -- operator: processing, retries, refreshes
    ('function', 'record_audit',                    'opsconsole_operator', 'sql'),
    ('function', 'process_financial_batch',         'opsconsole_operator', 'sql'),
    ('function', 'process_financial_batch_detail',  'opsconsole_operator', 'caller'),
    ('function', 'retry_failed',                    'opsconsole_operator', 'sql'),
    ('function', 'execute_data_quality_checks',     'opsconsole_operator', 'sql'),
    ('function', 'refresh_data_catalog',            'opsconsole_operator', 'sql'),
    ('function', 'refresh_data_catalog_report',     'opsconsole_operator', 'caller'),
    ('function', 'refresh_customer_360_incremental', 'opsconsole_operator', 'caller'),
    ('function', 'refresh_customer_360_full',       'opsconsole_operator', 'caller'),
    -- admin: rule changes, purges
    ('function', 'dq_add_rule',                     'opsconsole_admin',    'sql'),
    ('function', 'purge_financial_staging',         'opsconsole_admin',    'sql');

-- The classification of one column: what people set in data_catalog, else the catalog's default for
-- its name and type (so a column nobody has catalogued yet is treated as the default says: fail safe).
CREATE FUNCTION column_classification(p_table text, p_column text, p_data_type text DEFAULT NULL)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public
AS $$
    SELECT coalesce(
        (SELECT c.data_classification::text FROM data_catalog c
         WHERE c.schema_name = 'public' AND c.table_name = p_table AND c.column_name = p_column
           AND c.database_name = current_database()
         LIMIT 1),
        catalog_default_classification(p_column, coalesce(p_data_type, 'text'))::text);
$$;

-- Whether a role without PII rights may read the column as stored.
CREATE FUNCTION column_is_pii(p_table text, p_column text, p_data_type text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public
AS $$
    SELECT column_classification(p_table, p_column, p_data_type) IN ('confidential', 'restricted');
$$;

------------------------------------------------------------------------------------------------------
-- Applying the policy (idempotent; run at the end of 0010 and of every later migration)
------------------------------------------------------------------------------------------------------
-- 1. No relation in public is readable or writable through PUBLIC.
-- 2. opsconsole_viewer may SELECT a table or view when none of its columns is classified confidential
--    or restricted (data_catalog, else the default by name), plus the relations the policy lists.
-- 3. opsconsole_admin may SELECT every relation. Nobody but the owner gets INSERT/UPDATE/DELETE.
-- 4. Each policy function (every overload) becomes SECURITY DEFINER, EXECUTE revoked from PUBLIC and
--    granted to its role; any other SECURITY DEFINER function loses EXECUTE from PUBLIC too.
-- Returns the number of objects whose grants were (re)applied.
CREATE FUNCTION opsconsole_apply_grants()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    r       record;
    v_count integer := 0;
BEGIN
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    GRANT USAGE ON SCHEMA public TO opsconsole_viewer, opsconsole_support, opsconsole_operator, opsconsole_admin;
    GRANT CREATE ON SCHEMA public TO opsconsole_admin;

    FOR r IN
        SELECT c.oid, c.relname::text AS relname,
               EXISTS (SELECT 1 FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                         AND column_is_pii(c.relname, a.attname, format_type(a.atttypid, a.atttypmod))) AS has_pii,
               EXISTS (SELECT 1 FROM opsconsole_grant_policy p
                       WHERE p.object_kind = 'relation' AND p.object_name = c.relname
                         AND p.role_name = 'opsconsole_viewer') AS listed
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND NOT c.relispartition
    LOOP
        EXECUTE format('REVOKE ALL ON public.%I FROM PUBLIC', r.relname);
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON public.%I '
                       'FROM opsconsole_viewer, opsconsole_support, opsconsole_operator, opsconsole_admin',
                       r.relname);
        IF r.listed OR NOT r.has_pii THEN
            EXECUTE format('GRANT SELECT ON public.%I TO opsconsole_viewer', r.relname);
        ELSE
            EXECUTE format('REVOKE SELECT ON public.%I FROM opsconsole_viewer', r.relname);
        END IF;
        EXECUTE format('GRANT SELECT ON public.%I TO opsconsole_admin', r.relname);
        v_count := v_count + 1;
    END LOOP;

    -- Partitions: reached through their parent only.
    FOR r IN
        SELECT c.relname::text AS relname FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relispartition AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('REVOKE ALL ON public.%I FROM PUBLIC', r.relname);
    END LOOP;

    -- Identity/serial sequences are used by the owner's functions only.
    FOR r IN
        SELECT c.relname::text AS relname FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE public.%I FROM PUBLIC', r.relname);
    END LOOP;

    -- Action functions.
    FOR r IN
        SELECT p.oid::regprocedure AS fn, g.role_name
        FROM opsconsole_grant_policy g
        JOIN pg_proc p ON p.proname = g.object_name AND p.pronamespace = 'public'::regnamespace
        WHERE g.object_kind = 'function'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', r.fn);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', r.fn);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', r.fn, r.role_name);
        v_count := v_count + 1;
    END LOOP;

    -- Any other SECURITY DEFINER function (internal helpers, trigger functions) is nobody's to call.
    FOR r IN
        SELECT p.oid::regprocedure AS fn
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef
          AND NOT EXISTS (SELECT 1 FROM opsconsole_grant_policy g
                          WHERE g.object_kind = 'function' AND g.object_name = p.proname)
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', r.fn);
    END LOOP;
    RETURN v_count;
END;
$$;
REVOKE EXECUTE ON FUNCTION opsconsole_apply_grants() FROM PUBLIC;
COMMENT ON FUNCTION opsconsole_apply_grants() IS
    'Re-apply the role policy to every object in public; call at the end of each migration.';

------------------------------------------------------------------------------------------------------
-- Masking (one definition per kind of value)
------------------------------------------------------------------------------------------------------
-- email: first character, ***, the domain ('a***@example.com'); no '@': '***'.
CREATE FUNCTION mask_email(p_email text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public
AS $$
    SELECT CASE
        WHEN p_email IS NULL THEN NULL
        WHEN strpos(p_email, '@') > 1 THEN left(p_email, 1) || '***@' || split_part(p_email, '@', 2)
        ELSE '***'
    END;
$$;

-- phone: every digit but the last two becomes '*', separators dropped ('*********89').
CREATE FUNCTION mask_phone(p_phone text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public
AS $$
    SELECT CASE
        WHEN p_phone IS NULL THEN NULL
        ELSE repeat('*', greatest(length(regexp_replace(p_phone, '\D', '', 'g')) - 2, 0))
             || right(regexp_replace(p_phone, '\D', '', 'g'), 2)
    END;
$$;

-- names: the initial and a dot ('J.').
CREATE FUNCTION mask_name(p_name text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public
AS $$
    SELECT CASE WHEN p_name IS NULL OR btrim(p_name) = '' THEN p_name ELSE left(btrim(p_name), 1) || '.' END;
$$;

-- address: the city only ({"city": ...}).
CREATE FUNCTION mask_address(p_address jsonb)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public
AS $$
    SELECT CASE WHEN p_address IS NULL THEN NULL
                ELSE jsonb_strip_nulls(jsonb_build_object('city', p_address ->> 'city')) END;
$$;

-- The customers as roles without PII rights see them: each column masked when data_catalog classifies
-- it confidential (restricted: NULL), as stored when it is public or internal. A SECURITY DEFINER
-- function (it reads crm_customers with the owner's rights) under a view: a plain view would pin the
-- columns' types, so ALTER TABLE crm_customers ... TYPE (schema evolution) would need it dropped first.
-- The classification is looked up once per call, not per row.
CREATE FUNCTION customers_masked_rows()
RETURNS TABLE(customer_id bigint, customer_uuid uuid, first_name text, last_name text, email text,
              phone text, address jsonb, created_at timestamptz, updated_at timestamptz, source_system text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    k_first   text := column_classification('crm_customers', 'first_name');
    k_last    text := column_classification('crm_customers', 'last_name');
    k_email   text := column_classification('crm_customers', 'email');
    k_phone   text := column_classification('crm_customers', 'phone');
    k_address text := column_classification('crm_customers', 'address', 'jsonb');
BEGIN
    RETURN QUERY
    SELECT c.customer_id, c.customer_uuid,
           CASE k_first WHEN 'restricted' THEN NULL WHEN 'confidential' THEN mask_name(c.first_name::text)
                ELSE c.first_name::text END,
           CASE k_last WHEN 'restricted' THEN NULL WHEN 'confidential' THEN mask_name(c.last_name::text)
                ELSE c.last_name::text END,
           CASE k_email WHEN 'restricted' THEN NULL WHEN 'confidential' THEN mask_email(c.email::text)
                ELSE c.email::text END,
           CASE k_phone WHEN 'restricted' THEN NULL WHEN 'confidential' THEN mask_phone(c.phone::text)
                ELSE c.phone::text END,
           CASE k_address WHEN 'restricted' THEN NULL WHEN 'confidential' THEN mask_address(c.address::jsonb)
                ELSE c.address::jsonb END,
           c.created_at, c.updated_at, c.source_system::text
    FROM crm_customers c;
END;
$$;

CREATE VIEW customers_masked AS SELECT * FROM customers_masked_rows();
COMMENT ON VIEW customers_masked IS
    'crm_customers with PII masked as data_catalog.data_classification says (email a***@domain, phone last 2 '
    'digits, names initial, address city only; restricted columns NULL).';

-- Customer 360 as roles without PII rights see it: the same masks, names/email/phone per the catalog's
-- classification of customer_360_mv's columns (looked up once per query, not per row). Everything
-- that is not PII is as in customer_360_mv. Owned by the migration owner: viewers need no grant on
-- the store.
CREATE VIEW customer_360_masked AS
SELECT m.customer_id,
       m.customer_uuid,
       CASE k.k_first WHEN 'restricted' THEN NULL WHEN 'confidential' THEN mask_name(m.first_name::text)
            ELSE m.first_name::text END AS first_name,
       CASE k.k_last WHEN 'restricted' THEN NULL WHEN 'confidential' THEN mask_name(m.last_name::text)
            ELSE m.last_name::text END AS last_name,
       CASE k.k_email WHEN 'restricted' THEN NULL WHEN 'confidential' THEN mask_email(m.email::text)
            ELSE m.email::text END AS email,
       CASE k.k_phone WHEN 'restricted' THEN NULL WHEN 'confidential' THEN mask_phone(m.phone::text)
            ELSE m.phone::text END AS phone,
       m.customer_since, m.last_profile_update, m.total_orders, m.total_lifetime_value, m.first_order_date,
       m.last_order_date, m.avg_order_value, m.primary_currency, m.orders_30d, m.orders_90d, m.total_events,
       m.total_sessions, m.active_days, m.last_activity, m.favorite_category, m.preferred_device,
       m.engagement_score, m.transaction_count, m.total_transaction_amount, m.last_financial_activity,
       m.risk_indicator, m.value_segment, m.activity_segment, m.engagement_segment, m.customer_age_days,
       m.days_since_last_order, m.last_updated, m.data_staleness, m.source_system, m.currencies_used,
       m.page_views, m.product_views, m.cart_additions, m.online_purchases, m.avg_transaction_amount,
       m.payment_count, m.refund_count, m.golden_customer_id, m.duplicate_of, m.is_duplicate,
       m.duplicate_group_size, m.refresh_pending
FROM customer_360_mv m
CROSS JOIN (SELECT column_classification('customer_360_mv', 'first_name') AS k_first,
                   column_classification('customer_360_mv', 'last_name') AS k_last,
                   column_classification('customer_360_mv', 'email') AS k_email,
                   column_classification('customer_360_mv', 'phone') AS k_phone) k;
COMMENT ON VIEW customer_360_masked IS
    'customer_360_mv with names, email and phone masked as data_catalog.data_classification says '
    '(email_norm and financial_account_ids left out).';

------------------------------------------------------------------------------------------------------
-- Support: customer lookup with PII, every call audited in the same transaction
------------------------------------------------------------------------------------------------------
CREATE FUNCTION lookup_customer(p_customer_id bigint, p_reason text DEFAULT NULL)
RETURNS SETOF crm_customers
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
    v_found integer;
BEGIN
    RETURN QUERY SELECT c.* FROM crm_customers c WHERE c.customer_id = p_customer_id;
    GET DIAGNOSTICS v_found = ROW_COUNT;
    PERFORM record_audit('lookup_customer', jsonb_build_object('customer_id', p_customer_id),
                         jsonb_build_object('found', v_found), 'ok',
                         round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3), p_reason);
END;
$$;

-- Search by text: a case-insensitive substring of the name, email or phone, or the exact customer id.
-- The text is a value compared with strpos (no pattern, no SQL): wildcards and quotes are just text.
CREATE FUNCTION lookup_customers(p_search text, p_limit integer DEFAULT 20, p_reason text DEFAULT NULL)
RETURNS SETOF crm_customers
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
    v_needle text := lower(btrim(coalesce(p_search, '')));
    v_found integer;
BEGIN
    IF v_needle = '' THEN
        RAISE EXCEPTION 'lookup_customers: give some search text' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
        SELECT c.* FROM crm_customers c
        WHERE strpos(lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')), v_needle) > 0
           OR strpos(lower(coalesce(c.email, '')), v_needle) > 0
           OR strpos(coalesce(c.phone, ''), v_needle) > 0
           OR c.customer_id::text = v_needle
        ORDER BY c.customer_id
        LIMIT greatest(least(coalesce(p_limit, 20), 200), 1);
    GET DIAGNOSTICS v_found = ROW_COUNT;
    PERFORM record_audit('lookup_customers', jsonb_build_object('search', p_search, 'limit', p_limit),
                         jsonb_build_object('found', v_found), 'ok',
                         round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3), p_reason);
END;
$$;

-- search_customers (0004) keeps its name, signature and result columns and becomes the audited
-- support search: the search itself moves to customer_search_rows (unchanged body, invoker rights, so
-- nobody without SELECT on crm_customers can call it usefully), and the wrapper writes the audit row.
ALTER FUNCTION search_customers(text, integer) RENAME TO customer_search_rows;
CREATE FUNCTION search_customers(p_query text, p_limit integer DEFAULT 20)
RETURNS TABLE(
    customer_id bigint,
    customer_uuid uuid,
    first_name varchar,
    last_name varchar,
    email varchar,
    phone varchar,
    match_kind text,
    score real,
    golden_customer_id bigint,
    total_orders bigint,
    total_lifetime_value numeric,
    value_segment text,
    activity_segment text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
    v_found integer;
BEGIN
    RETURN QUERY SELECT * FROM customer_search_rows(p_query, p_limit);
    GET DIAGNOSTICS v_found = ROW_COUNT;
    PERFORM record_audit('search_customers', jsonb_build_object('query', p_query, 'limit', p_limit),
                         jsonb_build_object('found', v_found), 'ok',
                         round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3), NULL);
END;
$$;
REVOKE EXECUTE ON FUNCTION customer_search_rows(text, integer) FROM PUBLIC;

------------------------------------------------------------------------------------------------------
-- Spec entry points that did not audit themselves: same signatures and result columns, now audited
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
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
BEGIN
    SELECT d.processed_count, d.failed_count + d.dead_letter_count, d.avg_processing_ms, d.batch_duration
    INTO processed_count, failed_count, avg_processing_ms, batch_duration
    FROM process_financial_batch_detail(p_batch_size, p_max_processing_time) d;
    PERFORM record_audit(
        'process_financial_batch',
        jsonb_build_object('batch_size', p_batch_size, 'max_processing_time', p_max_processing_time::text),
        jsonb_build_object('processed_count', processed_count, 'failed_count', failed_count,
                           'avg_processing_ms', avg_processing_ms, 'batch_duration', batch_duration::text),
        'ok', round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3), NULL);
    RETURN NEXT;
END;
$$;

CREATE OR REPLACE FUNCTION refresh_data_catalog()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
    r       record;
BEGIN
    SELECT * INTO r FROM refresh_data_catalog_report();
    PERFORM record_audit(
        'refresh_data_catalog', '{}'::jsonb,
        jsonb_build_object('added', r.added, 'changed', r.changed, 'removed', r.removed, 'total', r.total),
        'ok', round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3), NULL);
    RETURN r.added + r.changed + r.removed;
END;
$$;

SELECT opsconsole_apply_grants();
