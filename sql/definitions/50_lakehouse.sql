-- 50_lakehouse.sql: Lakehouse: versioned customer history, time travel, schema evolution capture (event triggers).
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.

-- The lakehouse: versioned customers with time travel, and a schema evolution log that fills itself.
--
-- lakehouse_customers keeps every version of every CRM customer. Versions are written only by
-- lakehouse_apply_changes(), which the CRM triggers call once per statement: it numbers versions
-- gap-free per customer (lakehouse_customer_chains holds the counter and the chain lock), closes the
-- previous version in the same transaction, and an exclusion constraint makes two versions of one
-- customer overlapping in time impossible. A DELETE is recorded as a tombstone version, so history
-- survives the delete.

-- The schemas the platform owns: what the schema evolution log, the catalog and the statistics job
-- look at. One definition, used by all three.
CREATE OR REPLACE FUNCTION platform_schemas()
RETURNS name[]
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT ARRAY['public']::name[] $$;
COMMENT ON FUNCTION platform_schemas() IS 'The schemas holding platform objects (evolution log, catalog, statistics).';


-- The one writer of lakehouse_customers. Takes one change per customer (parallel arrays), claims the
-- next version number of each chain (locking it until commit; in customer_id order so concurrent
-- writers cannot deadlock on each other), then closes the open version and appends the new one.
-- Returns the number of versions written. Written so that Citus runs it with the versions and chains
-- distributed by customer_id (docs/scaling.md): no volatile call in ON CONFLICT ... DO UPDATE SET, no
-- subquery correlated with unnest(), no STABLE expression of the updated row in an UPDATE's SET.
CREATE OR REPLACE FUNCTION lakehouse_apply_changes(
    p_customer_ids bigint[],
    p_customer_data jsonb[],
    p_operations text[],
    p_source_updated_at timestamptz[] DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_n        integer := coalesce(cardinality(p_customer_ids), 0);
    v_now      timestamptz;
    v_ids      bigint[];
    v_versions_claimed integer[];
    v_versions regclass;
    v_chains   regclass;
    v_written  integer;
    v_claimed_at timestamptz := clock_timestamp();
    v_open_ids bigint[];
    v_open_versions integer[];
    v_close_at timestamptz[];
BEGIN
    IF v_n = 0 THEN
        RETURN 0;
    END IF;
    IF coalesce(cardinality(p_customer_data), 0) <> v_n OR coalesce(cardinality(p_operations), 0) <> v_n
       OR (p_source_updated_at IS NOT NULL AND cardinality(p_source_updated_at) <> v_n) THEN
        RAISE EXCEPTION 'lakehouse_apply_changes: the arrays must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_operations) op WHERE op IS NULL OR op NOT IN ('INSERT', 'UPDATE', 'DELETE'))
       OR EXISTS (SELECT 1 FROM unnest(p_customer_ids) id WHERE id IS NULL) THEN
        RAISE EXCEPTION 'lakehouse_apply_changes: customer ids must be set and operations be INSERT, UPDATE or DELETE'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT count(DISTINCT id) FROM unnest(p_customer_ids) id) <> v_n THEN
        RAISE EXCEPTION 'lakehouse_apply_changes: one change per customer per call'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- The tables themselves, or, when Citus runs the CRM capture on a shard on a worker, the shards
    -- co-located with it (shard_local): a shard trigger must not run distributed statements, and every
    -- customer of one shard's statement is in the same shard.
    v_versions := shard_local('lakehouse_customers', p_customer_ids[1]);
    v_chains := shard_local('lakehouse_customer_chains', p_customer_ids[1]);
    IF v_versions <> 'lakehouse_customers'::regclass
       AND EXISTS (SELECT 1 FROM unnest(p_customer_ids) id WHERE shard_local('lakehouse_customers', id) <> v_versions) THEN
        RAISE EXCEPTION 'lakehouse_apply_changes: on a Citus worker, one call writes the customers of one shard'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- 1. Claim the version numbers. A new chain starts after any rows already in the table (e.g.
    --    written by hand); an existing one counts on from its committed last_version.
    EXECUTE format($q$
        WITH claimed AS (
            INSERT INTO %1$s AS ch (customer_id, last_version)
            SELECT u.id, coalesce(m.last_version, 0) + 1
            FROM unnest($1) AS u(id)
            LEFT JOIN (SELECT lc.customer_id, max(lc.version_number) AS last_version
                       FROM %2$s lc
                       WHERE lc.customer_id = ANY ($1)
                       GROUP BY lc.customer_id) m ON m.customer_id = u.id
            ORDER BY u.id
            ON CONFLICT (customer_id) DO UPDATE
                SET last_version = greatest(ch.last_version + 1, EXCLUDED.last_version),
                    updated_at = $2
            RETURNING ch.customer_id, ch.last_version
        )
        SELECT array_agg(c.customer_id), array_agg(c.last_version) FROM claimed c$q$, v_chains, v_versions)
    INTO v_ids, v_versions_claimed USING p_customer_ids, v_claimed_at;

    -- 2. A new statement, so its snapshot includes every version committed by whoever held these
    --    chains before us. Close each open version, append the new one. The open versions and their
    --    end (strictly after the version's start, even for two changes within one microsecond) are
    --    read first: the chains are locked, so they cannot change before the UPDATE.
    v_now := clock_timestamp();
    EXECUTE format($q$
        SELECT array_agg(lo.customer_id), array_agg(lo.version_number),
               array_agg(greatest($2, lo.effective_from + interval '1 microsecond'))
        FROM %s lo
        WHERE lo.customer_id = ANY ($1) AND lo.effective_to IS NULL$q$, v_versions)
    INTO v_open_ids, v_open_versions, v_close_at USING p_customer_ids, v_now;
    EXECUTE format($q$
        WITH input AS (
            SELECT u.id, u.data, u.op, u.src, v.version
            FROM unnest($1, $2, $3, $4) AS u(id, data, op, src)
            JOIN unnest($5, $6) AS v(id, version) ON v.id = u.id
        ),
        last_end AS (   -- where a chain without an open version ended (hand-written rows)
            SELECT i.id, m.ended
            FROM input i
            LEFT JOIN (SELECT lc.customer_id, max(lc.effective_to) AS ended
                       FROM %1$s lc
                       WHERE lc.customer_id = ANY ($1)
                       GROUP BY lc.customer_id) m ON m.customer_id = i.id
        ),
        closed AS (
            UPDATE %1$s lc
            SET effective_to = o.close_at
            FROM unnest($7, $8, $9) AS o(customer_id, version_number, close_at)
            WHERE lc.customer_id = o.customer_id AND lc.version_number = o.version_number
              AND lc.effective_to IS NULL
            RETURNING lc.customer_id, lc.effective_to
        )
        INSERT INTO %1$s (customer_id, customer_data, effective_from, effective_to, version_number,
                          operation_type, transaction_id, source_updated_at)
        SELECT i.id, i.data, coalesce(c.effective_to, greatest($10, e.ended)), NULL, i.version, i.op,
               txid_current(), i.src
        FROM input i
        JOIN last_end e ON e.id = i.id
        LEFT JOIN closed c ON c.customer_id = i.id   -- a joined row exists only once its close is done
        $q$, v_versions)
    USING p_customer_ids, p_customer_data, p_operations,
          coalesce(p_source_updated_at, array_fill(NULL::timestamptz, ARRAY[v_n])),
          v_ids, v_versions_claimed, v_open_ids, v_open_versions, v_close_at, v_now;
    GET DIAGNOSTICS v_written = ROW_COUNT;
    RETURN v_written;
END;
$$;
COMMENT ON FUNCTION lakehouse_apply_changes(bigint[], jsonb[], text[], timestamptz[]) IS
    'The one writer of lakehouse_customers: gap-free version numbers, previous version closed, chains locked.';


-- CRM -> lakehouse capture, one call per statement (transition tables), so a bulk load costs one
-- set-based write. An UPDATE that changes nothing but updated_at writes no version; an UPDATE of the
-- key itself is recorded as a delete of the old id and an insert of the new one. Very large statements
-- build arrays of the whole change set: load millions of customers in chunks (e.g. 100k rows).
-- Runs as its owner: a role allowed to change CRM rows needs no write grant on the lakehouse tables
-- (and cannot write versions any other way).
CREATE OR REPLACE FUNCTION lakehouse_capture_crm_changes()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_ids  bigint[];
    v_data jsonb[];
    v_ops  text[];
    v_src  timestamptz[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.customer_id), array_agg(to_jsonb(n)), array_agg('INSERT'::text), array_agg(n.updated_at)
        INTO v_ids, v_data, v_ops, v_src
        FROM new_rows n;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.customer_id), array_agg(to_jsonb(o)), array_agg('DELETE'::text),
               array_agg(NULL::timestamptz)
        INTO v_ids, v_data, v_ops, v_src
        FROM old_rows o;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(coalesce(n.customer_id, o.customer_id)),
               array_agg(CASE WHEN n.customer_id IS NULL THEN to_jsonb(o) ELSE to_jsonb(n) END),
               array_agg(CASE WHEN o.customer_id IS NULL THEN 'INSERT'
                              WHEN n.customer_id IS NULL THEN 'DELETE' ELSE 'UPDATE' END),
               array_agg(n.updated_at)
        INTO v_ids, v_data, v_ops, v_src
        FROM old_rows o
        FULL JOIN new_rows n ON n.customer_id = o.customer_id
        WHERE o.customer_id IS NULL OR n.customer_id IS NULL
           OR (to_jsonb(o) - 'updated_at') IS DISTINCT FROM (to_jsonb(n) - 'updated_at');
    ELSIF TG_OP = 'TRUNCATE' THEN   -- every live customer (of this shard, on Citus) gets a tombstone
        EXECUTE format('SELECT array_agg(lc.customer_id), array_agg(lc.customer_data), array_agg(%L::text),
                               array_agg(NULL::timestamptz)
                        FROM %s lc
                        WHERE lc.effective_to IS NULL AND lc.operation_type IS DISTINCT FROM %L',
                       'DELETE', shard_local_to('lakehouse_customers', TG_RELID), 'DELETE')
        INTO v_ids, v_data, v_ops, v_src;
    END IF;
    IF v_ids IS NOT NULL THEN
        PERFORM lakehouse_apply_changes(v_ids, v_data, v_ops, v_src);
    END IF;
    RETURN NULL;
