"""data_catalog refresh, lineage recursion and optimize_table_statistics."""

from __future__ import annotations

import json

import psycopg


def one(conn, sql: str, *params):
    """The first column of the first row."""
    return next(iter(conn.execute(sql, params or None).fetchone().values()))


def report(conn) -> tuple[int, int, int]:
    r = conn.execute("SELECT * FROM refresh_data_catalog_report()").fetchone()
    return r["added"], r["changed"], r["removed"]


def columns(conn, table: str) -> list[tuple]:
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable, object_type, column_description, table_description"
        " FROM data_catalog WHERE table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [tuple(r.values()) for r in rows]


def test_catalog_covers_tables_views_materialized_views_and_folds_partitions(conn):
    report(conn)  # a cloned database: the first refresh re-labels rows to this database's name
    assert report(conn) == (0, 0, 0)
    conn.execute(
        "CREATE TABLE cat_t (id integer PRIMARY KEY, code varchar(20) NOT NULL, note text);"
        "COMMENT ON TABLE cat_t IS 'test table';"
        "COMMENT ON COLUMN cat_t.code IS 'the code';"
        "CREATE VIEW cat_v AS SELECT id, code FROM cat_t;"
        "CREATE MATERIALIZED VIEW cat_m AS SELECT id, note FROM cat_t;"
        "CREATE TABLE cat_p (id bigint, d date NOT NULL) PARTITION BY RANGE (d);"
        "SELECT ensure_partitions('cat_p', interval '1 month', interval '1 month');"
    )
    assert report(conn) == (3 + 2 + 2 + 2, 0, 0)
    assert columns(conn, "cat_t") == [
        ("id", "integer", False, "table", None, "test table"),
        ("code", "character varying(20)", False, "table", "the code", "test table"),
        ("note", "text", True, "table", None, "test table"),
    ]
    assert columns(conn, "cat_v") == [
        ("id", "integer", True, "view", None, None),
        ("code", "character varying(20)", True, "view", None, None),
    ]
    assert [c[:4] for c in columns(conn, "cat_m")] == [
        ("id", "integer", True, "materialized view"),
        ("note", "text", True, "materialized view"),
    ]
    assert [c[:4] for c in columns(conn, "cat_p")] == [
        ("id", "bigint", True, "partitioned table"),
        ("d", "date", False, "partitioned table"),
    ]
    partitions = conn.execute("SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'cat_p'::regclass")
    assert partitions.fetchone()["n"] >= 3
    folded = (
        "SELECT count(*) FROM data_catalog"
        " WHERE table_name LIKE 'cat\\_p\\_%' OR table_name LIKE 'erp_orders\\_%'"
    )
    assert one(conn, folded) == 0
    # nothing from the system schemas
    schemas = conn.execute("SELECT array_agg(DISTINCT schema_name) AS s FROM data_catalog").fetchone()["s"]
    assert schemas == ["public"]
    # the spec's entry point returns the number of rows added, changed or removed
    conn.execute("ALTER TABLE cat_t ADD COLUMN extra int")
    assert conn.execute("SELECT refresh_data_catalog() AS n").fetchone()["n"] == 1


def test_catalog_picks_up_added_changed_and_dropped_columns(conn):
    conn.execute("CREATE TABLE cat_t (id integer, note text)")
    report(conn)
    conn.execute("ALTER TABLE cat_t ADD COLUMN amount numeric(10,2) DEFAULT 0")
    assert report(conn) == (1, 0, 0)
    row = conn.execute(
        "SELECT data_type, column_default FROM data_catalog"
        " WHERE table_name = 'cat_t' AND column_name = 'amount'"
    ).fetchone()
    assert (row["data_type"], row["column_default"]) == ("numeric(10,2)", "0")
    conn.execute("ALTER TABLE cat_t ALTER COLUMN note TYPE varchar(50)")
    conn.execute("COMMENT ON COLUMN cat_t.id IS 'key'")
    assert report(conn) == (0, 2, 0)
    conn.execute("ALTER TABLE cat_t DROP COLUMN note")
    assert report(conn) == (0, 0, 1)
    assert [c[0] for c in columns(conn, "cat_t")] == ["id", "amount"]
    conn.execute("DROP TABLE cat_t")
    assert report(conn) == (0, 0, 2)
    assert columns(conn, "cat_t") == []


def test_refresh_keeps_values_people_set(conn):
    report(conn)
    conn.execute(
        "UPDATE data_catalog SET data_classification = 'restricted', business_owner = 'CRM team',"
        " technical_owner = 'platform-dba', tags = '[\"golden\"]'"
        " WHERE table_name = 'crm_customers' AND column_name = 'email'"
    )
    conn.execute("COMMENT ON COLUMN crm_customers.email IS 'primary contact address'")
    conn.execute("ALTER TABLE crm_customers ALTER COLUMN email TYPE varchar(320)")
    assert report(conn) == (0, 1, 0)
    row = conn.execute(
        "SELECT data_type, column_description, data_classification, business_owner, technical_owner, tags"
        " FROM data_catalog WHERE table_name = 'crm_customers' AND column_name = 'email'"
    ).fetchone()
    assert row == {
        "data_type": "character varying(320)",
        "column_description": "primary contact address",
        "data_classification": "restricted",
        "business_owner": "CRM team",
        "technical_owner": "platform-dba",
        "tags": ["golden"],
    }


