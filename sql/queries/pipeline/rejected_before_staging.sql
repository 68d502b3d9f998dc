-- `opsconsole backlog`: transactions rejected before staging (no account, 0031) in the last hours.
SELECT count(*) AS n
FROM financial_staging_rejects
WHERE rejected_at > now() - %(hours)s * interval '1 hour'