END;
$$;


-- Transition tables allow one event per trigger, hence three triggers on one function.
CREATE OR REPLACE TRIGGER crm_customers_lakehouse_ins AFTER INSERT ON crm_customers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION lakehouse_capture_crm_changes();

CREATE OR REPLACE TRIGGER crm_customers_lakehouse_upd AFTER UPDATE ON crm_customers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lakehouse_capture_crm_changes();

CREATE OR REPLACE TRIGGER crm_customers_lakehouse_del AFTER DELETE ON crm_customers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION lakehouse_capture_crm_changes();

CREATE OR REPLACE TRIGGER crm_customers_lakehouse_trunc AFTER TRUNCATE ON crm_customers
    FOR EACH STATEMENT EXECUTE FUNCTION lakehouse_capture_crm_changes();


-- The latest version of every customer that is not deleted. The open version is found through the
-- partial unique index, not a correlated MAX; rows written without an operation_type are kept.
CREATE OR REPLACE VIEW lakehouse_customers_current AS
SELECT lc.customer_id,
       lc.customer_data,
       lc.effective_from,
       lc.effective_to,
       lc.version_number,
       lc.operation_type,
       lc.created_at,
       lc.transaction_id,
       lc.source_updated_at
FROM lakehouse_customers lc
WHERE lc.effective_to IS NULL
  AND lc.operation_type IS DISTINCT FROM 'DELETE';
