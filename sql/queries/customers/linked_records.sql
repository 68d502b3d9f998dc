-- customer show: the other records of the same person (same normalised email), survivor first.
SELECT customer_id, first_name, last_name, email, source_system,
       customer_id = golden_customer_id AS is_survivor
FROM customer_360_store
WHERE golden_customer_id = %(golden)s AND customer_id <> %(id)s
ORDER BY customer_id
