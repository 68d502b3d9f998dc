-- customer show: a uuid resolves to its customer_id.
SELECT customer_id FROM crm_customers WHERE customer_uuid = %(uuid)s
