-- 0018: every group role may record the export or copy of a console list it can read
-- (console_export(), sql/definitions/80_privacy.sql, audits it as console.export); opsconsole_apply_grants()
-- (99_grants.sql) makes it SECURITY DEFINER with EXECUTE for the viewer group and the groups above it.
SET lock_timeout = '5s';
SET statement_timeout = '30s';

INSERT INTO opsconsole_grant_policy (object_kind, object_name, role_name, audited_by) VALUES
    ('function', 'console_export', 'opsconsole_viewer', 'sql');
