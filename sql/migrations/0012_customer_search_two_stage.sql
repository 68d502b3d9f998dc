-- 0012 customer search in two stages, so a fragment that thousands of customers share answers from a
-- few index pages instead of scoring every match.
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
--           only when tiers 0-1 do not fill the page. When more than search_scan_cap(p_limit) rows
--           hold it, the best of the first that many (in storage order) are ranked;
--   tier 3  near misses of the name by trigram similarity (typos), only when tiers 0-2 do not fill it.
-- Within a tier: score descending, then the lower customer_id. The score is 0004's, unchanged:
-- word_similarity against name and email (+1 exact name/email, +0.5 name/email prefix); for phones
-- 0.5 (1 when the digits are the whole number) + the share of the number the query covers.
-- What changed against 0004: a surname-prefix match now ranks above a row that only contains the
-- query (0004 ranked by score alone, so e.g. 'van smith' 1.0 came before 'smithers' 0.83 for 'smith');
-- and the capped tier 2 (0004 scored every match however many there were).

-- Prefix lookups in byte order: the C collation makes `LIKE 'abc%'` a btree range scan whatever the
-- database collation, and customer_id in the key gives the tie order without a sort. The expressions
-- must stay identical to those in customer_search_rows for the planner to use them.
CREATE INDEX crm_customers_name_prefix_idx ON crm_customers
    ((lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '')) COLLATE "C"), customer_id);
CREATE INDEX crm_customers_last_name_prefix_idx ON crm_customers
    ((lower(last_name) COLLATE "C"), customer_id);
CREATE INDEX crm_customers_email_prefix_idx ON crm_customers ((lower(email) COLLATE "C"), customer_id);

-- How many rows holding the query anywhere (tier 2) one search reads at most: enough to rank a
-- page well, few enough that a fragment shared by a large share of customers stays cheap.
CREATE FUNCTION search_scan_cap(p_limit integer)
RETURNS integer
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, public
AS $$ SELECT greatest(10 * p_limit, 200) $$;

