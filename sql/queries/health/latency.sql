-- Health snapshot (ops/health.py): the latency histogram of every processed row still in the rollup
-- (financial_latency_rollup, one row per minute and non-empty bucket), summed per bucket. Bucket lower
-- bounds are financial_latency_bounds(); a row counts in [lower, upper) milliseconds.
SELECT h.bucket_lower_ms, sum(h.row_count)::bigint AS row_count
FROM financial_latency_rollup h
GROUP BY h.bucket_lower_ms
ORDER BY h.bucket_lower_ms
