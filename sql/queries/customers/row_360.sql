-- The customer-360 row (the view adds the fields relative to today)
SELECT * FROM customer_360_mv WHERE customer_id = %(id)s
