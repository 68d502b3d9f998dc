-- c360 status: what is queued (customer keys and order references of transactions), how big the 360
-- is, and the latest refresh.
SELECT (SELECT count(*) FROM customer_360_dirty)
           + (SELECT count(*) FROM customer_360_dirty_orders) AS queue_entries,
       (SELECT count(DISTINCT customer_id) FROM customer_360_dirty) AS dirty_customers,
       least((SELECT min(enqueued_at) FROM customer_360_dirty),
             (SELECT min(enqueued_at) FROM customer_360_dirty_orders)) AS oldest_entry_at,
       (SELECT count(*) FROM customer_360_store) AS rows,
       (SELECT count(*) FROM customer_360_store WHERE window_expires_at <= now()) AS expired_windows,
       l.mode AS last_mode, l.started_at AS last_started_at, l.rows_upserted AS last_rows_upserted,
       l.rows_deleted AS last_rows_deleted, l.refresh_duration AS last_duration
FROM (SELECT 1) one
LEFT JOIN LATERAL (
    SELECT * FROM customer_360_refresh_log ORDER BY started_at DESC, refresh_id DESC LIMIT 1
) l ON true
