"""lakehouse_customers: versions written from CRM changes, current view, time travel, history."""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections import Counter

import psycopg
import pytest
from psycopg.rows import dict_row


def chain(conn, customer_id: int) -> list[dict]:
    return conn.execute(
        "SELECT version_number, operation_type, effective_from, effective_to,"
        " customer_data->>'email' AS email FROM lakehouse_customers WHERE customer_id = %s"
        " ORDER BY version_number",
        (customer_id,),
    ).fetchall()


def now(conn) -> dt.datetime:
    return conn.execute("SELECT clock_timestamp() AS t").fetchone()["t"]


def test_insert_update_delete_make_a_closed_chain_with_a_tombstone(conn):
    conn.execute("INSERT INTO crm_customers (customer_id, first_name, email) VALUES (1, 'Ann', 'a@x.io')")
    conn.execute("UPDATE crm_customers SET email = 'a2@x.io' WHERE customer_id = 1")
    conn.execute("DELETE FROM crm_customers WHERE customer_id = 1")
    rows = chain(conn, 1)
    assert [(r["version_number"], r["operation_type"], r["email"]) for r in rows] == [
        (1, "INSERT", "a@x.io"),
        (2, "UPDATE", "a2@x.io"),
        (3, "DELETE", "a2@x.io"),
    ]
    # each version ends exactly where the next begins; only the tombstone is open
    assert rows[0]["effective_to"] == rows[1]["effective_from"]
    assert rows[1]["effective_to"] == rows[2]["effective_from"]
    assert rows[2]["effective_to"] is None
    assert rows[0]["effective_from"] < rows[1]["effective_from"] < rows[2]["effective_from"]
    # a re-insert after the delete continues the same chain
    conn.execute("INSERT INTO crm_customers (customer_id, first_name, email) VALUES (1, 'Ann', 'a3@x.io')")
    assert [(r["version_number"], r["operation_type"]) for r in chain(conn, 1)][-1] == (4, "INSERT")


def test_two_changes_in_one_transaction_are_two_versions(conn):
    conn.execute("INSERT INTO crm_customers (customer_id, email) VALUES (7, 'e0')")
    with conn.transaction():
        conn.execute("UPDATE crm_customers SET email = 'e1' WHERE customer_id = 7")
        conn.execute("UPDATE crm_customers SET email = 'e2' WHERE customer_id = 7")
    rows = chain(conn, 7)
    assert [r["email"] for r in rows] == ["e0", "e1", "e2"]
    assert rows[1]["effective_to"] == rows[2]["effective_from"] > rows[1]["effective_from"]


def test_update_changing_nothing_writes_no_version_and_key_change_is_delete_plus_insert(conn):
    conn.execute("INSERT INTO crm_customers (customer_id, email) VALUES (1, 'a'), (2, 'b')")
    conn.execute("UPDATE crm_customers SET email = email")  # only updated_at moves (touch trigger)
    assert conn.execute("SELECT count(*) AS n FROM lakehouse_customers").fetchone()["n"] == 2
    conn.execute("UPDATE crm_customers SET customer_id = 3 WHERE customer_id = 2")
    assert [r["operation_type"] for r in chain(conn, 2)] == ["INSERT", "DELETE"]
    assert [(r["operation_type"], r["email"]) for r in chain(conn, 3)] == [("INSERT", "b")]


def test_truncate_tombstones_every_live_customer(conn):
    conn.execute("INSERT INTO crm_customers (customer_id, email) VALUES (1, 'a'), (2, 'b')")
    conn.execute("DELETE FROM crm_customers WHERE customer_id = 2")
    conn.execute("TRUNCATE crm_customers")
    assert [r["operation_type"] for r in chain(conn, 1)] == ["INSERT", "DELETE"]
    assert [r["operation_type"] for r in chain(conn, 2)] == ["INSERT", "DELETE"]  # not tombstoned twice
    assert conn.execute("SELECT count(*) AS n FROM lakehouse_customers_current").fetchone()["n"] == 0


