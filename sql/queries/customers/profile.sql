-- The CRM record (the console's customer detail and `customer show`; present even before the
-- customer's first 360 refresh). A role that may not read PII reads customers_masked instead.
SELECT customer_id, customer_uuid, first_name, last_name, email, phone, address, source_system,
       created_at, updated_at
FROM crm_customers
WHERE customer_id = %(id)s
