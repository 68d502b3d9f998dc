-- Customer detail: the latest financial transactions, linked through the order they reference
-- (reference_data->>'order_id' is an erp_orders.order_id; the expression index serves the lookup).
SELECT ft.transaction_id, ft.transaction_timestamp, ft.amount, ft.transaction_type, ft.is_processed,
       ft.reference_data ->> 'order_id' AS order_id
FROM financial_transactions ft
WHERE ft.reference_data ? 'order_id'
  AND ft.reference_data ->> 'order_id' IN (SELECT o.order_id::text FROM erp_orders o WHERE o.customer_id = %(id)s)
ORDER BY ft.transaction_timestamp DESC, ft.transaction_id DESC
LIMIT 10
