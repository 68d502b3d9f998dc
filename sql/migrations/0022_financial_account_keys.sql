-- 0022: the financial keys carry account_id (docs/scaling.md: distributed by account_id, every unique
-- key must contain it), and the claim takes due rows by account bucket in arrival order (issue 14:
-- a fraud score must not depend on which worker claimed the row).
--
-- * financial_transaction_ledger: exactly-once per (account_id, transaction_id). A transaction_id
--   belongs to its account; the same id staged under another account is another transaction.
-- * financial_transactions_processed: primary key (account_id, transaction_timestamp, transaction_id).
--   It serves the fraud window (one account, a time range) as well, so the separate
--   (account_id, transaction_timestamp) index goes: one index entry less per processed row.
-- * financial_transactions_staging: the claim index is keyed by the account's bucket, the high 6 bits
--   of hashint8(account_id) (64 contiguous ranges of the hash Citus shards bigint columns by), then
--   staging_id. process_financial_batch_detail repeats the expression exactly (30_pipeline.sql).
--
-- Staging and processed are partitioned, so these index builds cannot be CONCURRENT: they hold each
-- table while they run. Stop the workers while it runs (seconds per million rows).
SET lock_timeout = '5s';
SET statement_timeout = '30min';

-- (squawk: a key replaced in place, under the lock this migration announces above)
ALTER TABLE financial_transaction_ledger DROP CONSTRAINT financial_transaction_ledger_pkey;
-- squawk-ignore constraint-missing-not-valid, adding-serial-primary-key-field
ALTER TABLE financial_transaction_ledger ADD CONSTRAINT financial_transaction_ledger_pkey PRIMARY KEY (account_id, transaction_id);

ALTER TABLE financial_transactions_processed DROP CONSTRAINT financial_transactions_processed_pkey;
-- squawk-ignore constraint-missing-not-valid, adding-serial-primary-key-field
ALTER TABLE financial_transactions_processed ADD CONSTRAINT financial_transactions_processed_pkey PRIMARY KEY (account_id, transaction_timestamp, transaction_id);
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX idx_financial_processed_account_timestamp;

-- (partitioned: no CONCURRENTLY)
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX financial_staging_bucket_claim_idx ON financial_transactions_staging
    ((((hashint8(coalesce(account_id, 0))::bigint + 2147483648) >> 26)::integer), staging_id)
    WHERE processing_status IN ('pending', 'failed');
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX financial_staging_claim_idx;
