"""`make lint-sql`: squawk fails a new migration that would lock a live table, passes a safe one.

Skipped when squawk is not installed (.ci/run installs it into .tools/ with npm).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SQUAWK = shutil.which("squawk") or str(REPO / ".tools" / "node_modules" / ".bin" / "squawk")


def lint(directory: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SQL_MIGRATIONS_DIR": str(directory), "SQUAWK": SQUAWK}
    return subprocess.run([str(REPO / "tools" / "lint-sql")], capture_output=True, text=True, env=env)


@pytest.mark.skipif(
    not Path(SQUAWK).exists(), reason="squawk is not installed (npm install --prefix .tools squawk-cli)"
)
def test_squawk_flags_unsafe_new_migrations_and_passes_safe_ones(tmp_path: Path) -> None:
    shutil.copy(REPO / "sql" / "migrations" / "0013_baseline.sql", tmp_path)
    assert lint(tmp_path).returncode == 0  # the baseline itself is not linted

    (tmp_path / "0014_unsafe.sql").write_text("CREATE INDEX crm_email_idx ON crm_customers (email);\n")
    result = lint(tmp_path)
    assert result.returncode == 1
    for rule in ("require-lock-timeout", "require-statement-timeout", "require-concurrent-index-creation"):
        assert rule in result.stdout + result.stderr

    (tmp_path / "0014_unsafe.sql").write_text(
        "-- opsconsole:no-transaction\nSET lock_timeout = '2s';\nSET statement_timeout = '10min';\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS crm_email_idx ON crm_customers (email);\n"
    )
    (tmp_path / "0015_table.sql").write_text(
        "SET LOCAL lock_timeout = '2s';\nSET LOCAL statement_timeout = '1min';\n"
        "CREATE TABLE t (id bigint PRIMARY KEY, v text);\nCREATE INDEX t_v_idx ON t (v);\n"
    )
    result = lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
