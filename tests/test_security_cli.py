"""`opsconsole db grant` and what the CLI says when the database refuses a role (exit code 3)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import conninfo

from opsconsole import output
from opsconsole.cli import main
from opsconsole.ops.registry import ACTIONS_BY_ID, probe


@pytest.fixture
def login_role(admin_dsn: str) -> Iterator[str]:
    """A fresh login role with no group (dropped afterwards)."""
    name = f"oc_cli_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        a.execute(f'CREATE ROLE "{name}" LOGIN')
    yield name
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        a.execute(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture
def run(monkeypatch):
    monkeypatch.setattr(output.console, "width", 250)
    monkeypatch.setattr(output.err_console, "width", 250)
    runner = CliRunner()

    def invoke(dsn: str, *args: str):
        return runner.invoke(main, ["--dsn", dsn, *args], catch_exceptions=False)

    return invoke


def test_grant_then_again_then_json(db_dsn, login_role, run, conn):
    r = run(db_dsn, "db", "grant", login_role, "viewer")
    assert r.exit_code == 0, r.output
    assert f"Granted opsconsole_viewer to {login_role}" in r.output
    assert conn.execute(
        "SELECT pg_has_role(%s, 'opsconsole_viewer', 'MEMBER') AS m", (login_role,)
    ).fetchone()["m"]
    r = run(db_dsn, "db", "grant", login_role, "opsconsole_viewer")
    assert r.exit_code == 0 and "already a member" in r.output
    r = run(db_dsn, "db", "grant", login_role, "operator", "--json")
    got = json.loads(r.output)
    temp_open = conn.execute(
        "SELECT has_database_privilege('public', current_database(), 'TEMP') AS t"
    ).fetchone()["t"]
    assert got == {
        "user": login_role,
        "role": "opsconsole_operator",
        "already_member": False,
        "temp_open": temp_open,
        "database": conn.info.dbname,
    }


def test_grant_says_how_to_revoke_temp_on_an_older_database(db_dsn, login_role, run, conn):
    conn.execute(f'GRANT TEMP ON DATABASE "{conn.info.dbname}" TO PUBLIC')  # as before the revoke
    r = run(db_dsn, "db", "grant", login_role, "viewer")
    assert r.exit_code == 0, r.output
    assert f'REVOKE TEMP ON DATABASE "{conn.info.dbname}" FROM PUBLIC' in r.output
    conn.execute(f'REVOKE TEMP ON DATABASE "{conn.info.dbname}" FROM PUBLIC')
    r = run(db_dsn, "db", "grant", login_role, "support")
    assert r.exit_code == 0 and "REVOKE TEMP" not in r.output


def test_grant_unknown_role_and_unknown_user(db_dsn, login_role, run):
    r = run(db_dsn, "db", "grant", login_role, "superuser")
    assert r.exit_code == 1
    assert "Unknown role 'superuser'; choose one of: viewer, support, operator, admin." in r.output
    r = run(db_dsn, "db", "grant", "nobody_" + uuid.uuid4().hex[:6], "viewer")
    assert r.exit_code == 1 and "There is no database role named" in r.output


def test_grant_without_privilege_is_exit_3(db_dsn, login_role, run, admin_dsn):
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        a.execute(f'GRANT opsconsole_viewer TO "{login_role}"')
    as_viewer = conninfo.make_conninfo(db_dsn, user=login_role)
    r = run(as_viewer, "db", "grant", login_role, "admin")
    assert r.exit_code == 3
    assert "may not grant opsconsole_admin" in r.output


def test_forced_action_fails_in_the_database_with_one_sentence(db_dsn, login_role, run, admin_dsn):
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        a.execute(f'GRANT opsconsole_viewer TO "{login_role}"')
    as_viewer = conninfo.make_conninfo(db_dsn, user=login_role)
    for args in (
        ("retry", "--all"),
        ("process", "--batch-size", "10"),
        ("catalog", "refresh"),
        ("reconcile", "--recount"),
        ("reconcile", "--rebuild-minutes"),
    ):
        r = run(as_viewer, *args)
        assert r.exit_code == 3, (args, r.output)
        assert "Traceback" not in r.output
        assert "permission denied" in r.output.lower() or "may not" in r.output


def test_console_registry_hides_actions_the_role_lacks(db_dsn, login_role, admin_dsn):
    """The console's probe sees the grants: viewer gets every action disabled with a reason, operator
    may process and retry but not what it lacks."""
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        a.execute(f'GRANT opsconsole_viewer TO "{login_role}"')
    with psycopg.connect(conninfo.make_conninfo(db_dsn, user=login_role), autocommit=True) as c:
        caps = probe(c)
    assert ACTIONS_BY_ID["process_batch"].unavailable_reason(caps, False) == (
        f"role {login_role} lacks EXECUTE on process_financial_batch()"
    )
    assert ACTIONS_BY_ID["refresh_catalog"].unavailable_reason(caps, False) == (
        f"role {login_role} lacks EXECUTE on refresh_data_catalog()"
    )
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        a.execute(f'GRANT opsconsole_operator TO "{login_role}"')
    with psycopg.connect(conninfo.make_conninfo(db_dsn, user=login_role), autocommit=True) as c:
        caps = probe(c)
    for action in ("process_batch", "retry_failed", "run_dq", "refresh_catalog"):
        assert ACTIONS_BY_ID[action].unavailable_reason(caps, False) is None, action


def test_ingest_file_column_named_like_sql_does_nothing_harmful(
    db_dsn, login_role, run, conn, admin_dsn, tmp_path
):
    import polars as pl

    conn.execute("CREATE TABLE y (id int)")
    evil = 'x"; DROP TABLE y; --'
    path = tmp_path / "evil.csv"
    pl.DataFrame({"transaction_id": ["1", "2"], "account_id": ["7", "7"], evil: ["a", "b"]}).write_csv(path)
    # an operator may not load files at all: the database refuses (no INSERT, no ALTER)
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        a.execute(f'GRANT opsconsole_operator TO "{login_role}"')
    as_operator = conninfo.make_conninfo(db_dsn, user=login_role)
    r = run(as_operator, "ingest", str(path), "--table", "financial_transactions", "--evolve")
    # ingest reports per file (exit 1 when a file is not loaded); the note is the database's refusal
    assert r.exit_code == 1 and "42501" in r.output, r.output
    assert conn.execute("SELECT count(*) AS n FROM financial_transactions").fetchone()["n"] == 0
    # the owner loads it: the name is an identifier, table y survives
    r = run(db_dsn, "ingest", str(path), "--table", "financial_transactions", "--evolve")
    assert r.exit_code == 0, r.output
    assert conn.execute("SELECT to_regclass('y') IS NOT NULL AS ok").fetchone()["ok"]
    assert conn.execute("SELECT count(*) AS n FROM financial_transactions").fetchone()["n"] == 2
