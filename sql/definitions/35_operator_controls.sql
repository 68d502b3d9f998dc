-- 35_operator_controls.sql: What an operator does to the pipeline beyond a retry: park a dead letter and
-- bring it back, pause and resume the whole fleet, and ask "what if" before a retry.
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.

------------------------------------------------------------------------------------------------------
-- Parking: a dead letter set aside (never claimed: the claim takes pending and failed rows only)
------------------------------------------------------------------------------------------------------
-- The rows p_from_status holds that the selectors name: staging ids and/or the Backlog's filter text
-- (backlog_row_matches), combined with AND; at least one is required.
CREATE OR REPLACE FUNCTION backlog_move_scope(
    p_from_status text,
    p_staging_ids bigint[],
    p_filter text
)
RETURNS TABLE(staging_id bigint, ingestion_timestamp timestamptz)
LANGUAGE plpgsql   -- not sql: Citus cannot plan a SQL function's parameters over distributed staging
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT s.staging_id, s.ingestion_timestamp
    FROM financial_transactions_staging s
    WHERE s.processing_status = p_from_status
      AND (p_staging_ids IS NULL OR s.staging_id = ANY (p_staging_ids))
      AND (p_filter IS NULL OR backlog_row_matches(p_filter, s.processing_status, s.error_code, s.error_message,
                                                   s.batch_id, s.staging_id, s.transaction_id))
      AND (p_staging_ids IS NOT NULL OR p_filter IS NOT NULL);
END;
$$;

-- The one mover behind park_dead_letters and unpark_dead_letters: moves the named rows between
-- dead_letter and parked, keeps the rollups' dead_letter counts equal to staging's (a parked row counts in
-- total_transactions only), writes the action's audit row in the same transaction, and returns how many
-- moved. Each row is checked again as it is updated: a retry may have moved it on since the scope was read.
-- An invoker: called directly it has only the caller's rights, and no group role may update staging.
CREATE OR REPLACE FUNCTION backlog_move(
    p_to_status text,
    p_staging_ids bigint[],
    p_filter text,
    p_reason text
)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_start  timestamptz := clock_timestamp();
    v_from   text;
    v_action text;
    v_key    text;
    v_count  integer;
    v_deltas jsonb;
BEGIN
    CASE p_to_status
        WHEN 'parked' THEN v_from := 'dead_letter'; v_action := 'park_dead_letters'; v_key := 'parked';
        WHEN 'dead_letter' THEN v_from := 'parked'; v_action := 'unpark_dead_letters'; v_key := 'unparked';
        ELSE RAISE EXCEPTION 'rows move to parked or back to dead_letter, not to %', p_to_status
                 USING ERRCODE = 'invalid_parameter_value';
    END CASE;
    IF p_staging_ids IS NULL AND p_filter IS NULL THEN
        RAISE EXCEPTION 'say which rows: staging ids or a filter' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH target AS (
        SELECT s.staging_id, s.ingestion_timestamp
        FROM financial_transactions_staging s
        WHERE (s.staging_id, s.ingestion_timestamp) IN (
                  SELECT m.staging_id, m.ingestion_timestamp
                  FROM backlog_move_scope(v_from, p_staging_ids, p_filter) m)
          AND s.processing_status = v_from
    ),
    upd AS (
        UPDATE financial_transactions_staging s
        SET processing_status = p_to_status,
            processed_at = now(),
            ingestion_timestamp = s.ingestion_timestamp   -- see retry_failed
        FROM target t
        WHERE s.staging_id = t.staging_id
          AND s.ingestion_timestamp = t.ingestion_timestamp
          -- checked again on the row as updated (no row lock: Citus refuses FOR UPDATE across shards)
          AND s.processing_status = v_from
        RETURNING s.ingestion_minute
    ),
    per_minute AS (
        SELECT u.ingestion_minute AS minute_bucket,
               CASE WHEN p_to_status = 'dead_letter' THEN count(*) ELSE -count(*) END AS dead_letter_delta
        FROM upd u
        GROUP BY 1
    )
    SELECT (SELECT count(*) FROM upd), (SELECT jsonb_agg(to_jsonb(m)) FROM per_minute m)
    INTO v_count, v_deltas;
    PERFORM financial_rollup_apply(v_deltas);
    PERFORM record_audit(
        v_action,
        jsonb_build_object('staging_ids', to_jsonb(p_staging_ids), 'filter', p_filter),
        jsonb_build_object(v_key, v_count),
        'ok',
        round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3),
        p_reason);
    RETURN v_count;
END;
$$;

