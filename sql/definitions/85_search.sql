-- 85_search.sql: Customer search: the two-stage search rows and the audited search_customers entry point.
--
-- Repeatable definitions: every function, view and trigger here is (re)created by CREATE OR REPLACE, and
-- the runner re-applies ALL files of sql/definitions/ in name order, in one transaction, after the
-- versioned migrations whenever any file's checksum changed. Each object has exactly one CREATE in the
-- tree: edit it here, never in a migration. A migration must not depend on an object created here.
--
-- Customer search in two stages (the first release's 0012), so a fragment that thousands of customers
-- share answers from a few index pages instead of scoring every match.
--
-- Why: 0004's search scored and sorted every row holding the fragment. A surname fragment shared by
-- ~3,200 of 1M customers meant ~1,800 heap pages per search (P5 p95 13x the unindexed ILIKE, target 50x).
-- A GiST trigram index with KNN ordering (<<->) was tried and rejected: on this data its inner-page
-- signatures prune badly (84-109 MB index, 13-190 ms per search, thousands of index pages read).
--
-- The ranking (also in docs/customer-search.md and the COMMENT below), best first:
--   tier 0  the customer whose id is the query (all digits), or whose uuid it is (then nothing else);
--   tier 1  name ('first last'), surname or email STARTS with the query (an exact name or email is such
--           a match and scores highest). Found through btree indexes in key order (C collation), at
--           most p_limit per field, so the first in alphabetical order when there are more;
--   tier 2  the query anywhere in the name or email, or in the phone digits for a phone-like query;
--           only when tiers 0-1 do not fill the page and hold no exact name/email. When more than
--           search_scan_cap(p_limit) rows hold it, the best of the first that many (storage order);
--   tier 3  near misses of the name by trigram similarity (typos), only when tiers 0-2 found nothing,
--           capped the same way.
-- Within a tier: score descending, then the lower customer_id. The score is 0004's, unchanged:
-- word_similarity against name and email (+1 exact name/email, +0.5 name/email prefix); for phones
-- 0.5 (1 when the digits are the whole number) + the share of the number the query covers.
-- What changed against 0004: a surname-prefix match now ranks above a row that only contains the
-- query (0004 ranked by score alone, so e.g. 'van smith' 1.0 came before 'smithers' 0.83 for 'smith');
-- an exact name/email no longer pads the page with rows containing it; near misses only when nothing
-- matches literally; and the caps (0004 scored every match however many there were).

-- The search itself (invoker rights; search_customers below wraps it and writes the audit row).
-- Static SQL with a generic plan, so a session plans it once.
-- Values are only ever parameters; LIKE wildcards in the query are escaped, so they match literally.
CREATE OR REPLACE FUNCTION customer_search_rows(p_query text, p_limit integer DEFAULT 20)
RETURNS TABLE(
    customer_id bigint,
    customer_uuid uuid,
    first_name varchar,
    last_name varchar,
    email varchar,
    phone varchar,
    match_kind text,
    score real,
    golden_customer_id bigint,
    total_orders bigint,
    total_lifetime_value numeric,
    value_segment text,
    activity_segment text
)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, public, pg_temp
-- Tier 2 reads at most a few hundred rows (LIMIT without ORDER BY), and the planner, assuming matches
-- spread evenly, would often pick a sequential scan that "stops early"; when the matches are rare or
-- clustered that reads the whole table. Every path of this search has an index, so seq scans are off.
SET enable_seqscan = off
-- Planning this statement costs more than running it (~4 ms against ~2-4 ms); every path is fixed by
-- the indexes above, so one generic plan per session serves every query.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_q       text := btrim(coalesce(p_query, ''));
    v_lower   text;
    v_upper   text;
    v_like    text;
    v_probe   text;
    v_prefix  text;
    v_digits  text;
    v_id      bigint;
    v_limit   integer := least(greatest(coalesce(p_limit, 20), 1), 1000);
    v_cap     integer;
BEGIN
    IF v_q = '' THEN
        RAISE EXCEPTION 'search_customers: the query is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF v_q ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' THEN
        RETURN QUERY
        SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone,
               'uuid'::text, 2::real, m.golden_customer_id, m.total_orders, m.total_lifetime_value,
               m.value_segment, m.activity_segment
        FROM crm_customers c
        LEFT JOIN customer_360_mv m ON m.customer_id = c.customer_id
        WHERE c.customer_uuid = v_q::uuid;
        RETURN;
    END IF;

    v_lower := lower(v_q);
    v_upper := search_prefix_upper_bound(v_lower);
    v_like := '%' || replace(replace(replace(v_lower, '\', '\\'), '%', '\%'), '_', '\_') || '%';
    v_prefix := substr(v_like, 2);  -- 'query%'
    -- What tier 2 asks the trigram index for: a run of 4+ digits in the query when there is one (ids in
    -- emails and names are their most distinctive part, while letters like 'user' or '.com' occur in
    -- nearly every row and make the GIN scan walk huge posting lists), else the whole query. Each
    -- row found is then checked for the whole query with strpos (literal, no pattern).
    v_probe := coalesce('%' || substring(v_lower FROM '[0-9]{4,}') || '%', v_like);
    v_cap := search_scan_cap(v_limit);
    IF v_q ~ '^[0-9]{1,18}$' THEN
        v_id := v_q::bigint;
    END IF;
    -- Phone fragments: a query made of digits and phone punctuation, with at least 3 digits.
    IF v_q ~ '^[0-9 +().-]+$' THEN
        v_digits := regexp_replace(v_q, '[^0-9]', '', 'g');
        IF length(v_digits) < 3 THEN
            v_digits := NULL;
        END IF;
    END IF;

    RETURN QUERY
    WITH by_id AS (
        SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
        FROM crm_customers c
        WHERE c.customer_id = v_id
    ),
    -- Tier 1: each field's first v_limit prefix matches in index order (an exact match sorts first).
    prefixed AS MATERIALIZED (
        SELECT DISTINCT ON (p.customer_id) p.*
        FROM ((SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
               FROM crm_customers c
               WHERE v_digits IS NULL AND v_upper IS NOT NULL
                 AND lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')) COLLATE "C" >= v_lower
                 AND lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')) COLLATE "C" < v_upper
               ORDER BY lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')) COLLATE "C",
                        c.customer_id
               LIMIT v_limit)
              UNION ALL
              (SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
               FROM crm_customers c
               WHERE v_digits IS NULL AND v_upper IS NOT NULL
                 AND lower(c.last_name) COLLATE "C" >= v_lower AND lower(c.last_name) COLLATE "C" < v_upper
               ORDER BY lower(c.last_name) COLLATE "C", c.customer_id
               LIMIT v_limit)
              UNION ALL
              (SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
               FROM crm_customers c
               WHERE v_digits IS NULL AND v_upper IS NOT NULL
                 AND lower(c.email) COLLATE "C" >= v_lower AND lower(c.email) COLLATE "C" < v_upper
               ORDER BY lower(c.email) COLLATE "C", c.customer_id
               LIMIT v_limit)) p
        WHERE NOT EXISTS (SELECT 1 FROM by_id b WHERE b.customer_id = p.customer_id)
        ORDER BY p.customer_id
    ),
    -- Tier 2: rows holding the query anywhere (trigram GIN indexes), read only when tiers 0-1 leave
    -- room on the page and at most v_cap of them: no ORDER BY here, so the scan stops early.
    contained AS MATERIALIZED (
        SELECT x.*
        FROM (SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
              FROM crm_customers c
              WHERE v_digits IS NULL
                AND (lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')) LIKE v_probe
                     OR lower(c.email) LIKE v_probe)
                AND (strpos(lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')), v_lower) > 0
                     OR strpos(lower(c.email), v_lower) > 0)
              UNION ALL
              -- The index is searched for the last 7 digits (the subscriber number: country and area
              -- codes are shared by many), the whole fragment is then checked on the row.
              SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
              FROM crm_customers c
              WHERE v_digits IS NOT NULL
                AND regexp_replace(c.phone, '[^0-9]', '', 'g') LIKE '%' || right(v_digits, 7) || '%'
                AND strpos(regexp_replace(c.phone, '[^0-9]', '', 'g'), v_digits) > 0) x
        WHERE (SELECT count(*) FROM by_id) + (SELECT count(*) FROM prefixed) < v_limit
          -- an exact name or email answers the query: no need to look further
          AND NOT EXISTS (SELECT 1 FROM prefixed p
                          WHERE lower(coalesce(p.first_name, '') || ' ' || coalesce(p.last_name, '')) = v_lower
                             OR lower(p.email) = v_lower)
          AND NOT EXISTS (SELECT 1 FROM by_id b WHERE b.customer_id = x.customer_id)
          AND NOT EXISTS (SELECT 1 FROM prefixed p WHERE p.customer_id = x.customer_id)
        LIMIT v_cap
    ),
    matched AS (
        SELECT b.*, 0 AS tier FROM by_id b
        UNION ALL
        SELECT p.*, 1 FROM prefixed p
        UNION ALL
        SELECT t.*, 2 FROM contained t
    ),
    scored AS (
        SELECT m.customer_id, m.customer_uuid, m.first_name, m.last_name, m.email, m.phone, m.tier,
               CASE WHEN m.tier = 0 THEN 'id'
                    WHEN v_digits IS NOT NULL THEN 'phone'
                    -- the field that holds the query; similarity only decides between two that both
                    -- do (or, in tier 1, neither: a prefix of 'first last' is always in the name)
                    WHEN strpos(f.email_l, v_lower) > 0 AND strpos(f.name_l, v_lower) = 0 THEN 'email'
                    WHEN strpos(f.name_l, v_lower) > 0 AND strpos(f.email_l, v_lower) = 0 THEN 'name'
                    WHEN f.ws_email > f.ws_name THEN 'email'
                    ELSE 'name' END AS match_kind,
               CASE WHEN m.tier = 0 THEN 2
                    WHEN v_digits IS NOT NULL THEN
                        (CASE WHEN f.phone_d = v_digits THEN 1.0 ELSE 0.5 END)
                        + length(v_digits)::real / greatest(length(f.phone_d), 1)
                    ELSE greatest(f.ws_name, f.ws_email)
                        + CASE WHEN f.name_l = v_lower OR f.email_l = v_lower THEN 1.0
                               WHEN f.name_l LIKE v_prefix OR f.email_l LIKE v_prefix THEN 0.5
                               ELSE 0 END
               END::real AS score
        FROM matched m
        CROSS JOIN LATERAL (
            SELECT n.name_l, n.email_l, regexp_replace(m.phone, '[^0-9]', '', 'g') AS phone_d,
                   word_similarity(v_lower, n.name_l) AS ws_name,
                   coalesce(word_similarity(v_lower, n.email_l), 0) AS ws_email
            FROM (SELECT lower(coalesce(m.first_name, '') || ' ' || coalesce(m.last_name, '')) AS name_l,
                         lower(m.email) AS email_l) n
        ) f
    ),
    -- Tier 3: near misses (typos) by trigram similarity of the name, only when nothing holds the
    -- query literally, and like tier 2 at most v_cap rows read: a typo of a common name has tens of
    -- thousands of similar candidates.
    near AS (
        SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone, 3 AS tier,
               'name'::text AS match_kind,
               word_similarity(
                   v_lower, lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')))::real
                   AS score
        FROM crm_customers c
        WHERE v_digits IS NULL
          AND NOT EXISTS (SELECT 1 FROM matched)
          AND lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')) % v_lower
        LIMIT v_cap
    ),
    page AS (
        SELECT * FROM (SELECT * FROM scored UNION ALL SELECT * FROM near) r
        ORDER BY r.tier, r.score DESC, r.customer_id
        LIMIT v_limit
    )
    SELECT r.customer_id, r.customer_uuid, r.first_name, r.last_name, r.email, r.phone,
           r.match_kind, r.score, m.golden_customer_id, m.total_orders, m.total_lifetime_value,
           m.value_segment, m.activity_segment
    FROM page r
    LEFT JOIN customer_360_mv m ON m.customer_id = r.customer_id
    ORDER BY r.tier, r.score DESC, r.customer_id;
END;
$fn$;
COMMENT ON FUNCTION customer_search_rows(text, integer) IS
    'Ranked customer search (invoker rights; search_customers audits it). Best first: tier 0 exact id or '
    'uuid; 1 name, surname or email starts with the query (btree, first p_limit per field in alphabetical '
    'order); 2 contains it in name, email or phone digits (trigram GIN; only if 0-1 leave room and hold no '
    'exact name/email; at most search_scan_cap(p_limit) rows read, in storage order); 3 trigram near '
    'misses of the name, only if 0-2 found nothing (same cap). Within a '
    'tier: score desc (word_similarity, +1 exact, +0.5 prefix; phones by share of the number), then id.';

CREATE OR REPLACE FUNCTION search_customers(p_query text, p_limit integer DEFAULT 20)
RETURNS TABLE(
    customer_id bigint,
    customer_uuid uuid,
    first_name varchar,
    last_name varchar,
    email varchar,
    phone varchar,
    match_kind text,
    score real,
    golden_customer_id bigint,
    total_orders bigint,
    total_lifetime_value numeric,
    value_segment text,
    activity_segment text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_start timestamptz := clock_timestamp();
    v_found integer;
BEGIN
    RETURN QUERY SELECT * FROM customer_search_rows(p_query, p_limit);
    GET DIAGNOSTICS v_found = ROW_COUNT;
    PERFORM record_audit('search_customers', jsonb_build_object('query', p_query, 'limit', p_limit),
                         jsonb_build_object('found', v_found), 'ok',
                         round((extract(epoch FROM clock_timestamp() - v_start) * 1000)::numeric, 3), NULL);
END;
$$;
COMMENT ON FUNCTION search_customers(text, integer) IS
    'Ranked customer search by name, email or phone fragment; exact lookups for an id or a uuid. '
    'Audited; ranking: see customer_search_rows and docs/customer-search.md.';


-- How many rows holding the query anywhere (tier 2) one search reads at most: enough to rank a
-- page well, few enough that a fragment shared by a large share of customers stays cheap.
CREATE OR REPLACE FUNCTION search_scan_cap(p_limit integer)
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT greatest(10 * p_limit, 200) $$;


-- The smallest string above every string that starts with p_prefix, in byte (C collation) order:
-- the last character's code point + 1 (UTF-8 byte order is code point order). So `k >= p AND k < it`
-- is "k starts with p" as a btree range that a cached, generic plan can use (LIKE 'p%' needs the
-- value at planning time). NULL when there is none (a non-ASCII query outside UTF-8, or nothing but
-- U+10FFFF): the caller then skips the prefix tier; tier 2 still finds those rows.
CREATE OR REPLACE FUNCTION search_prefix_upper_bound(p_prefix text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_rest text := p_prefix;
    v_cp   integer;
BEGIN
    WHILE v_rest <> '' LOOP
        v_cp := ascii(right(v_rest, 1));
        IF v_cp > 127 AND getdatabaseencoding() <> 'UTF8' THEN
            RETURN NULL;
        END IF;
        IF v_cp < 1114111 THEN
            -- skip the UTF-16 surrogates, which are no characters
            RETURN left(v_rest, -1) || chr(CASE WHEN v_cp + 1 = 55296 THEN 57344 ELSE v_cp + 1 END);
        END IF;
        v_rest := left(v_rest, -1);
    END LOOP;
    RETURN NULL;
END;
$$;
