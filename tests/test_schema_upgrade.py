"""A database built and used by the previous release upgrades in place to exactly a fresh install.

The previous release is commit 4fdc7cb: its sql/migrations/ files are read out of git history and
applied the way its runner did (each file in its own transaction, then a ledger row with the file's
sha256). The database is then used (seeded customers, staged and processed transactions, a DQ run, the
customer 360 and catalog refreshed), migrated with today's runner, and compared with a fresh install
through tests/schema_snapshot.py: functions, views, columns, indexes, constraints, triggers,
privileges, event triggers, sequences, types and partitions. Every row is kept and reconcile is clean.

Skipped, with the reason, when git or that commit is not available (a shallow clone, say).
Partitions are created for windows around now (months, staging days), so a run that straddles
midnight UTC between building the two databases would see one staging day differ.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from schema_snapshot import difference, snapshot

from opsconsole.datagen import seed as seeding
from opsconsole.db import migrate

PREVIOUS_RELEASE = "4fdc7cb"
REPO = Path(__file__).resolve().parents[1]

# The ledger exactly as the previous release's runner created it.
OLD_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS public.opsconsole_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_by  text NOT NULL DEFAULT session_user,
    duration_ms numeric NOT NULL
)
"""

# Tables whose rows the upgrade may add to (never remove): the runner's ledger and the derived stores
# that describe the schema (the catalog is refreshed with the definitions; DDL is logged).
MAY_GROW = {
    "opsconsole_migrations",
    "opsconsole_definitions",
    "data_catalog",
    "schema_evolution_log",
    "schema_evolution_state",
    "opsconsole_grant_policy",  # later migrations add the policy rows of new action functions
}


# Every column of every event, in one digest (with the number of rows).
EVENT_COLUMNS = (
    "event_id, session_id, {customer}, event_timestamp, event_type, event_data, page_url, user_agent,"
    " ip_address, processed_at"
)
EVENTS_DIGEST = (
    "SELECT count(*), md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', "
    + EVENT_COLUMNS.format(customer="customer_id")
    + "), ',' ORDER BY event_id)) FROM {events} e"
)
ALL_EVENTS = (
    f"(SELECT {EVENT_COLUMNS.format(customer='customer_id')} FROM ecommerce_events UNION ALL"
    f" SELECT {EVENT_COLUMNS.format(customer='NULL')} FROM ecommerce_anonymous_events)"
)


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=False)


def previous_release_files() -> list[tuple[str, bytes]]:
    """(file name, bytes) of each migration of the previous release, in order; skips when unavailable."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed, so the previous release cannot be read from history")
    if _git("cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}").returncode != 0:
        pytest.skip(f"commit {PREVIOUS_RELEASE} (the previous release) is not in this clone (shallow?)")
    listing = _git("ls-tree", "--name-only", PREVIOUS_RELEASE, "sql/migrations/")
    names = sorted(Path(line).name for line in listing.stdout.decode().split())
    files = []
    for name in names:
        shown = _git("show", f"{PREVIOUS_RELEASE}:sql/migrations/{name}")
        assert shown.returncode == 0, shown.stderr
        files.append((name, shown.stdout))
    return files


def install_previous_release(conn: psycopg.Connection, files: list[tuple[str, bytes]]) -> None:
    """What the previous release's `db migrate` did, file by file."""
    conn.execute(OLD_LEDGER_DDL)
    for name, text in files:
        version, stem = name[:4], name[5:-4]
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(text)
            conn.execute(
                "INSERT INTO public.opsconsole_migrations (version, name, checksum, duration_ms)"
                " VALUES (%s, %s, %s, %s)",
                (version, stem, hashlib.sha256(text).hexdigest(), (time.perf_counter() - started) * 1000),
            )


def use_the_platform(dsn: str) -> None:
    """A few hundred customers and their history, then the operator actions of a normal day."""
    seeding.seed(dsn, seeding.SeedPlan(customers=300, seed=3), jobs=1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # new arrivals, a few of them invalid (unknown type, missing account) so retries and dead
        # letters exist too
        # (the previous release's trigger counts these arrivals: no financial_staging_arrived call)
        conn.execute(
            "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp,"
            " amount, transaction_type, reference_data, batch_id)"
            " SELECT 9000000 + g, CASE WHEN g % 17 = 0 THEN NULL ELSE 100 + g % 40 END,"
            "        now() - g * interval '1 minute', 10 + g,"
            "        CASE WHEN g % 13 = 0 THEN 'bogus' ELSE 'payment' END, NULL, 'upgrade-test'"
            " FROM generate_series(1, 200) g"
        )
        conn.execute("SELECT * FROM process_financial_batch_detail(1000)")
        conn.execute("SELECT * FROM dq_run()")
        conn.execute("SELECT * FROM refresh_customer_360_incremental()")
        conn.execute("SELECT refresh_data_catalog()")


def row_counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"
        " AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
    ).fetchall()
    return {
        t: conn.execute(sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(t))).fetchone()[0]
        for (t,) in tables
    }


