-- Timeline pane: SLA-breach minutes, DQ failures, schema changes and catalog differences between
-- %(since)s and %(until)s (ops_timeline, 70_timeline.sql), newest first. Operator actions come from
-- the Activity pane's read (audit/activity.sql).
SELECT occurred_at, kind, subject, detail, severity, ref
FROM ops_timeline(%(since)s, %(until)s, %(breach_pct)s)
LIMIT %(limit)s
