-- 0031: a staging row has an account. financial_transactions_staging.account_id is NOT NULL, and a
-- transaction that comes without one is rejected by its loader into financial_staging_rejects
-- instead of being staged.
--
-- Why: on Citus staging is distributed by account_id (docs/scaling.md, "NULL distribution values"),
-- and Citus cannot place a row whose distribution column is NULL; its key must include account_id,
-- which a key cannot when the column may be NULL. The same files build both, so one server keeps
-- the same rule. Before, such a row was staged and dead-lettered at its first processing
-- (missing_field); nothing could be done with it there but look at it, which the rejects table
-- keeps: the row as it came, who loaded it and why it was not staged.
--
-- The rows without an account that staging holds are moved there, with their staging_id, ingestion
-- time, state and error, and the maintained counts of staging rows by state lose them (the
-- per-minute rollups keep their history: they arrived). Then the column is set NOT NULL, which
-- scans every partition under the table's lock: stop the loaders and workers while it runs
-- (seconds per million rows). Ingest rejects such a row into ingest_rejects, as for any NOT NULL
-- column; simulate and the seed write financial_staging_rejects (opsconsole.pipeline.arrival).
SET lock_timeout = '5s';
SET statement_timeout = '30min';

CREATE TABLE financial_staging_rejects (
    reject_id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- the input columns, as the loader had them
    transaction_id        bigint,
    account_id            bigint,
    transaction_timestamp timestamptz,
    amount                numeric(20,4),
    transaction_type      varchar(50),
    reference_data        jsonb,
    batch_id              varchar(100),
    -- who rejected it, and why
    source                text NOT NULL,
    reason                text NOT NULL,
    rejected_at           timestamptz NOT NULL DEFAULT now(),
    -- a row that had been staged before 0031: its staging id, ingestion time, state and error then
    staging_id            bigint,
    ingestion_timestamp   timestamptz,
    processing_status     varchar(20),
    error_code            varchar(40),
    error_message         text
);
-- the purge keeps them as long as staging rows (purge_financial_staging)
CREATE INDEX financial_staging_rejects_time_idx ON financial_staging_rejects (rejected_at);
COMMENT ON TABLE financial_staging_rejects IS
    'Transactions a loader could not stage (no account_id: staging rows are placed by account), as they came.';

LOCK TABLE financial_transactions_staging IN ACCESS EXCLUSIVE MODE;

WITH moved AS (
    DELETE FROM financial_transactions_staging s
    WHERE s.account_id IS NULL
    RETURNING s.*
),
kept AS (
    INSERT INTO financial_staging_rejects (
        transaction_id, account_id, transaction_timestamp, amount, transaction_type, reference_data,
        batch_id, source, reason, rejected_at, staging_id, ingestion_timestamp, processing_status,
        error_code, error_message)
    SELECT m.transaction_id, m.account_id, m.transaction_timestamp, m.amount, m.transaction_type,
           m.reference_data, m.batch_id, 'staging (0031)',
           'account_id is missing: staging rows are placed by account', now(), m.staging_id,
           m.ingestion_timestamp, m.processing_status, m.error_code, m.error_message
    FROM moved m
    ORDER BY m.staging_id
    RETURNING processing_status
)
INSERT INTO financial_staging_counts AS c (
    backend_pid, total, pending, processed, failed, dead_letter, duplicate,
    latency_count, latency_sum_ms, sla_breaches, updated_at)
SELECT 0, -count(*),
       -count(*) FILTER (WHERE k.processing_status = 'pending'),
       -count(*) FILTER (WHERE k.processing_status = 'processed'),
       -count(*) FILTER (WHERE k.processing_status = 'failed'),
       -count(*) FILTER (WHERE k.processing_status = 'dead_letter'),
       -count(*) FILTER (WHERE k.processing_status = 'duplicate'),
       0, 0, 0, clock_timestamp()
FROM kept k
HAVING count(*) > 0
ON CONFLICT (backend_pid) DO UPDATE SET
    total       = c.total + EXCLUDED.total,
    pending     = c.pending + EXCLUDED.pending,
    processed   = c.processed + EXCLUDED.processed,
    failed      = c.failed + EXCLUDED.failed,
    dead_letter = c.dead_letter + EXCLUDED.dead_letter,
    duplicate   = c.duplicate + EXCLUDED.duplicate,
    updated_at  = EXCLUDED.updated_at;

-- (emptied of NULLs just above, under the lock taken above)
-- squawk-ignore adding-not-nullable-field
ALTER TABLE financial_transactions_staging ALTER COLUMN account_id SET NOT NULL;
COMMENT ON COLUMN financial_transactions_staging.account_id IS
    'The account; NOT NULL: a transaction without one is rejected into financial_staging_rejects (ingest: ingest_rejects).';
