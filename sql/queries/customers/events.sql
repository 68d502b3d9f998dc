-- A customer's latest e-commerce events by event time (the console's customer detail and
-- `customer show`); processed_at is when they arrived.
SELECT event_id, event_timestamp, event_type, event_data ->> 'category' AS category, page_url, processed_at
FROM ecommerce_events
WHERE customer_id = %(id)s
ORDER BY event_timestamp DESC, event_id DESC
LIMIT %(limit)s
