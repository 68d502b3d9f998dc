-- 99_grants.sql: The grant policy: opsconsole_apply_grants() and the privileges it does not derive; applied last.
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.

------------------------------------------------------------------------------------------------------
-- Applying the policy (idempotent; called at the end of this file on every definitions pass)
------------------------------------------------------------------------------------------------------
-- 1. No relation in public is readable or writable through PUBLIC.
-- 2. opsconsole_viewer may SELECT a table or view when none of its columns is classified confidential
--    or restricted (data_catalog, else the default by name), plus the relations the policy lists.
-- 3. opsconsole_admin may SELECT every relation. Nobody but the owner gets INSERT/UPDATE/DELETE.
-- 4. Each policy function (every overload) becomes SECURITY DEFINER, EXECUTE revoked from PUBLIC and
--    granted to its role; any other SECURITY DEFINER function loses EXECUTE from PUBLIC too.
-- Returns the number of objects whose grants were (re)applied.
CREATE OR REPLACE FUNCTION opsconsole_apply_grants()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    r       record;
    v_count integer := 0;
BEGIN
    -- public is on every definer's search_path: no group role may create in it (a look-alike function
    -- or operator there would run with the owner's rights inside the definers).
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    REVOKE CREATE ON SCHEMA public FROM opsconsole_viewer, opsconsole_support, opsconsole_operator, opsconsole_admin;
    GRANT USAGE ON SCHEMA public TO opsconsole_viewer, opsconsole_support, opsconsole_operator, opsconsole_admin;

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

    -- Every function starts with no explicit grant to a group role, so that a function dropped from
    -- the policy (record_audit) loses its grants; the policy's own grants follow. (What PUBLIC may
    -- execute is untouched here; extensions' functions are theirs.)
    FOR r IN
        SELECT p.oid::regprocedure AS fn FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('REVOKE EXECUTE ON ROUTINE %s FROM opsconsole_viewer, opsconsole_support, '
                       'opsconsole_operator, opsconsole_admin', r.fn);
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
COMMENT ON FUNCTION opsconsole_apply_grants() IS
    'Re-apply the role policy to every object in public; 99_grants.sql calls it on every definitions pass.';

-- EXECUTE that the policy table does not derive: SECURITY DEFINER helpers and entry points that are
-- granted per role by opsconsole_apply_grants() only.
REVOKE EXECUTE ON FUNCTION dq_run(text, text, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION execute_data_quality_checks() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION execute_data_quality_checks(text, text, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dq_add_rule(text, text, text, text, numeric, text, text, text, jsonb, text, text,
                                       interval, integer, text, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION financial_transactions_mark_processed() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION opsconsole_apply_grants() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION customer_search_rows(text, integer) FROM PUBLIC;
-- The audit writer is the owner's: action functions call it; no group role may (see record_action_failure).
REVOKE EXECUTE ON FUNCTION record_audit(text, jsonb, jsonb, text, numeric, text) FROM PUBLIC;
-- Parse-checks are the DQ engine's (dq_compile_rule, as the owner): nobody else needs them.
REVOKE EXECUTE ON FUNCTION dq_assert_parses(text) FROM PUBLIC;

-- Last: the policy over every object the files before this one created.
SELECT opsconsole_apply_grants();

-- After every file of the pass: the catalog describes the schema, so it is refreshed whenever the
-- definitions are (re)applied, once every view exists (a fresh install starts with all of them, and a
-- re-applied view, which CREATE OR REPLACE keeps, is never seen as new: data_catalog_sync).
SELECT data_catalog_sync();
