-- Customer detail: the customer as the lakehouse saw it at an instant.
SELECT * FROM time_travel_customers(%(at)s::timestamptz) WHERE customer_id = %(id)s
