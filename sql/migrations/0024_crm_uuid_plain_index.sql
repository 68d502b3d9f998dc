-- opsconsole:no-transaction
-- 0024, statement by statement (CONCURRENTLY): crm_customers.customer_uuid gets a plain index in place
-- of its unique constraint. On Citus crm_customers is distributed by customer_id, and a unique
-- constraint must include the distribution column (docs/scaling.md). The uuid is generated
-- (gen_random_uuid()), so uniqueness of a supplied uuid is what is given up; a lookup by uuid stays
-- one index probe (per shard), on both servers. The plain index is built before the unique one goes.
SET lock_timeout = '5s';
SET statement_timeout = '30min';
CREATE INDEX CONCURRENTLY IF NOT EXISTS crm_customers_uuid_idx ON crm_customers (customer_uuid);
ALTER TABLE crm_customers DROP CONSTRAINT IF EXISTS crm_customers_customer_uuid_key;