COMMENT ON VIEW lakehouse_customers_current IS 'The current version of every customer that is not deleted.';


-- The customers as they were at an instant: the version whose [effective_from, effective_to) contains
-- it (at most one per customer, by the exclusion constraint), unless that version is a tombstone.
-- A timestamp without time zone argument is cast implicitly, read in the session's TimeZone.
CREATE OR REPLACE FUNCTION time_travel_customers(travel_timestamp timestamptz)
RETURNS TABLE (
    customer_id    bigint,
    customer_data  jsonb,
    effective_from timestamptz,
    version_number integer
)
LANGUAGE plpgsql   -- not sql: Citus cannot plan a SQL function's parameters over a distributed table
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT lc.customer_id, lc.customer_data, lc.effective_from, lc.version_number
    FROM lakehouse_customers lc
    WHERE lc.effective_from <= travel_timestamp
      AND (lc.effective_to IS NULL OR lc.effective_to > travel_timestamp)
      AND lc.operation_type IS DISTINCT FROM 'DELETE';
END;
$$;
COMMENT ON FUNCTION time_travel_customers(timestamptz) IS 'Every customer as it was at the given instant.';


-- One customer's versions, oldest first, with the fields each version changed (for the console).
CREATE OR REPLACE FUNCTION lake_history(p_customer_id bigint)
RETURNS TABLE (
    customer_id       bigint,
    version_number    integer,
    operation_type    varchar,
    effective_from    timestamptz,
    effective_to      timestamptz,
    changed_fields    text[],
    customer_data     jsonb,
    transaction_id    bigint,
    created_at        timestamptz,
    source_updated_at timestamptz
)
LANGUAGE plpgsql   -- not sql: Citus cannot plan a SQL function's parameters over a distributed table
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT h.customer_id, h.version_number, h.operation_type, h.effective_from, h.effective_to,
           CASE WHEN h.prev_data IS NULL OR h.operation_type = 'DELETE'
                     OR jsonb_typeof(h.customer_data) <> 'object' OR jsonb_typeof(h.prev_data) <> 'object'
                THEN NULL
                ELSE ARRAY(SELECT k.key
                           FROM (SELECT jsonb_object_keys(h.customer_data) AS key
                                 UNION SELECT jsonb_object_keys(h.prev_data)) k
                           WHERE h.customer_data -> k.key IS DISTINCT FROM h.prev_data -> k.key
                           ORDER BY k.key)
           END,
           h.customer_data, h.transaction_id, h.created_at, h.source_updated_at
    FROM (
        SELECT lc.*, lag(lc.customer_data) OVER (ORDER BY lc.version_number) AS prev_data
        FROM lakehouse_customers lc
        WHERE lc.customer_id = p_customer_id
    ) h
    ORDER BY h.version_number;
