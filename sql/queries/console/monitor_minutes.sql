-- Monitor pane: the per-minute rollup of the last hour, newest minute first.
-- (every column: the contract's, plus any the pipeline adds, e.g. dead_letter_count)
SELECT *
FROM financial_processing_monitor
ORDER BY minute_bucket DESC
LIMIT 60
