"""Customer search (85_search.sql): the ranking tiers, exact matches first, limits, literal text, index use.

The search ranks: id/uuid, then name/surname/email starting with the query (btree), then the query
anywhere (trigram GIN, at most search_scan_cap(limit) rows read), then trigram near misses.
"""

from __future__ import annotations

import psycopg
import pytest

PEOPLE = [
    (1, "John", "Smith", "john.smith@example.com", "+1 (555) 010-2000"),
    (2, "Jane", "Smithers", "jane@smithers.io", "555-010-3000"),
    (3, "Mary", "van Smith", "mvs@example.org", None),
    (4, "Bob", "Blacksmith", "bob@forge.net", None),
    (5, "Anna", "Smith", "anna@example.com", None),
    (6, "Joanna", "Smith", "jo@example.com", None),
    (7, "Liam", "O'Brien", "liam.obrien@example.ie", None),
    (8, "Back", "Sla\\sh", "100%_sure@example.com", None),
]


def add(conn, people=PEOPLE):
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO crm_customers (customer_id, first_name, last_name, email, phone)"
            " VALUES (%s, %s, %s, %s, %s)",
            people,
        )
    conn.execute("SELECT * FROM refresh_customer_360_full()")


def search(conn, q, limit=20):
    return conn.execute("SELECT * FROM search_customers(%s, %s)", (q, limit)).fetchall()


def ids(hits):
    return [h["customer_id"] for h in hits]


def test_exact_name_and_email_rank_first(conn):
    add(conn)
    hits = search(conn, "Anna Smith")
    # The exact name answers the query: tier 2 ('joanna smith' holds it) and near misses are not read.
    assert ids(hits) == [5]
    assert (hits[0]["match_kind"], hits[0]["score"]) == ("name", pytest.approx(2.0))
    hits = search(conn, "anna smit")  # no exact match: prefix first, then what contains it
    assert ids(hits) == [5, 6]
    assert hits[1]["score"] == pytest.approx(0.7)
    hits = search(conn, "JANE@smithers.io")
    assert (hits[0]["customer_id"], hits[0]["match_kind"], hits[0]["score"]) == (2, "email", 2.0)


def test_prefix_tier_ranks_above_contains(conn):
    add(conn)
    hits = search(conn, "smith")
    # tier 1 (starts the name, the surname or the email) by score: 'john.smith@' is no prefix, but
    # 'smith' surnames are; 'smithers' (0.83) then. Tier 2: 'van smith' (a whole word, 1.0) and
    # 'blacksmith' only contain it, so they come after every prefix match whatever their score.
    assert ids(hits) == [1, 5, 6, 2, 3, 4]
    assert [round(h["score"], 2) for h in hits] == [1.0, 1.0, 1.0, 0.83, 1.0, 0.67]
    assert {h["match_kind"] for h in hits} == {"name"}
    assert ids(search(conn, "smith", limit=2)) == [1, 5]


def test_fragment_inside_a_word_is_found(conn):
    add(conn)
    assert ids(search(conn, "ksmit")) == [4]
    assert ids(search(conn, "obrien@")) == [7]
    assert search(conn, "obrien@")[0]["match_kind"] == "email"
    # a fragment too short for any similarity is still labelled by the field that holds it
    assert [(h["customer_id"], h["match_kind"]) for h in search(conn, "@s")] == [(2, "email")]
    assert ids(search(conn, "010-30")) == [2]  # phone digits, punctuation ignored


def test_typo_falls_back_to_near_misses(conn):
    add(conn)
    hits = search(conn, "jon smiht")
    assert hits and hits[0]["customer_id"] == 1
    assert all(h["score"] < 1 for h in hits)
    # Near misses only when nothing holds the query: 'anna smit' has literal matches only.
    assert ids(search(conn, "anna smit")) == [5, 6]


def test_digit_runs_and_phone_tails_probe_the_index_but_the_whole_query_must_match(conn):
    add(
        conn,
        [
            (1, "A", "One", "user92809@example.com", "+1 555 0157257"),
            (2, "B", "Two", "admin92809@example.com", "+44 555 0157257"),
            (3, "C", "Three", "user9280@example.com", "+1 555 0157258"),
        ],
    )
    assert ids(search(conn, "user92809")) == [1]  # '92809' probes, 'admin92809' fails the check
    assert ids(search(conn, "r9280")) == [3, 1]
    assert ids(search(conn, "1 555 0157257")) == [1]  # the last 7 digits probe, all 11 must match
    assert ids(search(conn, "555 0157257")) == [1, 2]


def test_quotes_wildcards_and_backslashes_are_literal(conn):
    add(conn)
    assert ids(search(conn, "o'brien")) == [7]
    assert search(conn, "'; DROP TABLE crm_customers; --") == []
    assert conn.execute("SELECT count(*) AS n FROM crm_customers").fetchone()["n"] == len(PEOPLE)
    assert ids(search(conn, "100%_")) == [8]  # an email prefix, % and _ taken literally
    assert ids(search(conn, "sla\\sh")) == [8]
    assert ids(search(conn, "%")) == [8]  # the only '%' in the data
    assert search(conn, "s_ith") == []
    assert ids(search(conn, "\\")) == [8]
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        search(conn, "   ")


