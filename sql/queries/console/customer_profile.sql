-- Customer detail: the CRM record.
SELECT customer_id, customer_uuid, first_name, last_name, email, phone, address, created_at, updated_at,
       source_system
FROM crm_customers WHERE customer_id = %(id)s
