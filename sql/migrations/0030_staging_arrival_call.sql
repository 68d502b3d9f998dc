-- 0030: staging arrivals are counted by the loaders' call, not by a trigger.
--
-- financial_staging_arrived (30_pipeline.sql) becomes a function the loaders call in the transaction
-- that stages the rows (opsconsole.pipeline.arrival), with the rows' counts by minute and state. The
-- statement trigger it replaces read a transition table of every staged row: about 2 us a row, a
-- quarter of COPY's time (issue 18, P1); and on Citus no trigger can run for a distributed staging
-- table on the coordinator, where the rollups live (docs/scaling.md, "Triggers"). The trigger and its
-- trigger function are dropped here because the definitions pass only creates. The maintained counts
-- and rollups are unchanged: rows staged before this migration were counted by the trigger.
--
-- A loader of a previous release keeps working but is no longer counted: upgrade the loaders with the
-- database (reconcile reports rows staged without the call as staging_counts_drift).
SET lock_timeout = '5s';
SET statement_timeout = '1min';

DROP TRIGGER IF EXISTS financial_staging_arrived ON financial_transactions_staging;
DROP FUNCTION IF EXISTS financial_staging_arrived();

-- The correction an admin runs after reconcile reports staging_counts_drift (32_staging_counts.sql).
INSERT INTO opsconsole_grant_policy (object_kind, object_name, role_name, audited_by)
VALUES ('function', 'recount_financial_staging', 'opsconsole_admin', 'sql')
ON CONFLICT DO NOTHING;