END;
$$;
COMMENT ON FUNCTION lake_history(bigint) IS 'A customer''s versions, oldest first, with the fields each one changed.';


-- What a relation looks like, as far as the log cares: columns by attnum, constraints and
-- stand-alone indexes by name, partitions (the whole tree, by name), and a view's query.
-- NOT NULL is read from pg_attribute (PostgreSQL 18 also keeps it in pg_constraint; skipped here).
CREATE OR REPLACE FUNCTION schema_evolution_shape(p_relid oid)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT jsonb_build_object(
        'columns', coalesce((
            SELECT jsonb_object_agg(a.attnum::text, jsonb_build_object(
                       'name', a.attname,
                       'type', format_type(a.atttypid, a.atttypmod),
                       'not_null', a.attnotnull,
                       'default', pg_get_expr(d.adbin, d.adrelid),
                       'generated', a.attgenerated <> '' OR a.attidentity <> ''))
            FROM pg_attribute a
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped), '{}'::jsonb),
        'constraints', coalesce((
            SELECT jsonb_object_agg(c.conname, jsonb_build_object(
                       'type', c.contype, 'definition', pg_get_constraintdef(c.oid)))
            FROM pg_constraint c
            WHERE c.conrelid = p_relid AND c.contype IN ('p', 'u', 'c', 'f', 'x')), '{}'::jsonb),
        'indexes', coalesce((
            SELECT jsonb_object_agg(ic.relname, jsonb_build_object(   -- from USING on: survives a table rename
                       'unique', i.indisunique,
                       'definition', substring(pg_get_indexdef(i.indexrelid) FROM ' (USING .*)$')))
            FROM pg_index i
            JOIN pg_class ic ON ic.oid = i.indexrelid
            WHERE i.indrelid = p_relid
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid
                                                              AND c.conrelid = p_relid)), '{}'::jsonb),
        'partitions', coalesce((
            SELECT jsonb_agg(pn.nspname || '.' || pc.relname ORDER BY pn.nspname, pc.relname)
            FROM pg_partition_tree(p_relid) t
            JOIN pg_class pc ON pc.oid = t.relid
            JOIN pg_namespace pn ON pn.oid = pc.relnamespace
            WHERE t.relid <> p_relid), '[]'::jsonb),
        'view', CASE WHEN (SELECT relkind FROM pg_class WHERE oid = p_relid) IN ('v', 'm')
                     THEN pg_get_viewdef(p_relid) END
    );
$$;


-- Appends one row to the log. p_version: the schema_version the row carries.
CREATE OR REPLACE FUNCTION schema_evolution_record(
    p_schema name, p_table text, p_version integer, p_type text, p_compatible boolean,
    p_object text, p_tag text, p_detail jsonb
)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, public, pg_temp
AS $$
    INSERT INTO schema_evolution_log (schema_name, table_name, schema_version, evolution_type, ddl_statement,
                                      backward_compatible, object_name, command_tag, change_detail)
    VALUES (p_schema, p_table, p_version, p_type, left(redact_sql_literals(current_query()), 8000), p_compatible, p_object, p_tag,
            p_detail);
$$;


