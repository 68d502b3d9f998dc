-- 0027: financial_transactions keyed (account_id, transaction_id), like the ledger (0022), so that on
-- Citus it is distributed by account_id and co-located with the ledger and the processed rows
-- (docs/scaling.md): every unique key of a distributed table must contain the distribution column,
-- and a row needs a value there. The key makes account_id NOT NULL: a transaction without an account
-- is not a source record any loader keeps (`opsconsole ingest` rejects such a row into
-- ingest_rejects with "account_id: null in a NOT NULL column"; the seed always has one).
--
-- The customer-360 queue of order references carries the account of the transaction that queued
-- it: the capture trigger on financial_transactions runs per shard on Citus and writes the queue's
-- co-located shard (shard_local), so the queue is distributed by account_id as well. The account
-- only places the entry; the refresh resolves the order, as before.
--
-- The key is replaced under the table's lock (a unique index build and a NOT NULL scan): stop the
-- loaders and the workers while it runs (seconds per million rows).
SET lock_timeout = '5s';
SET statement_timeout = '30min';

-- A database holding transactions without an account cannot take the key; say so instead of failing
-- on the constraint.
DO $$
DECLARE
    v_n bigint;
BEGIN
    SELECT count(*) INTO v_n FROM financial_transactions WHERE account_id IS NULL;
    IF v_n > 0 THEN
        RAISE EXCEPTION '% financial_transactions row(s) have no account_id; they cannot be keyed by account',
            v_n
            USING ERRCODE = 'not_null_violation',
                  HINT = 'Set their account_id or delete them, then run the migration again.';
    END IF;
END;
$$;

-- (squawk: a key replaced in place, under the lock this migration announces above)
ALTER TABLE financial_transactions DROP CONSTRAINT financial_transactions_pkey;
-- squawk-ignore constraint-missing-not-valid, adding-serial-primary-key-field
ALTER TABLE financial_transactions ADD CONSTRAINT financial_transactions_pkey PRIMARY KEY (account_id, transaction_id);

-- Entries queued before this release are placed under account 0 (any account places an entry).
-- squawk-ignore adding-required-field, adding-not-nullable-field
ALTER TABLE customer_360_dirty_orders ADD COLUMN account_id bigint NOT NULL DEFAULT 0;
ALTER TABLE customer_360_dirty_orders ALTER COLUMN account_id DROP DEFAULT;
COMMENT ON TABLE customer_360_dirty_orders IS
    'Order references of processed financial transactions, under the account that queued them; '
    'drained (resolved to customers) by the customer-360 refresh.';
