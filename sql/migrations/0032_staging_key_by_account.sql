-- 0032: staging's primary key includes the account: (staging_id, ingestion_timestamp, account_id).
--
-- Why: on Citus staging is distributed by account_id, co-located with the ledger and the processed
-- rows (docs/scaling.md), and every unique key of a distributed table must contain its distribution
-- column. staging_id still comes first, so a probe by (staging_id, ingestion_timestamp), the chunk's
-- and the retry's, stays a primary-key probe in one partition. staging_id alone stays unique: it is
-- drawn from its sequence and nothing else writes it. account_id is NOT NULL since 0031.
--
-- Staging is partitioned, so the key is rebuilt under the table's lock (no CONCURRENTLY on a
-- partitioned table): stop the loaders and workers while it runs (seconds per million rows).
SET lock_timeout = '5s';
SET statement_timeout = '30min';

-- (squawk: a key replaced in place, under the lock this migration announces above)
ALTER TABLE financial_transactions_staging DROP CONSTRAINT financial_transactions_staging_pkey;
-- squawk-ignore constraint-missing-not-valid, adding-serial-primary-key-field
ALTER TABLE financial_transactions_staging ADD CONSTRAINT financial_transactions_staging_pkey PRIMARY KEY (staging_id, ingestion_timestamp, account_id);
