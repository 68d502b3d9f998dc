-- opsconsole:no-transaction
-- 0017, statement by statement (CONCURRENTLY): the index on the raw order reference text goes (0016
-- moved every reader to reference_order_id()), and the Activity pane gets its own index.
--
-- The Activity pane lists what people did. Since every action function audits itself, a
-- pipeline worker's batches write one row per chunk (application_name opsconsole:worker-N); the pane
-- leaves those out (sql/queries/console/activity.sql), and this partial index keeps its newest-first
-- read from stepping over them however many there are.
SET lock_timeout = '5s';
SET statement_timeout = '30min';
CREATE INDEX CONCURRENTLY IF NOT EXISTS ops_audit_log_people_idx
    ON ops_audit_log (occurred_at DESC, audit_id DESC)
    WHERE coalesce(application_name, '') NOT LIKE 'opsconsole:worker-%';
DROP INDEX CONCURRENTLY IF EXISTS financial_transactions_order_ref_idx;
