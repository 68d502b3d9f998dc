-- Customers pane, used when search_customers() is not installed: match an exact id or uuid, or a
-- fragment of the name, email or phone (the pg_trgm indexes of 0004 serve search_customers instead).
SELECT customer_id, customer_uuid, first_name, last_name, email, phone, updated_at
FROM crm_customers
WHERE %(q)s::text IS NULL
   OR customer_id::text = %(q)s
   OR customer_uuid::text = lower(%(q)s)
   OR email ILIKE %(like)s
   OR phone ILIKE %(like)s
   OR concat_ws(' ', first_name, last_name) ILIKE %(like)s
ORDER BY customer_id
LIMIT %(limit)s
