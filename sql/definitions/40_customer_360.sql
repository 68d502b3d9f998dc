-- 40_customer_360.sql: Customer 360: the row definition, change capture, full and incremental refresh.
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.

-- Customer 360: one row per CRM customer, kept right by change capture and an incremental refresh.
--
-- The pieces:
--   customer_360_store          the maintained rows: facts that do not move with the clock, plus
--                               aggregates over the rolling one-year window (whose expiry is tracked)
--   customer_360_mv             the spec's name, now a view over the store; it adds every field that is
--                               relative to "today" (orders_30d/90d, activity_segment, day counts,
--                               data_staleness) at read time, so they are right on the day they are read
--   customer_360_rows(ids)      THE definition of a store row; the full and the incremental refresh (and
--                               the tests) all call it
--   customer_360_dirty          queue of dirty customer keys, written by statement-level triggers on the
--                               customer sources; customer_360_dirty_orders: order references of
--                               processed financial transactions
--   refresh_customer_360_incremental() / refresh_customer_360_full()
--   search_customers(query, limit)
--
-- Semantics (the spec left these open or got them wrong):
--   * Days are UTC calendar days (customer_360_today()), so every reader sees the same numbers whatever
--     its session TimeZone. Day differences are integer date arithmetic: customer_age_days is the number
--     of calendar days since the UTC date of crm created_at (0 on the day of sign-up).
--   * Orders: cancelled orders (status 'cancelled', any case) are left out of the order metrics; an order
--     with a NULL status counts (the spec's `status != 'cancelled'` silently dropped those).
--     orders_30d / orders_90d count orders dated on or after today - 30 / today - 90 (inclusive).
--   * activity_segment: 'No Orders' when the customer has no (non-cancelled) order, else by days since
--     the last order: <= 30 'Active', <= 90 'At Risk', <= 180 'Dormant', otherwise 'Churned'.
--   * Engagement and financial aggregates cover the rolling window of the last year: rows timed on or
--     after UTC midnight of (today - 1 year). When the oldest row in a customer's window leaves it, the
--     store row expires (window_expires_at) and the next incremental refresh recomputes it.
--   * Financial profile: a processed (is_processed = true) transaction belongs to the customer of the
--     ERP order it references: reference_order_id(reference_data) is erp_orders.order_id (the spec compared
--     it with order_number, which is a different identifier). The match is on the canonical order id
--     ({"order_id": "0042"} is order 42, as in the pipeline), which the partial expression index
--     financial_transactions_order_id_idx serves. Orders of any status
--     count here (a refund on a cancelled order is still money). One row per customer, however many
--     accounts paid; financial_account_ids lists them.
--   * MODE() ties: primary_currency, favorite_category and preferred_device pick the most frequent value;
--     a tie goes to the value used most recently, then to the first value in byte order (COLLATE "C").
--     preferred_device ignores events without a user agent (unknown is not a preference).
--   * Duplicates: records whose normalised email lower(btrim(email)) is equal (and not empty) are the
--     same person, whichever source_system they came from. The survivor is the lowest customer_id of the
--     group (the oldest id, and stable: it changes only if that record leaves the group).
--     golden_customer_id is the survivor's id on every row (its own id when unique); duplicate_of is
--     the survivor's id on the other rows and NULL on the survivor; duplicate_group_size counts the group.
--   * last_updated is when the refresh last recomputed the row (clock time); data_staleness is, at read
--     time, how long ago the newest source fact about the customer happened (profile update, web
--     activity, financial activity, as in the spec).
--   * Counts and sums are 0, never NULL, for a customer without orders, events or processed
--     transactions (transaction_count and total_transaction_amount included; avg_transaction_amount
--     stays NULL: there is no average of nothing).
--   * Freshness: a change to any source is queued by its writer's own transaction; the next
--     refresh_customer_360_incremental() (cron, the worker, or `opsconsole c360 refresh`) makes the row
--     right. Until then customer_360_mv shows the previous facts with refresh_pending = true; the fields
--     relative to today are right regardless. Write erp_orders through its parent table: the capture
--     triggers are statement triggers on the parent.

------------------------------------------------------------------------------------------------------
-- Clock helpers (one definition of "today" and of the rolling window)
------------------------------------------------------------------------------------------------------

-- Today as a UTC calendar date; the reference day of every day count and window.
CREATE OR REPLACE FUNCTION customer_360_today()
RETURNS date
LANGUAGE sql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT (now() AT TIME ZONE 'UTC')::date $$;


-- Start of the one-year window on day p_day: UTC midnight of p_day - 1 year.
CREATE OR REPLACE FUNCTION customer_360_window_start(p_day date)
RETURNS timestamptz
LANGUAGE sql
IMMUTABLE
STRICT
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT (p_day - interval '1 year') AT TIME ZONE 'UTC' $$;


-- The first UTC midnight at which a row timed p_ts is no longer inside the window, i.e. the first day d
-- with (d - 1 year) > the UTC date of p_ts. d = date + 1 year + 1 day, except when that lands on
-- 29 February, where d - 1 year falls back to the 28th and the row is still inside for one more day.
CREATE OR REPLACE FUNCTION customer_360_window_exit(p_ts timestamptz)
RETURNS timestamptz
LANGUAGE sql
IMMUTABLE
STRICT
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT (CASE WHEN (d.candidate - interval '1 year')::date > d.day THEN d.candidate
                 ELSE d.candidate + 1 END)::timestamp AT TIME ZONE 'UTC'
    FROM (SELECT (p_ts AT TIME ZONE 'UTC')::date AS day,
                 ((p_ts AT TIME ZONE 'UTC')::date + interval '1 year')::date + 1 AS candidate) d
$$;


------------------------------------------------------------------------------------------------------
-- Transactions by the order they reference
------------------------------------------------------------------------------------------------------
-- This index lives here, not in a migration, because it is an index on reference_order_id()
-- (10_platform.sql), which a migration must not depend on; IF NOT EXISTS makes it a one-time build.
-- It replaced the index on the raw text (dropped by 0014), which read "0042" and "42" as two orders.
CREATE INDEX IF NOT EXISTS financial_transactions_order_id_idx
    ON financial_transactions (reference_order_id(reference_data))
    WHERE reference_data ? 'order_id';

------------------------------------------------------------------------------------------------------
-- The one definition of a row
------------------------------------------------------------------------------------------------------

-- The customer-360 rows of the CRM customers in p_ids (all customers when p_ids is NULL), as the store
-- holds them. STABLE, so inside the refresh statement it reads that statement's snapshot. Dynamic SQL
-- only so that each call is planned with its actual key array (index probes for a few keys, hash joins
-- for all); the text is constant and the values travel as parameters.
CREATE OR REPLACE FUNCTION customer_360_rows(p_ids bigint[])
RETURNS SETOF customer_360_store
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
AS $fn$
DECLARE
    v_today date := customer_360_today();
BEGIN
    RETURN QUERY EXECUTE $q$
    WITH base AS MATERIALIZED (
        SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone,
               c.source_system, c.created_at, c.updated_at,
               nullif(lower(btrim(c.email)), '') AS email_norm
        FROM crm_customers c
        WHERE $1 IS NULL OR c.customer_id = ANY ($1)
    ),
    dup AS (
        SELECT lower(btrim(p.email)) AS email_norm, min(p.customer_id) AS golden_id, count(*) AS group_size
        FROM crm_customers p
        WHERE lower(btrim(p.email)) IN (SELECT b.email_norm FROM base b)
        GROUP BY 1
    ),
    -- Every order of these customers, read once: the order metrics use the non-cancelled ones, the
    -- financial profile all of them.
    cust_orders AS MATERIALIZED (
        SELECT o.order_id, o.customer_id, o.order_date, o.total_amount, o.currency_code,
               lower(coalesce(o.status, '')) = 'cancelled' AS cancelled
        FROM erp_orders o
        WHERE ($1 IS NULL OR o.customer_id = ANY ($1))
          AND o.customer_id IS NOT NULL
    ),
    orders AS (
        SELECT co.customer_id, co.order_date, co.total_amount, co.currency_code
        FROM cust_orders co
        WHERE NOT co.cancelled
    ),
    order_facts AS (
        SELECT o.customer_id,
               count(*) AS total_orders,
               sum(o.total_amount) AS total_lifetime_value,
               min(o.order_date) AS first_order_date,
               max(o.order_date) AS last_order_date,
               avg(o.total_amount) AS avg_order_value,
               count(DISTINCT o.currency_code) AS currencies_used,
               array_agg(o.order_date ORDER BY o.order_date) FILTER (WHERE o.order_date >= $2 - 90)
                   AS recent_order_dates
        FROM orders o
        GROUP BY o.customer_id
    ),
    currency_pick AS (
        SELECT DISTINCT ON (x.customer_id) x.customer_id, x.currency_code::text AS primary_currency
        FROM (SELECT o.customer_id, o.currency_code, count(*) AS n, max(o.order_date) AS latest
              FROM orders o WHERE o.currency_code IS NOT NULL GROUP BY 1, 2) x
        ORDER BY x.customer_id, x.n DESC, x.latest DESC, x.currency_code COLLATE "C"
    ),
    events AS MATERIALIZED (
        SELECT e.customer_id, e.session_id, e.event_timestamp, e.event_type,
               nullif(e.event_data->>'category', '') AS category,
               CASE WHEN e.user_agent IS NULL THEN NULL
                    WHEN e.user_agent ILIKE '%mobile%' THEN 'mobile'
                    WHEN e.user_agent ILIKE '%tablet%' THEN 'tablet'
                    ELSE 'desktop' END AS device
        FROM ecommerce_events e
        WHERE ($1 IS NULL OR e.customer_id = ANY ($1))
          AND e.customer_id IS NOT NULL
          AND e.event_timestamp >= $3
    ),
    event_facts AS (
        SELECT e.customer_id,
               count(*) AS total_events,
               count(DISTINCT e.session_id) AS total_sessions,
               count(DISTINCT (e.event_timestamp AT TIME ZONE 'UTC')::date) AS active_days,
               max(e.event_timestamp) AS last_activity,
               min(e.event_timestamp) AS oldest_in_window,
               count(*) FILTER (WHERE e.event_type = 'page_view') AS page_views,
               count(*) FILTER (WHERE e.event_type = 'product_view') AS product_views,
               count(*) FILTER (WHERE e.event_type = 'add_to_cart') AS cart_additions,
               count(*) FILTER (WHERE e.event_type = 'purchase') AS online_purchases
        FROM events e
        GROUP BY e.customer_id
    ),
    category_pick AS (
        SELECT DISTINCT ON (x.customer_id) x.customer_id, x.category
        FROM (SELECT e.customer_id, e.category, count(*) AS n, max(e.event_timestamp) AS latest
              FROM events e WHERE e.category IS NOT NULL GROUP BY 1, 2) x
        ORDER BY x.customer_id, x.n DESC, x.latest DESC, x.category COLLATE "C"
    ),
    device_pick AS (
        SELECT DISTINCT ON (x.customer_id) x.customer_id, x.device
        FROM (SELECT e.customer_id, e.device, count(*) AS n, max(e.event_timestamp) AS latest
              FROM events e WHERE e.device IS NOT NULL GROUP BY 1, 2) x
        ORDER BY x.customer_id, x.n DESC, x.latest DESC, x.device COLLATE "C"
    ),
    -- For a few customers, look their orders' references up in financial_transactions_order_id_idx
    -- (the array condition); for all customers the condition folds away and a hash join runs.
    fin AS MATERIALIZED (
        SELECT co.customer_id, ft.account_id, ft.amount, ft.transaction_type, ft.transaction_timestamp
        FROM financial_transactions ft
        JOIN cust_orders co ON reference_order_id(ft.reference_data) = co.order_id
        WHERE ft.reference_data ? 'order_id'
          AND ($1 IS NULL
               OR reference_order_id(ft.reference_data) = ANY (ARRAY(SELECT c2.order_id FROM cust_orders c2)))
          AND ft.is_processed
          AND ft.transaction_timestamp >= $3
    ),
    fin_facts AS (
        SELECT f.customer_id,
               count(*) AS transaction_count,
               sum(f.amount) AS total_transaction_amount,
               avg(f.amount) AS avg_transaction_amount,
               max(f.transaction_timestamp) AS last_financial_activity,
               min(f.transaction_timestamp) AS oldest_in_window,
               count(*) FILTER (WHERE f.transaction_type = 'payment') AS payment_count,
               count(*) FILTER (WHERE f.transaction_type = 'refund') AS refund_count,
               (count(*) FILTER (WHERE f.amount < 0))::float8 / count(*) AS risk_indicator,
               array_agg(DISTINCT f.account_id ORDER BY f.account_id) FILTER (WHERE f.account_id IS NOT NULL)
                   AS financial_account_ids
        FROM fin f
        GROUP BY f.customer_id
    ),
    joined AS (
        SELECT b.*,
               d.golden_id, d.group_size,
               coalesce(ofa.total_orders, 0) AS total_orders,
               coalesce(ofa.total_lifetime_value, 0) AS total_lifetime_value,
               ofa.first_order_date, ofa.last_order_date,
               coalesce(ofa.avg_order_value, 0) AS avg_order_value,
               cp.primary_currency,
               coalesce(ofa.currencies_used, 0) AS currencies_used,
               coalesce(ofa.recent_order_dates, '{}') AS recent_order_dates,
               coalesce(ef.total_events, 0) AS total_events,
               coalesce(ef.total_sessions, 0) AS total_sessions,
               coalesce(ef.active_days, 0) AS active_days,
               ef.last_activity,
               coalesce(ef.page_views, 0) AS page_views,
               coalesce(ef.product_views, 0) AS product_views,
               coalesce(ef.cart_additions, 0) AS cart_additions,
               coalesce(ef.online_purchases, 0) AS online_purchases,
               catp.category AS favorite_category,
               dp.device AS preferred_device,
               coalesce(ef.total_events * 1.0 + ef.total_sessions * 2.0 + ef.online_purchases * 10.0, 0)
                   AS engagement_score,
               coalesce(ff.transaction_count, 0) AS transaction_count,
               coalesce(ff.total_transaction_amount, 0) AS total_transaction_amount,
               ff.avg_transaction_amount,
               ff.last_financial_activity,
               coalesce(ff.payment_count, 0) AS payment_count,
               coalesce(ff.refund_count, 0) AS refund_count,
               coalesce(ff.risk_indicator, 0) AS risk_indicator,
               coalesce(ff.financial_account_ids, '{}') AS financial_account_ids,
               least(ef.oldest_in_window, ff.oldest_in_window) AS oldest_in_window
        FROM base b
        LEFT JOIN dup d ON d.email_norm = b.email_norm
        LEFT JOIN order_facts ofa ON ofa.customer_id = b.customer_id
        LEFT JOIN currency_pick cp ON cp.customer_id = b.customer_id
        LEFT JOIN event_facts ef ON ef.customer_id = b.customer_id
        LEFT JOIN category_pick catp ON catp.customer_id = b.customer_id
        LEFT JOIN device_pick dp ON dp.customer_id = b.customer_id
        LEFT JOIN fin_facts ff ON ff.customer_id = b.customer_id
    )
    SELECT j.customer_id, j.customer_uuid, j.first_name, j.last_name, j.email, j.phone, j.source_system,
           j.created_at, j.updated_at,
           j.email_norm,
           coalesce(j.golden_id, j.customer_id),
           CASE WHEN j.golden_id <> j.customer_id THEN j.golden_id END,
           coalesce(j.group_size, 1)::integer,
           j.total_orders, j.total_lifetime_value, j.first_order_date, j.last_order_date, j.avg_order_value,
           j.primary_currency, j.currencies_used, j.recent_order_dates,
           j.total_events, j.total_sessions, j.active_days, j.last_activity,
           j.page_views, j.product_views, j.cart_additions, j.online_purchases,
           j.favorite_category, j.preferred_device, j.engagement_score,
           j.transaction_count, j.total_transaction_amount, j.avg_transaction_amount,
           j.last_financial_activity, j.payment_count, j.refund_count, j.risk_indicator,
           j.financial_account_ids,
           CASE WHEN j.total_lifetime_value >= 10000 THEN 'VIP'
                WHEN j.total_lifetime_value >= 5000 THEN 'High Value'
                WHEN j.total_lifetime_value >= 1000 THEN 'Medium Value'
                WHEN j.total_lifetime_value > 0 THEN 'Low Value'
                ELSE 'Prospect' END,
           CASE WHEN j.engagement_score >= 1000 THEN 'High Engagement'
                WHEN j.engagement_score >= 500 THEN 'Medium Engagement'
                WHEN j.engagement_score >= 100 THEN 'Low Engagement'
                ELSE 'No Engagement' END,
           customer_360_window_exit(j.oldest_in_window),
           $4
    FROM joined j
    $q$
    USING p_ids, v_today, customer_360_window_start(v_today), clock_timestamp();
END;
$fn$;
COMMENT ON FUNCTION customer_360_rows(bigint[]) IS
    'The one definition of a customer-360 store row, for the given customer ids (NULL: all).';


------------------------------------------------------------------------------------------------------
-- What people query: the store plus the fields relative to today, computed at read time
------------------------------------------------------------------------------------------------------
CREATE OR REPLACE VIEW customer_360_mv AS
SELECT s.customer_id,
       s.customer_uuid,
       s.first_name,
       s.last_name,
       s.email,
       s.customer_since,
       s.last_profile_update,
       s.total_orders,
       s.total_lifetime_value,
       s.first_order_date,
       s.last_order_date,
       s.avg_order_value,
       s.primary_currency,
       (SELECT count(*) FROM unnest(s.recent_order_dates) AS d(day) WHERE d.day >= t.today - 30)
           AS orders_30d,
       (SELECT count(*) FROM unnest(s.recent_order_dates) AS d(day) WHERE d.day >= t.today - 90)
           AS orders_90d,
       s.total_events,
       s.total_sessions,
       s.active_days,
       s.last_activity,
       s.favorite_category,
       s.preferred_device,
       s.engagement_score,
       s.transaction_count,
       s.total_transaction_amount,
       s.last_financial_activity,
       s.risk_indicator,
       s.value_segment,
       CASE WHEN s.last_order_date IS NULL THEN 'No Orders'
            WHEN t.today - s.last_order_date <= 30 THEN 'Active'
            WHEN t.today - s.last_order_date <= 90 THEN 'At Risk'
            WHEN t.today - s.last_order_date <= 180 THEN 'Dormant'
            ELSE 'Churned' END AS activity_segment,
       s.engagement_segment,
       t.today - (s.customer_since AT TIME ZONE 'UTC')::date AS customer_age_days,
       t.today - s.last_order_date AS days_since_last_order,
       s.last_updated,
       now() - greatest(s.last_profile_update, s.last_activity, s.last_financial_activity, s.customer_since)
           AS data_staleness,
       -- beyond the spec's columns
       s.phone,
       s.source_system,
       s.currencies_used,
       s.page_views,
       s.product_views,
       s.cart_additions,
       s.online_purchases,
       s.avg_transaction_amount,
       s.payment_count,
       s.refund_count,
       s.financial_account_ids,
       s.email_norm,
       s.golden_customer_id,
       s.duplicate_of,
       s.duplicate_of IS NOT NULL AS is_duplicate,
       s.duplicate_group_size,
       EXISTS (SELECT 1 FROM customer_360_dirty q WHERE q.customer_id = s.customer_id) AS refresh_pending
FROM customer_360_store s
CROSS JOIN (SELECT customer_360_today() AS today) t;
COMMENT ON VIEW customer_360_mv IS
    'Customer 360, one row per CRM customer: the maintained store plus the fields relative to today.';


------------------------------------------------------------------------------------------------------
-- Change capture triggers: statement-level with transition tables, so a bulk load costs one
-- INSERT ... SELECT into the queue per statement, not one per row. Write through the parent of
-- erp_orders: direct DML on a partition does not fire the parent's statement triggers.
-- The trigger functions run as their owner: a role allowed to write a source needs no grant on the
-- queue (and cannot write the queue any other way).
------------------------------------------------------------------------------------------------------

-- Every capture writes the queue through shard_local (10_platform.sql): the queue itself on one
-- server and on a Citus coordinator, the queue's co-located shard when Citus runs the trigger on a
-- shard of a distributed source. The source's logical name is the trigger's argument (TG_TABLE_NAME is the shard's name
-- there). The keys are first collected into arrays: a transition table cannot be read by a statement
-- Citus plans itself.

-- CRM: the customer itself; on update and delete also the old normalised email, whose group may have
-- lost this member (the new email's group is found from the customer's current row when drained).
CREATE OR REPLACE FUNCTION customer_360_capture_crm()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_ids    bigint[];
    v_emails text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT n.customer_id), NULL INTO v_ids, v_emails FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(x.customer_id), array_agg(x.email_norm) INTO v_ids, v_emails
        FROM (SELECT DISTINCT o.customer_id, nullif(lower(btrim(o.email)), '') AS email_norm FROM old_rows o
              UNION ALL
              SELECT DISTINCT n.customer_id, NULL FROM new_rows n
              WHERE NOT EXISTS (SELECT 1 FROM old_rows o WHERE o.customer_id = n.customer_id)) x;
    ELSE
        SELECT array_agg(x.customer_id), array_agg(x.email_norm) INTO v_ids, v_emails
        FROM (SELECT DISTINCT o.customer_id, nullif(lower(btrim(o.email)), '') AS email_norm FROM old_rows o) x;
    END IF;
    IF v_ids IS NOT NULL THEN
        EXECUTE format('INSERT INTO %s (customer_id, email_norm, source) '
                       'SELECT u.id, u.email_norm, %L FROM unnest($1, $2) AS u(id, email_norm)',
                       shard_local('customer_360_dirty', v_ids[1]), 'crm')
            USING v_ids, coalesce(v_emails, array_fill(NULL::text, ARRAY[cardinality(v_ids)]));
    END IF;
    RETURN NULL;
