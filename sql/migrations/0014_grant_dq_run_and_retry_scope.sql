-- 0014: the operator may call what the one action road calls: dq_run() (the DQ run behind both
-- `opsconsole dq run` and the console's r/o keys; execute_data_quality_checks(), which the operator
-- could already call, is a thin wrapper over it) and retry_scope_count() (the blast radius the console
-- states before a retry; a read, so every group may count). opsconsole_apply_grants() (99_grants.sql) applies the policy.
SET lock_timeout = '5s';
SET statement_timeout = '30s';

INSERT INTO opsconsole_grant_policy (object_kind, object_name, role_name, audited_by) VALUES
    ('function', 'dq_run',            'opsconsole_operator', 'sql'),
    ('function', 'retry_scope_count', 'opsconsole_viewer',   'read');
