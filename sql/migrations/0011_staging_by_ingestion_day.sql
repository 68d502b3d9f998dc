-- 0011: financial_transactions_staging partitioned by ingestion day, so retention drops whole days.
--
-- Until 0010 retention was a bounded DELETE of processed rows: every purged row cost a WAL record, a
-- dead tuple and index cleanup by VACUUM. Now staging is range-partitioned on ingestion_timestamp,
-- one partition per UTC day (financial_transactions_staging_YYYY_MM_DD) plus a DEFAULT partition, so
-- an insert never fails whatever its ingestion time. purge_financial_staging() detaches and drops
-- the days older than the retention after moving the rows that must stay (pending, failed,
-- dead_letter) into the DEFAULT partition: their ingestion_timestamp, staging_id and minute are
-- unchanged, so retries, the rollups and the audit trail still line up. The monitor reads the
-- per-minute rollups and exactly-once reads the ledger, so neither needs the dropped rows.
--
-- The upgrade converts the existing table with its data: the old table is renamed, a partitioned
-- table is created LIKE it (same columns in the same order, defaults, generated columns, checks,
-- comments), the rows are copied with their staging_id, the sequence changes owner, and indexes,
-- the arrival trigger, the foreign key, the backlog view and the two chunk functions whose argument
-- is the staging row type are created again on the new table. Grants made to other roles are copied;
-- the policy's are re-applied (last line).
-- Workers should be stopped while it runs (it holds the old table exclusively while copying).
--
-- The primary key becomes (staging_id, ingestion_timestamp): a unique key must include the
-- partition key. staging_id stays unique (one sequence), and a lookup by staging_id alone is one
-- index probe per partition (about retention + 8 of them); the chunk's own updates also give the
-- ingestion-time range of their rows so that only the partitions holding them are probed.

------------------------------------------------------------------------------------------------------
-- Partitions of staging, with their bounds
------------------------------------------------------------------------------------------------------
-- One row per partition; range_from/range_to are NULL for the DEFAULT partition. Bounds are read
-- back from the catalog's own text (pinned TimeZone and DateStyle make it one fixed format).
CREATE FUNCTION financial_staging_partitions()
RETURNS TABLE(partition_name regclass, range_from timestamptz, range_to timestamptz)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public
SET "TimeZone" = 'UTC'
SET "DateStyle" = 'ISO, YMD'
AS $$
    SELECT c.oid::regclass,
           (regexp_match(b.bound, '^FOR VALUES FROM \(''([^'']+)''\)'))[1]::timestamptz,
           (regexp_match(b.bound, ' TO \(''([^'']+)''\)$'))[1]::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
    WHERE i.inhparent = 'financial_transactions_staging'::regclass;
$$;

-- Creates the DEFAULT partition if missing and one partition per UTC day for
-- [now - p_back, now + p_ahead]. A day whose rows already sit in DEFAULT is built detached, the rows
-- moved into it, then attached (ATTACH takes only SHARE UPDATE EXCLUSIVE on the parent, so workers
-- keep going). Returns the number of partitions created. purge_financial_staging() calls it, so a
-- daily purge keeps a week of days ahead; rows beyond that still insert (into DEFAULT).
CREATE FUNCTION ensure_staging_partitions(
    p_back interval DEFAULT interval '0',
    p_ahead interval DEFAULT interval '7 days'
)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
SET "TimeZone" = 'UTC'
SET "DateStyle" = 'ISO, YMD'
AS $$
DECLARE
    v_parent  regclass := 'financial_transactions_staging'::regclass;
    v_default regclass;
    v_day     date;
    v_last    date;
    v_lo      timestamptz;
    v_hi      timestamptz;
    v_part    text;
    v_cols    text;
    v_created integer := 0;
