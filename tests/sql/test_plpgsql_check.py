"""plpgsql_check (the PL/pgSQL linter) over every PL/pgSQL function of the platform, security warnings
on: any error or security finding not in ALLOWED (each with its reason) fails.

Trigger functions are checked once per table they are attached to, with the transition tables that
its triggers on that table declare (the union: one function serves INSERT, UPDATE and DELETE triggers
and picks new_rows / old_rows by TG_OP, so the linter must know both names to check every branch).

Runs where the server has the extension (CI installs Debian's postgresql-15-plpgsql-check for the
PostgreSQL 15 run; see .ci/run); skipped with the reason elsewhere (the embedded PostgreSQL 18).
"""

from __future__ import annotations

import psycopg
import pytest

# (function, level, message fragment) -> why the finding is accepted. Every other EXECUTE formats its
# names with %I and its values with %L (dq_assert_parses passes its text as a %L literal to CREATE
# FUNCTION, which parses without running it). A new entry needs its reason here.
ALLOWED: dict[tuple[str, str, str], str] = {
    ("ensure_partitions_step", "security", "text type variable is not sanitized"): (
        "two EXECUTEs (the DEFAULT range probe and the batch move): the relations spliced with %s are "
        "regclass values from maintenance_partitioned_tables(), the key goes through %I, bounds through "
        "%L, and the moved column list is string_agg(quote_ident(attname)) over pg_attribute; "
        "plpgsql_check cannot follow a record's fields or a list built in a query (checked: the probe "
        "is flagged even with only a regclass parameter and %I/%L arguments)"
    ),
    ("shard_local", "error", 'relation "pg_catalog.pg_dist_'): (
        "its EXECUTE reads Citus's catalog (pg_dist_local_group, pg_dist_partition), which exists only "
        "where the citus extension is installed; the function returns before it when "
        "to_regclass('pg_catalog.pg_dist_local_group') is NULL, so on plain PostgreSQL the statement "
        "never runs (tests/test_db_citus_plain.py), and tests/citus runs it on a cluster"
    ),
    ("shard_local_to", "error", 'relation "pg_catalog.pg_dist_'): (
        "the same: Citus's pg_dist_shard and pg_dist_local_group, read only when they exist"
    ),
}


@pytest.fixture
def checked(conn: psycopg.Connection) -> psycopg.Connection:
    available = conn.execute(
        "SELECT 1 AS ok FROM pg_available_extensions WHERE name = 'plpgsql_check'"
    ).fetchone()
    if available is None:
        version = conn.execute("SHOW server_version").fetchone()["server_version"]
        pytest.skip(
            f"the plpgsql_check extension is not installed in this server (PostgreSQL {version}); "
            "CI installs postgresql-15-plpgsql-check for its PostgreSQL 15 run"
        )
    conn.execute("CREATE EXTENSION plpgsql_check")
    return conn


def findings(conn: psycopg.Connection) -> list[dict]:
    return conn.execute(
        """
        WITH f AS (
            SELECT p.oid, p.proname, p.prorettype
            FROM pg_proc p
            JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
            JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
        ), targets AS (
            -- plain functions once; trigger functions once per table, with its transition tables
            SELECT f.oid, f.proname, 0::oid AS relid, NULL::name AS oldtable, NULL::name AS newtable
            FROM f WHERE f.prorettype <> 'trigger'::regtype
            UNION ALL
            SELECT f.oid, f.proname, t.tgrelid, max(t.tgoldtable), max(t.tgnewtable)
            FROM f JOIN pg_trigger t ON t.tgfoid = f.oid AND NOT t.tgisinternal
            GROUP BY f.oid, f.proname, t.tgrelid
        )
        SELECT t.proname, t.relid::regclass::text AS relid, r.level, r.sqlstate, r.lineno, r.message
        FROM targets t
        CROSS JOIN LATERAL plpgsql_check_function_tb(
            t.oid, t.relid::regclass, security_warnings => true, oldtable => t.oldtable,
            newtable => t.newtable) r
        WHERE r.level IN ('error', 'security')
        ORDER BY 1, 2, 5
        """
    ).fetchall()


def unchecked_trigger_functions(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        """
        SELECT p.proname FROM pg_proc p
        JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
          AND p.prorettype = 'trigger'::regtype
          AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgfoid = p.oid)
        """
    ).fetchall()
    return [r["proname"] for r in rows]


def test_every_plpgsql_function_is_clean_under_plpgsql_check(checked):
    found = findings(checked)
    unexplained = [
        f
        for f in found
        if not any(
            f["proname"] == fn and f["level"] == level and fragment in f["message"]
            for fn, level, fragment in ALLOWED
        )
    ]
    assert unexplained == []
    # A trigger function attached to no table could not be checked: there is none.
    assert unchecked_trigger_functions(checked) == []
    # Every allowance is still needed (a fixed finding leaves no stale excuse behind).
    used = {
        (fn, level, fragment)
        for fn, level, fragment in ALLOWED
        if any(f["proname"] == fn and f["level"] == level and fragment in f["message"] for f in found)
    }
    assert used == set(ALLOWED)