END;
$$;


-- ERP orders and e-commerce events: the customer of every old and new row. Late events are caught
-- like any other: capture keys on the write, not on event time.
CREATE OR REPLACE FUNCTION customer_360_capture_customer_rows()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_ids bigint[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT n.customer_id) INTO v_ids FROM new_rows n WHERE n.customer_id IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(x.customer_id) INTO v_ids
        FROM (SELECT o.customer_id FROM old_rows o UNION SELECT n.customer_id FROM new_rows n) x
        WHERE x.customer_id IS NOT NULL;
    ELSE
        SELECT array_agg(DISTINCT o.customer_id) INTO v_ids FROM old_rows o WHERE o.customer_id IS NOT NULL;
    END IF;
    IF v_ids IS NOT NULL THEN
        EXECUTE format('INSERT INTO %s (customer_id, source) SELECT u.id, %L FROM unnest($1) AS u(id)',
                       shard_local('customer_360_dirty', v_ids[1]), TG_ARGV[0])
            USING v_ids;
    END IF;
    RETURN NULL;
END;
$$;


-- Financial transactions: the referenced order of every processed old and new row, into the order
-- queue. The order is resolved to its customer when the queue is drained, so a transaction that
-- commits before its order does is not lost: the order's own insert dirties the customer later.
-- An entry carries the account of its transaction: on Citus financial_transactions and the queue are
-- distributed by account_id and co-located, so the trigger (run per shard) writes the queue's shard
-- on its own node (shard_local), as the CRM capture does; an order id alone could not place it.
-- TRUNCATE has no transition table, so it is captured BEFORE the rows go: the orders of the
-- processed rows of the table (on Citus, of the shard) are queued.
CREATE OR REPLACE FUNCTION customer_360_capture_financial()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_acc    bigint[];
    v_orders bigint[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('INSERT INTO %s (account_id, order_id, source) '
                       'SELECT min(f.account_id), reference_order_id(f.reference_data), %L FROM %s f '
                       'WHERE f.is_processed AND reference_order_id(f.reference_data) IS NOT NULL '
                       'GROUP BY 2',
                       shard_local_to('customer_360_dirty_orders', TG_RELID),
                       'truncate financial_transactions', TG_RELID::regclass);
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT array_agg(x.account_id), array_agg(x.order_id) INTO v_acc, v_orders
        FROM (SELECT DISTINCT n.account_id, reference_order_id(n.reference_data) AS order_id
              FROM new_rows n WHERE n.is_processed) x
        WHERE x.order_id IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(x.account_id), array_agg(x.order_id) INTO v_acc, v_orders
        FROM (SELECT o.account_id, reference_order_id(o.reference_data) AS order_id
              FROM old_rows o WHERE o.is_processed
              UNION
              SELECT n.account_id, reference_order_id(n.reference_data)
              FROM new_rows n WHERE n.is_processed) x
        WHERE x.order_id IS NOT NULL;
    ELSE
        SELECT array_agg(x.account_id), array_agg(x.order_id) INTO v_acc, v_orders
        FROM (SELECT DISTINCT o.account_id, reference_order_id(o.reference_data) AS order_id
              FROM old_rows o WHERE o.is_processed) x
        WHERE x.order_id IS NOT NULL;
    END IF;
    IF v_acc IS NOT NULL THEN
        EXECUTE format('INSERT INTO %s (account_id, order_id, source) '
                       'SELECT u.account_id, u.order_id, %L FROM unnest($1, $2) AS u(account_id, order_id)',
                       shard_local('customer_360_dirty_orders', v_acc[1]), 'financial_transactions')
            USING v_acc, v_orders;
    END IF;
    RETURN NULL;
END;
$$;


-- TRUNCATE has no transition table: every stored customer becomes dirty (rows of customers that are
-- gone are then removed; the rest are recomputed).
CREATE OR REPLACE FUNCTION customer_360_capture_truncate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    -- On Citus, TRUNCATE of a distributed source fires per shard: that shard's stored customers.
    EXECUTE format('INSERT INTO %s (customer_id, source) SELECT s.customer_id, %L FROM %s s',
                   shard_local_to('customer_360_dirty', TG_RELID), 'truncate ' || TG_ARGV[0],
                   shard_local_to('customer_360_store', TG_RELID));
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER customer_360_capture_ins AFTER INSERT ON crm_customers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_crm('crm_customers');

CREATE OR REPLACE TRIGGER customer_360_capture_upd AFTER UPDATE ON crm_customers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_crm('crm_customers');

CREATE OR REPLACE TRIGGER customer_360_capture_del AFTER DELETE ON crm_customers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_crm('crm_customers');

CREATE OR REPLACE TRIGGER customer_360_capture_trunc AFTER TRUNCATE ON crm_customers
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_truncate('crm_customers');

CREATE OR REPLACE TRIGGER customer_360_capture_ins AFTER INSERT ON erp_orders
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_customer_rows('erp_orders');

CREATE OR REPLACE TRIGGER customer_360_capture_upd AFTER UPDATE ON erp_orders
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_customer_rows('erp_orders');

CREATE OR REPLACE TRIGGER customer_360_capture_del AFTER DELETE ON erp_orders
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_customer_rows('erp_orders');

CREATE OR REPLACE TRIGGER customer_360_capture_trunc AFTER TRUNCATE ON erp_orders
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_truncate('erp_orders');

CREATE OR REPLACE TRIGGER customer_360_capture_ins AFTER INSERT ON ecommerce_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_customer_rows('ecommerce_events');

CREATE OR REPLACE TRIGGER customer_360_capture_upd AFTER UPDATE ON ecommerce_events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_customer_rows('ecommerce_events');

CREATE OR REPLACE TRIGGER customer_360_capture_del AFTER DELETE ON ecommerce_events
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_customer_rows('ecommerce_events');

CREATE OR REPLACE TRIGGER customer_360_capture_trunc AFTER TRUNCATE ON ecommerce_events
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_truncate('ecommerce_events');

CREATE OR REPLACE TRIGGER customer_360_capture_ins AFTER INSERT ON financial_transactions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_financial();

CREATE OR REPLACE TRIGGER customer_360_capture_upd AFTER UPDATE ON financial_transactions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_financial();

CREATE OR REPLACE TRIGGER customer_360_capture_del AFTER DELETE ON financial_transactions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_financial();

CREATE OR REPLACE TRIGGER customer_360_capture_trunc BEFORE TRUNCATE ON financial_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION customer_360_capture_financial();


-- Both refreshes, one statement: drain the queue, expand the keys, recompute them with
-- customer_360_rows, upsert, and remove rows of customers that are gone. Being one statement, the drain
-- and the recompute see one snapshot: every change the recompute sees either had its queue entry
-- drained now or was already in the store; entries committed later stay queued. Refreshes are
-- serialised by an advisory lock so that an older snapshot never overwrites a newer one.
-- Keys of an incremental run: the drained customers; the customers of drained order references;
-- stored rows whose window expired; and every customer sharing a normalised email with any of those
-- (current email) or named by a drained email (the group a customer left).
-- rows_processed = rows upserted + rows deleted.
CREATE OR REPLACE FUNCTION customer_360_apply(
    p_full boolean,
    OUT rows_processed integer,
    OUT refresh_duration interval,
    OUT rows_upserted integer,
    OUT rows_deleted integer,
    OUT queue_entries integer
)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_started timestamptz := clock_timestamp();
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'customer 360 refresh must run at READ COMMITTED, not %',
            current_setting('transaction_isolation')
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'Its snapshot must be taken after the refresh lock is granted.';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('opsconsole.customer_360_refresh'));

    WITH drained AS (
        DELETE FROM customer_360_dirty RETURNING customer_id, email_norm
    ),
    drained_orders AS (
        DELETE FROM customer_360_dirty_orders RETURNING order_id
    ),
    touched AS (
        SELECT d.customer_id FROM drained d
        UNION
        -- an order reference names its customer through the order itself (erp_orders' key starts
        -- with order_id); on Citus the orders are distributed by customer_id and the key table is
        -- not co-located with them, so it is not joined here
        SELECT o.customer_id
        FROM erp_orders o
        WHERE o.order_id IN (SELECT d.order_id FROM drained_orders d)
        UNION
        SELECT s.customer_id FROM customer_360_store s WHERE s.window_expires_at <= v_started
    ),
    emails AS (
        SELECT d.email_norm FROM drained d WHERE d.email_norm IS NOT NULL
        UNION
        SELECT lower(btrim(c.email)) FROM crm_customers c
        WHERE c.customer_id IN (SELECT t.customer_id FROM touched t)
    ),
    -- A full run recomputes everyone (customer_360_rows(NULL)); its keys are then only the stored
    -- rows, to find those whose customer is gone.
    keys AS (
        SELECT t.customer_id FROM touched t WHERE NOT p_full
        UNION
        SELECT c.customer_id FROM crm_customers c
        WHERE NOT p_full   -- an array, so that crm_customers_email_norm_idx is probed, not scanned
          AND lower(btrim(c.email)) = ANY (ARRAY(SELECT e.email_norm FROM emails e WHERE e.email_norm <> ''))
        UNION
        SELECT s.customer_id FROM customer_360_store s WHERE p_full
    ),
    fresh AS (
        SELECT * FROM customer_360_rows(
            CASE WHEN p_full THEN NULL ELSE ARRAY(SELECT k.customer_id FROM keys k) END)
    ),
    upserted AS (
        INSERT INTO customer_360_store SELECT * FROM fresh
        ON CONFLICT (customer_id) DO UPDATE SET (
            customer_uuid, first_name, last_name, email, phone, source_system, customer_since,
            last_profile_update, email_norm, golden_customer_id, duplicate_of, duplicate_group_size,
            total_orders, total_lifetime_value, first_order_date, last_order_date, avg_order_value,
            primary_currency, currencies_used, recent_order_dates, total_events, total_sessions,
            active_days, last_activity, page_views, product_views, cart_additions, online_purchases,
            favorite_category, preferred_device, engagement_score, transaction_count,
            total_transaction_amount, avg_transaction_amount, last_financial_activity, payment_count,
            refund_count, risk_indicator, financial_account_ids, value_segment, engagement_segment,
            window_expires_at, last_updated
        ) = ROW(
            EXCLUDED.customer_uuid, EXCLUDED.first_name, EXCLUDED.last_name, EXCLUDED.email,
            EXCLUDED.phone, EXCLUDED.source_system, EXCLUDED.customer_since,
            EXCLUDED.last_profile_update, EXCLUDED.email_norm, EXCLUDED.golden_customer_id,
            EXCLUDED.duplicate_of, EXCLUDED.duplicate_group_size, EXCLUDED.total_orders,
            EXCLUDED.total_lifetime_value, EXCLUDED.first_order_date, EXCLUDED.last_order_date,
            EXCLUDED.avg_order_value, EXCLUDED.primary_currency, EXCLUDED.currencies_used,
            EXCLUDED.recent_order_dates, EXCLUDED.total_events, EXCLUDED.total_sessions,
            EXCLUDED.active_days, EXCLUDED.last_activity, EXCLUDED.page_views, EXCLUDED.product_views,
            EXCLUDED.cart_additions, EXCLUDED.online_purchases, EXCLUDED.favorite_category,
            EXCLUDED.preferred_device, EXCLUDED.engagement_score, EXCLUDED.transaction_count,
            EXCLUDED.total_transaction_amount, EXCLUDED.avg_transaction_amount,
            EXCLUDED.last_financial_activity, EXCLUDED.payment_count, EXCLUDED.refund_count,
            EXCLUDED.risk_indicator, EXCLUDED.financial_account_ids, EXCLUDED.value_segment,
            EXCLUDED.engagement_segment, EXCLUDED.window_expires_at, EXCLUDED.last_updated
        )
        RETURNING 1
    ),
    removed AS (
        DELETE FROM customer_360_store s
        WHERE s.customer_id IN (SELECT k.customer_id FROM keys k)
          AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.customer_id = s.customer_id)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM drained) + (SELECT count(*) FROM drained_orders), (SELECT count(*) FROM upserted), (SELECT count(*) FROM removed)
    INTO queue_entries, rows_upserted, rows_deleted;

    rows_processed := rows_upserted + rows_deleted;
    refresh_duration := clock_timestamp() - v_started;

    DELETE FROM customer_360_refresh_log WHERE started_at < v_started - interval '30 days';
    INSERT INTO customer_360_refresh_log
        (mode, started_at, finished_at, queue_entries, rows_upserted, rows_deleted, refresh_duration)
    VALUES (CASE WHEN p_full THEN 'full' ELSE 'incremental' END, v_started, v_started + refresh_duration,
            queue_entries, rows_upserted, rows_deleted, refresh_duration);

    -- Listeners hear about runs that changed something (delivered on commit); an idle cron tick is quiet.
    IF p_full OR rows_processed > 0 THEN
        PERFORM pg_notify('opsconsole_c360', json_build_object(
            'mode', CASE WHEN p_full THEN 'full' ELSE 'incremental' END,
            'rows_processed', rows_processed,
            'rows_upserted', rows_upserted,
            'rows_deleted', rows_deleted,
            'duration_ms', round(extract(epoch FROM refresh_duration) * 1000, 3))::text);
    END IF;
