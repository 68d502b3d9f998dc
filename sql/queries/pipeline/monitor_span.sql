-- Monitor pane: how far back the rollup history goes (the time cursor's Home) and the database's now.
SELECT min(minute_bucket) AS oldest_minute, max(minute_bucket) AS newest_minute, now() AS now
FROM financial_processing_rollup
