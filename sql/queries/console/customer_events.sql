-- Customer detail: the latest e-commerce events (event time).
SELECT event_id, event_timestamp, event_type, page_url, event_data
FROM ecommerce_events WHERE customer_id = %(id)s
ORDER BY event_timestamp DESC, event_id DESC
LIMIT 10
