-- Customers pane: the initial list (no search text) and the search for a role without
-- search_customers(): an exact id or uuid, or a fragment of the name, email or phone, each customer with
-- its orders, value and segment from the 360 row (the masked view: those columns are not PII and every
-- role reading this list may read it; a customer waiting for its first 360 refresh shows "—").
-- ops/customers.console_search reads customers_masked instead of crm_customers for a role without PII.
SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone, c.updated_at,
       m.total_orders, m.total_lifetime_value, m.value_segment
FROM crm_customers c
LEFT JOIN customer_360_masked m ON m.customer_id = c.customer_id
WHERE %(q)s::text IS NULL
   OR c.customer_id::text = %(q)s
   OR c.customer_uuid::text = lower(%(q)s)
   OR c.email ILIKE %(like)s
   OR c.phone ILIKE %(like)s
   OR concat_ws(' ', c.first_name, c.last_name) ILIKE %(like)s
ORDER BY c.customer_id
LIMIT %(limit)s