def test_previous_release_upgrades_to_a_fresh_install(empty_db_dsn: str, admin_dsn: str) -> None:
    files = previous_release_files()
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        install_previous_release(conn, files)
    use_the_platform(empty_db_dsn)

    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        before = row_counts(conn)
        # the previous release stored each staged row's payload hash; 0033 computes it instead
        stored_hashes = dict(
            conn.execute("SELECT staging_id, payload_hash FROM financial_transactions_staging").fetchall()
        )
        events_before = conn.execute(EVENTS_DIGEST.format(events="ecommerce_events")).fetchone()
        applied = migrate.migrate(conn)
        # the baseline is recorded, not run; new versioned files run; the definitions are applied
        baseline = next(m for m in migrate.discover() if m.replaces)
        assert (baseline, None) in applied
        assert {name[:4] for name, _ in files} == set(baseline.replaces)
        assert [i.name for i, _ in applied if isinstance(i, migrate.Definition)] == [
            d.name for d in migrate.discover_definitions()
        ]
        assert migrate.migrate(conn) == []  # idempotent
        states = {s.state for s in migrate.status(conn)}
        assert states <= {"applied", "baselined", f"replaced by {baseline.path.name}"}
        upgraded = snapshot(conn)
        after = row_counts(conn)
        # 0029 moved the anonymous events to a table of their own: every event is still there once,
        # with every column, and the anonymous share is what the seed made (15% of sessions).
        events_after = conn.execute(EVENTS_DIGEST.format(events=ALL_EVENTS)).fetchone()
        moved = after.pop("ecommerce_anonymous_events")
        after["ecommerce_events"] += moved
        # 0031 set the staging rows without an account aside, with their staging ids
        aside = after.pop("financial_staging_rejects")
        after["financial_transactions_staging"] += aside
        aside_ids = conn.execute(
            "SELECT count(*) FROM financial_staging_rejects r WHERE r.account_id IS NULL"
            " AND r.staging_id IS NOT NULL AND r.source = 'staging (0031)'"
        ).fetchone()[0]
        nulls_left = conn.execute(
            "SELECT count(*) FROM financial_transactions_staging WHERE account_id IS NULL"
        ).fetchone()[0]
        problems = [
            r for r in conn.execute("SELECT * FROM reconcile_financial_pipeline()").fetchall() if r[1] != 0
        ]
        computed_hashes = dict(
            conn.execute(
                "SELECT h.staging_id, h.payload_hash FROM financial_payload_hashes(ARRAY("
                " SELECT s FROM financial_transactions_staging s)) h"
            ).fetchall()
        )

    fresh_name = f"{psycopg.conninfo.conninfo_to_dict(empty_db_dsn)['dbname']}_fresh"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(fresh_name)))
    try:
        fresh_dsn = psycopg.conninfo.make_conninfo(empty_db_dsn, dbname=fresh_name)
        with psycopg.connect(fresh_dsn, autocommit=True) as conn:
            migrate.migrate(conn)
            fresh = snapshot(conn)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(fresh_name))
            )

    assert difference(upgraded, fresh) == []
    assert problems == []
    # the hashes the ledger holds from before the upgrade still match what the chunk computes now
    assert len(computed_hashes) > 100
    assert computed_hashes == {i: stored_hashes[i] for i in computed_hashes}
    assert set(after) >= set(before)
    lost = {t: (before[t], after[t]) for t in before if after[t] < before[t]}
    grown = {t: (before[t], after[t]) for t in before if after[t] > before[t] and t not in MAY_GROW}
    assert lost == {} and grown == {}
    assert before["crm_customers"] == 300 and before["financial_transactions_processed"] > 0
    assert aside > 0 and aside_ids == aside and nulls_left == 0
    assert (
        events_after == events_before
        and 0.1 * before["ecommerce_events"] < moved < 0.2 * before["ecommerce_events"]
    )


def test_a_database_part_way_through_the_previous_release_is_refused(empty_db_dsn: str) -> None:
    files = previous_release_files()
    with psycopg.connect(empty_db_dsn, autocommit=True, row_factory=dict_row) as conn:
        install_previous_release(conn, files[:3])
        before = snapshot(conn)
        with pytest.raises(migrate.MigrationRefused, match="upgrade it with the previous release first"):
            migrate.migrate(conn)
        assert snapshot(conn) == before  # nothing changed, not even the ledger