def test_default_classification_marks_pii(conn):
    conn.execute(
        "CREATE TABLE cat_pii (id bigint, customer_email text, mobile_phone text, ssn text,"
        " password_hash text, last_name text, client inet, pipeline_name text, table_name text)"
    )
    report(conn)
    got = dict(
        (r["column_name"], r["data_classification"])
        for r in conn.execute(
            "SELECT column_name, data_classification FROM data_catalog WHERE table_name = 'cat_pii'"
        ).fetchall()
    )
    assert got == {
        "id": "internal",
        "customer_email": "confidential",
        "mobile_phone": "confidential",
        "ssn": "restricted",
        "password_hash": "restricted",
        "last_name": "confidential",
        "client": "confidential",
        "pipeline_name": "internal",
        "table_name": "internal",
    }
    crm = dict(
        (r["column_name"], r["data_classification"])
        for r in conn.execute(
            "SELECT column_name, data_classification FROM data_catalog WHERE table_name = 'crm_customers'"
        ).fetchall()
    )
    assert {k for k, v in crm.items() if v == "confidential"} == {
        "first_name",
        "last_name",
        "email",
        "phone",
        "address",
    }
    assert crm["customer_id"] == "internal"


def test_refresh_notifies_with_counts(conn, db_dsn):
    report(conn)
    with psycopg.connect(db_dsn, autocommit=True) as listener:
        listener.execute("LISTEN opsconsole_catalog")
        conn.execute("CREATE TABLE cat_n (a int, b int)")
        report(conn)
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert len(notes) == 1
    payload = json.loads(notes[0].payload)
    assert (payload["added"], payload["changed"], payload["removed"]) == (2, 0, 0)
    assert payload["total"] == conn.execute("SELECT count(*) AS n FROM data_catalog").fetchone()["n"]


def edges(rows) -> list[tuple]:
    return [(r["depth"], r["source_table"], r["target_table"], r["pipeline_name"]) for r in rows]


def test_lineage_is_seeded_with_the_platforms_flows(conn):
    down = conn.execute("SELECT * FROM lineage_downstream('crm_customers')").fetchall()
    assert edges(down) == [
        (1, "crm_customers", "customer_360_mv", "customer_360"),
        (1, "crm_customers", "data_quality_metrics", "data_quality"),
        (1, "crm_customers", "lakehouse_customers", "lakehouse"),
        (2, "lakehouse_customers", "lakehouse_customers_current", "lakehouse"),
    ]
    up = conn.execute("SELECT * FROM lineage_upstream('financial_transactions')").fetchall()
    assert edges(up) == [
        (1, "financial_transactions_processed", "financial_transactions", "financial_pipeline"),
        (2, "financial_transactions_staging", "financial_transactions_processed", "financial_pipeline"),
        (3, "ext:transaction_files", "financial_transactions_staging", "ingest"),
    ]
    assert all(r["transformation_logic"] for r in up)


def test_record_lineage_is_idempotent_and_recursion_survives_cycles(conn):
    ids = [
        conn.execute("SELECT record_lineage(%s, %s, 'p', %s) AS id", (s, t, f"{s}->{t}")).fetchone()["id"]
        for s, t in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "d")]
    ]
    again = conn.execute("SELECT record_lineage('a', 'b', 'p') AS id").fetchone()["id"]
    assert again == ids[0]
    n = conn.execute("SELECT count(*) AS n FROM data_lineage WHERE source_table IN ('a','b','c','d')")
    assert n.fetchone()["n"] == 5
    logic = conn.execute("SELECT transformation_logic FROM data_lineage WHERE lineage_id = %s", (ids[0],))
    assert logic.fetchone()["transformation_logic"] == "a->b"  # not wiped by a call without logic
    # a column-level flow of the same tables is a separate flow, recorded once too
    conn.execute("SELECT record_lineage('a', 'b', 'p', NULL, 'x', 'y')")
    conn.execute("SELECT record_lineage('a', 'b', 'p', NULL, 'x', 'y')")
    assert one(conn, "SELECT count(*) FROM data_lineage WHERE source_table = 'a'") == 2
    # a platform table named with its schema is the same table (a direct INSERT too)
    conn.execute(
        "INSERT INTO data_lineage (source_table, target_table, pipeline_name)"
        " VALUES ('public.d', 'public.e', 'p'), ('other.d', 'e', 'p')"
    )
    assert one(conn, "SELECT record_lineage('d', 'public.e', 'p')") == one(
        conn, "SELECT lineage_id FROM data_lineage WHERE source_table = 'd' AND target_table = 'e'"
    )

    down = conn.execute("SELECT * FROM lineage_downstream('a')").fetchall()
    assert edges(down) == [
        (1, "a", "b", "p"),
        (2, "b", "c", "p"),
        (3, "c", "a", "p"),  # closes the cycle: listed, not followed
        (3, "c", "d", "p"),
        (4, "d", "d", "p"),  # self loop
        (4, "d", "e", "p"),
    ]
    up = conn.execute("SELECT * FROM lineage_upstream('a')").fetchall()
    assert edges(up) == [(1, "c", "a", "p"), (2, "b", "c", "p"), (3, "a", "b", "p")]
    assert edges(conn.execute("SELECT * FROM lineage_upstream('public.e')").fetchall())[:2] == [
        (1, "d", "e", "p"),
        (1, "other.d", "e", "p"),
    ]
    assert conn.execute("SELECT count(*) AS n FROM lineage_upstream('nowhere')").fetchone()["n"] == 0