def test_current_view_hides_deleted_but_not_rows_without_operation_type(conn):
    conn.execute("INSERT INTO crm_customers (customer_id, email) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    conn.execute("UPDATE crm_customers SET email = 'b2' WHERE customer_id = 2")
    conn.execute("DELETE FROM crm_customers WHERE customer_id = 3")
    # a row written by hand, spec-style, without an operation_type
    conn.execute(
        "INSERT INTO lakehouse_customers (customer_id, customer_data, effective_from, version_number)"
        " VALUES (50, '{\"email\": \"legacy\"}', '2020-01-01T00:00:00Z', 1)"
    )
    rows = conn.execute(
        "SELECT customer_id, version_number, operation_type, customer_data->>'email' AS email"
        " FROM lakehouse_customers_current ORDER BY customer_id"
    ).fetchall()
    assert [(r["customer_id"], r["version_number"], r["operation_type"], r["email"]) for r in rows] == [
        (1, 1, "INSERT", "a"),
        (2, 2, "UPDATE", "b2"),
        (50, 1, None, "legacy"),
    ]


def test_time_travel_at_three_instants(conn):
    t0 = now(conn)
    conn.execute("INSERT INTO crm_customers (customer_id, email) VALUES (1, 'one@v1'), (2, 'two@v1')")
    t1 = now(conn)
    conn.execute("UPDATE crm_customers SET email = 'one@v2' WHERE customer_id = 1")
    t2 = now(conn)
    conn.execute("UPDATE crm_customers SET email = 'one@v3' WHERE customer_id = 1")
    conn.execute("DELETE FROM crm_customers WHERE customer_id = 2")
    t3 = now(conn)

    def at(instant):
        rows = conn.execute(
            "SELECT customer_id, version_number, customer_data->>'email' AS email"
            " FROM time_travel_customers(%s) ORDER BY customer_id",
            (instant,),
        ).fetchall()
        return [(r["customer_id"], r["version_number"], r["email"]) for r in rows]

    assert at(t0) == []
    assert at(t1) == [(1, 1, "one@v1"), (2, 1, "two@v1")]
    assert at(t2) == [(1, 2, "one@v2"), (2, 1, "two@v1")]
    assert at(t3) == [(1, 3, "one@v3")]  # customer 2 is deleted by then
    # the exact boundary belongs to the newer version ([from, to) ranges)
    v2_from = chain(conn, 1)[1]["effective_from"]
    assert at(v2_from) == [(1, 2, "one@v2"), (2, 1, "two@v1")]
    assert at(v2_from - dt.timedelta(microseconds=1))[0] == (1, 1, "one@v1")

    # a timestamp without time zone is read in the session's TimeZone (Kolkata: +05:30, no DST)
    conn.execute("SET TimeZone = 'Asia/Kolkata'")
    local = t2.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))).replace(tzinfo=None)
    naive = conn.execute(
        "SELECT customer_id, version_number FROM time_travel_customers(%s::timestamp) ORDER BY 1",
        (local.isoformat(),),
    ).fetchall()
    assert [(r["customer_id"], r["version_number"]) for r in naive] == [(1, 2), (2, 1)]


def test_lake_history_lists_versions_with_changed_fields(conn):
    conn.execute("INSERT INTO crm_customers (customer_id, first_name, email) VALUES (9, 'Zoe', 'z@x')")
    conn.execute("UPDATE crm_customers SET first_name = 'Zoey', phone = '555' WHERE customer_id = 9")
    conn.execute("DELETE FROM crm_customers WHERE customer_id = 9")
    rows = conn.execute("SELECT * FROM lake_history(9)").fetchall()
    assert [(r["version_number"], r["operation_type"], r["changed_fields"]) for r in rows] == [
        (1, "INSERT", None),
        (2, "UPDATE", ["first_name", "phone", "updated_at"]),
        (3, "DELETE", None),
    ]
    assert rows[1]["customer_data"]["first_name"] == "Zoey"
    assert rows[2]["source_updated_at"] is None
    assert conn.execute("SELECT count(*) AS n FROM lake_history(12345)").fetchone()["n"] == 0


def test_overlapping_versions_are_impossible(conn):
    conn.execute("INSERT INTO crm_customers (customer_id, email) VALUES (1, 'a')")
    with pytest.raises(psycopg.errors.ExclusionViolation):
        conn.execute(
            "INSERT INTO lakehouse_customers (customer_id, customer_data, effective_from, version_number,"
            " operation_type) VALUES (1, '{}', now() - interval '1 day', 99, 'UPDATE')"
        )
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute(
            "SELECT lakehouse_apply_changes(ARRAY[5, 5], ARRAY['{}', '{}']::jsonb[],"
            " ARRAY['INSERT', 'UPDATE'])"
        )


