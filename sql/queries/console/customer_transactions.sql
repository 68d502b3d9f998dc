-- Customer detail: the latest financial transactions, linked through the order they reference
-- (reference_order_id(): {"order_id": "0042"} is order 42, as in the pipeline and customer 360; the
-- partial expression index financial_transactions_order_id_idx serves the lookup).
SELECT ft.transaction_id, ft.transaction_timestamp, ft.amount, ft.transaction_type, ft.is_processed,
       reference_order_id(ft.reference_data) AS order_id
FROM financial_transactions ft
WHERE ft.reference_data ? 'order_id'
  AND reference_order_id(ft.reference_data) IN (SELECT o.order_id FROM erp_orders o WHERE o.customer_id = %(id)s)
ORDER BY ft.transaction_timestamp DESC, ft.transaction_id DESC
LIMIT 10
