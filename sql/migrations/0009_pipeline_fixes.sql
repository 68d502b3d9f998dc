-- 0009 pipeline fixes (0003 is landed; this replaces what changed). Both found by profiling P2
-- (a 10k-row chunk, EXPLAIN ANALYZE via auto_explain, perf on the backend, backend CPU per row):
--
-- 1. The chunk's UPDATE of financial_transactions_staging paid a per-row cost proportional to the
--    size of the table's generation expressions (payload_hash, ingestion_minute). Measured on
--    PostgreSQL 18.6: when an UPDATE changes no input of any stored generated column, the executor
--    re-reads the generation expressions for every row (perf: pg_strtok/nodeRead, i.e. stringToNode,
--    ~25% of the backend's time), while an UPDATE that needs one of them prepares them once per
--    statement. So the UPDATE assigns ingestion_timestamp to itself: ingestion_minute is then
--    recomputed (cheap, same value) and the others are skipped. The stored values and the row's HOT
--    eligibility are unchanged (the new value equals the old). Staging UPDATE of 10k rows: ~3x
--    faster; the whole chunk: backend CPU ~41 -> ~26 us/row.
-- 2. The fraud score (a function with a pinned search_path, so never inlined; ~2 us a call) was
--    evaluated three times per processed row: the planner pulled the scored subquery up and
--    substituted the call into each reference (the stored value and both CASE tests). A LATERAL
--    subquery with OFFSET 0 computes it once (pg_stat_user_functions: 3 calls a row -> 1).

-- p_rows are staging rows already claimed (locked) by the caller's transaction. Returns the outcome
-- counts and the rollup deltas; the caller applies the deltas last (so the hot rollup row is locked
-- only briefly, and always after the ledger, which keeps lock order acyclic between workers).
CREATE OR REPLACE FUNCTION financial_apply_chunk(
    p_rows financial_transactions_staging[],
    p_cfg financial_pipeline_settings,
    p_chunk_id bigint,
    p_worker text,
    p_now timestamptz,
    OUT processed integer,
    OUT failed integer,
    OUT dead_letter integer,
    OUT duplicate integer,
    OUT latency_sum_ms bigint,
    OUT rollup_deltas jsonb,
    OUT latency_deltas jsonb
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_ids     bigint[];
    v_codes   text[];
    v_details text[];
    v_won     boolean[];
    v_bounds  integer[] := financial_latency_bounds();
BEGIN
    -- Step 1: validate, and claim each valid transaction_id in the ledger. One row per id per chunk
    -- competes (the lowest staging_id); ids are inserted in order so that two workers racing on the
    -- same ids wait for each other in the same order (no deadlock). ON CONFLICT waits for a concurrent
    -- inserter to finish, so step 2 (a new snapshot) sees who won.
    WITH c AS (
        SELECT * FROM unnest(p_rows)
    ),
    v AS (
        SELECT c.staging_id, c.transaction_id, c.payload_hash, c.account_id, c.transaction_timestamp,
               CASE
                   WHEN c.transaction_id IS NULL OR c.account_id IS NULL OR c.transaction_timestamp IS NULL
                        OR c.amount IS NULL OR c.transaction_type IS NULL THEN 'missing_field'
                   WHEN t.transaction_type IS NULL THEN 'unknown_type'
                   WHEN c.amount NOT BETWEEN p_cfg.amount_min AND p_cfg.amount_max THEN 'amount_out_of_bounds'
                   WHEN c.transaction_timestamp > p_now + p_cfg.future_tolerance THEN 'future_timestamp'
                   WHEN o.has_ref AND o.order_id IS NULL THEN 'bad_order_reference'
                   WHEN o.has_ref AND k.order_id IS NULL THEN 'order_not_found'
               END AS error_code,
               CASE
                   WHEN c.transaction_id IS NULL OR c.account_id IS NULL OR c.transaction_timestamp IS NULL
                        OR c.amount IS NULL OR c.transaction_type IS NULL THEN
                       'required field(s) missing: ' || concat_ws(', ',
                           CASE WHEN c.transaction_id IS NULL THEN 'transaction_id' END,
                           CASE WHEN c.account_id IS NULL THEN 'account_id' END,
                           CASE WHEN c.transaction_timestamp IS NULL THEN 'transaction_timestamp' END,
                           CASE WHEN c.amount IS NULL THEN 'amount' END,
                           CASE WHEN c.transaction_type IS NULL THEN 'transaction_type' END)
                   WHEN t.transaction_type IS NULL THEN
                       format('transaction_type %s is not a known type', quote_literal(c.transaction_type))
                   WHEN c.amount NOT BETWEEN p_cfg.amount_min AND p_cfg.amount_max THEN
                       format('amount %s is outside [%s, %s]', c.amount, p_cfg.amount_min, p_cfg.amount_max)
                   WHEN c.transaction_timestamp > p_now + p_cfg.future_tolerance THEN
                       format('transaction_timestamp is more than %s ahead of the server clock',
                              p_cfg.future_tolerance)
                   WHEN o.has_ref AND o.order_id IS NULL THEN
                       'reference_data.order_id is not a positive integer'
                   WHEN o.has_ref AND k.order_id IS NULL THEN
                       format('order_id %s is not in erp_orders', o.order_id)
               END AS error_detail
        FROM c
        -- reference_data.order_id names erp_orders.order_id (not order_number); erp_order_keys holds
        -- one row per order_id, so the check is one primary-key probe.
        CROSS JOIN LATERAL (
            SELECT jsonb_typeof(c.reference_data) = 'object' AND c.reference_data ? 'order_id' AS has_ref,
                   CASE WHEN jsonb_typeof(c.reference_data) = 'object'
                             AND jsonb_typeof(c.reference_data -> 'order_id') IN ('number', 'string')
                             AND (c.reference_data ->> 'order_id') ~ '^[0-9]{1,18}$'
                        THEN (c.reference_data ->> 'order_id')::bigint END AS order_id
        ) o
        LEFT JOIN financial_transaction_types t ON t.transaction_type = c.transaction_type
        -- OFFSET 0 keeps this a per-row primary-key probe; flattened, the planner may hash the whole table
        LEFT JOIN LATERAL (
            SELECT k.order_id FROM erp_order_keys k WHERE k.order_id = o.order_id OFFSET 0
        ) k ON true
    ),
    r AS (
        SELECT v.*, row_number() OVER (PARTITION BY v.transaction_id ORDER BY v.staging_id) AS rn
        FROM v
        WHERE v.error_code IS NULL
    ),
    l AS (
        INSERT INTO financial_transaction_ledger
            (transaction_id, payload_hash, staging_id, account_id, transaction_timestamp, recorded_at)
        SELECT r.transaction_id, r.payload_hash, r.staging_id, r.account_id, r.transaction_timestamp, p_now
        FROM r
        WHERE r.rn = 1
        ORDER BY r.transaction_id
        ON CONFLICT (transaction_id) DO NOTHING
        RETURNING staging_id
    )
    SELECT array_agg(v.staging_id), array_agg(v.error_code), array_agg(v.error_detail),
           array_agg(l.staging_id IS NOT NULL)
    INTO v_ids, v_codes, v_details, v_won
    FROM v
    LEFT JOIN l ON l.staging_id = v.staging_id;

    -- Step 2: score the winners against their account's history in [ts - window, ts), where the
    -- history is the processed table plus the earlier winners of this chunk; write processed; flag
    -- financial_transactions; classify the losers (duplicate or conflict); mark every row once.
    WITH c AS (
        SELECT * FROM unnest(p_rows)
    ),
    x AS MATERIALIZED (
        SELECT c.*, o.error_code AS new_error_code, o.error_detail, o.won,
               c.processing_status AS prev_status,
               -- latency: ingestion -> this outcome (capped to fit integer)
               least(extract(epoch FROM clock_timestamp() - c.ingestion_timestamp) * 1000,
                     2147483647)::integer AS ms
        FROM c
        JOIN unnest(v_ids, v_codes, v_details, v_won) AS o(staging_id, error_code, error_detail, won)
          ON o.staging_id = c.staging_id
    ),
    winners AS (
        SELECT * FROM x WHERE x.won
    ),
    acct AS (
        SELECT w.account_id, min(w.transaction_timestamp) - p_cfg.fraud_window AS lo,
               max(w.transaction_timestamp) AS hi
        FROM winners w
        GROUP BY w.account_id
    ),
    pool AS (
        SELECT w.staging_id, w.account_id, w.transaction_timestamp, abs(w.amount) AS amount_abs
        FROM winners w
        UNION ALL
        SELECT NULL::bigint, a.account_id, h.transaction_timestamp, h.amount_abs
        FROM acct a
        CROSS JOIN LATERAL (
            -- one index range scan per account (OFFSET 0: never flattened into a scan of processed);
            -- the partitions outside [lo, hi) are pruned at run time
            SELECT p.transaction_timestamp, p.amount_abs
            FROM financial_transactions_processed p
            WHERE p.account_id = a.account_id
              AND p.transaction_timestamp >= a.lo
              AND p.transaction_timestamp < a.hi
            OFFSET 0
        ) h
    ),
    windowed AS (
        SELECT q.staging_id,
               count(*) OVER w AS recent_count,
               avg(q.amount_abs) OVER w AS recent_avg
        FROM pool q
        -- [ts - window, ts): RANGE includes peers at ts; EXCLUDE GROUP drops them (and the row).
        WINDOW w AS (PARTITION BY q.account_id ORDER BY q.transaction_timestamp
                     RANGE BETWEEN p_cfg.fraud_window PRECEDING AND CURRENT ROW EXCLUDE GROUP)
    ),
    scored AS (
        SELECT w.*, sc.risk_score
        FROM winners w
        JOIN windowed s ON s.staging_id = w.staging_id
        -- OFFSET 0: the score is computed once per row; pulled up, it would be recomputed for each
        -- reference below (the value and both CASE tests), and each call costs microseconds
        CROSS JOIN LATERAL (
            SELECT financial_fraud_score(w.amount, w.transaction_timestamp, s.recent_count, s.recent_avg,
                                         p_cfg.business_time_zone, p_cfg.business_hour_start,
                                         p_cfg.business_hour_end) AS risk_score
            OFFSET 0
        ) sc
    ),
    ins AS (
        INSERT INTO financial_transactions_processed (
            transaction_id, account_id, transaction_timestamp, amount, transaction_type, reference_data,
            batch_id, processed_at, processing_duration_ms, validation_status, risk_score, staging_id,
            ingestion_timestamp, payload_hash)
        SELECT s.transaction_id, s.account_id, s.transaction_timestamp, s.amount, s.transaction_type,
               s.reference_data, s.batch_id, clock_timestamp(), s.ms,
               CASE WHEN s.risk_score > 70 THEN 'high_risk'
                    WHEN s.risk_score > 40 THEN 'medium_risk'
                    ELSE 'valid' END,
               s.risk_score, s.staging_id, s.ingestion_timestamp, s.payload_hash
        FROM scored s
        RETURNING staging_id, transaction_id
    ),
    flagged AS (
        UPDATE financial_transactions f
        SET is_processed = true
        FROM ins
        WHERE f.transaction_id = ins.transaction_id
          AND f.transaction_id = ANY (ARRAY(SELECT i.transaction_id FROM ins i))   -- primary-key probes
          AND NOT f.is_processed
        RETURNING f.transaction_id
    ),
    outcome AS (
        -- processed
        SELECT x.staging_id, x.prev_status, 'processed'::varchar AS new_status, NULL::varchar AS error_code,
               NULL::text AS error_message, x.retry_count AS new_retry_count, x.next_attempt_at AS due, x.ms
        FROM x
        JOIN ins ON ins.staging_id = x.staging_id
        UNION ALL
        -- failed validation: retried with backoff, or dead-lettered
        SELECT x.staging_id, x.prev_status,
               financial_failure_status(x.retry_count + 1, e.retryable, p_cfg.max_attempts),
               x.new_error_code, x.error_detail, x.retry_count + 1,
               p_now + financial_retry_delay(x.retry_count + 1, p_cfg.backoff_base, p_cfg.backoff_max), x.ms
        FROM x
        JOIN financial_error_codes e ON e.error_code = x.new_error_code
        UNION ALL
        -- valid but the ledger already had the id: a replay, or a conflicting payload
        SELECT x.staging_id, x.prev_status,
               CASE WHEN g.payload_hash = x.payload_hash THEN 'duplicate' ELSE 'dead_letter' END,
               CASE WHEN g.payload_hash = x.payload_hash THEN 'duplicate' ELSE 'payload_conflict' END,
               CASE WHEN g.payload_hash = x.payload_hash
                    THEN format('transaction_id %s was already processed with the same payload (staging_id %s)',
                                x.transaction_id, g.staging_id)
                    ELSE format('transaction_id %s was already processed with a different payload (staging_id %s)',
                                x.transaction_id, g.staging_id) END,
               x.retry_count + CASE WHEN g.payload_hash = x.payload_hash THEN 0 ELSE 1 END,
               x.next_attempt_at, x.ms
        FROM x
        CROSS JOIN LATERAL (
            SELECT l.payload_hash, l.staging_id FROM financial_transaction_ledger l
            WHERE l.transaction_id = x.transaction_id OFFSET 0
        ) g
        WHERE x.new_error_code IS NULL AND NOT x.won
    ),
    upd AS (
        UPDATE financial_transactions_staging s
        SET processing_status = o.new_status,
            error_code = o.error_code,
            error_message = o.error_message,
            retry_count = o.new_retry_count,
            next_attempt_at = o.due,
            processing_duration_ms = o.ms,
            processed_at = clock_timestamp(),
            claimed_by = p_worker,
            chunk_id = p_chunk_id,
            -- the same value: makes PostgreSQL prepare the generated columns once, not per row (see
            -- the header of 0009)
            ingestion_timestamp = s.ingestion_timestamp
        FROM outcome o
        WHERE s.staging_id = o.staging_id
          AND s.staging_id = ANY (v_ids)   -- primary-key probes, whatever the estimates of outcome
        RETURNING s.staging_id, s.ingestion_minute, o.prev_status, o.new_status, o.ms
    ),
    per_minute AS (
        SELECT u.ingestion_minute AS minute_bucket,
               count(*) FILTER (WHERE u.new_status = 'pending')
                 - count(*) FILTER (WHERE u.prev_status = 'pending') AS pending_delta,
               count(*) FILTER (WHERE u.new_status = 'processed')
                 - count(*) FILTER (WHERE u.prev_status = 'processed') AS processed_delta,
               count(*) FILTER (WHERE u.new_status = 'failed')
                 - count(*) FILTER (WHERE u.prev_status = 'failed') AS failed_delta,
               count(*) FILTER (WHERE u.new_status = 'dead_letter')
                 - count(*) FILTER (WHERE u.prev_status = 'dead_letter') AS dead_letter_delta,
               count(*) FILTER (WHERE u.new_status = 'duplicate')
                 - count(*) FILTER (WHERE u.prev_status = 'duplicate') AS duplicate_delta,
               count(*) FILTER (WHERE u.new_status = 'processed') AS latency_count,
               coalesce(sum(u.ms) FILTER (WHERE u.new_status = 'processed'), 0) AS latency_sum_ms,
               max(u.ms) FILTER (WHERE u.new_status = 'processed') AS latency_max_ms,
               count(*) FILTER (WHERE u.new_status = 'processed' AND u.ms > p_cfg.sla_ms) AS sla_breaches
        FROM upd u
        GROUP BY 1
    ),
    hist AS (
        SELECT u.ingestion_minute AS minute_bucket,
               v_bounds[width_bucket(u.ms, v_bounds)] AS bucket_lower_ms,
               v_bounds[width_bucket(u.ms, v_bounds) + 1] AS bucket_upper_ms,
               count(*) AS row_count
        FROM upd u
        WHERE u.new_status = 'processed'
        GROUP BY 1, 2, 3
    )
    SELECT (SELECT count(*) FROM upd WHERE upd.new_status = 'processed'),
           (SELECT count(*) FROM upd WHERE upd.new_status = 'failed'),
           (SELECT count(*) FROM upd WHERE upd.new_status = 'dead_letter'),
           (SELECT count(*) FROM upd WHERE upd.new_status = 'duplicate'),
           (SELECT coalesce(sum(upd.ms), 0) FROM upd WHERE upd.new_status = 'processed'),
           (SELECT jsonb_agg(to_jsonb(m)) FROM per_minute m),
           (SELECT jsonb_agg(to_jsonb(h)) FROM hist h)
    INTO processed, failed, dead_letter, duplicate, latency_sum_ms, rollup_deltas, latency_deltas;
END;
$$;