def test_concurrent_updates_keep_chains_gap_free_and_non_overlapping(db_dsn):
    customers = list(range(1, 6))
    with psycopg.connect(db_dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO crm_customers (customer_id, email) SELECT g, 'v0' FROM generate_series(1, 5) g"
        )
    committed: Counter[int] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            with psycopg.connect(db_dsn, autocommit=True) as c:
                for i in range(25):
                    ids = sorted(rnd.sample(customers, rnd.choice([1, 2])))
                    direct = 100 + rnd.randrange(3)
                    while True:
                        try:
                            with c.transaction():
                                c.execute(
                                    "UPDATE crm_customers SET email = %s WHERE customer_id = ANY(%s)",
                                    (f"w{seed}-{i}", ids),
                                )
                                # a direct write, serialised only by the writer's own chain lock
                                c.execute(
                                    "SELECT lakehouse_apply_changes(ARRAY[%s]::bigint[],"
                                    " ARRAY['{}']::jsonb[], ARRAY['UPDATE'])",
                                    (direct,),
                                )
                            break
                        except psycopg.errors.DeadlockDetected:
                            continue
                    with lock:
                        committed.update(ids)
                        committed[direct] += 1
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors

    with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as c:
        for cid in [*customers, 100, 101, 102]:
            rows = chain(c, cid)
            expected = committed[cid] + (1 if cid in customers else 0)
            assert [r["version_number"] for r in rows] == list(range(1, expected + 1)), cid
            for older, newer in zip(rows, rows[1:], strict=False):
                assert older["effective_to"] == newer["effective_from"]
                assert older["effective_from"] < older["effective_to"]
            assert rows[-1]["effective_to"] is None
        # the current view holds exactly the latest version of each CRM customer
        current = c.execute(
            "SELECT customer_id, version_number, customer_data->>'email' AS email"
            " FROM lakehouse_customers_current WHERE customer_id <= 5 ORDER BY 1"
        ).fetchall()
        crm = c.execute("SELECT customer_id, email FROM crm_customers ORDER BY 1").fetchall()
        pairs = [(r["customer_id"], r["email"]) for r in current]
        assert pairs == [(r["customer_id"], r["email"]) for r in crm]
        assert [r["version_number"] for r in current] == [committed[cid] + 1 for cid in customers]


# --------------------------------------------------------------------------------------------------
# schema_evolution_log (event triggers installed by schema_evolution_install(), 50_lakehouse.sql)
# --------------------------------------------------------------------------------------------------


def evolution(conn, *tables: str) -> list[tuple]:
    rows = conn.execute(
        "SELECT table_name, schema_version, evolution_type, backward_compatible, object_name"
        " FROM schema_evolution_log WHERE table_name = ANY(%s) ORDER BY evolution_id",
        (list(tables),),
    ).fetchall()
    return [tuple(r.values()) for r in rows]


