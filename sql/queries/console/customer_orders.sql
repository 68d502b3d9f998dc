-- Customer detail: the latest orders.
SELECT order_id, order_number, order_date, total_amount, currency_code, status
FROM erp_orders WHERE customer_id = %(id)s
ORDER BY order_date DESC, order_id DESC
LIMIT 10
