-- Monitor pane: the per-minute rollup of the hour up to %(until)s (NULL: now, the live view), newest
-- minute first; the time cursor moves %(until)s back through the rollup history.
-- (every column of financial_processing_minutes, the monitor view's one definition)
SELECT *
FROM financial_processing_minutes(coalesce(%(until)s::timestamptz, now()) - interval '1 hour',
                                  %(until)s::timestamptz)
ORDER BY minute_bucket DESC
LIMIT 61
