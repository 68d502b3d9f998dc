-- 70_timeline.sql: What changed, on one time axis: SLA-breach minutes, data-quality failures, schema
-- changes and catalog differences, for an incident review.
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.
--
-- Operator actions belong on the same axis; the console merges them from the Activity pane's read of
-- ops_audit_log (sql/queries/audit/activity.sql), which is already what each role may see (search
-- texts are masked when the audit row is written), so that read has one home.

-- One row per event in [p_since, p_until]: when, which kind (sla, dq, schema, catalog), what it concerns,
-- a one-line detail, a severity (info, warning, error, critical) and a key unique within its kind. An SLA-breach minute is one whose
-- rows slower than the pipeline's sla_ms exceed p_breach_pct percent (financial_processing_minutes, the
-- monitor's own definition); catalog differences are columns first seen, or whose technical
-- description changed, in the window (columns dropped are counted in the refresh's audit row).
-- SECURITY INVOKER: a caller sees only what it may read.
CREATE OR REPLACE FUNCTION ops_timeline(
    p_since timestamptz,
    p_until timestamptz,
    p_breach_pct double precision DEFAULT 5
)
RETURNS TABLE(occurred_at timestamptz, kind text, subject text, detail text, severity text, ref text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT m.minute_bucket, 'sla'::text, 'SLA breach'::text,
           format('%s%% of rows over %s ms (p95 %s ms, max %s ms); %s rows, %s failed',
                  round(m.sla_breach_rate::numeric, 1), s.sla_ms, round(m.p95_processing_ms::numeric),
                  m.max_processing_ms, m.total_transactions, m.failed_count + m.dead_letter_count),
           'error'::text, m.minute_bucket::text
    FROM financial_processing_minutes(p_since, p_until) m
    CROSS JOIN financial_pipeline_settings s
    WHERE m.sla_breach_rate > p_breach_pct
    UNION ALL
    SELECT d.check_timestamp, 'dq', coalesce(d.metric_name, 'rule') || ' on ' || coalesce(d.source_table, '?'),
           CASE WHEN d.status = 'error' THEN 'could not run: ' || coalesce(d.message, '?')
                ELSE format('%s of %s rows failed', coalesce(d.failed_rows, 0), coalesce(d.total_rows, 0))
                     || coalesce(': ' || d.message, '') END,
           coalesce(d.severity, 'warning'), d.metric_id::text
    FROM data_quality_metrics d
    WHERE d.status IN ('fail', 'error')
      AND d.check_timestamp BETWEEN p_since AND p_until
    UNION ALL
    SELECT e.applied_at, 'schema', e.schema_name || '.' || e.table_name,
           e.evolution_type || coalesce(' ' || e.object_name, '') || coalesce(' (' || e.command_tag || ')', '')
           || ' by ' || e.applied_by,
           CASE WHEN e.backward_compatible THEN 'info' ELSE 'warning' END, e.evolution_id::text
    FROM schema_evolution_log e
    WHERE e.applied_at BETWEEN p_since AND p_until
    UNION ALL
    SELECT c.at, 'catalog', c.schema_name || '.' || c.table_name,
           concat_ws('; ', 'added ' || nullif(c.added, ''), 'changed ' || nullif(c.changed, '')),
           'info', c.at::text
    FROM (
        SELECT date_trunc('minute', greatest(k.first_seen_at, k.last_updated)) AS at, k.schema_name, k.table_name,
               string_agg(k.column_name, ', ' ORDER BY k.ordinal_position)
                   FILTER (WHERE k.first_seen_at BETWEEN p_since AND p_until) AS added,
               string_agg(k.column_name, ', ' ORDER BY k.ordinal_position)
                   FILTER (WHERE NOT k.first_seen_at BETWEEN p_since AND p_until) AS changed
        FROM data_catalog k
        WHERE k.first_seen_at BETWEEN p_since AND p_until
           OR (k.last_updated BETWEEN p_since AND p_until AND k.last_updated > k.first_seen_at)
        GROUP BY 1, 2, 3
    ) c
    ORDER BY 1 DESC, 2, 3;
$$;
COMMENT ON FUNCTION ops_timeline(timestamptz, timestamptz, double precision) IS
    'SLA-breach minutes, DQ failures, schema changes and catalog differences in a window, newest first.';
