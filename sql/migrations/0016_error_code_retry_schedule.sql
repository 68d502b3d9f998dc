-- 0016: late data gets a retry schedule per error code, order references are read one way, and the
-- maintenance functions join the grant policy.
-- (Tables and data only; the functions that read these live in sql/definitions.)
SET lock_timeout = '5s';
SET statement_timeout = '5min';

-- A reference that is not there yet (an ERP batch an hour late) must not be dead-lettered after the
-- settings' 150 s of retries (10+20+40+80 s). Each error code may carry its own schedule; NULL means
-- the settings' max_attempts / backoff_base / backoff_max. order_not_found: 12 attempts, from 1 minute
-- doubling to 1 hour, about 6 hours in all (financial_retry_schedule() shows every code's).
ALTER TABLE financial_error_codes
    ADD COLUMN max_attempts integer CHECK (max_attempts >= 1),
    ADD COLUMN backoff_base interval CHECK (backoff_base >= interval '0'),
    ADD COLUMN backoff_max  interval CHECK (backoff_max >= interval '0');
COMMENT ON COLUMN financial_error_codes.max_attempts IS
    'Failures before dead_letter for this code (NULL: financial_pipeline_settings.max_attempts).';
COMMENT ON COLUMN financial_error_codes.backoff_base IS
    'First retry delay for this code, doubling per failure (NULL: the settings'' backoff_base).';
COMMENT ON COLUMN financial_error_codes.backoff_max IS
    'Longest retry delay for this code (NULL: the settings'' backoff_max).';
UPDATE financial_error_codes
SET max_attempts = 12, backoff_base = interval '1 minute', backoff_max = interval '1 hour'
WHERE error_code = 'order_not_found';

-- `opsconsole maintain` is an admin action (each step audits itself); the partition listings and the
-- retry schedule are reads every role may run.
INSERT INTO opsconsole_grant_policy (object_kind, object_name, role_name, audited_by) VALUES
    ('function', 'maintenance_partitioned_tables', 'opsconsole_viewer', 'read'),
    ('function', 'partition_bounds',               'opsconsole_viewer', 'read'),
    ('function', 'ensure_partitions_step',         'opsconsole_admin',  'sql'),
    ('function', 'maintenance_analyze',            'opsconsole_admin',  'sql'),
    ('function', 'maintenance_run_report',         'opsconsole_admin',  'sql'),
    ('function', 'financial_retry_schedule',       'opsconsole_viewer', 'read')
ON CONFLICT DO NOTHING;

-- Order references are matched by reference_order_id() (10_platform.sql) everywhere; its expression
-- index (financial_transactions_order_id_idx, created with the definitions) replaces the index on the
-- raw text, and customer 360's own reading of the reference goes.
-- (the index on the raw text is dropped concurrently by 0017)
DROP FUNCTION IF EXISTS customer_360_order_ref(jsonb);
