-- Distribution of the platform over a Citus cluster (docs/scaling.md says why each table is where it is).
--
-- `opsconsole db migrate` runs this file after the migrations and the definitions, in its own
-- transaction, and only when the citus extension is installed in the database; on plain PostgreSQL
-- it returns at its first test and changes nothing. It is idempotent: a table already in Citus's
-- metadata is left as it is, so it runs on every migrate and picks up what a new release adds here.
--
-- What is distributed is what was run on a 3-node cluster (coordinator + 2 workers, Citus 13.2) with
-- the current definitions and works there with the same results as on one server. The tables not
-- listed stay ordinary tables on the coordinator, where everything works as on one server; the
-- refusals that keep them there, and the design that removes each, are in docs/scaling.md.
DO $$
DECLARE
    r record;
    has_triggers boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    -- Shard creation and the copy of existing rows use one connection per worker, so a database
    -- with rows distributes inside this transaction too.
    SET LOCAL citus.multi_shard_modify_mode = 'sequential';
    -- The customer group keeps its capture triggers (CRM -> lakehouse versions, every source ->
    -- customer-360 queue). Citus runs them on the shards, where they write only co-located shards
    -- (shard_local in 10_platform.sql). Citus accepts triggers on distributed tables, and later
    -- CREATE OR REPLACE TRIGGER / ALTER TABLE ... DISABLE TRIGGER on them (definitions pass, seed),
    -- only with this setting on: in this transaction, and for every later session of the database.
    SET LOCAL citus.enable_unsafe_triggers = on;
    EXECUTE format('ALTER DATABASE %I SET citus.enable_unsafe_triggers = on', current_database());
    -- The customer search pins one generic plan per session for speed on one server; Citus cannot
    -- plan its statement with unbound parameters ("could not create distributed plan"), so here it
    -- is planned per call with the values.
    ALTER FUNCTION public.customer_search_rows(text, integer) RESET plan_cache_mode;
    -- The same for the chunk's small chunks, which take a generic plan on one server: planned per
    -- chunk with the values here (with the generic plan no row of a chunk was processed).
    ALTER FUNCTION public.financial_apply_chunk(financial_transactions_staging[], financial_pipeline_settings, bigint, text, timestamptz)
        SET opsconsole.chunk_generic_max_rows = '0';
    -- A read of staging by account bucket asks every shard of staging, whatever it finds: the claim
    -- reads 8 buckets at once here (one read per chunk), not one (process_financial_batch_detail).
    ALTER FUNCTION public.process_financial_batch_detail(integer, interval, text) SET opsconsole.claim_span = '8';
    -- Citus lets one multi-shard write at a time touch a shard (a shard lock, taken statement by
    -- statement and held to commit) unless this is off. Two workers' chunks then waited for each
    -- other, and deadlocked when their statements took the shards of staging, processed and the
    -- ledger in different orders (a chunk isolating a bad row updates staging first): a row of the
    -- chaos test was dead-lettered as internal_error 'deadlock detected'. The chunks of two workers
    -- write disjoint rows (disjoint account buckets), so nothing is left for the lock to protect.
    ALTER FUNCTION public.process_financial_batch_detail(integer, interval, text) SET citus.enable_deadlock_prevention = off;
    -- Staging's foreign key to the error codes: while staging is an ordinary (partitioned) table,
    -- making the error codes a reference table would make Citus convert staging into a Citus local
    -- table, which fails on its partitions' CHECK constraints. So the key goes first, the error codes
    -- and staging are moved by the loop below, and the key comes back after it (a distributed table
    -- may reference a reference table).
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p
                   WHERE p.logicalrelid = 'public.financial_transactions_staging'::regclass) THEN
        ALTER TABLE public.financial_transactions_staging
            DROP CONSTRAINT IF EXISTS financial_transactions_staging_error_code_fkey;
    END IF;
    FOR r IN
        SELECT t.ord, t.rel::regclass AS rel, t.kind, t.col, t.colocate_with
        FROM (VALUES
            -- Small lookups read by every shard's queries: one copy on every node.
            (1, 'public.financial_transaction_types', 'reference', NULL, NULL),
            (2, 'public.financial_error_codes', 'reference', NULL, NULL),
            -- The customer group, co-located by customer_id: a customer's versions and its chain
            -- lock live on one shard, so lakehouse_apply_changes and lake_history are single-shard
            -- per customer and time travel fans out once.
            (3, 'public.lakehouse_customers', 'hash', 'customer_id', 'none'),
            (4, 'public.lakehouse_customer_chains', 'hash', 'customer_id', 'public.lakehouse_customers'),
            -- The CRM customers with them: the lakehouse capture runs on the customer's shard and
            -- writes the versions and the chain there. The customer-360 store and its queue of
            -- customer keys likewise: the capture triggers write the queue's co-located shard, and
            -- search and the refresh join the store to the customers shard by shard.
            (5, 'public.crm_customers', 'hash', 'customer_id', 'public.lakehouse_customers'),
            (6, 'public.customer_360_store', 'hash', 'customer_id', 'public.lakehouse_customers'),
            (7, 'public.customer_360_dirty', 'hash', 'customer_id', 'public.lakehouse_customers'),
            -- The financial group, co-located by account_id: the exactly-once ledger (keyed
            -- (account_id, transaction_id)) and the processed rows (the fraud window reads one
            -- account's range). The chunk claims rows by account bucket, so its ledger insert and
            -- its processed insert and window reads touch only the shards of the chunk's accounts.
            -- Staging with them (every daily partition too): a chunk's rows, ledger entries and
            -- processed rows of one bucket of accounts are on one shard's node.
            (8, 'public.financial_transaction_ledger', 'hash', 'account_id', 'none'),
            (9, 'public.financial_transactions_processed', 'hash', 'account_id', 'public.financial_transaction_ledger'),
            (12, 'public.financial_transactions_staging', 'hash', 'account_id', 'public.financial_transaction_ledger'),
            -- The fraud window's minutes: read and upserted beside the account's processed rows.
            (13, 'public.financial_fraud_minutes', 'hash', 'account_id', 'public.financial_transaction_ledger'),
            -- The source transactions with them, keyed (account_id, transaction_id): the is_processed
            -- follow-up reads the ledger's shard on its own node, and the customer-360 capture writes
            -- the order-reference queue's co-located shard (the queue is keyed by the account too).
            (10, 'public.financial_transactions', 'hash', 'account_id', 'public.financial_transaction_ledger'),
            (11, 'public.customer_360_dirty_orders', 'hash', 'account_id', 'public.financial_transaction_ledger'),
            -- The ERP orders with their customers (their capture writes the co-located queue shard;
            -- the refresh's per-customer order reads are shard by shard). Every partition too.
            (20, 'public.erp_orders', 'hash', 'customer_id', 'public.lakehouse_customers'),
            -- The order-id keys: written by the writers of orders (not by a shard trigger), read by the
            -- pipeline's order check and reconcile, which run beside staging: a copy on every node
            -- keeps that check a local primary-key probe wherever the chunk runs (docs/scaling.md).
            (21, 'public.erp_order_keys', 'reference', NULL, NULL),
            -- The e-commerce events with their customers (the capture writes the co-located queue
            -- shard; the refresh's per-customer event aggregates are shard by shard). Anonymous
            -- events (no customer) are a table of their own, by session: a visit stays on one shard.
            (22, 'public.ecommerce_events', 'hash', 'customer_id', 'public.lakehouse_customers'),
            (23, 'public.ecommerce_anonymous_events', 'hash', 'session_id', 'none')
        ) AS t(ord, rel, kind, col, colocate_with)
        WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = t.rel::regclass)
        ORDER BY t.ord
    LOOP
        -- Citus copies the rows already there into the new shards, and the copy fires the shards'
        -- triggers: the CRM capture would write a new lakehouse version of every customer and queue
        -- it into a table not yet distributed. The rows are not changed by the move: no capture
        -- (the shards are created with the triggers disabled, and enabled with the table's).
        has_triggers := EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = r.rel AND NOT t.tgisinternal);
        IF has_triggers THEN
            EXECUTE format('ALTER TABLE %s DISABLE TRIGGER USER', r.rel);
        END IF;
        IF r.kind = 'reference' THEN
            PERFORM pg_catalog.create_reference_table(r.rel);
        ELSE
            PERFORM pg_catalog.create_distributed_table(r.rel, r.col, colocate_with => r.colocate_with);
        END IF;
        -- The rows were copied to the shards; the coordinator's own copy is no longer read (and its
        -- TRUNCATE must not fire the capture either: it would tombstone every customer).
        PERFORM pg_catalog.truncate_local_data_after_distributing_table(r.rel);
        IF has_triggers THEN
            EXECUTE format('ALTER TABLE %s ENABLE TRIGGER USER', r.rel);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c
                   WHERE c.conrelid = 'public.financial_transactions_staging'::regclass
                     AND c.conname = 'financial_transactions_staging_error_code_fkey') THEN
        ALTER TABLE public.financial_transactions_staging
            ADD CONSTRAINT financial_transactions_staging_error_code_fkey
            FOREIGN KEY (error_code) REFERENCES public.financial_error_codes (error_code);
    END IF;
END;
$$;
