-- Backlog drill-down: one staging row in full.
SELECT to_jsonb(s) AS row FROM financial_transactions_staging s WHERE staging_id = %(id)s