-- The current schema_version of a table (0 before its first logged DDL). Callers hold the table's
-- advisory lock so two sessions cannot hand out the same number.
CREATE OR REPLACE FUNCTION schema_evolution_version(p_schema name, p_table text)
RETURNS integer
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT coalesce(max(l.schema_version), 0) FROM schema_evolution_log l
    WHERE l.schema_name = p_schema AND l.table_name = p_table;
$$;


-- Compares a relation's shape with its recorded one, logs the differences, stores the new shape.
-- p_maintenance: the DDL runs inside ensure_partitions().
CREATE OR REPLACE FUNCTION schema_evolution_track(p_relid oid, p_tag text, p_maintenance boolean)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_schema  name;
    v_table   name;
    v_kind    "char";
    v_old     schema_evolution_state%ROWTYPE;
    v_new     jsonb;
    v_version integer;
    v_rows    integer := 0;
    v_changes jsonb := '[]'::jsonb;   -- [{type, compatible, object, detail}]
    v_parts   jsonb;
    v_maint   jsonb;
    v_kind_word text;
    r         record;
    c         record;
BEGIN
    SELECT n.nspname, cl.relname, cl.relkind INTO v_schema, v_table, v_kind
    FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
    WHERE cl.oid = p_relid;
    IF NOT FOUND OR v_kind NOT IN ('r', 'p', 'v', 'm', 'f') OR NOT v_schema = ANY (platform_schemas())
       OR v_table IN ('opsconsole_migrations', 'opsconsole_definitions', 'schema_evolution_state') THEN
        RETURN 0;
    END IF;

    PERFORM pg_advisory_xact_lock(1397052497, hashtext(v_schema || '.' || v_table));   -- 'SEVQ'
    v_new := schema_evolution_shape(p_relid);
    SELECT * INTO v_old FROM schema_evolution_state s WHERE s.relid = p_relid;
    v_kind_word := CASE v_kind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED_VIEW' ELSE 'TABLE' END;

    IF NOT FOUND THEN
        INSERT INTO schema_evolution_state (relid, schema_name, table_name, relkind, shape)
        VALUES (p_relid, v_schema, v_table, v_kind, v_new);
        PERFORM schema_evolution_record(v_schema, v_table, schema_evolution_version(v_schema, v_table) + 1,
                                        'CREATE_' || v_kind_word, true, NULL, p_tag,
                                        jsonb_build_object('columns', jsonb_path_query_array(v_new, '$.columns.*.name')));
        RETURN 1;
    END IF;
    IF v_old.shape = v_new AND v_old.table_name = v_table AND v_old.schema_name = v_schema THEN
        RETURN 0;
    END IF;

    IF v_old.table_name <> v_table OR v_old.schema_name <> v_schema THEN
        v_changes := v_changes || jsonb_build_object('type', 'RENAME_' || v_kind_word, 'compatible', false,
            'object', v_table, 'detail', jsonb_build_object('from', v_old.schema_name || '.' || v_old.table_name,
                                                            'to', v_schema || '.' || v_table));
    END IF;

    -- Columns, matched by attnum (stable across renames and type changes).
    FOR c IN
        SELECT coalesce(o.key, n.key) AS attnum, o.value AS before, n.value AS after
        FROM jsonb_each(v_old.shape -> 'columns') o
        FULL JOIN jsonb_each(v_new -> 'columns') n ON n.key = o.key
        WHERE o.value IS DISTINCT FROM n.value
        ORDER BY coalesce(o.key, n.key)::int
    LOOP
        IF c.before IS NULL THEN
            v_changes := v_changes || jsonb_build_object('type', 'ADD_COLUMN', 'object', c.after ->> 'name',
                'compatible', NOT (c.after ->> 'not_null')::boolean OR c.after ->> 'default' IS NOT NULL
                              OR (c.after ->> 'generated')::boolean,
                'detail', jsonb_build_object('after', c.after));
        ELSIF c.after IS NULL THEN
            v_changes := v_changes || jsonb_build_object('type', 'DROP_COLUMN', 'object', c.before ->> 'name',
                'compatible', false, 'detail', jsonb_build_object('before', c.before));
        ELSE
            IF c.before ->> 'name' <> c.after ->> 'name' THEN
                v_changes := v_changes || jsonb_build_object('type', 'RENAME_COLUMN', 'object', c.after ->> 'name',
                    'compatible', false,
                    'detail', jsonb_build_object('from', c.before ->> 'name', 'to', c.after ->> 'name'));
            END IF;
            IF (c.before - 'name') <> (c.after - 'name') THEN
                v_changes := v_changes || jsonb_build_object('type', 'MODIFY_COLUMN', 'object', c.after ->> 'name',
                    'compatible',
                        c.before ->> 'type' = c.after ->> 'type'
                        AND NOT (NOT (c.before ->> 'not_null')::boolean AND (c.after ->> 'not_null')::boolean)
                        AND NOT (c.after ->> 'default' IS NULL AND c.before ->> 'default' IS NOT NULL
                                 AND (c.after ->> 'not_null')::boolean),
                    'detail', jsonb_build_object('before', c.before - 'name', 'after', c.after - 'name'));
            END IF;
        END IF;
    END LOOP;

    -- Constraints and stand-alone indexes, by name (a redefinition shows as drop + add).
    FOR r IN
        SELECT 'CONSTRAINT' AS what, coalesce(o.key, n.key) AS name, o.value AS before, n.value AS after
        FROM jsonb_each(v_old.shape -> 'constraints') o
        FULL JOIN jsonb_each(v_new -> 'constraints') n ON n.key = o.key
        WHERE o.value IS DISTINCT FROM n.value
        UNION ALL
        SELECT 'INDEX', coalesce(o.key, n.key), o.value, n.value
        FROM jsonb_each(v_old.shape -> 'indexes') o
        FULL JOIN jsonb_each(v_new -> 'indexes') n ON n.key = o.key
        WHERE o.value IS DISTINCT FROM n.value
        ORDER BY 1, 2
    LOOP
        IF r.before IS NOT NULL THEN
            v_changes := v_changes || jsonb_build_object('type', 'DROP_' || r.what, 'object', r.name,
                'compatible', CASE WHEN r.what = 'INDEX' THEN NOT (r.before ->> 'unique')::boolean
                                   ELSE r.before ->> 'type' IN ('c', 'f') END,
                'detail', jsonb_build_object('before', r.before));
        END IF;
        IF r.after IS NOT NULL THEN
            v_changes := v_changes || jsonb_build_object('type', CASE r.what WHEN 'INDEX' THEN 'ADD_INDEX'
                                                                             ELSE 'ADD_CONSTRAINT' END,
                'object', r.name,
                'compatible', r.what = 'INDEX' AND NOT (r.after ->> 'unique')::boolean,
                'detail', jsonb_build_object('after', r.after));
        END IF;
    END LOOP;

    IF (v_old.shape -> 'view') IS DISTINCT FROM (v_new -> 'view')
       AND (v_old.shape -> 'columns') = (v_new -> 'columns') THEN
        v_changes := v_changes || jsonb_build_object('type', 'MODIFY_' || v_kind_word, 'object', v_table,
            'compatible', true, 'detail', jsonb_build_object('before', v_old.shape -> 'view',
                                                             'after', v_new -> 'view'));
    END IF;

    -- Schema changes share one new version (a renamed table continues its old name's numbering);
    -- partition changes keep the current one.
    IF jsonb_array_length(v_changes) > 0 THEN
        v_version := greatest(schema_evolution_version(v_schema, v_table),
                              schema_evolution_version(v_old.schema_name, v_old.table_name)) + 1;
        FOR r IN SELECT e.value AS ch FROM jsonb_array_elements(v_changes) e LOOP
            PERFORM schema_evolution_record(v_schema, v_table, v_version, r.ch ->> 'type',
                                            (r.ch ->> 'compatible')::boolean, r.ch ->> 'object', p_tag,
                                            r.ch -> 'detail');
            v_rows := v_rows + 1;
        END LOOP;
    END IF;

    v_parts := jsonb_build_object(
        'added', coalesce((SELECT jsonb_agg(p ORDER BY p) FROM jsonb_array_elements_text(v_new -> 'partitions') p
                           WHERE NOT (v_old.shape -> 'partitions') ? p), '[]'::jsonb),
        'removed', coalesce((SELECT jsonb_agg(p ORDER BY p) FROM jsonb_array_elements_text(v_old.shape -> 'partitions') p
                             WHERE NOT (v_new -> 'partitions') ? p), '[]'::jsonb));
    IF p_maintenance AND (jsonb_array_length(v_parts -> 'added') > 0 OR jsonb_array_length(v_parts -> 'removed') > 0) THEN
        -- One row per parent per transaction, extended as ensure_partitions() goes.
        SELECT l.change_detail INTO v_maint FROM schema_evolution_log l
        WHERE l.schema_name = v_schema AND l.table_name = v_table
          AND l.evolution_type = 'PARTITION_MAINTENANCE' AND l.transaction_id = txid_current();
        IF FOUND THEN
            UPDATE schema_evolution_log l
            SET change_detail = jsonb_build_object(
                    'added', (v_maint -> 'added') || (v_parts -> 'added'),
                    'removed', (v_maint -> 'removed') || (v_parts -> 'removed'))
            WHERE l.schema_name = v_schema AND l.table_name = v_table
              AND l.evolution_type = 'PARTITION_MAINTENANCE' AND l.transaction_id = txid_current();
        ELSE
            PERFORM schema_evolution_record(v_schema, v_table, schema_evolution_version(v_schema, v_table),
                                            'PARTITION_MAINTENANCE', true, NULL, p_tag, v_parts);
            v_rows := v_rows + 1;
        END IF;
    ELSE
        FOR r IN
            SELECT 'ATTACH_PARTITION' AS t, true AS ok, p FROM jsonb_array_elements_text(v_parts -> 'added') p
            UNION ALL
            SELECT 'DETACH_PARTITION', false, p FROM jsonb_array_elements_text(v_parts -> 'removed') p
        LOOP
            PERFORM schema_evolution_record(v_schema, v_table, schema_evolution_version(v_schema, v_table),
                                            r.t, r.ok, r.p, p_tag, NULL);
            v_rows := v_rows + 1;
        END LOOP;
    END IF;

    UPDATE schema_evolution_state s
    SET schema_name = v_schema, table_name = v_table, relkind = v_kind, shape = v_new, captured_at = clock_timestamp()
    WHERE s.relid = p_relid;
    RETURN v_rows;
END;
$$;


-- Event trigger: after each DDL command, re-examine the relations it touched (indexes count for their
-- table, partitions for their root). Runs as its owner so that any role's DDL is logged, and never
-- lets a logging failure abort the DDL itself.
CREATE OR REPLACE FUNCTION schema_evolution_on_ddl()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_stack text;
    v_maint boolean;
    v_relid oid;
BEGIN
    GET DIAGNOSTICS v_stack = PG_CONTEXT;
    v_maint := v_stack LIKE '%function ensure_partitions(%' OR v_stack LIKE '%function ensure_partitions_step(%';
    FOR v_relid IN
        SELECT DISTINCT coalesce(pg_partition_root(t.relid), t.relid)
        FROM (
            SELECT coalesce(i.indrelid, c.objid) AS relid
            FROM pg_event_trigger_ddl_commands() c
            LEFT JOIN pg_index i ON i.indexrelid = c.objid
            WHERE c.classid = 'pg_class'::regclass AND c.objid <> 0
              AND c.schema_name = ANY (platform_schemas())
        ) t
        JOIN pg_class cl ON cl.oid = t.relid
        -- A table that ensure_partitions() builds before attaching it is not a platform table.
        WHERE NOT (v_maint AND cl.relkind = 'r' AND NOT cl.relispartition)
    LOOP
        PERFORM schema_evolution_track(v_relid, tg_tag, v_maint);
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'schema_evolution_log did not record this change: %', SQLERRM;
END;
$$;


-- Event trigger: drops of tracked relations, of stand-alone indexes and of partitions. Dropped
-- columns and constraints are found by schema_evolution_on_ddl (their ALTER TABLE is collected there).
CREATE OR REPLACE FUNCTION schema_evolution_on_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    r       record;
    s       schema_evolution_state%ROWTYPE;
    v_maint boolean;
    v_stack text;
BEGIN
    GET DIAGNOSTICS v_stack = PG_CONTEXT;
    v_maint := v_stack LIKE '%function ensure_partitions(%' OR v_stack LIKE '%function ensure_partitions_step(%';

    -- Whole relations that were tracked.
    FOR s IN
        DELETE FROM schema_evolution_state st
        WHERE st.relid IN (SELECT d.objid FROM pg_event_trigger_dropped_objects() d
                           WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0)
        RETURNING st.*
    LOOP
        PERFORM pg_advisory_xact_lock(1397052497, hashtext(s.schema_name || '.' || s.table_name));
        PERFORM schema_evolution_record(s.schema_name, s.table_name,
            schema_evolution_version(s.schema_name, s.table_name) + 1,
            'DROP_' || CASE s.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED_VIEW' ELSE 'TABLE' END,
            false, NULL, tg_tag, jsonb_build_object('columns', jsonb_path_query_array(s.shape, '$.columns.*.name')));
    END LOOP;

    -- Stand-alone indexes and partitions of tables that survive.
    FOR r IN
        SELECT d.object_type, d.schema_name, d.object_name, st.relid
        FROM pg_event_trigger_dropped_objects() d
        JOIN schema_evolution_state st
          ON st.schema_name = d.schema_name
         AND ((d.object_type = 'index' AND st.shape -> 'indexes' ? d.object_name)
              OR (d.object_type = 'table' AND st.shape -> 'partitions' ? (d.schema_name || '.' || d.object_name)))
        WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND NOT d.is_temporary
          AND d.schema_name = ANY (platform_schemas())
    LOOP
        SELECT * INTO s FROM schema_evolution_state st WHERE st.relid = r.relid;
        PERFORM pg_advisory_xact_lock(1397052497, hashtext(s.schema_name || '.' || s.table_name));
        IF r.object_type = 'index' THEN
            PERFORM schema_evolution_record(s.schema_name, s.table_name,
                schema_evolution_version(s.schema_name, s.table_name) + 1, 'DROP_INDEX',
                NOT (s.shape -> 'indexes' -> r.object_name ->> 'unique')::boolean, r.object_name, tg_tag,
                jsonb_build_object('before', s.shape -> 'indexes' -> r.object_name));
            UPDATE schema_evolution_state st
            SET shape = jsonb_set(st.shape, '{indexes}', (st.shape -> 'indexes') - r.object_name),
                captured_at = clock_timestamp()
            WHERE st.relid = r.relid;
        ELSE
            IF NOT v_maint THEN
                PERFORM schema_evolution_record(s.schema_name, s.table_name,
                    schema_evolution_version(s.schema_name, s.table_name), 'DROP_PARTITION', false,
                    r.schema_name || '.' || r.object_name, tg_tag, NULL);
            END IF;
            UPDATE schema_evolution_state st
            SET shape = jsonb_set(st.shape, '{partitions}',
                                  (st.shape -> 'partitions') - (r.schema_name || '.' || r.object_name)),
                captured_at = clock_timestamp()
            WHERE st.relid = r.relid;
        END IF;
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'schema_evolution_log did not record this drop: %', SQLERRM;
END;
$$;


-- Records the current shape of every platform relation without logging it (the baseline) and
-- creates the two event triggers. Event triggers need a superuser: for any other role this says so
-- and changes nothing, so migrations still run for a non-superuser owner; a superuser can call it
-- later. Returns true when the triggers exist afterwards.
CREATE OR REPLACE FUNCTION schema_evolution_install()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
        RAISE NOTICE 'schema_evolution_log: role % is not a superuser, so the event triggers that fill it '
                     'were not created; a superuser can run SELECT schema_evolution_install() later.',
                     current_user;
        RETURN EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'opsconsole_schema_evolution_ddl');
    END IF;
    INSERT INTO schema_evolution_state (relid, schema_name, table_name, relkind, shape)
    SELECT cl.oid, n.nspname, cl.relname, cl.relkind, schema_evolution_shape(cl.oid)
    FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
    WHERE cl.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT cl.relispartition
      AND n.nspname = ANY (platform_schemas())
      AND cl.relname NOT IN ('opsconsole_migrations', 'opsconsole_definitions', 'schema_evolution_state')
    ON CONFLICT (relid) DO UPDATE
        SET schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name,
            relkind = EXCLUDED.relkind, shape = EXCLUDED.shape, captured_at = clock_timestamp();
    IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'opsconsole_schema_evolution_ddl') THEN
        DROP EVENT TRIGGER opsconsole_schema_evolution_ddl;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'opsconsole_schema_evolution_drop') THEN
        DROP EVENT TRIGGER opsconsole_schema_evolution_drop;
    END IF;
    CREATE EVENT TRIGGER opsconsole_schema_evolution_ddl ON ddl_command_end
        EXECUTE FUNCTION schema_evolution_on_ddl();
    CREATE EVENT TRIGGER opsconsole_schema_evolution_drop ON sql_drop
        EXECUTE FUNCTION schema_evolution_on_drop();
    RETURN true;
END;
$$;
COMMENT ON FUNCTION schema_evolution_install() IS
    'Baseline the tracked shapes and create the opsconsole_schema_evolution_* event triggers (superuser only).';

-- Baseline the tracked shapes and (re)create the opsconsole_schema_evolution_* event triggers (drop if
-- they exist, then create); a non-superuser migrator gets a NOTICE instead.
SELECT schema_evolution_install();
