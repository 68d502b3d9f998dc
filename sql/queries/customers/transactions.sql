-- A customer's latest financial transactions (the console's customer detail and `customer show`),
-- linked through the order they reference (reference_order_id(): {"order_id": "0042"} is order 42, as
-- in the pipeline and customer 360; the partial expression index financial_transactions_order_id_idx
-- serves the lookup), and beside them the customer's transactions the pipeline failed or
-- dead-lettered (staging rows still owed work: support answers "where is my payment" from here). The
-- failed/dead-letter side reads the open failures through idx_financial_staging_status and keeps
-- those referencing the customer's orders.
SELECT transaction_id, account_id, transaction_timestamp, amount, transaction_type, status, order_id, error_code
FROM ((SELECT ft.transaction_id, ft.account_id, ft.transaction_timestamp, ft.amount, ft.transaction_type,
              CASE WHEN ft.is_processed THEN 'processed' ELSE 'recorded' END AS status,
              reference_order_id(ft.reference_data) AS order_id, NULL::text AS error_code
       FROM financial_transactions ft
       WHERE ft.reference_data ? 'order_id'
         AND reference_order_id(ft.reference_data) IN (SELECT o.order_id FROM erp_orders o WHERE o.customer_id = %(id)s)
       ORDER BY ft.transaction_timestamp DESC, ft.transaction_id DESC
       LIMIT %(limit)s)
      UNION ALL
      (SELECT s.transaction_id, s.account_id, s.transaction_timestamp, s.amount, s.transaction_type,
              s.processing_status::text, reference_order_id(s.reference_data), s.error_code::text
       FROM financial_transactions_staging s
       WHERE s.processing_status IN ('failed', 'dead_letter')
         AND s.reference_data ? 'order_id'
         AND reference_order_id(s.reference_data) IN (SELECT o.order_id FROM erp_orders o WHERE o.customer_id = %(id)s)
       ORDER BY s.transaction_timestamp DESC, s.staging_id DESC
       LIMIT 20)) t
ORDER BY status IN ('failed', 'dead_letter') DESC, transaction_timestamp DESC, transaction_id DESC
