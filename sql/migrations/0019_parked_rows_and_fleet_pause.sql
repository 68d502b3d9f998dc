-- 0019: the operator's controls over the pipeline (issue 16).
--  * a dead letter can be parked: a state no claim selects (the claim takes pending and failed rows
--    only), shown in the Backlog, kept by retention like every row owed a decision, and brought back
--    to dead_letter by an operator;
--  * one row that pauses the whole fleet: every worker reads it before it claims;
--  * retry_scope/retry_scope_count/retry_failed take the Backlog's filter as a typed parameter: the
--    old signatures go, the definitions pass creates the new ones;
--  * the policy rows of the new action and read functions.
-- (Tables and data only; the functions live in sql/definitions.)
SET lock_timeout = '5s';
SET statement_timeout = '30min';

-- The widened state list, NOT VALID (no scan under the ACCESS EXCLUSIVE lock). 0020 validates it in
-- its own transaction (a scan under SHARE UPDATE EXCLUSIVE: inserts and claims go on).
ALTER TABLE financial_transactions_staging
    DROP CONSTRAINT IF EXISTS financial_transactions_staging_processing_status_check;
ALTER TABLE financial_transactions_staging
    ADD CONSTRAINT financial_transactions_staging_processing_status_check
    CHECK (processing_status IN ('pending', 'processed', 'failed', 'dead_letter', 'duplicate', 'parked'))
    NOT VALID;
COMMENT ON COLUMN financial_transactions_staging.processing_status IS
    'pending -> processed | failed | dead_letter | duplicate; an operator may park a dead letter (parked: '
    'never claimed) and bring it back to dead_letter.';

-- The fleet's pause switch: one row, read by every worker before each claim.
CREATE TABLE IF NOT EXISTS pipeline_fleet_control (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    paused     boolean NOT NULL DEFAULT false,
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text NOT NULL DEFAULT session_user,
    reason     text
);
COMMENT ON TABLE pipeline_fleet_control IS
    'One row: whether processing is paused for every worker, who changed it, when and why '
    '(pause_processing() / resume_processing()).';
INSERT INTO pipeline_fleet_control DEFAULT VALUES ON CONFLICT DO NOTHING;

DROP FUNCTION IF EXISTS retry_failed(bigint[], text, text, boolean, boolean, text);
DROP FUNCTION IF EXISTS retry_scope_count(bigint[], text, text, boolean, boolean);
DROP FUNCTION IF EXISTS retry_scope(bigint[], text, text, boolean, boolean);

INSERT INTO opsconsole_grant_policy (object_kind, object_name, role_name, audited_by) VALUES
    ('function', 'park_dead_letters',   'opsconsole_operator', 'sql'),
    ('function', 'unpark_dead_letters', 'opsconsole_operator', 'sql'),
    ('function', 'pause_processing',    'opsconsole_operator', 'sql'),
    ('function', 'resume_processing',   'opsconsole_operator', 'sql')
ON CONFLICT DO NOTHING;
