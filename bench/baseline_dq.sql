-- P7 baseline: the spec's execute_data_quality_checks(), made to run and nothing more.
--
-- Loaded by bench/dq.py into a scratch benchmark database only; never part of the migrations (it runs
-- rule_expression as raw SQL, which is exactly what 0002 forbids). Kept as close to the spec as the
-- fixes allow: per rule one count(*) of the table plus one query for the check (two scans per rule),
-- a metrics row per rule. Fixed so that it runs: format() has no %.2f (round() + %s instead), and
-- bigint counts.
CREATE OR REPLACE FUNCTION bench_spec_dq_checks()
RETURNS TABLE(
    rule_name varchar(100),
    table_name varchar(100),
    rule_type varchar(50),
    passed boolean,
    score numeric(10,4),
    threshold_value numeric(10,4),
    severity varchar(20),
    message text
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    rule_def record;
    check_query text;
    total_rows bigint;
    passed_rows bigint;
    quality_score numeric(10,4);
BEGIN
    FOR rule_def IN SELECT * FROM dq_rule_definitions d WHERE d.is_active ORDER BY d.rule_id LOOP
        BEGIN
            EXECUTE format('SELECT count(*) FROM %I', rule_def.table_name) INTO total_rows;
            CASE rule_def.rule_type
                WHEN 'completeness', 'validity', 'accuracy' THEN
                    check_query := format('SELECT count(*) FROM %I WHERE %s', rule_def.table_name, rule_def.rule_expression);
                WHEN 'uniqueness' THEN
                    check_query := format('SELECT count(DISTINCT %s) FROM %I', rule_def.rule_expression, rule_def.table_name);
                ELSE
                    check_query := 'SELECT 0';
            END CASE;
            EXECUTE check_query INTO passed_rows;
            quality_score := CASE WHEN total_rows = 0 THEN 0 ELSE passed_rows::numeric / total_rows END;
            INSERT INTO data_quality_metrics (source_table, metric_name, metric_value, threshold_value, status, details)
            VALUES (rule_def.table_name, rule_def.rule_name, quality_score, rule_def.threshold_value,
                    CASE WHEN quality_score >= rule_def.threshold_value THEN 'pass' ELSE 'fail' END,
                    jsonb_build_object('total_rows', total_rows, 'passed_rows', passed_rows,
                                       'rule_type', rule_def.rule_type, 'severity', rule_def.severity));
            RETURN QUERY SELECT rule_def.rule_name, rule_def.table_name, rule_def.rule_type,
                quality_score >= rule_def.threshold_value, quality_score, rule_def.threshold_value,
                rule_def.severity,
                format('Quality score: %s%% (threshold: %s%%)', round(quality_score * 100, 2),
                       round(rule_def.threshold_value * 100, 2));
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO data_quality_metrics (source_table, metric_name, metric_value, status, details)
            VALUES (rule_def.table_name, rule_def.rule_name, 0, 'error', jsonb_build_object('error', SQLERRM));
            RETURN QUERY SELECT rule_def.rule_name, rule_def.table_name, rule_def.rule_type, false,
                0::numeric(10,4), rule_def.threshold_value, 'critical'::varchar(20),
                format('Error executing rule: %s', SQLERRM);
        END;
    END LOOP;
END;
$$;

-- A second, fairer reference: one scan per rule (count(*) and the check in one query), so that the
-- single-pass gain is not only the spec's extra count(*) per rule.
CREATE OR REPLACE FUNCTION bench_one_query_per_rule()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    rule_def record;
    counts bigint[];
    checked bigint := 0;
BEGIN
    FOR rule_def IN SELECT * FROM dq_rule_definitions d WHERE d.is_active ORDER BY d.rule_id LOOP
        EXECUTE format('SELECT ARRAY[count(*), count(*) FILTER (WHERE %s)] FROM %I',
                       rule_def.rule_expression, rule_def.table_name) INTO counts;
        INSERT INTO data_quality_metrics (source_table, metric_name, metric_value, threshold_value, status)
        VALUES (rule_def.table_name, rule_def.rule_name, counts[2]::numeric / nullif(counts[1], 0),
                rule_def.threshold_value, 'pass');
        checked := checked + 1;
    END LOOP;
    RETURN checked;
END;
$$;
