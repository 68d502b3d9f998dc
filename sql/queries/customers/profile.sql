-- customer show: the CRM record (present even before the customer's first 360 refresh).
SELECT customer_id, customer_uuid, first_name, last_name, email, phone, address, source_system,
       created_at, updated_at
FROM crm_customers
WHERE customer_id = %(id)s
