-- 80_privacy.sql: Privacy: column classification, masking, the masked views and audited customer lookups.
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.

-- The classification of one column: what people set in data_catalog, else the catalog's default for
-- its name and type (so a column nobody has catalogued yet is treated as the default says: fail safe).
CREATE OR REPLACE FUNCTION column_classification(p_table text, p_column text, p_data_type text DEFAULT NULL)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT coalesce(
        (SELECT c.data_classification::text FROM data_catalog c
         WHERE c.schema_name = 'public' AND c.table_name = p_table AND c.column_name = p_column
           AND c.database_name = current_database()
         LIMIT 1),
        catalog_default_classification(p_column, coalesce(p_data_type, 'text'))::text);
$$;


-- Whether a role without PII rights may read the column as stored.
CREATE OR REPLACE FUNCTION column_is_pii(p_table text, p_column text, p_data_type text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT column_classification(p_table, p_column, p_data_type) IN ('confidential', 'restricted');
$$;


------------------------------------------------------------------------------------------------------
-- Masking (one definition per kind of value)
------------------------------------------------------------------------------------------------------
-- email: first character, ***, the domain ('a***@example.com'); no '@': '***'.
CREATE OR REPLACE FUNCTION mask_email(p_email text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE
        WHEN p_email IS NULL THEN NULL
        WHEN strpos(p_email, '@') > 1 THEN left(p_email, 1) || '***@' || split_part(p_email, '@', 2)
        ELSE '***'
    END;
$$;


-- phone: every digit but the last two becomes '*', separators dropped ('*********89').
CREATE OR REPLACE FUNCTION mask_phone(p_phone text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE
        WHEN p_phone IS NULL THEN NULL
        ELSE repeat('*', greatest(length(regexp_replace(p_phone, '\D', '', 'g')) - 2, 0))
             || right(regexp_replace(p_phone, '\D', '', 'g'), 2)
    END;
$$;


-- names: the initial and a dot ('J.').
CREATE OR REPLACE FUNCTION mask_name(p_name text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE WHEN p_name IS NULL OR btrim(p_name) = '' THEN p_name ELSE left(btrim(p_name), 1) || '.' END;
$$;


-- address: the city only ({"city": ...}).
CREATE OR REPLACE FUNCTION mask_address(p_address jsonb)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE WHEN p_address IS NULL THEN NULL
                ELSE jsonb_strip_nulls(jsonb_build_object('city', p_address ->> 'city')) END;
$$;


-- search text as the audit log keeps it: the first character, '***' and the length ('s*** (5)').
-- ops_audit_log is readable by viewers, and a search for a name, an e-mail or a phone number is that
-- PII; who searched, when, why (p_reason) and how many rows it found stay in the row as they were.
CREATE OR REPLACE FUNCTION mask_search_text(p_text text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE WHEN p_text IS NULL THEN NULL
                ELSE left(btrim(p_text), 1) || '*** (' || length(btrim(p_text)) || ')' END;
$$;


-- The customers as roles without PII rights see them: each column masked when data_catalog classifies
-- it confidential (restricted: NULL), as stored when it is public or internal. A SECURITY DEFINER
-- function (it reads crm_customers with the owner's rights) under a view: a plain view would pin the
-- columns' types, so ALTER TABLE crm_customers ... TYPE (schema evolution) would need it dropped first.
-- The classification is looked up once per call, not per row.
CREATE OR REPLACE FUNCTION customers_masked_rows()
RETURNS TABLE(customer_id bigint, customer_uuid uuid, first_name text, last_name text, email text,
              phone text, address jsonb, created_at timestamptz, updated_at timestamptz, source_system text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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

CREATE OR REPLACE VIEW customers_masked AS SELECT * FROM customers_masked_rows();
COMMENT ON VIEW customers_masked IS
    'crm_customers with PII masked as data_catalog.data_classification says (email a***@domain, phone last 2 '
    'digits, names initial, address city only; restricted columns NULL).';


-- Customer 360 as roles without PII rights see it: the same masks, names/email/phone per the catalog's
-- classification of customer_360_mv's columns (looked up once per query, not per row). Everything
-- that is not PII is as in customer_360_mv. Owned by the migration owner: viewers need no grant on
-- the store.
CREATE OR REPLACE VIEW customer_360_masked AS
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
CREATE OR REPLACE FUNCTION lookup_customer(p_customer_id bigint, p_reason text DEFAULT NULL)
RETURNS SETOF crm_customers
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
CREATE OR REPLACE FUNCTION lookup_customers(p_search text, p_limit integer DEFAULT 20, p_reason text DEFAULT NULL)
RETURNS SETOF crm_customers
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
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
    PERFORM record_audit('lookup_customers', jsonb_build_object('search', mask_search_text(p_search), 'limit', p_limit),
                         jsonb_build_object('found', v_found), 'ok',
                         round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3), p_reason);
END;
$$;


------------------------------------------------------------------------------------------------------
-- Data leaving through the console: every export (CSV/JSON file) or copy (clipboard) of a list
------------------------------------------------------------------------------------------------------
-- The console writes the file or the clipboard itself (the rows are what the role already read, masked
-- by the database as that role sees them); this records it, in the transaction the console writes the
-- file in, under one action name: console.export. The classifications touched are worked out here from
-- the columns' sources ('table.column', as data_catalog classifies them, else the default by name), not
-- taken from the caller. Every group role may export what it can read, so every group may call it; the
-- row it writes only ever says "this session exported p_rows rows of these columns".
CREATE OR REPLACE FUNCTION console_export(
    p_list text,
    p_format text,
    p_rows integer,
    p_columns text[],
    p_target text DEFAULT NULL
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_classes jsonb;
BEGIN
    IF p_format IS NULL OR p_format NOT IN ('csv', 'json', 'clipboard') THEN
        RAISE EXCEPTION 'console_export: the format is csv, json or clipboard, not %', coalesce(p_format, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_rows IS NULL OR p_rows < 0 THEN
        RAISE EXCEPTION 'console_export: the row count must be zero or more' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_list IS NULL OR p_list !~ '^[a-z][a-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'console_export: % is not a list name', p_list USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT coalesce(jsonb_object_agg(s.class, s.columns), '{}'::jsonb)
    INTO v_classes
    FROM (SELECT coalesce(column_classification(split_part(c, '.', 1), split_part(c, '.', 2)), 'unknown') AS class,
                 jsonb_agg(DISTINCT c) AS columns
          FROM unnest(coalesce(p_columns, '{}'::text[])) AS c
          WHERE c ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$'
          GROUP BY 1) s;
    PERFORM record_audit('console.export',
                         jsonb_build_object('list', p_list, 'format', p_format, 'target', left(p_target, 500),
                                            'columns', to_jsonb(p_columns)),
                         jsonb_build_object('rows', p_rows, 'classifications', v_classes),
                         'ok', NULL, NULL);
    RETURN v_classes;
END;
$$;
