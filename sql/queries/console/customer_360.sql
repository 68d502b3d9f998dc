-- Customer detail: the customer-360 row.
SELECT to_jsonb(c) AS row FROM customer_360_mv c WHERE customer_id = %(id)s
