-- A customer's latest orders, any status, newest order date first (the console's customer detail and
-- `customer show`).
SELECT order_id, order_number, order_date, total_amount, currency_code, status, created_at
FROM erp_orders
WHERE customer_id = %(id)s
ORDER BY order_date DESC, order_id DESC
LIMIT %(limit)s
