-- 0028: ERP orders keyed so that Citus can distribute them by customer_id, co-located with the
-- customers (docs/scaling.md: every unique key of a distributed table contains its distribution
-- column, which cannot be NULL).
--
-- * erp_orders.customer_id is NOT NULL: an order belongs to a customer, and Citus cannot place a row
--   without one. A database that holds orders without a customer stops here, with the count, before
--   anything changes: give them their customer (or delete them), then migrate again.
-- * erp_orders' primary key becomes (order_id, customer_id, partition_date): order_id first, so that
--   resolving an order reference to its customer (the customer-360 refresh, operator lookups) stays a
--   primary-key probe per partition; the per-customer reads use erp_orders_customer_idx.
-- * The row trigger that claimed each order_id in erp_order_keys goes: on Citus a trigger runs on the
--   order's shard and cannot write another table's shards (docs/scaling.md, "Triggers"). The writers
--   of orders claim the keys themselves, in the same transaction (erp_order_keys_add() in
--   10_platform.sql; the seed, ingest and the tests' helper). A trigger is dropped here because the
--   definitions pass only creates.
--
-- erp_orders is partitioned, so the key is rebuilt under the table's lock (no CONCURRENTLY): stop the
-- loaders while it runs (seconds per million orders).
SET lock_timeout = '5s';
SET statement_timeout = '30min';

DO $$
DECLARE
    v_orphans bigint;
BEGIN
    SELECT count(*) INTO v_orphans FROM erp_orders WHERE customer_id IS NULL;
    IF v_orphans > 0 THEN
        RAISE EXCEPTION '% ERP order(s) have no customer_id; orders are keyed by customer from this release on', v_orphans
            USING HINT = 'Set their customer_id (or delete them) and run the migration again.';
    END IF;
END;
$$;

DROP TRIGGER IF EXISTS erp_orders_keys ON erp_orders;
DROP FUNCTION IF EXISTS erp_order_keys_sync();

-- (checked just above: no NULL is left, and the scan runs under the lock this migration announces)
-- squawk-ignore adding-not-nullable-field
ALTER TABLE erp_orders ALTER COLUMN customer_id SET NOT NULL;

-- (squawk: a key replaced in place, under the lock this migration announces above)
ALTER TABLE erp_orders DROP CONSTRAINT erp_orders_pkey;
-- squawk-ignore constraint-missing-not-valid, adding-serial-primary-key-field
ALTER TABLE erp_orders ADD CONSTRAINT erp_orders_pkey PRIMARY KEY (order_id, customer_id, partition_date);
