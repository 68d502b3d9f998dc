-- customer show: the latest financial transactions, linked through the ERP order they reference
-- (reference_order_id(), as in customer_360_rows and the pipeline; the partial expression index
-- financial_transactions_order_id_idx serves the join).
SELECT ft.transaction_id, ft.account_id, ft.transaction_timestamp, ft.amount, ft.transaction_type,
       o.order_id, ft.is_processed
FROM erp_orders o
JOIN financial_transactions ft
  ON ft.reference_data ? 'order_id'
 AND reference_order_id(ft.reference_data) = o.order_id
WHERE o.customer_id = %(id)s
ORDER BY ft.transaction_timestamp DESC NULLS LAST, ft.transaction_id DESC
LIMIT %(limit)s