CREATE OR REPLACE FUNCTION park_dead_letters(
    p_staging_ids bigint[] DEFAULT NULL,
    p_filter text DEFAULT NULL,
    p_reason text DEFAULT NULL
)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT backlog_move('parked', p_staging_ids, p_filter, p_reason);
$$;
COMMENT ON FUNCTION park_dead_letters(bigint[], text, text) IS
    'Set dead letters aside (parked: no worker claims them) by staging ids and/or the Backlog filter; audited.';

CREATE OR REPLACE FUNCTION unpark_dead_letters(
    p_staging_ids bigint[] DEFAULT NULL,
    p_filter text DEFAULT NULL,
    p_reason text DEFAULT NULL
)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT backlog_move('dead_letter', p_staging_ids, p_filter, p_reason);
$$;
COMMENT ON FUNCTION unpark_dead_letters(bigint[], text, text) IS
    'Bring parked rows back to dead_letter (where a retry can take them); audited.';


------------------------------------------------------------------------------------------------------
-- "What if": the chunk's validators on the rows an operator is about to retry, changing nothing
------------------------------------------------------------------------------------------------------
-- The rows the staging ids and/or filter name (failed, dead_letter or parked), validated now by
-- financial_validate() (the chunk's one definition), counted by the error code they would get (NULL:
-- they would pass validation now). SECURITY INVOKER and STABLE: the caller's own privileges, and the
-- console runs it in a READ ONLY transaction.
CREATE OR REPLACE FUNCTION backlog_what_if(
    p_staging_ids bigint[] DEFAULT NULL,
    p_filter text DEFAULT NULL
)
RETURNS TABLE(error_code text, rows bigint, was_failing bigint)
LANGUAGE plpgsql   -- not sql: Citus cannot plan a SQL function's parameters over distributed staging
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT array_agg(s) AS rows_
        FROM financial_transactions_staging s
        WHERE s.processing_status IN ('failed', 'dead_letter', 'parked')
          AND (p_staging_ids IS NULL OR s.staging_id = ANY (p_staging_ids))
          AND (p_filter IS NULL OR backlog_row_matches(p_filter, s.processing_status, s.error_code,
                                                       s.error_message, s.batch_id, s.staging_id,
                                                       s.transaction_id))
          AND (p_staging_ids IS NOT NULL OR p_filter IS NOT NULL)
    )
    SELECT v.error_code::text, count(*), count(*) FILTER (WHERE v.error_code IS NOT NULL)
    FROM picked
    CROSS JOIN financial_pipeline_settings cfg
    CROSS JOIN LATERAL financial_validate(picked.rows_, cfg, now()) v
    WHERE picked.rows_ IS NOT NULL
    GROUP BY v.error_code
    ORDER BY v.error_code NULLS FIRST;
END;
$$;
COMMENT ON FUNCTION backlog_what_if(bigint[], text) IS
    'How the selected failed/dead-lettered/parked rows would fare against the validators now, by error code '
    '(NULL: they pass). Reads only.';


------------------------------------------------------------------------------------------------------
-- The fleet's pause switch (pipeline_fleet_control, one row); every worker reads it before a claim
------------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION fleet_set_paused(p_paused boolean, p_reason text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
    v_was   boolean;
BEGIN
    SELECT c.paused INTO v_was FROM pipeline_fleet_control c FOR UPDATE;
    UPDATE pipeline_fleet_control
    SET paused = p_paused, changed_at = now(), changed_by = session_user, reason = p_reason;
    -- resuming wakes every idle worker at once (they LISTEN on opsconsole_staging)
    PERFORM pg_notify('opsconsole_staging', json_build_object('paused', p_paused)::text);
    PERFORM record_audit(
        CASE WHEN p_paused THEN 'pause_processing' ELSE 'resume_processing' END,
        '{}'::jsonb,
        jsonb_build_object('paused', p_paused, 'was_paused', coalesce(v_was, false)),
        'ok',
        round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3),
        p_reason);
    RETURN coalesce(v_was, false);
END;
$$;

CREATE OR REPLACE FUNCTION pause_processing(p_reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT fleet_set_paused(true, p_reason);
$$;
COMMENT ON FUNCTION pause_processing(text) IS
    'Pause processing for every worker (each finishes its chunk in flight, then claims nothing); audited. '
    'Returns whether it was paused already.';

CREATE OR REPLACE FUNCTION resume_processing(p_reason text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT fleet_set_paused(false, p_reason);
$$;
COMMENT ON FUNCTION resume_processing(text) IS
    'Resume processing for every worker (idle workers are woken at once); audited. Returns whether it was paused.';