def test_each_kind_of_ddl_is_logged_with_its_compatibility(conn):
    statements = [
        "CREATE TABLE evo_t (id int PRIMARY KEY, a text)",
        "ALTER TABLE evo_t ADD COLUMN b int",
        "ALTER TABLE evo_t ADD COLUMN c int NOT NULL DEFAULT 0, ADD COLUMN d int",
        "ALTER TABLE evo_t DROP COLUMN d",
        "ALTER TABLE evo_t ALTER COLUMN b TYPE bigint",
        "ALTER TABLE evo_t ALTER COLUMN a SET NOT NULL",
        "ALTER TABLE evo_t ALTER COLUMN a DROP NOT NULL",
        "ALTER TABLE evo_t RENAME COLUMN b TO bb",
        "ALTER TABLE evo_t ADD CONSTRAINT evo_t_c_ck CHECK (c >= 0)",
        "ALTER TABLE evo_t DROP CONSTRAINT evo_t_c_ck",
        "ALTER TABLE evo_t DROP CONSTRAINT evo_t_pkey",
        "CREATE INDEX evo_t_a_idx ON evo_t (a)",
        "DROP INDEX evo_t_a_idx",
        "CREATE UNIQUE INDEX evo_t_c_uq ON evo_t (c)",
        "COMMENT ON TABLE evo_t IS 'no shape change, no row'",
        "CREATE VIEW evo_v AS SELECT id FROM evo_t",
        "CREATE OR REPLACE VIEW evo_v AS SELECT id, a FROM evo_t",
        "CREATE OR REPLACE VIEW evo_v AS SELECT id, a FROM evo_t WHERE id > 0",
        "CREATE MATERIALIZED VIEW evo_m AS SELECT id FROM evo_t",
        "REFRESH MATERIALIZED VIEW evo_m",
        "DROP VIEW evo_v",
        "DROP MATERIALIZED VIEW evo_m",
        "ALTER TABLE evo_t RENAME TO evo_t2",
        "DROP TABLE evo_t2",
        "CREATE TEMP TABLE evo_tmp (x int)",  # not a platform table
    ]
    for s in statements:
        conn.execute(s)
    assert evolution(conn, "evo_t", "evo_t2", "evo_v", "evo_m", "evo_tmp") == [
        ("evo_t", 1, "CREATE_TABLE", True, None),
        ("evo_t", 2, "ADD_COLUMN", True, "b"),
        ("evo_t", 3, "ADD_COLUMN", True, "c"),  # NOT NULL with a default
        ("evo_t", 3, "ADD_COLUMN", True, "d"),  # same statement, same version
        ("evo_t", 4, "DROP_COLUMN", False, "d"),
        ("evo_t", 5, "MODIFY_COLUMN", False, "b"),  # type change
        ("evo_t", 6, "MODIFY_COLUMN", False, "a"),  # SET NOT NULL
        ("evo_t", 7, "MODIFY_COLUMN", True, "a"),  # DROP NOT NULL
        ("evo_t", 8, "RENAME_COLUMN", False, "bb"),
        ("evo_t", 9, "ADD_CONSTRAINT", False, "evo_t_c_ck"),
        ("evo_t", 10, "DROP_CONSTRAINT", True, "evo_t_c_ck"),  # a CHECK
        ("evo_t", 11, "DROP_CONSTRAINT", False, "evo_t_pkey"),  # a primary key
        ("evo_t", 12, "ADD_INDEX", True, "evo_t_a_idx"),
        ("evo_t", 13, "DROP_INDEX", True, "evo_t_a_idx"),
        ("evo_t", 14, "ADD_INDEX", False, "evo_t_c_uq"),  # unique: can reject writes
        ("evo_v", 1, "CREATE_VIEW", True, None),
        ("evo_v", 2, "ADD_COLUMN", True, "a"),
        ("evo_v", 3, "MODIFY_VIEW", True, "evo_v"),
        ("evo_m", 1, "CREATE_MATERIALIZED_VIEW", True, None),
        ("evo_v", 4, "DROP_VIEW", False, None),
        ("evo_m", 2, "DROP_MATERIALIZED_VIEW", False, None),
        ("evo_t2", 15, "RENAME_TABLE", False, "evo_t2"),
        ("evo_t2", 16, "DROP_TABLE", False, None),
    ]
    row = conn.execute(
        "SELECT ddl_statement, applied_by = session_user AS by_me, command_tag, change_detail"
        " FROM schema_evolution_log WHERE table_name = 'evo_t' AND schema_version = 5"
    ).fetchone()
    assert row["ddl_statement"] == "ALTER TABLE evo_t ALTER COLUMN b TYPE bigint"
    assert row["by_me"] and row["command_tag"] == "ALTER TABLE"
    assert (row["change_detail"]["before"]["type"], row["change_detail"]["after"]["type"]) == (
        "integer",
        "bigint",
    )


