-- 60_catalog_lineage.sql: Data catalog and lineage: catalog refresh, classification defaults, lineage walks.
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.

-- The default classification of a column, from its name and type (applied once, when the column is
-- first catalogued):
--   restricted:   government, payment and secret identifiers (ssn, tax_id, passport, national_id,
--                 card/credit_card number, cvv, iban, bank account, password, secret, api_key, token)
--   confidential: personal data (email, phone/mobile/fax, address/street/postal or zip code, first,
--                 last, middle, full, given or family name, date/place of birth, ip_address or any inet
--                 column, user_agent, customer_data: the lakehouse's copy of the CRM row)
--   internal:     everything else.
CREATE OR REPLACE FUNCTION catalog_default_classification(p_column_name text, p_data_type text)
RETURNS varchar
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE
        WHEN lower(p_column_name) ~ '(^|_)(ssn|social_security(_number)?|tax_id|tin|passport(_number)?|national_id|card_number|credit_card(_number)?|cvv|iban|bank_account(_number)?|password|password_hash|secret|api_key|access_token|refresh_token|token)($|_)'
            THEN 'restricted'
        WHEN lower(p_column_name) ~ '(^|_)(e_?mail|phone|mobile|fax|address|street|postal_code|postcode|zip|zip_code|(first|last|middle|full|given|family|sur)_?name|birth_?date|date_of_birth|dob|place_of_birth|ip|ip_address|user_agent|customer_data)($|_)'
             OR p_data_type IN ('inet', 'cidr', 'macaddr', 'macaddr8')
            THEN 'confidential'
        ELSE 'internal'
    END;
$$;


-- Brings data_catalog in line with the database and reports what changed. "changed" counts rows whose
-- technical columns (type, nullability, descriptions, default, position, object type) differ; rows
-- that did not change are not rewritten. NOTIFY opsconsole_catalog carries the counts.
CREATE OR REPLACE FUNCTION data_catalog_sync(
    OUT added integer,
    OUT changed integer,
    OUT removed integer,
    OUT total integer,
    OUT duration_ms numeric
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_started    timestamptz := clock_timestamp();
    v_relabelled bigint[];   -- rows re-labelled count as changed
BEGIN
    -- One refresh at a time (a second caller waits and then finds little to do).
    PERFORM pg_advisory_xact_lock(1128354899);   -- 'CAT!'

    -- The catalog describes the database it lives in: after a rename or a clone (CREATE DATABASE ...
    -- TEMPLATE) its rows carry the old name. Re-label them, keeping their governance fields.
    DELETE FROM data_catalog o
    WHERE o.database_name <> current_database()
      AND EXISTS (SELECT 1 FROM data_catalog n
                  WHERE n.database_name = current_database() AND n.schema_name = o.schema_name
                    AND n.table_name = o.table_name AND n.column_name = o.column_name);
    WITH relabelled AS (
        UPDATE data_catalog SET database_name = current_database() WHERE database_name <> current_database()
        RETURNING catalog_id
    )
    SELECT coalesce(array_agg(catalog_id), '{}') INTO v_relabelled FROM relabelled;

    WITH snapshot AS MATERIALIZED (
        SELECT current_database()::varchar AS database_name, n.nspname::varchar AS schema_name,
               c.relname::varchar AS table_name, a.attname::varchar AS column_name,
               format_type(a.atttypid, a.atttypmod)::varchar AS data_type,
               NOT a.attnotnull AS is_nullable,
               col_description(c.oid, a.attnum) AS column_description,
               pg_get_userbyid(c.relowner)::varchar AS technical_owner,
               catalog_default_classification(a.attname, format_type(a.atttypid, NULL)) AS data_classification,
               CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
                              WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' END::varchar
                   AS object_type,
               a.attnum::integer AS ordinal_position,
               obj_description(c.oid, 'pg_class') AS table_description,
               pg_get_expr(d.adbin, d.adrelid) AS column_default
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND NOT c.relispartition                  -- partitions are folded into their parent
          AND NOT EXISTS (SELECT 1 FROM pg_depend e  -- an extension's own (Citus's citus_tables view)
                          WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e')
          AND n.nspname = ANY (platform_schemas())
    ),
    upserted AS (
        INSERT INTO data_catalog AS dc (database_name, schema_name, table_name, column_name, data_type,
                                        is_nullable, column_description, technical_owner,
                                        data_classification, object_type, ordinal_position,
                                        table_description, column_default, last_updated, first_seen_at)
        SELECT s.database_name, s.schema_name, s.table_name, s.column_name, s.data_type, s.is_nullable,
               s.column_description, s.technical_owner, s.data_classification, s.object_type,
               s.ordinal_position, s.table_description, s.column_default, clock_timestamp(), clock_timestamp()
        FROM snapshot s
        ON CONFLICT (database_name, schema_name, table_name, column_name) DO UPDATE
        SET data_type          = EXCLUDED.data_type,           -- governance columns are left alone
            is_nullable        = EXCLUDED.is_nullable,
            column_description = EXCLUDED.column_description,
            object_type        = EXCLUDED.object_type,
            ordinal_position   = EXCLUDED.ordinal_position,
            table_description  = EXCLUDED.table_description,
            column_default     = EXCLUDED.column_default,
            last_updated       = clock_timestamp()
        WHERE (dc.data_type, dc.is_nullable, dc.column_description, dc.object_type, dc.ordinal_position,
               dc.table_description, dc.column_default)
              IS DISTINCT FROM
              (EXCLUDED.data_type, EXCLUDED.is_nullable, EXCLUDED.column_description, EXCLUDED.object_type,
               EXCLUDED.ordinal_position, EXCLUDED.table_description, EXCLUDED.column_default)
        RETURNING dc.catalog_id, (dc.xmax = 0) AS inserted
    ),
    -- Same statement snapshot: sees the catalog as it was before the upsert, so it only removes rows
    -- that are no longer in the database.
    deleted AS (
        DELETE FROM data_catalog dc
        WHERE dc.database_name = current_database()
          AND dc.schema_name = ANY (platform_schemas()::text[])
          AND NOT EXISTS (SELECT 1 FROM snapshot s
                          WHERE s.schema_name = dc.schema_name AND s.table_name = dc.table_name
                            AND s.column_name = dc.column_name)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM upserted u WHERE u.inserted),
           (SELECT count(*) FROM (SELECT u.catalog_id FROM upserted u WHERE NOT u.inserted
                                  UNION SELECT unnest(v_relabelled)) ch),
           (SELECT count(*) FROM deleted),
           (SELECT count(*) FROM snapshot)
    INTO added, changed, removed, total;

    duration_ms := round((extract(epoch FROM clock_timestamp() - v_started) * 1000)::numeric, 3);
    PERFORM pg_notify('opsconsole_catalog', json_build_object(
        'added', added, 'changed', changed, 'removed', removed, 'total', total)::text);
END;
$$;


-- The operator's catalog refresh: the sync, and its one audit row (refresh_data_catalog), whoever
-- calls it; refresh_data_catalog() returns through here. Migrations and definitions call
-- data_catalog_sync() directly: installing the schema is not an operator action.
CREATE OR REPLACE FUNCTION refresh_data_catalog_report(
    OUT added integer,
    OUT changed integer,
    OUT removed integer,
    OUT total integer,
    OUT duration_ms numeric
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    SELECT s.added, s.changed, s.removed, s.total, s.duration_ms
    INTO added, changed, removed, total, duration_ms
    FROM data_catalog_sync() s;
    PERFORM record_audit(
        'refresh_data_catalog', '{}'::jsonb,
        jsonb_build_object('added', added, 'changed', changed, 'removed', removed, 'total', total),
        'ok', duration_ms, NULL);
END;
$$;
COMMENT ON FUNCTION refresh_data_catalog_report() IS
    'Refresh data_catalog from the system catalogs; returns added, changed and removed row counts.';

CREATE OR REPLACE FUNCTION refresh_data_catalog()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    r       record;
BEGIN
    SELECT * INTO r FROM refresh_data_catalog_report();   -- writes the audit row
    RETURN r.added + r.changed + r.removed;
END;
$$;
COMMENT ON FUNCTION refresh_data_catalog() IS 'Refresh data_catalog; returns the number of rows added, changed or removed.';


-- Tables of the platform schemas are named without their schema (public.crm_customers is stored as
-- crm_customers), so a flow recorded either way is one flow and the walks find it.
CREATE OR REPLACE FUNCTION lineage_table_name(p_name text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT CASE WHEN position('.' IN p_name) > 0 AND split_part(p_name, '.', 1) = ANY (platform_schemas()::text[])
                THEN substr(p_name, length(split_part(p_name, '.', 1)) + 2)
                ELSE p_name END;
$$;

CREATE OR REPLACE FUNCTION data_lineage_normalize()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    NEW.source_table := lineage_table_name(NEW.source_table);
    NEW.target_table := lineage_table_name(NEW.target_table);
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER data_lineage_normalize BEFORE INSERT OR UPDATE OF source_table, target_table ON data_lineage
    FOR EACH ROW EXECUTE FUNCTION data_lineage_normalize();


-- Records a flow (idempotent); returns its lineage_id.
CREATE OR REPLACE FUNCTION record_lineage(
    p_source_table text,
    p_target_table text,
    p_pipeline_name text,
    p_transformation_logic text DEFAULT NULL,
    p_source_column text DEFAULT NULL,
    p_target_column text DEFAULT NULL
)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF nullif(btrim(p_source_table), '') IS NULL OR nullif(btrim(p_target_table), '') IS NULL THEN
        RAISE EXCEPTION 'record_lineage: source and target must be named' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO data_lineage AS dl (source_table, source_column, target_table, target_column,
                                    transformation_logic, pipeline_name)
    VALUES (btrim(p_source_table), nullif(btrim(p_source_column), ''), btrim(p_target_table),
            nullif(btrim(p_target_column), ''), p_transformation_logic, nullif(btrim(p_pipeline_name), ''))
    ON CONFLICT ON CONSTRAINT data_lineage_flow_key DO UPDATE
        SET transformation_logic = coalesce(EXCLUDED.transformation_logic, dl.transformation_logic),
            last_recorded_at = now()
    RETURNING dl.lineage_id INTO v_id;
    RETURN v_id;
END;
$$;


-- Table-level walk of the lineage graph. p_upstream: follow flows into the table (where its data comes
-- from), else out of it (where its data goes). Every flow appears once, at the depth where it is first
-- reached; a flow that closes a cycle is listed but not followed, so cycles terminate.
CREATE OR REPLACE FUNCTION lineage_walk(p_table text, p_upstream boolean, p_max_depth integer DEFAULT 50)
RETURNS TABLE (
    depth                integer,
    source_table         varchar,
    target_table         varchar,
    pipeline_name        varchar,
    transformation_logic text
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    WITH RECURSIVE walk (depth, lineage_id, source_table, target_table, pipeline_name, transformation_logic,
                         next_table, visited, closes_cycle) AS (
        SELECT 1, l.lineage_id, l.source_table, l.target_table, l.pipeline_name, l.transformation_logic,
               CASE WHEN p_upstream THEN l.source_table ELSE l.target_table END::text,
               ARRAY[p_table, CASE WHEN p_upstream THEN l.source_table ELSE l.target_table END::text],
               (CASE WHEN p_upstream THEN l.source_table ELSE l.target_table END) = p_table
        FROM data_lineage l
        WHERE (CASE WHEN p_upstream THEN l.target_table ELSE l.source_table END) = p_table
        UNION ALL
        SELECT w.depth + 1, l.lineage_id, l.source_table, l.target_table, l.pipeline_name,
               l.transformation_logic,
               CASE WHEN p_upstream THEN l.source_table ELSE l.target_table END::text,
               w.visited || (CASE WHEN p_upstream THEN l.source_table ELSE l.target_table END)::text,
               (CASE WHEN p_upstream THEN l.source_table ELSE l.target_table END)::text = ANY (w.visited)
        FROM walk w
        JOIN data_lineage l
          ON (CASE WHEN p_upstream THEN l.target_table ELSE l.source_table END) = w.next_table
        WHERE NOT w.closes_cycle AND w.depth < p_max_depth
    )
    SELECT f.depth, f.source_table, f.target_table, f.pipeline_name, f.transformation_logic
    FROM (
        SELECT DISTINCT ON (w.source_table, w.target_table, w.pipeline_name)
               w.depth, w.source_table, w.target_table, w.pipeline_name, w.transformation_logic
        FROM walk w
        ORDER BY w.source_table, w.target_table, w.pipeline_name, w.depth, w.lineage_id
    ) f
    ORDER BY f.depth, f.source_table, f.target_table, f.pipeline_name;
$$;


-- Where a table's data comes from, nearest first (public.x and x name the same table).
CREATE OR REPLACE FUNCTION lineage_upstream(p_table text)
RETURNS TABLE (
    depth                integer,
    source_table         varchar,
    target_table         varchar,
    pipeline_name        varchar,
    transformation_logic text
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT * FROM lineage_walk(lineage_table_name(p_table), true) $$;


-- Where a table's data goes, nearest first (public.x and x name the same table).
CREATE OR REPLACE FUNCTION lineage_downstream(p_table text)
RETURNS TABLE (
    depth                integer,
    source_table         varchar,
    target_table         varchar,
    pipeline_name        varchar,
    transformation_logic text
)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT * FROM lineage_walk(lineage_table_name(p_table), false) $$;


------------------------------------------------------------------------------------------------------
-- Statistics
------------------------------------------------------------------------------------------------------
-- ANALYZEs the platform's tables whose statistics are stale and says what it did.
-- A table qualifies when at least 1000 rows changed since its last analyze, manual (last_analyze) or
-- automatic (last_autoanalyze): n_mod_since_analyze counts from whichever came last.
-- Autovacuum never analyzes partitioned parents, so a parent qualifies when its partitions changed
-- that much in total, when it was never analyzed while its partitions hold rows, or when autovacuum
-- re-analyzed one of its partitions after the parent's last ANALYZE (the parent's statistics are older
-- than that change).
-- Analyzing a parent also analyzes its partitions, which are then not listed separately.
CREATE OR REPLACE FUNCTION optimize_table_statistics()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    c_min_changes constant bigint := 1000;
    r       record;
    v_done  text[] := '{}';
    v_leafs oid[] := '{}';
BEGIN
    -- Partitioned parents first (their ANALYZE covers the partitions).
    FOR r IN
        SELECT n.nspname AS schemaname, c.relname, c.oid,
               leaf.changes, leaf.live, leaf.newest_auto, leaf.ids, s.last_analyze
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(ls.n_mod_since_analyze), 0) AS changes,
                   coalesce(sum(ls.n_live_tup), 0) AS live,
                   max(ls.last_autoanalyze) AS newest_auto,
                   array_agg(t.relid) AS ids
            FROM pg_partition_tree(c.oid) t
            LEFT JOIN pg_stat_all_tables ls ON ls.relid = t.relid
            WHERE t.isleaf
        ) leaf
        WHERE c.relkind = 'p' AND NOT c.relispartition
          AND n.nspname = ANY (platform_schemas())
          AND (leaf.changes >= c_min_changes
               OR (s.last_analyze IS NULL AND leaf.live + leaf.changes > 0)
               OR leaf.newest_auto > s.last_analyze)
        ORDER BY n.nspname, c.relname
    LOOP
        EXECUTE format('ANALYZE %I.%I', r.schemaname, r.relname);
        v_done := v_done || format('Analyzed %I.%I (partitioned, %s changes)', r.schemaname, r.relname, r.changes);
        v_leafs := v_leafs || r.ids;
    END LOOP;

    FOR r IN
        SELECT s.schemaname, s.relname, s.n_mod_since_analyze AS changes
        FROM pg_stat_user_tables s
        WHERE s.schemaname = ANY (platform_schemas())
          AND NOT s.relid = ANY (v_leafs)
          AND s.n_mod_since_analyze >= c_min_changes
          AND EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = s.relid AND c.relkind IN ('r', 'm'))
        ORDER BY s.schemaname, s.relname
    LOOP
        EXECUTE format('ANALYZE %I.%I', r.schemaname, r.relname);
        v_done := v_done || format('Analyzed %I.%I (%s changes)', r.schemaname, r.relname, r.changes);
    END LOOP;

    IF cardinality(v_done) = 0 THEN
        RETURN 'No tables needed analysis';
    END IF;
    RETURN array_to_string(v_done, '; ');
END;
$$;
COMMENT ON FUNCTION optimize_table_statistics() IS
    'ANALYZE platform tables (and partitioned parents) whose statistics are stale; says which.';

-- The sync runs once per definitions pass, after every file (the end of 99_grants.sql): here it ran
-- before 80_privacy.sql and 85_search.sql made their views, so a fresh install's catalog lacked the
-- masked views and the next pass catalogued them as new ("added" on the Timeline).