END;
$$;


-- The spec's entry point (names and result columns kept; the extra columns come after them).
CREATE OR REPLACE FUNCTION refresh_customer_360_incremental()
RETURNS TABLE(rows_processed integer, refresh_duration interval, rows_upserted integer,
              rows_deleted integer, queue_entries integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    SELECT a.rows_processed, a.refresh_duration, a.rows_upserted, a.rows_deleted, a.queue_entries
    INTO rows_processed, refresh_duration, rows_upserted, rows_deleted, queue_entries
    FROM customer_360_apply(false) a;
    PERFORM record_audit(
        'refresh_customer_360_incremental', '{}'::jsonb,
        jsonb_build_object('rows_processed', rows_processed, 'rows_upserted', rows_upserted,
                           'rows_deleted', rows_deleted, 'queue_entries', queue_entries),
        'ok', round((extract(epoch FROM refresh_duration) * 1000)::numeric, 3), NULL);
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION refresh_customer_360_incremental() IS
    'Recompute the customers dirtied since the last run (queue drained atomically); returns real counts.';

CREATE OR REPLACE FUNCTION refresh_customer_360_full()
RETURNS TABLE(rows_processed integer, refresh_duration interval, rows_upserted integer,
              rows_deleted integer, queue_entries integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    SELECT a.rows_processed, a.refresh_duration, a.rows_upserted, a.rows_deleted, a.queue_entries
    INTO rows_processed, refresh_duration, rows_upserted, rows_deleted, queue_entries
    FROM customer_360_apply(true) a;
    PERFORM record_audit(
        'refresh_customer_360_full', '{}'::jsonb,
        jsonb_build_object('rows_processed', rows_processed, 'rows_upserted', rows_upserted,
                           'rows_deleted', rows_deleted, 'queue_entries', queue_entries),
        'ok', round((extract(epoch FROM refresh_duration) * 1000)::numeric, 3), NULL);
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION refresh_customer_360_full() IS
    'Recompute every customer-360 row from the sources (and clear the queue).';
