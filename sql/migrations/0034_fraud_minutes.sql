-- 0034: financial_fraud_minutes, the processed rows summed per account and minute of event time.
--
-- Why: a row's fraud score counts its account's rows in [ts - window, ts) that arrived before it.
-- The chunk read that window row by row, so a feed whose event time follows arrival (each account's
-- last hour in its next row's window) cost 240-1,560 µs of server CPU per row, against 30 µs for
-- sparse accounts: 1,000 accounts at 1 row/s outran one worker (docs/pipeline.md, Benchmarks,
-- eleventh session). With this table the chunk reads the whole minutes inside its rows' windows as
-- one row each, and only the edges raw.
--
-- max_staging_id is the latest arrival in the minute (0 for a row loaded without staging): a minute
-- is summed for a row only when all of it arrived before the row; otherwise its rows are read raw,
-- so the score stays exactly what it was.
--
-- The chunk keeps it (financial_apply_chunk, step 2); nothing else writes processed rows. Stop the
-- workers while `opsconsole db migrate` runs: a chunk already running the previous definition would
-- insert processed rows without their minutes (`opsconsole reconcile` finds such a minute, and
-- `opsconsole reconcile --rebuild-minutes`, an admin's, rebuilds them).
SET lock_timeout = '5s';
SET statement_timeout = '30min';

CREATE TABLE financial_fraud_minutes (
    account_id      bigint NOT NULL,
    minute          timestamptz NOT NULL,   -- date_bin('1 minute', transaction_timestamp, epoch)
    row_count       bigint NOT NULL,
    amount_abs_sum  numeric NOT NULL,
    max_staging_id  bigint NOT NULL,
    PRIMARY KEY (account_id, minute)
);
COMMENT ON TABLE financial_fraud_minutes IS
    'Processed rows per account and minute of event time (count, sum of |amount|, latest arrival): the fraud window''s whole minutes.';

INSERT INTO financial_fraud_minutes (account_id, minute, row_count, amount_abs_sum, max_staging_id)
SELECT p.account_id, date_bin('1 minute', p.transaction_timestamp, timestamptz 'epoch'), count(*),
       sum(p.amount_abs), max(coalesce(p.staging_id, 0))
FROM financial_transactions_processed p
WHERE isfinite(p.transaction_timestamp)
GROUP BY 1, 2;

-- The correction an admin runs after reconcile reports fraud_minutes_differ (30_pipeline.sql).
INSERT INTO opsconsole_grant_policy (object_kind, object_name, role_name, audited_by)
VALUES ('function', 'financial_fraud_minutes_rebuild', 'opsconsole_admin', 'sql')
ON CONFLICT DO NOTHING;
