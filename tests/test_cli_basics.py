"""CLI behaviour that every command shares: one sentence and exit 2 on connection trouble, --json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from opsconsole.cli import main


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real entry point in a subprocess so we see exactly what a user sees."""
    return subprocess.run(
        [sys.executable, "-m", "opsconsole.cli", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize(
    "dsn, fragment",
    [
        ("host=127.0.0.1 port=1 dbname=x connect_timeout=2", "Cannot connect to 127.0.0.1:1/x"),
        ("this is = not a dsn", "DSN is not valid"),
    ],
)
def test_bad_dsn_is_one_sentence_exit_2(dsn: str, fragment: str) -> None:
    result = run_cli("--dsn", dsn, "db", "status")
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) <= 3


def test_status_json_lists_every_migration(db_dsn: str) -> None:
    result = CliRunner().invoke(main, ["--dsn", db_dsn, "db", "status", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows and all(r["state"] == "applied" for r in rows)
    kinds = [r["kind"] for r in rows]
    assert kinds[0] == "baseline" and rows[0]["version"] == "0013"
    names = [r["name"] for r in rows if r["kind"] == "definitions"]
    assert names and names == sorted(names) and names[-1] == "99_grants"


def test_migrate_is_idempotent_from_the_cli(db_dsn: str) -> None:
    result = CliRunner().invoke(main, ["--dsn", db_dsn, "db", "migrate"])
    assert result.exit_code == 0
    assert "up to date" in result.output


def test_reset_refuses_without_yes(db_dsn: str) -> None:
    result = CliRunner().invoke(main, ["--dsn", db_dsn, "db", "reset"])
    assert result.exit_code == 2
    assert "--yes" in result.output


def test_where_reports_the_rule_that_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSCONSOLE_DSN", "host=db.example dbname=platform")
    result = CliRunner().invoke(main, ["where", "--json"])
    assert json.loads(result.output) == {"source": "OPSCONSOLE_DSN", "database": "db.example/platform"}
