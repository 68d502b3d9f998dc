-- 0007: triggers on the source tables that maintain platform-owned tables run as their owner.
--
-- A loader role that may write crm_customers / erp_orders / financial_transactions must not also need
-- grants on the platform's internal tables (erp_order_keys, the pipeline ledger). The capture
-- triggers of 0004 and 0005 already run as their owner; these two from 0001 and 0003 now do too.
-- Both pin search_path, and neither takes input other than the rows being written.
ALTER FUNCTION erp_order_keys_sync() SECURITY DEFINER;
ALTER FUNCTION financial_transactions_mark_processed() SECURITY DEFINER;
REVOKE EXECUTE ON FUNCTION erp_order_keys_sync() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION financial_transactions_mark_processed() FROM PUBLIC;