-- The search itself (invoker rights; search_customers of 0010 wraps it and writes the audit row).
-- The statement runs through EXECUTE ... USING so that it is planned with the query's values: only
-- then can `LIKE 'prefix%'` become an index range (a cached generic plan could not). Values are only
-- ever parameters; LIKE wildcards in the query are escaped, so they match literally.
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
SET search_path = pg_catalog, public
-- Tier 2 reads at most a few hundred rows (LIMIT without ORDER BY), and the planner, assuming matches
-- spread evenly, would often pick a sequential scan that "stops early"; when the matches are rare or
-- clustered that reads the whole table. Every path of this search has an index, so seq scans are off.
SET enable_seqscan = off
AS $fn$
DECLARE
    v_q       text := btrim(coalesce(p_query, ''));
    v_lower   text;
    v_escaped text;
    v_digits  text;
    v_limit   integer := least(greatest(coalesce(p_limit, 20), 1), 1000);
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
    v_escaped := replace(replace(replace(v_lower, '\', '\\'), '%', '\%'), '_', '\_');
    -- Phone fragments: a query made of digits and phone punctuation, with at least 3 digits.
    IF v_q ~ '^[0-9 +().-]+$' THEN
        v_digits := regexp_replace(v_q, '[^0-9]', '', 'g');
        IF length(v_digits) < 3 THEN
            v_digits := NULL;
        END IF;
    END IF;

    -- $1 query, $2 lowercased, $3 '%query%' (escaped), $4 'query%' (escaped), $5 phone digits or NULL,
    -- $6 page size, $7 tier-2 cap.
    RETURN QUERY EXECUTE $q$
    WITH by_id AS (
        SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
        FROM crm_customers c
        WHERE $1 ~ '^[0-9]{1,18}$' AND c.customer_id = CASE WHEN $1 ~ '^[0-9]{1,18}$' THEN $1::bigint END
    ),
    -- Tier 1: each field's first p_limit prefix matches in index order (an exact match sorts first).
    prefixed AS MATERIALIZED (
        SELECT DISTINCT ON (p.customer_id) p.*
        FROM ((SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
               FROM crm_customers c
               WHERE $5 IS NULL
                 AND lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')) COLLATE "C" LIKE $4
               ORDER BY lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')) COLLATE "C",
                        c.customer_id
               LIMIT $6)
              UNION ALL
              (SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
               FROM crm_customers c
               WHERE $5 IS NULL AND lower(c.last_name) COLLATE "C" LIKE $4
               ORDER BY lower(c.last_name) COLLATE "C", c.customer_id
               LIMIT $6)
              UNION ALL
              (SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
               FROM crm_customers c
               WHERE $5 IS NULL AND lower(c.email) COLLATE "C" LIKE $4
               ORDER BY lower(c.email) COLLATE "C", c.customer_id
               LIMIT $6)) p
        WHERE NOT EXISTS (SELECT 1 FROM by_id b WHERE b.customer_id = p.customer_id)
        ORDER BY p.customer_id
    ),
    -- Tier 2: rows holding the query anywhere (trigram GIN indexes), read only when tiers 0-1 leave
    -- room on the page and at most $7 of them: no ORDER BY here, so the scan stops early.
    contained AS MATERIALIZED (
        SELECT x.*
        FROM (SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
              FROM crm_customers c
              WHERE $5 IS NULL
                AND (lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')) LIKE $3
                     OR lower(c.email) LIKE $3)
              UNION ALL
              SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone
              FROM crm_customers c
              WHERE $5 IS NOT NULL AND regexp_replace(c.phone, '[^0-9]', '', 'g') LIKE '%' || $5 || '%') x
        WHERE (SELECT count(*) FROM by_id) + (SELECT count(*) FROM prefixed) < $6
          AND NOT EXISTS (SELECT 1 FROM by_id b WHERE b.customer_id = x.customer_id)
          AND NOT EXISTS (SELECT 1 FROM prefixed p WHERE p.customer_id = x.customer_id)
        LIMIT $7
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
                    WHEN $5 IS NOT NULL THEN 'phone'
                    WHEN f.ws_email > f.ws_name THEN 'email'
                    ELSE 'name' END AS match_kind,
               CASE WHEN m.tier = 0 THEN 2
                    WHEN $5 IS NOT NULL THEN
                        (CASE WHEN f.phone_d = $5 THEN 1.0 ELSE 0.5 END)
                        + length($5)::real / greatest(length(f.phone_d), 1)
                    ELSE greatest(f.ws_name, f.ws_email)
                        + CASE WHEN f.name_l = $2 OR f.email_l = $2 THEN 1.0
                               WHEN f.name_l LIKE $4 OR f.email_l LIKE $4 THEN 0.5
                               ELSE 0 END
               END::real AS score
        FROM matched m
        CROSS JOIN LATERAL (
            SELECT n.name_l, n.email_l, regexp_replace(m.phone, '[^0-9]', '', 'g') AS phone_d,
                   word_similarity($2, n.name_l) AS ws_name,
                   coalesce(word_similarity($2, n.email_l), 0) AS ws_email
            FROM (SELECT lower(coalesce(m.first_name, '') || ' ' || coalesce(m.last_name, '')) AS name_l,
                         lower(m.email) AS email_l) n
        ) f
    ),
    -- Tier 3: near misses (typos) by trigram similarity of the name, only when tiers 0-2 leave room.
    near AS (
        SELECT c.customer_id, c.customer_uuid, c.first_name, c.last_name, c.email, c.phone, 3 AS tier,
               'name'::text AS match_kind,
               word_similarity(
                   $2, lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')))::real AS score
        FROM crm_customers c
        WHERE $5 IS NULL
          AND (SELECT count(*) FROM matched) < $6
          AND lower(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')) % $2
          AND NOT EXISTS (SELECT 1 FROM matched x WHERE x.customer_id = c.customer_id)
    ),
    page AS (
        SELECT * FROM (SELECT * FROM scored UNION ALL SELECT * FROM near) r
        ORDER BY r.tier, r.score DESC, r.customer_id
        LIMIT $6
    )
    SELECT r.customer_id, r.customer_uuid, r.first_name, r.last_name, r.email, r.phone,
           r.match_kind, r.score, m.golden_customer_id, m.total_orders, m.total_lifetime_value,
           m.value_segment, m.activity_segment
    FROM page r
    LEFT JOIN customer_360_mv m ON m.customer_id = r.customer_id
    ORDER BY r.tier, r.score DESC, r.customer_id
    $q$
    USING v_q, v_lower, '%' || v_escaped || '%', v_escaped || '%', v_digits, v_limit, search_scan_cap(v_limit);
END;
$fn$;

COMMENT ON FUNCTION customer_search_rows(text, integer) IS
    'Ranked customer search (invoker rights; search_customers audits it). Best first: tier 0 exact id or '
    'uuid; 1 name, surname or email starts with the query (btree, first p_limit per field in alphabetical '
    'order); 2 contains it in name, email or phone digits (trigram GIN; only if 0-1 leave room; at most '
    'search_scan_cap(p_limit) rows read, in storage order); 3 trigram near misses of the name. Within a '
    'tier: score desc (word_similarity, +1 exact, +0.5 prefix; phones by share of the number), then id.';
COMMENT ON FUNCTION search_customers(text, integer) IS
    'Ranked customer search by name, email or phone fragment; exact lookups for an id or a uuid. '
    'Audited; ranking: see customer_search_rows and docs/customer-search.md.';

SELECT opsconsole_apply_grants();
