-- 0015 definer hardening (issue 13): what the SECURITY DEFINER functions resolve and who may write the
-- audit log, for databases made before it. The functions themselves (search_path with pg_temp last,
-- audits written by each action function, parse-only DQ checks) are in sql/definitions/; this file holds
-- what is not a definition: database and schema privileges, policy rows, and PII already stored.

SET LOCAL lock_timeout = '10s';
SET LOCAL statement_timeout = '10min';   -- the UPDATEs below touch every audit, DQ and DDL-log row once

-- No temporary objects for PUBLIC on the platform database: a temp table or function is the raw
-- material of the shadowing attacks (docs/security.md, "Temporary objects"). The database's name is
-- only known at run time.
-- The schema owner keeps it explicitly (it may not own the database): dq_assert_parses creates its
-- never-called probe function in pg_temp.
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), current_user);
END;
$$;

-- public is on every definer's search_path: nobody below the owner creates in it (admin used to).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM opsconsole_admin;

-- The audit writer leaves the policy (only action functions write 'ok' rows); a group role may record
-- its own failed attempt through record_action_failure. Every action function audits itself now.
DELETE FROM opsconsole_grant_policy WHERE object_kind = 'function' AND object_name = 'record_audit';
UPDATE opsconsole_grant_policy SET audited_by = 'sql' WHERE audited_by = 'caller';
INSERT INTO opsconsole_grant_policy (object_kind, object_name, role_name, audited_by)
VALUES ('function', 'record_action_failure', 'opsconsole_viewer', 'sql')
ON CONFLICT DO NOTHING;

-- PII already written to stores viewers read, treated as the definitions now treat new rows:
-- search text in the audit log masked (first character, ***, length: mask_search_text) ...
UPDATE ops_audit_log
SET arguments = jsonb_set(arguments, '{query}',
                          to_jsonb(left(btrim(arguments ->> 'query'), 1) || '*** ('
                                   || length(btrim(arguments ->> 'query')) || ')'))
WHERE action = 'search_customers' AND jsonb_typeof(arguments -> 'query') = 'string';
UPDATE ops_audit_log
SET arguments = jsonb_set(arguments, '{search}',
                          to_jsonb(left(btrim(arguments ->> 'search'), 1) || '*** ('
                                   || length(btrim(arguments ->> 'search')) || ')'))
WHERE action = 'lookup_customers' AND jsonb_typeof(arguments -> 'search') = 'string';

-- ... values quoted in DQ data errors replaced by "..." (dq_scrub_message) ...
UPDATE data_quality_metrics
SET message = regexp_replace(regexp_replace(message, '"[^"]*"', '"..."', 'g'),
                             '''(?:[^'']|'''')*''', '''...''', 'g'),
    details = jsonb_set(details, '{error}',
                        to_jsonb(regexp_replace(regexp_replace(details ->> 'error', '"[^"]*"', '"..."', 'g'),
                                                '''(?:[^'']|'''')*''', '''...''', 'g')))
WHERE status = 'error' AND details ? 'error'
  AND left(details ->> 'sqlstate', 2) IN ('22', '23') AND details ->> 'sqlstate' <> '22023';

-- ... and literals in logged client DDL replaced by '...' (redact_sql_literals).
UPDATE schema_evolution_log
SET ddl_statement = regexp_replace(regexp_replace(ddl_statement, '\$([A-Za-z_][A-Za-z_0-9]*)?\$.*\$\1\$', '''...''', 'g'),
                                   '''(?:[^'']|'''')*''', '''...''', 'g')
WHERE ddl_statement ~ '[''$]';

-- Stores that hold customer data copied from elsewhere are classified confidential, so viewers get no
-- SELECT on them (opsconsole_apply_grants, at the end of the definitions) and admins keep it:
-- rejected rows as the file had them, and the reason that quotes the bad value; the DDL log's client
-- statement text and before/after detail (column defaults, check constraints, view queries), and the
-- shapes it compares. Reclassifying a column in data_catalog is how to change that.
INSERT INTO data_catalog (database_name, schema_name, table_name, column_name, data_classification)
SELECT current_database(), 'public', t, c, 'confidential'
FROM (VALUES ('ingest_rejects', 'raw_row'), ('ingest_rejects', 'reason'),
             ('schema_evolution_log', 'ddl_statement'), ('schema_evolution_log', 'change_detail'),
             ('schema_evolution_state', 'shape')) AS v(t, c)
ON CONFLICT (database_name, schema_name, table_name, column_name)
DO UPDATE SET data_classification = 'confidential';