def test_partition_maintenance_is_one_row_per_parent_and_leaves_the_version_alone(conn):
    conn.execute("CREATE TABLE evo_p (id int, d date NOT NULL) PARTITION BY RANGE (d)")
    created = conn.execute(
        "SELECT ensure_partitions('evo_p', interval '3 months', interval '1 month') AS n"
    ).fetchone()["n"]
    assert created >= 5  # default + at least four monthly partitions
    again = conn.execute("SELECT ensure_partitions('evo_p', interval '3 months', interval '1 month') AS n")
    assert again.fetchone()["n"] == 0
    conn.execute("ALTER TABLE evo_p ADD COLUMN note text")
    conn.execute("CREATE TABLE evo_p_x PARTITION OF evo_p FOR VALUES FROM ('1999-01-01') TO ('1999-02-01')")
    conn.execute("DROP TABLE evo_p_x")
    conn.execute("ALTER TABLE evo_p DETACH PARTITION evo_p_default")
    assert evolution(conn, "evo_p") == [
        ("evo_p", 1, "CREATE_TABLE", True, None),
        ("evo_p", 1, "PARTITION_MAINTENANCE", True, None),
        ("evo_p", 2, "ADD_COLUMN", True, "note"),  # once, not once per partition
        ("evo_p", 2, "ATTACH_PARTITION", True, "public.evo_p_x"),
        ("evo_p", 2, "DROP_PARTITION", False, "public.evo_p_x"),
        ("evo_p", 2, "DETACH_PARTITION", False, "public.evo_p_default"),
    ]
    detail = conn.execute(
        "SELECT change_detail FROM schema_evolution_log WHERE evolution_type = 'PARTITION_MAINTENANCE'"
        " AND table_name = 'evo_p'"
    ).fetchone()["change_detail"]
    assert len(detail["added"]) == created and "public.evo_p_default" in detail["added"]
    # nothing about the partitions themselves
    n = conn.execute("SELECT count(*) AS n FROM schema_evolution_log WHERE table_name LIKE 'evo\\_p\\_%%'")
    assert n.fetchone()["n"] == 0


def test_ledger_and_internal_state_are_not_logged_and_logging_never_blocks_ddl(conn):
    conn.execute("ALTER TABLE opsconsole_migrations ADD COLUMN note text")
    conn.execute("ALTER TABLE schema_evolution_state ADD COLUMN note text")
    assert evolution(conn, "opsconsole_migrations", "schema_evolution_state") == []
    # if recording fails, the DDL still happens (a warning is raised instead)
    conn.execute(
        "ALTER TABLE schema_evolution_log ADD CONSTRAINT evo_block"
        " CHECK (evolution_type <> 'CREATE_TABLE') NOT VALID"
    )
    warnings: list[str] = []
    conn.add_notice_handler(lambda d: warnings.append(d.message_primary or ""))
    conn.execute("CREATE TABLE evo_still_created (id int)")
    assert conn.execute("SELECT to_regclass('evo_still_created') IS NOT NULL AS ok").fetchone()["ok"]
    assert any("did not record this change" in w for w in warnings)


def test_migrations_run_for_a_non_superuser_owner_without_event_triggers(admin_dsn, tmp_path):
    """The event triggers need a superuser; a plain owner gets a NOTICE and everything else."""
    import shutil
    import uuid

    from psycopg import conninfo

    from opsconsole.db import migrate

    shutil.copytree(migrate.sql_dir() / "migrations", tmp_path / "migrations")
    shutil.copytree(migrate.sql_dir() / "definitions", tmp_path / "definitions")
    role = f"lake_owner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"CREATE DATABASE {role} OWNER {role}")
    try:
        notices: list[str] = []
        dsn = conninfo.make_conninfo(admin_dsn, dbname=role, user=role)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
            applied = migrate.migrate(c, tmp_path / "migrations", tmp_path / "definitions")
            c.row_factory = dict_row
            assert [item.path.name for item, _ in applied] == [
                p.name for p in sorted((tmp_path / "migrations").glob("*.sql"))
            ] + [p.name for p in sorted((tmp_path / "definitions").glob("*.sql"))]
            assert any("not a superuser" in n for n in notices)
            assert c.execute("SELECT count(*) AS n FROM pg_event_trigger").fetchone()["n"] == 0
            c.execute("INSERT INTO crm_customers (customer_id, email) VALUES (1, 'a')")
            assert c.execute("SELECT count(*) AS n FROM lakehouse_customers_current").fetchone()["n"] == 1
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {role} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_role_that_may_only_write_crm_still_gets_versions(conn):
    import uuid

    role = f"crm_writer_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role}")
    try:
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON crm_customers TO {role}")
        conn.execute(f"SET ROLE {role}")
        conn.execute("INSERT INTO crm_customers (customer_id, email) VALUES (1, 'a')")
        conn.execute("UPDATE crm_customers SET email = 'b' WHERE customer_id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO lakehouse_customers (customer_id, effective_from, version_number)"
                " VALUES (1, now(), 9)"
            )
        conn.execute("RESET ROLE")
        assert [(r["version_number"], r["email"]) for r in chain(conn, 1)] == [(1, "a"), (2, "b")]
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")