def flush_stats(conn) -> None:
    """Make this session's pending table counters visible to the next transaction."""
    conn.execute("SELECT pg_stat_force_next_flush()")


def test_optimize_table_statistics_analyzes_changed_tables_and_partitioned_parents(conn):
    conn.execute(
        'CREATE TABLE "Stat T" (id int) WITH (autovacuum_enabled = false);'
        "CREATE TABLE stat_small (id int) WITH (autovacuum_enabled = false);"
        "CREATE TABLE stat_p (id int, d date NOT NULL) PARTITION BY RANGE (d);"
        "CREATE TABLE stat_p_1 PARTITION OF stat_p FOR VALUES FROM ('2024-01-01') TO ('2024-02-01')"
        " WITH (autovacuum_enabled = false);"
        "CREATE TABLE stat_p_2 PARTITION OF stat_p FOR VALUES FROM ('2024-02-01') TO ('2024-03-01')"
        " WITH (autovacuum_enabled = false);"
    )
    flush_stats(conn)
    assert one(conn, "SELECT optimize_table_statistics()") == "No tables needed analysis"

    conn.execute('INSERT INTO "Stat T" SELECT g FROM generate_series(1, 1500) g')
    conn.execute("INSERT INTO stat_small SELECT g FROM generate_series(1, 999) g")
    conn.execute("INSERT INTO stat_p SELECT g, date '2024-01-01' + (g % 50) FROM generate_series(1, 1200) g")
    flush_stats(conn)
    message = conn.execute("SELECT optimize_table_statistics() AS m").fetchone()["m"]
    assert message == (
        'Analyzed public.stat_p (partitioned, 1200 changes); Analyzed public."Stat T" (1500 changes)'
    )
    analyzed = conn.execute(
        "SELECT relname, last_analyze IS NOT NULL AS done FROM pg_stat_all_tables"
        " WHERE relname IN ('Stat T', 'stat_small', 'stat_p', 'stat_p_1', 'stat_p_2') ORDER BY relname"
    ).fetchall()
    assert [(r["relname"], r["done"]) for r in analyzed] == [
        ("Stat T", True),
        ("stat_p", True),
        ("stat_p_1", True),
        ("stat_p_2", True),
        ("stat_small", False),
    ]
    assert one(conn, "SELECT reltuples FROM pg_class WHERE relname = 'Stat T'") == 1500
    flush_stats(conn)
    assert one(conn, "SELECT optimize_table_statistics()") == "No tables needed analysis"


def test_reapplying_the_definitions_catalogues_nothing_as_new(conn, db_dsn):
    """A look bug: the definitions pass synced the catalog from 60_catalog_lineage.sql, before
    80_privacy.sql made the masked views, so an install's catalog lacked them and the next pass (any
    `db migrate` after a definitions change) catalogued them as first seen: the Timeline listed them
    as "added". The sync now runs after every file, so the install has them and a re-apply adds none."""
    from opsconsole.db import migrate

    installed = {
        r["table_name"]
        for r in conn.execute("SELECT DISTINCT table_name FROM data_catalog WHERE object_type = 'view'")
    }
    assert {"customers_masked", "customer_360_masked"} <= installed
    before = one(conn, "SELECT clock_timestamp()")
    conn.execute("UPDATE opsconsole_definitions SET checksum = 'stale' WHERE name = '70_timeline'")
    with psycopg.connect(db_dsn, autocommit=True) as runner:
        reapplied = migrate.migrate(runner)
    assert "99_grants.sql" in [item.path.name for item, _ in reapplied]  # the whole pass ran again
    new = conn.execute(
        "SELECT DISTINCT table_name FROM data_catalog WHERE first_seen_at > %s", (before,)
    ).fetchall()
    assert new == []
    timeline = conn.execute(
        "SELECT subject, detail FROM ops_timeline(%s, clock_timestamp()) WHERE kind = 'catalog'", (before,)
    ).fetchall()
    assert timeline == []
