-- Monitor and Backlog panes: the rows still owed work, by status, from the maintained counts
-- (financial_staging_totals), never by counting staging rows. The oldest row of each status is one
-- probe per staging partition of the status index (processing_status, ingestion_timestamp), each an
-- uncorrelated subquery (on Citus a correlated one over a VALUES list is refused; uncorrelated, each
-- is one probe per shard), run only for a status that has rows. Parked rows are set aside by hand,
-- so there are few: they are counted through the same index.
SELECT o.status, o.rows, o.oldest_ingested
FROM (
    SELECT 'pending' AS status, c.pending AS rows,
           (SELECT min(t.ingestion_timestamp) FROM financial_transactions_staging t
            WHERE t.processing_status = 'pending') AS oldest_ingested
    FROM financial_staging_totals c
    UNION ALL
    SELECT 'failed', c.failed,
           (SELECT min(t.ingestion_timestamp) FROM financial_transactions_staging t
            WHERE t.processing_status = 'failed')
    FROM financial_staging_totals c
    UNION ALL
    SELECT 'dead_letter', c.dead_letter,
           (SELECT min(t.ingestion_timestamp) FROM financial_transactions_staging t
            WHERE t.processing_status = 'dead_letter')
    FROM financial_staging_totals c
) o
WHERE o.rows > 0
UNION ALL
SELECT 'parked', count(*), min(p.ingestion_timestamp)
FROM financial_transactions_staging p
WHERE p.processing_status = 'parked'
HAVING count(*) > 0
