-- Customer detail: the lakehouse versions, newest first.
SELECT version_number, operation_type, effective_from, effective_to, customer_data
FROM lakehouse_customers WHERE customer_id = %(id)s
ORDER BY version_number DESC
LIMIT 50