BEGIN
    -- the same lock ensure_partitions() takes: one creator at a time per parent
    PERFORM pg_advisory_xact_lock(v_parent::oid::bigint);

    SELECT p.partition_name INTO v_default FROM financial_staging_partitions() p WHERE p.range_from IS NULL;
    IF v_default IS NULL THEN
        CREATE TABLE public.financial_transactions_staging_default
            PARTITION OF financial_transactions_staging DEFAULT;
        v_default := 'public.financial_transactions_staging_default'::regclass;
        v_created := v_created + 1;
    END IF;

    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols
    FROM pg_attribute a
    WHERE a.attrelid = v_parent AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';

    v_day := (now() - p_back)::date;     -- UTC days (TimeZone is pinned)
    v_last := (now() + p_ahead)::date;
    WHILE v_day <= v_last LOOP
        v_lo := v_day::timestamptz;
        v_hi := (v_day + 1)::timestamptz;
        IF NOT EXISTS (SELECT 1 FROM financial_staging_partitions() p
                       WHERE p.range_from < v_hi AND p.range_to > v_lo) THEN
            v_part := 'financial_transactions_staging_' || to_char(v_day, 'YYYY_MM_DD');
            EXECUTE format('CREATE TABLE public.%I (LIKE %s INCLUDING DEFAULTS INCLUDING GENERATED '
                           'INCLUDING CONSTRAINTS)', v_part, v_parent);
            -- generated columns cannot be inserted into: move the stored columns only
            EXECUTE format('WITH moved AS (DELETE FROM %s WHERE ingestion_timestamp >= %L AND ingestion_timestamp < %L '
                           'RETURNING *) INSERT INTO public.%I (%s) SELECT %s FROM moved',
                           v_default, v_lo, v_hi, v_part, v_cols, v_cols);
            EXECUTE format('ALTER TABLE %s ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                           v_parent, v_part, v_lo, v_hi);
            v_created := v_created + 1;
        END IF;
        v_day := v_day + 1;
    END LOOP;
    RETURN v_created;
END;
$$;
COMMENT ON FUNCTION ensure_staging_partitions(interval, interval) IS
    'Create the daily partitions of financial_transactions_staging for [now - p_back, now + p_ahead] and its DEFAULT; idempotent.';

------------------------------------------------------------------------------------------------------
-- The conversion: a partitioned table LIKE the old one, the rows copied, the dependents recreated
------------------------------------------------------------------------------------------------------
LOCK TABLE financial_transactions_staging IN ACCESS EXCLUSIVE MODE;

-- Objects that point at the old table by OID go first (each is created again below).
DROP VIEW financial_pipeline_backlog;
DROP FUNCTION financial_apply_isolating(financial_transactions_staging[], financial_pipeline_settings, bigint,
                                        text, timestamptz);
DROP FUNCTION financial_apply_chunk(financial_transactions_staging[], financial_pipeline_settings, bigint,
                                    text, timestamptz);
DROP TRIGGER financial_staging_arrived ON financial_transactions_staging;
DROP INDEX financial_staging_claim_idx, idx_financial_staging_status, financial_staging_retry_batch_idx,
           financial_staging_retry_code_idx;

ALTER TABLE financial_transactions_staging RENAME TO financial_transactions_staging_unpartitioned;
ALTER TABLE financial_transactions_staging_unpartitioned
    RENAME CONSTRAINT financial_transactions_staging_pkey TO financial_transactions_staging_unpartitioned_pkey;

-- LIKE keeps every column (including any added since 0003) in its order, with its default (the
-- staging_id sequence), generation expression, NOT NULL, checks and comments.
CREATE TABLE financial_transactions_staging (
    LIKE financial_transactions_staging_unpartitioned
        INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING COMMENTS
        INCLUDING STORAGE INCLUDING STATISTICS,
    PRIMARY KEY (staging_id, ingestion_timestamp),
    CONSTRAINT financial_transactions_staging_error_code_fkey
        FOREIGN KEY (error_code) REFERENCES financial_error_codes
) PARTITION BY RANGE (ingestion_timestamp);
COMMENT ON TABLE financial_transactions_staging IS
    'Incoming transactions, one partition per UTC ingestion day. Each row is in exactly one state; error_code says why for failed, dead_letter and duplicate.';
ALTER SEQUENCE financial_transactions_staging_staging_id_seq OWNED BY financial_transactions_staging.staging_id;

-- Days from the retention horizon to a week ahead; older rows go to DEFAULT (purged there by DELETE).
SELECT ensure_staging_partitions((SELECT s.staging_retention FROM financial_pipeline_settings s));

DO $$
DECLARE
    v_cols text;
    r      record;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols
    FROM pg_attribute a
    WHERE a.attrelid = 'financial_transactions_staging'::regclass
      AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
    -- no arrival trigger yet: these rows are already counted in the rollups
    EXECUTE format('INSERT INTO financial_transactions_staging (%s) SELECT %s '
                   'FROM financial_transactions_staging_unpartitioned ORDER BY staging_id', v_cols, v_cols);
    -- Grants made outside the policy (a loader role's INSERT, say) carry over; the policy's own are
    -- re-applied at the end. Privilege names are checked against the fixed list, grantees quoted.
    FOR r IN
        SELECT a.privilege_type, a.is_grantable,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee
        FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
        WHERE c.oid = 'financial_transactions_staging_unpartitioned'::regclass
          AND a.grantee <> c.relowner
          AND a.privilege_type IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER')
    LOOP
        EXECUTE format('GRANT %s ON financial_transactions_staging TO %s%s', r.privilege_type, r.grantee,
                       CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END;
$$;
DROP TABLE financial_transactions_staging_unpartitioned;

-- The indexes of 0003, now per partition (built after the copy: one sorted build each).
-- The claim: due rows in due order. Partial, so terminal rows cost nothing here.
CREATE INDEX financial_staging_claim_idx ON financial_transactions_staging (next_attempt_at, staging_id)
    WHERE processing_status IN ('pending', 'failed');
-- The spec's index: the backlog pane (rows by status) and the survivors of a dropped day.
CREATE INDEX idx_financial_staging_status ON financial_transactions_staging (processing_status, ingestion_timestamp);
-- retry_failed by batch or by error code.
CREATE INDEX financial_staging_retry_batch_idx ON financial_transactions_staging (batch_id)
    WHERE processing_status IN ('failed', 'dead_letter');
CREATE INDEX financial_staging_retry_code_idx ON financial_transactions_staging (error_code)
    WHERE processing_status IN ('failed', 'dead_letter');

-- Arrivals: the function of 0003, unchanged. A statement trigger with a transition table on the
-- partitioned parent sees the rows routed to every partition (PostgreSQL 10+); rows written into a
-- partition directly (the retention's moves below) do not fire it, which is what they need.
CREATE TRIGGER financial_staging_arrived AFTER INSERT ON financial_transactions_staging
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION financial_staging_arrived();

-- The view of 0003 as it was; it must be created again to read the new table.
CREATE VIEW financial_pipeline_backlog AS
SELECT s.processing_status,
       s.error_code,
       count(*) AS row_count,
       count(*) FILTER (WHERE s.processing_status IN ('pending', 'failed') AND s.next_attempt_at <= now()) AS due_now,
       min(s.next_attempt_at) FILTER (WHERE s.processing_status IN ('pending', 'failed')) AS oldest_due_at,
       min(s.ingestion_timestamp) AS oldest_ingested_at,
       max(s.processed_at) AS last_attempt_at,
       max(s.retry_count) AS max_retry_count
FROM financial_transactions_staging s
WHERE s.processing_status IN ('pending', 'failed', 'dead_letter')
GROUP BY s.processing_status, s.error_code;
COMMENT ON VIEW financial_pipeline_backlog IS
    'Rows waiting (pending), retrying (failed) or stuck (dead_letter), by error code, with the oldest due time.';

------------------------------------------------------------------------------------------------------
-- The chunk functions of 0003 on the new row type. Changed: each staging UPDATE also names the
-- ingestion time of its rows (a range for the chunk, the value for one row), so only the partitions
-- holding them are probed by staging_id; a row ingested "in the future" (another clock) gets latency
-- 0 instead of failing the whole batch in the histogram; the rest is 0003's definition.
------------------------------------------------------------------------------------------------------
-- p_rows are staging rows already claimed (locked) by the caller's transaction. Returns the outcome
-- counts and the rollup deltas; the caller applies the deltas last (so the hot rollup row is locked
-- only briefly, and always after the ledger, which keeps lock order acyclic between workers).
-- Two costs found by profiling P2 shape this function (EXPLAIN ANALYZE, perf on the backend):
--  * the staging UPDATE assigns ingestion_timestamp to itself: an UPDATE that touches no input of a
--    stored generated column re-reads the generation expressions for every row (~25% of backend
--    time on 18.6), while one that touches an input prepares them once per statement; the values
--    and HOT eligibility are unchanged;
--  * the fraud score is computed in a LATERAL subquery with OFFSET 0, so it runs once per row
--    instead of once per reference after the planner pulls the subquery up.
CREATE FUNCTION financial_apply_chunk(
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
    v_from    timestamptz;
    v_to      timestamptz;
BEGIN
    -- the chunk's ingestion-time span: prunes the staging UPDATE to the partitions holding its rows
    SELECT min(c.ingestion_timestamp), max(c.ingestion_timestamp) INTO v_from, v_to FROM unnest(p_rows) c;

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
               -- latency: ingestion -> this outcome (capped to fit integer; 0 for an ingestion
               -- time ahead of this clock, which has no histogram bucket and would fail the chunk)
               greatest(least(extract(epoch FROM clock_timestamp() - c.ingestion_timestamp) * 1000,
                              2147483647), 0)::integer AS ms
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
            -- the note above this function)
            ingestion_timestamp = s.ingestion_timestamp
        FROM outcome o
        WHERE s.staging_id = o.staging_id
          AND s.staging_id = ANY (v_ids)   -- primary-key probes, whatever the estimates of outcome
          AND s.ingestion_timestamp BETWEEN v_from AND v_to   -- ... in the partitions of the chunk only
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

-- A chunk that raised (a bug, or data no validation rule foresaw) is split in halves until the rows
-- that raise are alone; each such row is marked internal_error (retried with backoff, then
-- dead-lettered) and the rest are processed normally. One subtransaction per split, not per row.
CREATE FUNCTION financial_apply_isolating(
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
    v_n    integer := coalesce(array_length(p_rows, 1), 0);
    v_half integer;
    v_a    record;
    v_b    record;
    v_row  financial_transactions_staging;
    v_err  text;
    v_st   varchar;
BEGIN
    processed := 0; failed := 0; dead_letter := 0; duplicate := 0; latency_sum_ms := 0;
    rollup_deltas := '[]'::jsonb; latency_deltas := '[]'::jsonb;
    IF v_n = 0 THEN
        RETURN;
    END IF;
    BEGIN
        SELECT * INTO v_a FROM financial_apply_chunk(p_rows, p_cfg, p_chunk_id, p_worker, p_now);
        processed := v_a.processed; failed := v_a.failed; dead_letter := v_a.dead_letter;
        duplicate := v_a.duplicate; latency_sum_ms := v_a.latency_sum_ms;
        rollup_deltas := coalesce(v_a.rollup_deltas, '[]'::jsonb);
        latency_deltas := coalesce(v_a.latency_deltas, '[]'::jsonb);
        RETURN;
    EXCEPTION WHEN OTHERS THEN
        v_err := SQLERRM;
    END;
    IF v_n = 1 THEN
        v_row := p_rows[1];
        v_st := financial_failure_status(v_row.retry_count + 1, true, p_cfg.max_attempts);
        UPDATE financial_transactions_staging s
        SET processing_status = v_st,
            error_code = 'internal_error',
            error_message = left(v_err, 1000),
            retry_count = s.retry_count + 1,
            next_attempt_at = p_now + financial_retry_delay(s.retry_count + 1, p_cfg.backoff_base, p_cfg.backoff_max),
            processed_at = clock_timestamp(),
            claimed_by = p_worker,
            chunk_id = p_chunk_id
        WHERE s.staging_id = v_row.staging_id
          AND s.ingestion_timestamp = v_row.ingestion_timestamp;
        IF v_st = 'failed' THEN failed := 1; ELSE dead_letter := 1; END IF;
        rollup_deltas := jsonb_build_array(jsonb_build_object(
            'minute_bucket', v_row.ingestion_minute,
            'pending_delta', CASE WHEN v_row.processing_status = 'pending' THEN -1 ELSE 0 END,
            'failed_delta', CASE WHEN v_st = 'failed' THEN 1 ELSE 0 END
                            - CASE WHEN v_row.processing_status = 'failed' THEN 1 ELSE 0 END,
            'dead_letter_delta', CASE WHEN v_st = 'dead_letter' THEN 1 ELSE 0 END));
        RETURN;
    END IF;
    v_half := v_n / 2;
    SELECT * INTO v_a FROM financial_apply_isolating(p_rows[1:v_half], p_cfg, p_chunk_id, p_worker, p_now);
    SELECT * INTO v_b FROM financial_apply_isolating(p_rows[v_half + 1:v_n], p_cfg, p_chunk_id, p_worker, p_now);
    processed := v_a.processed + v_b.processed;
    failed := v_a.failed + v_b.failed;
    dead_letter := v_a.dead_letter + v_b.dead_letter;
    duplicate := v_a.duplicate + v_b.duplicate;
    latency_sum_ms := v_a.latency_sum_ms + v_b.latency_sum_ms;
    rollup_deltas := v_a.rollup_deltas || v_b.rollup_deltas;
    latency_deltas := v_a.latency_deltas || v_b.latency_deltas;
END;
$$;

------------------------------------------------------------------------------------------------------
-- retry_failed: 0003's definition, two changes in its UPDATE
------------------------------------------------------------------------------------------------------
--  * it joins its targets on the whole key (staging_id, ingestion_timestamp), one partition each;
--  * it assigns ingestion_timestamp to itself, as the chunk does: an UPDATE that touches no input of
--    the stored generated columns re-reads their expressions for every row; one that touches an
--    input prepares them once per statement (values unchanged, and the row stays in its partition).
CREATE OR REPLACE FUNCTION retry_failed(
    p_staging_ids bigint[] DEFAULT NULL,
    p_batch_id text DEFAULT NULL,
    p_error_code text DEFAULT NULL,
    p_all boolean DEFAULT false,
    p_include_dead_letter boolean DEFAULT false,
    p_reason text DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_start    timestamptz := clock_timestamp();
    v_statuses varchar[] := CASE WHEN p_include_dead_letter THEN ARRAY['failed', 'dead_letter']::varchar[]
                                 ELSE ARRAY['failed']::varchar[] END;
    v_count    integer;
    v_deltas   jsonb;
BEGIN
    IF p_staging_ids IS NULL AND p_batch_id IS NULL AND p_error_code IS NULL AND NOT coalesce(p_all, false) THEN
        RAISE EXCEPTION 'retry_failed: say which rows: staging ids, a batch id, an error code, or p_all => true'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    WITH target AS (
        SELECT s.staging_id, s.ingestion_timestamp, s.processing_status
        FROM financial_transactions_staging s
        WHERE s.processing_status = ANY (v_statuses)
          AND (p_staging_ids IS NULL OR s.staging_id = ANY (p_staging_ids))
          AND (p_batch_id IS NULL OR s.batch_id = p_batch_id)
          AND (p_error_code IS NULL OR s.error_code = p_error_code)
        FOR UPDATE
    ),
    upd AS (
        UPDATE financial_transactions_staging s
        SET processing_status = 'pending',
            next_attempt_at = now(),
            retry_count = 0,
            requeue_count = s.requeue_count + 1,
            ingestion_timestamp = s.ingestion_timestamp   -- the same value (see above)
        FROM target t
        WHERE s.staging_id = t.staging_id
          AND s.ingestion_timestamp = t.ingestion_timestamp
        RETURNING s.ingestion_minute, t.processing_status AS prev_status
    ),
    per_minute AS (
        SELECT u.ingestion_minute AS minute_bucket,
               count(*) AS pending_delta,
               -count(*) FILTER (WHERE u.prev_status = 'failed') AS failed_delta,
               -count(*) FILTER (WHERE u.prev_status = 'dead_letter') AS dead_letter_delta
        FROM upd u
        GROUP BY 1
    )
    SELECT (SELECT count(*) FROM upd), (SELECT jsonb_agg(to_jsonb(m)) FROM per_minute m)
    INTO v_count, v_deltas;

    PERFORM financial_rollup_apply(v_deltas);
    IF v_count > 0 THEN
        PERFORM pg_notify('opsconsole_staging', json_build_object('requeued', v_count)::text);
    END IF;
    PERFORM record_audit(
        'retry_failed',
        jsonb_build_object('staging_ids', to_jsonb(p_staging_ids), 'batch_id', p_batch_id,
                           'error_code', p_error_code, 'all', coalesce(p_all, false),
                           'include_dead_letter', coalesce(p_include_dead_letter, false)),
        jsonb_build_object('requeued', v_count),
        'ok',
        round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3),
        p_reason);
    RETURN v_count;
END;
$$;

------------------------------------------------------------------------------------------------------
-- Retention: drop whole days; keep what is still owed work
------------------------------------------------------------------------------------------------------
-- Same name, arguments and result as 0003. Each daily partition that ends before now - retention
-- (p_older_than, else staging_retention) is detached, its rows that must stay (pending, failed,
-- dead_letter: owed a retry or an operator's decision) are copied into the DEFAULT partition with
-- every column as it was, and the partition is dropped. processed and duplicate rows go with it: the
-- ledger keeps exactly-once, the rollups keep the monitor, ops_audit_log keeps the audit. The DEFAULT
-- partition (rows older than the partitions, the survivors) is purged the old way: processed and
-- duplicate rows older than the cutoff, at most p_limit per call. staging_rows_deleted counts both.
-- Rollups older than rollup_retention go too. Last, it creates the days ahead (ensure_staging_partitions).
-- Dropping a partition takes an ACCESS EXCLUSIVE lock on staging until commit: workers wait for the
-- few milliseconds of a detach, a survivors' copy and a drop, once a day.
CREATE OR REPLACE FUNCTION purge_financial_staging(
    p_older_than interval DEFAULT NULL,
    p_limit integer DEFAULT 100000
)
RETURNS TABLE(staging_rows_deleted bigint, rollup_rows_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    v_start    timestamptz := clock_timestamp();
    v_cfg      financial_pipeline_settings;
    v_cutoff   timestamptz;
    v_default  regclass;
    v_cols     text;
    v_part     record;
    v_rows     bigint;
    v_kept     bigint;
    v_n        bigint;
    v_dropped  text[] := ARRAY[]::text[];
    v_kept_all bigint := 0;
BEGIN
    SELECT * INTO v_cfg FROM financial_pipeline_settings;
    v_cutoff := now() - coalesce(p_older_than, v_cfg.staging_retention);
    staging_rows_deleted := 0;

    SELECT p.partition_name INTO v_default FROM financial_staging_partitions() p WHERE p.range_from IS NULL;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_cols
    FROM pg_attribute a
    WHERE a.attrelid = 'financial_transactions_staging'::regclass
      AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';

    FOR v_part IN
        SELECT p.partition_name, p.range_from FROM financial_staging_partitions() p
        WHERE p.range_to <= v_cutoff
        ORDER BY p.range_from
    LOOP
        IF cardinality(v_dropped) = 0 THEN
            -- DETACH needs it anyway; taken once, before the first, so that no chunk runs halfway
            LOCK TABLE financial_transactions_staging IN ACCESS EXCLUSIVE MODE;
        END IF;
        EXECUTE format('ALTER TABLE financial_transactions_staging DETACH PARTITION %s', v_part.partition_name);
        -- The day's range is no longer covered, so its survivors now belong to DEFAULT. Written into
        -- the partition directly: the arrival trigger (on the parent) does not count them again.
        EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM %s '
                       'WHERE processing_status IN (''pending'', ''failed'', ''dead_letter'')',
                       v_default, v_cols, v_cols, v_part.partition_name);
        GET DIAGNOSTICS v_kept = ROW_COUNT;
        EXECUTE format('SELECT count(*) FROM %s', v_part.partition_name) INTO v_rows;
        v_dropped := v_dropped || v_part.partition_name::text;   -- (its name: after the drop, an OID)
        EXECUTE format('DROP TABLE %s', v_part.partition_name);
        staging_rows_deleted := staging_rows_deleted + v_rows - v_kept;
        v_kept_all := v_kept_all + v_kept;
    END LOOP;

    -- DEFAULT: the done rows older than the cutoff, bounded
    EXECUTE format('DELETE FROM %1$s d WHERE d.staging_id IN ('
                   'SELECT t.staging_id FROM %1$s t WHERE t.processing_status IN (''processed'', ''duplicate'') '
                   'AND t.ingestion_timestamp < %2$L LIMIT %3$s) AND d.ingestion_timestamp < %2$L',
                   v_default, v_cutoff, p_limit);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    staging_rows_deleted := staging_rows_deleted + v_n;

    DELETE FROM financial_latency_rollup WHERE minute_bucket < now() - v_cfg.rollup_retention;
    DELETE FROM financial_processing_rollup WHERE minute_bucket < now() - v_cfg.rollup_retention;
    GET DIAGNOSTICS rollup_rows_deleted = ROW_COUNT;

    -- The days ahead, last: after a drop this session already holds staging exclusively; before one,
    -- an ATTACH (which locks DEFAULT) followed by the LOCK above could deadlock with a claiming worker.
    PERFORM ensure_staging_partitions();

    PERFORM record_audit(
        'purge_financial_staging',
        jsonb_build_object('older_than', coalesce(p_older_than, v_cfg.staging_retention)::text, 'limit', p_limit),
        jsonb_build_object('staging_rows_deleted', staging_rows_deleted, 'rollup_rows_deleted', rollup_rows_deleted,
                           'partitions_dropped', to_jsonb(v_dropped), 'rows_kept_in_default', v_kept_all,
                           'default_rows_deleted', v_n),
        'ok',
        round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3),
        NULL);
    RETURN NEXT;
END;
$$;

-- process_financial_batch_detail holds a variable of the staging row type: touching its definition
-- makes sessions that compiled it against the old table compile it again.
ALTER FUNCTION process_financial_batch_detail(integer, interval, text) SET search_path = pg_catalog, public;

ANALYZE financial_transactions_staging;

SELECT opsconsole_apply_grants();
