-- Monitor and Backlog panes: the rows still owed work, by status, from the maintained counts
-- (financial_staging_totals), never by counting staging rows. The oldest row of each status is one
-- probe per staging partition of the status index (processing_status, ingestion_timestamp). Parked
-- rows are set aside by hand, so there are few: they are counted through the same index.
SELECT s.status,
       CASE s.status WHEN 'pending' THEN c.pending WHEN 'failed' THEN c.failed ELSE c.dead_letter END AS rows,
       (SELECT min(t.ingestion_timestamp) FROM financial_transactions_staging t
        WHERE t.processing_status = s.status) AS oldest_ingested
FROM (VALUES ('pending'), ('failed'), ('dead_letter')) s(status)
CROSS JOIN financial_staging_totals c
WHERE CASE s.status WHEN 'pending' THEN c.pending WHEN 'failed' THEN c.failed ELSE c.dead_letter END > 0
UNION ALL
SELECT 'parked', count(*), min(p.ingestion_timestamp)
FROM financial_transactions_staging p
WHERE p.processing_status = 'parked'
HAVING count(*) > 0