def _many(conn):
    """20,000 customers like the benchmark's, plus 1,000 sharing 'kaber' inside their surname
    and 300 whose surname starts with 'Zorvath'."""
    conn.execute(
        """
        INSERT INTO crm_customers (customer_id, first_name, last_name, email, phone)
        SELECT g,
               (ARRAY['anna', 'bruno', 'chen', 'dara', 'elif'])[1 + g % 5],
               initcap((ARRAY['bar', 'ben', 'cor', 'dal', 'est', 'fon', 'gar', 'hol'])[1 + g % 8]
                       || (ARRAY['nor', 'ost', 'par', 'ros', 'sten', 'tor', 'var'])[1 + (g / 8) % 7]),
               'user' || g || '@example.com',
               '+1 555 ' || lpad(g::text, 7, '0')
        FROM generate_series(1, 20000) g;
        INSERT INTO crm_customers (customer_id, first_name, last_name, email)
        SELECT 100000 + g, 'Ida', 'Lo' || 'kaber' || g, 'ida' || g || '@kab.example'
        FROM generate_series(1, 1000) g;
        INSERT INTO crm_customers (customer_id, first_name, last_name, email)
        SELECT 200000 + g, 'Uma', 'Zorvath' || chr(97 + g % 26), 'uma' || g || '@zv.example'
        FROM generate_series(1, 300) g;
        ANALYZE crm_customers;
        """
    )


def test_limit_is_respected_and_prefix_ties_come_in_key_order(conn):
    _many(conn)
    hits = search(conn, "zorvath", limit=25)
    assert len(hits) == 25
    # Surname prefix matches in (surname, id) order: 'zorvatha' first, lowest ids first.
    first = conn.execute(
        "SELECT customer_id FROM crm_customers WHERE lower(last_name) LIKE 'zorvath%'"
        ' ORDER BY lower(last_name) COLLATE "C", customer_id LIMIT 25'
    ).fetchall()
    assert sorted(ids(hits)) == sorted(r["customer_id"] for r in first)
    assert all(h["last_name"].lower().startswith("zorvath") for h in hits)
    assert len(search(conn, "zorvath", limit=1)) == 1
    assert len(search(conn, "zorvath", limit=5000)) == 300  # capped at 1000, all 300 there


def test_many_inner_matches_read_a_bounded_number_of_rows(conn):
    _many(conn)
    cap = conn.execute("SELECT search_scan_cap(20) AS c").fetchone()["c"]
    assert cap == 200
    with conn.transaction():
        hits = search(conn, "kaber")
        stats = conn.execute(
            "SELECT seq_scan, idx_scan, idx_tup_fetch FROM pg_stat_xact_user_tables"
            " WHERE relname = 'crm_customers'"
        ).fetchone()
    assert len(hits) == 20
    assert all("kaber" in h["last_name"].lower() for h in hits)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert stats["seq_scan"] == 0
    # 1,000 rows hold 'kaber': only the cap (plus the page's own lookups) is read, not all of them.
    assert 0 < stats["idx_tup_fetch"] <= cap + 3 * 20 + 50, stats


# name + surname prefix, surname prefix, inside a surname, email prefix and inside, phone digits,
# an id (then phone digits), many inner matches, a common first name.
PATHS = [
    "bruno barost",
    "barost",
    "arost",
    "estpar",
    "user1234",
    "er12345",
    "555 000 12",
    "12345",
    "kaber",
    "anna",
]


def test_every_path_uses_an_index(conn):
    _many(conn)
    for query in PATHS:
        with conn.transaction():
            hits = search(conn, query)
            stats = conn.execute(
                "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'crm_customers'"
            ).fetchone()
        assert hits, query
        assert stats["seq_scan"] == 0 and stats["idx_scan"] > 0, (query, stats)


def test_prefix_predicates_use_the_btree_indexes(conn):
    _many(conn)
    for predicate, index in [
        ("lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '')) COLLATE \"C\" LIKE 'anna b%'",
         "name_prefix"),
        ("lower(last_name) COLLATE \"C\" LIKE 'zorv%'", "last_name_prefix"),
        ("lower(email) COLLATE \"C\" LIKE 'user12%'", "email_prefix"),
    ]:  # fmt: skip
        plan = "\n".join(
            r["QUERY PLAN"]
            for r in conn.execute(f"EXPLAIN SELECT customer_id FROM crm_customers WHERE {predicate}")
        )
        assert f"crm_customers_{index}_idx" in plan, plan


def test_prefix_upper_bound_and_non_ascii_prefixes(conn):
    bound = conn.execute(
        "SELECT search_prefix_upper_bound('abc') AS a, search_prefix_upper_bound('zé') AS b,"
        " search_prefix_upper_bound(chr(55295)) = chr(57344) AS skips_surrogates,"
        " search_prefix_upper_bound('a' || chr(1114111)) AS c, search_prefix_upper_bound(chr(1114111)) AS d"
    ).fetchone()
    assert bound == {"a": "abd", "b": "zê", "skips_surrogates": True, "c": "b", "d": None}
    add(conn, [(1, "Élise", "Zoë", "elise@example.fr", None), (2, "Eli", "Zoe", "eli@example.fr", None)])
    assert ids(search(conn, "élise")) == [1]
    hits = search(conn, "zoë")
    assert ids(hits)[:1] == [1] and hits[0]["score"] > 0.5
    assert ids(search(conn, "eli")) == [2, 1]  # 'eli zoe' and the email 'elise@' start with it
